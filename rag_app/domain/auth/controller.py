from __future__ import annotations

from litestar import Controller, get, post
from litestar.di import NamedDependency, Provide
from litestar.params import JSONBody
from litestar.status_codes import HTTP_200_OK
from sqlmodel.ext.asyncio.session import AsyncSession

from rag_app.api.security import build_token_service
from rag_app.context import AppContext
from rag_app.db.models import User
from rag_app.domain.auth.schemas import (
    ChangePasswordRequest,
    LoginRequest,
    RefreshRequest,
    TokenPair,
)
from rag_app.domain.users.schemas import UserRead, UserRegister
from rag_app.domain.users.service import UserService
from rag_app.errors import AuthenticationFailed, PermissionDenied


def provide_user_service(
    db_session: NamedDependency[AsyncSession], ctx: NamedDependency[AppContext]
) -> UserService:
    return UserService(db_session, ctx)


class AuthController(Controller):
    path = "/auth"
    tags = ["auth"]
    dependencies = {"users": Provide(provide_user_service, sync_to_thread=False)}

    @post("/register", summary="Create an account (always a normal user)")
    async def register(
        self,
        data: JSONBody[UserRegister],
        users: NamedDependency[UserService],
        ctx: NamedDependency[AppContext],
    ) -> UserRead:
        if not ctx.settings.security.allow_registration:
            raise PermissionDenied("registration is closed; ask an administrator for an account")
        return UserRead.model_validate(await users.register(data))

    @post("/login", status_code=HTTP_200_OK, summary="Sign in by user name or e-mail")
    async def login(
        self,
        data: JSONBody[LoginRequest],
        users: NamedDependency[UserService],
        ctx: NamedDependency[AppContext],
    ) -> TokenPair:
        user = await users.authenticate(data.username, data.password)
        return build_token_service(ctx).issue_pair(user)

    @post("/refresh", status_code=HTTP_200_OK, summary="Trade a refresh token for new tokens")
    async def refresh(
        self,
        data: JSONBody[RefreshRequest],
        users: NamedDependency[UserService],
        ctx: NamedDependency[AppContext],
    ) -> TokenPair:
        tokens = build_token_service(ctx)
        claims = tokens.decode(data.refresh_token, "refresh")
        user = await users.session.get(User, claims.user_id)
        if not claims.accepts(user):
            raise AuthenticationFailed("the refresh token is no longer valid; sign in again")
        return tokens.issue_pair(user)

    @get("/me", summary="The signed-in user")
    async def me(self, current_user: NamedDependency[User]) -> UserRead:
        return UserRead.model_validate(current_user)

    @post(
        "/change-password",
        status_code=HTTP_200_OK,
        summary="Change your password; every older token stops working",
    )
    async def change_password(
        self,
        data: JSONBody[ChangePasswordRequest],
        current_user: NamedDependency[User],
        users: NamedDependency[UserService],
        ctx: NamedDependency[AppContext],
    ) -> TokenPair:
        user = await users.change_password(current_user, data.old_password, data.new_password)
        return build_token_service(ctx).issue_pair(user)
