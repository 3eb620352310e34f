"""Liveness and readiness."""

from __future__ import annotations

from typing import Any

from litestar import Controller, Response, get
from litestar.di import NamedDependency
from sqlalchemy import text

from rag_app.api.problems import problem_response
from rag_app.context import AppContext
from rag_app.errors import RagAppError


class HealthController(Controller):
    path = "/health"
    tags = ["health"]

    @get("/", summary="Liveness: the process answers")
    async def live(self) -> dict[str, str]:
        return {"status": "ok"}

    @get("/ready", summary="Readiness: every configured backend answers")
    async def ready(self, ctx: NamedDependency[AppContext]) -> Response[dict[str, Any]]:
        checks = await check_backends(ctx)
        down = [name for name, problem in checks.items() if problem]
        if down:
            return problem_response(
                503,
                "Service unavailable",
                "not ready: " + "; ".join(f"{name}: {checks[name]}" for name in down),
                {"checks": {name: problem or "ok" for name, problem in checks.items()}},
            )
        return Response({"status": "ready", "checks": dict.fromkeys(checks, "ok")})


async def check_backends(ctx: AppContext) -> dict[str, str | None]:
    """Each configured backend mapped to None when it answers, or to what is wrong."""
    results: dict[str, str | None] = {}
    try:
        async with ctx.engine.connect() as conn:
            await conn.execute(text("SELECT 1"))
        results["database"] = None
    except Exception as exc:  # any failure means "not ready"; the reason is reported
        results["database"] = f"not reachable ({type(exc).__name__})"
    if ctx.settings.redis.url:
        results["redis"] = await _check_redis(ctx.settings.redis.url)
    try:
        await ctx.object_store.check()
        results["object_store"] = None
    except RagAppError as exc:
        results["object_store"] = exc.detail
    return results


async def _check_redis(url: str) -> str | None:
    from redis.asyncio import Redis

    client = Redis.from_url(url, socket_connect_timeout=2, socket_timeout=2)
    try:
        await client.ping()  # type: ignore[misc]  # redis types ping() as sync-or-async
        return None
    except Exception as exc:
        return f"not reachable ({type(exc).__name__})"
    finally:
        await client.aclose()
