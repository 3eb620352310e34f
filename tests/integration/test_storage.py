"""The object store: one behavioural suite run against the local folder and a real S3 server
(SeaweedFS), plus the failure modes only S3 has (credentials, unreachable endpoint)."""

from __future__ import annotations

import hashlib
import http.server
import os
import socket
import threading
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import anyio
import anyio.lowlevel
import pytest

from rag_app.errors import BackendUnavailable, ConfigurationError, NotFound
from rag_app.settings import Settings
from rag_app.storage import (
    LocalObjectStore,
    ObjectStore,
    S3ObjectStore,
    StoredObject,
    build_object_store,
)
from rag_app.storage.s3 import DEFAULT_PART_SIZE
from tests.s3_server import S3Server

# One worker gets all of these, so an xdist run starts one S3 server for them, not one per worker.
pytestmark = pytest.mark.xdist_group("storage")

BUCKET = "rag-app-test"
MiB = 1024 * 1024
# The smallest part S3 accepts: the multi-MB tests cross several part boundaries cheaply.
PART_SIZE = 5 * MiB


class SourceBroke(Exception):
    """Stands for a client that disconnects in the middle of an upload."""


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def chunks(data: bytes, size: int = 64 * 1024) -> AsyncIterator[bytes]:
    for start in range(0, len(data), size):
        yield data[start : start + size]
        await anyio.lowlevel.checkpoint()  # like a network read: give the loop a turn


async def breaking(data: bytes, fail_after: int) -> AsyncIterator[bytes]:
    sent = 0
    async for chunk in chunks(data):
        if sent >= fail_after:
            raise SourceBroke("client went away")
        yield chunk
        sent += len(chunk)
    raise SourceBroke("client went away")


def digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


async def read_all(store: ObjectStore, key: str) -> tuple[bytes, int]:
    parts = [chunk async for chunk in store.open(key)]
    return b"".join(parts), len(parts)


class Harness:
    """A store plus a way to see everything it holds, including what it should not hold:
    temporary files (local) and unfinished multipart uploads (S3)."""

    def __init__(self, store: ObjectStore, namespace: str, server: S3Server | None) -> None:
        self.store = store
        self.ns = namespace
        self.server = server

    def key(self, *parts: str) -> str:
        return "/".join((self.ns, *parts))

    def leftovers(self) -> list[str]:
        if isinstance(self.store, LocalObjectStore):
            root = self.store.root
            if not root.exists():
                return []
            return sorted(str(p.relative_to(root)) for p in root.rglob("*") if not p.is_dir())
        assert self.server is not None
        client = self.server.client()
        names = [
            str(item.object_name)
            for item in client.list_objects(BUCKET, prefix=self.ns + "/", recursive=True)
        ]
        uploads = client._list_multipart_uploads(BUCKET, prefix=self.ns + "/").uploads
        return sorted(names + [f"unfinished upload of {u.object_name}" for u in uploads])

    def stored_keys(self) -> list[str]:
        return [name for name in self.leftovers() if not name.startswith("unfinished")]


@pytest.fixture(params=["local", "s3"])
def harness(request: pytest.FixtureRequest, tmp_path: Path) -> Harness:
    namespace = f"t{uuid.uuid4().hex[:10]}"
    if request.param == "local":
        # The namespace folder mirrors the S3 case, where tests share one bucket.
        return Harness(LocalObjectStore(tmp_path / "files"), namespace, None)
    server: S3Server = request.getfixturevalue("s3_server")
    client = server.client()
    if not client.bucket_exists(BUCKET):
        client.make_bucket(BUCKET)
    store = S3ObjectStore(
        server.endpoint, server.access_key, server.secret_key, BUCKET, part_size=PART_SIZE
    )
    return Harness(store, namespace, server)


# -- round trips ----------------------------------------------------------------------------


