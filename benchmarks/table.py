"""Benchmark results: rows of repeated measurements, a ratio against a baseline, and Markdown."""

from __future__ import annotations

import re
import statistics
from pathlib import Path

import attrs

_TARGET = re.compile(r"([<>]=)\s*\+?([\d.]+)")


@attrs.frozen
class Row:
    label: str
    values: list[float]
    unit: str
    higher_is_better: bool = False

    def best(self) -> float:
        return max(self.values) if self.higher_is_better else min(self.values)


def meets(value: float, target: str) -> bool | None:
    """Whether ``value`` meets a target such as ``">= 0.8"`` or ``"<= +150 ms"``; None if the
    target states no bound."""
    match = _TARGET.search(target)
    if match is None:
        return None
    bound = float(match.group(2))
    return value >= bound if match.group(1) == ">=" else value <= bound


@attrs.frozen
class Section:
    title: str
    rows: list[Row]
    ratio: tuple[float, str, float | None] | None = None
    """(our figure, its target, the same figure for the reference, if any)."""
    ratio_label: str = "ratio"
    extra_ratios: list[tuple[str, float, str]] = attrs.Factory(list)
    note: str = ""
    preformatted: str = ""

    def checks(self) -> list[tuple[str, float, str, bool | None]]:
        out = []
        if self.ratio is not None:
            out.append((self.ratio_label, self.ratio[0], self.ratio[1], meets(self.ratio[0], self.ratio[1])))
        out.extend((label, value, target, meets(value, target)) for label, value, target in self.extra_ratios)
        return out

    def markdown(self) -> str:
        lines = [f"### {self.title}", ""]
        if self.rows:
            lines += ["| measure | best | median | unit | runs |", "|---|---:|---:|---|---:|"]
            for row in self.rows:
                best, median = _num(row.best()), _num(statistics.median(row.values))
                lines.append(f"| {row.label} | {best} | {median} | {row.unit} | {len(row.values)} |")
            lines.append("")
        for label, value, target, ok in self.checks():
            verdict = {True: "met", False: "**not met**", None: ""}[ok]
            reference = ""
            if self.ratio is not None and label == self.ratio_label and self.ratio[2] is not None:
                reference = f" (reference: {_num(self.ratio[2])})"
            lines.append(f"- {label}: **{_num(value)}**{reference}, target {target} {verdict}".rstrip())
        if self.preformatted:
            lines += ["", "```", self.preformatted.rstrip(), "```"]
        if self.note:
            lines += ["", self.note]
        return "\n".join(lines) + "\n"


def _num(value: float) -> str:
    if value == 0:
        return "0"
    if abs(value) >= 1000:
        return f"{value:,.0f}"
    if abs(value) >= 10:
        return f"{value:.1f}"
    return f"{value:.3g}"


def cpu_model() -> str:
    """The processor's model name, for the machine line of a result."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return "unknown CPU"
