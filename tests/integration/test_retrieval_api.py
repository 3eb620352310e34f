"""Retrieval tests over HTTP: every leg's rank and score, fused and final scores, timings."""

from __future__ import annotations

from typing import Any

from tests.conftest import Api, SignedIn, assert_invalid, assert_problem
from tests.integration.test_documents import new_kb, upload, wait_done

CHINESE = (
    "活期存款利率\n\n本行活期存款年利率为百分之零点二五，按季结息，每季度末月的二十日为结息日。\n\n"
    "信用卡年费\n\n普通信用卡首年免年费，当年刷卡满六次可免次年年费，白金卡年费另行规定。\n\n"
    "个人住房贷款\n\n申请个人住房贷款需要提供身份证明、收入证明以及购房合同，最长期限三十年。\n"
)
ENGLISH = (
    "# Leave policy\n\nEmployees receive twenty days of paid annual leave each calendar year.\n\n"
    "# Expense claims\n\nTravel expenses are reimbursed within thirty days of a complete claim.\n\n"
    "# Security\n\nLaptops must use full disk encryption and a screen lock after five minutes.\n"
)


async def ready_kb(api: Api, user: SignedIn) -> dict[str, Any]:
    kb = await new_kb(api, user, chunk_size=100, chunk_overlap=0)
    items = (
        await upload(
            api,
            user,
            kb["id"],
            ("银行业务.txt", CHINESE.encode()),
            ("handbook.md", ENGLISH.encode()),
        )
    ).json()["items"]
    for item in items:
        assert (await wait_done(api, user, item["id"]))["status"] == "completed"
    return kb


async def test_chinese_question_found_by_the_keyword_leg(api: Api) -> None:
    user = await api.user()
    kb = await ready_kb(api, user)
    url = f"/api/v1/knowledge/{kb['id']}/retrieval-test"
    response = await api.client.post(
        url, headers=user.headers, json={"query": "活期存款的利率是多少？", "mode": "hybrid"}
    )
    assert response.status_code == 200, response.text
    body = response.json()
    best = body["items"][0]
    assert "活期存款" in best["text"]
    assert best["keyword_rank"] == 1
    assert best["file_name"] == "银行业务.txt"
    assert best["fused_score"] is not None
    assert set(body["timings_ms"]) >= {"vector", "keyword", "fusion", "total"}
    assert body["mode"] == "hybrid"

    keyword = await api.client.post(
        url, headers=user.headers, json={"query": "信用卡年费", "mode": "keyword", "top_k": 1}
    )
    only = keyword.json()["items"]
    assert len(only) == 1
    assert "年费" in only[0]["text"]
    assert only[0]["vector_score"] is None


async def test_english_question_found_by_the_vector_leg(api: Api) -> None:
    user = await api.user()
    kb = await ready_kb(api, user)
    response = await api.client.post(
        f"/api/v1/knowledge/{kb['id']}/retrieval-test",
        headers=user.headers,
        json={"query": "How many vacation days do staff get?", "mode": "vector", "top_k": 2},
    )
    body = response.json()
    assert "annual leave" in body["items"][0]["text"]
    assert body["items"][0]["vector_rank"] == 1
    assert 0 < body["items"][0]["vector_score"] <= 1
    assert body["items"][0]["keyword_rank"] is None


async def test_robot_retrieval_uses_its_settings(api: Api) -> None:
    user = await api.user()
    kb = await ready_kb(api, user)
    robot = await api.create_robot(
        user, knowledge_ids=[kb["id"]], top_k=1, retrieval={"mode": "keyword"}
    )
    response = await api.client.post(
        f"/api/v1/robots/{robot['id']}/retrieval-test",
        headers=user.headers,
        json={"query": "住房贷款需要什么材料"},
    )
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["mode"] == "keyword"
    assert len(body["items"]) == 1
    assert "住房贷款" in body["items"][0]["text"]


async def test_validation_auth_and_ownership(api: Api) -> None:
    owner, other = await api.user(), await api.user()
    kb = await new_kb(api, owner)
    robot = await api.create_robot(owner, knowledge_ids=[kb["id"]])
    for url in (
        f"/api/v1/knowledge/{kb['id']}/retrieval-test",
        f"/api/v1/robots/{robot['id']}/retrieval-test",
    ):
        assert_invalid(
            await api.client.post(url, headers=owner.headers, json={"query": ""}), "query"
        )
        assert_invalid(
            await api.client.post(url, headers=owner.headers, json={"query": "x", "top_k": 0}),
            "top_k",
        )
        assert_invalid(
            await api.client.post(url, headers=owner.headers, json={"query": "x", "mode": "all"}),
            "mode",
        )
        assert_problem(await api.client.post(url, json={"query": "x"}), 401)
        foreign = await api.client.post(url, headers=other.headers, json={"query": "x"})
        assert_problem(foreign, 404)
