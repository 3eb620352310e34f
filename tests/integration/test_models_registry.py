"""The model registry (/llms) and provider API keys (/apikeys) over HTTP, on SQLite and MariaDB."""

from __future__ import annotations

import logging
import uuid
from collections.abc import Awaitable, Callable
from functools import partial
from typing import Any, TypeVar

import pytest

from rag_app.db.models import ApiKey, Knowledge, Llm, Robot
from rag_app.db.models.llm import ModelType
from rag_app.domain.models.service import require_model, resolve_api_key
from rag_app.domain.users.schemas import UserCreate
from rag_app.domain.users.service import UserService
from rag_app.errors import ValidationFailed
from tests.conftest import PASSWORD, Api, SignedIn, assert_problem

LLMS = "/api/v1/llms"
KEYS = "/api/v1/apikeys"
KEY_FIELDS = {
    "id",
    "llm_id",
    "alias",
    "key_mask",
    "description",
    "status",
    "created_at",
    "updated_at",
}

E = TypeVar("E")
T = TypeVar("T")


def in_app_loop(api: Api, work: Callable[[], Awaitable[T]]) -> T:
    """Run database work on the app's event loop: the test client serves the app from its own
    portal thread, and aiomysql connections only work on the loop that opened them, so using
    the app's pool from the test's loop (as ``Api.insert`` and ``Api.admin`` do) breaks on
    MariaDB."""
    return api.client.blocking_portal.call(work)


def insert(api: Api, entity: E) -> E:
    return in_app_loop(api, lambda: api.insert(entity))


def stored_key(api: Api, key_id: int) -> ApiKey | None:
    async def load() -> ApiKey | None:
        async with api.ctx.sessionmaker() as session:
            return await session.get(ApiKey, key_id)

    return in_app_loop(api, load)


def resolve(api: Api, llm_id: int) -> str | None:
    async def run() -> str | None:
        async with api.ctx.sessionmaker() as session:
            return await resolve_api_key(session, api.ctx.secret_box, llm_id)

    return in_app_loop(api, run)


@pytest.fixture
async def admin(api: Api) -> SignedIn:
    name = f"admin_{uuid.uuid4().hex[:8]}"

    async def create() -> None:
        async with api.ctx.sessionmaker() as session:
            await UserService(session, api.ctx.passwords).create(
                UserCreate(
                    username=name, email=f"{name}@example.com", password=PASSWORD, role="admin"
                )
            )

    in_app_loop(api, create)
    return await api.login(name, PASSWORD)


def new_key() -> str:
    return f"sk-test-{uuid.uuid4().hex}"


async def create_llm(api: Api, admin: SignedIn, **fields: Any) -> dict[str, Any]:
    body = {
        "provider": "deepseek",
        "name": f"chat-{uuid.uuid4().hex[:6]}",
        "model_name": "deepseek-chat",
        "model_type": "chat",
        **fields,
    }
    response = await api.client.post(LLMS, json=body, headers=admin.headers)
    assert response.status_code == 201, response.text
    result: dict[str, Any] = response.json()
    return result


async def create_key(api: Api, admin: SignedIn, llm_id: int, **fields: Any) -> dict[str, Any]:
    body = {"llm_id": llm_id, "alias": "main", "api_key": new_key(), **fields}
    response = await api.client.post(KEYS, json=body, headers=admin.headers)
    assert response.status_code == 201, response.text
    result: dict[str, Any] = response.json()
    return result


def json_has_no(bodies: list[str], *secrets: str) -> bool:
    return not any(secret in body for body in bodies for secret in secrets)


def error_fields(body: dict[str, Any]) -> set[str]:
    return {e["field"] for e in body["errors"]}


# --- /llms ---------------------------------------------------------------------------------


