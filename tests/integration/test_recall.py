"""Batch recall tests over HTTP, on SQLite and MariaDB: a real knowledge base (English and
Chinese documents), a background run whose progress reaches its total, metrics small enough to
check by hand, validation and ownership."""

from __future__ import annotations

import asyncio
import math
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from typing import Any

import pytest
from sqlmodel import col, func, select

from rag_app.db.models import RecallTest
from rag_app.db.types import utcnow
from rag_app.domain.recall.metrics import evaluate, first_occurrences
from tests.conftest import Api, SignedIn, assert_invalid, assert_problem
from tests.integration.test_documents import new_kb
from tests.integration.test_retrieval_api import ready_kb

TESTS = "/api/v1/recall/tests"
CHINESE_QUESTION = "活期存款的利率是多少？"
ENGLISH_QUESTION = "How many vacation days do staff get?"


def test_metrics_by_hand_and_from_many_threads() -> None:
    expected = {"a": {"d1": 1}, "b": {"d2": 1, "d3": 1}}
    rankings = {"a": ["d9", "d1"], "b": ["d3"]}
    metrics = ["recall@2", "mrr@2", "ndcg@2"]
    result = evaluate(expected, rankings, metrics)
    third = 1 / math.log2(3)  # the discount at rank 2
    assert result.per_query["a"] == pytest.approx({"recall@2": 1, "mrr@2": 0.5, "ndcg@2": third})
    assert result.per_query["b"] == pytest.approx(
        {"recall@2": 0.5, "mrr@2": 1, "ndcg@2": 1 / (1 + third)}
    )
    assert result.means["recall@2"] == pytest.approx(0.75)
    # numba's default threading layer aborts the process on concurrent parallel calls: the
    # API scores tests in worker threads, so evaluate serialises them.
    many = {f"q{n}": {f"d{n}": 1} for n in range(1000)}
    ranked = {f"q{n}": [f"d{(n + i) % 1000}" for i in range(20)] for n in range(1000)}
    with ThreadPoolExecutor(4) as pool:
        runs = list(pool.map(lambda _: evaluate(many, ranked, metrics).means, range(8)))
    assert all(run == pytest.approx({"recall@2": 1, "mrr@2": 1, "ndcg@2": 1}) for run in runs)
    assert first_occurrences([3, None, 3, 1, 2], limit=2) == [3, 1]


async def documents_by_name(api: Api, user: SignedIn, kb_id: int) -> dict[str, int]:
    response = await api.client.get(f"/api/v1/knowledge/{kb_id}/documents", headers=user.headers)
    assert response.status_code == 200, response.text
    return {item["file_name"]: item["id"] for item in response.json()["items"]}


async def start(api: Api, user: SignedIn, body: dict[str, Any]) -> dict[str, Any]:
    response = await api.client.post(TESTS, headers=user.headers, json=body)
    assert response.status_code == 202, response.text
    created: dict[str, Any] = response.json()
    assert created["status"] in {"queued", "running"}
    assert created["progress"]["total"] == len(body["queries"])
    return created


async def wait_test(api: Api, user: SignedIn, test_id: int) -> dict[str, Any]:
    # Generous: the first ranx call in a fresh environment compiles its metrics (numba).
    deadline = time.monotonic() + 300
    while True:
        response = await api.client.get(f"{TESTS}/{test_id}", headers=user.headers)
        assert response.status_code == 200, response.text
        body: dict[str, Any] = response.json()
        assert 0 <= body["progress"]["done"] <= body["progress"]["total"]
        if body["status"] in {"completed", "failed"}:
            return body
        assert time.monotonic() < deadline, f"recall test {test_id} still {body['status']}"
        await asyncio.sleep(0.2)


