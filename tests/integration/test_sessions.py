"""Chat sessions over HTTP, on SQLite and MariaDB: owner-only access, listing order, archive,
soft delete and message paging."""

from __future__ import annotations

import uuid
from datetime import timedelta
from typing import Any

import pytest
from sqlmodel import select
from sqlmodel.ext.asyncio.session import AsyncSession

from rag_app.db.models import ChatSession, Robot
from rag_app.db.types import utcnow
from tests.conftest import HUGE_ID, Api, SignedIn, assert_invalid, assert_problem, error_fields

URL = "/api/v1/sessions"
SESSION_FIELDS = {
    "session_id",
    "robot_id",
    "title",
    "summary",
    "message_count",
    "status",
    "is_pinned",
    "last_message_at",
    "created_at",
    "updated_at",
}
MESSAGE_FIELDS = {
    "message_id",
    "role",
    "content",
    "retrieved_contexts",
    "referenced_doc_ids",
    "prompt_tokens",
    "completion_tokens",
    "total_tokens",
    "retrieval_time_ms",
    "generation_time_ms",
    "total_time_ms",
    "feedback",
    "feedback_comment",
    "sequence",
    "created_at",
}


async def open_session(api: Api, user: SignedIn, robot: Robot, **body: Any) -> dict[str, Any]:
    response = await api.client.post(
        f"{URL}/", headers=user.headers, json={"robot_id": robot.id, **body}
    )
    assert response.status_code == 201, response.text
    result: dict[str, Any] = response.json()
    return result


async def listed(api: Api, user: SignedIn, **params: Any) -> list[str]:
    response = await api.client.get(f"{URL}/", headers=user.headers, params=params)
    assert response.status_code == 200, response.text
    return [item["session_id"] for item in response.json()["items"]]


async def test_create_and_get(api: Api) -> None:
    user = await api.user()
    robot = await api.robot(user)
    created = await open_session(api, user, robot, title="  报销流程  ")
    assert set(created) == SESSION_FIELDS
    assert created["robot_id"] == robot.id
    assert created["title"] == "报销流程"
    assert created["status"] == "active"
    assert created["message_count"] == 0
    assert created["is_pinned"] is False
    assert created["last_message_at"] is None
    assert 0 < len(created["session_id"]) <= 64

    response = await api.client.get(f"{URL}/{created['session_id']}", headers=user.headers)
    assert response.status_code == 200, response.text
    assert response.json() == created

    untitled = await open_session(api, user, robot)
    assert untitled["title"] is None
    assert untitled["session_id"] != created["session_id"]


async def test_public_robot_usable_by_others(api: Api) -> None:
    owner, other = await api.user(), await api.user()
    robot = await api.robot(owner, is_public=True)
    created = await open_session(api, other, robot)
    assert created["robot_id"] == robot.id
    # The session is the caller's, not the robot owner's.
    assert await listed(api, other) == [created["session_id"]]
    assert await listed(api, owner) == []


async def test_admin_may_use_a_private_robot(api: Api) -> None:
    owner, admin = await api.user(), await api.admin()
    robot = await api.robot(owner)
    await open_session(api, admin, robot)


@pytest.mark.parametrize(
    ("own", "fields"),
    [
        (False, {"is_public": False}),
        (False, {"is_public": True, "status": 0}),
        (True, {"status": 0}),
    ],
    ids=["private-foreign", "disabled-public", "disabled-own"],
)
async def test_unusable_robot_refused_as_missing(
    api: Api, own: bool, fields: dict[str, Any]
) -> None:
    owner, caller = await api.user(), await api.user()
    robot = await api.robot(caller if own else owner, **fields)
    response = await api.client.post(f"{URL}/", headers=caller.headers, json={"robot_id": robot.id})
    assert_problem(response, 404, f"robot {robot.id} not found")
    assert await listed(api, caller) == []


