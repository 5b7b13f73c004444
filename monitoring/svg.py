"""Draw the dashboard's panels, on Grafana's 24-column grid, as one SVG document: time
series as lines with axes and a legend, stats as their last value, tables as a row per
series. Only the standard library: no plotting package enters any dependency list."""

from __future__ import annotations

import datetime
import math
from collections.abc import Mapping, Sequence
from xml.sax.saxutils import escape

from monitoring.dashboard import Panel, legend
from monitoring.prometheus import Series

WIDTH = 1200
COLUMN = WIDTH / 24
ROW = 30  # Grafana's grid row, in pixels
GAP = 6
HEADER = 44
PALETTE = ("#73bf69", "#f2cc0c", "#8ab8ff", "#ff780a", "#f2495c", "#5794f2", "#b877d9",
           "#fade2a", "#37872d", "#c4162a")
BACKGROUND, PANEL, BORDER, TEXT, FAINT = "#111217", "#181b1f", "#2c3235", "#ccccdc", "#8e8e9e"

Drawn = tuple[str, list[Series]]  # a target's legend format and its series


def number(value: float, unit: str) -> str:
    """A value as Grafana would label it, roughly: seconds scaled, rates per second."""
    if math.isnan(value):
        return "No data"
    if unit == "s":
        magnitude = abs(value)
        if magnitude and magnitude < 1:
            return f"{value * 1000:.3g} ms"
        if magnitude >= 120:
            return f"{value / 60:.3g} min"
        return f"{value:.3g} s"
    suffix = "/s" if unit == "ops" else ""
    if value and abs(value) < 0.01:
        return f"{value:.1e}{suffix}"
    return f"{value:.3g}{suffix}"


def ticks(low: float, high: float, count: int = 4) -> list[float]:
    """Round values from low to high, about `count` of them."""
    span = high - low
    raw = span / count
    power = 10 ** math.floor(math.log10(raw))
    step = next(m * power for m in (1, 2, 2.5, 5, 10) if m * power >= raw)
    first = math.ceil(low / step) * step
    return [first + i * step for i in range(int((high - first) / step + 1e-9) + 1)]


def last_value(series: Series) -> float:
    values = [v for _, v in series.points if not math.isnan(v)]
    return values[-1] if values else math.nan


class Canvas:
    def __init__(self, height: float) -> None:
        self.height = height
        self.parts: list[str] = []

    def add(self, element: str) -> None:
        self.parts.append(element)

    def text(self, x: float, y: float, content: str, *, size: int = 11, fill: str = TEXT,
             anchor: str = "start", weight: str = "normal") -> None:
        self.add(f'<text x="{x:.1f}" y="{y:.1f}" font-size="{size}" fill="{fill}" '
                 f'text-anchor="{anchor}" font-weight="{weight}">{escape(content)}</text>')

    def document(self) -> str:
        return (f'<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" '
                f'height="{self.height:.0f}" viewBox="0 0 {WIDTH} {self.height:.0f}" '
                f'font-family="Inter, Helvetica, Arial, sans-serif">\n'
                + "\n".join(self.parts) + "\n</svg>\n")


def render(title: str, panels: Sequence[Panel], results: Mapping[str, list[Drawn]],
           start: float, end: float, caption: Sequence[str], *, step: float) -> str:
    """`results`: for each panel title, each target's legend format and series, whose
    points are `step` seconds apart (a longer gap is drawn as one)."""
    rows = max(panel.y + panel.height for panel in panels)
    height = HEADER + rows * ROW + 16 + 16 * len(caption)
    canvas = Canvas(height)
    canvas.add(f'<rect width="{WIDTH}" height="{height:.0f}" fill="{BACKGROUND}"/>')
    canvas.text(12, 28, title, size=18, weight="bold")
    when = (f"{_clock(start, '%Y-%m-%d %H:%M:%S')} to {_clock(end, '%H:%M:%S')} UTC")
    canvas.text(WIDTH - 12, 28, when, size=12, fill=FAINT, anchor="end")
    for panel in panels:
        x = panel.x * COLUMN + GAP / 2
        y = HEADER + panel.y * ROW + GAP / 2
        w, h = panel.width * COLUMN - GAP, panel.height * ROW - GAP
        canvas.add(f'<rect x="{x:.1f}" y="{y:.1f}" width="{w:.1f}" height="{h:.1f}" rx="3" '
                   f'fill="{PANEL}" stroke="{BORDER}"/>')
        canvas.text(x + 8, y + 17, panel.title, size=12, weight="bold")
        drawn = results.get(panel.title, [])
        if panel.kind == "timeseries":
            _timeseries(canvas, panel, drawn, (x, y, w, h), (start, end, step))
        elif panel.kind == "stat":
            _stat(canvas, panel, drawn, (x, y, w, h))
        else:
            _table(canvas, panel, drawn, (x, y, w, h))
    for number_, line in enumerate(caption):
        canvas.text(12, HEADER + rows * ROW + 14 + 16 * number_, line, size=11, fill=FAINT)
    return canvas.document()


