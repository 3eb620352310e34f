"""The model registry (/llms) over HTTP, on SQLite and MariaDB: provider presets, validation of
the merged model, models in use, the options any user sees, and admin-only access to /llms and
/apikeys (the keys themselves: test_apikeys.py)."""

from __future__ import annotations

from typing import Any

import pytest

from rag_app.db.models import ApiKey, Llm
from rag_app.db.models.llm import ModelType
from rag_app.domain.models.service import require_model
from rag_app.errors import ValidationFailed
from tests.conftest import Api, SignedIn, assert_problem, error_fields

LLMS = "/api/v1/llms"
KEYS = "/api/v1/apikeys"


async def test_create_llm_fills_preset_defaults(api: Api, admin: SignedIn) -> None:
    chat = await api.create_llm(admin, base_url=None, max_tokens=8192)
    assert chat["base_url"] == "https://api.deepseek.com/v1"
    assert chat["user_id"] == admin.id
    assert (chat["model_type"], chat["dimension"], chat["status"]) == ("chat", None, 1)
    assert chat["has_api_key"] is False
    local = await api.create_llm(
        admin, provider="local", model_type="embedding", model_name="all-MiniLM-L6-v2"
    )
    assert (local["dimension"], local["base_url"]) == (384, None)
    qwen = await api.create_llm(
        admin,
        provider="qwen",
        model_type="embedding",
        model_name="text-embedding-v3",
        dimension=1024,
        base_url="https://dashscope.example.com/compatible-mode/v1/",
    )
    assert qwen["base_url"] == "https://dashscope.example.com/compatible-mode/v1"
    azure = await api.create_llm(
        admin,
        provider="azure",
        model_name="gpt-4o",
        base_url="https://my-resource.openai.azure.com",
        api_version="2024-10-21",
    )
    response = await api.client.get(f"{LLMS}/{azure['id']}", headers=admin.headers)
    assert response.status_code == 200
    assert response.json() == azure


@pytest.mark.parametrize(
    ("fields", "field"),
    [
        ({"provider": "nonesuch"}, "provider"),
        ({"provider": "azure", "api_version": "2024-10-21"}, "base_url"),
        ({"provider": "azure", "base_url": "https://r.openai.azure.com"}, "api_version"),
        ({"provider": "openai-compatible"}, "base_url"),
        ({"provider": "local", "model_type": "embedding", "base_url": "http://x"}, "base_url"),
        ({"model_type": "embedding"}, "model_type"),  # deepseek serves chat only
        ({"provider": "openai", "model_type": "embedding"}, "dimension"),
        ({"provider": "openai", "model_type": "embedding", "dimension": -1}, "dimension"),
        ({"dimension": 768}, "dimension"),
        ({"model_type": "vision"}, "model_type"),
        ({"base_url": "ftp://example.com"}, "base_url"),
        ({"status": 2}, "status"),
        ({"api_key": "sk-nope"}, "api_key"),
        ({"max_tokens": 2**40}, "max_tokens"),
        ({"provider": "openai", "model_type": "embedding", "dimension": 2**31}, "dimension"),
    ],
)
async def test_create_llm_validation(
    api: Api, admin: SignedIn, fields: dict[str, Any], field: str
) -> None:
    body = {
        "provider": "deepseek",
        "name": "m",
        "model_name": "deepseek-chat",
        "model_type": "chat",
    }
    response = await api.client.post(LLMS, json={**body, **fields}, headers=admin.headers)
    assert field in error_fields(assert_problem(response, 422))


async def test_list_llms_paged_and_filtered(api: Api, admin: SignedIn) -> None:
    ids = {(await api.create_llm(admin, provider="xinference"))["id"] for _ in range(3)}
    rerank = await api.create_llm(admin, provider="xinference", model_type="rerank")
    await api.create_llm(admin, provider="moonshot")
    with_key = min(ids)
    await api.create_api_key(admin, with_key)
    response = await api.client.get(
        LLMS, params={"provider": "xinference", "model_type": "chat"}, headers=admin.headers
    )
    assert response.status_code == 200, response.text
    page = response.json()
    assert ids <= {item["id"] for item in page["items"]}
    assert rerank["id"] not in {item["id"] for item in page["items"]}
    assert all(i["provider"] == "xinference" and i["model_type"] == "chat" for i in page["items"])
    assert {i["id"] for i in page["items"] if i["has_api_key"]} & ids == {with_key}
    response = await api.client.get(LLMS, params={"page_size": 2}, headers=admin.headers)
    page = response.json()
    assert (len(page["items"]), page["page"], page["page_size"]) == (2, 1, 2)
    assert page["total"] >= 5
    bad_type = await api.client.get(LLMS, params={"model_type": "vision"}, headers=admin.headers)
    assert_problem(bad_type, 422, "model_type")
    bad_provider = await api.client.get(LLMS, params={"provider": "x"}, headers=admin.headers)
    assert_problem(bad_provider, 422, "provider")


