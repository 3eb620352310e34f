from __future__ import annotations

from pydantic import Field

from rag_app.domain.common import InputSchema, ReadSchema
from rag_app.domain.users.schemas import Password


class LoginRequest(InputSchema):
    username: str = Field(min_length=1, max_length=100, description="User name or e-mail")
    password: str = Field(min_length=1, max_length=128)


class RefreshRequest(InputSchema):
    refresh_token: str = Field(min_length=1)


class ChangePasswordRequest(InputSchema):
    old_password: str = Field(min_length=1, max_length=128)
    new_password: Password


class TokenPair(ReadSchema):
    access_token: str
    refresh_token: str
    token_type: str = "bearer"  # noqa: S105 (the OAuth2 token type, not a secret)
    expires_in: int = Field(description="Access token lifetime in seconds")
