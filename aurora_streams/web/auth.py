"""Bearer-token authentication with roles ``read``, ``ingest`` and ``admin``.

Tokens are compared in constant time: the presented token's SHA-256 is compared with every
configured token's digest using :func:`hmac.compare_digest`, without stopping at a match,
so timing reveals neither which token matched nor how much of one did. Tokens never reach
logs or error messages; a principal is named by its configured name only.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Mapping
from dataclasses import dataclass

from aurora_streams.settings import ApiToken, Role

__all__ = ["AuthResult", "Authenticator"]


@dataclass(frozen=True, slots=True)
class AuthResult:
    status: int
    """200 when allowed, 401 (who are you?) or 403 (not allowed)."""
    reason: str
    message: str
    principal: str | None = None

    @property
    def ok(self) -> bool:
        return self.status == 200


class Authenticator:
    def __init__(self, tokens: Mapping[str, ApiToken]) -> None:
        self._entries: list[tuple[str, bytes, frozenset[str]]] = [
            (name, hashlib.sha256(t.token.get_secret_value().encode()).digest(), frozenset(t.roles))
            for name, t in tokens.items()
        ]

    def authorize(self, authorization: str | None, role: Role) -> AuthResult:
        if not authorization:
            return AuthResult(401, "missing_token", "an Authorization: Bearer <token> header is required")
        scheme, _, presented = authorization.partition(" ")
        if scheme.lower() != "bearer" or not presented.strip():
            return AuthResult(401, "missing_token", "the Authorization header must be 'Bearer <token>'")
        digest = hashlib.sha256(presented.strip().encode()).digest()
        match: tuple[str, frozenset[str]] | None = None
        for name, expected, roles in self._entries:
            if hmac.compare_digest(digest, expected):
                match = (name, roles)
        if match is None:
            return AuthResult(401, "invalid_token", "the bearer token is not valid")
        name, roles = match
        if role not in roles and "admin" not in roles:
            return AuthResult(403, "forbidden", f"the token lacks the {role!r} role", principal=name)
        return AuthResult(200, "ok", "ok", principal=name)