async def test_missing_robot(api: Api) -> None:
    user = await api.user()
    response = await api.client.post(f"{URL}/", headers=user.headers, json={"robot_id": 10**9})
    assert_problem(response, 404, f"robot {10**9} not found")


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"title": "x"}, "robot_id"),
        ({"robot_id": "many"}, "robot_id"),
        ({"robot_id": 1, "title": "x" * 201}, "title"),
        ({"robot_id": 1, "title": "   "}, "title"),
        ({"robot_id": 1, "user_id": 1}, "user_id"),
    ],
    ids=["missing", "not-int", "title-too-long", "title-blank", "unknown-field"],
)
async def test_create_validation(api: Api, body: dict[str, Any], field: str) -> None:
    user = await api.user()
    response = await api.client.post(f"{URL}/", headers=user.headers, json=body)
    problem = assert_problem(response, 422, field)
    assert field in error_fields(problem)


async def test_update_rename_pin_archive_unarchive(api: Api) -> None:
    user = await api.user()
    robot = await api.robot(user)
    sid = (await open_session(api, user, robot, title="old"))["session_id"]
    url = f"{URL}/{sid}"

    response = await api.client.patch(url, headers=user.headers, json={"title": "新标题"})
    assert response.status_code == 200, response.text
    body = response.json()
    assert (body["title"], body["is_pinned"], body["status"]) == ("新标题", False, "active")

    response = await api.client.patch(url, headers=user.headers, json={"is_pinned": True})
    assert response.json()["is_pinned"] is True
    assert response.json()["title"] == "新标题"

    response = await api.client.patch(url, headers=user.headers, json={"status": "archived"})
    assert response.status_code == 200, response.text
    assert response.json()["status"] == "archived"
    assert await listed(api, user) == []
    assert await listed(api, user, status="archived") == [sid]
    # Archived is hidden from the default list, not gone.
    assert (await api.client.get(url, headers=user.headers)).json()["status"] == "archived"

    response = await api.client.patch(url, headers=user.headers, json={"status": "active"})
    assert response.json()["status"] == "active"
    assert await listed(api, user) == [sid]
    assert await listed(api, user, status="archived") == []

    response = await api.client.patch(url, headers=user.headers, json={"title": None})
    assert response.json()["title"] is None
    assert response.json()["is_pinned"] is True


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"status": "deleted"}, "status"),
        ({"status": None}, "status"),
        ({"is_pinned": None}, "is_pinned"),
        ({"title": "x" * 201}, "title"),
        ({"robot_id": 2}, "robot_id"),
    ],
    ids=["status-deleted", "status-null", "pinned-null", "title-too-long", "unknown-field"],
)
async def test_update_validation(api: Api, body: dict[str, Any], field: str) -> None:
    user = await api.user()
    robot = await api.robot(user)
    sid = (await open_session(api, user, robot, title="keep"))["session_id"]
    response = await api.client.patch(f"{URL}/{sid}", headers=user.headers, json=body)
    problem = assert_problem(response, 422, field)
    assert field in error_fields(problem)
    after = (await api.client.get(f"{URL}/{sid}", headers=user.headers)).json()
    assert (after["title"], after["status"], after["robot_id"]) == ("keep", "active", robot.id)


async def test_soft_delete(api: Api) -> None:
    user = await api.user()
    robot = await api.robot(user)
    sid = (await open_session(api, user, robot))["session_id"]
    kept = (await open_session(api, user, robot))["session_id"]

    response = await api.client.delete(f"{URL}/{sid}", headers=user.headers)
    assert response.status_code == 204, response.text

    assert_problem(await api.client.get(f"{URL}/{sid}", headers=user.headers), 404, sid)
    assert await listed(api, user) == [kept]
    assert await listed(api, user, status="archived") == []
    for response in (
        await api.client.patch(f"{URL}/{sid}", headers=user.headers, json={"title": "x"}),
        await api.client.get(f"{URL}/{sid}/messages", headers=user.headers),
        await api.client.delete(f"{URL}/{sid}", headers=user.headers),
    ):
        assert_problem(response, 404, sid)

    # Soft: the row is still there, marked deleted.
    async def status(session: AsyncSession) -> str:
        found = await session.exec(select(ChatSession).where(ChatSession.session_id == sid))
        return found.one().status

    assert await api.run(status) == "deleted"


