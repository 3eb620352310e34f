"""Authentication (JWT bearer tokens via Litestar's JWTAuth) and authorisation guards."""

from __future__ import annotations

from typing import Any

from litestar.connection import ASGIConnection
from litestar.handlers.base import BaseRouteHandler
from litestar.security.jwt import JWTAuth, Token

from rag_app.context import AppContext
from rag_app.db.models import User
from rag_app.domain.auth.tokens import ALGORITHM, TokenService
from rag_app.errors import AuthenticationFailed, PermissionDenied

PUBLIC_PATHS = [
    "/health",
    "/docs",
    "/api/v1/auth/login",
    "/api/v1/auth/register",
    "/api/v1/auth/refresh",
    # The OpenAI-compatible endpoint takes robot tokens, checked by its own guard. Anchored:
    # Litestar searches the whole path, and an unanchored "/v1/" would open /api/v1 too.
    "^/v1/",
]


def build_token_service(ctx: AppContext) -> TokenService:
    security = ctx.settings.security
    return TokenService(
        ctx.secrets.jwt_secret, security.access_token_minutes, security.refresh_token_days
    )


async def retrieve_user(
    token: Token, connection: ASGIConnection[Any, Any, Any, Any]
) -> User | None:
    """Load the token's user on every request, so that disabling a user or changing a
    password takes effect at once, not when the token expires."""
    ctx: AppContext = connection.app.state.ctx
    try:
        claims = build_token_service(ctx).claims(token, "access")
    except AuthenticationFailed:
        return None
    async with ctx.sessionmaker() as session:
        user = await session.get(User, claims.user_id)
    return user if claims.accepts(user) else None


def build_jwt_auth(ctx: AppContext) -> JWTAuth[User, Token]:
    return JWTAuth[User, Token](
        token_secret=ctx.secrets.jwt_secret,
        algorithm=ALGORITHM,
        retrieve_user_handler=retrieve_user,
        exclude=PUBLIC_PATHS,
        description="Access token from POST /api/v1/auth/login",
    )


def admin_only(connection: ASGIConnection[Any, Any, Any, Any], _: BaseRouteHandler) -> None:
    user: User = connection.user
    if not user.is_admin:
        raise PermissionDenied("this needs an administrator account")
