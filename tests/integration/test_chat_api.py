"""POST /chat end to end: SSE and JSON, retrieval-only and with a chat model (the local
OpenAI-compatible test server), turns stored with contexts, usage and timings, sessions created
and reused with their history, sequence numbers under concurrent requests, and every change to
a robot (prompt, knowledge bases, model, key) taking effect on the next question."""

from __future__ import annotations

import asyncio
import json
import time
from dataclasses import dataclass
from typing import Any

from tests.conftest import ROBOTS, Api, SignedIn, assert_invalid
from tests.integration.test_documents import new_kb, upload, wait_done
from tests.integration.test_retrieval_api import ready_kb
from tests.openai_server import DEFAULT_API_KEY, OpenAIServer, RecordedRequest, words

CHAT = "/api/v1/chat"
Events = list[tuple[str, dict[str, Any]]]

SESSION_FIELDS = {"session_id", "user_message_id", "message_id", "created_session"}
CONTEXT_FIELDS = {
    "n",
    "node_id",
    "text",
    "knowledge_id",
    "document_id",
    "file_name",
    "page",
    "heading_path",
    "vector_rank",
    "vector_score",
    "keyword_rank",
    "keyword_score",
    "fused_score",
    "rerank_score",
    "score",
}
USAGE_FIELDS = {"prompt_tokens", "completion_tokens", "total_tokens", "estimated"}
TIMING_FIELDS = {"retrieval", "condense", "generation", "first_token", "total"}
REPLY_FIELDS = {
    "session_id",
    "user_message_id",
    "message_id",
    "answer",
    "contexts",
    "usage",
    "timings_ms",
}
# The start of indexes.chat.CONDENSE_PROMPT: how a condense request is told from an answer.
CONDENSE_START = "Rewrite the user's last message as a standalone question"


def parse_sse(text: str) -> Events:
    events = []
    for block in text.replace("\r\n", "\n").strip().split("\n\n"):
        kind, data = "message", []
        for line in block.splitlines():
            if line.startswith("event:"):
                kind = line[6:].strip()
            elif line.startswith("data:"):
                data.append(line[5:].strip())
        if data:
            events.append((kind, json.loads("\n".join(data))))
    return events


@dataclass
class ChatModel:
    """A chat model registered through the API, with its one API key."""

    admin: SignedIn
    llm: dict[str, Any]
    key: dict[str, Any]


async def chat_model(
    api: Api,
    server: OpenAIServer,
    *,
    admin: SignedIn | None = None,
    model_name: str = "test-chat",
    api_key: str = DEFAULT_API_KEY,
) -> ChatModel:
    admin = admin or await api.admin()
    llm = await api.create_llm(
        admin,
        provider="openai-compatible",
        model_type="chat",
        model_name=model_name,
        base_url=server.base_url,
    )
    key = await api.create_api_key(admin, llm["id"], api_key=api_key)
    return ChatModel(admin, llm, key)


async def chat_robot(
    api: Api,
    user: SignedIn,
    server: OpenAIServer | None,
    *,
    model: ChatModel | None = None,
    **fields: Any,
) -> dict[str, Any]:
    """A robot of ``user`` over a new ready knowledge base; with ``server``, its chat model is
    one registered there (``model``, else a new one)."""
    kb = await ready_kb(api, user)
    values: dict[str, Any] = {"knowledge_ids": [kb["id"]], "top_k": 3, **fields}
    if server is not None:
        model = model or await chat_model(api, server)
        values["chat_llm_id"] = model.llm["id"]
    return await api.create_robot(user, **values)


async def ask(
    api: Api,
    user: SignedIn,
    robot_id: int,
    message: str,
    *,
    session_id: str | None = None,
) -> Events:
    """POST /chat in SSE mode; the response must be an event stream."""
    body: dict[str, Any] = {"robot_id": robot_id, "message": message}
    if session_id is not None:
        body["session_id"] = session_id
    response = await api.client.post(CHAT, headers=user.headers, json=body)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/event-stream")
    return parse_sse(response.text)


