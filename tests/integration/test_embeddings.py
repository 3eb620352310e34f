"""Embedding models for real: the packaged all-MiniLM-L6-v2 in process, and API models through
the official openai client against the local OpenAI-compatible test server."""

from __future__ import annotations

import math
import os
import subprocess
import sys
import textwrap
from typing import Any

import pytest
from llama_index.core.schema import Document

from indexes.errors import ModelError
from indexes.models import (
    build_embedding,
    build_tokenizer,
    embedding_dimension,
    packaged_model_dir,
    tiktoken_cache_dir,
)
from indexes.pipeline import build_ingestion_pipeline, effective_chunking, embed_document
from indexes.specs import PACKAGED_EMBEDDING, KnowledgeSpec, ModelSpec
from indexes.splitting import prepare_documents
from tests import openai_server as stand_in
from tests.openai_server import DEFAULT_API_KEY, OpenAIServer

# The fixtures, for pytest to find here.
forbid_global_settings = stand_in.forbid_global_settings
openai_server = stand_in.openai_server

pytestmark = pytest.mark.usefixtures("forbid_global_settings")

PACKAGED = ModelSpec(provider="local", model_name=PACKAGED_EMBEDDING, model_type="embedding")
SECRET = "sk-test-5f2c9d-SECRET"


def api_spec(server: OpenAIServer, **fields: Any) -> ModelSpec:
    values: dict[str, Any] = {
        "provider": "openai-compatible",
        "model_name": "BAAI/bge-m3",  # not an OpenAI model name: must still be accepted
        "model_type": "embedding",
        "base_url": server.base_url,
        "api_key": DEFAULT_API_KEY,
    }
    values.update(fields)
    return ModelSpec(**values)


def cosine(a: list[float], b: list[float]) -> float:
    return sum(x * y for x, y in zip(a, b, strict=True))


# --- local models -------------------------------------------------------------------------------


def test_packaged_model_gives_normalised_384d_vectors_that_rank_sense() -> None:
    model = build_embedding(PACKAGED)
    cat, kitten, tax = model.get_text_embedding_batch(
        [
            "The cat is sleeping on the sofa.",
            "A kitten naps on the couch.",
            "Quarterly corporate tax filings are due in April.",
        ]
    )
    assert len(cat) == 384
    assert all(math.isclose(cosine(v, v), 1.0, rel_tol=1e-4) for v in (cat, kitten, tax))
    assert cosine(cat, kitten) > cosine(cat, tax) + 0.3
    query = model.get_query_embedding("where is the cat sleeping?")
    assert cosine(query, cat) > cosine(query, tax)


def test_local_model_from_a_path_is_loaded_once() -> None:
    by_path = ModelSpec(
        provider="local", model_name=str(packaged_model_dir()), model_type="embedding"
    )
    first = build_embedding(by_path, batch_size=8)
    second = build_embedding(by_path, batch_size=16)
    assert (first.embed_batch_size, second.embed_batch_size) == (8, 16)
    assert first._model is second._model  # type: ignore[attr-defined]
    packaged = build_embedding(PACKAGED).get_text_embedding("same weights")
    assert first.get_text_embedding("same weights") == pytest.approx(packaged, abs=1e-6)


def test_missing_local_folder_is_a_model_error(tmp_path: Any) -> None:
    missing = tmp_path / "no-such-model"
    spec = ModelSpec(provider="local", model_name=str(missing), model_type="embedding")
    with pytest.raises(ModelError, match="does not exist"):
        build_embedding(spec)
    not_a_model = ModelSpec(provider="local", model_name=str(tmp_path), model_type="embedding")
    with pytest.raises(ModelError, match="Could not load"):
        build_embedding(not_a_model)


def test_embedding_dimension() -> None:
    assert embedding_dimension(PACKAGED) == 384


def test_tokenizers_count_past_the_model_limit() -> None:
    count = build_tokenizer(PACKAGED)
    long_text = "retrieval " * 600
    build_embedding(PACKAGED).get_text_embedding(long_text)  # leaves truncation on the model's
    assert len(count(long_text)) == 600
    api = build_tokenizer(ModelSpec(provider="openai", model_name="x", model_type="embedding"))
    assert len(api("hello world")) == 2
    assert len(api("<|endoftext|>")) > 1  # plain text, not a control token


def test_tokenizers_and_packaged_model_work_with_the_network_disabled() -> None:
    """In a fresh process without TIKTOKEN_CACHE_DIR or HF_HUB_OFFLINE, any connection attempt
    raises: loading the tokenizers and the packaged model must not try one."""
    script = textwrap.dedent(
        """
        import os, socket

        def refuse(*args, **kwargs):
            raise OSError("network disabled by the test")

        socket.socket.connect = refuse
        socket.socket.connect_ex = refuse
        socket.create_connection = refuse
        socket.getaddrinfo = refuse

        from indexes.models import build_embedding, build_tokenizer, tiktoken_cache_dir
        from indexes.specs import ModelSpec

        api = build_tokenizer(ModelSpec(provider="qwen", model_name="m", model_type="embedding"))
        assert len(api("离线也能数 token")) > 3
        assert os.environ["TIKTOKEN_CACHE_DIR"] == str(tiktoken_cache_dir())
        local = ModelSpec(provider="local", model_name="all-MiniLM-L6-v2", model_type="embedding")
        assert len(build_tokenizer(local)("hello world")) == 2
        assert len(build_embedding(local).get_text_embedding("offline")) == 384
        print("ok")
        """
    )
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("TIKTOKEN_CACHE_DIR", "HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")
    }
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=300
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.strip().endswith("ok")
    assert any(p.name for p in tiktoken_cache_dir().iterdir())


