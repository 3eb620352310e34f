"""The ``rag-app`` command: serve, migrate, user management."""

from __future__ import annotations

import asyncio
import sys
from typing import TYPE_CHECKING, Any

import click

from rag_app.errors import RagAppError
from rag_app.settings import Settings

if TYPE_CHECKING:
    from rag_app.bootstrap import BootstrapReport


def cli_settings() -> Settings:
    try:
        settings = Settings()
    except Exception as exc:  # a broken config file or variable: say which, without a traceback
        raise click.ClickException(f"the configuration could not be read: {exc}") from exc
    settings.prepare_directories()
    return settings


def _database_problem(settings: Settings, exc: Exception) -> click.ClickException:
    from sqlalchemy.engine import make_url

    where = make_url(settings.database_url).render_as_string(hide_password=True)
    reason = getattr(exc, "orig", None) or exc
    return click.ClickException(f"the database at {where} cannot be used: {reason}")


@click.group()
@click.version_option(package_name="rag-app")
def main() -> None:
    """rag_app: knowledge bases, robots and chat over your documents."""


@main.command()
@click.option("--host", default=None, help="Address to bind (default: server.host setting).")
@click.option("--port", default=None, type=int, help="Port to bind (default: server.port).")
def serve(host: str | None, port: int | None) -> None:
    """Start the API server. First, apply the migrations (when database.auto_migrate is on)
    and create what a new installation lacks: the first administrator (its generated password
    is printed once), the packaged embedding model, a chat model from RAG_CHAT_*."""
    import uvicorn

    from rag_app.api.app import DOCS_PATH, create_app

    settings = cli_settings()
    host = host or settings.server.host
    port = port or settings.server.port
    click.echo(f"rag_app data directory: {settings.data_dir}")
    for line in run_first_start(settings).lines():
        click.echo(line)
    # The schema is current now: the app's start-up need not run the migrations again.
    database = settings.database.model_copy(update={"auto_migrate": False})
    try:
        app = create_app(settings.model_copy(update={"database": database}))
    except RagAppError as exc:
        raise click.ClickException(exc.detail) from exc
    shown_host = "127.0.0.1" if host in ("0.0.0.0", "::") else host  # noqa: S104
    click.echo(f"API docs: http://{shown_host}:{port}{DOCS_PATH}")
    uvicorn.run(app, host=host, port=port, log_level=settings.log_level.lower())


def run_first_start(settings: Settings) -> BootstrapReport:
    """Migrations and rag_app.bootstrap, on a context of their own (its connections belong to
    this short event loop, not to the server's)."""
    from sqlalchemy.exc import DBAPIError

    try:
        return asyncio.run(_first_start(settings))
    except DBAPIError as exc:
        raise _database_problem(settings, exc) from exc
    except RagAppError as exc:
        raise click.ClickException(exc.detail) from exc


async def _first_start(settings: Settings) -> BootstrapReport:
    from rag_app.bootstrap import bootstrap, prepare_schema
    from rag_app.context import AppContext

    ctx = AppContext.create(settings)
    try:
        await prepare_schema(ctx)
        return await bootstrap(ctx)
    finally:
        await ctx.close()


@main.command()
@click.option("--revision", default="head", show_default=True, help="Target revision.")
@click.option("--check", is_flag=True, help="Only report whether the schema matches the code.")
def migrate(revision: str, check: bool) -> None:
    """Apply the database migrations (or check them with --check)."""
    from sqlalchemy.exc import DBAPIError

    settings = cli_settings()
    try:
        _migrate(settings.database_url, revision, check)
    except DBAPIError as exc:
        raise _database_problem(settings, exc) from exc
    except RagAppError as exc:  # e.g. another process held the migration lock for too long
        raise click.ClickException(exc.detail) from exc


