"""users.mounting_views: a claim's views in an index, under its name and its ordinal marker."""

from __future__ import annotations

import datetime
from collections.abc import Callable, Mapping

from evc_operator.users import PodView, mounting_views

CREATED = datetime.datetime(2026, 1, 1, tzinfo=datetime.UTC)


def view(name: str, *claims: str) -> PodView:
    return PodView(name=name, namespace="jobs", active=True, created=CREATED,
                   claims=tuple(sorted(claims)), labels=())


STS = view("StatefulSet/web", "data-web-0", "data-web-*")
POD = view("web-0", "data-web-0")
OTHER = view("other", "scratch")
INDEX: Mapping[str, tuple[PodView, ...]] = {
    "data-web-0": (STS, POD), "data-web-*": (STS,), "scratch": (OTHER,)}


def recording(index: Mapping[str, tuple[PodView, ...]], looked_up: list[str],
              ) -> Callable[[str], tuple[PodView, ...]]:
    def under(name: str) -> tuple[PodView, ...]:
        looked_up.append(name)
        return index.get(name, ())

    return under


def test_a_name_without_an_ordinal_is_looked_up_alone_and_not_copied() -> None:
    looked_up: list[str] = []
    assert mounting_views("scratch", recording(INDEX, looked_up)) is INDEX["scratch"]
    assert looked_up == ["scratch"]


def test_an_ordinal_with_no_statefulset_under_its_marker_is_its_names_views() -> None:
    looked_up: list[str] = []
    pod = view("db-3", "data-db-3")
    found = mounting_views("data-db-3", recording({"data-db-3": (pod,)}, looked_up))
    assert list(found) == [pod]
    assert looked_up == ["data-db-3", "data-db-*"]
    looked_up.clear()  # a leading zero is no ordinal a StatefulSet writes
    assert list(mounting_views("data-web-00", recording(INDEX, looked_up))) == []
    assert looked_up == ["data-web-00"]


def test_a_statefulset_under_the_marker_comes_first_and_once() -> None:
    under = recording(INDEX, [])
    assert list(mounting_views("data-web-5", under)) == [STS]
    assert list(mounting_views("data-web-0", under)) == [STS, POD]


def test_a_view_under_both_is_the_one_under_the_name() -> None:
    again = view("StatefulSet/web", "data-web-0")  # another copy of the same workload
    index = {"data-web-0": {again.name: again}, "data-web-*": {STS.name: STS}}
    found = list(mounting_views("data-web-0", lambda name: index.get(name, {}).values()))
    assert found == [again]
    assert found[0] is again
