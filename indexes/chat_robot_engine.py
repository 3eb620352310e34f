"""The chat engine of a robot with a chat model: LlamaIndex's CondensePlusContextChatEngine with
the robot's prompts, the context cut to the model's window and the token usage of each turn."""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Literal, TypeVar

from llama_index.core.base.llms.types import ChatMessage, MessageRole
from llama_index.core.callbacks import CallbackManager
from llama_index.core.chat_engine import CondensePlusContextChatEngine
from llama_index.core.chat_engine.types import AgentChatResponse, StreamingAgentChatResponse
from llama_index.core.indices.prompt_helper import PromptHelper
from llama_index.core.llms import LLM
from llama_index.core.memory import ChatMemoryBuffer
from llama_index.core.prompts import ChatPromptTemplate
from llama_index.core.response_synthesizers import CompactAndRefine
from llama_index.core.retrievers import BaseRetriever
from llama_index.core.schema import NodeWithScore

from indexes.chat_prompts import (
    ANSWER_RULES,
    CHINESE_ANSWER,
    CONDENSE_PROMPT,
    CONTEXT_BLOCK,
    NOTHING_FOUND,
    REFINE_BLOCK,
    is_chinese,
)
from indexes.chat_synthesizer import CitingSynthesizer, context_text
from indexes.chat_turn import TurnInfo, attach_turn
from indexes.errors import ModelError
from indexes.llms import MeteredLLM, UsageSink, token_counter
from indexes.specs import RobotSpec

# The conversation may fill at most this share of what the answer leaves of the window; the
# rest is for the instructions and the knowledge-base context. Older turns are dropped first.
HISTORY_SHARE = 0.25
# Below this, no useful prompt fits: a misregistered window rather than a real model.
MIN_PROMPT_TOKENS = 256

_R = TypeVar("_R", AgentChatResponse, StreamingAgentChatResponse)


