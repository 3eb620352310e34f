from __future__ import annotations

from typing import Annotated

from litestar import Controller, delete, get, patch, post
from litestar.di import NamedDependency, Provide
from litestar.params import JSONBody, QueryParameter
from litestar.status_codes import HTTP_200_OK
from sqlmodel.ext.asyncio.session import AsyncSession

from rag_app.api.pagination import Page, PageParams
from rag_app.api.params import IdPath, id_query
from rag_app.db.models import User
from rag_app.domain.robots.schemas import RobotCreate, RobotRead, RobotUpdate
from rag_app.domain.robots.service import RobotService
from rag_app.domain.robots.tokens import (
    RobotTokenCreate,
    RobotTokenCreated,
    RobotTokenRead,
    RobotTokenService,
)


def provide_robot_service(db_session: NamedDependency[AsyncSession]) -> RobotService:
    return RobotService(db_session)


class RobotController(Controller):
    """Robots (assistants bound to knowledge bases); changed by their owner or an administrator."""

    path = "/robots"
    tags = ["robots"]
    dependencies = {"robots": Provide(provide_robot_service, sync_to_thread=False)}

    @post("/", summary="Create a robot")
    async def create_robot(
        self,
        data: JSONBody[RobotCreate],
        robots: NamedDependency[RobotService],
        current_user: NamedDependency[User],
    ) -> RobotRead:
        return await robots.to_read(await robots.create(current_user, data))

    @get("/", summary="List robots (your own; administrators see all)")
    async def list_robots(
        self,
        robots: NamedDependency[RobotService],
        current_user: NamedDependency[User],
        page_params: NamedDependency[PageParams],
        search: Annotated[str | None, QueryParameter(description="Part of the name")] = None,
        user_id: Annotated[
            int | None, id_query("Only this owner's (useful to administrators)")
        ] = None,
    ) -> Page[RobotRead]:
        return await robots.list(current_user, page_params, search=search, user_id=user_id)

    @get("/{robot_id:int}", summary="One robot")
    async def get_robot(
        self,
        robot_id: IdPath,
        robots: NamedDependency[RobotService],
        current_user: NamedDependency[User],
    ) -> RobotRead:
        return await robots.to_read(await robots.get(current_user, robot_id))

    @patch("/{robot_id:int}", summary="Change a robot; knowledge_ids replaces the bound set")
    async def update_robot(
        self,
        robot_id: IdPath,
        data: JSONBody[RobotUpdate],
        robots: NamedDependency[RobotService],
        current_user: NamedDependency[User],
    ) -> RobotRead:
        return await robots.to_read(await robots.update(current_user, robot_id, data))

    @delete("/{robot_id:int}", summary="Delete a robot with its sessions and chat history")
    async def delete_robot(
        self,
        robot_id: IdPath,
        robots: NamedDependency[RobotService],
        current_user: NamedDependency[User],
    ) -> None:
        await robots.delete(current_user, robot_id)


def provide_token_service(db_session: NamedDependency[AsyncSession]) -> RobotTokenService:
    return RobotTokenService(db_session)


class RobotTokenController(Controller):
    """Access tokens of a robot for the OpenAI-compatible endpoint (owner or administrator)."""

    path = "/robots/{robot_id:int}/tokens"
    tags = ["robots"]
    dependencies = {"tokens": Provide(provide_token_service, sync_to_thread=False)}

    @post("/", summary="Create a token (returned once)")
    async def create_token(
        self,
        robot_id: IdPath,
        data: JSONBody[RobotTokenCreate],
        tokens: NamedDependency[RobotTokenService],
        current_user: NamedDependency[User],
    ) -> RobotTokenCreated:
        return await tokens.create(current_user, robot_id, data)

    @get("/", summary="The robot's tokens (never the token itself)")
    async def list_tokens(
        self,
        robot_id: IdPath,
        tokens: NamedDependency[RobotTokenService],
        current_user: NamedDependency[User],
    ) -> list[RobotTokenRead]:
        return await tokens.list(current_user, robot_id)

    @post("/{token_id:int}/revoke", status_code=HTTP_200_OK, summary="Revoke a token")
    async def revoke_token(
        self,
        robot_id: IdPath,
        token_id: IdPath,
        tokens: NamedDependency[RobotTokenService],
        current_user: NamedDependency[User],
    ) -> RobotTokenRead:
        return await tokens.revoke(current_user, robot_id, token_id)
