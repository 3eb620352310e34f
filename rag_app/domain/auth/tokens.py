"""Access and refresh tokens (HS256 JWT, in Litestar's token format so its middleware reads them).

Each token carries the user's ``token_version``: a password change or reset bumps the version,
and every older token stops working at once.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from typing import Literal, TypeGuard

from litestar.exceptions import NotAuthorizedException
from litestar.security.jwt import Token

from rag_app.db.models import User
from rag_app.db.types import utcnow
from rag_app.domain.auth.schemas import TokenPair
from rag_app.errors import AuthenticationFailed

ALGORITHM = "HS256"
TokenType = Literal["access", "refresh"]


@dataclass(frozen=True)
class TokenClaims:
    user_id: int
    version: int

    def accepts(self, user: User | None) -> TypeGuard[User]:
        """The token still speaks for its user: the user exists, is enabled, and has not changed
        (or been reset) the password since the token was issued."""
        return user is not None and user.is_active and user.token_version == self.version


class TokenService:
    def __init__(self, secret: str, access_minutes: int, refresh_days: int) -> None:
        self._secret = secret
        self._access = timedelta(minutes=access_minutes)
        self._refresh = timedelta(days=refresh_days)

    def issue_pair(self, user: User) -> TokenPair:
        return TokenPair(
            access_token=self._encode(user, "access", self._access),
            refresh_token=self._encode(user, "refresh", self._refresh),
            expires_in=int(self._access.total_seconds()),
        )

    def _encode(self, user: User, kind: TokenType, lifetime: timedelta) -> str:
        token = Token(
            sub=str(user.id),
            exp=utcnow() + lifetime,
            extras={"typ": kind, "ver": user.token_version},
        )
        return token.encode(self._secret, ALGORITHM)

    def claims(self, token: Token, expected: TokenType) -> TokenClaims:
        """The claims of an already verified token, if it is of the expected kind."""
        if token.extras.get("typ") != expected or not token.sub.isdigit():
            raise AuthenticationFailed(f"this is not a valid {expected} token")
        return TokenClaims(user_id=int(token.sub), version=int(token.extras.get("ver", -1)))

    def decode(self, encoded: str, expected: TokenType) -> TokenClaims:
        try:
            token = Token.decode(encoded, self._secret, ALGORITHM)
        except NotAuthorizedException as exc:
            raise AuthenticationFailed(f"the {expected} token is invalid or expired") from exc
        return self.claims(token, expected)
