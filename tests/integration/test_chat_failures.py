"""POST /chat when the chat model's provider fails: a timeout, a rate limit that clears, a
persistent server error and a rejected key.

What the client sees: in SSE mode the stream starts with ``session`` (the question is stored by
then) and ends with one ``error`` event whose message a person can read and which never holds
the key; in JSON mode a 502 problem naming the session. What is stored: the question, never an
answer for it; the unanswered question stays out of the history given to the model later, so
asking again in the same session works once the provider does.
"""

from __future__ import annotations

from typing import Any

import pytest

from tests.conftest import Api, SignedIn, assert_problem, new_api_key
from tests.integration.test_chat_api import (
    CHAT,
    ask,
    assert_complete,
    chat_model,
    chat_robot,
    completions,
    kinds,
    messages_of,
    parse_sse,
    session_of,
    the,
)
from tests.openai_server import DEFAULT_API_KEY, OpenAIServer

QUESTION = "活期存款的利率是多少？"


def use_model_calls(
    monkeypatch: pytest.MonkeyPatch, api: Api, *, timeout: float | None = None, retries: int
) -> None:
    """Set models.request_timeout_seconds / models.max_retries of the running app for one test
    (the settings are read on every question)."""
    calls = api.ctx.settings.models
    monkeypatch.setattr(calls, "max_retries", retries)
    if timeout is not None:
        monkeypatch.setattr(calls, "request_timeout_seconds", timeout)


def assert_failed(events: list[tuple[str, dict[str, Any]]], *fragments: str) -> str:
    """session first, error last, no answer in between; returns the error message."""
    names = kinds(events)
    assert names[0] == "session", names
    assert names[-1] == "error", names
    assert "delta" not in names
    assert "done" not in names
    error = the(events, "error")
    assert set(error) == {"message", "message_id"}
    assert error["message_id"] == the(events, "session")["message_id"]
    message: str = error["message"]
    for fragment in fragments:
        assert fragment in message, message
    return message


async def assert_only_questions(api: Api, user: SignedIn, session_id: str, count: int) -> None:
    stored = await messages_of(api, user, session_id)
    assert [m["role"] for m in stored] == ["user"] * count
    assert all(m["content"] == QUESTION for m in stored)
    assert (await session_of(api, user, session_id))["message_count"] == count


async def assert_retry_works(
    api: Api, user: SignedIn, robot_id: int, session_id: str, server: OpenAIServer, failed: int
) -> None:
    """The same question again, in the same session: answered, and the unanswered questions
    before it are not sent to the model as history."""
    server.reset()
    events = await ask(api, user, robot_id, QUESTION, session_id=session_id)
    assert_complete(events)
    answer_request = completions(server)[-1]
    assert [m["role"] for m in answer_request.body["messages"]] == ["system", "user"]
    stored = await messages_of(api, user, session_id)
    assert [m["role"] for m in stored] == ["user"] * (failed + 1) + ["assistant"]
    assert stored[-1]["message_id"] == the(events, "done")["message_id"]
    assert (await session_of(api, user, session_id))["message_count"] == failed + 2


