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
"""

from __future__ import annotations

import re
import time
from collections.abc import AsyncGenerator, Generator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, TypeVar

from llama_index.core.base.llms.types import ChatMessage, ChatResponse, MessageRole
from llama_index.core.base.response.schema import RESPONSE_TYPE
from llama_index.core.callbacks import CallbackManager
from llama_index.core.chat_engine import CondensePlusContextChatEngine
from llama_index.core.chat_engine.types import (
    AgentChatResponse,
    BaseChatEngine,
    StreamingAgentChatResponse,
)
from llama_index.core.indices.prompt_helper import PromptHelper
from llama_index.core.llms import LLM
from llama_index.core.memory import ChatMemoryBuffer
from llama_index.core.prompts import ChatPromptTemplate
from llama_index.core.prompts.prompt_utils import get_biggest_prompt
from llama_index.core.response_synthesizers import CompactAndRefine
from llama_index.core.retrievers import BaseRetriever
from llama_index.core.schema import MetadataMode, NodeWithScore, QueryType, TextNode
from llama_index.core.tools import ToolOutput

from indexes.errors import ModelError
from indexes.llms import MeteredLLM, Usage, UsageSink, build_llm, token_counter
from indexes.models import DEFAULT_MAX_RETRIES, DEFAULT_TIMEOUT, ensure_tiktoken_offline
from indexes.specs import RobotSpec

# The conversation may fill at most this share of what the answer leaves of the window; the
# rest is for the instructions and the knowledge-base context. Older turns are dropped first.
HISTORY_SHARE = 0.25
# Below this, no useful prompt fits: a misregistered window rather than a real model.
MIN_PROMPT_TOKENS = 256

ANSWER_RULES = """\
You answer questions from a knowledge base. Follow these rules:
- Answer using only the numbered passages in the context below, not general knowledge.
- Cite the passages you use by their numbers in square brackets, such as [1] or [2][3], right \
after the statements they support; the numbers are the passages' order in the context.
- If the passages do not contain the answer, say plainly that the knowledge base does not \
cover it, instead of guessing.
- Answer in the language of the user's question: a question in Chinese gets an answer in \
Chinese, a question in English an answer in English.
"""
CONTEXT_BLOCK = "\nContext:\n---------------------\n{context_str}\n---------------------\n"
REFINE_BLOCK = (
    "\nMore context:\n---------------------\n{context_msg}\n---------------------\n"
    "Draft answer from earlier passages:\n{existing_answer}\n"
    "Improve the draft with these passages if they help; keep its citations.\n"
)
CHINESE_ANSWER = "\nThe question is in Chinese: answer in Chinese. 用户用中文提问，请用中文回答。\n"
CONDENSE_PROMPT = """\
Rewrite the user's last message as a standalone question that can be understood without the \
conversation, to search a knowledge base with. Resolve references ("it", "that policy") from \
the conversation. Keep the language of the last message (a Chinese message stays Chinese). \
Reply with the question only.

Conversation:
{chat_history}