async def test_put_bytes_round_trip(harness: Harness) -> None:
    store, key = harness.store, harness.key("kb", "1", "doc", "2", "original.txt")
    stored = await store.put(key, b"hello world", content_type="text/plain")

    assert stored == StoredObject(key=key, size=11, sha256=digest(b"hello world"))
    assert await store.exists(key)
    assert await store.get_bytes(key) == b"hello world"
    assert (await read_all(store, key))[0] == b"hello world"


@pytest.mark.parametrize("declare_size", [True, False], ids=["sized", "unsized"])
async def test_put_multi_megabyte_stream(harness: Harness, declare_size: bool) -> None:
    # Not a multiple of the part size or the chunk size: the last part and chunk are short.
    data = os.urandom(2 * PART_SIZE + 123_457)
    key = harness.key("kb", "big.bin")

    stored = await harness.store.put(
        key, chunks(data), size=len(data) if declare_size else None, content_type="x/y"
    )

    assert stored.size == len(data)
    assert stored.sha256 == digest(data)
    body, count = await read_all(harness.store, key)
    assert count > 1, "open() must stream, not return one blob"
    assert digest(body) == digest(data)
    assert await harness.store.get_bytes(key) == data
    assert harness.leftovers() == [key]


async def test_empty_object(harness: Harness) -> None:
    key = harness.key("empty.txt")
    stored = await harness.store.put(key, chunks(b""))
    assert stored == StoredObject(key=key, size=0, sha256=digest(b""))
    assert await harness.store.exists(key)
    assert await harness.store.get_bytes(key) == b""


async def test_put_replaces(harness: Harness) -> None:
    key = harness.key("doc.txt")
    await harness.store.put(key, b"first version")
    await harness.store.put(key, chunks(b"second"))
    assert await harness.store.get_bytes(key) == b"second"
    assert harness.leftovers() == [key]


@pytest.mark.parametrize(
    "name",
    [
        "报告 2024（终版）.pdf",
        "季度总结 v1+v2 #3 & 50% ?.docx",
        "naïve résumé ~ [draft] 'quoted' \"twice\".txt",
        "日本語のファイル名.txt",
    ],
)
async def test_unicode_and_url_special_names(harness: Harness, name: str) -> None:
    folder = harness.key("kb", "知识库")
    key = f"{folder}/{name}"

    await harness.store.put(key, "内容".encode())

    assert await harness.store.exists(key)
    assert await harness.store.get_bytes(key) == "内容".encode()
    assert harness.stored_keys() == [key]
    await harness.store.delete_prefix(folder)
    assert harness.stored_keys() == []


# -- missing objects and deletion -----------------------------------------------------------


async def test_missing_object(harness: Harness) -> None:
    key = harness.key("nope.pdf")
    assert not await harness.store.exists(key)
    with pytest.raises(NotFound):
        await harness.store.get_bytes(key)
    with pytest.raises(NotFound):
        await read_all(harness.store, key)
    await harness.store.delete(key)  # missing is fine


async def test_delete(harness: Harness) -> None:
    keep, drop = harness.key("a", "keep.txt"), harness.key("a", "drop.txt")
    await harness.store.put(keep, b"k")
    await harness.store.put(drop, b"d")

    await harness.store.delete(drop)

    assert not await harness.store.exists(drop)
    assert await harness.store.exists(keep)
    assert harness.stored_keys() == [keep]


async def test_delete_of_a_folder_name_deletes_nothing(harness: Harness) -> None:
    inside = harness.key("kb", "1", "doc.txt")
    await harness.store.put(inside, b"x")
    await harness.store.delete(harness.key("kb", "1"))
    assert not await harness.store.exists(harness.key("kb", "1"))
    assert harness.stored_keys() == [inside]


