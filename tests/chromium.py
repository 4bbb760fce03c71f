"""A headless Chromium driven over the DevTools protocol, for tests of the HTML report.

Only the standard library: the browser listens on 127.0.0.1 (port chosen by the browser, read
from its ``DevToolsActivePort`` file) and we speak just enough WebSocket (RFC 6455, client side:
masked text frames out, fragmented or long frames in, ping answered) to send CDP commands and
collect the events they cause (console messages, exceptions, network requests).
"""

from __future__ import annotations

import base64
import hashlib
import http.client
import json
import os
import shutil
import socket
import struct
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest

INSTALL = "scripts/install-chromium"
ENV_VARS = ("CHROMIUM", "CHROME")
NAMES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable", "chrome")
PLACES = (
    "/usr/bin/chromium",
    "/usr/lib/chromium/chromium",
    "/snap/bin/chromium",
    "/opt/google/chrome/chrome",
    "/Applications/Chromium.app/Contents/MacOS/Chromium",
    "/Applications/Google Chrome.app/Contents/MacOS/Google Chrome",
)


def find_chromium() -> str | None:
    """A Chromium or Chrome to drive: $CHROMIUM or $CHROME first, then PATH, then the usual places."""
    for var in ENV_VARS:
        named = os.environ.get(var)
        if named:
            found = shutil.which(named)
            if found:
                return found
    for name in NAMES:
        found = shutil.which(name)
        if found:
            return found
    return next((place for place in PLACES if os.access(place, os.X_OK)), None)


def in_ci() -> bool:
    return os.environ.get("CI", "").lower() in ("1", "true", "yes")


def require_chromium() -> str:
    """The browser for a test. Missing: in CI the test fails (every real-component test runs
    there); elsewhere it is skipped with one line naming the install command."""
    found = find_chromium()
    if found is not None:
        return found
    message = (
        f"no chromium found (PATH, the usual places, ${'/$'.join(ENV_VARS)}): run `{INSTALL}` "
        "(Debian, as root), install your system's chromium, or set CHROMIUM=/path/to/chromium"
    )
    if in_ci():
        pytest.fail(message, pytrace=False)
    pytest.skip(message)


FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--remote-debugging-address=127.0.0.1",
    "--remote-debugging-port=0",
    "--window-size=1400,1000",
)
_WS_GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"


class WebSocket:
    """A blocking WebSocket client connection (text messages only)."""

    def __init__(self, port: int, path: str, timeout: float = 30.0) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
        key = base64.b64encode(os.urandom(16)).decode()
        self.sock.sendall(
            (
                f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\n"
                f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n"
            ).encode()
        )
        self.buffer = b""
        while b"\r\n\r\n" not in self.buffer:
            self._fill()
        head, self.buffer = self.buffer.split(b"\r\n\r\n", 1)
        expected = base64.b64encode(hashlib.sha1((key + _WS_GUID).encode()).digest()).decode()
        if b" 101 " not in head.split(b"\r\n")[0] or expected.encode() not in head:
            raise ConnectionError(f"WebSocket handshake refused: {head[:200]!r}")

    def _fill(self) -> None:
        chunk = self.sock.recv(1 << 16)
        if not chunk:
            raise ConnectionError("browser closed the connection")
        self.buffer += chunk

    def _take(self, n: int) -> bytes:
        while len(self.buffer) < n:
            self._fill()
        out, self.buffer = self.buffer[:n], self.buffer[n:]
        return out

    def send(self, text: str) -> None:
        payload = text.encode()
        n = len(payload)
        head = bytes([0x81])  # FIN, text
        if n < 126:
            head += bytes([0x80 | n])
        elif n < 1 << 16:
            head += bytes([0x80 | 126]) + struct.pack("!H", n)
        else:
            head += bytes([0x80 | 127]) + struct.pack("!Q", n)
        mask = os.urandom(4)
        masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
        self.sock.sendall(head + mask + masked)

    def _send_control(self, opcode: int, payload: bytes) -> None:
        mask = os.urandom(4)
        body = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
        self.sock.sendall(bytes([0x80 | opcode, 0x80 | len(payload)]) + mask + body)

    def receive(self) -> str:
        parts: list[bytes] = []
        while True:
            b0, b1 = self._take(2)
            opcode, n = b0 & 0x0F, b1 & 0x7F
            if n == 126:
                (n,) = struct.unpack("!H", self._take(2))
            elif n == 127:
                (n,) = struct.unpack("!Q", self._take(8))
            mask = self._take(4) if b1 & 0x80 else None
            data = self._take(n)
            if mask is not None:
                data = bytes(b ^ mask[i % 4] for i, b in enumerate(data))
            if opcode == 0x8:
                raise ConnectionError("browser closed the WebSocket")
            if opcode == 0x9:
                self._send_control(0xA, data)
                continue
            if opcode in (0x1, 0x0):
                parts.append(data)
                if b0 & 0x80:
                    return b"".join(parts).decode()

    def close(self) -> None:
        self.sock.close()


