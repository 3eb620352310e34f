"""Answering a question: the robot's retrieval and chat engine, streamed as events, with both
turns stored (the user's before anything can fail, the answer when it is complete)."""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from itertools import pairwise
from typing import TYPE_CHECKING, Any, Literal

from llama_index.core.base.llms.types import ChatMessage, MessageRole
from sqlmodel.ext.asyncio.session import AsyncSession

from indexes.chat import build_chat_engine, build_robot_llm, turn_info
from indexes.errors import IndexesError
from indexes.retrieval import RetrievalResult, RetrievedChunk, RobotRetriever
from rag_app.db.models import ChatHistory, ChatSession, Robot, User
from rag_app.db.models.chat_history import MessageRole as TurnRole
from rag_app.domain.chat.history import TurnStats, append_turn, new_message_id, recent_turns
from rag_app.domain.common import invalid
from rag_app.domain.robots.service import RobotService
from rag_app.domain.sessions.schemas import SessionCreate
from rag_app.domain.sessions.service import SessionService
from rag_app.errors import RagAppError
from rag_app.indexing.robots import retriever_for, robot_spec

if TYPE_CHECKING:
    from rag_app.context import AppContext

logger = logging.getLogger("rag_app.chat")

HISTORY_TURNS = 20
EventKind = Literal["session", "context", "delta", "done", "error"]


@dataclass
class ChatEvent:
    kind: EventKind
    data: dict[str, Any] = field(default_factory=dict)


class RecordingRetriever(RobotRetriever):
    """Keeps the last search's details (every leg's scores) for the stored contexts; built per
    request, so no two requests share it."""

    last: RetrievalResult | None = None

    def search(self, query: str, **kwargs: Any) -> RetrievalResult:
        self.last = super().search(query, **kwargs)
        return self.last


def context_item(number: int, chunk: RetrievedChunk) -> dict[str, Any]:
    return {
        "n": number,
        "node_id": chunk.node_id,
        "text": chunk.text,
        "knowledge_id": chunk.knowledge_id,
        "document_id": chunk.document_id,
        "file_name": chunk.file_name,
        "page": chunk.page,
        "heading_path": chunk.heading_path,
        "vector_rank": chunk.vector_rank,
        "vector_score": chunk.vector_score,
        "keyword_rank": chunk.keyword_rank,
        "keyword_score": chunk.keyword_score,
        "fused_score": chunk.fused_score,
        "rerank_score": chunk.rerank_score,
        "score": chunk.score,
    }


def answered(turns: list[ChatHistory]) -> list[ChatHistory]:
    """The question-and-answer pairs among ``turns``. A question whose answer failed (stored,
    with no answer after it) or is still being written by a concurrent request is left out:
    sent on, it would put two user messages in a row, which chat templates that require
    alternating roles (vLLM, llama.cpp) reject, so one failure would break every later turn
    of the session, and a retried question would reach the model twice."""
    pairs: list[ChatHistory] = []
    for question, reply in pairwise(turns):
        if question.role == TurnRole.user and reply.role == TurnRole.assistant:
            pairs += [question, reply]
    return pairs


@dataclass
class PreparedTurn:
    robot: Robot
    chat: ChatSession
    message: str
    user_message_id: str
    history: list[ChatMessage]
    created_session: bool