async def test_create_llm_fills_preset_defaults(api: Api, admin: SignedIn) -> None:
    chat = await create_llm(api, admin, base_url=None, max_tokens=8192)
    assert chat["base_url"] == "https://api.deepseek.com/v1"
    assert chat["user_id"] == admin.id
    assert (chat["model_type"], chat["dimension"], chat["status"]) == ("chat", None, 1)
    assert chat["has_api_key"] is False
    local = await create_llm(
        api, admin, provider="local", model_type="embedding", model_name="all-MiniLM-L6-v2"
    )
    assert (local["dimension"], local["base_url"]) == (384, None)
    qwen = await create_llm(
        api,
        admin,
        provider="qwen",
        model_type="embedding",
        model_name="text-embedding-v3",
        dimension=1024,
        base_url="https://dashscope.example.com/compatible-mode/v1/",
    )
    assert qwen["base_url"] == "https://dashscope.example.com/compatible-mode/v1"
    azure = await create_llm(
        api,
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
    ids = {(await create_llm(api, admin, provider="xinference"))["id"] for _ in range(3)}
    rerank = await create_llm(api, admin, provider="xinference", model_type="rerank")
    await create_llm(api, admin, provider="moonshot")
    with_key = min(ids)
    await create_key(api, admin, with_key)
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
    llm = await create_llm(api, admin, provider="ollama", model_name="qwen2.5:7b")
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
    embed = await create_llm(api, admin, provider="openai", model_type="embedding", dimension=8)
    insert(
        api,
        Knowledge(
            user_id=admin.id,
            name="HR docs",
            embed_llm_id=embed["id"],
            vector_collection_name=f"kb_{uuid.uuid4().hex}",
        ),
    )
    url = f"{LLMS}/{embed['id']}"
    response = await api.client.patch(url, json={"dimension": 16}, headers=admin.headers)
    assert_problem(response, 409, "dimension", "HR docs")
    response = await api.client.patch(url, json={"model_type": "chat"}, headers=admin.headers)
    assert_problem(response, 409, "in use", "HR docs")
    renamed = await api.client.patch(url, json={"name": "still fine"}, headers=admin.headers)
    assert renamed.status_code == 200, renamed.text


async def test_delete_llm_in_use_names_its_users(api: Api, admin: SignedIn) -> None:
    owner = await api.user()
    embed = await create_llm(api, admin, provider="openai", model_type="embedding", dimension=8)
    kb = insert(
        api,
        Knowledge(
            user_id=owner.id,
            name="HR docs",
            embed_llm_id=embed["id"],
            vector_collection_name=f"kb_{uuid.uuid4().hex}",
        ),
    )
    chat = await create_llm(api, admin)
    rerank = await create_llm(api, admin, provider="siliconflow", model_type="rerank")
    robot = insert(api, Robot(user_id=owner.id, name="helper", chat_llm_id=chat["id"]))
    other = insert(api, Robot(user_id=owner.id, name="ranker", rerank_llm_id=rerank["id"]))
    response = await api.client.delete(f"{LLMS}/{embed['id']}", headers=admin.headers)
    assert_problem(response, 409, f"model {embed['id']} is used by knowledge bases: 'HR docs'")
    assert f"(id {kb.id})" in response.json()["detail"]
    response = await api.client.delete(f"{LLMS}/{chat['id']}", headers=admin.headers)
    body = assert_problem(response, 409, f"robots: 'helper' (id {robot.id})")
    assert body["used_by"]["robots"] == [{"id": robot.id, "name": "helper"}]
    response = await api.client.delete(f"{LLMS}/{rerank['id']}", headers=admin.headers)
    assert_problem(response, 409, f"'ranker' (id {other.id})")


async def test_delete_unused_llm_deletes_its_keys(api: Api, admin: SignedIn) -> None:
    llm = await create_llm(api, admin)
    key = await create_key(api, admin, llm["id"])
    response = await api.client.delete(f"{LLMS}/{llm['id']}", headers=admin.headers)
    assert response.status_code == 204, response.text
    assert_problem(await api.client.get(f"{LLMS}/{llm['id']}", headers=admin.headers), 404)
    assert stored_key(api, key["id"]) is None
    again = await api.client.delete(f"{LLMS}/{llm['id']}", headers=admin.headers)
    assert_problem(again, 404)


async def test_options_for_any_user_shows_enabled_models_only(api: Api, admin: SignedIn) -> None:
    user = await api.user()
    enabled = await create_llm(api, admin, provider="llamacpp", max_tokens=2048)
    disabled = await create_llm(api, admin, provider="llamacpp", status=0)
    embed = await create_llm(api, admin, provider="ollama", model_type="embedding", dimension=768)
    await create_key(api, admin, enabled["id"])
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


# --- /apikeys ------------------------------------------------------------------------------


async def test_api_key_is_encrypted_at_rest_and_never_returned(
    api: Api, admin: SignedIn, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    llm = await create_llm(api, admin)
    plain = new_key()
    response = await api.client.post(
        KEYS,
        json={"llm_id": llm["id"], "alias": "prod", "api_key": plain, "description": "d"},
        headers=admin.headers,
    )
    assert response.status_code == 201, response.text
    key = response.json()
    assert set(key) == KEY_FIELDS
    assert key["key_mask"] == f"sk-…{plain[-4:]}"
    row = stored_key(api, key["id"])
    assert row is not None
    assert plain not in row.api_key_encrypted
    assert plain[8:] not in row.api_key_encrypted
    assert api.ctx.secret_box.decrypt(row.api_key_encrypted) == plain
    bodies = [response.text]
    for path in (f"{KEYS}/{key['id']}", f"{KEYS}?llm_id={llm['id']}", f"{LLMS}/{llm['id']}"):
        read = await api.client.get(path, headers=admin.headers)
        assert read.status_code == 200, read.text
        bodies.append(read.text)
    assert json_has_no(bodies, plain, row.api_key_encrypted)
    assert (await api.client.get(f"{LLMS}/{llm['id']}", headers=admin.headers)).json()[
        "has_api_key"
    ] is True
    assert plain not in caplog.text


@pytest.mark.parametrize(
    ("fields", "field"),
    [
        ({"api_key": None}, "api_key"),
        ({"api_key": ""}, "api_key"),
        ({"api_key": "sk-one sk-two"}, "api_key"),
        ({"alias": ""}, "alias"),
        ({"llm_id": 999999}, "llm_id"),
        ({"llm_id": 2**70}, "llm_id"),
        ({"status": 5}, "status"),
        ({"api_key_encrypted": "v1:x"}, "api_key_encrypted"),
    ],
)
async def test_create_api_key_validation(
    api: Api, admin: SignedIn, fields: dict[str, Any], field: str
) -> None:
    llm = await create_llm(api, admin)
    body = {"llm_id": llm["id"], "alias": "a", "api_key": new_key(), **fields}
    response = await api.client.post(KEYS, json=body, headers=admin.headers)
    problem = assert_problem(response, 422)
    assert field in error_fields(problem)
    if body["api_key"]:
        assert body["api_key"] not in response.text


async def test_local_models_take_no_api_key(api: Api, admin: SignedIn) -> None:
    local = await create_llm(
        api, admin, provider="local", model_type="embedding", model_name="all-MiniLM-L6-v2"
    )
    response = await api.client.post(
        KEYS,
        json={"llm_id": local["id"], "alias": "a", "api_key": new_key()},
        headers=admin.headers,
    )
    assert "llm_id" in error_fields(assert_problem(response, 422, "no API key"))


async def test_update_rotates_and_disables_keys(api: Api, admin: SignedIn) -> None:
    llm = await create_llm(api, admin)
    key = await create_key(api, admin, llm["id"])
    url = f"{KEYS}/{key['id']}"
    rotated = new_key()
    response = await api.client.patch(
        url, json={"api_key": rotated, "alias": "rotated"}, headers=admin.headers
    )
    assert response.status_code == 200, response.text
    body = response.json()
    assert (body["alias"], body["key_mask"]) == ("rotated", f"sk-…{rotated[-4:]}")
    assert rotated not in response.text
    assert resolve(api, llm["id"]) == rotated
    response = await api.client.patch(url, json={"status": 0}, headers=admin.headers)
    assert (response.json()["status"], response.json()["key_mask"]) == (0, body["key_mask"])
    read = await api.client.get(f"{LLMS}/{llm['id']}", headers=admin.headers)
    assert read.json()["has_api_key"] is False
    for change, field in [
        ({"alias": None}, "alias"),
        ({"api_key": ""}, "api_key"),
        ({"api_key": None}, "api_key"),
        ({"llm_id": 1}, "llm_id"),
    ]:
        response = await api.client.patch(url, json=change, headers=admin.headers)
        assert field in error_fields(assert_problem(response, 422)), change
    missing = await api.client.patch(f"{KEYS}/999999", json={}, headers=admin.headers)
    assert_problem(missing, 404)


async def test_list_get_and_delete_keys(api: Api, admin: SignedIn) -> None:
    llm = await create_llm(api, admin)
    other = await create_llm(api, admin)
    keys = [await create_key(api, admin, llm["id"], alias=f"k{i}") for i in range(3)]
    await create_key(api, admin, other["id"])
    response = await api.client.get(
        KEYS, params={"llm_id": llm["id"], "page_size": 2}, headers=admin.headers
    )
    assert response.status_code == 200, response.text
    page = response.json()
    assert (page["total"], page["page_size"]) == (3, 2)
    assert [k["id"] for k in page["items"]] == [keys[0]["id"], keys[1]["id"]]
    second = await api.client.get(
        KEYS, params={"llm_id": llm["id"], "page": 2, "page_size": 2}, headers=admin.headers
    )
    assert [k["alias"] for k in second.json()["items"]] == ["k2"]
    bad = await api.client.get(KEYS, params={"llm_id": "x"}, headers=admin.headers)
    assert_problem(bad, 422, "llm_id")
    url = f"{KEYS}/{keys[1]['id']}"
    assert (await api.client.get(url, headers=admin.headers)).json() == keys[1]
    assert (await api.client.delete(url, headers=admin.headers)).status_code == 204
    assert_problem(await api.client.get(url, headers=admin.headers), 404, "API key")
    assert_problem(await api.client.delete(url, headers=admin.headers), 404)


# --- services other domains call ---------------------------------------------------------


async def test_resolve_api_key_picks_lowest_active_id(api: Api, admin: SignedIn) -> None:
    llm = await create_llm(api, admin)
    assert resolve(api, llm["id"]) is None
    plains = [new_key() for _ in range(4)]
    for index, plain in enumerate(plains):
        await create_key(api, admin, llm["id"], api_key=plain, status=0 if index == 0 else 1)
    assert [resolve(api, llm["id"]) for _ in range(3)] == [plains[1]] * 3
    # Disabling the chosen key moves the choice to the next lowest active id, not the newest.
    keys = (await api.client.get(KEYS, params={"llm_id": llm["id"]}, headers=admin.headers)).json()
    await api.client.patch(
        f"{KEYS}/{keys['items'][1]['id']}", json={"status": 0}, headers=admin.headers
    )
    assert resolve(api, llm["id"]) == plains[2]


async def test_require_model_checks_type_and_status(api: Api, admin: SignedIn) -> None:
    chat = await create_llm(api, admin)
    disabled = await create_llm(
        api, admin, provider="openai", model_type="embedding", dimension=8, status=0
    )

    async def require(llm_id: int, model_type: ModelType) -> Llm:
        async with api.ctx.sessionmaker() as session:
            return await require_model(session, llm_id, model_type, "embed_llm_id")

    assert in_app_loop(api, lambda: require(chat["id"], ModelType.chat)).id == chat["id"]
    for llm_id, model_type, message in [
        (chat["id"], ModelType.embedding, "is a chat model"),
        (disabled["id"], ModelType.embedding, "disabled"),
        (999999, ModelType.chat, "does not exist"),
    ]:
        with pytest.raises(ValidationFailed, match=message) as caught:
            in_app_loop(api, partial(require, llm_id, model_type))
        assert caught.value.extra["errors"][0]["field"] == "embed_llm_id"
