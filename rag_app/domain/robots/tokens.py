"""Robot access tokens: bearer tokens of the OpenAI-compatible endpoint, one robot each."""

from __future__ import annotations

import hashlib
import secrets
from datetime import datetime

from pydantic import Field
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from rag_app.db.models import Robot, RobotToken, User
from rag_app.db.types import utcnow
from rag_app.domain.common import InputSchema, ReadSchema
from rag_app.domain.robots.service import RobotService
from rag_app.errors import AuthenticationFailed, NotFound

TOKEN_PREFIX = "rag-"  # noqa: S105 (a visible prefix, not a secret)


class RobotTokenCreate(InputSchema):
    name: str = Field(min_length=1, max_length=100, description="What the token is for")


class RobotTokenRead(ReadSchema):
    id: int
    robot_id: int
    name: str
    token_hint: str
    created_at: datetime
    last_used_at: datetime | None
    revoked_at: datetime | None


class RobotTokenCreated(RobotTokenRead):
    token: str = Field(description="Shown once; only its hash is stored")


def _digest(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


class RobotTokenService:
    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def create(self, user: User, robot_id: int, data: RobotTokenCreate) -> RobotTokenCreated:
        robot = await RobotService(self.session).get(user, robot_id)
        token = TOKEN_PREFIX + secrets.token_urlsafe(32)
        row = RobotToken(
            robot_id=robot.id or 0,
            user_id=user.id or 0,
            name=data.name,
            token_hash=_digest(token),
            token_hint=f"{token[:8]}…{token[-4:]}",
        )
        self.session.add(row)
        await self.session.commit()
        return RobotTokenCreated(**RobotTokenRead.model_validate(row).model_dump(), token=token)

    async def list(self, user: User, robot_id: int) -> list[RobotTokenRead]:
        await RobotService(self.session).get(user, robot_id)
        rows = await self.session.exec(
            select(RobotToken)
            .where(col(RobotToken.robot_id) == robot_id)
            .order_by(col(RobotToken.id))
        )
        return [RobotTokenRead.model_validate(row) for row in rows.all()]

    async def revoke(self, user: User, robot_id: int, token_id: int) -> RobotTokenRead:
        await RobotService(self.session).get(user, robot_id)
        row = await self.session.get(RobotToken, token_id)
        if row is None or row.robot_id != robot_id:
            raise NotFound(f"token {token_id} not found")
        if row.revoked_at is None:
            row.revoked_at = utcnow()
            self.session.add(row)
            await self.session.commit()
        return RobotTokenRead.model_validate(row)

    async def authenticate(self, token: str) -> tuple[Robot, RobotToken]:
        """The robot a bearer token opens; revoked, unknown or disabled → 401."""
        row = (
            await self.session.exec(
                select(RobotToken).where(col(RobotToken.token_hash) == _digest(token))
            )
        ).first()
        robot = await self.session.get(Robot, row.robot_id) if row else None
        if row is None or row.revoked_at is not None or robot is None or robot.status != 1:
            raise AuthenticationFailed(
                "invalid robot token: create one in the robot's settings "
                "(POST /api/v1/robots/{id}/tokens) and send it as 'Authorization: Bearer <token>'"
            )
        row.last_used_at = utcnow()
        self.session.add(row)
        await self.session.commit()
        return robot, row