def kinds(events: Events) -> list[str]:
    return [kind for kind, _ in events]


def the(events: Events, kind: str) -> dict[str, Any]:
    """The data of the one event of this kind."""
    found = [data for k, data in events if k == kind]
    assert len(found) == 1, events
    return found[0]


def answer_of(events: Events) -> str:
    return "".join(data["text"] for kind, data in events if kind == "delta")


def assert_complete(events: Events) -> None:
    """session → context → delta… → done, nothing else, nothing out of order."""
    names = kinds(events)
    assert names[:2] == ["session", "context"], names
    assert names[-1] == "done", events[-1]
    assert len(names) > 3, names
    assert set(names[2:-1]) == {"delta"}, names


def completions(server: OpenAIServer) -> list[RecordedRequest]:
    return server.requests_to("/chat/completions")


def is_condense(request: RecordedRequest) -> bool:
    return not request.body.get("stream") and CONDENSE_START in json.dumps(
        request.body["messages"], ensure_ascii=False
    )


def answer_requests(server: OpenAIServer) -> list[RecordedRequest]:
    """The streamed answering calls (not the condensing ones)."""
    return [r for r in completions(server) if r.body.get("stream")]


def condensing_to(question: str) -> Any:
    """A test-server reply: ``question`` for a condense request, an echo otherwise."""

    def reply(messages: list[dict[str, Any]]) -> str:
        text = str(messages[-1].get("content") or "")
        return question if CONDENSE_START in text else f"Echo: {text}"

    return reply


def server_usage(request: RecordedRequest, reply: str) -> int:
    """The tokens the test server reports for a chat request and its reply."""
    messages = request.body["messages"]
    return sum(len(words(str(m.get("content") or ""))) for m in messages) + len(words(reply))


async def messages_of(api: Api, user: SignedIn, session_id: str) -> list[dict[str, Any]]:
    response = await api.client.get(f"/api/v1/sessions/{session_id}/messages", headers=user.headers)
    assert response.status_code == 200, response.text
    items: list[dict[str, Any]] = response.json()["items"]
    return items


async def session_of(api: Api, user: SignedIn, session_id: str) -> dict[str, Any]:
    response = await api.client.get(f"/api/v1/sessions/{session_id}", headers=user.headers)
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def assert_stored_answer(stored: dict[str, Any], events: Events) -> None:
    """The stored assistant turn is exactly what the stream reported."""
    start, done = the(events, "session"), the(events, "done")
    contexts = the(events, "context")["items"]
    assert stored["role"] == "assistant"
    assert stored["message_id"] == start["message_id"] == done["message_id"]
    assert stored["content"] == answer_of(events)
    assert stored["retrieved_contexts"] == contexts
    documents = sorted({c["document_id"] for c in contexts})
    assert documents, contexts
    assert stored["referenced_doc_ids"] == documents
    usage, timings = done["usage"], done["timings_ms"]
    assert stored["prompt_tokens"] == usage["prompt_tokens"]
    assert stored["completion_tokens"] == usage["completion_tokens"]
    assert stored["total_tokens"] == usage["total_tokens"]
    assert stored["retrieval_time_ms"] == timings["retrieval"]
    assert stored["generation_time_ms"] == timings["generation"]
    assert stored["total_time_ms"] == timings["total"]


# --- protocol and storage -----------------------------------------------------------------------


