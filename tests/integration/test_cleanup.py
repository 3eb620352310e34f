"""What a knowledge base leaves behind, and what may change under it, on SQLite and MariaDB.

Deleting a knowledge base (or its owner) removes its Milvus collection, its BM25 files and its
stored originals, and nothing of anyone else's. The keyword backend and the embedding model can
change only while the knowledge base has no documents; the embedding model's dimension is checked
against the model itself when a knowledge base is created.
"""

from __future__ import annotations

import asyncio
import logging
import re
import socket
import time
from pathlib import Path
from typing import Any

import pytest

from rag_app.db.models import Knowledge
from rag_app.indexing.access import open_index
from tests import fixtures_docs as docs
from tests.conftest import Api, SignedIn, assert_invalid, assert_problem, new_api_key
from tests.integration.test_document_faults import api_embedding_kb
from tests.integration.test_documents import (
    new_kb,
    settled_kb,
    store_counts,
    stored_files,
    upload,
    wait_done,
)
from tests.openai_server import DEFAULT_API_KEY, OpenAIServer

KB = "/api/v1/knowledge"


async def kb_with_document(api: Api, user: SignedIn, name: str = "notes.md") -> dict[str, Any]:
    """A knowledge base with one processed document; returns the knowledge base (re-read)."""
    kb = await new_kb(api, user)
    item = (await upload(api, user, kb["id"], (name, docs.markdown_bytes()))).json()["items"][0]
    done = await wait_done(api, user, item["id"])
    assert done["status"] == "completed", done
    assert done["chunk_count"] > 0
    return await settled_kb(api, user, kb["id"], documents=1, chunks=done["chunk_count"])


async def wait_for_status(api: Api, user: SignedIn, document_id: int, status: str) -> None:
    deadline = time.monotonic() + 60
    while True:
        response = await api.client.get(
            f"/api/v1/documents/{document_id}/status", headers=user.headers
        )
        body = response.json()
        if body["status"] == status:
            return
        assert body["status"] not in ("completed", "failed"), body
        assert time.monotonic() < deadline, body
        await asyncio.sleep(0.1)


def bm25_dir(api: Api, kb: dict[str, Any]) -> Path:
    return api.ctx.settings.index_dir / "bm25" / kb["vector_collection_name"]


async def with_index(api: Api, kb_id: int, work: Any) -> Any:
    """``work(index)`` in a thread, on the open index of a knowledge base."""

    async def run(session: Any) -> Any:
        knowledge = await session.get(Knowledge, kb_id)
        index = await open_index(api.ctx, session, knowledge)
        return await asyncio.to_thread(work, index)

    return await api.run(run)


async def collections(api: Api, via_kb_id: int) -> set[str]:
    """Every collection in the Milvus (Lite) database, seen through a live knowledge base."""
    return set(
        await with_index(api, via_kb_id, lambda index: index.milvus.client.list_collections())
    )


def assert_everything_there(api: Api, kb: dict[str, Any], names: set[str]) -> None:
    assert kb["vector_collection_name"] in names
    assert bm25_dir(api, kb).is_dir()
    assert stored_files(api.ctx, kb["id"])


def assert_nothing_left(api: Api, kb: dict[str, Any], names: set[str]) -> None:
    assert kb["vector_collection_name"] not in names
    assert not bm25_dir(api, kb).exists()
    assert stored_files(api.ctx, kb["id"]) == []
    assert not (api.ctx.settings.files_dir / "kb" / str(kb["id"])).exists()


async def test_deleting_a_knowledge_base_removes_its_indexes_and_files(api: Api) -> None:
    user = await api.user()
    doomed = await kb_with_document(api, user)
    kept = await kb_with_document(api, user, name="kept.md")
    assert_everything_there(api, doomed, await collections(api, kept["id"]))

    response = await api.client.delete(f"{KB}/{doomed['id']}", headers=user.headers)
    assert response.status_code == 204, response.text
    names = await collections(api, kept["id"])
    assert_nothing_left(api, doomed, names)
    assert_everything_there(api, kept, names)
    assert await store_counts(api, kept["id"]) == (kept["total_chunks"],) * 2


