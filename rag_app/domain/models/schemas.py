from __future__ import annotations

from datetime import datetime
from typing import Annotated

from pydantic import AfterValidator, Field, SecretStr, StringConstraints

from rag_app.api.params import Id
from rag_app.db.models.llm import ModelType
from rag_app.domain.common import InputSchema, Name, ReadSchema, Status


def _check_base_url(value: str | None) -> str | None:
    if value is None:
        return None
    if not value.startswith(("http://", "https://")):
        raise ValueError("must start with http:// or https://")
    # One spelling per endpoint: clients append paths, and "…/v1/" would give "…/v1//chat".
    return value.rstrip("/")


# What the columns hold: a bigger number would reach the driver and fail as a 500, not a 422.
MAX_TOKENS = 10_000_000
# Milvus' limit for a dense vector; no embedding model we know comes close.
MAX_DIMENSION = 32_768

ModelName = Annotated[str, StringConstraints(min_length=1, max_length=255)]
Provider = Annotated[str, StringConstraints(min_length=1, max_length=50)]
BaseUrl = Annotated[str | None, StringConstraints(max_length=255), AfterValidator(_check_base_url)]
ApiVersion = Annotated[str, StringConstraints(min_length=1, max_length=50)]
# SecretStr: a key that reaches a log line or a repr prints as '**********'.
ApiKeyValue = Annotated[SecretStr, Field(min_length=1, max_length=4096)]


class LlmCreate(InputSchema):
    provider: Provider = Field(description="A provider preset, see GET /llms/providers")
    name: Name = Field(description="Display name")
    model_name: ModelName = Field(description="The provider's model id, or a path for local")
    model_type: ModelType
    base_url: BaseUrl = Field(default=None, description="Empty: the provider's default")
    api_version: ApiVersion | None = Field(default=None, description="Required for azure")
    max_tokens: int | None = Field(default=4096, ge=1, le=MAX_TOKENS)
    dimension: int | None = Field(
        default=None, ge=1, le=MAX_DIMENSION, description="Embedding models only"
    )
    description: str | None = Field(default=None, max_length=1000)
    status: Status = Field(default=1, description="1 enabled, 0 disabled")


class LlmUpdate(InputSchema):
    """Only the fields sent change; the merged model is validated like a new one. A null
    base_url goes back to the provider's default."""

    provider: Provider | None = None
    name: Name | None = None
    model_name: ModelName | None = None
    model_type: ModelType | None = None
    base_url: BaseUrl = None
    api_version: ApiVersion | None = None
    max_tokens: int | None = Field(default=None, ge=1, le=MAX_TOKENS)
    dimension: int | None = Field(default=None, ge=1, le=MAX_DIMENSION)
    description: str | None = Field(default=None, max_length=1000)
    status: Status | None = None


class LlmRead(ReadSchema):
    id: int
    user_id: int | None
    provider: str
    name: str
    model_name: str
    model_type: str
    base_url: str | None
    api_version: str | None
    max_tokens: int | None
    dimension: int | None
    description: str | None
    status: int
    has_api_key: bool = Field(default=False, description="An active API key exists")
    created_at: datetime
    updated_at: datetime


class LlmOption(ReadSchema):
    """What any signed-in user may see of a model: enough to pick one, nothing about access."""

    id: int
    name: str
    provider: str
    model_name: str
    model_type: str
    dimension: int | None
    max_tokens: int | None


class LlmOptions(ReadSchema):
    items: list[LlmOption]


class ProviderRead(ReadSchema):
    name: str
    label: str
    default_base_url: str | None
    model_types: list[str]
    requires_api_key: bool
    requires_api_version: bool
    requires_base_url: bool
    uses_base_url: bool


class ApiKeyCreate(InputSchema):
    llm_id: Id
    alias: Name
    api_key: ApiKeyValue
    description: str | None = Field(default=None, max_length=500)
    status: Status = Field(default=1, description="1 active, 0 disabled")


class ApiKeyUpdate(InputSchema):
    alias: Name | None = None
    api_key: ApiKeyValue | None = Field(default=None, description="A new key replaces the old")
    description: str | None = Field(default=None, max_length=500)
    status: Status | None = None


class ApiKeyRead(ReadSchema):
    """Never the key nor its ciphertext: only the mask identifies it to a person."""

    id: int
    llm_id: int
    alias: str
    key_mask: str
    description: str | None
    status: int
    created_at: datetime
    updated_at: datetime