async def test_sse_protocol_storage_and_session_reuse(
    api: Api, openai_server: OpenAIServer
) -> None:
    openai_server.chat_reply = condensing_to("活期存款的结息日是哪一天？")
    user = await api.user()
    robot = await chat_robot(api, user, openai_server)

    first = await ask(api, user, robot["id"], "活期存款的利率是多少？")
    assert_complete(first)
    start = the(first, "session")
    assert set(start) == SESSION_FIELDS
    assert start["created_session"] is True
    session_id = start["session_id"]
    contexts = the(first, "context")["items"]
    assert contexts
    for item in contexts:
        assert set(item) == CONTEXT_FIELDS
    assert [c["n"] for c in contexts] == list(range(1, len(contexts) + 1))
    best = contexts[0]
    assert "活期存款" in best["text"]
    assert best["file_name"] == "银行业务.txt"
    assert best["knowledge_id"] == robot["knowledge_ids"][0]
    # Hybrid retrieval: the best chunk was found by both legs, each with its rank and score.
    assert best["vector_rank"] is not None
    assert best["vector_score"] is not None
    assert best["keyword_rank"] is not None
    assert best["keyword_score"] is not None
    assert best["fused_score"] is not None
    assert best["score"] is not None
    assert answer_of(first) == "Echo: 活期存款的利率是多少？"
    done = the(first, "done")
    assert set(done) == {"message_id", "session_id", "usage", "timings_ms"}
    assert done["session_id"] == session_id
    assert done["message_id"] == start["message_id"]
    assert set(done["usage"]) == USAGE_FIELDS
    usage = done["usage"]
    assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"] > 0
    assert usage["estimated"] is False  # the server reports usage in its last stream chunk
    assert set(done["timings_ms"]) == TIMING_FIELDS
    timings = done["timings_ms"]
    assert timings["condense"] == 0  # nothing to condense in a new session
    assert timings["first_token"] is not None
    assert 0 <= timings["retrieval"] <= timings["first_token"] <= timings["total"]
    # A new session has no history: no condense call, one streamed answer.
    assert [r.body.get("stream") for r in completions(openai_server)] == [True]
    opened = await session_of(api, user, session_id)
    assert opened["title"] == "活期存款的利率是多少？"
    assert opened["message_count"] == 2
    assert opened["last_message_at"] is not None

    openai_server.reset()
    second = await ask(api, user, robot["id"], "那结息日呢？", session_id=session_id)
    assert_complete(second)
    assert the(second, "session")["session_id"] == session_id
    assert the(second, "session")["created_session"] is False
    # The history went to the model: the condense request holds the previous turn...
    condense = [r for r in completions(openai_server) if is_condense(r)]
    assert len(condense) == 1
    prompt = condense[0].body["messages"][-1]["content"]
    assert "活期存款的利率是多少？" in prompt
    assert "Echo: 活期存款的利率是多少？" in prompt
    assert "那结息日呢？" in prompt
    # ...and the answer request holds it as messages before the new question.
    (answer,) = answer_requests(openai_server)
    turns = [(m["role"], m["content"]) for m in answer.body["messages"][1:]]
    assert turns == [
        ("user", "活期存款的利率是多少？"),
        ("assistant", "Echo: 活期存款的利率是多少？"),
        ("user", "那结息日呢？"),
    ]
    # Retrieval used the condensed question.
    assert "结息日" in the(second, "context")["items"][0]["text"]
    assert the(second, "done")["timings_ms"]["condense"] >= 0

    stored = await messages_of(api, user, session_id)
    assert [m["role"] for m in stored] == ["user", "assistant", "user", "assistant"]
    assert [m["sequence"] for m in stored] == [1, 2, 3, 4]
    assert stored[0]["message_id"] == start["user_message_id"]
    assert stored[0]["content"] == "活期存款的利率是多少？"
    assert stored[2]["message_id"] == the(second, "session")["user_message_id"]
    assert stored[2]["content"] == "那结息日呢？"
    for question in (stored[0], stored[2]):
        assert question["retrieved_contexts"] is None
        assert question["total_tokens"] == 0
    assert_stored_answer(stored[1], first)
    assert_stored_answer(stored[3], second)
    # The second turn's usage is the condense call's plus the answer's, as the server counted.
    counted = server_usage(condense[0], "活期存款的结息日是哪一天？") + server_usage(
        answer, "Echo: 那结息日呢？"
    )
    assert stored[3]["prompt_tokens"] + stored[3]["completion_tokens"] == counted
    session = await session_of(api, user, session_id)
    assert session["message_count"] == 4
    assert session["title"] == "活期存款的利率是多少？"  # from the first question, kept
    assert session["last_message_at"] >= opened["last_message_at"]


