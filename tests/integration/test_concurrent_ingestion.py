"""Several ingestion runs at once inside one process (the in-process queue runs jobs.workers of
them): runs of one document exclude each other through the database claim, and runs of different
documents of one knowledge base all land in its stores."""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path

from indexes.knowledge_index import KnowledgeIndex
from indexes.specs import StoreSettings
from rag_app.db.models import Document
from rag_app.db.types import utcnow
from rag_app.domain.documents.service import original_key
from rag_app.jobs.ingest import IngestionJob
from tests import fixtures_docs as docs
from tests.conftest import Api
from tests.integration.test_documents import (
    new_kb,
    settled_kb,
    store_counts,
    upload,
    wait_done,
)
from tests.integration.test_jobs import guide, job_context, set_columns
from tests.integration.test_stores import DIM, ENGLISH, make_nodes, make_spec


async def queued_document(api: Api, knowledge_id: int, name: str, data: bytes) -> Document:
    """A document as upload leaves it (original stored, row ``uploading``) but not queued."""
    document = await api.insert(
        Document(knowledge_id=knowledge_id, file_name=name, file_extension="md", file_path="")
    )
    document.file_path = original_key(knowledge_id, document.id or 0, name)
    await api.ctx.object_store.put(document.file_path, data)
    return await api.insert(document)


async def test_concurrent_runs_of_one_document_process_it_once(api: Api) -> None:
    user = await api.user()
    kb = await new_kb(api, user, chunk_size=100, chunk_overlap=10)
    document = await queued_document(api, kb["id"], "policy.md", guide("leave", sentences=80))
    job = IngestionJob(job_context(api))
    results = await asyncio.gather(*(job.run(document.id or 0) for _ in range(3)))
    assert sorted(results) == ["completed", "skipped", "skipped"]
    final = await wait_done(api, user, document.id or 0)
    assert final["status"] == "completed"
    assert final["chunk_count"] > 1
    counts = await store_counts(api, kb["id"], document.id or 0)
    assert counts == (final["chunk_count"], final["chunk_count"])
    # Once completed, a late duplicate run finds nothing to claim.
    assert await job.run(document.id or 0) == "skipped"


def test_concurrent_writes_to_one_milvus_lite_collection_all_land(tmp_path: Path) -> None:
    """Milvus Lite loses writes to one collection made from several threads at once unless
    they are serialised (its flush is not thread-safe): 8 writers, 8 rounds each."""
    index = KnowledgeIndex.open(make_spec(), StoreSettings(index_dir=tmp_path), DIM)
    texts = ENGLISH * 4
    errors: list[Exception] = []

    def write(document_id: int) -> None:
        try:
            for round_ in range(8):
                chunks = [f"{text} (round {round_}, chunk {i})" for i, text in enumerate(texts)]
                index.replace_document(document_id, make_nodes(document_id, chunks))
        except Exception as exc:
            errors.append(exc)

    writers = [threading.Thread(target=write, args=(d,)) for d in range(1, 9)]
    for writer in writers:
        writer.start()
    for writer in writers:
        writer.join()
    assert errors == []
    assert [index.count(d) for d in range(1, 9)] == [len(texts)] * 8
    assert index.keyword_store.count() == index.count() == 8 * len(texts)


async def test_many_documents_of_one_knowledge_base_at_once(api: Api) -> None:
    assert api.ctx.settings.jobs.workers > 1  # they do run concurrently
    user = await api.user()
    kb = await new_kb(api, user, chunk_size=100, chunk_overlap=10)
    topics = ["leave", "travel", "expense", "security", "training", "payroll", "safety", "remote"]
    files = [(f"{topic}.md", guide(topic, sentences=40)) for topic in topics]
    response = await upload(api, user, kb["id"], *files)
    assert response.status_code == 202, response.text
    finals = [await wait_done(api, user, item["id"]) for item in response.json()["items"]]
    assert [f["status"] for f in finals] == ["completed"] * len(files), finals
    for final in finals:
        assert await store_counts(api, kb["id"], final["id"]) == (final["chunk_count"],) * 2
    total = sum(final["chunk_count"] for final in finals)
    assert await store_counts(api, kb["id"]) == (total, total)
    await settled_kb(api, user, kb["id"], documents=len(files), chunks=total)


async def test_a_batch_records_each_document_on_its_own(api: Api) -> None:
    """One run of several documents (a worker takes a batch from the queue): a file with no
    text fails alone with its reason, a document held by another live run is skipped, the
    others complete, and the knowledge base's counts come out right."""
    user = await api.user()
    kb = await new_kb(api, user, chunk_size=100, chunk_overlap=10)
    good = [
        await queued_document(api, kb["id"], f"{topic}.md", guide(topic, sentences=30))
        for topic in ("leave", "travel", "payroll")
    ]
    scanned = await queued_document(api, kb["id"], "scan.pdf", docs.scanned_pdf())
    held = await queued_document(api, kb["id"], "held.md", guide("safety"))
    await set_columns(api, held.id or 0, job_id="another-run", heartbeat_at=utcnow())
    documents = [*good, scanned, held]

    outcomes = await IngestionJob(job_context(api)).run_many([d.id or 0 for d in documents])

    assert outcomes == {
        **{d.id: "completed" for d in good},
        scanned.id: "failed",
        held.id: "skipped",
    }
    finals = [await wait_done(api, user, d.id or 0) for d in [*good, scanned]]
    for final in finals[:3]:
        assert final["chunk_count"] > 1
        assert await store_counts(api, kb["id"], final["id"]) == (final["chunk_count"],) * 2
    assert finals[3]["status"] == "failed"
    assert "no text" in finals[3]["error_msg"].lower()
    assert await store_counts(api, kb["id"], scanned.id) == (0, 0)
    total = sum(final["chunk_count"] for final in finals)
    await settled_kb(api, user, kb["id"], documents=len(documents), chunks=total)


async def test_concurrent_batches_of_one_knowledge_base_all_record(api: Api) -> None:
    """Batches of one knowledge base recording and recounting at the same time (several
    workers): on MariaDB a recount inside the outcome transaction deadlocked with another
    batch's, so recounts run in transactions of their own."""
    user = await api.user()
    kb = await new_kb(api, user, chunk_size=100, chunk_overlap=10)
    documents = [
        await queued_document(api, kb["id"], f"part{n}.md", guide(f"part{n}", sentences=6))
        for n in range(12)
    ]
    ids = [document.id or 0 for document in documents]
    job = IngestionJob(job_context(api))

    outcomes = await asyncio.gather(*(job.run_many(ids[n : n + 2]) for n in range(0, 12, 2)))

    assert [status for batch in outcomes for status in batch.values()] == ["completed"] * 12
    finals = [await wait_done(api, user, document_id) for document_id in ids]
    total = sum(final["chunk_count"] for final in finals)
    assert await store_counts(api, kb["id"]) == (total, total)
    await settled_kb(api, user, kb["id"], documents=12, chunks=total)
