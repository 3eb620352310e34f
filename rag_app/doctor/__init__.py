"""`rag-app doctor`: check every configured component and say how to fix what is wrong.

``run_checks(settings)`` returns one ``CheckResult`` per component (SQL and its migrations,
secrets, Redis, object store, Milvus, Elasticsearch, every registered model and the fit of its
vectors, the server port), each "ok", "warning", "problem" or "skipped" with a reason and a
fix. Only "problem" means the deployment is broken; a "warning" works, but worse or
unverified. Checks never raise and never print a secret.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from rag_app.doctor.common import DEFAULT_TIMEOUT, CheckResult, Status, has_problems

if TYPE_CHECKING:
    from rag_app.settings import Settings

__all__ = ["DEFAULT_TIMEOUT", "CheckResult", "Status", "has_problems", "run_checks"]


def run_checks(settings: Settings, *, timeout: float = DEFAULT_TIMEOUT) -> list[CheckResult]:
    """See ``rag_app.doctor.runner.run_checks``."""
    # Imported on call: the checks pull in the model clients, and `rag-app --help` (which
    # imports this package to register the command) should stay quick.
    from rag_app.doctor.runner import run_checks as run

    return run(settings, timeout=timeout)
