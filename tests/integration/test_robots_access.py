"""Who may see, change, bind and use robots, over HTTP on SQLite and MariaDB: owners,
strangers, administrators, public robots, and ids out of range."""

from __future__ import annotations

from typing import Any

import pytest
from sqlmodel.ext.asyncio.session import AsyncSession

from rag_app.db.models import Robot, User
from rag_app.domain.robots.service import RobotService
from rag_app.errors import NotFound
from tests.conftest import HUGE_ID, Api, SignedIn, assert_invalid, assert_problem, error_fields

ROBOTS = "/api/v1/robots"


async def make_kb(api: Api, user: SignedIn, name: str = "kb") -> int:
    kb_id: int = (await api.create_knowledge(user, name=name))["id"]
    return kb_id


async def test_binding_another_users_knowledge_base_is_refused(api: Api) -> None:
    user = await api.user()
    stranger = await api.user()
    mine = await make_kb(api, user)
    theirs = await make_kb(api, stranger, name="their secrets")
    response = await api.client.post(
        ROBOTS, json={"name": "bot", "knowledge_ids": [mine, theirs]}, headers=user.headers
    )
    problem = assert_problem(response, 422, "not found", str(theirs))
    assert error_fields(problem) == {"knowledge_ids"}
    assert "their secrets" not in response.text
    missing = await api.client.post(
        ROBOTS, json={"name": "bot", "knowledge_ids": [987654321]}, headers=user.headers
    )
    assert_problem(missing, 422, "987654321", "not found")

    robot = await api.create_robot(user, knowledge_ids=[mine])
    url = f"{ROBOTS}/{robot['id']}"
    response = await api.client.patch(url, json={"knowledge_ids": [theirs]}, headers=user.headers)
    problem = assert_problem(response, 422, "not found")
    assert error_fields(problem) == {"knowledge_ids"}
    assert (await api.client.get(url, headers=user.headers)).json()["knowledge_ids"] == [mine]


async def test_admin_may_bind_any_knowledge_base(api: Api) -> None:
    owner = await api.user()
    other = await api.user()
    admin = await api.admin()
    owners_kb = await make_kb(api, owner)
    others_kb = await make_kb(api, other)
    admins_robot = await api.create_robot(admin, knowledge_ids=[owners_kb, others_kb])
    assert admins_robot["knowledge_ids"] == sorted([owners_kb, others_kb])

    robot = await api.create_robot(owner, knowledge_ids=[owners_kb])
    url = f"{ROBOTS}/{robot['id']}"
    response = await api.client.patch(
        url, json={"knowledge_ids": [owners_kb, others_kb]}, headers=admin.headers
    )
    assert response.status_code == 200, response.text
    # The owner may resend the set the administrator extended, but not add more of others'.
    response = await api.client.patch(
        url, json={"knowledge_ids": [others_kb, owners_kb], "name": "n"}, headers=owner.headers
    )
    assert response.status_code == 200, response.text
    response = await api.client.patch(
        url, json={"knowledge_ids": [owners_kb]}, headers=owner.headers
    )
    assert response.json()["knowledge_ids"] == [owners_kb]
    response = await api.client.patch(
        url, json={"knowledge_ids": [owners_kb, others_kb]}, headers=owner.headers
    )
    assert_problem(response, 422, "not found")


async def test_unauthenticated(api: Api) -> None:
    user = await api.user()
    robot = await api.create_robot(user)
    url = f"{ROBOTS}/{robot['id']}"
    assert_problem(await api.client.post(ROBOTS, json={"name": "x"}), 401)
    assert_problem(await api.client.get(ROBOTS), 401)
    assert_problem(await api.client.get(url), 401)
    assert_problem(await api.client.patch(url, json={"name": "y"}), 401)
    assert_problem(await api.client.delete(url), 401)
    assert (await api.client.get(url, headers=user.headers)).json()["name"] == "helper"


@pytest.mark.parametrize("is_public", [False, True])
async def test_another_users_robot_is_not_found(api: Api, is_public: bool) -> None:
    owner = await api.user()
    stranger = await api.user()
    robot = await api.create_robot(
        owner, name="private helper", system_prompt="the secret sauce", is_public=is_public
    )
    url = f"{ROBOTS}/{robot['id']}"
    # A public robot may be chatted with by anyone, but only its owner changes or reads its setup.
    for response in (
        await api.client.get(url, headers=stranger.headers),
        await api.client.patch(url, json={"name": "mine now"}, headers=stranger.headers),
        await api.client.delete(url, headers=stranger.headers),
    ):
        problem = assert_problem(response, 404, "not found")
        assert "secret sauce" not in response.text
        assert "name" not in problem
    assert_problem(await api.client.get(f"{ROBOTS}/987654321", headers=stranger.headers), 404)
    assert (await api.client.get(ROBOTS, headers=stranger.headers)).json()["total"] == 0
    listed = await api.client.get(ROBOTS, params={"user_id": owner.id}, headers=stranger.headers)
    assert listed.json()["items"] == []
    assert (await api.client.get(url, headers=owner.headers)).json()["name"] == "private helper"


