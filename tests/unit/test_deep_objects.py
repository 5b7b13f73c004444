"""Objects nested deeper than orjson parses (1,024 levels) but not deeper than the API
server takes (10,000): a custom resource that keeps unknown fields can be one. Refused,
it stopped its kind's informer for good (each retry met it again), and collection reads
failed the proofs of its namespace."""

from __future__ import annotations

import asyncio
import json
import sys
from typing import Any

import orjson
import pytest
from aiohttp import web

from evc_operator import customkinds, listwatch, parsing
from tests.unit.test_kube import serving_api

KIND = "argoproj.io/v1alpha1/workflows"


def _nested(depth: int, inner: bytes) -> bytes:
    """`inner` at the bottom of `depth` objects, each `{"next": ...}`."""
    return b'{"next":' * depth + inner + b"}" * depth


def _depth(value: Any) -> int:
    depth = 0
    while isinstance(value, dict) and "next" in value:
        value, depth = value["next"], depth + 1
    return depth


def _workflow(name: str, version: str, depth: int) -> bytes:
    """A custom object whose spec names the claim `scratch` `depth` levels down."""
    claim = b'{"persistentVolumeClaim":{"claimName":"scratch"}}'
    return (b'{"metadata":{"name":"' + name.encode() + b'","namespace":"a",'
            b'"resourceVersion":"' + version.encode() + b'",'
            b'"creationTimestamp":"2026-12-07T10:00:00Z"},"spec":'
            + _nested(depth, claim) + b"}")


def test_a_document_deeper_than_orjson_takes_is_parsed_to_the_api_servers_depth() -> None:
    limit = sys.getrecursionlimit()
    with pytest.raises(orjson.JSONDecodeError):
        orjson.loads(_nested(1_100, b"1"))
    value = parsing.loads(_nested(parsing.API_DEPTH, b"1"))
    assert _depth(value) == parsing.API_DEPTH
    assert sys.getrecursionlimit() == limit  # raised only while it parsed
    assert parsing.loads(b'{"a": [1, 2]}') == {"a": [1, 2]}


def test_a_malformed_document_is_still_refused_as_malformed() -> None:
    with pytest.raises(json.JSONDecodeError):
        parsing.loads(b'{"a": [1,')
    with pytest.raises(json.JSONDecodeError):  # deep and malformed: refused by both
        parsing.loads(b'{"next":' * 2_000 + b"1")


def test_a_deep_object_is_listed_watched_and_read_and_its_claim_is_found() -> None:
    """Through the API client against a local server: a list, a collection's version and
    a watch, each holding a workflow that names its claim 3,000 levels down."""
    deep = 3_000

    async def scenario() -> None:
        async def workflows(request: web.Request) -> web.StreamResponse:
            if request.query.get("watch") == "true":
                response = web.StreamResponse()
                await response.prepare(request)
                await response.write(b'{"type":"ADDED","object":'
                                     + _workflow("w2", "12", deep) + b"}\n")
                return response
            body = (b'{"metadata":{"resourceVersion":"11"},"items":['
                    + _workflow("w1", "10", deep) + b"]}")
            return web.Response(body=body, content_type="application/json")

        app = web.Application()
        app.router.add_get("/apis/argoproj.io/v1alpha1/namespaces/a/workflows", workflows)
        async with serving_api(app) as api:
            listed: list[dict[str, Any]] = []
            version = await listwatch.list_all(api, KIND, "a", listed.append)
            assert version == "11"
            assert await listwatch.collection_version(api, KIND, "a") == 11
            watched = [body async for _, body in listwatch.watch(api, KIND, "a", "11",
                                                                 seconds=5)]
        views = [customkinds.custom_view("workflows.argoproj.io", body)
                 for body in (*listed, *watched)]
        assert [(view.name, view.claims) for view in views] == [
            ("workflows.argoproj.io/w1", ("scratch",)),
            ("workflows.argoproj.io/w2", ("scratch",))]

    asyncio.run(asyncio.wait_for(scenario(), 30))