Last message: {question}
Standalone question: """

NOTHING_FOUND = {
    False: "The knowledge base has no passage about this question.",
    True: "知识库中没有与该问题相关的内容。",
}
NO_MODEL_HEADER = {
    False: "No chat model is configured for this robot; the most relevant passages are:",
    True: "该机器人未配置对话模型，以下是最相关的段落：",
}
NO_MODEL_NOTHING_FOUND = {
    False: "No chat model is configured for this robot, and no passage in its knowledge bases "
    "matches the question.",
    True: "该机器人未配置对话模型，知识库中也没有与该问题相关的段落。",
}

_HAN = re.compile(r"[\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff]")
_LATIN_WORD = re.compile(r"[A-Za-z]+")


def is_chinese(text: str) -> bool:
    """Mostly Chinese: at least as many Han characters as Latin words ("RAG 是什么" is
    Chinese, "What does 年假 mean?" is not)."""
    han = len(_HAN.findall(text))
    return han > 0 and han >= len(_LATIN_WORD.findall(text))


def source_label(metadata: Mapping[str, Any], *, chinese: bool = False) -> str:
    """Where a chunk comes from: "handbook.pdf, page 3, Leave > Annual" (or in Chinese)."""
    parts = [str(metadata.get("file_name") or ("未知文件" if chinese else "unknown file"))]
    page, slide, sheet = metadata.get("page"), metadata.get("slide"), metadata.get("sheet")
    start, end = metadata.get("row_start"), metadata.get("row_end")
    if page is not None:
        parts.append(f"第 {page} 页" if chinese else f"page {page}")
    if slide is not None:
        parts.append(f"第 {slide} 张幻灯片" if chinese else f"slide {slide}")
    if sheet:
        parts.append(f"工作表 {sheet}" if chinese else f"sheet {sheet}")
    if start is not None:
        rows = f"{start}–{end}" if end is not None and end != start else f"{start}"
        parts.append(f"第 {rows} 行" if chinese else f"rows {rows}")
    if metadata.get("heading_path"):
        parts.append(str(metadata["heading_path"]))
    return ("，" if chinese else ", ").join(parts)


def passage(number: int, node: NodeWithScore, *, chinese: bool = False) -> str:
    """A chunk as it appears in the context and in retrieval-only answers: "[n] source\\ntext"."""
    text = node.node.get_content(metadata_mode=MetadataMode.NONE).strip()
    return f"[{number}] {source_label(node.node.metadata, chinese=chinese)}\n{text}"


# --- what a turn did ----------------------------------------------------------------------------


@dataclass
class TurnInfo:
    """One turn of an engine. ``usage`` is the answering call's (zero without a chat model or
    when nothing was retrieved), ``condense_usage`` the condensing call's; for a stream both are
    final once it is consumed. ``dropped_chunks``: retrieved chunks left out to fit the window.
    ``timings``: seconds spent condensing (``"condense"``) and retrieving (``"retrieve"``)."""

    question: str
    chinese: bool
    condensed_question: str | None = None
    usage: Usage = field(default_factory=Usage)
    condense_usage: Usage = field(default_factory=Usage)
    dropped_chunks: int = 0
    timings: dict[str, float] = field(default_factory=dict)
    history: list[ChatMessage] = field(default_factory=list, repr=False)

    def add_usage(self, usage: Usage) -> None:
        self.usage += usage

    def add_condense_usage(self, usage: Usage) -> None:
        self.condense_usage += usage


ChatEngineResponse = AgentChatResponse | StreamingAgentChatResponse
_R = TypeVar("_R", AgentChatResponse, StreamingAgentChatResponse)


def _attach(response: ChatEngineResponse, turn: TurnInfo) -> None:
    # AgentChatResponse has a ``metadata`` dict and StreamingAgentChatResponse none: give both
    # one, so that callers read either the same way.
    metadata = getattr(response, "metadata", None) or {}
    metadata["turn"] = turn
    vars(response)["metadata"] = metadata


def turn_info(response: ChatEngineResponse) -> TurnInfo | None:
    """What the turn that produced ``response`` did (None for engines not built here)."""
    metadata = getattr(response, "metadata", None)
    turn = metadata.get("turn") if isinstance(metadata, dict) else None
    return turn if isinstance(turn, TurnInfo) else None


def response_usage(response: ChatEngineResponse) -> Usage:
    """Token usage of the answering call (see :class:`TurnInfo`)."""
    turn = turn_info(response)
    return turn.usage if turn is not None else Usage()


def condensed_question(response: ChatEngineResponse) -> str | None:
    """The standalone question the engine retrieved with, for logging."""
    turn = turn_info(response)
    return turn.condensed_question if turn is not None else None


# --- with a chat model --------------------------------------------------------------------------


class _CitingSynthesizer(CompactAndRefine):
    """CompactAndRefine over numbered passages, in one call: the engine already cut the context
    to the window, so whatever would still overflow is dropped rather than "refined" in more
    calls (each would cost a full prompt and stream nothing until the last)."""

    def __init__(self, *, empty_response: str, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        # Refine does not pass empty_response on to its base: without passages the answer is
        # this sentence, in the question's language, and no call is made.
        self._empty_response = empty_response

    def synthesize(
        self,
        query: QueryType,
        nodes: list[NodeWithScore],
        additional_source_nodes: Sequence[NodeWithScore] | None = None,
        **response_kwargs: Any,
    ) -> RESPONSE_TYPE:
        numbered = _numbered(nodes)
        return super().synthesize(query, numbered, additional_source_nodes, **response_kwargs)

    async def asynthesize(
        self,
        query: QueryType,
        nodes: list[NodeWithScore],
        additional_source_nodes: Sequence[NodeWithScore] | None = None,
        **response_kwargs: Any,
    ) -> RESPONSE_TYPE:
        numbered = _numbered(nodes)
        return await super().asynthesize(
            query, numbered, additional_source_nodes, **response_kwargs
        )

    def _make_compact_text_chunks(self, query_str: str, text_chunks: Sequence[str]) -> list[str]:
        return super()._make_compact_text_chunks(query_str, text_chunks)[:1]

    def context_limit(self, query_str: str) -> int:
        """Tokens left for the context, computed as CompactAndRefine packs it (0: none)."""
        qa = self._text_qa_template.partial_format(query_str=query_str)
        refine = self._refine_template.partial_format(query_str=query_str)
        try:
            splitter = self._prompt_helper.get_text_splitter_given_prompt(
                get_biggest_prompt([qa, refine]),
                padding=self._response_padding_size,
                llm=self._llm,
            )
        except ValueError:  # the prompt alone overflows the window
            return 0
        return splitter.chunk_size


def _numbered(nodes: Sequence[NodeWithScore]) -> list[NodeWithScore]:
    # Copies without metadata: the label carries the source, and the originals stay untouched
    # for response.source_nodes.
    return [
        NodeWithScore(node=TextNode(id_=node.node.node_id, text=passage(i, node)), score=node.score)
        for i, node in enumerate(nodes, 1)
    ]


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

    def _synthesizer(self, history: list[ChatMessage], streaming: bool) -> _CitingSynthesizer:
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

        return _CitingSynthesizer(
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
        while len(kept) > 1 and len(self._count(_context_text(kept))) > limit:
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
        _attach(response, self._turn)
        return response


def _context_text(nodes: Sequence[NodeWithScore]) -> str:
    # As PromptHelper.repack joins the chunks it packs.
    return "\n\n".join(passage(i, node) for i, node in enumerate(nodes, 1))


# --- without a chat model -----------------------------------------------------------------------


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
        _attach(response, turn)
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
        _attach(response, turn)
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


# --- builders -----------------------------------------------------------------------------------


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
