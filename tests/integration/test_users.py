"""User management by administrators (/users) over HTTP, on SQLite and MariaDB: search,
PATCH rules and ids out of range."""

from __future__ import annotations

import uuid
from typing import Any

import pytest

from tests.conftest import (
    HUGE_ID,
    PASSWORD,
    Api,
    SignedIn,
    assert_invalid,
)

USERS = "/api/v1/users"


async def usernames(api: Api, admin: SignedIn, search: str) -> set[str]:
    response = await api.client.get(
        USERS, params={"search": search, "page_size": 100}, headers=admin.headers
    )
    assert response.status_code == 200, response.text
    return {item["username"] for item in response.json()["items"]}


async def register(api: Api, username: str) -> None:
    response = await api.client.post(
        "/api/v1/auth/register",
        json={"username": username, "email": f"{username}@example.com", "password": PASSWORD},
    )
    assert response.status_code == 201, response.text


async def test_search_takes_wildcards_literally(api: Api, admin: SignedIn) -> None:
    token = uuid.uuid4().hex[:8]
    underscored, lookalike = f"a_{token}", f"ax{token}"
    for name in (underscored, lookalike):
        await register(api, name)

    assert await usernames(api, admin, token.upper()) == {underscored, lookalike}
    # "_" is a literal underscore, not "any one character".
    assert await usernames(api, admin, f"a_{token}") == {underscored}
    # No user name or e-mail address holds a percent sign: "%" is not "anything".
    assert await usernames(api, admin, "%") == set()
    assert await usernames(api, admin, f"a%{token}") == set()


async def test_patch_null_clears_only_optional_fields(api: Api, admin: SignedIn) -> None:
    user = await api.user()
    url = f"{USERS}/{user.id}"
    response = await api.client.patch(
        url, json={"avatar_url": "https://example.com/a.png"}, headers=admin.headers
    )
    assert response.json()["avatar_url"] == "https://example.com/a.png"
    response = await api.client.patch(url, json={"avatar_url": None}, headers=admin.headers)
    assert response.status_code == 200, response.text
    assert response.json()["avatar_url"] is None
    for field in ("email", "role", "status"):
        response = await api.client.patch(url, json={field: None}, headers=admin.headers)
        assert_invalid(response, field)
    unchanged = (await api.client.get(url, headers=admin.headers)).json()
    assert (unchanged["email"], unchanged["role"], unchanged["status"]) == (
        user.email,
        "user",
        1,
    )


@pytest.mark.parametrize(
    ("method", "path", "kwargs", "field"),
    [
        ("GET", f"{USERS}/{HUGE_ID}", {}, "path.user_id"),
        ("PATCH", f"{USERS}/{HUGE_ID}", {"json": {}}, "path.user_id"),
        ("DELETE", f"{USERS}/{HUGE_ID}", {}, "path.user_id"),
        ("POST", f"{USERS}/{HUGE_ID}/reset-password", {}, "path.user_id"),
        ("GET", f"{USERS}/0", {}, "path.user_id"),
        ("GET", USERS, {"params": {"page": HUGE_ID}}, "query.page"),
    ],
    ids=["get", "patch", "delete", "reset-password", "zero", "page"],
)
async def test_ids_out_of_range(
    api: Api, admin: SignedIn, method: str, path: str, kwargs: dict[str, Any], field: str
) -> None:
    response = await api.client.request(method, path, headers=admin.headers, **kwargs)
    assert_invalid(response, field)
