"""The dashboard picture's parts that need no cluster: the dashboard JSON read as panels and
queries, and the SVG drawn from given series (monitoring/)."""

from __future__ import annotations

import math
import re
import xml.etree.ElementTree as ET

import pytest
from hypothesis import given
from hypothesis import strategies as st

from monitoring import dashboard, svg
from monitoring.prometheus import Series

SVG = "{http://www.w3.org/2000/svg}"
VARIABLES = {"namespace": "evc-operator", "__rate_interval": "20s"}


def test_every_panel_query_is_complete_once_the_variables_are_given() -> None:
    title, panels = dashboard.load()
    assert title == "EphemeralVolumeClaim operator"
    assert len(panels) >= 12
    for panel in panels:
        assert panel.targets, panel.title
        for target in panel.targets:
            query = dashboard.substitute(target.expr, VARIABLES)
            assert "$" not in query, query
            assert 'namespace="evc-operator"' in query, panel.title
    assert {panel.kind for panel in panels} == {"stat", "timeseries", "table"}
    # The panels tile the 24-column grid without overlapping.
    cells = [(panel.x + dx, panel.y + dy) for panel in panels
             for dx in range(panel.width) for dy in range(panel.height)]
    assert len(cells) == len(set(cells))
    assert all(0 <= x < 24 for x, _ in cells)


def test_an_unknown_variable_is_an_error() -> None:
    with pytest.raises(KeyError, match=r"\$cluster"):
        dashboard.substitute('up{cluster="$cluster"}', VARIABLES)
    assert dashboard.substitute("x{n=\"${namespace}\"}", VARIABLES) == 'x{n="evc-operator"}'


def test_legend_names_series_by_their_labels() -> None:
    assert dashboard.legend("{{operation}} {{ status }}", {"operation": "create_pvc",
                                                         "status": "403"}) == "create_pvc 403"
    assert dashboard.legend("", {"phase": "InUse"}) == "value"


def test_numbers_as_panels_label_them() -> None:
    assert svg.number(0.0042, "s") == "4.2 ms"
    assert svg.number(12.5, "s") == "12.5 s"
    assert svg.number(300, "s") == "5 min"
    assert svg.number(0.25, "ops") == "0.25/s"
    assert svg.number(2, "") == "2"
    assert svg.number(math.nan, "s") == "No data"


@given(st.floats(-1e6, 1e6), st.floats(1e-3, 1e6))
def test_ticks_are_round_values_within_the_range(low: float, span: float) -> None:
    high = low + span
    found = svg.ticks(low, high)
    assert 1 <= len(found) <= 9
    assert all(low - 1e-9 * span <= tick <= high + 1e-9 * span for tick in found)
    assert found == sorted(found)


def rendered(results: dict[str, list[svg.Drawn]]) -> ET.Element:
    title, panels = dashboard.load()
    text = svg.render(title, panels, results, 1000.0, 1240.0,
                      ["Rendered, not a Grafana screenshot."], step=5)
    return ET.fromstring(text)


def texts(root: ET.Element) -> list[str]:
    return [element.text or "" for element in root.iter(f"{SVG}text")]


def test_the_picture_has_every_panel_and_its_caption() -> None:
    phases = [Series({"phase": phase}, [(1000.0 + 5 * i, float(i % 7)) for i in range(49)])
              for phase in ("Pending", "InUse")]
    gap = Series({"reason": "PvcConflict"},
                 [(1000.0, 1.0), (1005.0, 1.0), (1100.0, 2.0), (1105.0, math.nan),
                  (1110.0, 2.0)])
    leader = Series({}, [(1000.0, 0.0), (1235.0, 1.0)])
    root = rendered({"Claims by phase": [("{{phase}}", phases)],
                     "Claims by reason": [("{{reason}}", [gap])],
                     "Leader": [("replicas leading", [leader])]})
    found = texts(root)
    _, panels = dashboard.load()
    for panel in panels:
        assert panel.title in found
    assert "Rendered, not a Grafana screenshot." in found
    assert {"Pending", "InUse", "PvcConflict"} <= set(found)
    assert "1" in found, "a stat shows its series' last value"
    assert found.count("No data") >= len(panels) - 3
    lines = list(root.iter(f"{SVG}polyline"))
    # one line per phase, and the reasons' series broken at the gap and at the NaN
    assert len(lines) == 2 + 3
    for line in lines:
        for point in (line.get("points") or "").split():
            x, y = (float(value) for value in point.split(","))
            assert 0 <= x <= svg.WIDTH
            assert 0 <= y <= float(root.get("height") or 0)


def test_text_is_escaped() -> None:
    root = rendered({"Claims by phase": [("{{phase}}", [Series({"phase": "<&>"},
                                                               [(1000.0, 1.0)])])]})
    assert "<&>" in texts(root)
    assert not re.search(r"<&>", ET.tostring(root, encoding="unicode"))