async def test_another_users_session_is_not_found(api: Api) -> None:
    owner, stranger, admin = await api.user(), await api.user(), await api.admin()
    robot = await api.robot(owner, is_public=True)
    sid = (await open_session(api, owner, robot, title="私密"))["session_id"]
    await _insert_messages(api, sid, ["秘密问题"])
    url = f"{URL}/{sid}"

    for intruder in (stranger, admin):
        headers = intruder.headers
        responses = [
            await api.client.get(url, headers=headers),
            await api.client.patch(url, headers=headers, json={"title": "mine now"}),
            await api.client.get(f"{url}/messages", headers=headers),
            await api.client.delete(url, headers=headers),
        ]
        for response in responses:
            body = assert_problem(response, 404, f"session {sid} not found")
            assert "私密" not in response.text
            assert "秘密" not in response.text
            assert "robot_id" not in body
        assert await listed(api, intruder) == []

    mine = (await api.client.get(url, headers=owner.headers)).json()
    assert (mine["title"], mine["status"]) == ("私密", "active")


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("POST", ""),
        ("GET", ""),
        ("GET", "/abc"),
        ("PATCH", "/abc"),
        ("DELETE", "/abc"),
        ("GET", "/abc/messages"),
    ],
)
async def test_unauthenticated(api: Api, method: str, path: str) -> None:
    body = {"robot_id": 1} if method in ("POST", "PATCH") else None
    response = await api.client.request(method, f"{URL}{path or '/'}", json=body)
    assert_problem(response, 401, "sign in")


async def test_list_order_pinned_then_latest_activity(api: Api) -> None:
    user = await api.user()
    robot = await api.robot(user)
    now = utcnow()

    async def session_row(name: str, created: int, last: int | None, pinned: bool = False) -> str:
        row = await api.chat_session(
            user,
            robot.id or 0,
            session_id=f"{name}-{uuid.uuid4().hex}",
            is_pinned=pinned,
            created_at=now + timedelta(minutes=created),
            last_message_at=None if last is None else now + timedelta(minutes=last),
        )
        return row.session_id

    # Activity is last_message_at, or created_at for a session nobody has written in yet.
    quiet_old = await session_row("quiet-old", created=-30, last=None)
    busy = await session_row("busy", created=-60, last=10)
    quiet_new = await session_row("quiet-new", created=5, last=None)
    pinned_old = await session_row("pinned-old", created=-90, last=None, pinned=True)
    pinned_busy = await session_row("pinned-busy", created=-80, last=-1, pinned=True)
    chatty_old = await session_row("chatty-old", created=-100, last=-20)

    expected = [pinned_busy, pinned_old, busy, quiet_new, chatty_old, quiet_old]
    assert await listed(api, user) == expected

    response = await api.client.get(
        f"{URL}/", headers=user.headers, params={"page": 2, "page_size": 4}
    )
    page = response.json()
    assert (page["total"], page["page"], page["page_size"]) == (6, 2, 4)
    assert [item["session_id"] for item in page["items"]] == expected[4:]


async def test_list_filters_by_robot(api: Api) -> None:
    user = await api.user()
    first, second = await api.robot(user), await api.robot(user)
    a = (await open_session(api, user, first))["session_id"]
    b = (await open_session(api, user, second))["session_id"]
    assert await listed(api, user, robot_id=first.id) == [a]
    assert await listed(api, user, robot_id=second.id) == [b]
    assert set(await listed(api, user)) == {a, b}


@pytest.mark.parametrize(
    ("params", "field"),
    [({"status": "deleted"}, "status"), ({"robot_id": "x"}, "robot_id"), ({"page": 0}, "page")],
)
async def test_list_validation(api: Api, params: dict[str, Any], field: str) -> None:
    user = await api.user()
    response = await api.client.get(f"{URL}/", headers=user.headers, params=params)
    assert_problem(response, 422, field)


async def _insert_messages(api: Api, session_id: str, contents: list[str]) -> None:
    # Inserted in reverse so that the order the API returns comes from sequence, not row ids.
    for sequence in reversed(range(1, len(contents) + 1)):
        await api.message(
            session_id,
            sequence,
            role="user" if sequence % 2 else "assistant",
            content=contents[sequence - 1],
        )


