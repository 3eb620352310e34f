"""Knowledge bases over HTTP, on SQLite and MariaDB: ownership, validation, derived counts."""

from __future__ import annotations

import re
from datetime import datetime
from typing import Any

import pytest
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from rag_app.db.models import Document, Knowledge, RobotKnowledge
from rag_app.domain.knowledge.service import KnowledgeService
from rag_app.errors import NotFound
from tests.conftest import HUGE_ID, Api, assert_invalid, assert_problem, error_fields

KB = "/api/v1/knowledge"


async def add_document(api: Api, knowledge_id: int, chunk_count: int, name: str = "a.pdf") -> int:
    document = await api.insert(
        Document(
            knowledge_id=knowledge_id,
            file_name=name,
            file_path=f"kb/{knowledge_id}/{name}",
            file_extension="pdf",
            chunk_count=chunk_count,
        ),
    )
    return document.id or 0


async def test_create_with_defaults_and_read(api: Api) -> None:
    user = await api.user()
    embed = await api.llm("embedding")
    kb = await api.create_knowledge(user, embed_llm_id=embed.id, description="HR rules")
    assert kb["user_id"] == user.id
    assert kb["embed_llm_id"] == embed.id
    assert kb["description"] == "HR rules"
    assert kb["avatar"] is None
    assert (kb["chunk_size"], kb["chunk_overlap"], kb["keyword_backend"]) == (500, 50, "bm25")
    assert (kb["document_count"], kb["total_chunks"], kb["status"]) == (0, 0, 1)
    assert re.fullmatch(r"[A-Za-z][A-Za-z0-9_]*", kb["vector_collection_name"])
    assert kb["created_at"]
    assert kb["updated_at"]

    other = await api.create_knowledge(user, embed_llm_id=embed.id)
    assert other["vector_collection_name"] != kb["vector_collection_name"]

    response = await api.client.get(f"{KB}/{kb['id']}", headers=user.headers)
    assert response.status_code == 200
    assert response.json() == kb


async def test_create_with_every_field(api: Api) -> None:
    user = await api.user()
    kb = await api.create_knowledge(
        user,
        name="产品手册",
        avatar="https://example.com/a.png",
        chunk_size=1000,
        chunk_overlap=999,
        keyword_backend="elasticsearch",
    )
    assert kb["name"] == "产品手册"
    assert (kb["chunk_size"], kb["chunk_overlap"]) == (1000, 999)
    assert kb["keyword_backend"] == "elasticsearch"


@pytest.mark.parametrize(
    ("fields", "field"),
    [
        ({"chunk_size": 99}, "chunk_size"),
        ({"chunk_size": 4001}, "chunk_size"),
        ({"chunk_overlap": -1}, "chunk_overlap"),
        ({"chunk_size": 200, "chunk_overlap": 200}, "chunk_overlap"),
        ({"keyword_backend": "faiss"}, "keyword_backend"),
        ({"name": "   "}, "name"),
        ({"name": "x" * 101}, "name"),
        ({"description": "x" * 501}, "description"),
        ({"document_count": 5}, "document_count"),
        ({"vector_collection_name": "mine"}, "vector_collection_name"),
    ],
)
async def test_create_validation_names_the_field(
    api: Api, fields: dict[str, Any], field: str
) -> None:
    user = await api.user()
    embed = await api.llm("embedding")
    body = {"name": "kb", "embed_llm_id": embed.id, **fields}
    response = await api.client.post(KB, json=body, headers=user.headers)
    problem = assert_problem(response, 422)
    assert field in error_fields(problem), problem


async def test_create_needs_embed_llm_id(api: Api) -> None:
    user = await api.user()
    response = await api.client.post(KB, json={"name": "kb"}, headers=user.headers)
    problem = assert_problem(response, 422, "embed_llm_id")
    assert problem["errors"][0]["field"] == "embed_llm_id"


@pytest.mark.parametrize(
    ("model_type", "status", "fragment"),
    [
        ("chat", 1, "embedding model"),
        ("rerank", 1, "embedding model"),
        ("embedding", 0, "disabled"),
    ],
)
async def test_embedding_model_must_be_an_enabled_embedding_model(
    api: Api, model_type: str, status: int, fragment: str
) -> None:
    user = await api.user()
    model = await api.llm(model_type, status=status)
    response = await api.client.post(
        KB, json={"name": "kb", "embed_llm_id": model.id}, headers=user.headers
    )
    problem = assert_problem(response, 422, "embed_llm_id", fragment)
    assert problem["errors"] == [{"field": "embed_llm_id", "message": problem["detail"]}]


