"""Progress of one ingestion run, written by the worker thread and read by the heartbeat loop."""

from __future__ import annotations

import threading
from dataclasses import dataclass

from rag_app.db.models.document import DocumentStatus

# Overall progress (0-100) spans the stages: where each stage starts and how wide it is.
_STAGES: dict[DocumentStatus, tuple[int, int]] = {
    DocumentStatus.parsing: (0, 10),
    DocumentStatus.splitting: (10, 10),
    DocumentStatus.embedding: (20, 75),
}


@dataclass
class Snapshot:
    status: DocumentStatus
    progress: int


class ProgressTracker:
    """Thread-safe: the parsing/embedding thread reports, the event loop reads."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._status = DocumentStatus.parsing
        self._progress = 0

    def stage(self, status: DocumentStatus, fraction: float = 0.0) -> None:
        start, width = _STAGES.get(status, (95, 5))
        value = start + int(width * min(max(fraction, 0.0), 1.0))
        with self._lock:
            self._status = status
            self._progress = max(self._progress, value) if status == self._status else value

    def report(self, stage_name: str, fraction: float) -> None:
        """Callback shape of ``indexes.pipeline.embed_document``'s progress argument."""
        status = DocumentStatus(stage_name) if stage_name in DocumentStatus.__members__ else None
        self.stage(status or DocumentStatus.embedding, fraction)

    def snapshot(self) -> Snapshot:
        with self._lock:
            return Snapshot(self._status, self._progress)