async def test_messages_paging_order_and_chinese(api: Api) -> None:
    user = await api.user()
    robot = await api.robot(user)
    sid = (await open_session(api, user, robot))["session_id"]
    other_sid = (await open_session(api, user, robot))["session_id"]
    contents = ["年假怎么申请？", "在OA系统提交申请。", "需要谁审批？", "直属主管审批 ✅", "谢谢"]
    await _insert_messages(api, sid, contents)
    await _insert_messages(api, other_sid, ["别的会话"])
    await api.message(
        sid,
        6,
        role="assistant",
        content="参考《员工手册》第三章。",
        retrieved_contexts=[{"document_id": 7, "file_name": "员工手册.pdf", "score": 0.83}],
        referenced_doc_ids=[7],
        prompt_tokens=120,
        completion_tokens=30,
        total_tokens=150,
        retrieval_time_ms=12,
        generation_time_ms=340,
        total_time_ms=360,
        feedback=1,
        feedback_comment="很有帮助",
    )

    url = f"{URL}/{sid}/messages"
    first = (await api.client.get(url, headers=user.headers, params={"page_size": 4})).json()
    assert (first["total"], first["page"], first["page_size"]) == (6, 1, 4)
    assert [m["sequence"] for m in first["items"]] == [1, 2, 3, 4]
    assert [m["content"] for m in first["items"]] == contents[:4]
    assert [m["role"] for m in first["items"]] == ["user", "assistant", "user", "assistant"]

    response = await api.client.get(url, headers=user.headers, params={"page": 2, "page_size": 4})
    assert response.status_code == 200, response.text
    second = response.json()
    assert [m["sequence"] for m in second["items"]] == [5, 6]
    last = second["items"][-1]
    assert set(last) == MESSAGE_FIELDS
    assert last["content"] == "参考《员工手册》第三章。"
    assert last["retrieved_contexts"] == [
        {"document_id": 7, "file_name": "员工手册.pdf", "score": 0.83}
    ]
    assert last["referenced_doc_ids"] == [7]
    assert (last["prompt_tokens"], last["completion_tokens"], last["total_tokens"]) == (
        120,
        30,
        150,
    )
    assert (last["retrieval_time_ms"], last["generation_time_ms"], last["total_time_ms"]) == (
        12,
        340,
        360,
    )
    assert (last["feedback"], last["feedback_comment"]) == (1, "很有帮助")

    other = (await api.client.get(f"{URL}/{other_sid}/messages", headers=user.headers)).json()
    assert [m["content"] for m in other["items"]] == ["别的会话"]


async def test_messages_of_an_empty_session(api: Api) -> None:
    user = await api.user()
    robot = await api.robot(user)
    sid = (await open_session(api, user, robot))["session_id"]
    response = await api.client.get(f"{URL}/{sid}/messages", headers=user.headers)
    assert response.status_code == 200, response.text
    assert response.json() == {"items": [], "total": 0, "page": 1, "page_size": 20}


@pytest.mark.parametrize(
    ("method", "path", "kwargs", "field"),
    [
        ("GET", f"{URL}/{'a' * 65}", {}, "path.session_id"),
        ("PATCH", f"{URL}/{'a' * 65}", {"json": {"title": "x"}}, "path.session_id"),
        ("DELETE", f"{URL}/{'a' * 65}", {}, "path.session_id"),
        ("GET", f"{URL}/{'a' * 65}/messages", {}, "path.session_id"),
        ("GET", f"{URL}/", {"params": {"robot_id": HUGE_ID}}, "query.robot_id"),
        ("POST", f"{URL}/", {"json": {"robot_id": HUGE_ID}}, "robot_id"),
    ],
    ids=["get", "patch", "delete", "messages", "list-robot", "create-robot"],
)
async def test_ids_out_of_range(
    api: Api, method: str, path: str, kwargs: dict[str, Any], field: str
) -> None:
    user = await api.user()
    response = await api.client.request(method, path, headers=user.headers, **kwargs)
    assert_invalid(response, field)
    assert await listed(api, user) == []