async def test_one_hit_at_rank_1_and_one_miss(api: Api) -> None:
    user = await api.user()
    kb = await ready_kb(api, user)
    ids = await documents_by_name(api, user, kb["id"])
    chinese, english = ids["银行业务.txt"], ids["handbook.md"]
    created = await start(
        api,
        user,
        {
            "knowledge_ids": [kb["id"]],
            "top_k": 1,
            "queries": [
                {"query": CHINESE_QUESTION, "expected_document_ids": [chinese]},
                # Deliberately wrong: the leave policy is in the English handbook.
                {"query": ENGLISH_QUESTION, "expected_document_ids": [chinese]},
            ],
        },
    )
    assert created["mode"] == "hybrid"
    assert created["knowledge_ids"] == [kb["id"]]

    body = await wait_test(api, user, created["id"])
    assert body["status"] == "completed", body
    assert body["error_msg"] is None
    assert body["progress"] == {"done": 2, "total": 2}
    hit, miss = body["results"]
    assert hit["hits"] == [{"document_id": chinese, "rank": 1}]
    assert hit["retrieved_document_ids"] == [chinese]
    assert (hit["recall"], hit["reciprocal_rank"], hit["ndcg"]) == (1.0, 1.0, 1.0)
    assert miss["hits"] == [{"document_id": chinese, "rank": None}]
    assert miss["retrieved_document_ids"] == [english]
    assert (miss["recall"], miss["reciprocal_rank"], miss["ndcg"]) == (0.0, 0.0, 0.0)
    assert miss["latency_ms"] > 0

    metrics = body["metrics"]
    assert metrics["k"] == 1
    assert metrics["queries"] == 2
    # By hand: recall (1 + 0) / 2, MRR (1/1 + 0) / 2, nDCG@1 (1 + 0) / 2.
    assert metrics["recall_at_k"] == pytest.approx(0.5)
    assert metrics["mrr"] == pytest.approx(0.5)
    assert metrics["ndcg_at_k"] == pytest.approx(0.5)
    assert metrics["library"].startswith("ranx ")

    listing = await api.client.get(TESTS, headers=user.headers)
    assert listing.status_code == 200, listing.text
    page = listing.json()
    assert page["total"] == 1
    assert [item["id"] for item in page["items"]] == [created["id"]]
    assert "results" not in page["items"][0]
    assert page["items"][0]["metrics"]["mrr"] == pytest.approx(0.5)


async def test_a_robot_searches_with_its_own_settings(api: Api) -> None:
    user = await api.user()
    kb = await ready_kb(api, user)
    ids = await documents_by_name(api, user, kb["id"])
    chinese, english = ids["银行业务.txt"], ids["handbook.md"]
    robot = await api.create_robot(
        user, knowledge_ids=[kb["id"]], top_k=3, retrieval={"mode": "keyword"}
    )
    created = await start(
        api,
        user,
        {
            "robot_id": robot["id"],
            "top_k": 5,
            "queries": [
                # The keyword leg finds the Chinese document; no English word matches.
                {"query": "住房贷款需要什么材料", "expected_document_ids": [chinese, english]},
            ],
        },
    )
    assert created["mode"] == "keyword"  # the robot's
    assert created["robot_id"] == robot["id"]
    body = await wait_test(api, user, created["id"])
    assert body["status"] == "completed", body
    assert body["progress"] == {"done": 1, "total": 1}
    (row,) = body["results"]
    assert row["retrieved_document_ids"] == [chinese]
    assert row["hits"] == [
        {"document_id": chinese, "rank": 1},
        {"document_id": english, "rank": None},
    ]
    metrics = body["metrics"]
    assert metrics["recall_at_k"] == pytest.approx(0.5)
    assert metrics["mrr"] == pytest.approx(1.0)
    # Two relevant documents, one found at rank 1: DCG 1, ideal DCG 1 + 1/log2(3).
    assert metrics["ndcg_at_k"] == pytest.approx(1 / (1 + 1 / math.log2(3)))


async def test_progress_of_a_larger_set_reaches_its_total(api: Api) -> None:
    user = await api.user()
    kb = await ready_kb(api, user)
    ids = await documents_by_name(api, user, kb["id"])
    queries = [
        {"query": f"{CHINESE_QUESTION} {n}", "expected_document_ids": [ids["银行业务.txt"]]}
        for n in range(40)
    ]
    created = await start(api, user, {"knowledge_ids": [kb["id"]], "queries": queries})
    seen = set()
    deadline = time.monotonic() + 300
    while True:
        body = (await api.client.get(f"{TESTS}/{created['id']}", headers=user.headers)).json()
        seen.add(body["progress"]["done"])
        if body["status"] in {"completed", "failed"}:
            break
        assert time.monotonic() < deadline
        await asyncio.sleep(0.1)
    assert body["status"] == "completed", body
    assert body["progress"] == {"done": 40, "total": 40}
    assert len(body["results"]) == 40
    assert body["metrics"]["recall_at_k"] == pytest.approx(1.0)
    assert max(seen) == 40


async def test_a_test_whose_process_died_reads_as_failed(api: Api) -> None:
    user = await api.user()
    kb = await new_kb(api, user)
    silent_since = utcnow() - timedelta(seconds=api.ctx.settings.jobs.stale_after_seconds + 5)
    query = {"query": "x", "expected_document_ids": [1]}
    stale, fresh = [
        await api.insert(
            RecallTest(
                user_id=user.id,
                knowledge_ids=[kb["id"]],
                status="running",
                progress=1,
                total_queries=3,
                queries=[query] * 3,
                updated_at=updated_at,
            )
        )
        for updated_at in (silent_since, utcnow())
    ]
    listing = (await api.client.get(TESTS, headers=user.headers)).json()
    statuses = {item["id"]: item["status"] for item in listing["items"]}
    assert statuses == {stale.id: "failed", fresh.id: "running"}
    body = (await api.client.get(f"{TESTS}/{stale.id}", headers=user.headers)).json()
    assert body["status"] == "failed"
    assert "interrupted" in body["error_msg"]
    assert body["progress"] == {"done": 1, "total": 3}
    assert body["results"] == []


