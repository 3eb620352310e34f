"""One chat engine per robot and conversation.

With a chat model: LlamaIndex's ``CondensePlusContextChatEngine`` (condense the question with the
conversation, retrieve with the condensed question, answer from the context with the robot's
instructions), configured so that the context is numbered passages the answer cites as [n], it
fits the model's window in one call (lowest-ranked passages dropped first, never a second
"refine" call), and every call's token usage is recorded. Without one: cited passages only.

Both engines answer ``chat``/``stream_chat``/``achat``/``astream_chat`` with LlamaIndex's
response types; ``response.source_nodes`` are the passages the answer is based on, in their [n]
order, and :func:`turn_info` tells the condensed question and the token usage (complete once a
stream is consumed). Engines are cheap (no I/O) and hold the conversation: build one per
conversation turn or session; the retriever and the LLM are the parts worth sharing.

The parts: ``indexes.chat_prompts`` (prompts, fixed answers, passages), ``indexes.chat_turn``
(what a turn did), ``indexes.chat_synthesizer`` and ``indexes.chat_robot_engine`` (with a chat
model), ``indexes.chat_retrieval_only`` (without one). The names in ``__all__`` are importable
from here.
"""

from __future__ import annotations

from collections.abc import Sequence

from llama_index.core.base.llms.types import ChatMessage
from llama_index.core.chat_engine.types import BaseChatEngine
from llama_index.core.llms import LLM
from llama_index.core.retrievers import BaseRetriever

from indexes.chat_prompts import (
    ANSWER_RULES,
    CHINESE_ANSWER,
    CONDENSE_PROMPT,
    CONTEXT_BLOCK,
    NO_MODEL_HEADER,
    NO_MODEL_NOTHING_FOUND,
    NOTHING_FOUND,
    REFINE_BLOCK,
    is_chinese,
    passage,
    source_label,
)
from indexes.chat_retrieval_only import RetrievalOnlyChatEngine
from indexes.chat_robot_engine import HISTORY_SHARE, MIN_PROMPT_TOKENS, RobotChatEngine
from indexes.chat_turn import (
    ChatEngineResponse,
    TurnInfo,
    condensed_question,
    response_usage,
    turn_info,
)
from indexes.llms import build_llm
from indexes.models import DEFAULT_MAX_RETRIES, DEFAULT_TIMEOUT, ensure_tiktoken_offline
from indexes.specs import RobotSpec

__all__ = [
    "ANSWER_RULES",
    "CHINESE_ANSWER",
    "CONDENSE_PROMPT",
    "CONTEXT_BLOCK",
    "HISTORY_SHARE",
    "MIN_PROMPT_TOKENS",
    "NOTHING_FOUND",
    "NO_MODEL_HEADER",
    "NO_MODEL_NOTHING_FOUND",
    "REFINE_BLOCK",
    "ChatEngineResponse",
    "RetrievalOnlyChatEngine",
    "RobotChatEngine",
    "TurnInfo",
    "build_chat_engine",
    "build_robot_llm",
    "condensed_question",
    "is_chinese",
    "passage",
    "response_usage",
    "source_label",
    "turn_info",
]


def build_robot_llm(
    robot: RobotSpec, *, timeout: float = DEFAULT_TIMEOUT, max_retries: int = DEFAULT_MAX_RETRIES
) -> LLM | None:
    """The robot's chat model with its temperature and answer length, or None (retrieval-only)."""
    if robot.chat_model is None:
        return None
    return build_llm(
        robot.chat_model,
        temperature=robot.temperature,
        max_tokens=robot.max_tokens,
        timeout=timeout,
        max_retries=max_retries,
    )


def build_chat_engine(
    robot: RobotSpec,
    retriever: BaseRetriever,
    *,
    llm: LLM | None,
    history: Sequence[ChatMessage] = (),
    context_window: int | None = None,
) -> BaseChatEngine:
    """The robot's chat engine over ``retriever``, its memory holding ``history`` (oldest turns
    dropped past a quarter of the window). ``llm`` (see :func:`build_robot_llm`) None: the
    retrieval-only engine. ``context_window`` overrides the model's (``llm.metadata``)."""
    ensure_tiktoken_offline()  # LlamaIndex's own token counting reads TIKTOKEN_CACHE_DIR too
    if llm is None:
        return RetrievalOnlyChatEngine(retriever, history=history)
    return RobotChatEngine(
        robot=robot, retriever=retriever, llm=llm, history=history, context_window=context_window
    )
