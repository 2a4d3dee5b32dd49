from __future__ import annotations

import pytest

from aurora_streams.settings import ApiToken
from aurora_streams.web.auth import Authenticator

TOKENS = {
    "loader": ApiToken(token="l" * 20, roles=["ingest"]),  # type: ignore[arg-type]
    "root": ApiToken(token="a" * 20, roles=["admin"]),  # type: ignore[arg-type]
}


@pytest.mark.parametrize(("header", "role", "status", "reason"), [
    (None, "ingest", 401, "missing_token"),
    ("Basic abc", "ingest", 401, "missing_token"),
    ("Bearer ", "ingest", 401, "missing_token"),
    ("Bearer wrong-token-value", "ingest", 401, "invalid_token"),
    ("Bearer " + "l" * 20, "ingest", 200, "ok"),
    ("bearer " + "l" * 20, "ingest", 200, "ok"),
    ("Bearer " + "l" * 20, "read", 403, "forbidden"),
    ("Bearer " + "a" * 20, "read", 200, "ok"),
])  # fmt: skip
def test_authorize(header: str | None, role: str, status: int, reason: str) -> None:
    result = Authenticator(TOKENS).authorize(header, role)  # type: ignore[arg-type]
    assert (result.status, result.reason) == (status, reason)
    assert "l" * 20 not in result.message and "a" * 20 not in result.message


def test_no_tokens_configured_denies_everything() -> None:
    assert Authenticator({}).authorize("Bearer " + "l" * 20, "read").status == 401


def test_short_tokens_are_refused_by_settings() -> None:
    with pytest.raises(ValueError):
        ApiToken(token="short", roles=["read"])  # type: ignore[arg-type]


def test_settings_never_print_tokens(monkeypatch: pytest.MonkeyPatch) -> None:
    from aurora_streams.settings import load_settings

    monkeypatch.setenv("AURORA_API_TOKENS", '{"x": {"token": "supersecretvalue123", "roles": ["read"]}}')
    dumped = load_settings().model_dump_json()
    assert "supersecretvalue123" not in dumped
