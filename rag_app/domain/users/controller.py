from __future__ import annotations

from typing import Annotated, Literal

from litestar import Controller, delete, get, patch, post
from litestar.di import NamedDependency, Provide
from litestar.params import FromQuery, JSONBody, QueryParameter
from litestar.status_codes import HTTP_200_OK

from rag_app.api.pagination import Page, PageParams
from rag_app.api.params import IdPath
from rag_app.api.security import admin_only
from rag_app.db.models import User
from rag_app.domain.auth.controller import provide_user_service
from rag_app.domain.users.schemas import PasswordResetRead, UserRead, UserUpdate
from rag_app.domain.users.service import UserService


class UsersController(Controller):
    """User management; administrators only."""

    path = "/users"
    tags = ["users"]
    guards = [admin_only]
    dependencies = {"users": Provide(provide_user_service, sync_to_thread=False)}

    @get("/", summary="List users")
    async def list_users(
        self,
        users: NamedDependency[UserService],
        page_params: NamedDependency[PageParams],
        search: Annotated[
            str | None, QueryParameter(description="Part of user name or e-mail")
        ] = None,
        role: FromQuery[Literal["admin", "user"] | None] = None,
    ) -> Page[UserRead]:
        return await users.list(page_params, search=search, role=role)

    @get("/{user_id:int}", summary="One user")
    async def get_user(self, user_id: IdPath, users: NamedDependency[UserService]) -> UserRead:
        return UserRead.model_validate(await users.get(user_id))

    @patch("/{user_id:int}", summary="Change e-mail, role or status (0 disables the account)")
    async def update_user(
        self,
        user_id: IdPath,
        data: JSONBody[UserUpdate],
        users: NamedDependency[UserService],
        current_user: NamedDependency[User],
    ) -> UserRead:
        return UserRead.model_validate(await users.update(current_user, user_id, data))

    @delete("/{user_id:int}", summary="Delete a user and everything the user owns")
    async def delete_user(
        self,
        user_id: IdPath,
        users: NamedDependency[UserService],
        current_user: NamedDependency[User],
    ) -> None:
        await users.delete(current_user, user_id)

    @post(
        "/{user_id:int}/reset-password",
        status_code=HTTP_200_OK,
        summary="Set a random temporary password, returned once",
    )
    async def reset_password(
        self, user_id: IdPath, users: NamedDependency[UserService]
    ) -> PasswordResetRead:
        return await users.reset_password(user_id)
