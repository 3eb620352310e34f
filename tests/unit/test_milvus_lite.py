"""The in-process record of which documents have rows in a Milvus Lite collection."""

from __future__ import annotations

from indexes.stores.milvus_lite import LiteDocuments


def test_only_documents_written_or_found_are_deleted() -> None:
    documents = LiteDocuments()
    assert documents.present([1, 2]) == [1, 2]  # unknown before load: delete everything
    documents.load(lambda: [1])
    documents.load(lambda: [99])  # read once
    documents.writing([2])  # recorded before the write: a failed write still counts
    assert documents.present([1, 2, 3]) == [1, 2]
    documents.deleted([1])
    assert documents.present([1, 2, 3]) == [2]


def test_a_collection_too_large_to_read_deletes_everything() -> None:
    documents = LiteDocuments()
    documents.load(lambda: None)
    documents.writing([5])
    documents.deleted([5])
    assert documents.present([5, 6]) == [5, 6]


def test_a_dropped_collection_is_read_again() -> None:
    documents = LiteDocuments()
    documents.load(lambda: [1])
    documents.forget()
    assert documents.present([1]) == [1]
    documents.load(lambda: [])
    assert documents.present([1]) == []
