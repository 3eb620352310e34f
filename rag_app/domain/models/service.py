"""The model registry (chat, embedding and rerank models of any provider) and the provider API
keys, which are stored encrypted and never leave this module in plain text except through
``resolve_api_key`` for the code that calls the provider."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from pydantic import SecretStr
from sqlalchemy import or_
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from indexes.providers import PROVIDERS, ProviderPreset, get_provider
from rag_app.api.pagination import Page, PageParams
from rag_app.crypto import SecretBox, mask_secret
from rag_app.db.models import ApiKey, Knowledge, Llm, Robot, User
from rag_app.db.models.llm import ModelType
from rag_app.domain.common import ENABLED, invalid, paginate, reject_nulls
from rag_app.domain.models.schemas import (
    ApiKeyCreate,
    ApiKeyRead,
    ApiKeyUpdate,
    LlmCreate,
    LlmOption,
    LlmOptions,
    LlmRead,
    LlmUpdate,
    ProviderRead,
)
from rag_app.errors import Conflict, NotFound

# A delete refused because of many users names this many of each kind, then counts the rest.
_USAGE_NAMES_SHOWN = 10
# PATCH may clear these (a null base_url goes back to the provider's default); not the others.
_NULLABLE_LLM_FIELDS = frozenset(
    {"base_url", "api_version", "max_tokens", "dimension", "description"}
)
_NULLABLE_KEY_FIELDS = frozenset({"description"})
# Module-level aliases: inside the services, ``list`` names the list method.
_Usage = list[tuple[int | None, str]]


def _preset(provider: str) -> ProviderPreset:
    preset = get_provider(provider)
    if preset is None:
        known = ", ".join(PROVIDERS)
        raise invalid("provider", f"unknown provider '{provider}'; use one of: {known}")
    return preset


def validate_model(values: dict[str, Any]) -> dict[str, Any]:
    """The rules every stored model obeys, applied to the complete field set (a new model, or
    an existing one merged with a change). Returns the values with defaults filled in."""
    preset = _preset(values["provider"])
    model_type = str(values["model_type"])
    if not preset.supports(model_type):
        served = ", ".join(t for t in ModelType if preset.supports(t))
        raise invalid(
            "model_type",
            f"provider '{preset.name}' does not serve {model_type} models (it serves: {served})",
        )
    result = dict(values, model_type=model_type)
    if not preset.uses_base_url:
        if result.get("base_url"):
            raise invalid(
                "base_url",
                f"provider '{preset.name}' runs the model in process: give a package name or a "
                "path as model_name and leave base_url empty",
            )
    elif not result.get("base_url"):
        if preset.default_base_url is None:
            raise invalid("base_url", f"provider '{preset.name}' has no default endpoint: set it")
        result["base_url"] = preset.default_base_url
    if preset.requires_api_version and not result.get("api_version"):
        raise invalid("api_version", f"provider '{preset.name}' needs one (for example 2024-10-21)")
    if model_type == ModelType.embedding:
        if result.get("dimension") is None:
            result["dimension"] = preset.default_dimension(result["model_name"])
        if result["dimension"] is None:
            raise invalid(
                "dimension",
                "embedding models need a positive dimension (the size of their vectors)",
            )
    elif result.get("dimension") is not None:
        raise invalid("dimension", f"{model_type} models have no dimension; leave it empty")
    return result


def provider_presets() -> list[ProviderRead]:
    return [
        ProviderRead(
            name=p.name,
            label=p.label,
            default_base_url=p.default_base_url,
            model_types=[t for t in ModelType if p.supports(t)],
            requires_api_key=p.requires_api_key,
            requires_api_version=p.requires_api_version,
            requires_base_url=p.requires_base_url,
            uses_base_url=p.uses_base_url,
        )
        for p in PROVIDERS.values()
    ]


def _describe(kind: str, rows: Sequence[tuple[int | None, str]]) -> str:
    names = ", ".join(f"'{name}' (id {row_id})" for row_id, name in rows[:_USAGE_NAMES_SHOWN])
    if len(rows) > _USAGE_NAMES_SHOWN:
        names += f" and {len(rows) - _USAGE_NAMES_SHOWN} more"
    return f"{kind}: {names}"


class LlmService:
    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def get(self, llm_id: int) -> Llm:
        llm = await self.session.get(Llm, llm_id)
        if llm is None:
            raise NotFound(f"model {llm_id} not found")
        return llm

    async def read(self, llm_id: int) -> LlmRead:
        read = LlmRead.model_validate(await self.get(llm_id))
        await self._fill_has_api_key([read])
        return read

    async def list(
        self,
        params: PageParams,
        model_type: ModelType | None = None,
        provider: str | None = None,
    ) -> Page[LlmRead]:
        statement = select(Llm).order_by(col(Llm.id))
        if model_type is not None:
            statement = statement.where(Llm.model_type == model_type)
        if provider is not None:
            statement = statement.where(Llm.provider == _preset(provider).name)
        page = await paginate(self.session, statement, params, LlmRead.model_validate)
        await self._fill_has_api_key(page.items)
        return page

    async def options(self, model_type: ModelType | None = None) -> LlmOptions:
        statement = select(Llm).where(Llm.status == ENABLED).order_by(col(Llm.id))
        if model_type is not None:
            statement = statement.where(Llm.model_type == model_type)
        rows = (await self.session.exec(statement)).all()
        return LlmOptions(items=[LlmOption.model_validate(row) for row in rows])

    async def create(self, actor: User, data: LlmCreate) -> LlmRead:
        values = validate_model(data.model_dump())
        llm = Llm(user_id=actor.id, **values)
        self.session.add(llm)
        await self.session.commit()
        return LlmRead.model_validate(llm)

    async def update(self, llm_id: int, data: LlmUpdate) -> LlmRead:
        llm = await self.get(llm_id)
        changes = data.model_dump(exclude_unset=True)
        reject_nulls(changes, _NULLABLE_LLM_FIELDS)
        current = llm.model_dump(exclude={"id", "user_id", "created_at", "updated_at"})
        merged = {**current, **changes}
        old_preset = get_provider(llm.provider)
        # A URL that only came from the old provider's preset must not follow the model to a
        # new provider; one the admin typed stays.
        if (
            "base_url" not in changes
            and merged["provider"] != llm.provider
            and (old_preset is None or llm.base_url == old_preset.default_base_url)
        ):
            merged["base_url"] = None
        # Likewise a dimension only means something while the model embeds.
        if merged["model_type"] != ModelType.embedding and "dimension" not in changes:
            merged["dimension"] = None
        merged = validate_model(merged)
        await self._ensure_change_keeps_users_working(llm, merged)
        for name, value in merged.items():
            setattr(llm, name, value)
        self.session.add(llm)
        await self.session.commit()
        return await self.read(llm_id)

    async def _ensure_change_keeps_users_working(self, llm: Llm, merged: dict[str, Any]) -> None:
        type_changed = merged["model_type"] != llm.model_type
        dimension_changed = merged["dimension"] != llm.dimension
        if not (type_changed or dimension_changed):
            return
        knowledge, robots = await self._users_of(llm.id or 0)
        if type_changed and (knowledge or robots):
            raise Conflict(
                f"model {llm.id} cannot stop being a {llm.model_type} model while it is in use "
                f"({self._usage_text(knowledge, robots)})",
                field="model_type",
            )
        if dimension_changed and knowledge:
            # Stored vectors have the old size; a new size makes every search fail.
            raise Conflict(
                f"the dimension of model {llm.id} cannot change while knowledge bases hold its "
                f"vectors ({self._usage_text(knowledge, [])})",
                field="dimension",
            )

    async def delete(self, llm_id: int) -> None:
        """Refused while a knowledge base or robot uses the model; otherwise its API keys go
        with it (ON DELETE CASCADE)."""
        llm = await self.get(llm_id)
        knowledge, robots = await self._users_of(llm_id)
        if knowledge or robots:
            raise Conflict(
                f"model {llm_id} is used by {self._usage_text(knowledge, robots)}",
                used_by={
                    "knowledge": [{"id": i, "name": n} for i, n in knowledge],
                    "robots": [{"id": i, "name": n} for i, n in robots],
                },
            )
        await self.session.delete(llm)
        await self.session.commit()

    async def _users_of(self, llm_id: int) -> tuple[_Usage, _Usage]:
        knowledge = await self.session.exec(
            select(Knowledge.id, Knowledge.name)
            .where(Knowledge.embed_llm_id == llm_id)
            .order_by(col(Knowledge.id))
        )
        robots = await self.session.exec(
            select(Robot.id, Robot.name)
            .where(or_(col(Robot.chat_llm_id) == llm_id, col(Robot.rerank_llm_id) == llm_id))
            .order_by(col(Robot.id))
        )
        return [(i, n) for i, n in knowledge.all()], [(i, n) for i, n in robots.all()]

    @staticmethod
    def _usage_text(
        knowledge: Sequence[tuple[int | None, str]], robots: Sequence[tuple[int | None, str]]
    ) -> str:
        parts = []
        if knowledge:
            parts.append(_describe("knowledge bases", knowledge))
        if robots:
            parts.append(_describe("robots", robots))
        return "; ".join(parts)

    async def _fill_has_api_key(self, reads: Sequence[LlmRead]) -> None:
        # One query per page rather than one per row.
        if not reads:
            return
        statement = (
            select(ApiKey.llm_id)
            .where(col(ApiKey.llm_id).in_([r.id for r in reads]), ApiKey.status == ENABLED)
            .distinct()
        )
        with_key = set((await self.session.exec(statement)).all())
        for read in reads:
            read.has_api_key = read.id in with_key


async def require_model(
    session: AsyncSession, llm_id: int, model_type: ModelType, field: str
) -> Llm:
    """For services that bind a model (knowledge bases, robots): the model exists, is enabled
    and is of the expected type, else a 422 naming the request ``field`` the id came from."""
    llm = await session.get(Llm, llm_id)
    if llm is None:
        raise invalid(field, f"model {llm_id} does not exist")
    if llm.model_type != model_type:
        article = "an" if model_type[0] in "aeiou" else "a"
        raise invalid(
            field,
            f"model {llm_id} ('{llm.name}') is a {llm.model_type} model; "
            f"this needs {article} {model_type} model",
        )
    if llm.status != ENABLED:
        raise invalid(
            field, f"model {llm_id} ('{llm.name}') is disabled; enable it or choose another"
        )
    return llm


async def resolve_api_key(session: AsyncSession, box: SecretBox, llm_id: int) -> str | None:
    """The plaintext key to call the provider of model ``llm_id`` with: among its active keys,
    the one with the lowest id, so every process picks the same one. None when it has none."""
    statement = (
        select(ApiKey.api_key_encrypted)
        .where(ApiKey.llm_id == llm_id, ApiKey.status == ENABLED)
        .order_by(col(ApiKey.id))
        .limit(1)
    )
    sealed = (await session.exec(statement)).first()
    return None if sealed is None else box.decrypt(sealed)


def _plain_key(secret: SecretStr) -> str:
    plain = secret.get_secret_value().strip()
    if not plain:
        raise invalid("api_key", "cannot be empty")
    if any(ch.isspace() for ch in plain):
        # Almost always a copy-paste accident (two keys, or "Bearer sk-…").
        raise invalid("api_key", "must not contain spaces or line breaks")
    return plain


class ApiKeyService:
    def __init__(self, session: AsyncSession, box: SecretBox) -> None:
        self.session = session
        self.box = box

    async def get(self, key_id: int) -> ApiKey:
        key = await self.session.get(ApiKey, key_id)
        if key is None:
            raise NotFound(f"API key {key_id} not found")
        return key

    async def list(self, params: PageParams, llm_id: int | None = None) -> Page[ApiKeyRead]:
        statement = select(ApiKey).order_by(col(ApiKey.id))
        if llm_id is not None:
            statement = statement.where(ApiKey.llm_id == llm_id)
        return await paginate(self.session, statement, params, ApiKeyRead.model_validate)

    async def create(self, actor: User, data: ApiKeyCreate) -> ApiKey:
        llm = await self.session.get(Llm, data.llm_id)
        if llm is None:
            raise invalid("llm_id", f"model {data.llm_id} does not exist")
        preset = get_provider(llm.provider)
        if preset is not None and not preset.uses_base_url:
            raise invalid("llm_id", f"model {data.llm_id} runs in process and takes no API key")
        plain = _plain_key(data.api_key)
        key = ApiKey(
            user_id=actor.id,
            llm_id=data.llm_id,
            alias=data.alias,
            api_key_encrypted=self.box.encrypt(plain),
            key_mask=mask_secret(plain),
            description=data.description,
            status=data.status,
        )
        self.session.add(key)
        await self.session.commit()
        return key

    async def update(self, key_id: int, data: ApiKeyUpdate) -> ApiKey:
        key = await self.get(key_id)
        reject_nulls(data.model_dump(exclude_unset=True), _NULLABLE_KEY_FIELDS)
        changes = data.model_dump(exclude_unset=True, exclude={"api_key"})
        if data.api_key is not None:
            plain = _plain_key(data.api_key)
            key.api_key_encrypted = self.box.encrypt(plain)
            key.key_mask = mask_secret(plain)
        for name, value in changes.items():
            setattr(key, name, value)
        self.session.add(key)
        await self.session.commit()
        return key

    async def delete(self, key_id: int) -> None:
        await self.session.delete(await self.get(key_id))
        await self.session.commit()
