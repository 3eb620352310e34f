"""Documents end to end: upload → object store → background job → vector and keyword stores,
on SQLite and MariaDB, with the packaged embedding model and Milvus Lite."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import pytest

from rag_app.context import AppContext
from rag_app.db.models import Document
from tests import fixtures_docs as docs
from tests.conftest import Api, SignedIn, assert_problem

TERMINAL = {"completed", "failed"}


def multipart(*files: tuple[str, bytes]) -> list[tuple[str, tuple[str, bytes]]]:
    return [("files", (name, data)) for name, data in files]


async def upload(
    api: Api, user: SignedIn, kb_id: int, *files: tuple[str, bytes], replace: bool = False
) -> Any:
    return await api.client.post(
        f"/api/v1/knowledge/{kb_id}/documents",
        headers=user.headers,
        files=multipart(*files),
        params={"replace": "true"} if replace else None,
    )


async def wait_done(api: Api, user: SignedIn, document_id: int) -> dict[str, Any]:
    deadline = time.monotonic() + 180
    while True:
        response = await api.client.get(
            f"/api/v1/documents/{document_id}/status", headers=user.headers
        )
        assert response.status_code == 200, response.text
        body: dict[str, Any] = response.json()
        if body["status"] in TERMINAL:
            return body
        assert time.monotonic() < deadline, f"document {document_id} still {body}"
        await asyncio.sleep(0.2)


async def settled_kb(
    api: Api, user: SignedIn, kb_id: int, documents: int, chunks: int
) -> dict[str, Any]:
    """The knowledge base once its derived counts are these. A run recounts right after it
    records the document's outcome, so for a moment a reader can see the outcome first."""
    deadline = time.monotonic() + 30
    while True:
        response = await api.client.get(f"/api/v1/knowledge/{kb_id}", headers=user.headers)
        body: dict[str, Any] = response.json()
        if (body["document_count"], body["total_chunks"]) == (documents, chunks):
            return body
        assert time.monotonic() < deadline, body
        await asyncio.sleep(0.1)


async def new_kb(api: Api, user: SignedIn, **fields: Any) -> dict[str, Any]:
    llm = await api.llm("embedding")
    return await api.create_knowledge(user, embed_llm_id=llm.id, **fields)


def stored_files(ctx: AppContext, kb_id: int) -> list[Path]:
    folder = ctx.settings.files_dir / "kb" / str(kb_id)
    return sorted(p for p in folder.rglob("*") if p.is_file()) if folder.exists() else []


def leftover_uploads(ctx: AppContext) -> list[Path]:
    return [p for p in ctx.settings.tmp_dir.glob("upload-*")]


async def store_counts(api: Api, kb_id: int, document_id: int | None = None) -> tuple[int, int]:
    """(vector store, keyword store) chunk counts of a document, or of the whole knowledge base."""
    from rag_app.db.models import Knowledge
    from rag_app.indexing.access import open_index

    async def counts(session: Any) -> tuple[int, int]:
        knowledge = await session.get(Knowledge, kb_id)
        index = await open_index(api.ctx, session, knowledge)
        return await asyncio.to_thread(
            lambda: (index.count(document_id), index.keyword_store.count(document_id))
        )

    return await api.run(counts)


async def documents_in(api: Api, kb_id: int) -> list[Document]:
    from sqlmodel import col, select

    async def query(session: Any) -> list[Document]:
        rows = await session.exec(select(Document).where(col(Document.knowledge_id) == kb_id))
        return list(rows.all())

    return await api.run(query)