async def test_unknown_embedding_model(api: Api) -> None:
    user = await api.user()
    response = await api.client.post(
        KB, json={"name": "kb", "embed_llm_id": 987654321}, headers=user.headers
    )
    problem = assert_problem(response, 422, "does not exist")
    assert problem["errors"][0]["field"] == "embed_llm_id"


async def test_unauthenticated(api: Api) -> None:
    user = await api.user()
    kb = await api.create_knowledge(user)
    url = f"{KB}/{kb['id']}"
    assert_problem(await api.client.post(KB, json={"name": "x", "embed_llm_id": 1}), 401)
    assert_problem(await api.client.get(KB), 401)
    assert_problem(await api.client.get(url), 401)
    assert_problem(await api.client.patch(url, json={"name": "y"}), 401)
    assert_problem(await api.client.delete(url), 401)
    assert (await api.client.get(url, headers=user.headers)).json()["name"] == "handbook"


async def test_another_users_knowledge_base_is_not_found(api: Api) -> None:
    owner = await api.user()
    stranger = await api.user()
    kb = await api.create_knowledge(owner, name="secret plans")
    url = f"{KB}/{kb['id']}"
    for response in (
        await api.client.get(url, headers=stranger.headers),
        await api.client.patch(url, json={"name": "mine now"}, headers=stranger.headers),
        await api.client.delete(url, headers=stranger.headers),
    ):
        problem = assert_problem(response, 404, "not found")
        assert "secret plans" not in response.text
        assert "name" not in problem
    # The same answer as for an id that does not exist at all.
    assert_problem(await api.client.get(f"{KB}/987654321", headers=stranger.headers), 404)
    listed = await api.client.get(KB, headers=stranger.headers)
    assert listed.json()["total"] == 0
    # Asking for someone else's by user_id does not widen a normal user's view.
    listed = await api.client.get(KB, params={"user_id": owner.id}, headers=stranger.headers)
    assert listed.json()["items"] == []
    still = await api.client.get(url, headers=owner.headers)
    assert still.json()["name"] == "secret plans"


async def test_admin_reads_changes_and_deletes_others(api: Api) -> None:
    owner = await api.user()
    admin = await api.admin()
    kb = await api.create_knowledge(owner)
    url = f"{KB}/{kb['id']}"
    assert (await api.client.get(url, headers=admin.headers)).json()["id"] == kb["id"]

    listed = await api.client.get(KB, params={"page_size": 100}, headers=admin.headers)
    assert kb["id"] in {item["id"] for item in listed.json()["items"]}
    by_owner = await api.client.get(KB, params={"user_id": owner.id}, headers=admin.headers)
    assert [item["id"] for item in by_owner.json()["items"]] == [kb["id"]]

    response = await api.client.patch(url, json={"status": 0}, headers=admin.headers)
    assert response.status_code == 200, response.text
    assert response.json()["status"] == 0
    assert response.json()["user_id"] == owner.id
    assert (await api.client.delete(url, headers=admin.headers)).status_code == 204
    assert_problem(await api.client.get(url, headers=owner.headers), 404)


async def test_list_pages_and_searches(api: Api) -> None:
    user = await api.user()
    embed = await api.llm("embedding")
    ids = [
        (await api.create_knowledge(user, name=name, embed_llm_id=embed.id))["id"]
        for name in ("Sales FAQ", "sales 2024", "Engineering", "100% coverage", "人事制度")
    ]
    first = (await api.client.get(KB, params={"page_size": 2}, headers=user.headers)).json()
    assert first["total"] == 5
    assert (first["page"], first["page_size"]) == (1, 2)
    assert [item["id"] for item in first["items"]] == ids[::-1][:2]  # newest first
    last = await api.client.get(KB, params={"page_size": 2, "page": 3}, headers=user.headers)
    assert [item["id"] for item in last.json()["items"]] == [ids[0]]

    async def names(search: str) -> set[str]:
        response = await api.client.get(KB, params={"search": search}, headers=user.headers)
        assert response.status_code == 200, response.text
        return {item["name"] for item in response.json()["items"]}

    assert await names("sales") == {"Sales FAQ", "sales 2024"}
    assert await names("%") == {"100% coverage"}  # a literal percent sign, not a wildcard
    assert await names("人事") == {"人事制度"}
    bad = await api.client.get(KB, params={"page_size": 101}, headers=user.headers)
    assert_problem(bad, 422, "page_size")


