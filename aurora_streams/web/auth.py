"""Bearer-token authentication with roles ``read``, ``ingest`` and ``admin``.

A bearer token is either one of the configured tokens (``AURORA_API_TOKENS``) or a signed
JWT (HS256 with ``AURORA_JWT_SECRET``; ``exp`` required, ``iss``/``aud`` checked when
configured) whose ``roles`` claim lists its roles and whose ``sub`` names the principal.

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

from aurora_streams.settings import ApiToken, Role, Settings

__all__ = ["AuthResult", "Authenticator", "authenticator"]


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
    def __init__(
        self,
        tokens: Mapping[str, ApiToken],
        *,
        jwt_secret: str | None = None,
        jwt_issuer: str | None = None,
        jwt_audience: str | None = None,
    ) -> None:
        self._jwt = (jwt_secret, jwt_issuer, jwt_audience) if jwt_secret else None
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
        presented = presented.strip()
        if not presented.isascii() or not presented.isprintable():
            # Tokens and JWTs are printable ASCII. A non-UTF-8 byte reaches here as a
            # surrogate escape, and encoding it for the digest (or for a JWT) was a 500.
            return AuthResult(401, "invalid_token", "the bearer token is not valid")
        if self._jwt is not None and presented.count(".") == 2:
            return self._authorize_jwt(presented, role)
        digest = hashlib.sha256(presented.encode()).digest()
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

    def _authorize_jwt(self, token: str, role: Role) -> AuthResult:
        import jwt

        assert self._jwt is not None
        secret, issuer, audience = self._jwt
        try:
            claims = jwt.decode(
                token,
                secret,
                algorithms=["HS256"],
                issuer=issuer,
                audience=audience,
                options={"require": ["exp"], "verify_aud": audience is not None},
            )
        except jwt.ExpiredSignatureError:
            return AuthResult(401, "invalid_token", "the bearer token has expired")
        except jwt.PyJWTError:
            return AuthResult(401, "invalid_token", "the bearer token is not valid")
        roles = claims.get("roles")
        if not isinstance(roles, list):
            return AuthResult(401, "invalid_token", "the token has no roles claim")
        name = str(claims.get("sub", "jwt"))[:64]
        if role not in roles and "admin" not in roles:
            return AuthResult(403, "forbidden", f"the token lacks the {role!r} role", principal=name)
        return AuthResult(200, "ok", "ok", principal=name)


def authenticator(settings: Settings) -> Authenticator:
    secret = settings.jwt_secret.get_secret_value() if settings.jwt_secret else None
    return Authenticator(
        settings.api_tokens,
        jwt_secret=secret,
        jwt_issuer=settings.jwt_issuer,
        jwt_audience=settings.jwt_audience,
    )
