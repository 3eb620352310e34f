from __future__ import annotations

import re
from datetime import datetime
from typing import Annotated, Literal

from pydantic import AfterValidator, EmailStr, Field, StringConstraints

from rag_app.domain.common import InputSchema, ReadSchema, Status

_USERNAME = re.compile(r"^[\w.\-]+$")  # \w includes CJK characters: Chinese user names are fine


def _check_username(value: str) -> str:
    if not _USERNAME.match(value):
        raise ValueError("use letters, digits, '.', '-' or '_' (no spaces or '@')")
    return value


Username = Annotated[
    str, StringConstraints(min_length=2, max_length=50), AfterValidator(_check_username)
]
Password = Annotated[str, StringConstraints(min_length=8, max_length=128)]


class UserRegister(InputSchema):
    username: Username
    email: EmailStr
    password: Password


class UserCreate(UserRegister):
    """Admin-side creation (CLI, first admin)."""

    role: Literal["admin", "user"] = "user"


class UserUpdate(InputSchema):
    email: EmailStr | None = None
    role: Literal["admin", "user"] | None = None
    status: Status | None = Field(default=None, description="1 enabled, 0 disabled")
    avatar_url: str | None = Field(default=None, max_length=255)


class UserRead(ReadSchema):
    id: int
    username: str
    email: str
    role: str
    status: int
    avatar_url: str | None
    created_at: datetime
    updated_at: datetime


class PasswordResetRead(ReadSchema):
    user_id: int
    temporary_password: str = Field(description="Shown once; the user should change it.")