async def test_update_fields(api: Api) -> None:
    user = await api.user()
    kb = await api.create_knowledge(user, description="old", avatar="a.png")
    url = f"{KB}/{kb['id']}"
    changes = {
        "name": "renamed",
        "description": "新的说明",
        "chunk_size": 800,
        "chunk_overlap": 100,
        "keyword_backend": "milvus",
        "status": 0,
    }
    response = await api.client.patch(url, json=changes, headers=user.headers)
    assert response.status_code == 200, response.text
    body = response.json()
    assert {key: body[key] for key in changes} == changes
    assert body["avatar"] == "a.png"  # not sent, not changed
    assert datetime.fromisoformat(body["updated_at"]) > datetime.fromisoformat(kb["updated_at"])
    assert body["vector_collection_name"] == kb["vector_collection_name"]

    cleared = await api.client.patch(url, json={"avatar": None}, headers=user.headers)
    assert cleared.json()["avatar"] is None
    assert (await api.client.get(url, headers=user.headers)).json()["avatar"] is None


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"chunk_overlap": 500}, "chunk_overlap"),  # stored chunk_size is 500
        ({"chunk_size": 100}, "chunk_size"),  # below the stored overlap of 200
        ({"chunk_size": 300, "chunk_overlap": 300}, "chunk_overlap"),
        ({"chunk_size": 50}, "chunk_size"),
        ({"name": None}, "name"),
        ({"chunk_size": None}, "chunk_size"),
        ({"status": 2}, "status"),
        ({"keyword_backend": "lucene"}, "keyword_backend"),
        ({"user_id": 1}, "user_id"),
        ({"total_chunks": 3}, "total_chunks"),
    ],
)
async def test_update_validation_against_merged_result(
    api: Api, changes: dict[str, Any], field: str
) -> None:
    user = await api.user()
    kb = await api.create_knowledge(user, chunk_size=500, chunk_overlap=200)
    url = f"{KB}/{kb['id']}"
    response = await api.client.patch(url, json=changes, headers=user.headers)
    problem = assert_problem(response, 422)
    assert field in error_fields(problem), problem
    unchanged = (await api.client.get(url, headers=user.headers)).json()
    assert unchanged == kb


async def test_update_chunk_size_valid_with_stored_overlap(api: Api) -> None:
    user = await api.user()
    kb = await api.create_knowledge(user)  # overlap 50
    response = await api.client.patch(
        f"{KB}/{kb['id']}", json={"chunk_size": 100}, headers=user.headers
    )
    assert response.status_code == 200, response.text
    assert (response.json()["chunk_size"], response.json()["chunk_overlap"]) == (100, 50)


async def test_embedding_model_changes_only_while_empty(api: Api) -> None:
    user = await api.user()
    kb = await api.create_knowledge(user)
    url = f"{KB}/{kb['id']}"
    second = await api.llm("embedding")
    response = await api.client.patch(url, json={"embed_llm_id": second.id}, headers=user.headers)
    assert response.status_code == 200, response.text
    assert response.json()["embed_llm_id"] == second.id

    chat = await api.llm("chat")
    response = await api.client.patch(url, json={"embed_llm_id": chat.id}, headers=user.headers)
    assert_problem(response, 422, "embed_llm_id", "embedding model")

    await add_document(api, kb["id"], chunk_count=0)  # still being ingested counts too
    third = await api.llm("embedding")
    response = await api.client.patch(url, json={"embed_llm_id": third.id}, headers=user.headers)
    problem = assert_problem(response, 409, "embedding model", "no documents")
    assert problem["field"] == "embed_llm_id"
    assert (await api.client.get(url, headers=user.headers)).json()["embed_llm_id"] == second.id
    # Sending the current model, together with other changes, is not a change of model.
    response = await api.client.patch(
        url, json={"embed_llm_id": second.id, "name": "kept"}, headers=user.headers
    )
    assert response.status_code == 200, response.text
    assert response.json()["name"] == "kept"


