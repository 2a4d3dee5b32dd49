"""A held encoding costs its length: orjson's own output keeps a buffer of at least 4 KB."""

from __future__ import annotations

import tracemalloc
from typing import Any

import orjson
import pytest

from aurora_streams import codecs
from aurora_streams.domain.jsonbytes import dumps
from tests.unit.test_codecs import NORMALIZED


def _held(make: Any) -> tuple[bytes, int]:
    make()  # the first call fills one-time caches
    tracemalloc.start()
    try:
        before, _ = tracemalloc.get_traced_memory()
        data = make()
        after, _ = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    return data, after - before


@pytest.mark.parametrize("size", [10, 300, 1_000, 5_000, 50_000])
def test_dumps_is_orjsons_bytes_held_at_their_length(size: int) -> None:
    doc = {"a": "x" * size, "n": [1.5, None, True]}
    data, held = _held(lambda: dumps(doc))
    assert data == orjson.dumps(doc)
    assert held < len(data) + 256


def test_an_encoded_output_record_holds_its_length() -> None:
    data, held = _held(lambda: codecs.encode_normalized(NORMALIZED, "json"))
    assert len(data) < 1_000 and held < len(data) + 256  # 4,089 bytes before