@pytest.mark.parametrize("trailing_slash", [False, True])
async def test_delete_prefix_removes_only_that_folder(
    harness: Harness, trailing_slash: bool
) -> None:
    doomed = [harness.key("kb", "1", "doc", "1", "a.pdf"), harness.key("kb", "1", "b.txt")]
    # Siblings whose names *start* with the prefix string must survive: folder semantics.
    kept = [
        harness.key("kb", "12", "doc", "3", "c.pdf"),
        harness.key("kb", "1x.txt"),
        harness.key("kb", "10", "d.txt"),
    ]
    for key in doomed + kept:
        await harness.store.put(key, key.encode())

    prefix = harness.key("kb", "1") + ("/" if trailing_slash else "")
    await harness.store.delete_prefix(prefix)

    assert harness.stored_keys() == sorted(kept)
    for key in doomed:
        assert not await harness.store.exists(key)
    await harness.store.delete_prefix(prefix)  # again: nothing there, no error


async def test_delete_prefix_many_objects(harness: Harness) -> None:
    keys = [harness.key("kb", "7", f"doc-{n:04d}.txt") for n in range(120)]
    async with anyio.create_task_group() as tasks:
        for key in keys:
            tasks.start_soon(harness.store.put, key, b"x")
    assert len(harness.stored_keys()) == 120
    await harness.store.delete_prefix(harness.key("kb", "7"))
    assert harness.stored_keys() == []


# -- key validation -------------------------------------------------------------------------

UNSAFE_KEYS = [
    "",
    "/etc/passwd",
    "../outside.txt",
    "kb/../../outside.txt",
    "kb/1/..",
    "kb/./x",
    ".",
    "kb\\1\\x.txt",
    "..\\outside.txt",
    "kb//x",
    "kb/1/",
    "kb/\x00x",
    "kb/\nx",
    "k" * 1025,
    "kb/" + "长" * 86,  # one segment of 258 bytes in UTF-8
]


@pytest.mark.parametrize("key", UNSAFE_KEYS, ids=repr)
async def test_unsafe_keys_are_rejected(harness: Harness, key: str) -> None:
    store = harness.store
    with pytest.raises(ValueError, match="key"):
        await store.put(key, b"x")
    with pytest.raises(ValueError, match="key"):
        await store.get_bytes(key)
    with pytest.raises(ValueError, match="key"):
        store.open(key)  # at once, not at the first chunk
    with pytest.raises(ValueError, match="key"):
        await store.exists(key)
    with pytest.raises(ValueError, match="key"):
        await store.delete(key)
    assert harness.leftovers() == []


@pytest.mark.parametrize("prefix", ["", "/", "/kb", "../kb", "kb/../..", "kb\\1"], ids=repr)
async def test_unsafe_prefixes_are_rejected(harness: Harness, prefix: str) -> None:
    await harness.store.put(harness.key("survivor.txt"), b"x")
    with pytest.raises(ValueError, match="key"):
        await harness.store.delete_prefix(prefix)
    assert harness.stored_keys() == [harness.key("survivor.txt")]


