"""The Grafana dashboard JSON as far as the picture needs it: panels, their place on the
24-column grid, their queries with the dashboard's variables filled in, legend names."""

from __future__ import annotations

import dataclasses
import json
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

DASHBOARD = (Path(__file__).resolve().parent.parent / "charts" / "evc-operator" / "dashboards"
             / "evc-operator.json")
VARIABLE = re.compile(r"\$(?:\{(\w+)\}|(\w+))")
LEGEND = re.compile(r"\{\{\s*(\w+)\s*\}\}")


@dataclasses.dataclass(frozen=True)
class Target:
    ref: str
    expr: str
    legend: str


@dataclasses.dataclass(frozen=True)
class Panel:
    title: str
    kind: str  # stat, timeseries, table
    x: int
    y: int
    width: int
    height: int
    unit: str
    targets: tuple[Target, ...]


def load(path: Path = DASHBOARD) -> tuple[str, list[Panel]]:
    """The dashboard's title and panels, in reading order."""
    document: dict[str, Any] = json.loads(path.read_text())
    panels = []
    for panel in document["panels"]:
        grid = panel["gridPos"]
        unit = panel.get("fieldConfig", {}).get("defaults", {}).get("unit", "")
        targets = tuple(Target(t["refId"], t["expr"], t.get("legendFormat", ""))
                        for t in panel.get("targets", []))
        panels.append(Panel(panel["title"], panel["type"], grid["x"], grid["y"], grid["w"],
                            grid["h"], unit or "", targets))
    panels.sort(key=lambda p: (p.y, p.x))
    return str(document["title"]), panels


def substitute(expr: str, variables: Mapping[str, str]) -> str:
    """A query with Grafana's variables ($namespace, ${namespace}, $__rate_interval)
    replaced; an unknown variable is an error, not a query that silently matches nothing."""
    def replace(match: re.Match[str]) -> str:
        name = match.group(1) or match.group(2)
        if name not in variables:
            raise KeyError(f"no value for the dashboard variable ${name} in {expr!r}")
        return variables[name]
    return VARIABLE.sub(replace, expr)


def legend(template: str, labels: Mapping[str, str]) -> str:
    """Grafana's legend format: {{label}} replaced by the series' label value."""
    return LEGEND.sub(lambda match: labels.get(match.group(1), ""), template) or "value"