def _clock(moment: float, layout: str) -> str:
    return datetime.datetime.fromtimestamp(moment, datetime.UTC).strftime(layout)


def _named(drawn: list[Drawn]) -> list[tuple[str, Series]]:
    return [(legend(template, series.labels), series)
            for template, found in drawn for series in found]


def _stat(canvas: Canvas, panel: Panel, drawn: list[Drawn],
          box: tuple[float, float, float, float]) -> None:
    x, y, w, h = box
    named = _named(drawn)
    value = last_value(named[0][1]) if named else math.nan
    canvas.text(x + w / 2, y + h / 2 + 14, number(value, panel.unit), size=34,
                fill=PALETTE[0] if not math.isnan(value) else FAINT, anchor="middle",
                weight="bold")
    if named:
        canvas.text(x + w / 2, y + h - 8, named[0][0], size=10, fill=FAINT, anchor="middle")


def _table(canvas: Canvas, panel: Panel, drawn: list[Drawn],
           box: tuple[float, float, float, float]) -> None:
    x, y, w, _ = box
    canvas.text(x + 12, y + 42, "Series", size=11, fill=FAINT, weight="bold")
    canvas.text(x + w - 12, y + 42, "Last value", size=11, fill=FAINT, anchor="end",
                weight="bold")
    named = _named(drawn) or [("No data", Series({}, []))]
    for row, (name, series) in enumerate(named):
        line_y = y + 64 + 20 * row
        canvas.add(f'<line x1="{x + 8:.1f}" y1="{line_y - 15:.1f}" x2="{x + w - 8:.1f}" '
                   f'y2="{line_y - 15:.1f}" stroke="{BORDER}"/>')
        canvas.text(x + 12, line_y, name)
        canvas.text(x + w - 12, line_y, number(last_value(series), panel.unit), anchor="end")


def _timeseries(canvas: Canvas, panel: Panel, drawn: list[Drawn],
                box: tuple[float, float, float, float],
                span: tuple[float, float, float]) -> None:
    x, y, w, h = box
    start, end, step = span
    named = _named(drawn)
    legend_rows = max(1, math.ceil(len(named) / 4))
    left, right = x + 64, x + w - 12
    top, bottom = y + 28, y + h - 22 - 15 * legend_rows
    values = [v for _, series in named for _, v in series.points if not math.isnan(v)]
    low = min([0.0, *values])
    high = max([*values, low + (1.0 if panel.unit != "s" else 0.01)])
    if high <= low:
        high = low + 1
    scale_y = (bottom - top) / (high - low)
    scale_x = (right - left) / max(end - start, 1)
    for tick in ticks(low, high):
        ty = bottom - (tick - low) * scale_y
        canvas.add(f'<line x1="{left:.1f}" y1="{ty:.1f}" x2="{right:.1f}" y2="{ty:.1f}" '
                   f'stroke="{BORDER}" stroke-width="0.6"/>')
        canvas.text(left - 6, ty + 4, number(tick, panel.unit), size=10, fill=FAINT,
                    anchor="end")
    minute = math.ceil(start / 60) * 60
    while minute <= end:
        tx = left + (minute - start) * scale_x
        canvas.text(tx, bottom + 14, _clock(minute, "%H:%M"), size=10, fill=FAINT,
                    anchor="middle")
        minute += 60
    if not named:
        canvas.text((left + right) / 2, (top + bottom) / 2, "No data", size=14, fill=FAINT,
                    anchor="middle")
    for index, (name, series) in enumerate(named):
        colour = PALETTE[index % len(PALETTE)]
        for run in _runs(series.points, step):
            points = " ".join(f"{left + (t - start) * scale_x:.1f},"
                              f"{bottom - (v - low) * scale_y:.1f}" for t, v in run)
            canvas.add(f'<polyline points="{points}" fill="none" stroke="{colour}" '
                       f'stroke-width="1.6"/>')
        column, row = index % 4, index // 4
        lx = x + 12 + column * (w - 24) / 4
        ly = y + h - 10 - 15 * (legend_rows - 1 - row)
        canvas.add(f'<rect x="{lx:.1f}" y="{ly - 7:.1f}" width="12" height="3" '
                   f'fill="{colour}"/>')
        canvas.text(lx + 16, ly - 2, name, size=10)


def _runs(points: list[tuple[float, float]],
          step: float) -> list[list[tuple[float, float]]]:
    """The points split where values are missing (NaN, or no point for longer than a
    step), as Grafana breaks its lines."""
    runs: list[list[tuple[float, float]]] = [[]]
    for moment, value in points:
        if math.isnan(value) or (runs[-1] and moment - runs[-1][-1][0] > 1.5 * step):
            runs.append([])
        if not math.isnan(value):
            runs[-1].append((moment, value))
    return [run for run in runs if run]