async def test_timeout(
    api: Api, openai_server: OpenAIServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    use_model_calls(monkeypatch, api, timeout=1.0, retries=1)
    user = await api.user()
    robot = await chat_robot(api, user, openai_server)
    openai_server.hang(30, times=2, path="/chat/completions")  # longer than every try

    events = await ask(api, user, robot["id"], QUESTION)
    openai_server.release()
    assert_failed(events, "did not answer within 1 s", "after 1 retries")
    assert len(completions(openai_server)) == 2  # the first try and the one retry
    session_id = the(events, "session")["session_id"]
    await assert_only_questions(api, user, session_id, 1)
    # Back to the default timeout: a busy test machine must not fail the retry.
    use_model_calls(monkeypatch, api, timeout=60.0, retries=1)
    await assert_retry_works(api, user, robot["id"], session_id, openai_server, failed=1)


async def test_rate_limit_is_retried(api: Api, openai_server: OpenAIServer) -> None:
    user = await api.user()
    robot = await chat_robot(api, user, openai_server)
    openai_server.fail(429, times=1, path="/chat/completions")
    events = await ask(api, user, robot["id"], QUESTION)
    assert_complete(events)
    assert [r.status for r in completions(openai_server)] == [429, 200]
    stored = await messages_of(api, user, the(events, "session")["session_id"])
    assert [m["role"] for m in stored] == ["user", "assistant"]
    assert stored[1]["content"] == f"Echo: {QUESTION}"


async def test_persistent_server_error(
    api: Api, openai_server: OpenAIServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    use_model_calls(monkeypatch, api, retries=2)
    user = await api.user()
    robot = await chat_robot(api, user, openai_server)
    openai_server.fail(500, times=100, path="/chat/completions")

    response = await api.client.post(
        CHAT, headers=user.headers, json={"robot_id": robot["id"], "message": QUESTION}
    )
    assert response.status_code == 200  # the stream had started: the error is an event
    # The server's error body echoes the key: nothing of it may reach the client.
    assert DEFAULT_API_KEY not in response.text
    events = parse_sse(response.text)
    assert_failed(events, "failed with HTTP 500", "after 2 retries", "test-chat")
    assert len(completions(openai_server)) == 3
    session_id = the(events, "session")["session_id"]

    response = await api.client.post(
        CHAT,
        headers=user.headers,
        json={
            "robot_id": robot["id"],
            "session_id": session_id,
            "message": QUESTION,
            "stream": False,
        },
    )
    problem = assert_problem(response, 502, "HTTP 500", session_id)
    assert problem["session_id"] == session_id
    assert DEFAULT_API_KEY not in response.text
    await assert_only_questions(api, user, session_id, 2)
    await assert_retry_works(api, user, robot["id"], session_id, openai_server, failed=2)


async def test_rejected_api_key(api: Api, openai_server: OpenAIServer) -> None:
    wrong = new_api_key()
    user = await api.user()
    model = await chat_model(api, openai_server, api_key=wrong)
    robot = await chat_robot(api, user, openai_server, model=model)

    events = await ask(api, user, robot["id"], QUESTION)
    message = assert_failed(events, "rejected the API key (HTTP 401)")
    assert wrong not in message
    # A rejected key is not retried: it would be rejected again.
    assert [(r.status, r.key_ok) for r in completions(openai_server)] == [(401, False)]
    session_id = the(events, "session")["session_id"]

    response = await api.client.post(
        CHAT,
        headers=user.headers,
        json={
            "robot_id": robot["id"],
            "session_id": session_id,
            "message": QUESTION,
            "stream": False,
        },
    )
    assert_problem(response, 502, "rejected the API key", session_id)
    assert wrong not in response.text
    await assert_only_questions(api, user, session_id, 2)

    fixed = await api.client.patch(
        f"/api/v1/apikeys/{model.key['id']}",
        headers=model.admin.headers,
        json={"api_key": DEFAULT_API_KEY},
    )
    assert fixed.status_code == 200, fixed.text
    await assert_retry_works(api, user, robot["id"], session_id, openai_server, failed=2)


async def test_failure_while_condensing(
    api: Api, openai_server: OpenAIServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A follow-up question fails at its first call (condensing it with the history): the
    error comes straight after ``session``, before any context."""
    use_model_calls(monkeypatch, api, retries=0)
    user = await api.user()
    robot = await chat_robot(api, user, openai_server)
    first = await ask(api, user, robot["id"], "信用卡年费怎么收？")
    assert_complete(first)
    session_id = the(first, "session")["session_id"]

    openai_server.fail(503, times=1, path="/chat/completions")
    events = await ask(api, user, robot["id"], QUESTION, session_id=session_id)
    assert kinds(events) == ["session", "error"]
    assert_failed(events, "failed with HTTP 503", "after 0 retries")
    (condense,) = completions(openai_server)[1:]
    assert not condense.body.get("stream")
    stored = await messages_of(api, user, session_id)
    assert [m["role"] for m in stored] == ["user", "assistant", "user"]

    again = await ask(api, user, robot["id"], QUESTION, session_id=session_id)
    assert_complete(again)
    # The answered turn is history; the failed question is not.
    answer_request = completions(openai_server)[-1]
    history = [(m["role"], m["content"]) for m in answer_request.body["messages"][1:]]
    assert history == [
        ("user", "信用卡年费怎么收？"),
        ("assistant", "Echo: 信用卡年费怎么收？"),
        ("user", QUESTION),
    ]
