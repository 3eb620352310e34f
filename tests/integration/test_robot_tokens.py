"""Robot access tokens: created and revoked by the robot's owner, shown once, stored hashed."""

from __future__ import annotations

from sqlmodel import select

from rag_app.db.models import RobotToken
from rag_app.domain.robots.tokens import RobotTokenService
from rag_app.errors import AuthenticationFailed
from tests.conftest import HUGE_ID, Api, SignedIn, assert_invalid, assert_problem


async def test_create_list_revoke(api: Api) -> None:
    owner = await api.user()
    robot = await api.robot(owner)
    url = f"/api/v1/robots/{robot.id}/tokens"
    created = await api.client.post(url, headers=owner.headers, json={"name": "website"})
    assert created.status_code == 201, created.text
    body = created.json()
    token = body["token"]
    assert token.startswith("rag-")
    assert len(token) > 40
    assert body["token_hint"].endswith(token[-4:])

    listed = (await api.client.get(url, headers=owner.headers)).json()
    assert [t["name"] for t in listed] == ["website"]
    assert "token" not in listed[0]
    assert token not in str(listed)

    rows = await api.run(lambda s: s.exec(select(RobotToken.token_hash)))
    assert token not in str(list(rows))

    async def auth(session: object) -> int:
        robot_row, _ = await RobotTokenService(session).authenticate(token)  # type: ignore[arg-type]
        return robot_row.id or 0

    assert await api.run(auth) == robot.id

    revoked = await api.client.post(f"{url}/{body['id']}/revoke", headers=owner.headers)
    assert revoked.status_code == 200, revoked.text
    assert revoked.json()["revoked_at"] is not None

    async def auth_fails(session: object) -> str:
        try:
            await RobotTokenService(session).authenticate(token)  # type: ignore[arg-type]
        except AuthenticationFailed as exc:
            return exc.detail
        return "accepted"

    assert "invalid robot token" in await api.run(auth_fails)


async def test_validation_unauthenticated_and_other_users(api: Api, admin: SignedIn) -> None:
    owner, other = await api.user(), await api.user()
    robot = await api.robot(owner)
    url = f"/api/v1/robots/{robot.id}/tokens"
    assert_invalid(await api.client.post(url, headers=owner.headers, json={"name": ""}), "name")
    assert_invalid(
        await api.client.post(url, headers=owner.headers, json={"name": "x", "extra": 1}),
        "extra",
    )
    assert_problem(await api.client.post(url, json={"name": "x"}), 401)
    assert_problem(await api.client.get(url), 401)
    token = (await api.client.post(url, headers=owner.headers, json={"name": "x"})).json()
    for response in (
        await api.client.post(url, headers=other.headers, json={"name": "mine"}),
        await api.client.get(url, headers=other.headers),
        await api.client.post(f"{url}/{token['id']}/revoke", headers=other.headers),
    ):
        assert_problem(response, 404, f"robot {robot.id}")
    # An administrator manages every robot's tokens.
    assert (await api.client.get(url, headers=admin.headers)).status_code == 200
    # A token id of another robot is not found through this robot.
    second = await api.robot(owner)
    foreign = await api.client.post(
        f"/api/v1/robots/{second.id}/tokens/{token['id']}/revoke", headers=owner.headers
    )
    assert_problem(foreign, 404, "token")
    huge = await api.client.get(f"/api/v1/robots/{HUGE_ID}/tokens", headers=owner.headers)
    assert huge.status_code in (404, 422)
