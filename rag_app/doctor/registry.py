"""What the database says is configured: registered models with their API keys, and
knowledge bases; plus whether the stored keys can be decrypted at all."""

from __future__ import annotations

from dataclasses import dataclass

from sqlmodel import col, select

from rag_app.crypto import SecretBox
from rag_app.db.engine import create_db_engine, create_sessionmaker
from rag_app.db.models import ApiKey, Knowledge, Llm
from rag_app.doctor.common import CheckResult, ok, problem, run_coroutine
from rag_app.domain.common import ENABLED
from rag_app.domain.models.service import resolve_api_key
from rag_app.errors import ConfigurationError
from rag_app.secrets import resolve_secrets
from rag_app.settings import DEFAULT_SECRET, Settings

SECRETS_FILE = "secrets.json"
_NO_KEY_FILE = (
    f"its stored API key cannot be decrypted: the generated encryption key ({SECRETS_FILE} in "
    "the data directory) is missing"
)


@dataclass(frozen=True)
class RegisteredModel:
    llm: Llm
    api_key: str | None
    # Why the stored key could not be used (not decryptable); None when fine or keyless.
    key_problem: str | None = None


@dataclass(frozen=True)
class Registry:
    models: list[RegisteredModel]
    knowledge: list[Knowledge]

    def knowledge_of(self, llm_id: int | None) -> list[Knowledge]:
        return [k for k in self.knowledge if k.embed_llm_id == llm_id]

    def secrets(self) -> list[str]:
        return [m.api_key for m in self.models if m.api_key]


def check_secrets(settings: Settings) -> tuple[CheckResult, SecretBox | None]:
    """The secrets row, and the box that decrypts stored API keys (None: there is none yet).

    Side-effect free: ``resolve_secrets`` generates ``secrets.json`` when it is missing, which a
    check must not do (and keys encrypted before could not be read with new secrets anyway).
    """
    generated = settings.data_dir / SECRETS_FILE
    passphrase = settings.security.encryption_key.get_secret_value()
    explicit_box = SecretBox(passphrase) if passphrase != DEFAULT_SECRET else None
    if settings.uses_default_secrets and settings.environment == "production":
        return (
            problem(
                "secrets",
                "a default secret is set in production: `rag-app serve` refuses to start",
                "set RAG_SECURITY__JWT_SECRET and RAG_SECURITY__ENCRYPTION_KEY to long random "
                "values (python -c 'import secrets; print(secrets.token_urlsafe(48))')",
            ),
            explicit_box,
        )
    if not settings.uses_default_secrets:
        return ok("secrets", "JWT secret and encryption key set explicitly"), explicit_box
    if not generated.is_file():
        return ok("secrets", f"generated into {generated} at the first start"), explicit_box
    box = SecretBox(resolve_secrets(settings).encryption_key)  # reads the existing file
    return ok("secrets", f"generated ones in {generated}"), box


def read_registry(settings: Settings, box: SecretBox | None) -> Registry:
    """Every registered model (with its decrypted key) and every knowledge base.

    Async under the hood so that the key is picked by the app's own ``resolve_api_key``.
    """
    return run_coroutine(lambda: _read(settings, box))


async def _read(settings: Settings, box: SecretBox | None) -> Registry:
    engine = create_db_engine(settings.database_url)
    try:
        async with create_sessionmaker(engine)() as session:
            llms = list((await session.exec(select(Llm).order_by(col(Llm.id)))).all())
            knowledge = list(
                (await session.exec(select(Knowledge).order_by(col(Knowledge.id)))).all()
            )
            keyed = set(
                (await session.exec(select(ApiKey.llm_id).where(ApiKey.status == ENABLED))).all()
            )
            models = []
            for llm in llms:
                if llm.id not in keyed:
                    models.append(RegisteredModel(llm, None))
                elif box is None:
                    models.append(RegisteredModel(llm, None, _NO_KEY_FILE))
                else:
                    try:
                        key = await resolve_api_key(session, box, llm.id or 0)
                    except ConfigurationError as exc:
                        models.append(RegisteredModel(llm, None, exc.detail))
                    else:
                        models.append(RegisteredModel(llm, key))
            return Registry(models, knowledge)
    finally:
        await engine.dispose()
