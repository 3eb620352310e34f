"""What every check returns, and the small helpers several checks share."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Awaitable, Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Literal, TypeVar
from urllib.parse import unquote, urlsplit, urlunsplit

T = TypeVar("T")

# "warning": worth knowing, but the app works (a missing Chinese analyzer, a port held by this
# app's own running server). Only "problem" makes `rag-app doctor` exit non-zero.
Status = Literal["ok", "warning", "problem", "skipped"]
DEFAULT_TIMEOUT = 5.0
# Secrets shorter than this are not scrubbed from output: replacing every "ab" in a sentence
# would make it unreadable, and no real key or password is that short.
_MIN_SCRUBBED_SECRET = 4


@dataclass(frozen=True)
class CheckResult:
    component: str
    status: Status
    detail: str
    fix: str = ""

    def to_dict(self) -> dict[str, str]:
        return asdict(self)

    def scrubbed(self, secrets: Iterable[str]) -> CheckResult:
        """This result with every secret replaced by ``***``: a last guard for secrets that a
        driver or a server echoed into an error message."""
        detail, fix = self.detail, self.fix
        for secret in sorted(set(secrets), key=len, reverse=True):
            if len(secret) >= _MIN_SCRUBBED_SECRET:
                detail, fix = detail.replace(secret, "***"), fix.replace(secret, "***")
        return replace(self, detail=detail, fix=fix)


def ok(component: str, detail: str) -> CheckResult:
    return CheckResult(component, "ok", detail)


def problem(component: str, detail: str, fix: str) -> CheckResult:
    return CheckResult(component, "problem", detail, fix)


def warning(component: str, detail: str, fix: str) -> CheckResult:
    return CheckResult(component, "warning", detail, fix)


def skipped(component: str, detail: str, fix: str = "") -> CheckResult:
    return CheckResult(component, "skipped", detail, fix)


def has_problems(results: Iterable[CheckResult]) -> bool:
    return any(result.status == "problem" for result in results)


def hide_password(url: str) -> str:
    """``url`` with any password replaced by ``***`` (user names and hosts stay readable)."""
    try:
        parts = urlsplit(url)
        password, port = parts.password, parts.port
    except ValueError:  # a malformed port or netloc: show nothing of it rather than a secret
        return "(a URL that cannot be parsed)"
    if not password:
        return url
    host = parts.hostname or ""
    if ":" in host:  # IPv6 literal
        host = f"[{host}]"
    port_part = f":{port}" if port else ""
    netloc = f"{parts.username or ''}:***@{host}{port_part}"
    return urlunsplit(parts._replace(netloc=netloc))


def url_secrets(url: str | None) -> list[str]:
    """The password inside ``url``, if any, for scrubbing."""
    if not url:
        return []
    try:
        password = urlsplit(url).password
    except ValueError:
        return []
    # Drivers may echo it percent-decoded (SQLAlchemy decodes the URL it is given).
    return [password, unquote(password)] if password else []


def unwritable_reason(path: Path) -> str | None:
    """Why the app could not create or write ``path`` (a folder), or None when it can.

    Nothing is created: a folder that does not exist yet is fine when its nearest existing
    ancestor is writable, because the app creates it on first use.
    """
    existing = path
    while not existing.exists():
        if existing.parent == existing:
            return f"no part of {path} exists"
        existing = existing.parent
    if not existing.is_dir():
        return f"{existing} is a file, not a folder"
    if not os.access(existing, os.W_OK | os.X_OK):
        return f"{existing} is not writable by this user"
    return None


def run_coroutine(factory: Callable[[], Awaitable[T]]) -> T:
    """Run an async check to completion from blocking code.

    In a thread of its own, with its own event loop: this works whether or not the caller
    already runs a loop (the CLI does not; a test or a notebook may), and leaves the caller's
    loop untouched.
    """

    async def main() -> T:
        return await factory()

    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="doctor") as pool:
        return pool.submit(asyncio.run, main()).result()
