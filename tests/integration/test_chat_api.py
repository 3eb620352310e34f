"""POST /chat end to end: SSE and JSON, retrieval-only and with a chat model (the local
OpenAI-compatible test server), turns stored with contexts, usage and timings."""

from __future__ import annotations

import json
from typing import Any

from tests.conftest import Api, SignedIn
from tests.integration.test_retrieval_api import ready_kb
from tests.openai_server import DEFAULT_API_KEY, OpenAIServer


def parse_sse(text: str) -> list[tuple[str, dict[str, Any]]]:
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


async def chat_robot(api: Api, user: SignedIn, server: OpenAIServer | None) -> dict[str, Any]:
    kb = await ready_kb(api, user)
    fields: dict[str, Any] = {"knowledge_ids": [kb["id"]], "top_k": 3}
    if server is not None:
        admin = await api.admin()
        llm = await api.create_llm(
            admin,
            provider="openai-compatible",
            model_type="chat",
            model_name="test-chat",
            base_url=server.base_url,
        )
        await api.create_api_key(admin, llm["id"], api_key=DEFAULT_API_KEY)
        fields["chat_llm_id"] = llm["id"]
    return await api.create_robot(user, **fields)


async def test_streamed_answer_with_a_chat_model(api: Api, openai_server: OpenAIServer) -> None:
    user = await api.user()
    robot = await chat_robot(api, user, openai_server)
    response = await api.client.post(
        "/api/v1/chat",
        headers=user.headers,
        json={"robot_id": robot["id"], "message": "活期存款的利率是多少？"},
    )
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/event-stream")
    events = parse_sse(response.text)
    kinds = [kind for kind, _ in events]
    assert kinds[0] == "session"
    assert kinds[1] == "context"
    assert kinds[-1] == "done", events[-1]
    assert "delta" in kinds
    answer = "".join(data["text"] for kind, data in events if kind == "delta")
    assert answer
    contexts = events[1][1]["items"]
    assert any("活期存款" in c["text"] for c in contexts)
    done = events[-1][1]
    assert done["usage"]["total_tokens"] > 0
    assert done["timings_ms"]["total"] >= done["timings_ms"]["retrieval"]

    session_id = events[0][1]["session_id"]
    messages = await api.client.get(f"/api/v1/sessions/{session_id}/messages", headers=user.headers)
    stored = messages.json()["items"]
    assert [m["role"] for m in stored] == ["user", "assistant"]
    assert stored[1]["content"] == answer
    assert stored[1]["retrieved_contexts"]
    assert stored[1]["total_tokens"] == done["usage"]["total_tokens"]
    session = (await api.client.get(f"/api/v1/sessions/{session_id}", headers=user.headers)).json()
    assert session["title"] == "活期存款的利率是多少？"
    assert session["message_count"] == 2


async def test_retrieval_only_json_answer_and_feedback(api: Api) -> None:
    user = await api.user()
    robot = await chat_robot(api, user, None)
    response = await api.client.post(
        "/api/v1/chat",
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
    other = await api.user()
    foreign = await api.client.post(
        f"/api/v1/messages/{body['message_id']}/feedback",
        headers=other.headers,
        json={"feedback": 1},
    )
    assert foreign.status_code == 404
