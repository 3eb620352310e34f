from __future__ import annotations

from typing import Annotated

from litestar import Controller, delete, get, patch, post
from litestar.di import NamedDependency, Provide
from litestar.params import FromQuery, JSONBody, QueryParameter
from sqlmodel.ext.asyncio.session import AsyncSession

from rag_app.api.pagination import Page, PageParams
from rag_app.api.params import IdPath, id_query
from rag_app.api.security import admin_only
from rag_app.context import AppContext
from rag_app.db.models import User
from rag_app.db.models.llm import ModelType
from rag_app.domain.models.schemas import (
    ApiKeyCreate,
    ApiKeyRead,
    ApiKeyUpdate,
    LlmCreate,
    LlmOptions,
    LlmRead,
    LlmUpdate,
    ProviderRead,
)
from rag_app.domain.models.service import ApiKeyService, LlmService, provider_presets


def provide_llm_service(db_session: NamedDependency[AsyncSession]) -> LlmService:
    return LlmService(db_session)


def provide_apikey_service(
    db_session: NamedDependency[AsyncSession], ctx: NamedDependency[AppContext]
) -> ApiKeyService:
    return ApiKeyService(db_session, ctx.secret_box)


class LlmController(Controller):
    """The model registry. Administrators manage it; every signed-in user may list the enabled
    models to pick one (``/options``), so guards sit on each handler, not on the controller."""

    path = "/llms"
    tags = ["models"]
    dependencies = {"llms": Provide(provide_llm_service, sync_to_thread=False)}

    @get("/", guards=[admin_only], summary="List registered models")
    async def list_llms(
        self,
        llms: NamedDependency[LlmService],
        page_params: NamedDependency[PageParams],
        model_type: FromQuery[ModelType | None] = None,
        provider: Annotated[
            str | None, QueryParameter(description="A provider preset name")
        ] = None,
    ) -> Page[LlmRead]:
        return await llms.list(page_params, model_type=model_type, provider=provider)

    @get("/options", summary="Enabled models to choose from (any signed-in user)")
    async def list_options(
        self,
        llms: NamedDependency[LlmService],
        model_type: FromQuery[ModelType | None] = None,
    ) -> LlmOptions:
        return await llms.options(model_type)

    @get("/providers", guards=[admin_only], summary="Provider presets and their defaults")
    async def list_providers(self) -> list[ProviderRead]:
        return provider_presets()

    @get("/{llm_id:int}", guards=[admin_only], summary="One model")
    async def get_llm(self, llm_id: IdPath, llms: NamedDependency[LlmService]) -> LlmRead:
        return await llms.read(llm_id)

    @post("/", guards=[admin_only], summary="Register a model")
    async def create_llm(
        self,
        data: JSONBody[LlmCreate],
        llms: NamedDependency[LlmService],
        current_user: NamedDependency[User],
    ) -> LlmRead:
        return await llms.create(current_user, data)

    @patch("/{llm_id:int}", guards=[admin_only], summary="Change a model; validated as a whole")
    async def update_llm(
        self, llm_id: IdPath, data: JSONBody[LlmUpdate], llms: NamedDependency[LlmService]
    ) -> LlmRead:
        return await llms.update(llm_id, data)

    @delete(
        "/{llm_id:int}",
        guards=[admin_only],
        summary="Delete a model and its API keys (refused while in use)",
    )
    async def delete_llm(self, llm_id: IdPath, llms: NamedDependency[LlmService]) -> None:
        await llms.delete(llm_id)


class ApiKeyController(Controller):
    """Provider API keys; administrators only. Keys go in, only their masks come out."""

    path = "/apikeys"
    tags = ["models"]
    guards = [admin_only]
    dependencies = {"apikeys": Provide(provide_apikey_service, sync_to_thread=False)}

    @get("/", summary="List API keys (masked)")
    async def list_keys(
        self,
        apikeys: NamedDependency[ApiKeyService],
        page_params: NamedDependency[PageParams],
        llm_id: Annotated[int | None, id_query("Only this model's")] = None,
    ) -> Page[ApiKeyRead]:
        return await apikeys.list(page_params, llm_id=llm_id)

    @get("/{key_id:int}", summary="One API key (masked)")
    async def get_key(self, key_id: IdPath, apikeys: NamedDependency[ApiKeyService]) -> ApiKeyRead:
        return ApiKeyRead.model_validate(await apikeys.get(key_id))

    @post("/", summary="Store a provider API key (encrypted at rest)")
    async def create_key(
        self,
        data: JSONBody[ApiKeyCreate],
        apikeys: NamedDependency[ApiKeyService],
        current_user: NamedDependency[User],
    ) -> ApiKeyRead:
        return ApiKeyRead.model_validate(await apikeys.create(current_user, data))

    @patch("/{key_id:int}", summary="Rename, disable or rotate a key")
    async def update_key(
        self,
        key_id: IdPath,
        data: JSONBody[ApiKeyUpdate],
        apikeys: NamedDependency[ApiKeyService],
    ) -> ApiKeyRead:
        return ApiKeyRead.model_validate(await apikeys.update(key_id, data))

    @delete("/{key_id:int}", summary="Delete an API key")
    async def delete_key(self, key_id: IdPath, apikeys: NamedDependency[ApiKeyService]) -> None:
        await apikeys.delete(key_id)
