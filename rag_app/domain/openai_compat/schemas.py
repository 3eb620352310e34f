"""Request bodies as OpenAI's clients send them, and the response objects they expect.

Requests tolerate unknown fields: OpenAI clients and frameworks send many (``tools``,
``user``, ``seed``, ``top_p``, ...) and a strict schema would refuse ordinary clients.
"""

from __future__ import annotations

import time
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

MODEL_PREFIX = "robot-"
OWNED_BY = "rag_app"

Role = Literal["system", "developer", "user", "assistant", "tool", "function"]


class Lenient(BaseModel):
    model_config = ConfigDict(extra="ignore")


class ContentPart(Lenient):
    type: str = Field(max_length=50)
    text: str | None = None


class ChatCompletionMessage(Lenient):
    role: Role
    content: str | list[ContentPart] | None = None

    @property
    def text(self) -> str:
        """The text of the message; parts that are not text (images, audio) are left out."""
        if isinstance(self.content, list):
            return "\n".join(p.text for p in self.content if p.type == "text" and p.text)
        return self.content or ""


class StreamOptions(Lenient):
    include_usage: bool = False


class ChatCompletionRequest(Lenient):
    model: str = Field(min_length=1, max_length=200, description="robot-<id> (GET /v1/models)")
    messages: list[ChatCompletionMessage] = Field(min_length=1, max_length=500)
    stream: bool | None = False
    stream_options: StreamOptions | None = None
    # Accepted for compatibility and ignored: the robot's owner sets its temperature and
    # answer length, and clients often send their library's defaults without meaning them.
    temperature: float | None = None
    max_tokens: int | None = None
    max_completion_tokens: int | None = None
    n: int | None = Field(default=None, ge=1, le=1, description="Only one choice is produced")

    @property
    def include_usage(self) -> bool:
        return bool(self.stream_options and self.stream_options.include_usage)


def model_id(robot_id: int) -> str:
    return f"{MODEL_PREFIX}{robot_id}"


def model_object(robot_id: int, created: int) -> dict[str, Any]:
    return {"id": model_id(robot_id), "object": "model", "created": created, "owned_by": OWNED_BY}


def usage_object(usage: dict[str, Any]) -> dict[str, int]:
    return {
        "prompt_tokens": int(usage.get("prompt_tokens", 0)),
        "completion_tokens": int(usage.get("completion_tokens", 0)),
        "total_tokens": int(usage.get("total_tokens", 0)),
    }


def completion_object(
    completion_id: str,
    model: str,
    answer: str,
    usage: dict[str, Any],
    sources: list[dict[str, Any]],
) -> dict[str, Any]:
    return {
        "id": completion_id,
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model,
        "system_fingerprint": None,
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": answer, "refusal": None},
                "logprobs": None,
                "finish_reason": "stop",
            }
        ],
        "usage": usage_object(usage),
        "rag_sources": sources,
    }


def chunk_object(
    completion_id: str,
    model: str,
    created: int,
    delta: dict[str, Any] | None,
    *,
    finish_reason: str | None = None,
    with_usage_field: bool = False,
    **extra: Any,
) -> dict[str, Any]:
    """One ``chat.completion.chunk``; ``delta=None`` makes the usage chunk (no choices)."""
    chunk: dict[str, Any] = {
        "id": completion_id,
        "object": "chat.completion.chunk",
        "created": created,
        "model": model,
        "system_fingerprint": None,
        "choices": []
        if delta is None
        else [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish_reason}],
    }
    if with_usage_field:
        # As OpenAI does when include_usage is set: null on every chunk but the last.
        chunk["usage"] = None
    chunk.update(extra)
    return chunk


def error_object(
    message: str, kind: str, code: str | None = None, param: str | None = None
) -> dict[str, Any]:
    return {"error": {"message": message, "type": kind, "param": param, "code": code}}
