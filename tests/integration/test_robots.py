"""Robots over HTTP, on SQLite and MariaDB: models, bound knowledge bases, retrieval settings,
updates, deletion and Chinese text in JSON columns. Who may see, change and use a robot:
test_robots_access.py."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import pytest
from sqlalchemy import text
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from rag_app.db.models import ChatHistory, ChatSession, Llm, RobotKnowledge
from tests.conftest import Api, SignedIn, assert_problem, error_fields

ROBOTS = "/api/v1/robots"
KB = "/api/v1/knowledge"


async def make_kb(api: Api, user: SignedIn, name: str = "kb") -> int:
    kb_id: int = (await api.create_knowledge(user, name=name))["id"]
    return kb_id


async def test_create_minimal_with_defaults(api: Api) -> None:
    user = await api.user()
    robot = await api.create_robot(user)
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
    chat, rerank = await api.llm("chat"), await api.llm("rerank")
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
    robot = await api.create_robot(user, **body)
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
    assert field in error_fields(problem), problem
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
    model = await api.llm(model_type, status=status)
    response = await api.client.post(
        ROBOTS, json={"name": "bot", field: model.id}, headers=user.headers
    )
    problem = assert_problem(response, 422, field, fragment)
    assert error_fields(problem) == {field}
    robot = await api.create_robot(user)
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
    assert error_fields(problem) == {"chat_llm_id"}


async def test_list_pages_searches_and_shows_links(api: Api) -> None:
    user = await api.user()
    kb = await make_kb(api, user)
    names = ["Sales bot", "sales helper", "HR bot", "客服助手"]
    ids = [(await api.create_robot(user, name=name, knowledge_ids=[kb]))["id"] for name in names]
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
    chat = await api.llm("chat")
    robot = await api.create_robot(user, knowledge_ids=[first, second], chat_llm_id=chat.id)
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
    robot = await api.create_robot(user, retrieval={"mode": "keyword", "rrf_k": 30})
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
    robot = await api.create_robot(user, retrieval={"fusion": "weighted"})
    url = f"{ROBOTS}/{robot['id']}"
    response = await api.client.patch(url, json=changes, headers=user.headers)
    problem = assert_problem(response, 422)
    assert field in error_fields(problem), problem
    assert (await api.client.get(url, headers=user.headers)).json() == robot


async def test_rerank_model_and_switch(api: Api) -> None:
    user = await api.user()
    rerank = await api.llm("rerank")
    robot = await api.create_robot(user)
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
    chat = await api.llm("chat")
    robot = await api.create_robot(user, chat_llm_id=chat.id)

    async def disable(session: AsyncSession) -> None:
        model = await session.get(Llm, chat.id)
        assert model is not None
        model.status = 0
        session.add(model)
        await session.commit()

    await api.run(disable)
    url = f"{ROBOTS}/{robot['id']}"
    response = await api.client.patch(url, json={"name": "still editable"}, headers=user.headers)
    assert response.status_code == 200, response.text
    response = await api.client.patch(url, json={"chat_llm_id": chat.id}, headers=user.headers)
    assert_problem(response, 422, "disabled")


async def test_delete_cascades_links_sessions_and_history(api: Api) -> None:
    user = await api.user()
    kb = await make_kb(api, user)
    robot = await api.create_robot(user, knowledge_ids=[kb])
    session_key = (await api.chat_session(user, robot["id"])).session_id
    await api.message(session_key, 1, role="user", content="你好")
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

    assert await api.run(leftovers) == []
    # The knowledge base stays.
    assert (await api.client.get(f"{KB}/{kb}", headers=user.headers)).status_code == 200


async def test_chinese_text_in_json_columns(api: Api, backend: str) -> None:
    user = await api.user()
    questions = ["如何申请年假？", "报销流程是什么？"]
    robot = await api.create_robot(
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
        connection = await session.connection()
        result = await connection.execute(
            text("SELECT suggested_questions FROM rag_robot WHERE id = :id"),
            {"id": robot["id"]},
        )
        return str(result.scalar_one())

    stored = await api.run(raw_json)
    # Stored as the characters themselves, not \\u escapes, so MySQL JSON search finds them.
    assert "如何申请年假" in stored, (backend, stored)
    assert "\\u" not in stored
