"""Robots over HTTP, on SQLite and MariaDB: models, bound knowledge bases, retrieval settings,
ownership, public use and Chinese text in JSON columns."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

import pytest
from sqlalchemy import text
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from rag_app.db.models import ChatHistory, ChatSession, Llm, Robot, RobotKnowledge, User
from rag_app.domain.robots.service import RobotService
from rag_app.errors import NotFound
from tests.conftest import Api, SignedIn, assert_problem
from tests.integration.test_knowledge import in_app, insert, llm, sign_in_admin

ROBOTS = "/api/v1/robots"
KB = "/api/v1/knowledge"


async def make_kb(api: Api, user: SignedIn, name: str = "kb") -> int:
    body = {"name": name, "embed_llm_id": llm(api, "embedding").id}
    response = await api.client.post(KB, json=body, headers=user.headers)
    assert response.status_code == 201, response.text
    kb_id: int = response.json()["id"]
    return kb_id


async def make_robot(api: Api, user: SignedIn, **fields: Any) -> dict[str, Any]:
    response = await api.client.post(
        ROBOTS, json={"name": "helper", **fields}, headers=user.headers
    )
    assert response.status_code == 201, response.text
    result: dict[str, Any] = response.json()
    return result


def fields_of(problem: dict[str, Any]) -> set[str]:
    return {error["field"] for error in problem["errors"]}


async def test_create_minimal_with_defaults(api: Api) -> None:
    user = await api.user()
    robot = await make_robot(api, user)
    assert robot["user_id"] == user.id
    assert robot["chat_llm_id"] is None  # retrieval-only
    assert robot["rerank_llm_id"] is None
    assert robot["enable_rerank"] is False
    assert robot["knowledge_ids"] == []
    assert robot["suggested_questions"] == []
    assert (robot["similarity_threshold"], robot["top_k"]) == (0, 5)
    assert (robot["temperature"], robot["max_tokens"]) == (0.7, 2000)
    assert (robot["is_public"], robot["status"]) == (False, 1)
    assert robot["retrieval"] == {
        "mode": "hybrid",
        "fusion": "rrf",
        "vector_weight": 0.5,
        "keyword_weight": 0.5,
        "rrf_k": 60,
        "candidate_k": 20,
    }
    read = await api.client.get(f"{ROBOTS}/{robot['id']}", headers=user.headers)
    assert read.json() == robot


async def test_create_with_every_field(api: Api) -> None:
    user = await api.user()
    chat, rerank = llm(api, "chat"), llm(api, "rerank")
    first, second = await make_kb(api, user), await make_kb(api, user)
    retrieval = {
        "mode": "vector",
        "fusion": "weighted",
        "vector_weight": 0.8,
        "keyword_weight": 0,
        "rrf_k": 10,
        "candidate_k": 40,
    }
    body = {
        "name": "support bot",
        "description": "answers tickets",
        "avatar": "bot.png",
        "chat_llm_id": chat.id,
        "rerank_llm_id": rerank.id,
        "enable_rerank": True,
        "knowledge_ids": [second, first],
        "system_prompt": "Answer from the passages only.",
        "welcome_msg": "Hello!",
        "suggested_questions": ["How do I reset my password?"] * 10,
        "similarity_threshold": 0.25,
        "top_k": 40,
        "temperature": 0,
        "max_tokens": 32768,
        "is_public": True,
        "status": 0,
        "retrieval": retrieval,
    }
    robot = await make_robot(api, user, **body)
    expected = {**body, "knowledge_ids": [first, second]}  # sorted
    assert {key: robot[key] for key in body} == expected


@pytest.mark.parametrize(
    ("fields", "field"),
    [
        ({"name": ""}, "name"),
        ({"top_k": 0}, "top_k"),
        ({"top_k": 51}, "top_k"),
        ({"temperature": 2.1}, "temperature"),
        ({"similarity_threshold": 1.5}, "similarity_threshold"),
        ({"max_tokens": 0}, "max_tokens"),
        ({"max_tokens": 32769}, "max_tokens"),
        ({"status": 2}, "status"),
        ({"suggested_questions": ["q"] * 11}, "suggested_questions"),
        ({"suggested_questions": ["x" * 201]}, "suggested_questions.0"),
        ({"knowledge_ids": [1, 1]}, "knowledge_ids"),
        ({"retrieval": {"mode": "fuzzy"}}, "retrieval.mode"),
        ({"retrieval": {"fusion": "max"}}, "retrieval.fusion"),
        ({"retrieval": {"vector_weight": 1.5}}, "retrieval.vector_weight"),
        ({"retrieval": {"candidate_k": 201}}, "retrieval.candidate_k"),
        ({"retrieval": {"rrf_k": 0}}, "retrieval.rrf_k"),
        ({"retrieval": {"top_n": 3}}, "retrieval.top_n"),
        (
            {"retrieval": {"fusion": "weighted", "vector_weight": 0, "keyword_weight": 0}},
            "retrieval",
        ),
        ({"top_k": 30}, "top_k"),  # the default candidate_k is 20
        ({"top_k": 30, "retrieval": {"candidate_k": 25}}, "retrieval.candidate_k"),
        ({"enable_rerank": True}, "rerank_llm_id"),
        ({"user_id": 1}, "user_id"),
    ],
)
async def test_create_validation_names_the_field(
    api: Api, fields: dict[str, Any], field: str
) -> None:
    user = await api.user()
    response = await api.client.post(ROBOTS, json={"name": "bot", **fields}, headers=user.headers)
    problem = assert_problem(response, 422)
    assert field in fields_of(problem), problem
    assert (await api.client.get(ROBOTS, headers=user.headers)).json()["total"] == 0


@pytest.mark.parametrize(
    ("field", "model_type", "status", "fragment"),
    [
        ("chat_llm_id", "embedding", 1, "chat model"),
        ("chat_llm_id", "rerank", 1, "chat model"),
        ("chat_llm_id", "chat", 0, "disabled"),
        ("rerank_llm_id", "chat", 1, "rerank model"),
        ("rerank_llm_id", "rerank", 0, "disabled"),
    ],
)
async def test_models_must_have_the_right_type_and_be_enabled(
    api: Api, field: str, model_type: str, status: int, fragment: str
) -> None:
    user = await api.user()
    model = llm(api, model_type, status=status)
    response = await api.client.post(
        ROBOTS, json={"name": "bot", field: model.id}, headers=user.headers
    )
    problem = assert_problem(response, 422, field, fragment)
    assert fields_of(problem) == {field}
    robot = await make_robot(api, user)
    response = await api.client.patch(
        f"{ROBOTS}/{robot['id']}", json={field: model.id}, headers=user.headers
    )
    assert_problem(response, 422, field, fragment)


async def test_unknown_model(api: Api) -> None:
    user = await api.user()
    response = await api.client.post(
        ROBOTS, json={"name": "bot", "chat_llm_id": 987654321}, headers=user.headers
    )
    problem = assert_problem(response, 422, "does not exist")
    assert fields_of(problem) == {"chat_llm_id"}


async def test_binding_another_users_knowledge_base_is_refused(api: Api) -> None:
    user = await api.user()
    stranger = await api.user()
    mine = await make_kb(api, user)
    theirs = await make_kb(api, stranger, name="their secrets")
    response = await api.client.post(
        ROBOTS, json={"name": "bot", "knowledge_ids": [mine, theirs]}, headers=user.headers
    )
    problem = assert_problem(response, 422, "not found", str(theirs))
    assert fields_of(problem) == {"knowledge_ids"}
    assert "their secrets" not in response.text
    missing = await api.client.post(
        ROBOTS, json={"name": "bot", "knowledge_ids": [987654321]}, headers=user.headers
    )
    assert_problem(missing, 422, "987654321", "not found")

    robot = await make_robot(api, user, knowledge_ids=[mine])
    url = f"{ROBOTS}/{robot['id']}"
    response = await api.client.patch(url, json={"knowledge_ids": [theirs]}, headers=user.headers)
    problem = assert_problem(response, 422, "not found")
    assert fields_of(problem) == {"knowledge_ids"}
    assert (await api.client.get(url, headers=user.headers)).json()["knowledge_ids"] == [mine]


async def test_admin_may_bind_any_knowledge_base(api: Api) -> None:
    owner = await api.user()
    other = await api.user()
    admin = await sign_in_admin(api)
    owners_kb = await make_kb(api, owner)
    others_kb = await make_kb(api, other)
    admins_robot = await make_robot(api, admin, knowledge_ids=[owners_kb, others_kb])
    assert admins_robot["knowledge_ids"] == sorted([owners_kb, others_kb])

    robot = await make_robot(api, owner, knowledge_ids=[owners_kb])
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
    robot = await make_robot(api, user)
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
    robot = await make_robot(
        api, owner, name="private helper", system_prompt="the secret sauce", is_public=is_public
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
    admin = await sign_in_admin(api)
    kb = await make_kb(api, owner)
    robot = await make_robot(api, owner, knowledge_ids=[kb])
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


async def test_list_pages_searches_and_shows_links(api: Api) -> None:
    user = await api.user()
    kb = await make_kb(api, user)
    names = ["Sales bot", "sales helper", "HR bot", "客服助手"]
    ids = [(await make_robot(api, user, name=name, knowledge_ids=[kb]))["id"] for name in names]
    page = (await api.client.get(ROBOTS, params={"page_size": 3}, headers=user.headers)).json()
    assert page["total"] == 4
    assert [item["id"] for item in page["items"]] == ids[::-1][:3]
    assert all(item["knowledge_ids"] == [kb] for item in page["items"])
    assert all(item["retrieval"]["mode"] == "hybrid" for item in page["items"])

    async def found(search: str) -> set[str]:
        response = await api.client.get(ROBOTS, params={"search": search}, headers=user.headers)
        return {item["name"] for item in response.json()["items"]}

    assert await found("SALES") == {"Sales bot", "sales helper"}
    assert await found("客服") == {"客服助手"}
    assert await found("_") == set()


async def test_update_fields_and_links(api: Api) -> None:
    user = await api.user()
    first, second, third = [await make_kb(api, user) for _ in range(3)]
    chat = llm(api, "chat")
    robot = await make_robot(api, user, knowledge_ids=[first, second], chat_llm_id=chat.id)
    url = f"{ROBOTS}/{robot['id']}"

    response = await api.client.patch(
        url, json={"knowledge_ids": [third, second]}, headers=user.headers
    )
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["knowledge_ids"] == [second, third]
    assert body["name"] == "helper"
    # Only the links changed, but updated_at moves: cached chat engines key on it.
    assert datetime.fromisoformat(body["updated_at"]) > datetime.fromisoformat(robot["updated_at"])

    changes = {
        "name": "renamed",
        "description": "新的",
        "chat_llm_id": None,  # back to retrieval-only
        "system_prompt": "Be brief.",
        "welcome_msg": "Hi",
        "suggested_questions": ["a?", "b?"],
        "similarity_threshold": 0.5,
        "top_k": 10,
        "temperature": 1.5,
        "max_tokens": 100,
        "is_public": True,
        "status": 0,
    }
    response = await api.client.patch(url, json=changes, headers=user.headers)
    assert response.status_code == 200, response.text
    body = response.json()
    assert {key: body[key] for key in changes} == changes
    assert body["knowledge_ids"] == [second, third]

    response = await api.client.patch(url, json={"knowledge_ids": []}, headers=user.headers)
    assert response.json()["knowledge_ids"] == []
    assert (await api.client.get(url, headers=user.headers)).json() == response.json()


async def test_update_retrieval_changes_only_the_keys_sent(api: Api) -> None:
    user = await api.user()
    robot = await make_robot(api, user, retrieval={"mode": "keyword", "rrf_k": 30})
    url = f"{ROBOTS}/{robot['id']}"
    response = await api.client.patch(
        url, json={"retrieval": {"fusion": "weighted", "keyword_weight": 0.9}}, headers=user.headers
    )
    assert response.status_code == 200, response.text
    assert response.json()["retrieval"] == {
        "mode": "keyword",
        "fusion": "weighted",
        "vector_weight": 0.5,
        "keyword_weight": 0.9,
        "rrf_k": 30,
        "candidate_k": 20,
    }


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"top_k": 30}, "top_k"),  # stored candidate_k is 20
        ({"retrieval": {"candidate_k": 4}}, "retrieval.candidate_k"),  # stored top_k is 5
        ({"top_k": 30, "retrieval": {"candidate_k": 25}}, "retrieval.candidate_k"),
        ({"enable_rerank": True}, "rerank_llm_id"),
        ({"retrieval": {"vector_weight": 0, "keyword_weight": 0}}, "retrieval"),
        ({"retrieval": {"mode": None}}, "retrieval.mode"),
        ({"retrieval": {"mode": "fuzzy"}}, "retrieval.mode"),
        ({"retrieval": None}, "retrieval"),
        ({"knowledge_ids": None}, "knowledge_ids"),
        ({"name": None}, "name"),
        ({"top_k": None}, "top_k"),
        ({"is_public": None}, "is_public"),
        ({"suggested_questions": ["q"] * 11}, "suggested_questions"),
        ({"temperature": -0.1}, "temperature"),
        ({"id": 5}, "id"),
    ],
)
async def test_update_validation_against_merged_result(
    api: Api, changes: dict[str, Any], field: str
) -> None:
    user = await api.user()
    robot = await make_robot(api, user, retrieval={"fusion": "weighted"})
    url = f"{ROBOTS}/{robot['id']}"
    response = await api.client.patch(url, json=changes, headers=user.headers)
    problem = assert_problem(response, 422)
    assert field in fields_of(problem), problem
    assert (await api.client.get(url, headers=user.headers)).json() == robot


async def test_rerank_model_and_switch(api: Api) -> None:
    user = await api.user()
    rerank = llm(api, "rerank")
    robot = await make_robot(api, user)
    url = f"{ROBOTS}/{robot['id']}"
    response = await api.client.patch(
        url, json={"rerank_llm_id": rerank.id, "enable_rerank": True}, headers=user.headers
    )
    assert response.status_code == 200, response.text
    assert (response.json()["rerank_llm_id"], response.json()["enable_rerank"]) == (rerank.id, True)
    response = await api.client.patch(url, json={"rerank_llm_id": None}, headers=user.headers)
    assert_problem(response, 422, "enable_rerank")
    response = await api.client.patch(
        url, json={"rerank_llm_id": None, "enable_rerank": False}, headers=user.headers
    )
    assert response.status_code == 200, response.text


async def test_a_model_disabled_later_does_not_block_other_changes(api: Api) -> None:
    user = await api.user()
    chat = llm(api, "chat")
    robot = await make_robot(api, user, chat_llm_id=chat.id)

    async def disable(session: AsyncSession) -> None:
        model = await session.get(Llm, chat.id)
        assert model is not None
        model.status = 0
        session.add(model)
        await session.commit()

    in_app(api, disable)
    url = f"{ROBOTS}/{robot['id']}"
    response = await api.client.patch(url, json={"name": "still editable"}, headers=user.headers)
    assert response.status_code == 200, response.text
    response = await api.client.patch(url, json={"chat_llm_id": chat.id}, headers=user.headers)
    assert_problem(response, 422, "disabled")


async def test_delete_cascades_links_sessions_and_history(api: Api) -> None:
    user = await api.user()
    kb = await make_kb(api, user)
    robot = await make_robot(api, user, knowledge_ids=[kb])
    session_key = uuid.uuid4().hex
    insert(api, ChatSession(session_id=session_key, user_id=user.id, robot_id=robot["id"]))
    insert(
        api,
        ChatHistory(
            session_id=session_key,
            message_id=uuid.uuid4().hex,
            role="user",
            content="你好",
            sequence=1,
        ),
    )
    url = f"{ROBOTS}/{robot['id']}"
    assert (await api.client.delete(url, headers=user.headers)).status_code == 204
    assert_problem(await api.client.get(url, headers=user.headers), 404)
    assert_problem(await api.client.delete(url, headers=user.headers), 404)

    async def leftovers(session: AsyncSession) -> list[Any]:
        links = await session.exec(
            select(RobotKnowledge).where(col(RobotKnowledge.robot_id) == robot["id"])
        )
        sessions = await session.exec(
            select(ChatSession).where(col(ChatSession.session_id) == session_key)
        )
        history = await session.exec(
            select(ChatHistory).where(col(ChatHistory.session_id) == session_key)
        )
        return [*links.all(), *sessions.all(), *history.all()]

    assert in_app(api, leftovers) == []
    # The knowledge base stays.
    assert (await api.client.get(f"{KB}/{kb}", headers=user.headers)).status_code == 200


async def test_chinese_text_in_json_columns(api: Api, backend: str) -> None:
    user = await api.user()
    questions = ["如何申请年假？", "报销流程是什么？"]
    robot = await make_robot(
        api,
        user,
        name="人事助手",
        system_prompt="你是公司的人事助手，请只根据资料回答。",
        welcome_msg="您好！",
        suggested_questions=questions,
    )
    read = (await api.client.get(f"{ROBOTS}/{robot['id']}", headers=user.headers)).json()
    assert read["suggested_questions"] == questions
    assert read["system_prompt"] == "你是公司的人事助手，请只根据资料回答。"
    assert read["name"] == "人事助手"

    async def raw_json(session: AsyncSession) -> str:
        async with api.ctx.engine.connect() as connection:
            result = await connection.execute(
                text("SELECT suggested_questions FROM rag_robot WHERE id = :id"),
                {"id": robot["id"]},
            )
            return str(result.scalar_one())

    stored = in_app(api, raw_json)
    # Stored as the characters themselves, not \\u escapes, so MySQL JSON search finds them.
    assert "如何申请年假" in stored, (backend, stored)
    assert "\\u" not in stored


async def test_get_usable(api: Api) -> None:
    owner = await api.user()
    stranger = await api.user()
    admin = await sign_in_admin(api)
    kb = await make_kb(api, owner)
    private = await make_robot(api, owner, knowledge_ids=[kb])
    public = await make_robot(api, owner, is_public=True)
    disabled_public = await make_robot(api, owner, is_public=True, status=0)

    def usable(robot_id: int, who: SignedIn) -> Robot:
        async def work(session: AsyncSession) -> Robot:
            user = await session.get(User, who.id)
            assert user is not None
            return await RobotService(session).get_usable(robot_id, user)

        return in_app(api, work)

    for who in (owner, admin):
        for robot in (private, public, disabled_public):
            assert usable(robot["id"], who).id == robot["id"]
    assert usable(public["id"], stranger).id == public["id"]
    for robot_id in (private["id"], disabled_public["id"], 987654321):
        with pytest.raises(NotFound):
            usable(robot_id, stranger)

    bound = in_app(api, lambda session: RobotService(session).knowledge_bases(private["id"]))
    assert [knowledge.id for knowledge in bound] == [kb]
