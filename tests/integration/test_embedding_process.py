"""Local embedding models in child processes (indexes.embedding_process), for real: the packaged
all-MiniLM-L6-v2 loaded by ``python -m indexes.embedding_worker``, killed, frozen and orphaned on
purpose, and the ingestion path of the app using it."""

from __future__ import annotations

import asyncio
import io
import os
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from indexes.embedding_process import (
    LocalModelPool,
    LocalModelProcess,
    ProcessEmbedding,
    pool_shape,
)
from indexes.embedding_worker import length_groups
from indexes.errors import ModelError
from indexes.frames import read_frame, write_frame
from indexes.models import build_embedding, build_tokenizer, packaged_model_dir
from indexes.specs import PACKAGED_EMBEDDING, ModelSpec
from tests.conftest import Api
from tests.integration.test_documents import new_kb, upload, wait_done

PACKAGED = ModelSpec(provider="local", model_name=PACKAGED_EMBEDDING, model_type="embedding")
TEXTS = [
    "Refunds are paid within 14 days of the return.",
    "退款在收到退货后十四天内支付。",
    "The robot answers from its knowledge bases.",
]


@pytest.fixture
def child() -> Iterator[LocalModelProcess]:
    """A process of the test's own, not the pool the app shares."""
    process = LocalModelProcess(packaged_model_dir(), label=PACKAGED_EMBEDDING)
    yield process
    process.close()


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie (exited, not yet reaped by its parent) counts as gone.
    state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    return state != "Z"


def test_frames_round_trip_and_a_cut_frame_is_an_error() -> None:
    stream = io.BytesIO()
    write_frame(stream, ["一", "two"])
    write_frame(stream, ("ok", 3))
    data = stream.getvalue()
    reader = io.BytesIO(data)
    assert read_frame(reader) == ["一", "two"]
    assert read_frame(reader) == ("ok", 3)
    assert read_frame(reader) is None  # a clean end
    cut = io.BytesIO(data[:-2])
    assert read_frame(cut) == ["一", "two"]
    with pytest.raises(EOFError, match="before the end of a frame"):
        read_frame(cut)


def test_pool_shape_uses_every_core_with_few_copies_of_the_model() -> None:
    assert pool_shape(cores=1) == (1, 1)
    assert pool_shape(cores=2) == (2, 1)
    assert pool_shape(cores=16) == (4, 4)
    assert pool_shape(1, cores=2) == (1, 2)
    assert pool_shape(3, cores=8) == (3, 2)


def test_texts_are_grouped_by_length_so_that_little_padding_is_computed() -> None:
    lengths = [250, 12, 240, 10, 100, 254, 9, 95, 30]
    groups = length_groups(lengths, max_size=2)
    assert sorted(i for group in groups for i in group) == list(range(len(lengths)))
    assert all(len(group) <= 2 for group in groups)
    # Longest first; a text joins a group within 10% of its longest, or 8 tokens.
    assert groups == [[5, 0], [2], [4, 7], [8], [1, 3], [6]]
    assert length_groups([], max_size=8) == []
    assert length_groups([7, 7, 7], max_size=8) == [[0, 1, 2]]


def test_vectors_are_those_of_the_model_in_process(child: LocalModelProcess) -> None:
    in_process = build_embedding(PACKAGED).get_text_embedding_batch(TEXTS)
    from_child = child.embed(TEXTS)
    assert len(from_child) == len(TEXTS)
    for ours, theirs in zip(from_child, in_process, strict=True):
        assert ours == pytest.approx(theirs, abs=1e-6)


def test_the_llama_index_wrapper_embeds_texts_in_the_pool_and_queries_here() -> None:
    model = ProcessEmbedding(packaged_model_dir(), label=PACKAGED_EMBEDDING, processes=2)
    assert model.max_length == 256  # read from the model folder, before any child starts
    texts = model.get_text_embedding_batch(TEXTS)
    reference = build_embedding(PACKAGED)
    assert texts[1] == pytest.approx(reference.get_text_embedding(TEXTS[1]), abs=1e-6)
    query = model.get_query_embedding("when are refunds paid?")
    assert query == pytest.approx(reference.get_query_embedding("when are refunds paid?"), abs=1e-6)


