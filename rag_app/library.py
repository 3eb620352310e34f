"""rag_app as a library: a configured instance's robots, in another program or a notebook.

    from rag_app.library import RagApp

    async with RagApp() as app:              # Settings(): config/*.yaml, .env, RAG_* variables
        engine = await app.chat_engine(3)    # robot 3, exactly as POST /chat builds it
        response = await engine.achat("How many days of annual leave?")

What you get is what the API uses for the robot: the same assembly from its rows
(``rag_app.indexing.robots``: knowledge bases, retrieval settings, rerank and chat models with
their decrypted keys) and the same ``indexes.chat.build_chat_engine``. The caller is trusted
like the CLI (it holds the database credentials): there is no user and no ownership check, but a
disabled robot is refused for chat as the API refuses it. Nothing is written: turns are not
stored in the robot's chat history.

A built engine needs no database: it keeps working after the ``RagApp`` is closed, and it does
not see later changes to the robot (build one per conversation, as the API does per request).

Milvus Lite (the embedded default, no ``index.milvus_uri``) serves one process per database:
in the process that runs ``rag-app serve`` any number of ``RagApp`` objects share it, but a
second process cannot open it while the server runs. Use a Milvus server to query an instance
from other processes.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Awaitable, Coroutine, Mapping, Sequence
from types import TracebackType
from typing import TYPE_CHECKING, Any, TypeVar

import anyio

from rag_app.settings import Settings

if TYPE_CHECKING:
    from llama_index.core.base.llms.types import ChatMessage
    from llama_index.core.chat_engine.types import BaseChatEngine

    from indexes.retrieval import RetrievalResult, RobotRetriever
    from indexes.specs import RetrievalMode, RobotSpec
    from rag_app.context import AppContext
    from rag_app.db.models import Robot

__all__ = ["RagApp", "robot_chat_engine", "robot_chat_engine_sync", "search"]

T = TypeVar("T")
History = Sequence["ChatMessage | Mapping[str, str]"]


def _messages(history: History) -> list[ChatMessage]:
    from llama_index.core.base.llms.types import ChatMessage, MessageRole

    return [
        item
        if isinstance(item, ChatMessage)
        else ChatMessage(role=MessageRole(item["role"]), content=item["content"])
        for item in history
    ]


class RagApp:
    """One configured instance: its database, secrets and indexes (an ``AppContext``).

    Use it as an async context manager, or call :meth:`close` when done. ``ctx``: an existing
    context to borrow (it is not closed here), for code inside the app's process; use it on
    the event loop its database pool belongs to (the app's, in a request handler).
    """

    def __init__(self, settings: Settings | None = None, *, ctx: AppContext | None = None) -> None:
        if settings is not None and ctx is not None and ctx.settings is not settings:
            raise ValueError("Pass settings= or ctx=, not both.")
        self._settings = settings
        self._ctx = ctx
        self._owns_ctx = ctx is None

    @property
    def ctx(self) -> AppContext:
        if self._ctx is None:
            from rag_app.context import AppContext

            self._ctx = AppContext.create(self._settings or Settings())
        return self._ctx

    @property
    def settings(self) -> Settings:
        return self.ctx.settings

    async def __aenter__(self) -> RagApp:
        _ = self.ctx
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.close()

    async def close(self) -> None:
        """Close what this object opened (the database pool); borrowed contexts stay open."""
        if self._ctx is not None and self._owns_ctx:
            ctx, self._ctx = self._ctx, None
            await ctx.close()

    # --- robots ---------------------------------------------------------------------------------

    async def _robot(self, robot_id: int, *, for_chat: bool) -> tuple[Robot, RobotSpec]:
        from rag_app.db.models import Robot
        from rag_app.domain.common import ENABLED
        from rag_app.errors import NotFound, ValidationFailed
        from rag_app.indexing.robots import robot_spec

        async with self.ctx.sessionmaker() as session:
            robot = await session.get(Robot, robot_id)
            if robot is None:
                raise NotFound(f"robot {robot_id} not found")
            if for_chat and robot.status != ENABLED:
                raise ValidationFailed(f"robot {robot_id} is disabled: enable it to chat with it")
            return robot, await robot_spec(self.ctx, session, robot)

    async def robot_spec(self, robot_id: int) -> RobotSpec:
        """The robot's specs as the API builds them (models with their decrypted keys)."""
        return (await self._robot(robot_id, for_chat=False))[1]

    async def retriever(self, robot_id: int) -> RobotRetriever:
        """The robot's retriever (every bound knowledge base, fusion, threshold, rerank)."""
        from rag_app.indexing.robots import robot_retriever

        spec = await self.robot_spec(robot_id)
        return await self._translated(robot_retriever(self.ctx, spec))

    async def chat_engine(
        self, robot_id: int, *, history: History = (), session_id: str | None = None
    ) -> BaseChatEngine:
        """The robot's chat engine, built as ``POST /chat`` builds it. ``history``: earlier
        turns (``ChatMessage`` or ``{"role", "content"}`` dicts); ``session_id``: start from a
        stored chat session's latest turns instead (as the API does)."""
        from indexes.chat import build_chat_engine, build_robot_llm
        from rag_app.indexing.robots import robot_retriever

        _, spec = await self._robot(robot_id, for_chat=True)
        messages = _messages(history)
        if session_id is not None:
            if messages:
                raise ValueError("Pass history= or session_id=, not both.")
            messages = await self._session_history(robot_id, session_id)
        retriever = await self._translated(robot_retriever(self.ctx, spec))
        return build_chat_engine(spec, retriever, llm=build_robot_llm(spec), history=messages)

    async def search(
        self,
        robot_id: int,
        query: str,
        *,
        top_k: int | None = None,
        mode: RetrievalMode | None = None,
    ) -> RetrievalResult:
        """The robot's retrieval without an answer, as ``POST /robots/{id}/retrieval-test``:
        every leg's rank and score, fused and rerank scores, timings."""
        retriever = await self.retriever(robot_id)
        return await retriever.asearch(query, top_k=top_k, mode=mode)

    async def _session_history(self, robot_id: int, session_id: str) -> list[ChatMessage]:
        from llama_index.core.base.llms.types import ChatMessage, MessageRole
        from sqlmodel import col, select

        from rag_app.db.models import ChatSession
        from rag_app.db.models.chat_history import MessageRole as TurnRole
        from rag_app.db.models.session import SessionStatus
        from rag_app.domain.chat.history import recent_turns
        from rag_app.domain.chat.service import HISTORY_TURNS
        from rag_app.errors import NotFound

        async with self.ctx.sessionmaker() as session:
            statement = select(ChatSession).where(
                col(ChatSession.session_id) == session_id,
                col(ChatSession.status) != SessionStatus.deleted,
            )
            chat = (await session.exec(statement)).first()
            if chat is None or chat.robot_id != robot_id:
                raise NotFound(f"chat session {session_id} of robot {robot_id} not found")
            turns = await recent_turns(session, session_id, HISTORY_TURNS)
        return [
            ChatMessage(
                role=MessageRole.USER if turn.role == TurnRole.user else MessageRole.ASSISTANT,
                content=turn.content,
            )
            for turn in turns
        ]

    async def _translated(self, building: Awaitable[T]) -> T:
        """Opening an index: a Milvus Lite database held by another process gets a message
        that says so (see the module docstring)."""
        from indexes.errors import StoreError
        from indexes.kb import milvus_lite_in_use
        from rag_app.indexing.specs import store_settings

        try:
            return await building
        except StoreError as exc:
            stores = store_settings(self.settings)
            if not await anyio.to_thread.run_sync(milvus_lite_in_use, stores):
                raise
            raise StoreError(
                f"The Milvus Lite database {stores.milvus_lite_path} is open in another process, "
                "probably `rag-app serve` (Milvus Lite serves one process per database). Use "
                "this library in that process, stop the server, or run a Milvus server "
                "(index.milvus_uri) to query the instance from other programs."
            ) from exc


# --- one-shot helpers ---------------------------------------------------------------------------


async def robot_chat_engine(
    robot_id: int, *, settings: Settings | None = None, history: History = ()
) -> BaseChatEngine:
    """Robot ``robot_id``'s chat engine, exactly as the API builds it (see :class:`RagApp`);
    the database connection is closed before returning (the engine does not need it)."""
    async with RagApp(settings) as app:
        return await app.chat_engine(robot_id, history=history)


async def search(
    robot_id: int,
    query: str,
    *,
    settings: Settings | None = None,
    top_k: int | None = None,
    mode: RetrievalMode | None = None,
) -> RetrievalResult:
    """Robot ``robot_id``'s retrieval for ``query`` (see :meth:`RagApp.search`)."""
    async with RagApp(settings) as app:
        return await app.search(robot_id, query, top_k=top_k, mode=mode)


def robot_chat_engine_sync(
    robot_id: int, *, settings: Settings | None = None, history: History = ()
) -> BaseChatEngine:
    """:func:`robot_chat_engine` for synchronous code; use the engine's ``chat`` or
    ``stream_chat``. Works with or without a running event loop (in a notebook, it builds in a
    thread of its own)."""
    return _run(robot_chat_engine(robot_id, settings=settings, history=history))


def _run(work: Coroutine[Any, Any, T]) -> T:
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(work)
    # A loop runs in this thread (Jupyter): asyncio.run would refuse, so run on a fresh loop
    # in another thread and wait for it.
    values: list[T] = []
    errors: list[BaseException] = []

    def target() -> None:
        try:
            values.append(asyncio.run(work))
        except BaseException as exc:
            errors.append(exc)

    thread = threading.Thread(target=target, name="rag-app-library")
    thread.start()
    thread.join()
    if errors:
        raise errors[0]
    return values[0]