async def test_deleting_a_user_removes_every_knowledge_base_of_theirs_only(
    api: Api, admin: SignedIn
) -> None:
    owner, other = await api.user(), await api.user()
    owned = [await kb_with_document(api, owner), await kb_with_document(api, owner, "b.md")]
    theirs = await kb_with_document(api, other)
    names = await collections(api, theirs["id"])
    for kb in owned:
        assert_everything_there(api, kb, names)

    response = await api.client.delete(f"/api/v1/users/{owner.id}", headers=admin.headers)
    assert response.status_code == 204, response.text
    names = await collections(api, theirs["id"])
    for kb in owned:
        assert_nothing_left(api, kb, names)
        assert_problem(await api.client.get(f"{KB}/{kb['id']}", headers=admin.headers), 404)
    assert_everything_there(api, theirs, names)
    assert await store_counts(api, theirs["id"]) == (theirs["total_chunks"],) * 2
    listing = await api.client.get(f"{KB}/{theirs['id']}/documents", headers=other.headers)
    (document,) = listing.json()["items"]
    chunks = await api.client.get(
        f"/api/v1/documents/{document['id']}/chunks", headers=other.headers
    )
    assert chunks.json()["total"] == theirs["total_chunks"]


async def test_keyword_backend_changes_only_while_empty(api: Api) -> None:
    user = await api.user()
    kb = await kb_with_document(api, user)
    url = f"{KB}/{kb['id']}"
    response = await api.client.patch(url, json={"keyword_backend": "milvus"}, headers=user.headers)
    problem = assert_problem(response, 409, "keyword backend", "no documents")
    assert problem["field"] == "keyword_backend"
    other_model = await api.llm("embedding")
    response = await api.client.patch(
        url, json={"embed_llm_id": other_model.id}, headers=user.headers
    )
    assert_problem(response, 409, "embedding model")

    listing = await api.client.get(f"{url}/documents", headers=user.headers)
    for document in listing.json()["items"]:
        deleted = await api.client.delete(
            f"/api/v1/documents/{document['id']}", headers=user.headers
        )
        assert deleted.status_code == 204, deleted.text
    response = await api.client.patch(url, json={"keyword_backend": "milvus"}, headers=user.headers)
    assert response.status_code == 200, response.text
    assert response.json()["keyword_backend"] == "milvus"
    assert not bm25_dir(api, kb).exists()  # the old keyword index went with the change

    text = b"# Leave\n\nAnnual leave is twenty days. Sick leave needs a note after three days."
    item = (await upload(api, user, kb["id"], ("leave.md", text))).json()["items"][0]
    final = await wait_done(api, user, item["id"])
    assert final["status"] == "completed", final
    assert await store_counts(api, kb["id"], item["id"]) == (final["chunk_count"],) * 2
    hits = await with_index(
        api, kb["id"], lambda index: index.keyword_store.search("sick leave note", 3)
    )
    assert hits
    assert "Sick leave" in hits[0].text
    assert not bm25_dir(api, kb).exists()  # Milvus full text now, no BM25 files


