"""Query parameters: every malformed value is a 400 with the JSON error body, never a 500
(schemathesis and hostile inputs found superscript digits, ``--5``, numbers over 4,300
digits and cursors past the range)."""

from __future__ import annotations

import pytest
from aiohttp.test_utils import make_mocked_request

from aurora_streams.web import api


def request(query: str):  # type: ignore[no-untyped-def]
    return make_mocked_request("GET", f"/v1/anomalies?{query}")


@pytest.mark.parametrize("raw", ["%C2%B2", "-1", "0", "1001", "1" * 5000, "1e3", "+5", " 5"])
def test_a_bad_limit_is_a_400(raw: str) -> None:
    with pytest.raises(api._BadRequest) as info:
        api._limit(request(f"limit={raw}"))
    assert (info.value.reason, info.value.field) == ("invalid_limit", "limit")


def test_a_good_limit() -> None:
    assert api._limit(request("limit=25")) == 25
    assert api._limit(request("")) == 100


@pytest.mark.parametrize("raw", ["--5", "%C2%B2", "1" * 5000, "yesterday", "9" * 15, "-9" * 3])
def test_a_bad_instant_is_a_400(raw: str) -> None:
    with pytest.raises(api._BadRequest) as info:
        api._instant(request(f"since={raw}"), "since")
    assert (info.value.reason, info.value.field) == ("invalid_time", "since")


def test_good_instants() -> None:
    assert api._instant(request("since=1735689600000"), "since") == 1_735_689_600_000
    assert api._instant(request("since=2025-01-01T00:00:00Z"), "since") == 1_735_689_600_000
    assert api._instant(request(""), "since") is None


@pytest.mark.parametrize(
    ("raw", "want"), [("12", 12), ("²", None), ("", None), ("1" * 16, None), ("-1", None)]
)
def test_digits(raw: str, want: int | None) -> None:
    assert api._digits(raw) == want