async def count_tests(api: Api, user: SignedIn) -> int:
    async def query(session: Any) -> int:
        statement = select(func.count()).where(col(RecallTest.user_id) == user.id)
        return int((await session.exec(statement)).one())

    return await api.run(query)


async def test_validation_names_the_field(api: Api) -> None:
    user = await api.user()
    kb = await new_kb(api, user)
    other_kb = await new_kb(api, user)
    # A document id of the user's, but of another knowledge base than the one searched.
    doc = (
        await api.client.post(
            f"/api/v1/knowledge/{other_kb['id']}/documents",
            headers=user.headers,
            files=[("files", ("a.md", b"# A\n\nSome text about something."))],
        )
    ).json()["items"][0]
    one = [{"query": "x", "expected_document_ids": [doc["id"]]}]

    async def post(**body: Any) -> Any:
        return await api.client.post(TESTS, headers=user.headers, json=body)

    assert_invalid(await post(knowledge_ids=[kb["id"]], queries=[]), "queries")
    too_many = one * 1001
    assert_invalid(await post(knowledge_ids=[kb["id"]], queries=too_many), "queries")
    assert_invalid(await post(knowledge_ids=[kb["id"]], queries=one, top_k=0), "top_k")
    assert_invalid(await post(knowledge_ids=[kb["id"]], queries=one, top_k=101), "top_k")
    assert_invalid(await post(knowledge_ids=[kb["id"]], queries=one, mode="all"), "mode")
    assert_invalid(await post(queries=one), "knowledge_ids")
    robot = await api.create_robot(user, knowledge_ids=[kb["id"]])
    assert_invalid(
        await post(knowledge_ids=[kb["id"]], robot_id=robot["id"], queries=one), "knowledge_ids"
    )
    assert_invalid(await post(knowledge_ids=[], queries=one), "knowledge_ids")
    empty_query = [{"query": "", "expected_document_ids": [doc["id"]]}]
    assert_invalid(await post(knowledge_ids=[kb["id"]], queries=empty_query), "queries.0.query")
    no_expected = [{"query": "x", "expected_document_ids": []}]
    assert_invalid(
        await post(knowledge_ids=[kb["id"]], queries=no_expected),
        "queries.0.expected_document_ids",
    )
    assert_invalid(
        await post(knowledge_ids=[kb["id"]], queries=one), "queries.0.expected_document_ids"
    )
    bare_robot = await api.create_robot(user)
    assert_invalid(await post(robot_id=bare_robot["id"], queries=one), "robot_id")
    assert await count_tests(api, user) == 0
    # The right knowledge base is accepted.
    accepted = await post(knowledge_ids=[other_kb["id"]], queries=one)
    assert accepted.status_code == 202, accepted.text


async def test_ownership(api: Api) -> None:
    owner, other = await api.user(), await api.user()
    kb = await new_kb(api, owner)
    theirs = await new_kb(api, other)
    robot = await api.create_robot(owner, knowledge_ids=[kb["id"]])
    doc = (
        await api.client.post(
            f"/api/v1/knowledge/{kb['id']}/documents",
            headers=owner.headers,
            files=[("files", ("a.md", b"# A\n\nSome text about something."))],
        )
    ).json()["items"][0]
    one = [{"query": "x", "expected_document_ids": [doc["id"]]}]

    async def post(user: SignedIn, **body: Any) -> Any:
        return await api.client.post(TESTS, headers=user.headers, json=body)

    # Someone else's knowledge base (alone or beside one's own) or robot: 404, nothing stored.
    assert_problem(await post(other, knowledge_ids=[kb["id"]], queries=one), 404, "knowledge")
    mixed = await post(other, knowledge_ids=[theirs["id"], kb["id"]], queries=one)
    assert_problem(mixed, 404, f"knowledge base {kb['id']}")
    assert_problem(await post(other, robot_id=robot["id"], queries=one), 404, "robot")
    assert await count_tests(api, other) == 0
    assert_problem(await api.client.post(TESTS, json={"knowledge_ids": [kb["id"]]}), 401)

    mine = await start(api, owner, {"knowledge_ids": [kb["id"]], "queries": one})
    assert_problem(await api.client.get(f"{TESTS}/{mine['id']}", headers=other.headers), 404)
    assert_problem(await api.client.get(f"{TESTS}/{mine['id']}"), 401)
    listing = (await api.client.get(TESTS, headers=other.headers)).json()
    assert listing == {"items": [], "total": 0, "page": 1, "page_size": 20}
    assert_problem(await api.client.get(f"{TESTS}/987654321", headers=owner.headers), 404)
    admin = await api.admin()
    seen = await api.client.get(f"{TESTS}/{mine['id']}", headers=admin.headers)
    assert seen.status_code == 200, seen.text
    await wait_test(api, owner, mine["id"])