async def test_many_formats_become_chunks(api: Api) -> None:
    user = await api.user()
    kb = await new_kb(api, user, chunk_size=200, chunk_overlap=20)
    files = [
        ("handbook.docx", docs.docx_bytes()),
        ("notes.md", docs.markdown_bytes()),
        ("通知.txt", docs.text_bytes("gbk")),
        ("page.html", docs.html_bytes()),
        ("report.pdf", docs.text_pdf()),
    ]
    response = await upload(api, user, kb["id"], *files)
    assert response.status_code == 202, response.text
    items = response.json()["items"]
    assert [i["file_name"] for i in items] == [name for name, _ in files]
    assert {i["status"] for i in items} <= {"uploading", "parsing", "splitting", "embedding"}

    finals = [await wait_done(api, user, item["id"]) for item in items]
    assert [f["status"] for f in finals] == ["completed"] * len(files), finals
    assert all(f["chunk_count"] > 0 and f["progress"] == 100 for f in finals)

    total = sum(f["chunk_count"] for f in finals)
    await settled_kb(api, user, kb["id"], documents=len(files), chunks=total)

    pdf_id = items[4]["id"]
    chunks = await api.client.get(f"/api/v1/documents/{pdf_id}/chunks", headers=user.headers)
    assert chunks.status_code == 200, chunks.text
    body = chunks.json()
    assert body["total"] == finals[4]["chunk_count"]
    positions = [c["position"] for c in body["items"]]
    assert positions == sorted(positions)
    assert {c["metadata"]["page"] for c in body["items"]} >= {1}
    assert all(c["metadata"]["file_name"] == "report.pdf" for c in body["items"])

    txt_chunks = await api.client.get(
        f"/api/v1/documents/{items[2]['id']}/chunks", headers=user.headers
    )
    assert any("财务管理" in c["text"] for c in txt_chunks.json()["items"])


async def test_download_returns_the_original(api: Api) -> None:
    user = await api.user()
    kb = await new_kb(api, user)
    data = docs.markdown_bytes()
    item = (await upload(api, user, kb["id"], ("使用说明.md", data))).json()["items"][0]
    response = await api.client.get(
        f"/api/v1/documents/{item['id']}/download", headers=user.headers
    )
    assert response.status_code == 200
    assert response.content == data
    disposition = response.headers["content-disposition"]
    assert "filename*=UTF-8''%E4%BD%BF%E7%94%A8%E8%AF%B4%E6%98%8E.md" in disposition
    await wait_done(api, user, item["id"])


async def test_same_content_conflicts_unless_replaced(api: Api) -> None:
    user = await api.user()
    kb = await new_kb(api, user)
    first = (await upload(api, user, kb["id"], ("a.md", docs.markdown_bytes()))).json()["items"]
    await wait_done(api, user, first[0]["id"])
    again = await upload(api, user, kb["id"], ("b.md", docs.markdown_bytes()))
    body = assert_problem(again, 409, "a.md", "replace=true")
    assert body["existing_document_ids"] == [first[0]["id"]]

    replaced = await upload(api, user, kb["id"], ("b.md", docs.markdown_bytes()), replace=True)
    assert replaced.status_code == 202, replaced.text
    item = replaced.json()["items"][0]
    assert item["id"] == first[0]["id"]
    assert item["file_name"] == "b.md"
    final = await wait_done(api, user, item["id"])
    assert final["status"] == "completed"
    assert len(await documents_in(api, kb["id"])) == 1
    assert [p.name for p in stored_files(api.ctx, kb["id"])] == ["b.md"]


@pytest.mark.parametrize(
    ("name", "data", "status", "fragment"),
    [
        ("empty.txt", b"", 422, "empty"),
        ("setup.pdf", docs.windows_executable(), 415, "not a pdf"),
        ("tool.exe", docs.elf_executable(), 415, "setup.exe"),
        ("archive.zip", docs.plain_zip(), 415, "archive.zip"),
    ],
)
async def test_rejected_at_upload_leaves_nothing(
    api: Api, name: str, data: bytes, status: int, fragment: str
) -> None:
    user = await api.user()
    kb = await new_kb(api, user)
    good = ("fine.md", docs.markdown_bytes())
    response = await upload(api, user, kb["id"], good, (name, data))
    body = assert_problem(response, status)
    assert fragment.replace("setup.exe", name).lower() in body["detail"].lower()
    assert await documents_in(api, kb["id"]) == []
    assert stored_files(api.ctx, kb["id"]) == []
    assert leftover_uploads(api.ctx) == []