async def test_json_mode_answers_in_one_reply(api: Api, openai_server: OpenAIServer) -> None:
    user = await api.user()
    robot = await chat_robot(api, user, openai_server)
    response = await api.client.post(
        CHAT,
        headers=user.headers,
        json={"robot_id": robot["id"], "message": "信用卡年费怎么收？", "stream": False},
    )
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("application/json")
    body = response.json()
    assert set(body) == REPLY_FIELDS
    assert body["answer"] == "Echo: 信用卡年费怎么收？"
    assert body["contexts"]
    assert set(body["contexts"][0]) == CONTEXT_FIELDS
    assert "年费" in body["contexts"][0]["text"]
    assert set(body["usage"]) == USAGE_FIELDS
    assert body["usage"]["total_tokens"] > 0
    assert set(body["timings_ms"]) == TIMING_FIELDS
    stored = await messages_of(api, user, body["session_id"])
    assert [m["message_id"] for m in stored] == [body["user_message_id"], body["message_id"]]
    assert stored[1]["content"] == body["answer"]
    assert stored[1]["retrieved_contexts"] == body["contexts"]
    assert stored[1]["total_tokens"] == body["usage"]["total_tokens"]


async def test_session_of_another_robot_is_refused(api: Api) -> None:
    user = await api.user()
    robot = await api.create_robot(user)
    other = await api.create_robot(user, name="other")
    chat = await api.chat_session(user, other["id"])
    response = await api.client.post(
        CHAT,
        headers=user.headers,
        json={"robot_id": robot["id"], "session_id": chat.session_id, "message": "你好"},
    )
    assert_invalid(response, "session_id")
    assert (await session_of(api, user, chat.session_id))["message_count"] == 0
    assert await messages_of(api, user, chat.session_id) == []


async def test_concurrent_questions_in_one_session(api: Api, openai_server: OpenAIServer) -> None:
    user = await api.user()
    robot = await chat_robot(api, user, openai_server)
    session_id = (await api.created("/api/v1/sessions", user, {"robot_id": robot["id"]}))[
        "session_id"
    ]
    questions = [f"第{i}个问题：活期存款的利率是多少？" for i in range(6)]
    # Every answer waits at the provider until all six questions are in: the requests overlap
    # for certain, and all six store their turns while the others are in flight.
    openai_server.hang(30, times=len(questions), path="/chat/completions")

    def one(question: str, stream: bool) -> dict[str, Any]:
        # The test client hands each request to the app's event loop and blocks its caller
        # until the answer is complete: one thread per request is what makes them concurrent.
        response = asyncio.run(
            api.client.post(
                CHAT,
                headers=user.headers,
                json={
                    "robot_id": robot["id"],
                    "session_id": session_id,
                    "message": question,
                    "stream": stream,
                },
            )
        )
        assert response.status_code == 200, response.text
        if not stream:
            reply: dict[str, Any] = response.json()
            return reply
        events = parse_sse(response.text)
        assert_complete(events)
        return {**the(events, "session"), "answer": answer_of(events)}

    pending = asyncio.gather(
        *(asyncio.to_thread(one, q, i % 2 == 0) for i, q in enumerate(questions))
    )
    deadline = time.monotonic() + 60
    while len(completions(openai_server)) < len(questions) and not pending.done():
        assert time.monotonic() < deadline, "the six questions never reached the provider"
        await asyncio.sleep(0.05)
    openai_server.release()
    replies = await pending

    stored = await messages_of(api, user, session_id)
    assert [m["sequence"] for m in stored] == list(range(1, 13))
    assert [m["role"] for m in stored] == ["user"] * 6 + ["assistant"] * 6
    by_id = {m["message_id"]: m for m in stored}
    assert len(by_id) == 12
    for question, reply in zip(questions, replies, strict=True):
        assert reply["session_id"] == session_id
        assert by_id[reply["user_message_id"]]["content"] == question
        assert by_id[reply["message_id"]]["content"] == reply["answer"] == f"Echo: {question}"
    # None of the six saw another's unanswered question as history.
    for request in completions(openai_server):
        assert [m["role"] for m in request.body["messages"]] == ["system", "user"]
    session = await session_of(api, user, session_id)
    assert session["message_count"] == 12
    assert session["title"] in questions