class RobotChatEngine(CondensePlusContextChatEngine):
    """CondensePlusContextChatEngine with the robot's prompts, a context cut to the window and
    usage per turn. Hooks into the engine's ``_condense_question``, ``_get_nodes`` and
    ``_get_response_synthesizer`` (llama-index-core 0.14; tests cover each)."""

    def __init__(
        self,
        *,
        robot: RobotSpec,
        retriever: BaseRetriever,
        llm: LLM,
        history: Sequence[ChatMessage] = (),
        context_window: int | None = None,
    ) -> None:
        meta = llm.metadata
        window = context_window or meta.context_window
        answer = meta.num_output if meta.num_output > 0 else min(robot.max_tokens, window // 2)
        if window - answer < MIN_PROMPT_TOKENS:
            raise ModelError(
                f"The chat model's context window ({window} tokens) leaves no room for a prompt "
                f"after the answer's {answer} tokens: register the model's real context window "
                "or lower the robot's max_tokens."
            )
        self._window, self._answer_tokens = window, answer
        self._count = token_counter()
        self._turn: TurnInfo | None = None
        self._phase: Literal["condense", "answer"] = "answer"
        instructions = (robot.system_prompt or "").strip()
        self._system_text = f"{instructions}\n\n{ANSWER_RULES}" if instructions else ANSWER_RULES
        self._prompt_helper = PromptHelper(
            context_window=window, num_output=answer, tokenizer=self._count
        )
        memory = ChatMemoryBuffer.from_defaults(
            chat_history=list(history),
            token_limit=max(1, int((window - answer) * HISTORY_SHARE)),
            tokenizer_fn=self._count,
        )
        metered = MeteredLLM(llm, self._usage_sink, context_window=window, num_output=answer)
        super().__init__(
            retriever=retriever,
            llm=metered,
            memory=memory,
            condense_prompt=CONDENSE_PROMPT,
            callback_manager=CallbackManager([]),
        )

    def _usage_sink(self) -> UsageSink:
        # Bound when a call starts: a stream reports at its end, maybe in another thread.
        turn = self._turn
        if turn is None:
            return lambda usage: None
        return turn.add_condense_usage if self._phase == "condense" else turn.add_usage

    # -- hooks ---------------------------------------------------------------------------------

    def _start_turn(self, chat_history: list[ChatMessage], message: str) -> TurnInfo:
        # The engine calls _condense_question first in every turn, with the history (already
        # cut by the memory) and the message that the answer prompt will hold too.
        self._turn = TurnInfo(question=message, chinese=is_chinese(message), history=chat_history)
        self._phase = "condense"
        return self._turn

    def _end_condense(self, turn: TurnInfo, question: str, started: float) -> str:
        turn.timings["condense"] = time.perf_counter() - started
        turn.condensed_question = question.strip() or turn.question
        return turn.condensed_question

    def _condense_question(self, chat_history: list[ChatMessage], latest_message: str) -> str:
        turn, started = self._start_turn(chat_history, latest_message), time.perf_counter()
        try:
            question = super()._condense_question(chat_history, latest_message)
        finally:
            self._phase = "answer"
        return self._end_condense(turn, question, started)

    async def _acondense_question(
        self, chat_history: list[ChatMessage], latest_message: str
    ) -> str:
        turn, started = self._start_turn(chat_history, latest_message), time.perf_counter()
        try:
            question = await super()._acondense_question(chat_history, latest_message)
        finally:
            self._phase = "answer"
        return self._end_condense(turn, question, started)

    def _get_nodes(self, message: str) -> list[NodeWithScore]:
        started = time.perf_counter()
        return self._fit(super()._get_nodes(message), started)

    async def _aget_nodes(self, message: str) -> list[NodeWithScore]:
        started = time.perf_counter()
        return self._fit(await super()._aget_nodes(message), started)

    def _get_response_synthesizer(
        self, chat_history: list[ChatMessage], streaming: bool = False
    ) -> CompactAndRefine:
        return self._synthesizer(chat_history, streaming)

    # -- context -------------------------------------------------------------------------------

    def _synthesizer(self, history: list[ChatMessage], streaming: bool) -> CitingSynthesizer:
        chinese = self._turn.chinese if self._turn is not None else False
        language = CHINESE_ANSWER if chinese else ""
        role = self._llm.metadata.system_role

        def template(block: str) -> ChatPromptTemplate:
            return ChatPromptTemplate.from_messages(
                [
                    ChatMessage(role=role, content=self._system_text + block + language),
                    *history,
                    ChatMessage(role=MessageRole.USER, content="{query_str}"),
                ]
            )

        return CitingSynthesizer(
            llm=self._llm,
            callback_manager=self.callback_manager,
            prompt_helper=self._prompt_helper,
            text_qa_template=template(CONTEXT_BLOCK),
            refine_template=template(REFINE_BLOCK),
            streaming=streaming,
            empty_response=NOTHING_FOUND[chinese],
        )

    def _fit(self, nodes: list[NodeWithScore], started: float) -> list[NodeWithScore]:
        """The best-ranked nodes whose numbered passages fit the window in one prompt."""
        turn = self._turn
        assert turn is not None, "_condense_question starts every turn"
        turn.timings["retrieve"] = time.perf_counter() - started
        limit = self._synthesizer(turn.history, streaming=False).context_limit(turn.question)
        if limit <= 0:
            raise ModelError(
                f"The conversation and the robot's instructions fill the chat model's "
                f"{self._window}-token context window (with {self._answer_tokens} tokens kept "
                "for the answer): no room is left for knowledge-base passages. Start a new "
                "conversation, shorten the robot's system prompt or lower its max_tokens."
            )
        kept = list(nodes)
        while len(kept) > 1 and len(self._count(context_text(kept))) > limit:
            kept.pop()  # the lowest-ranked goes first
        turn.dropped_chunks = len(nodes) - len(kept)
        return kept

    # -- responses carry their turn ------------------------------------------------------------

    def chat(
        self, message: str, chat_history: list[ChatMessage] | None = None
    ) -> AgentChatResponse:
        return self._with_turn(super().chat(message, chat_history))

    def stream_chat(
        self, message: str, chat_history: list[ChatMessage] | None = None
    ) -> StreamingAgentChatResponse:
        return self._with_turn(super().stream_chat(message, chat_history))

    async def achat(
        self, message: str, chat_history: list[ChatMessage] | None = None
    ) -> AgentChatResponse:
        return self._with_turn(await super().achat(message, chat_history))

    async def astream_chat(
        self, message: str, chat_history: list[ChatMessage] | None = None
    ) -> StreamingAgentChatResponse:
        return self._with_turn(await super().astream_chat(message, chat_history))

    def _with_turn(self, response: _R) -> _R:
        assert self._turn is not None
        attach_turn(response, self._turn)
        return response
