"""`rag-app doctor`: check every configured component; exit 1 when something is broken."""

from __future__ import annotations

import json
import shutil

import click

from rag_app.doctor import DEFAULT_TIMEOUT, CheckResult, has_problems
from rag_app.doctor.common import problem
from rag_app.settings import Settings


@click.command("doctor")
@click.option("--json", "as_json", is_flag=True, help="Print the results as a JSON list.")
@click.option(
    "--timeout",
    type=click.FloatRange(min=0.5, max=120),
    default=DEFAULT_TIMEOUT,
    show_default=True,
    help="Seconds each network check may wait.",
)
def doctor(as_json: bool, timeout: float) -> None:
    """Check SQL and its migrations, Redis, the object store, Milvus, Elasticsearch, every
    registered model and the server port; say how to fix each problem. Exit code 1 when
    there is a problem (warnings do not count)."""
    results = _results(timeout)
    if as_json:
        click.echo(json.dumps([r.to_dict() for r in results], ensure_ascii=False, indent=2))
    else:
        from rag_app.doctor.table import format_table

        width = shutil.get_terminal_size((120, 24)).columns
        click.echo(format_table(results, width=max(width, 80)))
    if has_problems(results):
        raise click.exceptions.Exit(1)


def _results(timeout: float) -> list[CheckResult]:
    from pydantic import ValidationError

    try:
        settings = Settings()
    except ValidationError as exc:
        # Field paths and messages only: the input values may be secrets.
        reasons = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
        return [_configuration_problem(reasons)]
    except Exception as exc:  # a missing RAG_CONFIG overlay, unreadable YAML, ...
        return [_configuration_problem(str(exc))]
    from rag_app.doctor import run_checks

    return run_checks(settings, timeout=timeout)


def _configuration_problem(reason: str) -> CheckResult:
    return problem(
        "configuration",
        f"the settings cannot be read: {reason}",
        "correct the RAG_* variable, .env or config/*.yaml entry named (RAG_SECTION__KEY for "
        "section.key)",
    )
