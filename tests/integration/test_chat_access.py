"""Who may ask which robot, in which session, and rate which answer: POST /chat and
POST /messages/{id}/feedback refuse what is not the caller's (404, like a missing resource),
keep sessions private to the asker, and validate their bodies (422 naming the field)."""

from __future__ import annotations

from typing import Any

from tests.conftest import (
    ROBOTS,
    Api,
    SignedIn,
    assert_invalid,
    assert_problem,
    error_fields,
)
from tests.integration.test_chat_api import (
    CHAT,
    ask,
    assert_complete,
    chat_robot,
    messages_of,
    session_of,
    the,
)


def feedback_url(message_id: str) -> str:
    return f"/api/v1/messages/{message_id}/feedback"


async def chat(api: Api, user: SignedIn, **body: Any) -> Any:
    return await api.client.post(CHAT, headers=user.headers, json=body)


async def session_count(api: Api, user: SignedIn) -> int:
    response = await api.client.get("/api/v1/sessions", headers=user.headers)
    assert response.status_code == 200, response.text
    total: int = response.json()["total"]
    return total


async def answered(api: Api, user: SignedIn) -> dict[str, Any]:
    """A retrieval-only answer (JSON mode) in a new session of ``user``."""
    robot = await api.create_robot(user)
    response = await chat(api, user, robot_id=robot["id"], message="你好", stream=False)
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


async def test_a_token_is_required(api: Api) -> None:
    user = await api.user()
    robot = await api.create_robot(user)
    assert_problem(await api.client.post(CHAT, json={"robot_id": robot["id"], "message": "x"}), 401)
    reply = await answered(api, user)
    response = await api.client.post(feedback_url(reply["message_id"]), json={"feedback": 1})
    assert_problem(response, 401)


async def test_robots_the_caller_cannot_use(api: Api) -> None:
    owner, asker = await api.user(), await api.user()
    private = await api.create_robot(owner)
    disabled_public = await api.create_robot(owner, is_public=True, status=0)
    own_disabled = await api.create_robot(asker, status=0)
    for robot_id in (private["id"], disabled_public["id"], own_disabled["id"], 10**9):
        for stream in (True, False):
            response = await chat(api, asker, robot_id=robot_id, message="你好", stream=stream)
            assert_problem(response, 404, f"robot {robot_id} not found")
    # The owner of a disabled robot cannot chat with it either.
    response = await chat(api, owner, robot_id=disabled_public["id"], message="你好")
    assert_problem(response, 404, "not found")
    assert await session_count(api, asker) == 0
    assert await session_count(api, owner) == 0


async def test_public_robot_of_another_user(api: Api) -> None:
    owner, asker = await api.user(), await api.user()
    robot = await chat_robot(api, owner, None, is_public=True)
    events = await ask(api, asker, robot["id"], "信用卡年费怎么收？")
    assert_complete(events)
    # The owner's knowledge base answered...
    contexts = the(events, "context")["items"]
    assert contexts
    assert {c["knowledge_id"] for c in contexts} == set(robot["knowledge_ids"])
    # ...and the session is the asker's alone.
    session_id = the(events, "session")["session_id"]
    assert (await session_of(api, asker, session_id))["robot_id"] == robot["id"]
    assert [m["role"] for m in await messages_of(api, asker, session_id)] == ["user", "assistant"]
    owner_view = await api.client.get(f"/api/v1/sessions/{session_id}", headers=owner.headers)
    assert_problem(owner_view, 404)
    assert await session_count(api, owner) == 0

    # Once the owner makes it private again, the asker's session cannot go on.
    response = await api.client.patch(
        f"{ROBOTS}/{robot['id']}", headers=owner.headers, json={"is_public": False}
    )
    assert response.status_code == 200, response.text
    response = await chat(
        api, asker, robot_id=robot["id"], session_id=session_id, message="白金卡呢？"
    )
    assert_problem(response, 404, f"robot {robot['id']} not found")
    assert (await session_of(api, asker, session_id))["message_count"] == 2