async def test_recount_derives_counts_from_documents(api: Api) -> None:
    user = await api.user()
    kb = await api.create_knowledge(user)
    other = await api.create_knowledge(user)
    url = f"{KB}/{kb['id']}"
    first = await add_document(api, kb["id"], chunk_count=12, name="a.pdf")
    await add_document(api, kb["id"], chunk_count=30, name="b.pdf")
    await add_document(api, kb["id"], chunk_count=0, name="c.pdf")
    await add_document(api, other["id"], chunk_count=99)
    # Inserting rows does not change the counts: they are derived on recount only.
    assert (await api.client.get(url, headers=user.headers)).json()["document_count"] == 0

    knowledge = await api.run(lambda session: KnowledgeService(session).recount(kb["id"]))
    assert (knowledge.document_count, knowledge.total_chunks) == (3, 42)
    body = (await api.client.get(url, headers=user.headers)).json()
    assert (body["document_count"], body["total_chunks"]) == (3, 42)

    async def delete_first_and_recount(session: AsyncSession) -> Knowledge:
        await session.delete(await session.get(Document, first))
        await session.commit()
        return await KnowledgeService(session).recount(kb["id"])

    knowledge = await api.run(delete_first_and_recount)
    assert (knowledge.document_count, knowledge.total_chunks) == (2, 30)
    empty_id = (await api.create_knowledge(user))["id"]
    empty = await api.run(lambda session: KnowledgeService(session).recount(empty_id))
    assert (empty.document_count, empty.total_chunks) == (0, 0)
    with pytest.raises(NotFound):
        await api.run(lambda session: KnowledgeService(session).recount(987654321))


async def test_delete_cascades_documents_and_robot_links(api: Api) -> None:
    user = await api.user()
    kb = await api.create_knowledge(user)
    kept = await api.create_knowledge(user)
    await add_document(api, kb["id"], chunk_count=3)
    robot = await api.client.post(
        "/api/v1/robots",
        json={"name": "helper", "knowledge_ids": [kb["id"], kept["id"]]},
        headers=user.headers,
    )
    assert robot.status_code == 201, robot.text
    robot_url = f"/api/v1/robots/{robot.json()['id']}"

    response = await api.client.delete(f"{KB}/{kb['id']}", headers=user.headers)
    assert response.status_code == 204, response.text
    assert_problem(await api.client.get(f"{KB}/{kb['id']}", headers=user.headers), 404)

    async def leftovers(session: AsyncSession) -> list[Any]:
        knowledge = await session.get(Knowledge, kb["id"])
        documents = await session.exec(
            select(Document).where(col(Document.knowledge_id) == kb["id"])
        )
        links = await session.exec(
            select(RobotKnowledge).where(col(RobotKnowledge.knowledge_id) == kb["id"])
        )
        return [knowledge, *documents.all(), *links.all()]

    assert await api.run(leftovers) == [None]
    robot_now = (await api.client.get(robot_url, headers=user.headers)).json()
    assert robot_now["knowledge_ids"] == [kept["id"]]
    assert_problem(await api.client.delete(f"{KB}/{kb['id']}", headers=user.headers), 404)


@pytest.mark.parametrize(
    ("method", "path", "kwargs", "field"),
    [
        ("GET", f"{KB}/{HUGE_ID}", {}, "path.knowledge_id"),
        ("PATCH", f"{KB}/{HUGE_ID}", {"json": {"name": "x"}}, "path.knowledge_id"),
        ("DELETE", f"{KB}/{HUGE_ID}", {}, "path.knowledge_id"),
        ("GET", KB, {"params": {"user_id": HUGE_ID}}, "query.user_id"),
        ("POST", KB, {"json": {"name": "kb", "embed_llm_id": HUGE_ID}}, "embed_llm_id"),
    ],
    ids=["get", "patch", "delete", "list-owner", "create-model"],
)
async def test_ids_out_of_range(
    api: Api, method: str, path: str, kwargs: dict[str, Any], field: str
) -> None:
    user = await api.user()
    response = await api.client.request(method, path, headers=user.headers, **kwargs)
    assert_invalid(response, field)


async def test_model_id_out_of_range_in_a_change(api: Api) -> None:
    user = await api.user()
    kb = await api.create_knowledge(user)
    url = f"{KB}/{kb['id']}"
    response = await api.client.patch(url, json={"embed_llm_id": HUGE_ID}, headers=user.headers)
    assert "embed_llm_id" in error_fields(assert_problem(response, 422))
    assert (await api.client.get(url, headers=user.headers)).json() == kb