def _migrate(url: str, revision: str, check: bool) -> None:
    from rag_app.db import migrate as migrations

    if check:
        current, head = migrations.current_revision(url), migrations.head_revision()
        differences = migrations.schema_differences(url) if current == head else []
        if current != head:
            raise click.ClickException(
                f"database at revision {current}, code at {head}: run `rag-app migrate`"
            )
        if differences:
            raise click.ClickException(f"schema differs from the models: {differences}")
        click.echo(f"schema is up to date (revision {head})")
        return
    migrations.upgrade(url, revision)
    click.echo(f"database migrated to {migrations.current_revision(url)}")


@main.command()
@click.option(
    "--concurrency", default=None, type=int, help="Documents at once (default: jobs.workers)."
)
@click.option(
    "--grace-seconds",
    default=5.0,
    show_default=True,
    type=click.FloatRange(min=0),
    help="On SIGTERM/SIGINT, how long running documents get to finish before they are "
    "stopped and handed back to the queue for another worker.",
)
def worker(concurrency: int | None, grace_seconds: float) -> None:
    """Process queued documents (needs redis.url; run as many as you like)."""
    settings = cli_settings()
    if not settings.redis.url:
        raise click.ClickException(
            "set RAG_REDIS__URL: workers take their jobs from Redis. Without Redis the API "
            "server processes documents itself."
        )
    try:
        asyncio.run(_run_worker(settings, concurrency or settings.jobs.workers, grace_seconds))
    except RagAppError as exc:  # e.g. another process held the migration lock for too long
        raise click.ClickException(exc.detail) from exc


async def _run_worker(settings: Settings, concurrency: int, grace_seconds: float) -> None:
    from rag_app.context import AppContext
    from rag_app.jobs.worker import build_worker

    ctx = AppContext.create(settings)
    try:
        await asyncio.to_thread(ctx.migrate)
        await ctx.start_jobs()
        # Returns after SIGTERM/SIGINT, once running documents are finished or handed back.
        await build_worker(ctx, concurrency, grace_seconds).start()
    finally:
        await ctx.close()


@main.group()
def user() -> None:
    """Manage user accounts."""


@user.command("create")
@click.option("--username", required=True)
@click.option("--email", required=True)
@click.option("--password", prompt=True, hide_input=True, confirmation_prompt=True)
@click.option("--admin", "is_admin", is_flag=True, help="Make the account an administrator.")
def user_create(username: str, email: str, password: str, is_admin: bool) -> None:
    """Create an account; `--admin` is how the first administrator is made."""
    from pydantic import ValidationError

    from rag_app.domain.users.schemas import UserCreate

    try:
        data = UserCreate(
            username=username, email=email, password=password, role="admin" if is_admin else "user"
        )
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
        raise click.ClickException(problems) from exc
    from sqlalchemy.exc import DBAPIError

    settings = cli_settings()
    try:
        created = asyncio.run(_create_user(settings, data))
    except DBAPIError as exc:
        raise _database_problem(settings, exc) from exc
    click.echo(f"created {created['role']} '{created['username']}' (id {created['id']})")


async def _create_user(settings: Settings, data: Any) -> dict[str, Any]:
    from rag_app.context import AppContext
    from rag_app.domain.users.service import UserService

    ctx = AppContext.create(settings)
    try:
        await asyncio.to_thread(ctx.migrate)
        async with ctx.sessionmaker() as session:
            created = await UserService(session, ctx).create(data)
            return {"id": created.id, "username": created.username, "role": created.role}
    except RagAppError as exc:
        raise click.ClickException(exc.detail) from exc
    finally:
        await ctx.close()


def _register_groups() -> None:
    from rag_app.cli_chat import chat
    from rag_app.cli_demo import demo
    from rag_app.cli_doctor import doctor
    from rag_app.cli_eval import eval_command
    from rag_app.cli_kb import kb

    main.add_command(kb)
    main.add_command(eval_command)
    main.add_command(chat)
    main.add_command(demo)
    main.add_command(doctor)


_register_groups()

if __name__ == "__main__":
    sys.exit(main())
