"""BatchingEmbedding: concurrent callers share batches, each gets its own vectors back, and one
caller's failure does not fail the others."""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
from pydantic import SecretStr

from indexes.batching import BatchingEmbedding
from indexes.models import build_embedding
from indexes.specs import ModelSpec
from tests.openai_server import DEFAULT_API_KEY, OpenAIServer, hashed_embedding


def _api_model(server: OpenAIServer, **options: Any) -> BatchingEmbedding:
    spec = ModelSpec(
        provider="openai-compatible",
        model_name="embedder",
        model_type="embedding",
        base_url=server.base_url,
        api_key=SecretStr(DEFAULT_API_KEY),
    )
    return BatchingEmbedding(build_embedding(spec, max_retries=0), **{"max_wait": 0.2, **options})


def test_concurrent_callers_share_requests_and_get_their_own_vectors(
    openai_server: OpenAIServer,
) -> None:
    model = _api_model(openai_server)
    texts = [f"document number {i} about topic {i % 3}" for i in range(24)]
    with ThreadPoolExecutor(max_workers=12) as pool:
        vectors = list(pool.map(lambda t: model.get_text_embedding_batch([t]), texts))
    for text, (vector,) in zip(texts, vectors, strict=True):
        expected = hashed_embedding(text, openai_server.embedding_dimension)
        assert vector == pytest.approx(expected, abs=1e-6)
    calls = len(openai_server.requests_to("/embeddings"))
    assert calls < len(texts) / 2, f"{calls} requests for {len(texts)} single-text callers"


def test_a_failing_batch_is_retried_per_caller(openai_server: OpenAIServer) -> None:
    model = _api_model(openai_server)
    openai_server.fail(500, times=1, path="/embeddings")  # the merged request fails once
    with ThreadPoolExecutor(max_workers=4) as pool:
        results = list(pool.map(lambda t: model.get_text_embedding_batch([t]), ["a b", "c d"]))
    assert [len(r[0]) for r in results] == [openai_server.embedding_dimension] * 2


def test_queries_are_not_delayed_by_batching(openai_server: OpenAIServer) -> None:
    model = _api_model(openai_server)
    vector = model.get_query_embedding("what is the policy")
    expected = hashed_embedding("what is the policy", openai_server.embedding_dimension)
    assert vector == pytest.approx(expected, abs=1e-6)


def test_batches_group_texts_of_similar_length(openai_server: OpenAIServer) -> None:
    """A model pads each text to its batch's longest: short and long texts that arrive
    interleaved are embedded in separate batches, not in arrival order."""
    model = _api_model(openai_server, batch_size=4, max_wait=0.02)
    short = [f"short {i}" for i in range(8)]
    long = [f"a much longer text, number {i}, " * 6 for i in range(8)]
    interleaved = [text for pair in zip(short, long, strict=True) for text in pair]
    openai_server.hang(30, times=1, path="/embeddings")  # until release()

    with ThreadPoolExecutor(max_workers=len(interleaved) + 1) as pool:
        first = pool.submit(model.get_text_embedding_batch, ["the first text"])
        deadline = time.monotonic() + 10
        while not openai_server.requests_to("/embeddings"):  # the model is busy with it
            assert time.monotonic() < deadline
            time.sleep(0.01)
        waiting = []
        for text in interleaved:  # one caller each, in this order
            waiting.append(pool.submit(model.get_text_embedding_batch, [text]))
            time.sleep(0.01)
        openai_server.release()
        assert len(first.result()[0]) == openai_server.embedding_dimension
        vectors = [future.result()[0] for future in waiting]

    for text, vector in zip(interleaved, vectors, strict=True):
        expected = hashed_embedding(text, openai_server.embedding_dimension)
        assert vector == pytest.approx(expected, abs=1e-6)
    batches = [request.body["input"] for request in openai_server.requests_to("/embeddings")]
    assert len(batches) == 5
    for batch in batches[1:]:
        assert set(batch) <= set(short) or set(batch) <= set(long), batch
