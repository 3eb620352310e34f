from __future__ import annotations

from typing import Any, Literal

from pydantic import Field

from rag_app.api.params import Id
from rag_app.domain.common import InputSchema, ReadSchema


class ChatRequest(InputSchema):
    robot_id: Id
    session_id: str | None = Field(
        default=None, min_length=1, max_length=64, description="Omit to start a new session"
    )
    message: str = Field(min_length=1, max_length=8000)
    stream: bool = Field(default=True, description="Server-Sent Events (true) or one JSON reply")


class ChatReply(ReadSchema):
    session_id: str
    user_message_id: str
    message_id: str
    answer: str
    contexts: list[dict[str, Any]]
    usage: dict[str, Any]
    timings_ms: dict[str, Any]


class FeedbackRequest(InputSchema):
    feedback: Literal[1, -1] = Field(description="1 helpful, -1 not helpful")
    comment: str | None = Field(default=None, max_length=500)