# --- changes to the robot take effect on the next question --------------------------------------


async def test_new_system_prompt_reaches_the_model(api: Api, openai_server: OpenAIServer) -> None:
    user = await api.user()
    robot = await chat_robot(api, user, openai_server, system_prompt="你是银行客服小蓝。")
    assert_complete(await ask(api, user, robot["id"], "活期存款的利率是多少？"))
    system = answer_requests(openai_server)[-1].body["messages"][0]
    assert system["role"] == "system"
    assert "你是银行客服小蓝。" in system["content"]

    response = await api.client.patch(
        f"{ROBOTS}/{robot['id']}",
        headers=user.headers,
        json={"system_prompt": "你是理财顾问小橙，回答要简短。"},
    )
    assert response.status_code == 200, response.text
    assert_complete(await ask(api, user, robot["id"], "活期存款的利率是多少？"))
    system = answer_requests(openai_server)[-1].body["messages"][0]
    assert "你是理财顾问小橙，回答要简短。" in system["content"]
    assert "小蓝" not in system["content"]


async def test_unbound_knowledge_base_stops_answering(
    api: Api, openai_server: OpenAIServer
) -> None:
    user = await api.user()
    pets = await new_kb(api, user, chunk_size=100, chunk_overlap=0)
    document = (
        await upload(
            api,
            user,
            pets["id"],
            ("宠物制度.txt", "宠物日\n\n员工每周五可以带宠物猫狗来办公室上班。\n".encode()),
        )
    ).json()["items"][0]
    assert (await wait_done(api, user, document["id"]))["status"] == "completed"
    robot = await chat_robot(api, user, openai_server)
    banking = robot["knowledge_ids"][0]
    response = await api.client.patch(
        f"{ROBOTS}/{robot['id']}",
        headers=user.headers,
        json={"knowledge_ids": [banking, pets["id"]]},
    )
    assert response.status_code == 200, response.text

    question = "可以带宠物猫狗来办公室吗？"
    before = the(await ask(api, user, robot["id"], question), "context")["items"]
    assert before[0]["knowledge_id"] == pets["id"]
    assert before[0]["file_name"] == "宠物制度.txt"

    response = await api.client.patch(
        f"{ROBOTS}/{robot['id']}", headers=user.headers, json={"knowledge_ids": [banking]}
    )
    assert response.status_code == 200, response.text
    after = await ask(api, user, robot["id"], question)
    assert_complete(after)
    items = the(after, "context")["items"]
    assert items
    assert {c["knowledge_id"] for c in items} == {banking}
    system = answer_requests(openai_server)[-1].body["messages"][0]["content"]
    assert "宠物制度.txt" not in system
    assert "宠物日" not in system


async def test_changed_then_disabled_chat_model(api: Api, openai_server: OpenAIServer) -> None:
    user = await api.user()
    first = await chat_model(api, openai_server)
    robot = await chat_robot(api, user, openai_server, model=first)
    assert_complete(await ask(api, user, robot["id"], "信用卡年费怎么收？"))
    assert answer_requests(openai_server)[-1].body["model"] == "test-chat"

    second = await chat_model(api, openai_server, admin=first.admin, model_name="test-chat-2")
    response = await api.client.patch(
        f"{ROBOTS}/{robot['id']}", headers=user.headers, json={"chat_llm_id": second.llm["id"]}
    )
    assert response.status_code == 200, response.text
    assert_complete(await ask(api, user, robot["id"], "信用卡年费怎么收？"))
    assert answer_requests(openai_server)[-1].body["model"] == "test-chat-2"

    # An administrator disables the model: the robot answers with passages, calling nobody.
    response = await api.client.patch(
        f"/api/v1/llms/{second.llm['id']}", headers=first.admin.headers, json={"status": 0}
    )
    assert response.status_code == 200, response.text
    calls = len(completions(openai_server))
    events = await ask(api, user, robot["id"], "信用卡年费怎么收？")
    assert_complete(events)
    assert answer_of(events).startswith("该机器人未配置对话模型")
    assert the(events, "done")["usage"]["total_tokens"] == 0
    assert len(completions(openai_server)) == calls


