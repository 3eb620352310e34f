"""Application settings.

Precedence, highest first: ``RAG_*`` environment variables (``__`` nests, e.g.
``RAG_DATABASE__URL``) > ``.env`` > ``config/<RAG_CONFIG>.yaml`` > ``config/default.yaml`` >
the defaults below. Every path the app writes to derives from ``data_dir`` so that one setting
(``RAG_DATA_DIR``) moves all of them and two instances never share files by accident.
"""

from __future__ import annotations

import os
from functools import cached_property
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, Field, SecretStr, model_validator
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    YamlConfigSettingsSource,
)

# The placeholder shipped in config/default.yaml. Outside production a per-instance random
# secret replaces it (see rag_app.secrets); in production the app refuses to start with it.
DEFAULT_SECRET = "change-me"  # noqa: S105


def config_dir() -> Path:
    """Where the YAML files live: ``RAG_CONFIG_DIR``, else ``./config``, else the source tree's."""
    if explicit := os.environ.get("RAG_CONFIG_DIR"):
        return Path(explicit)
    cwd_config = Path.cwd() / "config"
    if (cwd_config / "default.yaml").is_file():
        return cwd_config
    return Path(__file__).resolve().parent.parent / "config"


class DatabaseSettings(BaseModel):
    url: str | None = Field(
        default=None,
        description="SQLAlchemy URL. Empty: a SQLite file under data_dir. MySQL example: "
        "mysql+pymysql://user:password@127.0.0.1:3306/rag_app",
    )
    echo: bool = Field(default=False, description="Log every SQL statement (debugging only).")
    pool_size: int = Field(default=10, ge=1, description="Connections kept open (MySQL).")
    auto_migrate: bool = Field(
        default=True, description="Apply Alembic migrations when the app starts."
    )


class RedisSettings(BaseModel):
    url: str | None = Field(
        default=None,
        description="redis://host:port/db. Empty: caches and queues stay in process.",
    )


class SecuritySettings(BaseModel):
    jwt_secret: SecretStr = Field(
        default=SecretStr(DEFAULT_SECRET),
        description="Signs access and refresh tokens. Must be set in production.",
    )
    encryption_key: SecretStr = Field(
        default=SecretStr(DEFAULT_SECRET),
        description="Encrypts provider API keys at rest (AES-256-GCM, key derived with HKDF). "
        "Must be set in production; changing it makes stored keys unreadable.",
    )
    access_token_minutes: int = Field(default=60, ge=1, description="Access token lifetime.")
    refresh_token_days: int = Field(default=14, ge=1, description="Refresh token lifetime.")
    allow_registration: bool = Field(
        default=True, description="Whether POST /auth/register is open to anyone."
    )
    argon2_time_cost: int = Field(default=3, ge=1, description="Argon2id passes per hash.")
    argon2_memory_kib: int = Field(
        default=65536, ge=8, description="Argon2id memory per hash in KiB."
    )


class ServerSettings(BaseModel):
    host: str = Field(default="127.0.0.1", description="Address `rag-app serve` binds.")
    port: int = Field(default=8000, ge=1, le=65535, description="Port `rag-app serve` binds.")
    cors_origins: list[str] = Field(
        default_factory=list, description="Origins allowed by CORS (empty: CORS off)."
    )


class StorageSettings(BaseModel):
    backend: Literal["local", "s3"] = Field(
        default="local",
        description="Where uploaded originals are kept: local (a folder under data_dir) or s3 "
        "(MinIO or any S3-compatible store).",
    )
    s3_endpoint: str | None = Field(
        default=None, description="host:port of the S3 server, e.g. 127.0.0.1:9000"
    )
    s3_access_key: SecretStr | None = Field(default=None, description="S3 access key")
    s3_secret_key: SecretStr | None = Field(default=None, description="S3 secret key")
    s3_bucket: str = Field(default="rag-app", description="Bucket, created when missing")
    s3_secure: bool = Field(default=False, description="Use HTTPS to reach the S3 server")
    s3_region: str | None = Field(default=None, description="S3 region, if the server needs one")