def test_a_process_killed_mid_request_fails_that_request_and_the_next_one_restarts_it(
    child: LocalModelProcess,
) -> None:
    child.start()
    first_pid = child.pid
    assert first_pid is not None
    os.kill(first_pid, signal.SIGSTOP)  # holds the request below in flight
    killer = subprocess.Popen(
        [sys.executable, "-c", f"import os,time; time.sleep(1); os.kill({first_pid}, 9)"]
    )
    with pytest.raises(ModelError) as failure:
        child.embed(TEXTS)
    killer.wait()
    message = str(failure.value)
    assert PACKAGED_EMBEDDING in message
    assert "stopped unexpectedly (exit code -9)" in message
    assert child.embed(TEXTS[:1])[0] == pytest.approx(
        build_embedding(PACKAGED).get_text_embedding(TEXTS[0]), abs=1e-6
    )
    assert child.pid not in (None, first_pid)


def test_a_process_that_does_not_answer_is_stopped_and_replaced() -> None:
    slow = LocalModelProcess(packaged_model_dir(), label=PACKAGED_EMBEDDING, request_timeout=2)
    try:
        slow.start()
        frozen = slow.pid
        assert frozen is not None
        os.kill(frozen, signal.SIGSTOP)
        started = time.monotonic()
        with pytest.raises(ModelError, match="did not answer within 2 s"):
            slow.embed(TEXTS)
        assert time.monotonic() - started < 10
        assert not _alive(frozen)
        assert len(slow.embed(TEXTS)) == 3
        assert slow.pid not in (None, frozen)
    finally:
        slow.close()


def test_a_process_that_died_while_idle_is_replaced_without_an_error(
    child: LocalModelProcess,
) -> None:
    child.start()
    first_pid = child.pid
    assert first_pid is not None
    os.kill(first_pid, signal.SIGKILL)
    deadline = time.monotonic() + 10
    while child.pid is not None:  # None once the process has exited (and is reaped)
        assert time.monotonic() < deadline
        time.sleep(0.05)
    assert len(child.embed(TEXTS)) == 3
    assert child.pid != first_pid


def test_a_folder_without_a_model_fails_with_the_reason(tmp_path: Path) -> None:
    (tmp_path / "config.json").write_text("{not json", encoding="utf-8")
    broken = LocalModelProcess(tmp_path, label="broken-model")
    with pytest.raises(ModelError, match="Could not load the local embedding model"):
        broken.embed(["anything"])
    assert broken.pid is None


def test_close_stops_the_process(child: LocalModelProcess) -> None:
    child.start()
    pid = child.pid
    assert pid is not None
    child.close()
    assert child.pid is None
    assert not _alive(pid)


def test_the_process_does_not_outlive_its_parent(tmp_path: Path) -> None:
    script = textwrap.dedent(
        f"""
        import os
        from pathlib import Path
        from indexes.embedding_process import LocalModelProcess
        process = LocalModelProcess(Path({str(packaged_model_dir())!r}))
        process.start()
        print(process.pid, flush=True)
        os._exit(0)  # no atexit, no close(): as if the parent were killed
        """
    )
    parent = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=300, check=True
    )
    pid = int(parent.stdout.strip())
    deadline = time.monotonic() + 30
    while _alive(pid):
        assert time.monotonic() < deadline, f"embedding process {pid} outlived its parent"
        time.sleep(0.1)