# --- OpenAI-compatible providers ----------------------------------------------------------------


def test_api_embeddings_are_batched(openai_server: OpenAIServer) -> None:
    model = build_embedding(api_spec(openai_server), batch_size=4)
    vectors = model.get_text_embedding_batch([f"text number {i}" for i in range(10)])
    assert len(vectors) == 10
    assert len(vectors[0]) == openai_server.embedding_dimension
    requests = openai_server.requests_to("/embeddings")
    assert [r.input_count for r in requests] == [4, 4, 2]  # ceil(10 / 4) requests
    assert all(r.key_ok and r.body["model"] == "BAAI/bge-m3" for r in requests)


@pytest.mark.parametrize("status", [429, 500, 503])
def test_api_retries_then_succeeds(openai_server: OpenAIServer, status: int) -> None:
    openai_server.fail(status, times=2, path="/embeddings")
    model = build_embedding(api_spec(openai_server), max_retries=2)
    assert len(model.get_text_embedding("hello")) == openai_server.embedding_dimension
    assert [r.status for r in openai_server.requests] == [status, status, 200]


async def test_api_async_path_retries_too(openai_server: OpenAIServer) -> None:
    openai_server.fail(429, times=1)
    model = build_embedding(api_spec(openai_server), batch_size=2)
    vectors = await model.aget_text_embedding_batch(["a", "b", "c"])
    assert len(vectors) == 3
    assert [r.status for r in openai_server.requests] == [429, 200, 200]


def test_persistent_500_is_a_clear_model_error(openai_server: OpenAIServer) -> None:
    openai_server.api_key = SECRET
    openai_server.fail(500, times=100)  # the server's error body echoes the key it received
    model = build_embedding(api_spec(openai_server, api_key=SECRET), max_retries=2)
    with pytest.raises(ModelError) as caught:
        model.get_text_embedding_batch(["a", "b"])
    message = str(caught.value)
    for fragment in ("HTTP 500", "openai-compatible", "BAAI/bge-m3", openai_server.base_url):
        assert fragment in message
    assert "2 retries" in message
    assert SECRET not in message
    assert caught.value.__cause__ is None  # the openai error (with the echoed key) is dropped
    assert len(openai_server.requests) == 3


def test_refused_request_detail_never_shows_the_key(openai_server: OpenAIServer) -> None:
    openai_server.api_key = SECRET
    openai_server.fail(400, retry_after_ms=None)
    with pytest.raises(ModelError) as caught:
        build_embedding(api_spec(openai_server, api_key=SECRET)).get_text_embedding("a")
    assert "HTTP 400" in str(caught.value)
    assert SECRET not in str(caught.value)


def test_wrong_key_says_the_key_was_rejected(openai_server: OpenAIServer) -> None:
    wrong = "sk-wrong-key-4242"
    with pytest.raises(ModelError, match="rejected the API key") as caught:
        build_embedding(api_spec(openai_server, api_key=wrong)).get_query_embedding("a")
    assert wrong not in str(caught.value)
    assert [r.key_ok for r in openai_server.requests] == [False]  # 401 is not retried


def test_timeout_is_a_model_error(openai_server: OpenAIServer) -> None:
    openai_server.hang(10, times=5)
    model = build_embedding(api_spec(openai_server), max_retries=1, timeout=0.3)
    with pytest.raises(ModelError, match=r"did not answer within 0\.3 s"):
        model.get_text_embedding("a")
    assert len(openai_server.requests) == 2


def test_api_embedding_dimension(openai_server: OpenAIServer) -> None:
    openai_server.embedding_dimension = 48
    assert embedding_dimension(api_spec(openai_server)) == 48


def test_azure_uses_deployment_path_version_and_key_header(openai_server: OpenAIServer) -> None:
    spec = api_spec(
        openai_server,
        provider="azure",
        model_name="my-embedding-deployment",
        base_url=openai_server.url,
        api_version="2024-10-21",
    )
    assert len(build_embedding(spec).get_text_embedding("hi")) == 64
    (request,) = openai_server.requests
    assert request.path == "/openai/deployments/my-embedding-deployment/embeddings"
    assert request.query["api-version"] == ["2024-10-21"]
    assert request.key_ok
    assert request.headers["api-key"] == "<redacted>"


