from __future__ import annotations

import pytest

from aurora_streams.settings import ApiToken
from aurora_streams.web.auth import Authenticator

TOKENS = {
    "loader": ApiToken(token="l" * 20, roles=["ingest"]),  # type: ignore[arg-type]
    "root": ApiToken(token="a" * 20, roles=["admin"]),  # type: ignore[arg-type]
}


@pytest.mark.parametrize(
    ("header", "role", "status", "reason"),
    [
        (None, "ingest", 401, "missing_token"),
        ("Basic abc", "ingest", 401, "missing_token"),
        ("Bearer ", "ingest", 401, "missing_token"),
        ("Bearer wrong-token-value", "ingest", 401, "invalid_token"),
        ("Bearer " + "l" * 20, "ingest", 200, "ok"),
        ("bearer " + "l" * 20, "ingest", 200, "ok"),
        ("Bearer " + "l" * 20, "read", 403, "forbidden"),
        ("Bearer " + "a" * 20, "read", 200, "ok"),
        ("Bearer " + "l" * 19 + "\udcff", "ingest", 401, "invalid_token"),  # a non-UTF-8 byte: was a 500
        ("Bearer a.b\udcff.c", "ingest", 401, "invalid_token"),  # ... on the JWT path too
        ("Bearer " + "l" * 20 + "\x00", "ingest", 401, "invalid_token"),
    ],
)
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


def _jwt(claims: dict, secret: str = "k" * 32) -> str:  # type: ignore[type-arg]
    import jwt

    return jwt.encode(claims, secret, algorithm="HS256")


JWT_AUTH = Authenticator(TOKENS, jwt_secret="k" * 32, jwt_issuer="idp", jwt_audience="aurora")


@pytest.mark.parametrize(
    ("claims", "secret", "role", "status"),
    [
        (
            {"sub": "ops", "roles": ["read"], "exp": 4_000_000_000, "iss": "idp", "aud": "aurora"},
            "k" * 32,
            "read",
            200,
        ),
        (
            {"sub": "ops", "roles": ["read"], "exp": 4_000_000_000, "iss": "idp", "aud": "aurora"},
            "k" * 32,
            "ingest",
            403,
        ),
        (
            {"sub": "ops", "roles": ["admin"], "exp": 4_000_000_000, "iss": "idp", "aud": "aurora"},
            "k" * 32,
            "ingest",
            200,
        ),
        (
            {"sub": "ops", "roles": ["read"], "exp": 1_000, "iss": "idp", "aud": "aurora"},
            "k" * 32,
            "read",
            401,
        ),
        ({"sub": "ops", "roles": ["read"], "iss": "idp", "aud": "aurora"}, "k" * 32, "read", 401),
        (
            {"sub": "ops", "roles": ["read"], "exp": 4_000_000_000, "iss": "idp", "aud": "aurora"},
            "x" * 32,
            "read",
            401,
        ),
        (
            {"sub": "ops", "roles": ["read"], "exp": 4_000_000_000, "iss": "evil", "aud": "aurora"},
            "k" * 32,
            "read",
            401,
        ),
        ({"sub": "ops", "exp": 4_000_000_000, "iss": "idp", "aud": "aurora"}, "k" * 32, "read", 401),
    ],
)
def test_signed_jwts(claims: dict, secret: str, role: str, status: int) -> None:  # type: ignore[type-arg]
    result = JWT_AUTH.authorize("Bearer " + _jwt(claims, secret), role)  # type: ignore[arg-type]
    assert result.status == status, result


def test_jwts_refused_when_no_secret_configured() -> None:
    token = _jwt({"roles": ["read"], "exp": 4_000_000_000})
    assert Authenticator(TOKENS).authorize("Bearer " + token, "read").status == 401


def test_a_jwt_with_a_non_utf8_byte_is_refused_not_a_crash() -> None:
    auth = Authenticator(TOKENS, jwt_secret="s" * 32)
    assert auth.authorize("Bearer a.b\udcff.c", "read").status == 401


@pytest.mark.parametrize("token", ["é" * 16, "a" * 16 + "\n", " " + "a" * 16])
def test_a_token_that_could_never_match_is_refused_by_settings(token: str) -> None:
    with pytest.raises(ValueError):
        ApiToken(token=token, roles=["read"])  # type: ignore[arg-type]