async def test_get_missing_llm(api: Api, admin: SignedIn) -> None:
    assert_problem(await api.client.get(f"{LLMS}/999999", headers=admin.headers), 404, "999999")


async def test_update_llm_validates_the_merged_model(api: Api, admin: SignedIn) -> None:
    llm = await api.create_llm(admin, provider="ollama", model_name="qwen2.5:7b")
    url = f"{LLMS}/{llm['id']}"
    response = await api.client.patch(
        url, json={"provider": "vllm", "name": "renamed", "status": 0}, headers=admin.headers
    )
    assert response.status_code == 200, response.text
    body = response.json()
    # The old preset URL does not follow the model to another provider.
    assert (body["name"], body["base_url"], body["status"]) == (
        "renamed",
        "http://127.0.0.1:8000/v1",
        0,
    )
    assert body["updated_at"] >= llm["updated_at"]
    for change, field in [
        ({"model_type": "embedding"}, "dimension"),
        ({"provider": "moonshot", "model_type": "rerank"}, "model_type"),
        ({"provider": "azure"}, "base_url"),
        ({"name": None}, "name"),
        ({"user_id": 1}, "user_id"),
    ]:
        response = await api.client.patch(url, json=change, headers=admin.headers)
        assert field in error_fields(assert_problem(response, 422)), change
    response = await api.client.patch(
        url, json={"model_type": "embedding", "dimension": 1024}, headers=admin.headers
    )
    assert (response.json()["model_type"], response.json()["dimension"]) == ("embedding", 1024)
    response = await api.client.patch(url, json={"model_type": "chat"}, headers=admin.headers)
    assert response.json()["dimension"] is None
    missing = await api.client.patch(f"{LLMS}/999999", json={}, headers=admin.headers)
    assert_problem(missing, 404)


async def test_models_in_use_keep_their_type_and_dimension(api: Api, admin: SignedIn) -> None:
    embed = await api.create_llm(admin, provider="openai", model_type="embedding", dimension=8)
    await api.knowledge(admin, name="HR docs", embed_llm_id=embed["id"])
    url = f"{LLMS}/{embed['id']}"
    response = await api.client.patch(url, json={"dimension": 16}, headers=admin.headers)
    assert_problem(response, 409, "dimension", "HR docs")
    response = await api.client.patch(url, json={"model_type": "chat"}, headers=admin.headers)
    assert_problem(response, 409, "in use", "HR docs")
    renamed = await api.client.patch(url, json={"name": "still fine"}, headers=admin.headers)
    assert renamed.status_code == 200, renamed.text


async def test_delete_llm_in_use_names_its_users(api: Api, admin: SignedIn) -> None:
    owner = await api.user()
    embed = await api.create_llm(admin, provider="openai", model_type="embedding", dimension=8)
    kb = await api.knowledge(owner, name="HR docs", embed_llm_id=embed["id"])
    chat = await api.create_llm(admin)
    rerank = await api.create_llm(admin, provider="siliconflow", model_type="rerank")
    robot = await api.robot(owner, name="helper", chat_llm_id=chat["id"])
    other = await api.robot(owner, name="ranker", rerank_llm_id=rerank["id"])
    response = await api.client.delete(f"{LLMS}/{embed['id']}", headers=admin.headers)
    assert_problem(response, 409, f"model {embed['id']} is used by knowledge bases: 'HR docs'")
    assert f"(id {kb.id})" in response.json()["detail"]
    response = await api.client.delete(f"{LLMS}/{chat['id']}", headers=admin.headers)
    body = assert_problem(response, 409, f"robots: 'helper' (id {robot.id})")
    assert body["used_by"]["robots"] == [{"id": robot.id, "name": "helper"}]
    response = await api.client.delete(f"{LLMS}/{rerank['id']}", headers=admin.headers)
    assert_problem(response, 409, f"'ranker' (id {other.id})")


async def test_delete_unused_llm_deletes_its_keys(api: Api, admin: SignedIn) -> None:
    llm = await api.create_llm(admin)
    key = await api.create_api_key(admin, llm["id"])
    response = await api.client.delete(f"{LLMS}/{llm['id']}", headers=admin.headers)
    assert response.status_code == 204, response.text
    assert_problem(await api.client.get(f"{LLMS}/{llm['id']}", headers=admin.headers), 404)
    assert await api.run(lambda session: session.get(ApiKey, key["id"])) is None
    again = await api.client.delete(f"{LLMS}/{llm['id']}", headers=admin.headers)
    assert_problem(again, 404)


