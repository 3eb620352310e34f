"""Rerankers for real: the Cohere-style API reranker against the local OpenAI-compatible test
server's /rerank (scores: share of the query's words found in the document), a local
cross-encoder built from the packaged MiniLM folder (untrained head: plumbing only), and
reranking inside RobotRetriever.search."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import time
from typing import Any

import pytest
from llama_index.core.base.embeddings.base import BaseEmbedding
from llama_index.core.schema import NodeWithScore, TextNode

from indexes.errors import IndexesError, ModelError
from indexes.models import build_embedding, packaged_model_dir
from indexes.rerank import CompatibleRerank, build_reranker
from indexes.retrieval import KnowledgeSource, build_retriever
from indexes.specs import ModelSpec, RetrievalSpec, StoreSettings
from tests.integration.test_retrieval import IT, PACKAGED, open_source
from tests.openai_server import DEFAULT_API_KEY, OpenAIServer, overlap_score

SECRET = "sk-rerank-7d1e-SECRET"
QUERY = "where does Milvus store vectors"
DOCS = [
    "cats sleep all day",
    "Milvus stores vectors in a local directory",
    "vectors and cats",
    "nothing to see here",
]


def api_spec(server: OpenAIServer, **fields: Any) -> ModelSpec:
    values: dict[str, Any] = {
        "provider": "openai-compatible",
        "model_name": "test-rerank",
        "model_type": "rerank",
        "base_url": server.base_url,
        "api_key": DEFAULT_API_KEY,
    }
    values.update(fields)
    return ModelSpec(**values)


def local_spec() -> ModelSpec:
    return ModelSpec(provider="local", model_name=str(packaged_model_dir()), model_type="rerank")


def make_nodes(texts: list[str]) -> list[NodeWithScore]:
    return [
        NodeWithScore(node=TextNode(id_=f"n{i}", text=t), score=0.1) for i, t in enumerate(texts)
    ]


def expected_order(query: str, texts: list[str]) -> list[tuple[str, float]]:
    scored = [(f"n{i}", overlap_score(query, t)) for i, t in enumerate(texts)]
    return sorted(scored, key=lambda pair: -pair[1])


# --- API rerankers -------------------------------------------------------------------------------


def test_api_reranker_orders_by_relevance_and_keeps_top_n(openai_server: OpenAIServer) -> None:
    reranker = build_reranker(api_spec(openai_server), top_n=2)
    inputs = make_nodes(DOCS)

    ranked = reranker.postprocess_nodes(inputs, query_str=QUERY)

    assert [(n.node.node_id, n.score) for n in ranked] == expected_order(QUERY, DOCS)[:2]
    assert all(n.score == 0.1 for n in inputs)  # the caller's nodes keep their scores
    (request,) = openai_server.requests_to("/rerank")
    assert request.path == "/v1/rerank"
    assert request.key_ok is True
    assert request.body["model"] == "test-rerank"
    assert request.body["query"] == QUERY
    assert request.body["documents"] == DOCS
    assert request.body["top_n"] == 2


def test_api_reranker_retries_a_rate_limit(openai_server: OpenAIServer) -> None:
    openai_server.fail(429, times=1, path="/rerank")
    reranker = build_reranker(api_spec(openai_server), top_n=4)

    ranked = reranker.postprocess_nodes(make_nodes(DOCS), query_str=QUERY)

    assert [n.node.node_id for n in ranked] == [i for i, _ in expected_order(QUERY, DOCS)]
    assert [r.status for r in openai_server.requests_to("/rerank")] == [429, 200]


def test_persistent_server_error_is_a_model_error_without_the_key(
    openai_server: OpenAIServer,
) -> None:
    openai_server.api_key = SECRET
    openai_server.fail(500, times=10, path="/rerank")
    reranker = build_reranker(api_spec(openai_server, api_key=SECRET), top_n=2, max_retries=2)

    with pytest.raises(ModelError) as caught:
        reranker.postprocess_nodes(make_nodes(DOCS), query_str=QUERY)

    message = str(caught.value)
    for fragment in ("openai-compatible", "test-rerank", "HTTP 500", "3 attempts"):
        assert fragment in message
    assert SECRET not in message
    assert len(openai_server.requests_to("/rerank")) == 3


def test_refused_requests_are_not_retried_and_never_show_the_key(
    openai_server: OpenAIServer,
) -> None:
    openai_server.api_key = SECRET
    reranker = build_reranker(api_spec(openai_server, api_key="sk-wrong-key"), top_n=2)
    with pytest.raises(ModelError, match="rejected the API key") as caught:
        reranker.postprocess_nodes(make_nodes(DOCS), query_str=QUERY)
    assert "sk-wrong-key" not in str(caught.value)

    openai_server.fail(422, path="/rerank")  # its body quotes the key
    reranker = build_reranker(api_spec(openai_server, api_key=SECRET), top_n=2)
    with pytest.raises(ModelError, match="HTTP 422") as caught:
        reranker.postprocess_nodes(make_nodes(DOCS), query_str=QUERY)
    assert SECRET not in str(caught.value)
    assert len(openai_server.requests_to("/rerank")) == 2


def test_timeout_is_a_model_error(openai_server: OpenAIServer) -> None:
    openai_server.hang(5, times=5, path="/rerank")
    reranker = build_reranker(api_spec(openai_server), top_n=2, timeout=0.3, max_retries=1)

    started = time.perf_counter()
    with pytest.raises(ModelError, match=r"did not answer within 0\.3 s, after 2 attempts"):
        reranker.postprocess_nodes(make_nodes(DOCS), query_str=QUERY)
    assert time.perf_counter() - started < 4
    assert len(openai_server.requests_to("/rerank")) == 2


def test_nothing_to_rerank_sends_nothing(openai_server: OpenAIServer) -> None:
    reranker = build_reranker(api_spec(openai_server), top_n=2)
    assert reranker.postprocess_nodes([], query_str=QUERY) == []
    assert openai_server.requests_to("/rerank") == []


def test_the_api_key_is_not_serialised(openai_server: OpenAIServer) -> None:
    reranker = build_reranker(api_spec(openai_server, api_key=SECRET), top_n=2)
    assert isinstance(reranker, CompatibleRerank)
    assert SECRET not in reranker.to_json()


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"model_type": "embedding"}, "not a rerank model"),
        ({"provider": "deepseek", "base_url": None}, "offers no rerank models"),
        ({"provider": "nope"}, "Unknown model provider"),
        ({"base_url": None}, "needs a base URL"),
        ({"provider": "siliconflow", "api_key": None}, "needs an API key"),
        ({"provider": "local", "model_name": "/no/such/folder"}, "does not exist"),
    ],
)
def test_unusable_specs_are_refused(
    openai_server: OpenAIServer, fields: dict[str, Any], message: str
) -> None:
    with pytest.raises(ModelError, match=message):
        build_reranker(api_spec(openai_server, **fields), top_n=2)


def test_top_n_must_be_positive(openai_server: OpenAIServer) -> None:
    with pytest.raises(IndexesError, match="at least one"):
        build_reranker(api_spec(openai_server), top_n=0)


# --- local cross-encoder -------------------------------------------------------------------------


@pytest.fixture(scope="module")
def seeded() -> None:
    """The packaged MiniLM has no classification head: it is initialised randomly at load."""
    import torch

    torch.manual_seed(0)


@pytest.mark.usefixtures("seeded")
def test_local_cross_encoder_scores_every_pair() -> None:
    everything = build_reranker(local_spec(), top_n=len(DOCS))
    inputs = make_nodes(DOCS)

    ranked = everything.postprocess_nodes(inputs, query_str=QUERY)

    assert sorted(n.node.node_id for n in ranked) == [f"n{i}" for i in range(len(DOCS))]
    scores = [n.score or 0.0 for n in ranked]
    assert all(type(n.score) is float and 0 < n.score < 1 for n in ranked)  # sigmoid, floats
    assert scores == sorted(scores, reverse=True)
    assert all(n.score == 0.1 for n in inputs)
    best_two = build_reranker(local_spec(), top_n=2)
    assert best_two._model is everything._model  # type: ignore[attr-defined]  # loaded once
    assert best_two.postprocess_nodes(make_nodes(DOCS), query_str=QUERY) == ranked[:2]


def test_local_cross_encoder_loads_with_the_network_disabled() -> None:
    script = textwrap.dedent(
        """
        import socket

        def refuse(*args, **kwargs):
            raise OSError("network disabled by the test")

        socket.socket.connect = refuse
        socket.socket.connect_ex = refuse
        socket.create_connection = refuse
        socket.getaddrinfo = refuse

        from llama_index.core.schema import NodeWithScore, TextNode
        from indexes.models import packaged_model_dir
        from indexes.rerank import build_reranker
        from indexes.specs import ModelSpec

        folder = str(packaged_model_dir())
        spec = ModelSpec(provider="local", model_name=folder, model_type="rerank")
        nodes = [NodeWithScore(node=TextNode(text=t)) for t in ("a cat", "a dog", "a car")]
        ranked = build_reranker(spec, top_n=3).postprocess_nodes(nodes, query_str="pets")
        assert len(ranked) == 3
        print("ok")
        """
    )
    env = {
        k: v for k, v in os.environ.items() if k not in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")
    }
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=300
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.strip().endswith("ok")


# --- inside RobotRetriever -----------------------------------------------------------------------


@pytest.fixture(scope="module")
def it(tmp_path_factory: pytest.TempPathFactory) -> KnowledgeSource:
    model: BaseEmbedding = build_embedding(PACKAGED)
    stores = StoreSettings(index_dir=tmp_path_factory.mktemp("rerank"))
    return open_source(stores, model, 2, IT)


WIFI = "Where is the Wi-Fi password posted?"


def test_retriever_reranks_and_reports_every_score(
    openai_server: OpenAIServer, it: KnowledgeSource
) -> None:
    reranker = build_reranker(api_spec(openai_server), top_n=3)
    result = build_retriever(RetrievalSpec(top_k=3), [it], reranker=reranker).search(WIFI)

    assert result.threshold_on == "rerank"
    assert result.chunks[0].node_id == "201-0"
    for chunk in result.chunks:
        assert chunk.rerank_score == pytest.approx(overlap_score(WIFI, chunk.text))
        assert chunk.score == chunk.rerank_score
        assert chunk.fused_score is not None
        assert chunk.similarity is not None
    scores = [chunk.score for chunk in result.chunks]
    assert scores == sorted(scores, reverse=True)
    assert result.timings_ms["rerank"] > 0
    (request,) = openai_server.requests_to("/rerank")
    assert len(request.body["documents"]) == len(result.candidates)  # every candidate reranked


def test_threshold_applies_to_rerank_scores(
    openai_server: OpenAIServer, it: KnowledgeSource
) -> None:
    query = "the help desk"
    reranker = build_reranker(api_spec(openai_server), top_n=5)
    loose = RetrievalSpec(top_k=5, similarity_threshold=-1)
    strict = RetrievalSpec(top_k=5, similarity_threshold=0.5)

    everything = build_retriever(loose, [it], reranker=reranker).search(query).chunks
    kept = build_retriever(strict, [it], reranker=reranker).search(query).chunks

    assert [c.node_id for c in kept] == [
        c.node_id for c in everything if (c.rerank_score or 0) >= 0.5
    ]
    assert 0 < len(kept) < len(everything)
    # Not the similarity: this chunk's cosine is far below the threshold, its rerank score not.
    wifi = {c.node_id: c for c in kept}["201-0"]
    assert (wifi.similarity or 0) < 0.5 <= (wifi.rerank_score or 0)
    # In keyword mode too, where without a reranker the threshold is ignored.
    keyword = build_retriever(strict, [it], reranker=reranker).search(query, mode="keyword")
    assert keyword.threshold_on == "rerank"
    assert [c.node_id for c in keyword.chunks] == [c.node_id for c in kept]


def test_a_search_may_ask_for_more_than_the_reranker_keeps(
    openai_server: OpenAIServer, it: KnowledgeSource
) -> None:
    reranker = build_reranker(api_spec(openai_server), top_n=1)
    robot = build_retriever(RetrievalSpec(similarity_threshold=-1), [it], reranker=reranker)
    assert len(robot.search(WIFI, top_k=3).chunks) == 3
    assert len(robot.search(WIFI, top_k=1).chunks) == 1


def test_reranker_failure_during_search_is_a_model_error(
    openai_server: OpenAIServer, it: KnowledgeSource
) -> None:
    openai_server.fail(503, times=10, path="/rerank")
    reranker = build_reranker(api_spec(openai_server), top_n=3, max_retries=1)
    robot = build_retriever(RetrievalSpec(), [it], reranker=reranker)
    with pytest.raises(ModelError, match="HTTP 503"):
        robot.search(WIFI)


@pytest.mark.usefixtures("seeded")
def test_retriever_with_the_local_cross_encoder(it: KnowledgeSource) -> None:
    robot = build_retriever(
        RetrievalSpec(top_k=2, similarity_threshold=-1),
        [it],
        reranker=build_reranker(local_spec(), top_n=2),
    )
    result = robot.search(WIFI)
    assert len(result.chunks) == 2
    assert all(type(c.rerank_score) is float and c.score == c.rerank_score for c in result.chunks)