def test_keyless_provider_never_sends_the_environment_key(
    openai_server: OpenAIServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", SECRET)
    openai_server.api_key = None
    spec = api_spec(openai_server, provider="ollama", api_key=None)
    build_embedding(spec).get_text_embedding("a")
    assert openai_server.requests[0].key_ok is False  # a placeholder, not the env key


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"provider": "nope"}, "Unknown model provider"),
        ({"provider": "deepseek"}, "offers no embedding models"),
        ({"provider": "openai-compatible", "base_url": None}, "needs a base URL"),
        ({"provider": "openai", "api_key": None}, "needs an API key"),
        ({"provider": "azure", "api_version": None}, "needs an API version"),
        ({"model_type": "chat"}, "not an embedding model"),
    ],
)
def test_unusable_specs_are_refused(
    openai_server: OpenAIServer, fields: dict[str, Any], message: str
) -> None:
    with pytest.raises(ModelError, match=message):
        build_embedding(api_spec(openai_server, **fields))


# --- the pipeline -------------------------------------------------------------------------------

SECTIONS = [
    Document(
        text=" ".join(
            f"Paragraph {i} explains how invoices are approved by finance." for i in range(60)
        ),
        metadata={"file_name": "policy.docx", "heading_path": "Finance > Invoices"},
    ),
    Document(
        text="".join(f"第{i}条：报销需要部门经理审批。" for i in range(80)),
        metadata={"file_name": "policy.docx", "heading_path": "财务 > 报销"},
    ),
]


def knowledge(embedding: ModelSpec, **fields: Any) -> KnowledgeSpec:
    return KnowledgeSpec(knowledge_id=5, collection_name="kb_5", embedding=embedding, **fields)


def test_chunks_are_kept_within_what_the_local_model_reads() -> None:
    model = build_embedding(PACKAGED)
    assert effective_chunking(knowledge(PACKAGED, chunk_size=500, chunk_overlap=50), model) == (
        254,
        50,
    )
    assert effective_chunking(knowledge(PACKAGED, chunk_size=128, chunk_overlap=16), model) == (
        128,
        16,
    )
    assert effective_chunking(knowledge(PACKAGED, chunk_size=500, chunk_overlap=300), model) == (
        254,
        127,
    )


def test_embed_document_with_the_packaged_model() -> None:
    spec = knowledge(PACKAGED, chunk_size=96, chunk_overlap=16)
    model = build_embedding(PACKAGED, batch_size=4)
    events: list[tuple[str, float]] = []
    nodes = embed_document(
        spec,
        SECTIONS,
        document_id=9,
        embed_model=model,
        tokenizer=build_tokenizer(PACKAGED),
        progress=lambda stage, fraction: events.append((stage, fraction)),
    )
    assert [n.node_id for n in nodes] == [f"9-{i}" for i in range(len(nodes))]
    assert all(n.embedding is not None and len(n.embedding) == 384 for n in nodes)
    assert {n.metadata["heading_path"] for n in nodes} == {"Finance > Invoices", "财务 > 报销"}
    assert events[:3] == [("splitting", 0.0), ("splitting", 1.0), ("embedding", 0.0)]
    fractions = [f for stage, f in events if stage == "embedding"]
    assert fractions == sorted(fractions)
    assert fractions[-1] == 1.0
    assert len(fractions) == 1 + math.ceil(len(nodes) / 4)
    # The IngestionPipeline does the same work and gives the same chunks and vectors.
    pipeline = build_ingestion_pipeline(spec, model, build_tokenizer(PACKAGED))
    again = pipeline.run(documents=prepare_documents(SECTIONS, knowledge_id=5, document_id=9))
    assert [(n.node_id, n.get_content()) for n in again] == [(n.node_id, n.text) for n in nodes]
    for old, new in zip(nodes, again, strict=True):
        assert cosine(old.embedding or [], new.embedding or []) == pytest.approx(1.0, abs=1e-4)


def test_embed_document_through_an_api_model(openai_server: OpenAIServer) -> None:
    embedding = api_spec(openai_server)
    model = build_embedding(embedding, batch_size=8)
    nodes = embed_document(
        knowledge(embedding, chunk_size=64, chunk_overlap=8),
        SECTIONS,
        document_id=3,
        embed_model=model,
        tokenizer=build_tokenizer(embedding),
    )
    requests = openai_server.requests_to("/embeddings")
    assert len(requests) == math.ceil(len(nodes) / 8)
    sent = sorted(text for r in requests for text in r.body["input"])
    assert sent == sorted(n.text.replace("\n", " ") for n in nodes)
    assert all(len(n.embedding or []) == 64 for n in nodes)


def test_embed_document_reports_failures_as_model_errors(openai_server: OpenAIServer) -> None:
    openai_server.fail(500, times=100)
    embedding = api_spec(openai_server)
    with pytest.raises(ModelError, match="HTTP 500"):
        embed_document(
            knowledge(embedding),
            SECTIONS,
            document_id=3,
            embed_model=build_embedding(embedding, max_retries=0),
            tokenizer=build_tokenizer(embedding),
        )
