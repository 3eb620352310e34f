"""Robots: their models, bound knowledge bases, retrieval settings and who may use them."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Sequence
from typing import Any

from pydantic import ValidationError
from sqlmodel import col, delete, select
from sqlmodel.ext.asyncio.session import AsyncSession

from rag_app.api.pagination import Page, PageParams
from rag_app.db.models import Knowledge, Robot, RobotKnowledge, User
from rag_app.db.models.llm import ModelType
from rag_app.db.types import utcnow
from rag_app.domain.common import (
    ENABLED,
    ensure_owner,
    invalid,
    owned_listing,
    paginate,
    reject_nulls,
)
from rag_app.domain.models.service import require_model
from rag_app.domain.robots.schemas import RetrievalConfig, RobotCreate, RobotRead, RobotUpdate
from rag_app.errors import NotFound

# Module level: inside RobotService, "list" is the method of that name.
IdList = list[int]

_NULLABLE = frozenset(
    {"description", "avatar", "chat_llm_id", "rerank_llm_id", "system_prompt", "welcome_msg"}
)


def _to_read(robot: Robot, knowledge_ids: list[int]) -> RobotRead:
    values = robot.model_dump()
    values.update(
        knowledge_ids=sorted(knowledge_ids),
        suggested_questions=robot.suggested_questions or [],
        retrieval=RetrievalConfig.model_validate(robot.retrieval_config or {}),
    )
    return RobotRead.model_validate(values)


def _merge_retrieval(stored: dict[str, Any] | None, patch: dict[str, Any]) -> RetrievalConfig:
    reject_nulls({f"retrieval.{key}": value for key, value in patch.items()}, nullable=())
    try:
        return RetrievalConfig.model_validate({**(stored or {}), **patch})
    except ValidationError as exc:
        error = exc.errors()[0]
        field = ".".join(["retrieval", *(str(part) for part in error["loc"])])
        raise invalid(field, error["msg"]) from None


class RobotService:
    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def create(self, user: User, data: RobotCreate) -> Robot:
        values = data.model_dump(exclude={"knowledge_ids", "retrieval"})
        sent = {f"retrieval.{key}" for key in data.retrieval.model_fields_set}
        await self._check(user, values, data.retrieval, changed=set(values) | sent)
        await self._check_knowledge(user, data.knowledge_ids, already_bound=set())
        robot = Robot(
            **values, user_id=user.id or 0, retrieval_config=data.retrieval.model_dump(mode="json")
        )
        self.session.add(robot)
        await self.session.flush()
        await self._replace_links(robot.id or 0, data.knowledge_ids)
        await self.session.commit()
        return robot

    async def get(self, user: User, robot_id: int) -> Robot:
        """The robot if the user owns it or is an admin; NotFound otherwise (for changes)."""
        robot = await self.session.get(Robot, robot_id)
        return ensure_owner(robot, user, f"robot {robot_id}")

    async def get_usable(self, user: User, robot_id: int, *, enabled_only: bool = False) -> Robot:
        """The robot if the user may chat with it: its owner or an administrator, or anyone if
        it is public and enabled. ``enabled_only`` refuses a disabled robot to its owner and
        administrators too (new chat sessions). Every refusal reads like a missing robot, so
        private robots' ids are not revealed."""
        robot = await self.session.get(Robot, robot_id)
        if (
            robot is None
            or (enabled_only and robot.status != ENABLED)
            or not (
                robot.user_id == user.id
                or user.is_admin
                or (robot.is_public and robot.status == ENABLED)
            )
        ):
            raise NotFound(f"robot {robot_id} not found")
        return robot

    async def knowledge_ids(self, robot_id: int) -> IdList:
        return (await self._links_for([robot_id])).get(robot_id, [])

    async def knowledge_bases(self, robot_id: int) -> Sequence[Knowledge]:
        """The bound knowledge bases, by id; the chat and recall code retrieves from these."""
        statement = (
            select(Knowledge)
            .join(RobotKnowledge, col(RobotKnowledge.knowledge_id) == col(Knowledge.id))
            .where(col(RobotKnowledge.robot_id) == robot_id)
            .order_by(col(Knowledge.id))
        )
        return (await self.session.exec(statement)).all()

    async def to_read(self, robot: Robot) -> RobotRead:
        return _to_read(robot, await self.knowledge_ids(robot.id or 0))

    async def list(
        self,
        user: User,
        params: PageParams,
        search: str | None = None,
        user_id: int | None = None,
    ) -> Page[RobotRead]:
        statement = owned_listing(Robot, user, owner_id=user_id, search=search)
        page = await paginate(self.session, statement, params, lambda robot: _to_read(robot, []))
        links = await self._links_for(item.id for item in page.items)
        for item in page.items:
            item.knowledge_ids = links.get(item.id, [])
        return page

    async def update(self, user: User, robot_id: int, data: RobotUpdate) -> Robot:
        robot = await self.get(user, robot_id)
        changes = data.model_dump(exclude_unset=True, mode="json")
        reject_nulls(changes, _NULLABLE)
        knowledge_ids: IdList | None = changes.pop("knowledge_ids", None)
        retrieval_patch: dict[str, Any] | None = changes.pop("retrieval", None)
        retrieval = _merge_retrieval(robot.retrieval_config, retrieval_patch or {})
        merged = {**robot.model_dump(), **changes}
        changed = set(changes) | {f"retrieval.{key}" for key in retrieval_patch or {}}
        await self._check(user, merged, retrieval, changed=changed)
        if knowledge_ids is not None:
            bound = set(await self.knowledge_ids(robot_id))
            await self._check_knowledge(user, knowledge_ids, already_bound=bound)
            await self._replace_links(robot_id, knowledge_ids)
        for field, value in changes.items():
            setattr(robot, field, value)
        robot.retrieval_config = retrieval.model_dump(mode="json")
        # Set explicitly: a change of links alone does not touch the row, and cached chat
        # engines are invalidated by updated_at.
        robot.updated_at = utcnow()
        self.session.add(robot)
        await self.session.commit()
        return robot

    async def delete(self, user: User, robot_id: int) -> None:
        """Removes the robot; the database cascades its links, sessions and chat history."""
        robot = await self.get(user, robot_id)
        await self.session.delete(robot)
        await self.session.commit()

    async def _check(
        self, user: User, values: dict[str, Any], retrieval: RetrievalConfig, changed: set[str]
    ) -> None:
        """Rules across fields, on the merged result. Models are checked only when they change,
        so a robot whose model was disabled later can still be edited (and switched away)."""
        if "chat_llm_id" in changed and values["chat_llm_id"] is not None:
            await require_model(self.session, values["chat_llm_id"], ModelType.chat, "chat_llm_id")
        if "rerank_llm_id" in changed and values["rerank_llm_id"] is not None:
            await require_model(
                self.session, values["rerank_llm_id"], ModelType.rerank, "rerank_llm_id"
            )
        if values["enable_rerank"] and values["rerank_llm_id"] is None:
            raise invalid(
                "rerank_llm_id",
                "enable_rerank needs a rerank model; set rerank_llm_id or turn enable_rerank off",
            )
        if retrieval.candidate_k < values["top_k"]:
            field = (
                "top_k"
                if "top_k" in changed and "retrieval.candidate_k" not in changed
                else "retrieval.candidate_k"
            )
            raise invalid(
                field,
                f"retrieval.candidate_k ({retrieval.candidate_k}) must be at least "
                f"top_k ({values['top_k']})",
            )

    async def _check_knowledge(
        self, user: User, knowledge_ids: IdList, already_bound: set[int]
    ) -> None:
        """Each knowledge base must exist and be the caller's (admins bind any). Ones already
        bound may stay, so an owner can resend a set an administrator extended."""
        if not knowledge_ids:
            return
        statement = select(col(Knowledge.id), col(Knowledge.user_id)).where(
            col(Knowledge.id).in_(knowledge_ids)
        )
        owners = {kid: owner for kid, owner in (await self.session.exec(statement)).all()}
        refused = [
            kid
            for kid in knowledge_ids
            if kid not in owners
            or not (user.is_admin or owners[kid] == user.id or kid in already_bound)
        ]
        if refused:
            # Someone else's knowledge base reads as missing, like everywhere else.
            listed = ", ".join(str(kid) for kid in refused)
            raise invalid("knowledge_ids", f"knowledge base(s) {listed} not found")

    async def _replace_links(self, robot_id: int, knowledge_ids: IdList) -> None:
        # Only the difference: deleting and re-inserting a kept link would trip uk_robot_kb.
        current = set(await self.knowledge_ids(robot_id))
        wanted: set[int] = set(knowledge_ids)
        if current - wanted:
            await self.session.exec(
                delete(RobotKnowledge).where(
                    col(RobotKnowledge.robot_id) == robot_id,
                    col(RobotKnowledge.knowledge_id).in_(current - wanted),
                )
            )
        for knowledge_id in sorted(wanted - current):
            self.session.add(RobotKnowledge(robot_id=robot_id, knowledge_id=knowledge_id))

    async def _links_for(self, robot_ids: Iterable[int]) -> dict[int, IdList]:
        ids = list(robot_ids)
        if not ids:
            return {}
        statement = (
            select(col(RobotKnowledge.robot_id), col(RobotKnowledge.knowledge_id))
            .where(col(RobotKnowledge.robot_id).in_(ids))
            .order_by(col(RobotKnowledge.knowledge_id))
        )
        links: dict[int, IdList] = defaultdict(list)
        for robot_id, knowledge_id in (await self.session.exec(statement)).all():
            links[robot_id].append(knowledge_id)
        return dict(links)
