"""The queue protocol, kept free of heavy imports so the app context can name it."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol


class JobQueue(Protocol):
    async def start(self) -> None: ...

    async def stop(self) -> None: ...

    async def enqueue(self, document_ids: Sequence[int]) -> None:
        """Queue these documents; a worker takes up to ``jobs.batch_documents`` at once."""
        ...

    async def check(self) -> None:
        """Raise BackendUnavailable when jobs cannot be queued now."""
        ...
