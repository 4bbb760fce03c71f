"""``python -m benchmarks [NAME ...] [--quick] [--no-write]``: run benchmarks, print the results and
rewrite the results section of BENCHMARKS.md (unless ``--quick`` or ``--no-write``).

Core benchmarks: bus, makespan, memory, scale, startup, stop. Big batches (bigstop, bigreport,
bigresume, firstrequest: minutes each) run when named. Others run as their own scripts and
their tables are kept as printed: local (needs the local model), http and ratelimit (need the
bench extra).
"""

from __future__ import annotations

import argparse
import os
import platform
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

import trio

from benchmarks.big import BIG
from benchmarks.core import CORE
from benchmarks.table import Section, cpu_model

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "BENCHMARKS.md"
BEGIN, END = "<!-- results: begin -->", "<!-- results: end -->"

EXTERNAL = {
    "local": ("Local backend tokens/s", ["benchmarks.local_tokens"]),
    "http": ("HTTP transport CPU per event", ["benchmarks.http_transport"]),
    "ratelimit": ("Rate-limit profiles: makespan, 429s, client CPU", ["benchmarks.ratelimit"]),
}


def _external(title: str, module: list[str], quick: bool) -> Section:
    out = subprocess.run([sys.executable, "-m", *module], cwd=ROOT, capture_output=True, text=True)
    text = out.stdout if out.returncode == 0 else f"failed (exit {out.returncode}):\n{out.stderr[-2000:]}"
    return Section(title, [], preformatted=text)


def _machine() -> str:
    cpu = cpu_model()
    return (
        f"{datetime.now(UTC):%Y-%m-%d %H:%M} UTC; {cpu}, {os.cpu_count()} cores (shared); "
        f"Python {platform.python_version()}, trio {trio.__version__}, "
        f"{platform.system()} {platform.release()}"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__)
    parser.add_argument(
        "names", nargs="*", help=f"any of: {', '.join([*CORE, *BIG, *EXTERNAL])} (default: all core)"
    )
    parser.add_argument("--quick", action="store_true", help="tiny sizes, no targets: a smoke test")
    parser.add_argument("--no-write", action="store_true", help="do not rewrite BENCHMARKS.md")
    args = parser.parse_args(argv)
    names = args.names or list(CORE)
    unknown = [n for n in names if n not in CORE and n not in BIG and n not in EXTERNAL]
    if unknown:
        parser.error(f"unknown benchmark(s): {', '.join(unknown)}")
    sections = []
    for name in names:
        started = time.perf_counter()
        if name in CORE:
            section = CORE[name](args.quick)
        elif name in BIG:
            section = BIG[name](args.quick)
        else:
            section = _external(*EXTERNAL[name], args.quick)
        sections.append(section)
        print(section.markdown())
        print(f"({name}: {time.perf_counter() - started:.1f}s)\n", flush=True)
    if not args.quick and not args.no_write:
        _write(sections)
    missed = [label for s in sections for label, _, _, ok in s.checks() if ok is False]
    if missed and not args.quick:
        print("targets not met: " + "; ".join(missed))
    return 0


def _write(sections: list[Section]) -> None:
    """Replace the sections just measured in the results block, keep the others, in order."""
    text = RESULTS.read_text() if RESULTS.exists() else f"# Benchmarks\n\n{BEGIN}\n{END}\n"
    head, _, rest = text.partition(BEGIN)
    block, _, tail = rest.partition(END)
    kept: dict[str, str] = {}
    for chunk in block.split("\n### ")[1:]:
        title = chunk.split("\n", 1)[0]
        kept[title] = "### " + chunk.rstrip() + "\n"
    stamp = f"<!-- measured: {_machine()} -->\n"
    for section in sections:
        kept[section.title] = "### " + section.title + "\n\n" + stamp + section.markdown().split("\n", 1)[1]
    body = f"Machine: {_machine()}\n\n" + "\n".join(kept.values())
    RESULTS.write_text(f"{head}{BEGIN}\n{body}{END}{tail}")


if __name__ == "__main__":
    sys.exit(main())
