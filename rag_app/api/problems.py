"""Problem-details (RFC 9457) responses for every error.

One table maps error classes to statuses (``RagAppError.status_code``); a 5xx never echoes the
internal exception text, which goes to the log instead.
"""

from __future__ import annotations

import logging
from typing import Any

from litestar import Request, Response
from litestar.exceptions import HTTPException, ValidationException
from litestar.status_codes import HTTP_500_INTERNAL_SERVER_ERROR
from sqlalchemy.exc import DBAPIError, IntegrityError

from indexes.errors import IndexesError, ModelError, StoreError
from rag_app.errors import (
    BackendUnavailable,
    Conflict,
    RagAppError,
    UpstreamError,
    ValidationFailed,
)

logger = logging.getLogger("rag_app.api")

PROBLEM_JSON = "application/problem+json"


def problem_response(
    status: int, title: str, detail: str, extra: dict[str, Any] | None = None
) -> Response[dict[str, Any]]:
    body: dict[str, Any] = {"type": "about:blank", "title": title, "status": status}
    body["detail"] = detail
    body.update(extra or {})
    return Response(body, status_code=status, media_type=PROBLEM_JSON)


def handle_app_error(request: Request[Any, Any, Any], exc: RagAppError) -> Response[Any]:
    if exc.status_code >= 500:
        logger.error("%s %s failed: %s", request.method, request.url.path, exc.detail)
    return problem_response(exc.status_code, exc.title, exc.detail, exc.extra)


def _field_name(error: dict[str, Any]) -> str:
    key = str(error.get("key") or "")
    source = error.get("source")
    source = getattr(source, "value", source)  # Litestar gives a ParamType enum for parameters
    if source in (None, "body"):
        return key or "body"
    return f"{source}.{key}" if key else str(source)


def handle_validation_error(
    request: Request[Any, Any, Any], exc: ValidationException
) -> Response[Any]:
    raw = exc.extra if isinstance(exc.extra, list) else []
    errors = [
        {"field": _field_name(e), "message": str(e.get("message", ""))}
        for e in raw
        if isinstance(e, dict)
    ]
    if errors:
        detail = "; ".join(f"{e['field']}: {e['message']}" for e in errors)
    else:
        detail = exc.detail or "the request could not be read"
    return problem_response(422, "Invalid input", detail, {"errors": errors})


def handle_http_error(request: Request[Any, Any, Any], exc: HTTPException) -> Response[Any]:
    status = exc.status_code
    if status >= 500:
        logger.error("%s %s: %s", request.method, request.url.path, exc.detail)
        return problem_response(status, "Internal error", "the server could not complete this")
    title = {401: "Not authenticated", 403: "Forbidden", 404: "Not found", 405: "Not allowed"}
    detail = exc.detail
    if status == 401:
        detail = "sign in first: send a valid access token as 'Authorization: Bearer <token>'"
    return problem_response(status, title.get(status, "Request error"), detail)


def handle_indexes_error(request: Request[Any, Any, Any], exc: IndexesError) -> Response[Any]:
    """Errors of the retrieval layer: their messages are written for people (indexes.errors)."""
    if isinstance(exc, StoreError):
        error: RagAppError = BackendUnavailable(str(exc))
    elif isinstance(exc, ModelError):
        error = UpstreamError(str(exc))
    else:
        error = ValidationFailed(str(exc))
    return handle_app_error(request, error)


def handle_integrity_error(request: Request[Any, Any, Any], exc: IntegrityError) -> Response[Any]:
    # Services check rules first; this is the backstop for a race between two requests.
    logger.info("integrity error on %s %s: %s", request.method, request.url.path, exc.orig)
    err = Conflict("this change conflicts with data that was saved at the same time; retry")
    return handle_app_error(request, err)


def handle_database_error(request: Request[Any, Any, Any], exc: DBAPIError) -> Response[Any]:
    logger.exception("database error on %s %s", request.method, request.url.path)
    if exc.connection_invalidated or "connect" in str(exc.orig).lower():
        return handle_app_error(request, BackendUnavailable("the database is not reachable"))
    return handle_unexpected_error(request, exc)


def handle_unexpected_error(request: Request[Any, Any, Any], exc: Exception) -> Response[Any]:
    logger.exception("unhandled error on %s %s", request.method, request.url.path)
    return problem_response(
        HTTP_500_INTERNAL_SERVER_ERROR,
        "Internal error",
        "the server could not complete this request; the error has been logged",
    )


EXCEPTION_HANDLERS: dict[int | type[Exception], Any] = {
    RagAppError: handle_app_error,
    IndexesError: handle_indexes_error,
    ValidationException: handle_validation_error,
    HTTPException: handle_http_error,
    IntegrityError: handle_integrity_error,
    DBAPIError: handle_database_error,
    Exception: handle_unexpected_error,
}

__all__ = ["EXCEPTION_HANDLERS", "PROBLEM_JSON", "problem_response"]