async def test_rotated_api_key_is_used(api: Api, openai_server: OpenAIServer) -> None:
    user = await api.user()
    model = await chat_model(api, openai_server)
    robot = await chat_robot(api, user, openai_server, model=model)
    assert_complete(await ask(api, user, robot["id"], "信用卡年费怎么收？"))
    assert completions(openai_server)[-1].key_ok is True

    # The provider revokes the old key: answers fail until the key is rotated here too.
    openai_server.api_key = "sk-rotated-4f1c2a9e"
    failed = await ask(api, user, robot["id"], "信用卡年费怎么收？")
    assert kinds(failed)[-1] == "error"
    assert completions(openai_server)[-1].key_ok is False

    response = await api.client.patch(
        f"/api/v1/apikeys/{model.key['id']}",
        headers=model.admin.headers,
        json={"api_key": "sk-rotated-4f1c2a9e"},
    )
    assert response.status_code == 200, response.text
    assert_complete(await ask(api, user, robot["id"], "信用卡年费怎么收？"))
    assert completions(openai_server)[-1].key_ok is True


# --- retrieval-only robots ----------------------------------------------------------------------


async def test_retrieval_only_answer_in_chinese(api: Api) -> None:
    user = await api.user()
    robot = await chat_robot(api, user, None)
    events = await ask(api, user, robot["id"], "信用卡年费怎么收？")
    assert_complete(events)
    answer = answer_of(events)
    assert answer.startswith("该机器人未配置对话模型，以下是最相关的段落：")
    assert "[1] 银行业务.txt" in answer
    assert "年费" in answer
    contexts = the(events, "context")["items"]
    assert contexts
    assert "年费" in contexts[0]["text"]
    done = the(events, "done")
    assert done["usage"] == {
        "prompt_tokens": 0,
        "completion_tokens": 0,
        "total_tokens": 0,
        "estimated": False,
    }
    assert done["timings_ms"]["condense"] == 0
    stored = await messages_of(api, user, the(events, "session")["session_id"])
    assert [m["role"] for m in stored] == ["user", "assistant"]
    assert_stored_answer(stored[1], events)

    english = await ask(api, user, robot["id"], "How many days of annual leave do employees get?")
    assert answer_of(english).startswith("No chat model is configured for this robot")
    assert "handbook.md" in answer_of(english)


async def test_retrieval_only_with_nothing_to_retrieve(api: Api) -> None:
    user = await api.user()
    robot = await api.create_robot(user)  # no knowledge base at all
    events = await ask(api, user, robot["id"], "信用卡年费怎么收？")
    assert_complete(events)
    assert the(events, "context")["items"] == []
    assert answer_of(events) == "该机器人未配置对话模型，知识库中也没有与该问题相关的段落。"
    stored = await messages_of(api, user, the(events, "session")["session_id"])
    assert stored[1]["retrieved_contexts"] is None
    assert stored[1]["referenced_doc_ids"] is None


async def test_retrieval_only_json_answer_and_feedback(api: Api) -> None:
    user = await api.user()
    robot = await chat_robot(api, user, None)
    response = await api.client.post(
        CHAT,
        headers=user.headers,
        json={"robot_id": robot["id"], "message": "信用卡年费怎么收？", "stream": False},
    )
    assert response.status_code == 200, response.text
    body = response.json()
    assert "年费" in body["answer"]
    assert body["usage"]["total_tokens"] == 0
    feedback = await api.client.post(
        f"/api/v1/messages/{body['message_id']}/feedback",
        headers=user.headers,
        json={"feedback": -1, "comment": "太简略"},
    )
    assert feedback.status_code == 200, feedback.text
    assert feedback.json()["feedback"] == -1
