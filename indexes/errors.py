"""Errors raised by ``indexes``. Third-party exceptions are translated into these at this
boundary, so callers (the app, a notebook) handle one small tree with messages a person can read."""

from __future__ import annotations


class IndexesError(Exception):
    """Base class. ``str(exc)`` is a complete sentence safe to show to the user."""


class UnsupportedFileType(IndexesError):
    """The file is not of a type we can read (or its content does not match its extension)."""


class DocumentUnreadable(IndexesError):
    """The file is corrupt, encrypted, too large when decompressed, or otherwise unreadable."""


class NoTextFound(IndexesError):
    """The file was read but holds no text (a scanned PDF, an empty file)."""


class ModelError(IndexesError):
    """A model could not be loaded or a provider call failed after its retries."""


class StoreError(IndexesError):
    """A vector or keyword store failed (unreachable, rejected the write, ...)."""
