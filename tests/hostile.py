"""Hostile text: strings from outside (model replies, job ids, server errors) that must be shown
as data by every sink. One corpus, used by every test of every sink.

Each entry is something a terminal or rich would act on if it were written as is: rich markup
(a closing tag with nothing open raises, ``[link=...]`` makes a hyperlink), escape sequences
(OSC window title, clear screen, colours, the one-byte C1 CSI), bidi overrides, NUL, backspace
and carriage return (which overwrite what came before).
"""

from __future__ import annotations

from pathlib import Path

HOSTILE = (
    "[/INST]",
    "[/]",
    "[/quote]",
    "[bold red]x",
    "[link=https://evil.example]click[/link]",
    ":skull:",
    "</script><script>alert(1)</script>",
    "\x1b]0;pwned\x07",
    "\x1b]8;;https://evil.example\x1b\\link\x1b]8;;\x1b\\",
    "\x1b[2J",
    "\x1b[31mred\x1b[0m",
    "\x9b2J",
    "\x85next",
    "\u202eevil",
    "line\u2028break",
    "nul\x00byte",
    "back\x08space",
    "carriage\rreturn",
)
"""The corpus. None contains a space: the simulator splits its ``text`` on spaces."""

RAW = (
    "\x1b]0;pwned",
    "\x1b]8;;https://evil",
    "\x1b[2J",
    "\x1b[31m",
    "\x9b",
    "\x85",
    "\u202e",
    "\x00",
    "\x08",
)
"""Pieces of the corpus that must never reach a terminal as they are."""


def toml_string(text: str) -> str:
    """``text`` as a TOML basic string (control characters as ``\\uXXXX``)."""
    out = []
    for char in text:
        if char in '"\\':
            out.append("\\" + char)
        elif ord(char) < 0x20 or 0x7F <= ord(char) < 0xA0:
            out.append(f"\\u{ord(char):04x}")
        else:
            out.append(char)
    return '"' + "".join(out) + '"'


def job_ids() -> list[str]:
    """One job id per hostile string (a NUL, which no id may hold, written as U+2400)."""
    return [f"j{n}-{text}".replace("\x00", "\u2400") for n, text in enumerate(HOSTILE)]


def write_sim_jobs(path: Path, *, tokens_per_s: float = 200.0, fail: bool = True) -> list[str]:
    """A sim job file whose job ids and reply texts are the corpus (every reply holds every
    string); with ``fail``, the first job fails for good. Returns the job ids."""
    reply = " ".join(HOSTILE)
    lines = [
        "[defaults]",
        'backend = "sim"',
        "concurrency = 4",
        "[defaults.sim]",
        "ttft = 0.05",
        f"tokens_per_s = {tokens_per_s}",
        f"text = {toml_string(reply)}",
    ]
    ids = job_ids()
    for n, job in enumerate(ids):
        lines += ["[[jobs]]", f"id = {toml_string(job)}", f"prompt = {toml_string('say ' + HOSTILE[n])}"]
        if fail and n == 0:
            lines.append('sim = {faults = ["fatal"]}')
    path.write_text("\n".join(lines) + "\n")
    return ids


def assert_shown_as_data(output: str | bytes) -> None:
    """No raw control sequence of the corpus in ``output``."""
    text = output.decode("utf-8", "replace") if isinstance(output, bytes) else output
    for raw in RAW:
        assert raw not in text, f"{raw!r} reached the output raw"
