"""Packed JSON (packing.py): exact both ways, whatever the sample, and small when usual."""

from __future__ import annotations

from typing import Any

import orjson
from hypothesis import given
from hypothesis import strategies as st

from evc_operator.packing import Packer

JSON = st.recursive(
    st.none() | st.booleans() | st.integers(-2**53, 2**53) | st.text(),
    lambda children: st.lists(children, max_size=4)
    | st.dictionaries(st.text(max_size=8), children, max_size=4),
    max_leaves=20)


@given(value=st.dictionaries(st.text(max_size=12), JSON, max_size=6))
def test_any_mapping_comes_back_exactly(value: dict[str, Any]) -> None:
    packer = Packer({"phase": "InUse", "conditions": [{"type": "InUse"}]})
    assert packer.unpack(packer.pack(value)) == value


def test_what_resembles_the_sample_packs_to_a_fraction_of_its_json() -> None:
    sample = {"conditions": [{"type": "SpecValid", "status": "True", "reason": "Valid",
                              "message": "The spec is valid."}]}
    packer = Packer(sample)
    usual = {"phase": "Idle", **sample}
    assert len(packer.pack(usual)) < len(orjson.dumps(usual)) / 3
    assert packer.unpack(packer.empty) == {}