class Page:
    """One browser tab: send CDP commands, keep every event that arrives."""

    def __init__(self, ws: WebSocket) -> None:
        self.ws = ws
        self.events: list[dict[str, Any]] = []
        self._id = 0

    def send(self, method: str, params: dict[str, Any] | None = None) -> dict[str, Any]:
        self._id += 1
        self.ws.send(json.dumps({"id": self._id, "method": method, "params": params or {}}))
        while True:
            message = json.loads(self.ws.receive())
            if message.get("id") == self._id:
                if "error" in message:
                    raise RuntimeError(f"{method}: {message['error']}")
                result: dict[str, Any] = message.get("result", {})
                return result
            if "method" in message:
                self.events.append(message)

    def wait_event(self, method: str, timeout: float = 30.0, *, after: int = 0) -> dict[str, Any]:
        """The first ``method`` event from index ``after`` of :attr:`events` on, waiting for it."""
        deadline = time.monotonic() + timeout
        seen = after
        while time.monotonic() < deadline:
            for event in self.events[seen:]:
                if event["method"] == method:
                    return event
            seen = len(self.events)
            self.events.append(json.loads(self.ws.receive()))
        raise TimeoutError(f"no {method} within {timeout}s")

    def evaluate(self, expression: str) -> Any:
        result = self.send(
            "Runtime.evaluate", {"expression": expression, "returnByValue": True, "awaitPromise": True}
        )
        if "exceptionDetails" in result:
            raise RuntimeError(f"{expression}: {result['exceptionDetails']}")
        return result["result"].get("value")

    def wait_until(self, expression: str, timeout: float = 30.0, interval: float = 0.02) -> float:
        """Poll ``expression`` until it is truthy; returns the seconds it took."""
        start = time.monotonic()
        while not self._truthy(expression):
            if time.monotonic() - start > timeout:
                raise TimeoutError(f"{expression} still false after {timeout}s")
            time.sleep(interval)
        return time.monotonic() - start

    def _truthy(self, expression: str) -> bool:
        try:
            return bool(self.evaluate(expression))
        except RuntimeError:  # the old document went away mid-navigation: ask again
            return False

    def errors(self) -> list[str]:
        """Console errors, uncaught exceptions and error log entries seen so far."""
        out = []
        for event in self.events:
            method, params = event["method"], event.get("params", {})
            if method == "Runtime.exceptionThrown":
                out.append(json.dumps(params.get("exceptionDetails", {}))[:500])
            elif method == "Runtime.consoleAPICalled" and params.get("type") in ("error", "assert"):
                out.append(json.dumps(params.get("args", []))[:500])
            elif method == "Log.entryAdded" and params.get("entry", {}).get("level") == "error":
                out.append(params["entry"].get("text", "")[:500])
        return out

    def requested_urls(self) -> list[str]:
        return [
            e["params"]["request"]["url"] for e in self.events if e["method"] == "Network.requestWillBeSent"
        ]

    def screenshot(self, path: Path) -> None:
        """A PNG of the whole page (beyond the window), written to ``path``."""
        size = self.send("Page.getLayoutMetrics")["cssContentSize"]
        clip = {"x": 0, "y": 0, "width": size["width"], "height": min(size["height"], 6000), "scale": 1}
        shot = self.send(
            "Page.captureScreenshot", {"format": "png", "captureBeyondViewport": True, "clip": clip}
        )
        path.write_bytes(base64.b64decode(shot["data"]))


class Chromium:
    """``with Chromium(tmp_dir) as page:`` a fresh headless browser with its own profile in
    ``tmp_dir``, and a tab with the Runtime, Log, Page and Network domains enabled."""

    def __init__(self, tmp_dir: Path, executable: str) -> None:
        self.executable = executable
        self.profile = tmp_dir / "chromium-profile"
        self.process: subprocess.Popen[bytes] | None = None
        self.ws: WebSocket | None = None

    def __enter__(self) -> Page:
        self.profile.mkdir(parents=True, exist_ok=True)
        (self.profile / "DevToolsActivePort").unlink(missing_ok=True)  # a stale one names a dead port
        self.process = subprocess.Popen(
            [self.executable, *FLAGS, f"--user-data-dir={self.profile}", "about:blank"],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            port = self._port()
            self.ws = WebSocket(port, self._first_page(port))
            page = Page(self.ws)
            for domain in ("Runtime", "Log", "Page", "Network"):
                page.send(f"{domain}.enable")
        except BaseException:
            self.__exit__()  # never leave a browser behind
            raise
        return page

    def _port(self, timeout: float = 30.0) -> int:
        active = self.profile / "DevToolsActivePort"
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.process is not None
            if self.process.poll() is not None:
                raise RuntimeError(f"chromium exited early with {self.process.returncode}")
            lines = active.read_text().split("\n") if active.exists() else []
            if len(lines) >= 2 and lines[0].strip().isdigit():
                return int(lines[0])
            time.sleep(0.05)
        raise TimeoutError("chromium did not open its DevTools port")

    def _first_page(self, port: int, timeout: float = 15.0) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
            try:
                conn.request("GET", "/json/list")
                targets = json.loads(conn.getresponse().read())
            except ConnectionError:
                targets = []
            finally:
                conn.close()
            for target in targets:
                if target.get("type") == "page":
                    url: str = target["webSocketDebuggerUrl"]
                    return "/" + url.split("/", 3)[3]
            time.sleep(0.05)
        raise TimeoutError("chromium opened no page")

    def __exit__(self, *exc: object) -> None:
        if self.ws is not None:
            self.ws.close()
        if self.process is not None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def open_report(page: Page, path: Path, *, timeout: float = 30.0) -> float:
    """Navigate to the report file and wait until its script has drawn; returns seconds taken."""
    start = time.monotonic()
    url = path.resolve().as_uri()
    before = len(page.events)
    page.send("Page.navigate", {"url": url})
    page.wait_event("Page.loadEventFired", timeout, after=before)  # the new document, not the old one
    page.wait_until(f"location.href === {json.dumps(url)} && document.body.dataset.ready === '1'", timeout)
    return time.monotonic() - start
