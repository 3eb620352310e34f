"""One wording for failed calls to OpenAI-compatible providers (chat and embedding alike):
what failed, where, after how many retries — never the API key."""

from __future__ import annotations

import httpx
import openai


def describe_failure(
    exc: BaseException,
    who: str,
    *,
    timeout: float | None,
    max_retries: int | None,
    secret: str | None = None,
) -> str:
    """A sentence for ``exc`` raised while calling ``who`` (e.g. "The openai chat model 'x' at
    URL"). ``secret`` (the API key) is scrubbed from anything the server echoed."""
    tries = f"after {max_retries} retries" if max_retries is not None else "after its retries"
    if isinstance(exc, openai.APITimeoutError | httpx.TimeoutException):
        within = f" within {timeout:g} s" if timeout is not None else " in time"
        message = f"{who} did not answer{within}, {tries}."
    elif isinstance(exc, openai.APIConnectionError | httpx.TransportError):
        message = f"{who} could not be reached or dropped the connection, {tries}."
    elif isinstance(exc, openai.AuthenticationError | openai.PermissionDeniedError):
        message = (
            f"{who} rejected the API key (HTTP {exc.status_code}): check the key registered "
            "for this model."
        )
    elif isinstance(exc, openai.RateLimitError):
        message = f"{who} is rate limiting requests (HTTP 429), still {tries}."
    elif isinstance(exc, openai.APIStatusError) and exc.status_code >= 500:
        message = f"{who} failed with HTTP {exc.status_code}, {tries}."
    elif isinstance(exc, openai.NotFoundError):
        message = f"{who} answered HTTP 404: check the model name and the base URL."
    elif isinstance(exc, openai.APIStatusError):
        detail = exc.body.get("message") if isinstance(exc.body, dict) else None
        message = f"{who} refused the request (HTTP {exc.status_code}): {detail or exc.message}"
    elif isinstance(exc, openai.APIError):  # an error event in the middle of a stream
        message = f"{who} failed while answering: {exc.message}"
    else:
        message = f"{who} failed: {type(exc).__name__}."
    if secret:
        message = message.replace(secret, "***")
    return message[:500]