async def test_oversized_file_is_refused_while_streaming(
    api: Api, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(api.ctx.settings.uploads, "max_file_mb", 1)
    user = await api.user()
    kb = await new_kb(api, user)
    big = b"word " * (300 * 1024)  # 1.5 MB
    response = await upload(api, user, kb["id"], ("big.txt", big))
    assert_problem(response, 413, "big.txt", "1 MB")
    assert await documents_in(api, kb["id"]) == []
    assert stored_files(api.ctx, kb["id"]) == []
    assert leftover_uploads(api.ctx) == []


@pytest.mark.parametrize(
    ("name", "data", "fragment"),
    [
        ("broken.pdf", docs.corrupt_pdf(), "could not be read"),
        ("scan.pdf", docs.scanned_pdf(), "no text"),
        ("bomb.docx", docs.zip_bomb_docx(unpacked_bytes=40_000_000), "decompress"),
    ],
)
async def test_unreadable_content_fails_with_a_message_and_no_chunks(
    api: Api, name: str, data: bytes, fragment: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(api.ctx.settings.uploads, "max_unpacked_mb", 10)
    user = await api.user()
    kb = await new_kb(api, user)
    item = (await upload(api, user, kb["id"], (name, data))).json()["items"][0]
    final = await wait_done(api, user, item["id"])
    assert final["status"] == "failed"
    assert fragment in final["error_msg"].lower()
    assert "Traceback" not in final["error_msg"]
    assert final["chunk_count"] == 0
    chunks = await api.client.get(f"/api/v1/documents/{item['id']}/chunks", headers=user.headers)
    assert chunks.json()["total"] == 0


async def test_path_traversal_name_is_harmless(api: Api) -> None:
    user = await api.user()
    kb = await new_kb(api, user)
    response = await upload(api, user, kb["id"], ("../../../etc/passwd.md", docs.markdown_bytes()))
    assert response.status_code == 202, response.text
    item = response.json()["items"][0]
    assert item["file_name"] == "passwd.md"
    files = stored_files(api.ctx, kb["id"])
    assert len(files) == 1
    assert files[0].is_relative_to(api.ctx.settings.files_dir / "kb" / str(kb["id"]))
    await wait_done(api, user, item["id"])


async def test_delete_removes_chunks_original_and_counts(api: Api) -> None:
    user = await api.user()
    kb = await new_kb(api, user)
    items = (
        await upload(
            api, user, kb["id"], ("a.md", docs.markdown_bytes()), ("b.docx", docs.docx_bytes())
        )
    ).json()["items"]
    for item in items:
        await wait_done(api, user, item["id"])
    doomed = items[0]["id"]
    response = await api.client.delete(f"/api/v1/documents/{doomed}", headers=user.headers)
    assert response.status_code == 204, response.text
    assert_problem(await api.client.get(f"/api/v1/documents/{doomed}", headers=user.headers), 404)
    assert [p.name for p in stored_files(api.ctx, kb["id"])] == ["b.docx"]
    kb_now = (await api.client.get(f"/api/v1/knowledge/{kb['id']}", headers=user.headers)).json()
    remaining = await wait_done(api, user, items[1]["id"])
    assert kb_now["document_count"] == 1
    assert kb_now["total_chunks"] == remaining["chunk_count"]
    assert await store_counts(api, kb["id"], doomed) == (0, 0)


async def test_reindex_after_chunking_change(api: Api) -> None:
    user = await api.user()
    kb = await new_kb(api, user, chunk_size=400, chunk_overlap=0)
    text = "# Guide\n\n" + " ".join(f"Rule {i} explains the policy." for i in range(300))
    item = (await upload(api, user, kb["id"], ("guide.md", text.encode()))).json()["items"][0]
    before = await wait_done(api, user, item["id"])
    patched = await api.client.patch(
        f"/api/v1/knowledge/{kb['id']}",
        headers=user.headers,
        json={"chunk_size": 100, "chunk_overlap": 10},
    )
    assert patched.status_code == 200, patched.text
    response = await api.client.post(f"/api/v1/knowledge/{kb['id']}/reindex", headers=user.headers)
    assert response.status_code == 202, response.text
    assert response.json() == {"queued": 1, "skipped_in_progress": 0}
    after = await wait_done(api, user, item["id"])
    assert after["status"] == "completed"
    assert after["chunk_count"] > before["chunk_count"]


async def test_retry_only_from_failed(api: Api) -> None:
    user = await api.user()
    kb = await new_kb(api, user)
    item = (await upload(api, user, kb["id"], ("a.md", docs.markdown_bytes()))).json()["items"][0]
    await wait_done(api, user, item["id"])
    response = await api.client.post(f"/api/v1/documents/{item['id']}/retry", headers=user.headers)
    assert_problem(response, 409, "only a failed document")


async def test_list_filters_and_pages(api: Api) -> None:
    user = await api.user()
    kb = await new_kb(api, user)
    items = (
        await upload(
            api,
            user,
            kb["id"],
            ("alpha.md", docs.markdown_bytes()),
            ("scan.pdf", docs.scanned_pdf()),
        )
    ).json()["items"]
    for item in items:
        await wait_done(api, user, item["id"])
    url = f"/api/v1/knowledge/{kb['id']}/documents"
    failed = (await api.client.get(url, headers=user.headers, params={"status": "failed"})).json()
    assert [d["file_name"] for d in failed["items"]] == ["scan.pdf"]
    named = (await api.client.get(url, headers=user.headers, params={"name": "alp"})).json()
    assert [d["file_name"] for d in named["items"]] == ["alpha.md"]
    paged = (await api.client.get(url, headers=user.headers, params={"page_size": 1})).json()
    assert paged["total"] == 2
    assert len(paged["items"]) == 1
    bad = await api.client.get(url, headers=user.headers, params={"status": "nonsense"})
    assert_problem(bad, 422, "status")


async def test_ownership_on_every_endpoint(api: Api, admin: SignedIn) -> None:
    owner, other = await api.user(), await api.user()
    kb = await new_kb(api, owner)
    item = (await upload(api, owner, kb["id"], ("a.md", docs.markdown_bytes()))).json()["items"][0]
    await wait_done(api, owner, item["id"])
    doc = f"/api/v1/documents/{item['id']}"
    kb_url = f"/api/v1/knowledge/{kb['id']}"
    attempts = [
        ("post", f"{kb_url}/documents", {"files": multipart(("x.md", b"# x\n\nhello"))}),
        ("get", f"{kb_url}/documents", {}),
        ("post", f"{kb_url}/reindex", {}),
        ("get", doc, {}),
        ("get", f"{doc}/status", {}),
        ("get", f"{doc}/chunks", {}),
        ("get", f"{doc}/download", {}),
        ("post", f"{doc}/retry", {}),
        ("delete", doc, {}),
    ]
    for method, url, extra in attempts:
        response = await getattr(api.client, method)(url, headers=other.headers, **extra)
        body = assert_problem(response, 404)
        assert "a.md" not in response.text, (method, url, body)
        unauthenticated = await getattr(api.client, method)(url, **extra)
        assert_problem(unauthenticated, 401)
    assert len(await documents_in(api, kb["id"])) == 1
    seen = await api.client.get(doc, headers=admin.headers)
    assert seen.status_code == 200
    assert seen.json()["file_name"] == "a.md"


async def test_upload_needs_multipart_files(api: Api) -> None:
    user = await api.user()
    kb = await new_kb(api, user)
    response = await api.client.post(
        f"/api/v1/knowledge/{kb['id']}/documents", headers=user.headers, json={"files": []}
    )
    assert_problem(response, 422, "multipart")
    response = await api.client.post(
        f"/api/v1/knowledge/{kb['id']}/documents",
        headers=user.headers,
        files={"other": ("a.md", b"# a")},
    )
    assert_problem(response, 422, "files")
