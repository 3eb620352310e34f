"""The application's error tree. Services raise these; ``rag_app.api.problems`` maps each class
to one HTTP status and renders a problem-details body whose ``detail`` a person can act on."""

from __future__ import annotations

from typing import Any


class RagAppError(Exception):
    status_code = 500
    title = "Internal error"

    def __init__(self, detail: str, **extra: Any) -> None:
        super().__init__(detail)
        self.detail = detail
        self.extra = extra


class ValidationFailed(RagAppError):
    status_code = 422
    title = "Invalid input"

    def __init__(self, detail: str, field: str | None = None, **extra: Any) -> None:
        if field is not None:
            extra["errors"] = [{"field": field, "message": detail}]
        super().__init__(detail, **extra)


class AuthenticationFailed(RagAppError):
    status_code = 401
    title = "Not authenticated"


class PermissionDenied(RagAppError):
    status_code = 403
    title = "Forbidden"


class NotFound(RagAppError):
    status_code = 404
    title = "Not found"


class Conflict(RagAppError):
    status_code = 409
    title = "Conflict"


class PayloadTooLarge(RagAppError):
    status_code = 413
    title = "Too large"


class UnsupportedMediaType(RagAppError):
    status_code = 415
    title = "Unsupported file type"


class RateLimited(RagAppError):
    status_code = 429
    title = "Too many requests"


class ConfigurationError(RagAppError):
    """The deployment is misconfigured; raised at start-up, never per request."""

    title = "Configuration error"


class BackendUnavailable(RagAppError):
    """A backend we depend on (SQL, Redis, object store, Milvus) does not answer."""

    status_code = 503
    title = "Service unavailable"


class UpstreamError(RagAppError):
    """A remote model provider failed or answered nonsense."""

    status_code = 502
    title = "Model provider error"