async def test_admin_reads_changes_and_deletes_others(api: Api) -> None:
    owner = await api.user()
    admin = await api.admin()
    kb = await make_kb(api, owner)
    robot = await api.create_robot(owner, knowledge_ids=[kb])
    url = f"{ROBOTS}/{robot['id']}"
    assert (await api.client.get(url, headers=admin.headers)).json() == robot
    listed = await api.client.get(ROBOTS, params={"page_size": 100}, headers=admin.headers)
    assert robot["id"] in {item["id"] for item in listed.json()["items"]}
    by_owner = await api.client.get(ROBOTS, params={"user_id": owner.id}, headers=admin.headers)
    assert by_owner.json()["items"] == [robot]
    response = await api.client.patch(url, json={"status": 0}, headers=admin.headers)
    assert response.status_code == 200, response.text
    assert (response.json()["status"], response.json()["user_id"]) == (0, owner.id)
    assert (await api.client.delete(url, headers=admin.headers)).status_code == 204
    assert_problem(await api.client.get(url, headers=owner.headers), 404)


async def test_get_usable(api: Api) -> None:
    owner = await api.user()
    stranger = await api.user()
    admin = await api.admin()
    kb = await make_kb(api, owner)
    private = await api.create_robot(owner, knowledge_ids=[kb])
    public = await api.create_robot(owner, is_public=True)
    disabled_public = await api.create_robot(owner, is_public=True, status=0)

    async def usable(robot_id: int, who: SignedIn, enabled_only: bool = False) -> Robot:
        async def work(session: AsyncSession) -> Robot:
            user = await session.get(User, who.id)
            assert user is not None
            service = RobotService(session)
            return await service.get_usable(user, robot_id, enabled_only=enabled_only)

        return await api.run(work)

    for who in (owner, admin):
        for robot in (private, public, disabled_public):
            assert (await usable(robot["id"], who)).id == robot["id"]
    assert (await usable(public["id"], stranger)).id == public["id"]
    for robot_id in (private["id"], disabled_public["id"], 987654321):
        with pytest.raises(NotFound):
            await usable(robot_id, stranger)
    # New chat sessions: a disabled robot is refused to its owner and administrators too.
    for who in (owner, admin):
        assert (await usable(private["id"], who, enabled_only=True)).id == private["id"]
        with pytest.raises(NotFound):
            await usable(disabled_public["id"], who, enabled_only=True)

    bound = await api.run(lambda session: RobotService(session).knowledge_bases(private["id"]))
    assert [knowledge.id for knowledge in bound] == [kb]


@pytest.mark.parametrize(
    ("method", "path", "kwargs", "field"),
    [
        ("GET", f"{ROBOTS}/{HUGE_ID}", {}, "path.robot_id"),
        ("PATCH", f"{ROBOTS}/{HUGE_ID}", {"json": {"name": "x"}}, "path.robot_id"),
        ("DELETE", f"{ROBOTS}/{HUGE_ID}", {}, "path.robot_id"),
        ("GET", ROBOTS, {"params": {"user_id": HUGE_ID}}, "query.user_id"),
        ("POST", ROBOTS, {"json": {"name": "r", "chat_llm_id": HUGE_ID}}, "chat_llm_id"),
        ("POST", ROBOTS, {"json": {"name": "r", "rerank_llm_id": HUGE_ID}}, "rerank_llm_id"),
        ("POST", ROBOTS, {"json": {"name": "r", "knowledge_ids": [HUGE_ID]}}, "knowledge_ids.0"),
    ],
    ids=["get", "patch", "delete", "list-owner", "chat-model", "rerank-model", "knowledge"],
)
async def test_ids_out_of_range(
    api: Api, method: str, path: str, kwargs: dict[str, Any], field: str
) -> None:
    user = await api.user()
    response = await api.client.request(method, path, headers=user.headers, **kwargs)
    assert_invalid(response, field)
    assert (await api.client.get(ROBOTS, headers=user.headers)).json()["total"] == 0
