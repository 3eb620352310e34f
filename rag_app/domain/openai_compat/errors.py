"""Errors in OpenAI's shape, ``{"error": {"message", "type", "param", "code"}}``, so that OpenAI
clients raise their usual exceptions (``AuthenticationError``, ``NotFoundError``, ...).

The status and the message come from the application's one mapping (``rag_app.api.problems``),
so both shapes agree and a 5xx never echoes internal exception text; only the envelope differs.
"""

from __future__ import annotations

from typing import Any

from litestar import MediaType, Request, Response

from rag_app.api.problems import EXCEPTION_HANDLERS
from rag_app.domain.openai_compat.schemas import error_object
from rag_app.errors import RagAppError

# OpenAI's error types by status; OpenAI answers invalid input with 400, not 422.
_TYPES = {
    400: "invalid_request_error",
    401: "invalid_request_error",
    403: "permission_error",
    404: "invalid_request_error",
    409: "invalid_request_error",
    413: "invalid_request_error",
    429: "rate_limit_error",
}
_CODES = {
    401: "invalid_api_key",
    404: "not_found",
    429: "rate_limit_exceeded",
    502: "upstream_error",
}
# The provider already failed after the retries of our own client: a client retrying the
# whole request would only store the question again. OpenAI's clients honour this header.
_NO_RETRY = {"x-should-retry": "false"}


def openai_error_response(
    status: int, message: str, code: str | None = None, param: str | None = None
) -> Response[dict[str, Any]]:
    kind = _TYPES.get(status, "server_error" if status >= 500 else "invalid_request_error")
    return Response(
        error_object(message, kind, code or _CODES.get(status), param),
        status_code=status,
        media_type=MediaType.JSON,
        headers=_NO_RETRY if status == 502 else None,
    )


def handle_openai_error(request: Request[Any, Any, Any], exc: Exception) -> Response[Any]:
    handler = next(
        (EXCEPTION_HANDLERS[cls] for cls in type(exc).__mro__ if cls in EXCEPTION_HANDLERS), None
    )
    problem = handler(request, exc) if handler else None
    body: dict[str, Any] = problem.content if problem and isinstance(problem.content, dict) else {}
    status = int(body.get("status") or 500)
    message = str(body.get("detail") or "the server could not complete this request")
    if status == 422:
        status = 400
    errors = body.get("errors") or []
    param = str(errors[0]["field"]) if errors and isinstance(errors[0], dict) else None
    code = None
    if isinstance(exc, RagAppError):
        code = exc.extra.get("openai_code")
        param = exc.extra.get("openai_param", param)
    return openai_error_response(status, message, code, param)


# Every key of the application's table: a class without its own entry here would find the
# application's handler first (a more specific class in the exception's MRO) and answer
# problem-details JSON.
OPENAI_EXCEPTION_HANDLERS: dict[int | type[Exception], Any] = {
    key: handle_openai_error for key in EXCEPTION_HANDLERS
}
