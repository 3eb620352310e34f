"""Provider API keys (/apikeys) over HTTP, on SQLite and MariaDB: encrypted at rest, never
returned or logged, rotation, and the key a provider is called with. Admin-only access:
test_models_registry.py."""

from __future__ import annotations

import logging
from typing import Any

import pytest

from rag_app.db.models import ApiKey
from rag_app.domain.models.service import resolve_api_key
from tests.conftest import (
    HUGE_ID,
    Api,
    SignedIn,
    assert_invalid,
    assert_problem,
    error_fields,
    new_api_key,
)

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


async def stored_key(api: Api, key_id: int) -> ApiKey | None:
    return await api.run(lambda session: session.get(ApiKey, key_id))


async def resolve(api: Api, llm_id: int) -> str | None:
    return await api.run(lambda session: resolve_api_key(session, api.ctx.secret_box, llm_id))


def json_has_no(bodies: list[str], *secrets: str) -> bool:
    return not any(secret in body for body in bodies for secret in secrets)


async def test_api_key_is_encrypted_at_rest_and_never_returned(
    api: Api, admin: SignedIn, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    llm = await api.create_llm(admin)
    plain = new_api_key()
    response = await api.client.post(
        KEYS,
        json={"llm_id": llm["id"], "alias": "prod", "api_key": plain, "description": "d"},
        headers=admin.headers,
    )
    assert response.status_code == 201, response.text
    key = response.json()
    assert set(key) == KEY_FIELDS
    assert key["key_mask"] == f"sk-…{plain[-4:]}"
    row = await stored_key(api, key["id"])
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
    llm = await api.create_llm(admin)
    body = {"llm_id": llm["id"], "alias": "a", "api_key": new_api_key(), **fields}
    response = await api.client.post(KEYS, json=body, headers=admin.headers)
    problem = assert_problem(response, 422)
    assert field in error_fields(problem)
    if body["api_key"]:
        assert body["api_key"] not in response.text


async def test_local_models_take_no_api_key(api: Api, admin: SignedIn) -> None:
    local = await api.create_llm(
        admin, provider="local", model_type="embedding", model_name="all-MiniLM-L6-v2"
    )
    response = await api.client.post(
        KEYS,
        json={"llm_id": local["id"], "alias": "a", "api_key": new_api_key()},
        headers=admin.headers,
    )
    assert "llm_id" in error_fields(assert_problem(response, 422, "no API key"))


async def test_update_rotates_and_disables_keys(api: Api, admin: SignedIn) -> None:
    llm = await api.create_llm(admin)
    key = await api.create_api_key(admin, llm["id"])
    url = f"{KEYS}/{key['id']}"
    rotated = new_api_key()
    response = await api.client.patch(
        url, json={"api_key": rotated, "alias": "rotated"}, headers=admin.headers
    )
    assert response.status_code == 200, response.text
    body = response.json()
    assert (body["alias"], body["key_mask"]) == ("rotated", f"sk-…{rotated[-4:]}")
    assert rotated not in response.text
    assert await resolve(api, llm["id"]) == rotated
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
    llm = await api.create_llm(admin)
    other = await api.create_llm(admin)
    keys = [await api.create_api_key(admin, llm["id"], alias=f"k{i}") for i in range(3)]
    await api.create_api_key(admin, other["id"])
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


async def test_model_id_out_of_range(api: Api, admin: SignedIn) -> None:
    response = await api.client.get(KEYS, params={"llm_id": HUGE_ID}, headers=admin.headers)
    assert_problem(response, 422, "llm_id")
    response = await api.client.post(
        KEYS,
        json={"llm_id": HUGE_ID, "alias": "a", "api_key": new_api_key()},
        headers=admin.headers,
    )
    assert_invalid(response, "llm_id")


# --- services other domains call ---------------------------------------------------------


async def test_resolve_api_key_picks_lowest_active_id(api: Api, admin: SignedIn) -> None:
    llm = await api.create_llm(admin)
    assert await resolve(api, llm["id"]) is None
    plains = [new_api_key() for _ in range(4)]
    for index, plain in enumerate(plains):
        await api.create_api_key(admin, llm["id"], api_key=plain, status=0 if index == 0 else 1)
    assert [await resolve(api, llm["id"]) for _ in range(3)] == [plains[1]] * 3
    # Disabling the chosen key moves the choice to the next lowest active id, not the newest.
    keys = (await api.client.get(KEYS, params={"llm_id": llm["id"]}, headers=admin.headers)).json()
    await api.client.patch(
        f"{KEYS}/{keys['items'][1]['id']}", json={"status": 0}, headers=admin.headers
    )
    assert await resolve(api, llm["id"]) == plains[2]
