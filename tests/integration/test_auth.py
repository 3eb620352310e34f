"""Sign-up, sign-in, tokens and passwords over HTTP, on SQLite and MariaDB."""

from __future__ import annotations

from typing import Any

from tests.conftest import PASSWORD, Api, assert_problem


async def test_register_login_me(api: Api) -> None:
    user = await api.user()
    response = await api.client.get("/api/v1/auth/me", headers=user.headers)
    assert response.status_code == 200
    body = response.json()
    assert body["username"] == user.username
    assert body["role"] == "user"
    assert "password_hash" not in body


async def test_login_by_email(api: Api) -> None:
    user = await api.user()
    signed = await api.login(user.email, PASSWORD)
    assert signed.id == user.id


async def test_register_cannot_ask_for_admin(api: Api) -> None:
    response = await api.client.post(
        "/api/v1/auth/register",
        json={
            "username": "sneaky",
            "email": "s@example.com",
            "password": PASSWORD,
            "role": "admin",
        },
    )
    body = assert_problem(response, 422, "role")
    assert body["errors"][0]["field"] == "role"


async def test_register_validation_names_field(api: Api) -> None:
    response = await api.client.post(
        "/api/v1/auth/register",
        json={"username": "ok_name", "email": "not-an-email", "password": "short"},
    )
    body = assert_problem(response, 422)
    fields = {e["field"] for e in body["errors"]}
    assert {"email", "password"} <= fields


async def test_register_duplicate_username_conflicts(api: Api) -> None:
    user = await api.user()
    response = await api.client.post(
        "/api/v1/auth/register",
        json={"username": user.username, "email": "other@example.com", "password": PASSWORD},
    )
    assert_problem(response, 409, user.username)


async def test_chinese_username(api: Api) -> None:
    response = await api.client.post(
        "/api/v1/auth/register",
        json={
            "username": "张三_" + api.ctx.secrets.jwt_secret[:6].replace("-", "x"),
            "email": f"zs{id(api)}@example.com",
            "password": PASSWORD,
        },
    )
    assert response.status_code == 201, response.text
    assert response.json()["username"].startswith("张三_")


async def test_wrong_password(api: Api) -> None:
    user = await api.user()
    response = await api.client.post(
        "/api/v1/auth/login", json={"username": user.username, "password": "wrong password"}
    )
    assert_problem(response, 401, "wrong user name or password")


async def test_unauthenticated_and_bad_token(api: Api) -> None:
    assert_problem(await api.client.get("/api/v1/auth/me"), 401, "sign in")
    bad = {"Authorization": "Bearer not.a.token"}
    assert_problem(await api.client.get("/api/v1/auth/me", headers=bad), 401)


async def test_refresh_token_gives_new_pair_and_is_not_an_access_token(api: Api) -> None:
    user = await api.user()
    as_access = {"Authorization": f"Bearer {user.refresh_token}"}
    assert_problem(await api.client.get("/api/v1/auth/me", headers=as_access), 401)
    response = await api.client.post(
        "/api/v1/auth/refresh", json={"refresh_token": user.refresh_token}
    )
    assert response.status_code == 200, response.text
    pair = response.json()
    me = await api.client.get(
        "/api/v1/auth/me", headers={"Authorization": f"Bearer {pair['access_token']}"}
    )
    assert me.json()["id"] == user.id
    # An access token is not accepted where a refresh token is expected.
    response = await api.client.post(
        "/api/v1/auth/refresh", json={"refresh_token": user.access_token}
    )
    assert_problem(response, 401, "refresh")


async def test_change_password_revokes_old_tokens(api: Api) -> None:
    user = await api.user()
    response = await api.client.post(
        "/api/v1/auth/change-password",
        headers=user.headers,
        json={"old_password": PASSWORD, "new_password": "a new long password"},
    )
    assert response.status_code == 200, response.text
    new_headers = {"Authorization": f"Bearer {response.json()['access_token']}"}
    assert_problem(await api.client.get("/api/v1/auth/me", headers=user.headers), 401)
    refresh = await api.client.post(
        "/api/v1/auth/refresh", json={"refresh_token": user.refresh_token}
    )
    assert_problem(refresh, 401)
    assert (await api.client.get("/api/v1/auth/me", headers=new_headers)).status_code == 200
    assert (await api.login(user.username, "a new long password")).id == user.id


async def test_change_password_needs_old_password(api: Api) -> None:
    user = await api.user()
    response = await api.client.post(
        "/api/v1/auth/change-password",
        headers=user.headers,
        json={"old_password": "not it at all", "new_password": "a new long password"},
    )
    assert_problem(response, 403, "current password")
    unauthenticated = await api.client.post(
        "/api/v1/auth/change-password",
        json={"old_password": PASSWORD, "new_password": "a new long password"},
    )
    assert_problem(unauthenticated, 401)


async def test_unknown_fields_rejected(api: Api) -> None:
    response = await api.client.post(
        "/api/v1/auth/login", json={"username": "x", "password": "y", "remember": True}
    )
    body: dict[str, Any] = assert_problem(response, 422, "remember")
    assert body["errors"][0]["field"] == "remember"
