"""Documents with their originals in S3 (a real SeaweedFS server), end to end through the API:
upload, processing, download, deletion of a document and of its knowledge base; and an S3
server that is down, which refuses the upload before anything is saved."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
from litestar.testing import AsyncTestClient
from minio.error import S3Error

from rag_app.api.app import create_app
from rag_app.context import AppContext
from rag_app.db.engine import create_db_engine, create_sessionmaker
from tests import fixtures_docs as docs
from tests.conftest import Api, assert_problem, make_settings
from tests.integration.test_cleanup import closed_port
from tests.integration.test_documents import documents_in, leftover_uploads, upload, wait_done
from tests.s3_server import S3Server

# With test_storage.py on one xdist worker: one S3 server for all of them.
pytestmark = pytest.mark.xdist_group("storage")


@asynccontextmanager
async def app_with_storage(tmp_path: Path, storage: dict[str, Any]) -> AsyncIterator[Api]:
    settings = make_settings(
        f"sqlite:///{tmp_path / 'db.sqlite'}", tmp_path / "data", storage=storage
    )
    ctx = AppContext.create(settings)
    engine = create_db_engine(settings.database_url)
    try:
        async with AsyncTestClient(app=create_app(ctx=ctx)) as client:
            yield Api(client, ctx, create_sessionmaker(engine))
    finally:
        await engine.dispose()


def s3_storage(server: S3Server, bucket: str) -> dict[str, Any]:
    return {
        "backend": "s3",
        "s3_endpoint": server.endpoint,
        "s3_access_key": server.access_key,
        "s3_secret_key": server.secret_key,
        "s3_bucket": bucket,
    }


def object_names(server: S3Server, bucket: str, prefix: str) -> list[str]:
    client = server.client()
    return sorted(o.object_name or "" for o in client.list_objects(bucket, prefix, recursive=True))


async def file_path(api: Api, kb_id: int, document_id: int) -> str:
    (document,) = [d for d in await documents_in(api, kb_id) if d.id == document_id]
    return document.file_path


async def test_originals_live_in_s3_from_upload_to_deletion(
    s3_server: S3Server, tmp_path: Path
) -> None:
    bucket = f"rag-docs-{uuid.uuid4().hex[:10]}"
    async with app_with_storage(tmp_path, s3_storage(s3_server, bucket)) as api:
        user = await api.user()
        kb = await api.create_knowledge(user)
        files = [("说明.md", docs.markdown_bytes()), ("handbook.docx", docs.docx_bytes())]
        response = await upload(api, user, kb["id"], *files)
        assert response.status_code == 202, response.text
        items = response.json()["items"]
        for item in items:
            final = await wait_done(api, user, item["id"])
            assert final["status"] == "completed", final
            assert final["chunk_count"] > 0

        keys = [await file_path(api, kb["id"], item["id"]) for item in items]
        assert object_names(s3_server, bucket, f"kb/{kb['id']}/") == sorted(keys)
        for item, (_, data) in zip(items, files, strict=True):
            download = await api.client.get(
                f"/api/v1/documents/{item['id']}/download", headers=user.headers
            )
            assert download.status_code == 200
            assert download.content == data
        assert not (api.ctx.settings.files_dir / "kb").exists()  # nothing went to local disk

        deleted = await api.client.delete(
            f"/api/v1/documents/{items[0]['id']}", headers=user.headers
        )
        assert deleted.status_code == 204, deleted.text
        assert not await api.ctx.object_store.exists(keys[0])
        with pytest.raises(S3Error) as missing:
            s3_server.client().stat_object(bucket, keys[0])
        assert missing.value.code == "NoSuchKey"
        assert object_names(s3_server, bucket, f"kb/{kb['id']}/") == [keys[1]]

        gone = await api.client.delete(f"/api/v1/knowledge/{kb['id']}", headers=user.headers)
        assert gone.status_code == 204, gone.text
        assert object_names(s3_server, bucket, f"kb/{kb['id']}/") == []


async def test_upload_while_s3_is_down_is_a_503_and_saves_nothing(tmp_path: Path) -> None:
    storage = {
        "backend": "s3",
        "s3_endpoint": f"127.0.0.1:{closed_port()}",
        "s3_access_key": "access",
        "s3_secret_key": "secret-value-never-shown",
    }
    async with app_with_storage(tmp_path, storage) as api:
        user = await api.user()
        kb = await api.create_knowledge(user)
        response = await upload(api, user, kb["id"], ("notes.md", docs.markdown_bytes()))
        assert_problem(response, 503, "not reachable")
        assert "secret-value-never-shown" not in response.text
        assert await documents_in(api, kb["id"]) == []
        assert leftover_uploads(api.ctx) == []
        body = (await api.client.get(f"/api/v1/knowledge/{kb['id']}", headers=user.headers)).json()
        assert body["document_count"] == 0