class UploadSettings(BaseModel):
    max_file_mb: int = Field(
        default=100, ge=1, description="Largest accepted upload, enforced while receiving."
    )
    max_files_per_request: int = Field(default=50, ge=1, description="Files per upload request.")
    max_unpacked_mb: int = Field(
        default=512,
        ge=1,
        description="Largest decompressed size of a DOCX/XLSX/PPTX (zip bomb guard).",
    )


class IndexSettings(BaseModel):
    milvus_uri: str | None = Field(
        default=None,
        description="Milvus server URI (http://host:19530). Empty: Milvus Lite under "
        "data_dir/indexes.",
    )
    milvus_token: SecretStr | None = Field(default=None, description="Milvus token (user:pass)")
    elasticsearch_url: str | None = Field(
        default=None, description="Elasticsearch URL, for knowledge bases with that backend"
    )
    elasticsearch_api_key: SecretStr | None = Field(
        default=None, description="Elasticsearch API key"
    )


class JobSettings(BaseModel):
    workers: int = Field(
        # Several documents in flight let their chunks share embedding batches and overlap
        # store writes with model work: 4 measured best on 2 cores (docs/benchmarks.md).
        default=4,
        ge=1,
        description="Batches of documents (see batch_documents) processed at once by the "
        "in-process worker (embedded default) or by each `rag-app worker`.",
    )
    batch_documents: int = Field(
        # Measured on 2 cores with short documents: see docs/benchmarks.md (session 4).
        default=8,
        ge=1,
        le=100,
        description="Queued documents a worker takes together as one batch: their claims, "
        "store writes and status updates are shared, which is most of the work for a short "
        "document. Each document still succeeds or fails on its own.",
    )
    stale_after_seconds: int = Field(
        default=600,
        ge=30,
        description="A document whose job has not reported progress for this long is "
        "considered abandoned (worker killed) and becomes retryable.",
    )
    queue_name: str = Field(
        default="rag_app_ingest",
        min_length=1,
        max_length=100,
        pattern=r"^[A-Za-z0-9_.-]+$",
        description="Name of the Redis (SAQ) job queue. The API servers and workers of one "
        "deployment must use the same name; deployments sharing one Redis use different ones.",
    )
    embedding_processes: int | None = Field(
        default=None,
        ge=0,
        le=64,
        description="Processes that embed documents with a local model (each holds its own "
        "copy of the model and of PyTorch: about 0.8 GB for all-MiniLM-L6-v2). Empty: one per "
        "core, at most 4. 0: embed in the server's or worker's own "
        "process (slower: the model then shares Python's interpreter lock with the rest of "
        "ingestion). Queries are embedded in the server's own process either way.",
    )