async def test_embedding_model_change_while_empty_then_ingestion_uses_it(
    api: Api, admin: SignedIn, openai_server: OpenAIServer
) -> None:
    user = await api.user()
    kb = await kb_with_document(api, user)
    url = f"{KB}/{kb['id']}"
    listing = await api.client.get(f"{url}/documents", headers=user.headers)
    for document in listing.json()["items"]:
        await api.client.delete(f"/api/v1/documents/{document['id']}", headers=user.headers)
    remote = await api.llm(
        "embedding",
        provider="openai-compatible",
        model_name="test-embed",
        base_url=openai_server.base_url,
        dimension=openai_server.embedding_dimension,
    )
    await api.create_api_key(admin, remote.id or 0, api_key=DEFAULT_API_KEY)
    response = await api.client.patch(url, json={"embed_llm_id": remote.id}, headers=user.headers)
    assert response.status_code == 200, response.text
    changed = response.json()
    assert changed["vector_collection_name"] != kb["vector_collection_name"]

    openai_server.reset()
    item = (await upload(api, user, kb["id"], ("notes.md", docs.markdown_bytes()))).json()["items"][
        0
    ]
    final = await wait_done(api, user, item["id"])
    assert final["status"] == "completed", final
    assert openai_server.requests_to("/embeddings")
    assert await store_counts(api, kb["id"], item["id"]) == (final["chunk_count"],) * 2

    def dimension(index: Any) -> int:
        info = index.milvus.client.describe_collection(changed["vector_collection_name"])
        (field,) = [f for f in info["fields"] if f["name"] == "embedding"]
        return int(field["params"]["dim"])

    assert await with_index(api, kb["id"], dimension) == openai_server.embedding_dimension
    names = await collections(api, kb["id"])
    assert kb["vector_collection_name"] not in names  # the 384-d collection was dropped


async def knowledge_names(api: Api, user: SignedIn) -> list[str]:
    listing = await api.client.get(KB, headers=user.headers)
    return [kb["name"] for kb in listing.json()["items"]]


async def test_creation_checks_the_registered_dimension(api: Api) -> None:
    user = await api.user()
    wrong = await api.llm("embedding", dimension=128)  # the packaged model gives 384
    response = await api.client.post(
        KB, json={"name": "wrong", "embed_llm_id": wrong.id}, headers=user.headers
    )
    problem = assert_invalid(response, "embed_llm_id")
    assert "384" in problem["detail"]
    assert "128" in problem["detail"]
    assert await knowledge_names(api, user) == []


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def test_creation_with_an_unreachable_embedding_api_is_a_502(
    api: Api, admin: SignedIn
) -> None:
    user = await api.user()
    secret = new_api_key()
    llm = await api.llm(
        "embedding",
        provider="openai-compatible",
        model_name="test-embed",
        base_url=f"http://127.0.0.1:{closed_port()}/v1",
        dimension=64,
    )
    await api.create_api_key(admin, llm.id or 0, api_key=secret)
    response = await api.client.post(
        KB, json={"name": "remote", "embed_llm_id": llm.id}, headers=user.headers
    )
    assert_problem(response, 502, "embed_llm_id", llm.name, "could not be reached")
    assert secret not in response.text
    assert await knowledge_names(api, user) == []


async def test_deleting_a_knowledge_base_during_ingestion_leaves_no_index_behind(
    api: Api, admin: SignedIn, openai_server: OpenAIServer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="rag_app.jobs")
    user = await api.user()
    kb, _ = await api_embedding_kb(api, user, admin, openai_server)
    kept = await kb_with_document(api, user)
    # The run is embedding (the provider is slow) when the knowledge base is deleted; it then
    # opens the index to write its chunks, which must not bring the collection back for good.
    openai_server.hang(120, times=1, path="/embeddings")
    response = await upload(api, user, kb["id"], ("notes.md", docs.markdown_bytes()))
    item = response.json()["items"][0]
    await wait_for_status(api, user, item["id"], "embedding")
    response = await api.client.delete(f"{KB}/{kb['id']}", headers=user.headers)
    assert response.status_code == 204, response.text
    openai_server.release()

    ended = re.compile(rf"document {item['id']}: run \w+ cancelled")
    deadline = time.monotonic() + 60
    while not any(ended.fullmatch(record.getMessage()) for record in caplog.records):
        assert time.monotonic() < deadline, "the run did not end"
        await asyncio.sleep(0.1)
    # The run has written its chunks (re-creating the stores) and found its claim gone; its
    # clean-up follows that message.
    while (
        kb["vector_collection_name"] in await collections(api, kept["id"])
        or bm25_dir(api, kb).exists()
    ):
        assert time.monotonic() < deadline, "the cancelled run left its index behind"
        await asyncio.sleep(0.1)
    assert_nothing_left(api, kb, await collections(api, kept["id"]))
