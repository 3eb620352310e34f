"""Users: registration, sign-in, passwords, and the admin's user management."""

from __future__ import annotations

import secrets
from typing import TYPE_CHECKING

from sqlalchemy import or_
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from rag_app.api.pagination import Page, PageParams
from rag_app.db.models import Knowledge, User
from rag_app.db.models.user import UserRole
from rag_app.db.types import utcnow
from rag_app.domain.common import contains, paginate, reject_nulls
from rag_app.domain.knowledge.service import KnowledgeService
from rag_app.domain.users.schemas import (
    PasswordResetRead,
    UserCreate,
    UserRead,
    UserRegister,
    UserUpdate,
)
from rag_app.errors import AuthenticationFailed, Conflict, NotFound, PermissionDenied

if TYPE_CHECKING:
    from rag_app.context import AppContext

# The same message whatever was wrong, so sign-in does not reveal which user names exist.
_BAD_CREDENTIALS = "wrong user name or password"
_NULLABLE = frozenset({"avatar_url"})


class UserService:
    def __init__(self, session: AsyncSession, ctx: AppContext) -> None:
        self.session = session
        self.ctx = ctx
        self.passwords = ctx.passwords

    async def register(self, data: UserRegister) -> User:
        return await self.create(UserCreate(**data.model_dump(), role="user"))

    async def create(self, data: UserCreate) -> User:
        await self._ensure_unique(data.username, str(data.email))
        user = User(
            username=data.username,
            email=str(data.email).lower(),
            password_hash=self.passwords.hash(data.password),
            role=data.role,
        )
        self.session.add(user)
        await self.session.commit()
        return user

    async def _ensure_unique(self, username: str | None, email: str | None) -> None:
        if username is not None:
            found = await self.session.exec(select(User.id).where(User.username == username))
            if found.first() is not None:
                raise Conflict(f"the user name '{username}' is taken", field="username")
        if email is not None:
            found = await self.session.exec(select(User.id).where(User.email == email.lower()))
            if found.first() is not None:
                raise Conflict(f"the e-mail address '{email}' is already registered", field="email")

    async def authenticate(self, login: str, password: str) -> User:
        statement = select(User).where(
            or_(col(User.username) == login, col(User.email) == login.lower())
        )
        user = (await self.session.exec(statement)).first()
        if user is None or not self.passwords.verify(user.password_hash, password):
            raise AuthenticationFailed(_BAD_CREDENTIALS)
        if not user.is_active:
            raise AuthenticationFailed("this account is disabled; ask an administrator")
        return user

    async def get(self, user_id: int) -> User:
        user = await self.session.get(User, user_id)
        if user is None:
            raise NotFound(f"user {user_id} not found")
        return user

    async def list(
        self, params: PageParams, search: str | None = None, role: str | None = None
    ) -> Page[UserRead]:
        statement = select(User).order_by(col(User.id))
        if search:
            statement = statement.where(
                or_(contains(col(User.username), search), contains(col(User.email), search))
            )
        if role:
            statement = statement.where(User.role == role)
        return await paginate(self.session, statement, params, UserRead.model_validate)

    async def update(self, actor: User, user_id: int, data: UserUpdate) -> User:
        user = await self.get(user_id)
        changes = data.model_dump(exclude_unset=True)
        reject_nulls(changes, _NULLABLE)
        if user.id == actor.id and (
            changes.get("role") == UserRole.user or changes.get("status") == 0
        ):
            raise Conflict("you cannot demote or disable your own account")
        if "email" in changes:
            changes["email"] = str(changes["email"]).lower()
            if changes["email"] != user.email:
                await self._ensure_unique(None, changes["email"])
        for field, value in changes.items():
            setattr(user, field, value)
        self.session.add(user)
        await self.session.commit()
        return user

    async def delete(self, actor: User, user_id: int) -> None:
        """Deletes the user and, by cascade, everything the user owns: knowledge bases with their
        documents, robots with their sessions and chat history, and the user's own sessions.
        Models and API keys the user registered stay (their owner becomes empty)."""
        user = await self.get(user_id)
        if user.id == actor.id:
            raise Conflict("you cannot delete your own account")
        # The database cascade removes the rows; the indexes and stored originals of the
        # user's knowledge bases are removed first, one knowledge base at a time.
        knowledge_bases = KnowledgeService(self.session, self.ctx)
        owned = await self.session.exec(
            select(Knowledge.id).where(col(Knowledge.user_id) == user.id)
        )
        for knowledge_id in owned.all():
            await knowledge_bases.delete(actor, knowledge_id or 0)
        await self.session.delete(user)
        await self.session.commit()

    async def change_password(self, user: User, old_password: str, new_password: str) -> User:
        if not self.passwords.verify(user.password_hash, old_password):
            raise PermissionDenied("the current password is wrong")
        return await self._set_password(user, new_password)

    async def reset_password(self, user_id: int) -> PasswordResetRead:
        user = await self.get(user_id)
        temporary = secrets.token_urlsafe(12)
        await self._set_password(user, temporary)
        return PasswordResetRead(user_id=user_id, temporary_password=temporary)

    async def _set_password(self, user: User, password: str) -> User:
        # Re-read in this session: the caller's object may come from the auth middleware's.
        fresh = await self.get(user.id or 0)
        fresh.password_hash = self.passwords.hash(password)
        fresh.password_changed_at = utcnow()
        fresh.token_version += 1
        self.session.add(fresh)
        await self.session.commit()
        return fresh
