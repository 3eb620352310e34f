"""The chat engine of a robot without a chat model: its answers are the retrieved passages."""

from __future__ import annotations

import time
from collections.abc import AsyncGenerator, Generator, Sequence

from llama_index.core.base.llms.types import ChatMessage, ChatResponse, MessageRole
from llama_index.core.chat_engine.types import (
    AgentChatResponse,
    BaseChatEngine,
    StreamingAgentChatResponse,
)
from llama_index.core.retrievers import BaseRetriever
from llama_index.core.schema import NodeWithScore
from llama_index.core.tools import ToolOutput

from indexes.chat_prompts import NO_MODEL_HEADER, NO_MODEL_NOTHING_FOUND, is_chinese, passage
from indexes.chat_turn import TurnInfo, attach_turn


class RetrievalOnlyChatEngine(BaseChatEngine):
    """Answers with the retrieved passages themselves, labelled as such, for robots without a
    chat model. LlamaIndex has no generation-free chat engine (each calls an LLM, falling back
    to the global ``Settings.llm``), so this small one returns the same response types as the
    LLM engine: callers treat both alike. The question is retrieved as asked (condensing it
    with the conversation would need a model)."""

    def __init__(self, retriever: BaseRetriever, history: Sequence[ChatMessage] = ()) -> None:
        self._retriever = retriever
        self._history = list(history)

    def reset(self) -> None:
        self._history = []

    @property
    def chat_history(self) -> list[ChatMessage]:
        return list(self._history)

    def _begin(self, message: str, chat_history: list[ChatMessage] | None) -> TurnInfo:
        if chat_history is not None:
            self._history = list(chat_history)
        return TurnInfo(question=message, chinese=is_chinese(message), condensed_question=message)

    @staticmethod
    def _retrieved(
        turn: TurnInfo, started: float, nodes: list[NodeWithScore]
    ) -> list[NodeWithScore]:
        turn.timings["retrieve"] = time.perf_counter() - started
        return nodes

    def _pieces(self, turn: TurnInfo, nodes: Sequence[NodeWithScore]) -> list[str]:
        """The answer as stream deltas: the label, then one passage each."""
        if not nodes:
            return [NO_MODEL_NOTHING_FOUND[turn.chinese]]
        passages = [passage(i, n, chinese=turn.chinese) for i, n in enumerate(nodes, 1)]
        return [NO_MODEL_HEADER[turn.chinese], *(f"\n\n{p}" for p in passages)]

    def _remember(self, message: str, answer: str) -> None:
        self._history += [
            ChatMessage(role=MessageRole.USER, content=message),
            ChatMessage(role=MessageRole.ASSISTANT, content=answer),
        ]

    def _sources(self, turn: TurnInfo, nodes: list[NodeWithScore]) -> list[ToolOutput]:
        raw_input = {"message": turn.question}
        return [
            ToolOutput(
                tool_name="retriever", content=str(nodes), raw_input=raw_input, raw_output=nodes
            )
        ]

    def _complete(self, turn: TurnInfo, nodes: list[NodeWithScore]) -> AgentChatResponse:
        answer = "".join(self._pieces(turn, nodes))
        self._remember(turn.question, answer)
        response = AgentChatResponse(
            response=answer, sources=self._sources(turn, nodes), source_nodes=nodes
        )
        attach_turn(response, turn)
        return response

    def _streaming(
        self,
        turn: TurnInfo,
        nodes: list[NodeWithScore],
        *,
        asynchronous: bool,
    ) -> StreamingAgentChatResponse:
        pieces = self._pieces(turn, nodes)

        def responses() -> Generator[ChatResponse, None, None]:
            text = ""
            for piece in pieces:
                text += piece
                yield ChatResponse(
                    message=ChatMessage(role=MessageRole.ASSISTANT, content=text), delta=piece
                )
            self._remember(turn.question, text)

        async def aresponses() -> AsyncGenerator[ChatResponse, None]:
            for response in responses():
                yield response

        # is_writing_to_memory=False: the deltas are read straight from the stream, with no
        # writer thread or task feeding a queue (the engine keeps its own history).
        response = StreamingAgentChatResponse(
            chat_stream=None if asynchronous else responses(),
            achat_stream=aresponses() if asynchronous else None,
            sources=self._sources(turn, nodes),
            source_nodes=nodes,
            is_writing_to_memory=False,
        )
        attach_turn(response, turn)
        return response

    def chat(
        self, message: str, chat_history: list[ChatMessage] | None = None
    ) -> AgentChatResponse:
        turn, started = self._begin(message, chat_history), time.perf_counter()
        return self._complete(
            turn, self._retrieved(turn, started, self._retriever.retrieve(message))
        )

    async def achat(
        self, message: str, chat_history: list[ChatMessage] | None = None
    ) -> AgentChatResponse:
        turn, started = self._begin(message, chat_history), time.perf_counter()
        nodes = await self._retriever.aretrieve(message)
        return self._complete(turn, self._retrieved(turn, started, nodes))

    def stream_chat(
        self, message: str, chat_history: list[ChatMessage] | None = None
    ) -> StreamingAgentChatResponse:
        turn, started = self._begin(message, chat_history), time.perf_counter()
        nodes = self._retrieved(turn, started, self._retriever.retrieve(message))
        return self._streaming(turn, nodes, asynchronous=False)

    async def astream_chat(
        self, message: str, chat_history: list[ChatMessage] | None = None
    ) -> StreamingAgentChatResponse:
        turn, started = self._begin(message, chat_history), time.perf_counter()
        nodes = self._retrieved(turn, started, await self._retriever.aretrieve(message))
        return self._streaming(turn, nodes, asynchronous=True)
