"""Small static SVG charts for the HTML report: a stepped time series, a histogram, a bar list.

Each function returns one ``<svg>`` element as a string, drawn in a fixed ``viewBox`` so the
browser scales it to any width. Hover text is native SVG ``<title>``: no script needed. The
caller passes already aggregated data (a few hundred bins at most), so the SVG stays small
whatever the batch size.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import attrs

from orchestrator.visible import as_html as escape

W, H = 640, 220
LEFT, RIGHT, TOP, BOTTOM = 52, 12, 26, 26
PLOT_W, PLOT_H = W - LEFT - RIGHT, H - TOP - BOTTOM


@attrs.frozen
class Series:
    """One line of a time chart: a value per bin, drawn as steps."""

    name: str
    values: Sequence[float]
    color: str
    fill: bool = False


@attrs.frozen
class Mark:
    """A vertical line at time ``t`` with hover text (a limiter change, a run boundary)."""

    t: float
    title: str
    color: str = "#7c3aed"
    dashed: bool = False


def nice_ticks(top: float, count: int = 5, *, whole: bool = False) -> list[float]:
    """Round tick values from 0 to at least ``top`` (about ``count`` of them); ``whole``
    keeps the step a whole number (for counts)."""
    if not top > 0 or not math.isfinite(top):
        return [0.0, 1.0]
    raw = top / count
    power = 10 ** math.floor(math.log10(raw))
    step = next(m * power for m in (1, 2, 2.5, 5, 10) if m * power >= raw)
    if whole:
        step = max(1, math.ceil(step))
    n = math.ceil(top / step - 1e-9)
    return [i * step for i in range(n + 1)]


def _fmt(value: float) -> str:
    if value == 0:
        return "0"
    if abs(value) >= 1000:
        return f"{value / 1000:g}k"
    return f"{value:.4g}"


def _frame(
    x_ticks: Sequence[float], x_max: float, y_ticks: Sequence[float], y_label: str, x_label: str
) -> str:
    y_top = y_ticks[-1] or 1.0
    parts = [f'<text class="axis-label" x="4" y="12">{escape(y_label)}</text>']
    for tick in y_ticks:
        y = TOP + PLOT_H - tick / y_top * PLOT_H
        parts.append(f'<line class="grid" x1="{LEFT}" x2="{W - RIGHT}" y1="{y:.1f}" y2="{y:.1f}"/>')
        parts.append(
            f'<text class="tick" x="{LEFT - 4}" y="{y + 3:.1f}" text-anchor="end">{_fmt(tick)}</text>'
        )
    for tick in x_ticks:
        x = LEFT + (tick / x_max * PLOT_W if x_max > 0 else 0)
        parts.append(
            f'<text class="tick" x="{x:.1f}" y="{H - BOTTOM + 14}" text-anchor="middle">{_fmt(tick)}</text>'
        )
    parts.append(
        f'<text class="axis-label" x="{W - RIGHT}" y="{H - 2}" text-anchor="end">{escape(x_label)}</text>'
    )
    parts.append(f'<line class="axis" x1="{LEFT}" x2="{W - RIGHT}" y1="{TOP + PLOT_H}" y2="{TOP + PLOT_H}"/>')
    return "".join(parts)


def time_chart(
    series: Sequence[Series], t_end: float, y_label: str, marks: Sequence[Mark] = (), *, chart_id: str = ""
) -> str:
    """Stepped lines over ``[0, t_end]`` seconds, every series with the same number of bins."""
    peak = max((v for s in series for v in s.values), default=0.0)
    y_ticks = nice_ticks(peak if peak > 0 else 1.0, 4)
    y_top = y_ticks[-1]
    x_max = t_end if t_end > 0 else 1.0
    parts = [_open(chart_id), _frame(nice_ticks(x_max, 6), x_max, y_ticks, y_label, "seconds")]
    for s in series:
        n = len(s.values)
        if not n:
            continue
        points: list[str] = []
        for i, value in enumerate(s.values):
            y = TOP + PLOT_H - value / y_top * PLOT_H
            points.append(f"{LEFT + i / n * PLOT_W:.1f},{y:.1f} {LEFT + (i + 1) / n * PLOT_W:.1f},{y:.1f}")
        path = " ".join(points)
        if s.fill:
            base = TOP + PLOT_H
            parts.append(
                f'<polygon points="{LEFT},{base} {path} {W - RIGHT},{base}" fill="{s.color}" '
                f'fill-opacity="0.25" stroke="none"><title>{escape(s.name)}</title></polygon>'
            )
        parts.append(
            f'<polyline points="{path}" fill="none" stroke="{s.color}" stroke-width="1.4">'
            f"<title>{escape(s.name)}</title></polyline>"
        )
    for mark in marks:
        x = LEFT + min(max(mark.t / x_max, 0.0), 1.0) * PLOT_W
        dash = ' stroke-dasharray="4 3"' if mark.dashed else ""
        parts.append(
            f'<line class="mark" x1="{x:.1f}" x2="{x:.1f}" y1="{TOP}" y2="{TOP + PLOT_H}" '
            f'stroke="{mark.color}" stroke-width="2"{dash}><title>{escape(mark.title)}</title></line>'
        )
    parts.append(_legend(series))
    return "".join(parts) + "</svg>"


def histogram(
    counts: Sequence[int], bin_width: float, x_label: str, marks: Sequence[Mark] = (), *, chart_id: str = ""
) -> str:
    """Bars of ``counts`` for bins ``[i * bin_width, (i + 1) * bin_width)``."""
    n = len(counts)
    x_max = n * bin_width if n and bin_width > 0 else 1.0
    y_ticks = nice_ticks(max(counts, default=0) or 1, 4, whole=True)
    parts = [_open(chart_id), _frame(nice_ticks(x_max, 6), x_max, y_ticks, "jobs", x_label)]
    for i, count in enumerate(counts):
        if not count:
            continue
        h = count / y_ticks[-1] * PLOT_H
        x = LEFT + i / n * PLOT_W
        lo, hi = i * bin_width, (i + 1) * bin_width
        parts.append(
            f'<rect class="bar" x="{x:.1f}" y="{TOP + PLOT_H - h:.1f}" width="{max(PLOT_W / n - 1, 1):.1f}" '
            f'height="{h:.1f}"><title>{lo:.3g}&#8211;{hi:.3g} s: {count} jobs</title></rect>'
        )
    for mark in marks:
        x = LEFT + min(max(mark.t / x_max, 0.0), 1.0) * PLOT_W
        parts.append(
            f'<line x1="{x:.1f}" x2="{x:.1f}" y1="{TOP}" y2="{TOP + PLOT_H}" stroke="{mark.color}" '
            f'stroke-width="1.5" stroke-dasharray="4 3"><title>{escape(mark.title)}</title></line>'
            f'<text class="tick" x="{x + (3 if x < W - 60 else -3):.1f}" y="{TOP + 10}" '
            f'text-anchor="{"start" if x < W - 60 else "end"}">{escape(mark.title.split(" ")[0])}</text>'
        )
    return "".join(parts) + "</svg>"


def bar_list(items: Sequence[tuple[str, float, str]], *, chart_id: str = "") -> str:
    """Horizontal bars, one per (label, value, hover text), longest first as given."""
    row = 18
    height = TOP + row * max(len(items), 1) + 8
    label_w = 170
    top = max((value for _, value, _ in items), default=0.0) or 1.0
    parts = [
        f'<svg class="chart" id="{escape(chart_id)}" viewBox="0 0 {W} {height}" '
        f'xmlns="http://www.w3.org/2000/svg" role="img">'
    ]
    for i, (label, value, title) in enumerate(items):
        y = TOP + i * row
        width = value / top * (W - label_w - 90)
        short = label if len(label) <= 26 else label[:25] + "…"
        parts.append(
            f"<g><title>{escape(title)}</title>"
            f'<text class="tick" x="{label_w - 6}" y="{y + 12}" text-anchor="end">{escape(short)}</text>'
            f'<rect class="bar" x="{label_w}" y="{y + 2}" width="{max(width, 1):.1f}" height="{row - 5}"/>'
            f'<text class="tick" x="{label_w + width + 4:.1f}" y="{y + 12}">${value:.4g}</text></g>'
        )
    return "".join(parts) + "</svg>"


def _open(chart_id: str) -> str:
    return (
        f'<svg class="chart" id="{escape(chart_id)}" viewBox="0 0 {W} {H}" '
        f'xmlns="http://www.w3.org/2000/svg" role="img">'
    )


def _legend(series: Sequence[Series]) -> str:
    parts = []
    x = LEFT + 60
    for s in series:
        parts.append(
            f'<rect x="{x}" y="7" width="10" height="3" fill="{s.color}"/>'
            f'<text class="tick" x="{x + 14}" y="12">{escape(s.name)}</text>'
        )
        x += 22 + 6 * len(s.name)
    return "".join(parts)