async def test_local_store_refuses_a_symlink_out_of_its_folder(tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret.txt").write_text("secret")
    root = tmp_path / "files"
    root.mkdir()
    (root / "link").symlink_to(outside)
    store = LocalObjectStore(root)

    with pytest.raises(ValueError, match="outside"):
        await store.get_bytes("link/secret.txt")
    with pytest.raises(ValueError, match="outside"):
        await store.put("link/new.txt", b"x")
    assert sorted(p.name for p in outside.iterdir()) == ["secret.txt"]


# -- all or nothing -------------------------------------------------------------------------


@pytest.mark.parametrize(
    "fail_after",
    [0, 100_000, PART_SIZE + 1],
    ids=["before-any-data", "within-first-part", "after-a-whole-part"],
)
async def test_failing_stream_leaves_nothing_behind(harness: Harness, fail_after: int) -> None:
    key = harness.key("kb", "1", "broken.bin")
    data = os.urandom(3 * PART_SIZE)

    with pytest.raises(SourceBroke):
        await harness.store.put(key, breaking(data, fail_after), size=len(data))

    assert not await harness.store.exists(key)
    assert harness.leftovers() == []


async def test_failing_stream_keeps_the_previous_version(harness: Harness) -> None:
    key = harness.key("doc.txt")
    await harness.store.put(key, b"good version")

    with pytest.raises(SourceBroke):
        await harness.store.put(key, breaking(os.urandom(PART_SIZE + MiB), PART_SIZE + 1))

    assert await harness.store.get_bytes(key) == b"good version"
    assert harness.leftovers() == [key]


@pytest.mark.parametrize("declared", [10, 12], ids=["too-long", "too-short"])
async def test_declared_size_is_enforced(harness: Harness, declared: int) -> None:
    key = harness.key("sized.txt")
    with pytest.raises(ValueError, match="declared"):
        await harness.store.put(key, chunks(b"eleven byte"), size=declared)
    assert harness.leftovers() == []


async def test_cancelled_upload_leaves_nothing_behind(harness: Harness) -> None:
    key = harness.key("cancelled.bin")

    async def stalls() -> AsyncIterator[bytes]:
        yield os.urandom(PART_SIZE + MiB)  # a multipart upload is under way on S3
        await anyio.sleep_forever()
        yield b""  # pragma: no cover

    started = time.monotonic()
    with anyio.move_on_after(1.0) as scope:
        await harness.store.put(key, stalls())
    assert scope.cancelled_caught
    assert time.monotonic() - started < 10
    assert harness.leftovers() == []


# -- readiness and failures -----------------------------------------------------------------


async def test_check_on_a_healthy_store(harness: Harness) -> None:
    await harness.store.check()


async def test_check_on_an_unusable_local_folder(tmp_path: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    store = LocalObjectStore(blocker / "files")
    with pytest.raises(BackendUnavailable, match="file store folder"):
        await store.check()


async def test_s3_creates_a_missing_bucket(s3_server: S3Server) -> None:
    bucket = f"fresh-{uuid.uuid4().hex[:8]}"
    store = S3ObjectStore(s3_server.endpoint, s3_server.access_key, s3_server.secret_key, bucket)
    assert not s3_server.client().bucket_exists(bucket)

    await store.put("kb/1/a.txt", b"a")

    assert s3_server.client().bucket_exists(bucket)
    assert await store.get_bytes("kb/1/a.txt") == b"a"
    await store.check()


@pytest.mark.parametrize("wrong", ["secret", "access"])
async def test_s3_wrong_credentials(s3_server: S3Server, wrong: str) -> None:
    access_key = s3_server.access_key if wrong == "secret" else "no-such-access-key"
    secret_key = f"wrong-secret-{uuid.uuid4().hex}"
    store = S3ObjectStore(s3_server.endpoint, access_key, secret_key, BUCKET)

    for attempt in (store.check(), store.put("kb/x.txt", chunks(b"data")), store.exists("x")):
        with pytest.raises(BackendUnavailable) as caught:
            await attempt
        message = str(caught.value)
        assert "credentials" in message
        assert s3_server.endpoint in message
        assert secret_key not in message
        assert access_key not in message
        assert secret_key not in repr(caught.value.__cause__)
        assert caught.value.status_code == 503


async def test_s3_endpoint_on_a_closed_port_fails_fast() -> None:
    endpoint = f"127.0.0.1:{_free_port()}"
    store = S3ObjectStore(endpoint, "access", "secret-value", BUCKET)

    for attempt in (
        store.check(),
        store.put("kb/x.txt", chunks(b"data")),
        store.get_bytes("kb/x.txt"),
        store.exists("kb/x.txt"),
        store.delete_prefix("kb"),
        read_all(store, "kb/x.txt"),
    ):
        started = time.monotonic()
        with pytest.raises(BackendUnavailable, match="not reachable") as caught:
            await attempt
        assert time.monotonic() - started < 5
        assert endpoint in str(caught.value)
        assert "secret-value" not in str(caught.value)


class _NotS3(http.server.BaseHTTPRequestHandler):
    def _answer(self) -> None:
        body = b"<html><body>It works!</body></html>"
        self.send_response(404)
        self.send_header("Content-Type", "text/html")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    do_GET = do_HEAD = do_PUT = do_POST = do_DELETE = _answer

    def log_message(self, format: str, *args: Any) -> None:
        pass  # keep the test output clean


async def test_s3_endpoint_that_is_not_s3() -> None:
    """An endpoint that answers HTTP, but not S3 (a typo'd port hitting a web server)."""
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _NotS3)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        endpoint = f"127.0.0.1:{server.server_address[1]}"
        store = S3ObjectStore(endpoint, "access", "secret-value", BUCKET)
        with pytest.raises(BackendUnavailable, match="does not answer like an S3 server"):
            await store.check()
    finally:
        server.shutdown()
        server.server_close()


# -- factory --------------------------------------------------------------------------------


def _settings(tmp_path: Path, **storage: Any) -> Settings:
    return Settings(environment="test", data_dir=tmp_path, storage=storage)


def test_factory_builds_the_local_store(tmp_path: Path) -> None:
    store = build_object_store(_settings(tmp_path, backend="local"))
    assert isinstance(store, LocalObjectStore)
    assert store.root == (tmp_path / "files").resolve()
    assert isinstance(store, ObjectStore)


@pytest.mark.parametrize(
    ("storage", "named"),
    [
        ({}, ["s3_endpoint", "s3_access_key", "s3_secret_key"]),
        ({"s3_endpoint": "127.0.0.1:9000", "s3_access_key": "a"}, ["s3_secret_key"]),
        ({"s3_endpoint": "127.0.0.1:9000", "s3_secret_key": "s"}, ["s3_access_key"]),
        ({"s3_endpoint": " ", "s3_access_key": "a", "s3_secret_key": "s"}, ["s3_endpoint"]),
    ],
)
def test_factory_names_missing_s3_settings(
    tmp_path: Path, storage: dict[str, str], named: list[str]
) -> None:
    with pytest.raises(ConfigurationError) as caught:
        build_object_store(_settings(tmp_path, backend="s3", **storage))
    for name in named:
        assert f"storage.{name}" in caught.value.detail
    assert caught.value.extra["missing"] == [
        f"storage.{name} (RAG_STORAGE__{name.upper()})" for name in named
    ]


@pytest.mark.parametrize(
    ("storage", "fragment"),
    [
        ({"s3_endpoint": "http://127.0.0.1:9000"}, "without scheme"),
        ({"s3_endpoint": "127.0.0.1:9000/path"}, "without scheme"),
        ({"s3_endpoint": "127.0.0.1:notaport"}, "s3_endpoint"),
        ({"s3_endpoint": "127.0.0.1:9000", "s3_bucket": "No_Such"}, "s3_bucket"),
    ],
)
def test_factory_rejects_malformed_s3_settings(
    tmp_path: Path, storage: dict[str, str], fragment: str
) -> None:
    with pytest.raises(ConfigurationError, match=fragment) as caught:
        build_object_store(
            _settings(
                tmp_path, backend="s3", s3_access_key="ak", s3_secret_key="top-secret", **storage
            )
        )
    assert "top-secret" not in caught.value.detail


async def test_factory_builds_a_working_s3_store(
    tmp_path: Path,
    s3_server: S3Server,
) -> None:
    store = build_object_store(
        _settings(
            tmp_path,
            backend="s3",
            s3_endpoint=s3_server.endpoint,
            s3_access_key=s3_server.access_key,
            s3_secret_key=s3_server.secret_key,
            s3_bucket=BUCKET,
        )
    )
    assert isinstance(store, S3ObjectStore)
    await store.check()
    key = f"factory/{uuid.uuid4().hex}.txt"
    assert (await store.put(key, b"via settings")).size == 12
    await store.delete(key)


def test_default_part_size_is_valid_for_s3() -> None:
    assert 5 * MiB <= DEFAULT_PART_SIZE <= 5 * 1024 * MiB


def test_s3_server_started_quickly(s3_server: S3Server) -> None:
    # The figure is in the report of a -v run; the bound catches a regression to minutes.
    print(f"S3 server started in {s3_server.startup_seconds:.2f} s")
    assert s3_server.startup_seconds < 30