class ChatService:
    def __init__(self, session: AsyncSession, ctx: AppContext) -> None:
        self.session = session
        self.ctx = ctx

    async def prepare(
        self, user: User, robot_id: int, session_id: str | None, message: str
    ) -> PreparedTurn:
        """Check access, find or create the session, store the user's turn."""
        robot = await RobotService(self.session).get_usable(user, robot_id, enabled_only=True)
        sessions = SessionService(self.session)
        if session_id is None:
            chat = await sessions.create(user, SessionCreate(robot_id=robot_id))
        else:
            chat = await sessions.get(user, session_id)
            if chat.robot_id != robot_id:
                # Worded "field: message" like every other 422 (rag_app.domain.common.invalid),
                # so the detail itself names session_id, not only errors[].field.
                raise invalid(
                    "session_id",
                    f"session {session_id} belongs to robot {chat.robot_id}, not {robot_id}",
                )
        history = [
            ChatMessage(
                role=MessageRole.USER if turn.role == TurnRole.user else MessageRole.ASSISTANT,
                content=turn.content,
            )
            for turn in answered(await recent_turns(self.session, chat.session_id, HISTORY_TURNS))
        ]
        turn = await append_turn(self.session, chat.session_id, TurnRole.user, message)
        return PreparedTurn(robot, chat, message, turn.message_id, history, session_id is None)

    async def stream(self, prepared: PreparedTurn) -> AsyncIterator[ChatEvent]:
        """session → context → delta* → done, or error at any point after session. The
        answer is stored only when complete; the user's turn is stored already."""
        started = time.perf_counter()
        message_id = new_message_id()
        yield ChatEvent(
            "session",
            {
                "session_id": prepared.chat.session_id,
                "user_message_id": prepared.user_message_id,
                "message_id": message_id,
                "created_session": prepared.created_session,
            },
        )
        try:
            spec = await robot_spec(self.ctx, self.session, prepared.robot)
            base = await retriever_for(self.ctx, spec.retrieval, spec.knowledge, spec.rerank_model)
            retriever = RecordingRetriever(base.retrieval, base.sources, base.reranker)
            calls = self.ctx.settings.models
            llm = build_robot_llm(
                spec, timeout=calls.request_timeout_seconds, max_retries=calls.max_retries
            )
            engine = build_chat_engine(spec, retriever, llm=llm, history=prepared.history)
            response = await engine.astream_chat(prepared.message)
            contexts = self._contexts(response.source_nodes, retriever.last)
            yield ChatEvent("context", {"items": contexts})
            first_token_at: float | None = None
            parts: list[str] = []
            async for delta in response.async_response_gen():
                if not delta:
                    # LlamaIndex queues an empty delta to wake the reader when the model call
                    # fails: no text, so no event (a client would see an answer begin).
                    continue
                if first_token_at is None:
                    first_token_at = time.perf_counter()
                parts.append(delta)
                yield ChatEvent("delta", {"text": delta})
        except (IndexesError, RagAppError) as exc:
            detail = str(exc) if isinstance(exc, IndexesError) else exc.detail
            logger.warning("chat turn failed: %s", detail)
            yield ChatEvent("error", {"message": detail, "message_id": message_id})
            return
        except Exception:
            logger.exception("chat turn failed unexpectedly")
            yield ChatEvent(
                "error",
                {
                    "message": "the answer could not be completed; the error has been logged",
                    "message_id": message_id,
                },
            )
            return
        yield await self._finish(
            prepared, message_id, "".join(parts), response, contexts, started, first_token_at
        )

    def _contexts(self, nodes: list[Any], last: RetrievalResult | None) -> list[dict[str, Any]]:
        details = {chunk.node_id: chunk for chunk in (last.chunks if last else [])}
        items = []
        for number, node in enumerate(nodes, start=1):
            chunk = details.get(node.node.node_id)
            if chunk is not None:
                items.append(context_item(number, chunk))
        return items

    async def _finish(
        self,
        prepared: PreparedTurn,
        message_id: str,
        answer: str,
        response: Any,
        contexts: list[dict[str, Any]],
        started: float,
        first_token_at: float | None,
    ) -> ChatEvent:
        turn = turn_info(response)
        total_ms = int((time.perf_counter() - started) * 1000)
        retrieval_ms = int((turn.timings.get("retrieve", 0.0) if turn else 0.0) * 1000)
        condense_ms = int((turn.timings.get("condense", 0.0) if turn else 0.0) * 1000)
        usage = turn.usage + turn.condense_usage if turn else None
        stats = TurnStats(
            prompt_tokens=usage.prompt_tokens if usage else 0,
            completion_tokens=usage.completion_tokens if usage else 0,
            retrieval_time_ms=retrieval_ms,
            generation_time_ms=max(total_ms - retrieval_ms - condense_ms, 0),
            total_time_ms=total_ms,
            retrieved_contexts=contexts,
            referenced_doc_ids=sorted({c["document_id"] for c in contexts if c["document_id"]}),
            meta={
                "condensed_question": turn.condensed_question if turn else None,
                "usage_estimated": bool(usage and usage.estimated),
                "first_token_ms": int((first_token_at - started) * 1000)
                if first_token_at
                else None,
            },
        )
        stored = await append_turn(
            self.session, prepared.chat.session_id, TurnRole.assistant, answer, stats, message_id
        )
        return ChatEvent(
            "done",
            {
                "message_id": stored.message_id,
                "session_id": prepared.chat.session_id,
                "usage": {
                    "prompt_tokens": stored.prompt_tokens,
                    "completion_tokens": stored.completion_tokens,
                    "total_tokens": stored.total_tokens,
                    "estimated": stats.meta["usage_estimated"] if stats.meta else False,
                },
                "timings_ms": {
                    "retrieval": retrieval_ms,
                    "condense": condense_ms,
                    "generation": stats.generation_time_ms,
                    "first_token": stats.meta.get("first_token_ms") if stats.meta else None,
                    "total": total_ms,
                },
            },
        )
