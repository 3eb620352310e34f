"""Robot chat engines for real: LlamaIndex's CondensePlusContextChatEngine through the openai
client against the local OpenAI-compatible test server, and the retrieval-only engine."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import pytest
from llama_index.core import VectorStoreIndex
from llama_index.core.base.llms.types import ChatMessage, MessageRole
from llama_index.core.chat_engine.types import AgentChatResponse, StreamingAgentChatResponse
from llama_index.core.retrievers import BaseRetriever
from llama_index.core.schema import NodeWithScore, QueryBundle, TextNode

from indexes.chat import (
    CHINESE_ANSWER,
    NO_MODEL_HEADER,
    NO_MODEL_NOTHING_FOUND,
    NOTHING_FOUND,
    TurnInfo,
    build_chat_engine,
    build_robot_llm,
    condensed_question,
    is_chinese,
    response_usage,
    source_label,
    turn_info,
)
from indexes.errors import ModelError
from indexes.llms import Usage, build_llm
from indexes.models import build_embedding
from indexes.specs import PACKAGED_EMBEDDING, ModelSpec, RobotSpec
from tests.openai_server import DEFAULT_API_KEY, OpenAIServer, RecordedRequest, words

ROBOT_PROMPT = "You are Ada, the HR assistant of Example Corp."
CONDENSED = "How many days of annual leave does an employee get?"
ANSWER = "Employees get 20 days of annual leave [1], more after five years [2]."
HISTORY = [
    ChatMessage(role=MessageRole.USER, content="Tell me about the leave policy."),
    ChatMessage(role=MessageRole.ASSISTANT, content="The leave policy covers annual leave."),
]


class FixedRetriever(BaseRetriever):
    """Returns the same ranked nodes for any query and records the queries."""

    def __init__(self, nodes: Sequence[NodeWithScore]) -> None:
        super().__init__()
        self.nodes = list(nodes)
        self.queries: list[str] = []

    def _retrieve(self, query_bundle: QueryBundle) -> list[NodeWithScore]:
        self.queries.append(query_bundle.query_str)
        return [NodeWithScore(node=n.node, score=n.score) for n in self.nodes]


def chunk(index: int, text: str, **metadata: Any) -> NodeWithScore:
    values: dict[str, Any] = {
        "file_name": "handbook.pdf",
        "page": index,
        "heading_path": "Leave > Annual",
        "document_id": 7,
        "knowledge_id": 3,
    }
    values.update(metadata)
    node = TextNode(id_=f"7-{index}", text=text, metadata=values)
    return NodeWithScore(node=node, score=1.0 - index / 10)


LEAVE = [
    chunk(1, "Every employee gets 20 days of annual leave per calendar year."),
    chunk(2, "After five years of service, annual leave rises to 25 days."),
    chunk(3, "Unused leave expires at the end of March of the following year."),
]


def reply(messages: list[dict[str, Any]]) -> str:
    """Condense requests get the standalone question, answer requests the answer."""
    return CONDENSED if "Standalone question:" in str(messages[-1]["content"]) else ANSWER


@pytest.fixture
def server(openai_server: OpenAIServer) -> OpenAIServer:
    openai_server.chat_reply = reply
    return openai_server


def chat_spec(server: OpenAIServer, **fields: Any) -> ModelSpec:
    values: dict[str, Any] = {
        "provider": "openai-compatible",
        "model_name": "test-chat",
        "model_type": "chat",
        "base_url": server.base_url,
        "api_key": DEFAULT_API_KEY,
    }
    values.update(fields)
    return ModelSpec(**values)


def robot(server: OpenAIServer, **fields: Any) -> RobotSpec:
    values: dict[str, Any] = {
        "chat_model": chat_spec(server),
        "system_prompt": ROBOT_PROMPT,
        "temperature": 0.2,
        "max_tokens": 300,
    }
    values.update(fields)
    return RobotSpec(**values)


def engine_for(
    server: OpenAIServer,
    retriever: BaseRetriever,
    *,
    history: Sequence[ChatMessage] = (),
    robot_spec: RobotSpec | None = None,
    **options: Any,
) -> Any:
    spec = robot_spec or robot(server)
    return build_chat_engine(spec, retriever, llm=build_robot_llm(spec), history=history, **options)


def server_usage(request: RecordedRequest) -> Usage:
    """The usage the test server reported for ``request`` (one token per word)."""
    prompt = sum(len(words(str(m["content"]))) for m in request.body["messages"])
    completion = len(words(reply(request.body["messages"])))
    return Usage(prompt, completion, prompt + completion)


def system_text(request: RecordedRequest) -> str:
    first = request.body["messages"][0]
    assert first["role"] == "system"
    return str(first["content"])


def the_turn(response: AgentChatResponse | StreamingAgentChatResponse) -> TurnInfo:
    turn = turn_info(response)
    assert turn is not None
    return turn


# --- with a chat model --------------------------------------------------------------------------


def test_condenses_with_the_history_then_answers_from_the_context(server: OpenAIServer) -> None:
    retriever = FixedRetriever(LEAVE)
    engine = engine_for(server, retriever, history=HISTORY)
    response = engine.chat("And how many days is that?")
    assert response.response == ANSWER

    condense, answer = server.requests
    prompt = str(condense.body["messages"][-1]["content"])
    assert "user: Tell me about the leave policy." in prompt
    assert "assistant: The leave policy covers annual leave." in prompt
    assert "And how many days is that?" in prompt
    assert retriever.queries == [CONDENSED]  # retrieval used the standalone question

    system = system_text(answer)
    assert system.startswith(ROBOT_PROMPT)
    assert "Cite the passages you use by their numbers in square brackets" in system
    assert "[1] handbook.pdf, page 1, Leave > Annual\nEvery employee gets 20 days" in system
    assert "[3] handbook.pdf, page 3, Leave > Annual\nUnused leave expires" in system
    assert "document_id" not in system  # ids are not for the model
    assert [m["content"] for m in answer.body["messages"][1:]] == [
        "Tell me about the leave policy.",
        "The leave policy covers annual leave.",
        "And how many days is that?",
    ]
    assert answer.body["temperature"] == 0.2
    assert answer.body["max_tokens"] == 300

    assert [n.node.node_id for n in response.source_nodes] == ["7-1", "7-2", "7-3"]
    assert response.source_nodes[0].node.get_content() == LEAVE[0].node.get_content()
    turn = the_turn(response)
    assert condensed_question(response) == CONDENSED
    assert turn.usage == server_usage(answer)
    assert turn.condense_usage == server_usage(condense)
    assert response_usage(response) == turn.usage
    assert not turn.usage.estimated
    assert set(turn.timings) == {"condense", "retrieve"}
    assert [m.content for m in engine.chat_history][-2:] == ["And how many days is that?", ANSWER]


def test_first_question_is_not_condensed(server: OpenAIServer) -> None:
    retriever = FixedRetriever(LEAVE)
    response = engine_for(server, retriever).chat("How many days of leave do I get?")
    assert retriever.queries == ["How many days of leave do I get?"]
    (answer,) = server.requests
    assert the_turn(response).condense_usage == Usage()
    assert the_turn(response).condensed_question == "How many days of leave do I get?"
    assert the_turn(response).usage == server_usage(answer)


def test_stream_deltas_assemble_the_reply_and_usage_follows(server: OpenAIServer) -> None:
    engine = engine_for(server, FixedRetriever(LEAVE), history=HISTORY)
    response = engine.stream_chat("And how many days is that?")
    assert [n.node.node_id for n in response.source_nodes] == ["7-1", "7-2", "7-3"]
    deltas = list(response.response_gen)
    assert len(deltas) > 5
    assert "".join(deltas) == ANSWER
    _, answer = server.requests
    assert answer.body["stream"] is True
    assert answer.body["stream_options"] == {"include_usage": True}
    assert the_turn(response).usage == server_usage(answer)
    assert engine.chat_history[-1].content == ANSWER


async def test_async_chat_and_stream(server: OpenAIServer) -> None:
    engine = engine_for(server, FixedRetriever(LEAVE), history=HISTORY)
    response = await engine.achat("And how many days is that?")
    assert response.response == ANSWER
    assert len(response.source_nodes) == 3
    assert the_turn(response).usage == server_usage(server.requests[-1])

    streamed = await engine.astream_chat("And after five years?")
    deltas = [delta async for delta in streamed.async_response_gen()]
    assert "".join(deltas) == ANSWER
    assert len(deltas) > 5
    assert len(streamed.source_nodes) == 3
    turn = the_turn(streamed)
    assert turn.usage == server_usage(server.requests[-1])
    assert turn.condensed_question == CONDENSED
    # The first turn is now history: the second condense request saw it.
    assert "And how many days is that?" in str(server.requests[-2].body["messages"][-1])


def test_usage_is_estimated_when_the_provider_sends_none(server: OpenAIServer) -> None:
    spec = robot(server)
    assert spec.chat_model is not None
    llm = build_llm(spec.chat_model, temperature=0.2, max_tokens=300, include_stream_usage=False)
    engine = build_chat_engine(spec, FixedRetriever(LEAVE), llm=llm)
    response = engine.stream_chat("How many days of leave do I get?")
    assert "".join(response.response_gen) == ANSWER
    usage = the_turn(response).usage
    assert usage.estimated
    assert usage.prompt_tokens > 50
    assert usage.completion_tokens > 5


def test_context_is_cut_to_the_window_lowest_ranked_first(server: OpenAIServer) -> None:
    long_chunks = [
        chunk(i, f"Section {i} of the leave policy. " + "Leave rules apply to everyone. " * 60)
        for i in range(1, 6)
    ]
    engine = engine_for(server, FixedRetriever(long_chunks), context_window=1500)
    response = engine.chat("How many days of leave do I get?")
    (answer,) = server.requests  # one call: nothing is "refined" in further calls
    system = system_text(answer)
    kept = [n.node.node_id for n in response.source_nodes]
    assert kept == [f"7-{i}" for i in range(1, len(kept) + 1)]  # the best-ranked ones
    assert 1 <= len(kept) < 5
    for number in range(1, 6):
        assert (f"[{number}] handbook.pdf, page {number}," in system) == (number <= len(kept))
    assert the_turn(response).dropped_chunks == 5 - len(kept)
    assert the_turn(response).usage.prompt_tokens < 1500

    server.reset()
    roomy = engine_for(server, FixedRetriever(long_chunks), context_window=32000)
    assert len(roomy.chat("How many days of leave do I get?").source_nodes) == 5
    assert "[5] handbook.pdf, page 5," in system_text(server.requests[0])


def test_a_single_chunk_larger_than_the_window_is_truncated(server: OpenAIServer) -> None:
    huge = chunk(1, "Leave rules apply to everyone. " * 800)  # ~5,000 tokens
    engine = engine_for(server, FixedRetriever([huge, *LEAVE]), context_window=1500)
    response = engine.chat("How many days of leave do I get?")
    (answer,) = server.requests
    assert [n.node.node_id for n in response.source_nodes] == ["7-1"]
    assert "[1] handbook.pdf, page 1," in system_text(answer)
    assert len(words(system_text(answer))) < 1500


def test_a_window_too_small_for_any_prompt_is_refused(server: OpenAIServer) -> None:
    with pytest.raises(ModelError, match="leaves no room for a prompt"):
        engine_for(server, FixedRetriever(LEAVE), context_window=400)


def test_chinese_question_is_answered_in_chinese(server: OpenAIServer) -> None:
    engine = engine_for(server, FixedRetriever(LEAVE))
    engine.chat("年假有几天？")
    assert "请用中文回答" in system_text(server.requests[-1])
    assert CHINESE_ANSWER.strip() in system_text(server.requests[-1])
    engine.chat("How many days of leave do I get?")
    assert "请用中文回答" not in system_text(server.requests[-1])
    assert is_chinese("RAG 是什么？")
    assert not is_chinese("What does 年假 mean?")


def test_nothing_retrieved_answers_without_a_call(server: OpenAIServer) -> None:
    engine = engine_for(server, FixedRetriever([]))
    response = engine.chat("How many days of leave do I get?")
    assert response.response == NOTHING_FOUND[False]
    assert response.source_nodes == []
    streamed = engine.stream_chat("年假有几天？")
    assert "".join(streamed.response_gen) == NOTHING_FOUND[True]
    assert the_turn(streamed).usage == Usage()
    # Only the second turn's condense call (it has history now); no answer call at all.
    assert len(server.requests) == 1


def test_braces_in_prompts_and_history_are_sent_verbatim(server: OpenAIServer) -> None:
    history = [
        ChatMessage(role=MessageRole.USER, content='Format as {"days": n}, please.'),
        ChatMessage(role=MessageRole.ASSISTANT, content="Sure: {days}"),
    ]
    spec = robot(server, system_prompt='Reply in JSON like {"answer": "..."}.')
    engine = engine_for(server, FixedRetriever(LEAVE), history=history, robot_spec=spec)
    engine.chat("How many days?")
    answer = server.requests[-1]
    assert system_text(answer).startswith('Reply in JSON like {"answer": "..."}.')
    contents = [m["content"] for m in answer.body["messages"][1:]]
    assert contents == ['Format as {"days": n}, please.', "Sure: {days}", "How many days?"]


def test_model_failures_surface_as_model_errors(server: OpenAIServer) -> None:
    spec = robot(server)
    assert spec.chat_model is not None
    llm = build_llm(spec.chat_model, temperature=0.2, max_tokens=300, max_retries=0)
    engine = build_chat_engine(spec, FixedRetriever(LEAVE), llm=llm)
    server.fail(500, times=100)
    with pytest.raises(ModelError, match="HTTP 500"):
        engine.chat("How many days of leave do I get?")


@pytest.mark.filterwarnings("ignore::pytest.PytestUnhandledThreadExceptionWarning")
async def test_stream_failures_surface_as_model_errors(server: OpenAIServer) -> None:
    # LlamaIndex's writer thread re-raises after handing the error to the reader: the warning
    # about it is expected.
    spec = robot(server)
    assert spec.chat_model is not None
    llm = build_llm(spec.chat_model, temperature=0.2, max_tokens=300, max_retries=0)
    server.fail(500, times=100)
    engine = build_chat_engine(spec, FixedRetriever(LEAVE), llm=llm)
    with pytest.raises(ModelError, match="HTTP 500"):
        list(engine.stream_chat("How many days of leave do I get?").response_gen)
    # The answering call fails inside the stream; with history, the condensing call fails
    # before it starts, when astream_chat is awaited.
    fresh = build_chat_engine(spec, FixedRetriever(LEAVE), llm=llm)
    streamed = await fresh.astream_chat("How many days of leave do I get?")
    with pytest.raises(ModelError, match="HTTP 500"):
        async for _ in streamed.async_response_gen():
            pass
    with pytest.raises(ModelError, match="HTTP 500"):
        await fresh.astream_chat("And after five years?")


def test_vector_index_retriever_with_the_packaged_model(server: OpenAIServer) -> None:
    nodes = [
        TextNode(text=text, metadata={"file_name": name})
        for name, text in [
            ("leave.md", "Employees receive twenty days of paid annual leave each year."),
            ("expenses.md", "Travel expenses are reimbursed within thirty days of the trip."),
            ("security.md", "Passwords must be rotated every ninety days."),
        ]
    ]
    embed_model = build_embedding(
        ModelSpec(provider="local", model_name=PACKAGED_EMBEDDING, model_type="embedding")
    )
    index = VectorStoreIndex(nodes, embed_model=embed_model)
    retriever = index.as_retriever(similarity_top_k=2)
    response = engine_for(server, retriever).chat("How much paid vacation do employees get?")
    assert response.source_nodes[0].node.metadata["file_name"] == "leave.md"
    assert "[1] leave.md\nEmployees receive twenty days" in system_text(server.requests[0])


# --- without a chat model -----------------------------------------------------------------------


def test_retrieval_only_answers_with_labelled_sources(openai_server: OpenAIServer) -> None:
    engine = build_chat_engine(RobotSpec(), FixedRetriever(LEAVE), llm=None, history=HISTORY)
    response = engine.chat("How many days of leave do I get?")
    assert isinstance(response, AgentChatResponse)
    assert response.response.startswith(NO_MODEL_HEADER[False])
    assert "[1] handbook.pdf, page 1, Leave > Annual\nEvery employee gets 20 days" in str(response)
    assert "[3] handbook.pdf, page 3, Leave > Annual\nUnused leave expires" in str(response)
    assert [n.node.node_id for n in response.source_nodes] == ["7-1", "7-2", "7-3"]
    assert response_usage(response) == Usage()
    assert set(the_turn(response).timings) == {"retrieve"}
    assert engine.chat_history[:2] == HISTORY
    assert engine.chat_history[-1].content == response.response

    chinese = engine.chat("年假有几天？")
    assert chinese.response.startswith(NO_MODEL_HEADER[True])
    assert "[1] handbook.pdf，第 1 页，Leave > Annual\n" in chinese.response
    assert openai_server.requests == []  # no model was asked anything


async def test_retrieval_only_streams_sync_and_async(openai_server: OpenAIServer) -> None:
    engine = build_chat_engine(RobotSpec(), FixedRetriever(LEAVE), llm=None)
    full = engine.chat("How many days of leave do I get?").response
    streamed = engine.stream_chat("How many days of leave do I get?")
    assert isinstance(streamed, StreamingAgentChatResponse)
    assert len(streamed.source_nodes) == 3
    deltas = list(streamed.response_gen)
    assert len(deltas) == 4  # the label, then one passage each
    assert "".join(deltas) == full
    assert str(streamed) == full

    astreamed = await engine.astream_chat("How many days of leave do I get?")
    assert "".join([d async for d in astreamed.async_response_gen()]) == full
    achat = await engine.achat("年假有几天？")
    assert achat.response.startswith(NO_MODEL_HEADER[True])
    assert the_turn(astreamed).usage == Usage()
    assert len(engine.chat_history) == 8
    assert openai_server.requests == []


def test_retrieval_only_with_nothing_found(openai_server: OpenAIServer) -> None:
    engine = build_chat_engine(RobotSpec(), FixedRetriever([]), llm=None)
    assert engine.chat("How many days?").response == NO_MODEL_NOTHING_FOUND[False]
    assert "".join(engine.stream_chat("年假有几天？").response_gen) == NO_MODEL_NOTHING_FOUND[True]
    assert openai_server.requests == []


def test_a_robot_without_a_chat_model_gets_no_llm() -> None:
    assert build_robot_llm(RobotSpec()) is None


def test_source_labels() -> None:
    assert source_label({"file_name": "a.pdf", "page": 3}) == "a.pdf, page 3"
    assert source_label({"file_name": "a.pdf", "page": 3}, chinese=True) == "a.pdf，第 3 页"
    assert source_label({"file_name": "b.xlsx", "sheet": "Q1", "row_start": 2, "row_end": 9}) == (
        "b.xlsx, sheet Q1, rows 2–9"
    )
    assert source_label({"file_name": "c.pptx", "slide": 4, "heading_path": "Intro"}) == (
        "c.pptx, slide 4, Intro"
    )
    assert source_label({}) == "unknown file"