def test_pool_processes_share_concurrent_callers_each_getting_its_own_vectors() -> None:
    pool = LocalModelPool(packaged_model_dir(), label=PACKAGED_EMBEDDING, size=2, threads=1)
    try:
        pool.start()
        pids = {process.pid for process in pool.processes}
        assert None not in pids
        assert len(pids) == 2
        with ThreadPoolExecutor(4) as callers:
            results = list(callers.map(lambda text: pool.embed([text])[0], TEXTS * 4))
        reference = build_embedding(PACKAGED).get_text_embedding_batch(TEXTS)
        for position, vector in enumerate(results):
            assert vector == pytest.approx(reference[position % 3], abs=1e-6)
    finally:
        pool.close()


def test_token_counts_need_no_model_and_match_the_models_tokenizer() -> None:
    count = build_tokenizer(PACKAGED)
    hf_tokenizer = build_embedding(PACKAGED)._model.tokenizer  # type: ignore[attr-defined]
    long_text = "知识库 retrieval " * 300  # past the model's 256-token truncation
    for text in [*TEXTS, long_text]:
        assert count(text) == hf_tokenizer.encode(text, add_special_tokens=False)
    assert len(count(long_text)) > 256


# --- through the app ------------------------------------------------------------------------------


async def test_ingested_chunks_fit_the_local_models_input(api: Api) -> None:
    """A knowledge base asking for 500-token chunks gets chunks the model reads whole (254
    tokens plus its two special tokens), not chunks truncated by the model."""
    user = await api.user()
    kb = await new_kb(api, user, chunk_size=500, chunk_overlap=50)
    text = " ".join(
        f"Sentence {i} explains one more rule of the refund policy." for i in range(300)
    )
    response = await upload(api, user, kb["id"], ("policy.txt", text.encode()))
    document_id = response.json()["items"][0]["id"]
    done = await wait_done(api, user, document_id)
    assert done["status"] == "completed", done
    chunks = await api.client.get(
        f"/api/v1/documents/{document_id}/chunks", headers=user.headers, params={"limit": 100}
    )
    items = chunks.json()["items"]
    assert len(items) == done["chunk_count"] > 10
    count = build_tokenizer(PACKAGED)
    assert max(len(count(item["text"])) for item in items) <= 254


async def test_an_embedding_process_killed_mid_document_fails_it_and_a_retry_completes_it(
    api: Api,
) -> None:
    user = await api.user()
    kb = await new_kb(api, user, chunk_size=100, chunk_overlap=0)
    embed_model, _ = await asyncio.to_thread(api.ctx.embeddings.get, PACKAGED)
    await asyncio.to_thread(embed_model.get_text_embedding_batch, ["start the processes"])
    pool = embed_model._inner._pool  # type: ignore[attr-defined]
    frozen = [process.pid for process in pool.processes]
    for pid in frozen:
        os.kill(pid, signal.SIGSTOP)  # the document's first batch waits in a frozen process
    text = " ".join(f"Rule {i}: refunds need a receipt and the original box." for i in range(200))
    response = await upload(api, user, kb["id"], ("rules.txt", text.encode()))
    document_id = response.json()["items"][0]["id"]
    deadline = time.monotonic() + 60
    while True:
        status = await api.client.get(
            f"/api/v1/documents/{document_id}/status", headers=user.headers
        )
        if status.json()["status"] == "embedding":
            break
        assert time.monotonic() < deadline, status.json()
        await asyncio.sleep(0.1)
    for pid in frozen:
        os.kill(pid, signal.SIGKILL)

    failed = await wait_done(api, user, document_id)
    assert failed["status"] == "failed"
    assert "embedding process" in failed["error_msg"]
    assert "stopped unexpectedly" in failed["error_msg"]
    assert failed["chunk_count"] == 0

    retried = await api.client.post(f"/api/v1/documents/{document_id}/retry", headers=user.headers)
    assert retried.status_code == 202, retried.text
    final = await wait_done(api, user, document_id)
    assert final["status"] == "completed", final
    assert final["chunk_count"] > 10
    assert not set(frozen) & {process.pid for process in pool.processes}