class ModelCallSettings(BaseModel):
    """How the app calls remote chat models when it answers (POST /chat)."""

    request_timeout_seconds: float = Field(
        default=60.0,
        gt=0,
        le=600,
        description="Seconds to wait for each response of a chat model (the first byte of a "
        "streamed answer, then each chunk) before the call counts as failed and is retried.",
    )
    max_retries: int = Field(
        default=3,
        ge=0,
        le=10,
        description="Retries of a failed chat-model call (HTTP 429, 5xx, timeouts, dropped "
        "connections; a rejected key is not retried) before the answer ends with an error.",
    )


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="RAG_",
        env_nested_delimiter="__",
        env_file=".env",
        env_file_encoding="utf-8",
        extra="ignore",
    )

    environment: Literal["development", "test", "production"] = Field(
        default="development",
        description="development, test or production; production refuses the default secrets.",
    )
    config: str | None = Field(
        default=None,
        description="Name of an overlay file config/<name>.yaml (e.g. docker, test), read over "
        "config/default.yaml. Set it as RAG_CONFIG.",
    )
    data_dir: Path = Field(
        default=Path("data"),
        description="Root of everything the app writes: SQLite file, uploaded files, indexes, "
        "generated secrets.",
    )
    log_level: str = Field(default="INFO", description="Python logging level.")
    # First run (rag_app.bootstrap): read at every start, acted on only while what they
    # describe does not exist yet, so a later change of the account through the API stays.
    admin_username: str = Field(
        default="admin",
        description="User name of the first administrator, created at start-up while no "
        "administrator exists.",
    )
    admin_password: SecretStr | None = Field(
        default=None,
        description="Password of that first administrator (8 characters or more). Empty: a "
        "random one is generated and printed once by `rag-app serve`.",
    )
    admin_email: str | None = Field(
        default=None,
        description="E-mail address of that first administrator. Empty: "
        "<admin_username>@example.com.",
    )
    chat_base_url: str | None = Field(
        default=None,
        description="OpenAI-compatible endpoint of a chat model registered at start-up (with "
        "chat_model), e.g. https://api.deepseek.com/v1 or http://127.0.0.1:11434/v1.",
    )
    chat_model: str | None = Field(
        default=None,
        description="Model id at chat_base_url to register as a chat model at start-up, e.g. "
        "deepseek-chat.",
    )
    chat_api_key: SecretStr | None = Field(
        default=None,
        description="API key of that chat model, stored encrypted; a new value replaces the "
        "stored one at the next start. Empty for endpoints without keys.",
    )
    database: DatabaseSettings = Field(default_factory=DatabaseSettings)
    redis: RedisSettings = Field(default_factory=RedisSettings)
    security: SecuritySettings = Field(default_factory=SecuritySettings)
    server: ServerSettings = Field(default_factory=ServerSettings)
    storage: StorageSettings = Field(default_factory=StorageSettings)
    uploads: UploadSettings = Field(default_factory=UploadSettings)
    index: IndexSettings = Field(default_factory=IndexSettings)
    jobs: JobSettings = Field(default_factory=JobSettings)
    models: ModelCallSettings = Field(default_factory=ModelCallSettings)

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        directory = config_dir()
        files = [directory / "default.yaml"]
        overlay = os.environ.get("RAG_CONFIG")
        if overlay:
            overlay_file = directory / f"{overlay}.yaml"
            if not overlay_file.is_file():
                raise FileNotFoundError(f"RAG_CONFIG={overlay}: {overlay_file} does not exist")
            files.append(overlay_file)
        yaml_source = YamlConfigSettingsSource(
            settings_cls, yaml_file=[f for f in files if f.is_file()], deep_merge=True
        )
        return (init_settings, env_settings, dotenv_settings, yaml_source, file_secret_settings)

    @model_validator(mode="after")
    def _absolute_data_dir(self) -> Settings:
        self.data_dir = self.data_dir.expanduser().resolve()
        return self

    @cached_property
    def database_url(self) -> str:
        """The configured URL, or the SQLite file of the embedded default."""
        return self.database.url or f"sqlite:///{self.data_dir / 'rag_app.db'}"

    @property
    def index_dir(self) -> Path:
        return self.data_dir / "indexes"

    @property
    def tmp_dir(self) -> Path:
        """Uploads being received, before they pass their checks."""
        return self.data_dir / "tmp"

    @property
    def files_dir(self) -> Path:
        """Uploaded originals when storage.backend is local."""
        return self.data_dir / "files"

    def prepare_directories(self) -> None:
        """Create the directories the app writes to (idempotent)."""
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.index_dir.mkdir(parents=True, exist_ok=True)
        self.tmp_dir.mkdir(parents=True, exist_ok=True)

    @property
    def uses_default_secrets(self) -> bool:
        return DEFAULT_SECRET in (
            self.security.jwt_secret.get_secret_value(),
            self.security.encryption_key.get_secret_value(),
        )


def load_settings(**overrides: Any) -> Settings:
    return Settings(**overrides)