async def test_someone_elses_session(api: Api) -> None:
    owner, intruder = await api.user(), await api.user()
    robot = await api.create_robot(owner, is_public=True)
    events = await ask(api, owner, robot["id"], "你好")
    session_id = the(events, "session")["session_id"]
    for stream in (True, False):
        response = await chat(
            api,
            intruder,
            robot_id=robot["id"],
            session_id=session_id,
            message="我能看到别人的对话吗？",
            stream=stream,
        )
        assert_problem(response, 404, f"session {session_id} not found")
    response = await chat(
        api, owner, robot_id=robot["id"], session_id="0" * 32, message="你好", stream=False
    )
    assert_problem(response, 404, "not found")
    assert (await session_of(api, owner, session_id))["message_count"] == 2
    assert await session_count(api, intruder) == 0


async def test_chat_body_is_validated(api: Api) -> None:
    user = await api.user()
    robot = await api.create_robot(user)
    assert_invalid(await chat(api, user, robot_id=robot["id"], message=""), "message")
    assert_invalid(await chat(api, user, robot_id=robot["id"], message="x" * 8001), "message")
    assert_invalid(await chat(api, user, message="你好"), "robot_id")
    assert_invalid(await chat(api, user, robot_id=0, message="你好"), "robot_id")
    assert_invalid(
        await chat(api, user, robot_id=robot["id"], session_id="", message="x"), "session_id"
    )
    assert_invalid(
        await chat(api, user, robot_id=robot["id"], message="x", stream="sometimes"), "stream"
    )
    assert_invalid(await chat(api, user, robot_id=robot["id"], message="x", model="gpt"), "model")
    assert await session_count(api, user) == 0


async def test_feedback_on_answers(api: Api) -> None:
    user = await api.user()
    reply = await answered(api, user)
    url = feedback_url(reply["message_id"])

    liked = await api.client.post(url, headers=user.headers, json={"feedback": 1})
    assert liked.status_code == 200, liked.text
    assert liked.json()["message_id"] == reply["message_id"]
    assert liked.json()["feedback"] == 1
    disliked = await api.client.post(
        url, headers=user.headers, json={"feedback": -1, "comment": "没有回答我的问题"}
    )
    assert disliked.status_code == 200, disliked.text
    assert disliked.json()["feedback"] == -1
    assert disliked.json()["feedback_comment"] == "没有回答我的问题"
    stored = await messages_of(api, user, reply["session_id"])
    assert (stored[1]["feedback"], stored[1]["feedback_comment"]) == (-1, "没有回答我的问题")
    assert stored[0]["feedback"] is None

    # A question is not rated.
    question = await api.client.post(
        feedback_url(reply["user_message_id"]), headers=user.headers, json={"feedback": 1}
    )
    problem = assert_invalid(question, "message_id")
    assert "answers" in problem["detail"]

    for value in (0, 2, "1", "good", None):
        assert_invalid(
            await api.client.post(url, headers=user.headers, json={"feedback": value}), "feedback"
        )
    assert_invalid(await api.client.post(url, headers=user.headers, json={}), "feedback")
    too_long = {"feedback": 1, "comment": "长" * 501}
    assert_invalid(await api.client.post(url, headers=user.headers, json=too_long), "comment")
    unknown = await api.client.post(url, headers=user.headers, json={"feedback": 1, "stars": 5})
    assert "stars" in error_fields(assert_problem(unknown, 422))
    # The refusals changed nothing.
    stored = await messages_of(api, user, reply["session_id"])
    assert (stored[1]["feedback"], stored[1]["feedback_comment"]) == (-1, "没有回答我的问题")


async def test_feedback_on_someone_elses_answer(api: Api) -> None:
    owner, other = await api.user(), await api.user()
    reply = await answered(api, owner)
    for message_id in (reply["message_id"], reply["user_message_id"]):
        response = await api.client.post(
            feedback_url(message_id), headers=other.headers, json={"feedback": -1}
        )
        assert_problem(response, 404, f"message {message_id} not found")
    admin = await api.admin()  # conversations are private from administrators too
    response = await api.client.post(
        feedback_url(reply["message_id"]), headers=admin.headers, json={"feedback": 1}
    )
    assert_problem(response, 404)
    missing = await api.client.post(
        feedback_url("f" * 32), headers=owner.headers, json={"feedback": 1}
    )
    assert_problem(missing, 404, "not found")
    stored = await messages_of(api, owner, reply["session_id"])
    assert stored[1]["feedback"] is None