async def test_options_for_any_user_shows_enabled_models_only(api: Api, admin: SignedIn) -> None:
    user = await api.user()
    enabled = await api.create_llm(admin, provider="llamacpp", max_tokens=2048)
    disabled = await api.create_llm(admin, provider="llamacpp", status=0)
    embed = await api.create_llm(admin, provider="ollama", model_type="embedding", dimension=768)
    await api.create_api_key(admin, enabled["id"])
    response = await api.client.get(f"{LLMS}/options", headers=user.headers)
    assert response.status_code == 200, response.text
    items = {item["id"]: item for item in response.json()["items"]}
    assert set(response.json()) == {"items"}
    assert enabled["id"] in items
    assert embed["id"] in items
    assert disabled["id"] not in items
    assert items[enabled["id"]] == {
        "id": enabled["id"],
        "name": enabled["name"],
        "provider": "llamacpp",
        "model_name": "deepseek-chat",
        "model_type": "chat",
        "dimension": None,
        "max_tokens": 2048,
    }
    response = await api.client.get(
        f"{LLMS}/options", params={"model_type": "embedding"}, headers=user.headers
    )
    assert {i["model_type"] for i in response.json()["items"]} == {"embedding"}
    bad = await api.client.get(f"{LLMS}/options", params={"model_type": "x"}, headers=user.headers)
    assert_problem(bad, 422, "model_type")
    assert_problem(await api.client.get(f"{LLMS}/options"), 401)


async def test_providers_lists_presets(api: Api, admin: SignedIn) -> None:
    response = await api.client.get(f"{LLMS}/providers", headers=admin.headers)
    assert response.status_code == 200, response.text
    presets = {p["name"]: p for p in response.json()}
    assert presets["azure"]["requires_api_version"] is True
    assert presets["azure"]["requires_base_url"] is True
    assert presets["local"]["model_types"] == ["embedding", "rerank"]


ADMIN_ONLY = [
    ("GET", LLMS),
    ("GET", f"{LLMS}/providers"),
    ("GET", f"{LLMS}/1"),
    ("POST", LLMS),
    ("PATCH", f"{LLMS}/1"),
    ("DELETE", f"{LLMS}/1"),
    ("GET", KEYS),
    ("GET", f"{KEYS}/1"),
    ("POST", KEYS),
    ("PATCH", f"{KEYS}/1"),
    ("DELETE", f"{KEYS}/1"),
]


@pytest.mark.parametrize(("method", "path"), [m for m in ADMIN_ONLY if m[1].endswith("/1")])
@pytest.mark.parametrize("bad_id", [0, 2**63])
async def test_ids_out_of_range(
    api: Api, admin: SignedIn, method: str, path: str, bad_id: int
) -> None:
    # 2**63 does not fit a BIGINT: it must be refused before it reaches the driver.
    path = path.removesuffix("/1") + f"/{bad_id}"
    body = {} if method == "PATCH" else None
    response = await api.client.request(method, path, json=body, headers=admin.headers)
    name = "llm_id" if path.startswith(LLMS) else "key_id"
    assert_problem(response, 422, name)


@pytest.mark.parametrize(("method", "path"), ADMIN_ONLY)
async def test_admin_only_endpoints(api: Api, method: str, path: str) -> None:
    body = {} if method in ("POST", "PATCH") else None
    assert_problem(await api.client.request(method, path, json=body), 401, "sign in")
    user = await api.user()
    response = await api.client.request(method, path, json=body, headers=user.headers)
    assert_problem(response, 403, "administrator")


# --- services other domains call ---------------------------------------------------------


async def test_require_model_checks_type_and_status(api: Api, admin: SignedIn) -> None:
    chat = await api.create_llm(admin)
    disabled = await api.create_llm(
        admin, provider="openai", model_type="embedding", dimension=8, status=0
    )

    async def require(llm_id: int, model_type: ModelType) -> Llm:
        return await api.run(
            lambda session: require_model(session, llm_id, model_type, "embed_llm_id")
        )

    assert (await require(chat["id"], ModelType.chat)).id == chat["id"]
    for llm_id, model_type, message in [
        (chat["id"], ModelType.embedding, "is a chat model"),
        (disabled["id"], ModelType.embedding, "disabled"),
        (999999, ModelType.chat, "does not exist"),
    ]:
        with pytest.raises(ValidationFailed, match=message) as caught:
            await require(llm_id, model_type)
        assert caught.value.extra["errors"][0]["field"] == "embed_llm_id"
