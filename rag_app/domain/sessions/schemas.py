from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import Field

from rag_app.api.params import Id
from rag_app.domain.common import InputSchema, ReadSchema

# "deleted" is reached through DELETE only, so a PATCH can never hide or resurrect a session.
EditableStatus = Literal["active", "archived"]


class SessionCreate(InputSchema):
    robot_id: Id = Field(description="A robot you own, or a public one")
    title: str | None = Field(default=None, min_length=1, max_length=200)


class SessionUpdate(InputSchema):
    """Only the fields sent change; only the title may be cleared with null."""

    title: str | None = Field(
        default=None, min_length=1, max_length=200, description="null clears the title"
    )
    is_pinned: bool | None = None
    status: EditableStatus | None = Field(
        default=None, description="'archived' hides the session from the default list"
    )


class SessionRead(ReadSchema):
    session_id: str
    robot_id: int
    title: str | None
    summary: str | None
    message_count: int
    status: str
    is_pinned: bool
    last_message_at: datetime | None
    created_at: datetime
    updated_at: datetime


class MessageRead(ReadSchema):
    message_id: str
    role: str
    content: str
    retrieved_contexts: list[dict[str, Any]] | None
    referenced_doc_ids: list[int] | None
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int
    retrieval_time_ms: int
    generation_time_ms: int
    total_time_ms: int
    feedback: int | None = Field(description="1 helpful, -1 not helpful")
    feedback_comment: str | None
    sequence: int
    created_at: datetime
