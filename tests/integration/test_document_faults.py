"""Provider faults while a document is embedded, through the API, on SQLite and MariaDB.

The embedding model is an OpenAI-compatible API served by the local test server, which fails on
command: persistently, transiently, or only after some batches went through. Whatever happens,
a document ends ``completed`` with all its chunks or ``failed`` with none, and its error message
says what the provider did without ever showing the API key.
"""

from __future__ import annotations

import logging
import uuid
from typing import Any

import pytest

from tests.conftest import Api, SignedIn
from tests.integration.test_documents import settled_kb, store_counts, upload, wait_done
from tests.integration.test_jobs import guide
from tests.openai_server import OpenAIServer

EMBEDDINGS = "/embeddings"
MODEL = "test-embed"
# ~100 chunks of at most 100 tokens: four embedding requests of 32 (the job's batch size).
LONG_GUIDE = guide("refund", sentences=1000)


async def api_embedding_kb(
    api: Api, user: SignedIn, admin: SignedIn, server: OpenAIServer
) -> tuple[dict[str, Any], str]:
    """A knowledge base embedded by the test server, with its key registered through /apikeys.
    Returns the knowledge base and the key."""
    secret = f"sk-live-{uuid.uuid4().hex}"
    server.api_key = secret
    llm = await api.llm(
        "embedding",
        provider="openai-compatible",
        model_name=MODEL,
        base_url=server.base_url,
        dimension=server.embedding_dimension,
    )
    await api.create_api_key(admin, llm.id or 0, api_key=secret)
    kb = await api.create_knowledge(user, embed_llm_id=llm.id, chunk_size=100, chunk_overlap=0)
    server.reset()  # forget the dimension check's request
    return kb, secret


def embedding_statuses(server: OpenAIServer) -> list[int]:
    return [request.status for request in server.requests_to(EMBEDDINGS)]


async def assert_nothing_stored(api: Api, user: SignedIn, kb_id: int, document_id: int) -> None:
    assert await store_counts(api, kb_id, document_id) == (0, 0)
    chunks = await api.client.get(f"/api/v1/documents/{document_id}/chunks", headers=user.headers)
    assert chunks.json()["total"] == 0
    await settled_kb(api, user, kb_id, documents=1, chunks=0)


async def test_persistent_server_errors_fail_the_document_then_retry_completes_it(
    api: Api, admin: SignedIn, openai_server: OpenAIServer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    user = await api.user()
    kb, secret = await api_embedding_kb(api, user, admin, openai_server)
    openai_server.fail(500, times=10_000, path=EMBEDDINGS)  # its error bodies echo the key

    response = await upload(api, user, kb["id"], ("refunds.md", LONG_GUIDE))
    assert response.status_code == 202, response.text
    document_id = response.json()["items"][0]["id"]
    failed = await wait_done(api, user, document_id)
    assert failed["status"] == "failed"
    message = failed["error_msg"]
    for fragment in ("openai-compatible", MODEL, "HTTP 500", openai_server.base_url):
        assert fragment in message, message
    assert failed["chunk_count"] == 0
    await assert_nothing_stored(api, user, kb["id"], document_id)
    # The first batch, tried once and retried by the client; nothing after it was attempted.
    assert set(embedding_statuses(openai_server)) == {500}
    document = await api.client.get(f"/api/v1/documents/{document_id}", headers=user.headers)
    assert secret not in document.text
    assert secret not in caplog.text

    openai_server.reset()
    retried = await api.client.post(f"/api/v1/documents/{document_id}/retry", headers=user.headers)
    assert retried.status_code == 202, retried.text
    final = await wait_done(api, user, document_id)
    assert final["status"] == "completed", final
    assert final["error_msg"] is None
    assert final["chunk_count"] > 64  # more than two embedding batches
    assert await store_counts(api, kb["id"], document_id) == (final["chunk_count"],) * 2
    assert len(embedding_statuses(openai_server)) >= 3
    assert secret not in caplog.text


async def test_a_transient_rate_limit_is_absorbed(
    api: Api, admin: SignedIn, openai_server: OpenAIServer
) -> None:
    user = await api.user()
    kb, _ = await api_embedding_kb(api, user, admin, openai_server)
    openai_server.fail(429, times=2, path=EMBEDDINGS)
    response = await upload(api, user, kb["id"], ("refunds.md", guide("refund", sentences=200)))
    document_id = response.json()["items"][0]["id"]
    final = await wait_done(api, user, document_id)
    assert final["status"] == "completed", final
    assert final["error_msg"] is None
    statuses = embedding_statuses(openai_server)
    assert statuses[:3] == [429, 429, 200]
    assert set(statuses[3:]) <= {200}
    assert await store_counts(api, kb["id"], document_id) == (final["chunk_count"],) * 2


async def test_a_failure_after_some_batches_leaves_no_chunk_of_any_version(
    api: Api, admin: SignedIn, openai_server: OpenAIServer
) -> None:
    user = await api.user()
    kb, _ = await api_embedding_kb(api, user, admin, openai_server)
    response = await upload(api, user, kb["id"], ("refunds.md", LONG_GUIDE))
    document_id = response.json()["items"][0]["id"]
    first = await wait_done(api, user, document_id)
    assert first["status"] == "completed", first
    assert await store_counts(api, kb["id"], document_id) == (first["chunk_count"],) * 2

    # Processing it again breaks down after the first batch of embeddings went through.
    openai_server.reset()
    openai_server.fail(500, times=10_000, path=EMBEDDINGS, after=1)
    reindex = await api.client.post(f"/api/v1/knowledge/{kb['id']}/reindex", headers=user.headers)
    assert reindex.json() == {"queued": 1, "skipped_in_progress": 0}
    failed = await wait_done(api, user, document_id)
    assert failed["status"] == "failed"
    assert "HTTP 500" in failed["error_msg"]
    statuses = embedding_statuses(openai_server)
    assert statuses[0] == 200
    assert len(statuses) > 1
    assert set(statuses[1:]) == {500}
    # Neither the new half-embedded version nor the old complete one is left anywhere.
    assert failed["chunk_count"] == 0
    await assert_nothing_stored(api, user, kb["id"], document_id)

    openai_server.reset()
    retried = await api.client.post(f"/api/v1/documents/{document_id}/retry", headers=user.headers)
    assert retried.status_code == 202, retried.text
    final = await wait_done(api, user, document_id)
    assert final["status"] == "completed", final
    assert final["chunk_count"] == first["chunk_count"]
    assert await store_counts(api, kb["id"], document_id) == (final["chunk_count"],) * 2


async def test_a_rejected_key_is_named_but_never_shown(
    api: Api, admin: SignedIn, openai_server: OpenAIServer
) -> None:
    user = await api.user()
    kb, secret = await api_embedding_kb(api, user, admin, openai_server)
    openai_server.api_key = "sk-the-provider-wants-another"  # the registered key is now wrong
    response = await upload(api, user, kb["id"], ("refunds.md", guide("refund")))
    document_id = response.json()["items"][0]["id"]
    failed = await wait_done(api, user, document_id)
    assert failed["status"] == "failed"
    assert "rejected the API key" in failed["error_msg"]
    assert secret not in failed["error_msg"]
    # 401 is not retried; the server's error body repeated the key it was sent.
    assert embedding_statuses(openai_server) == [401]
    await assert_nothing_stored(api, user, kb["id"], document_id)
