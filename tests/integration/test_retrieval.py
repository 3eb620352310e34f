"""Robot retrieval for real: Milvus Lite, the jieba BM25 store and the packaged all-MiniLM-L6-v2
model in temporary directories, documents ingested as the ingestion job does (embed_document,
then KnowledgeIndex.replace_document). LlamaIndex's global Settings are forbidden (conftest)."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from typing import Any

import pytest
from llama_index.core.base.embeddings.base import BaseEmbedding, Embedding
from llama_index.core.schema import NodeWithScore
from pydantic import PrivateAttr

from indexes.errors import IndexesError, StoreError
from indexes.knowledge_index import KnowledgeIndex
from indexes.models import build_embedding, build_tokenizer
from indexes.pipeline import embed_document
from indexes.readers.common import make_document
from indexes.retrieval import (
    STAGES,
    KnowledgeSource,
    RetrievedChunk,
    RobotRetriever,
    build_retriever,
    min_max,
)
from indexes.specs import PACKAGED_EMBEDDING, KnowledgeSpec, ModelSpec, RetrievalSpec, StoreSettings
from tests.openai_server import DEFAULT_API_KEY, OpenAIServer

PACKAGED = ModelSpec(provider="local", model_name=PACKAGED_EMBEDDING, model_type="embedding")
HR = [
    "Employees may carry over up to five unused vacation days into the next calendar year.",
    "Expense reports must be submitted within thirty days, with the original receipts attached.",
    "Parental leave is sixteen weeks at full pay for every new parent.",
    "Performance reviews take place twice a year, in March and in September.",
    "Overtime must be approved in advance by your line manager.",
    "定期存款利率：三年期为2.6%，五年期为2.75%，到期一次还本付息。",
    "活期存款利率为0.2%，按季结息，每季末月的20日为结息日。",
    "信用卡年费：普卡首年免年费，当年刷卡满六次免次年年费。",
    "个人住房贷款利率按贷款市场报价利率（LPR）加点确定。",
    "大额存单起存金额为20万元，可以转让，利率高于同期定期存款。",
    "网上银行转账手续费全免，单日限额可在手机银行中调整。",
]
IT = [
    "The office Wi-Fi password is rotated every Monday and posted at the reception desk.",
    "Laptops must be encrypted with full-disk encryption before they leave the office.",
    "Report phishing emails to the security team using the Report button in Outlook.",
    "VPN access requires two-factor authentication with the company authenticator app.",
    "Printer jams on the third floor are handled by the facilities help desk.",
]
CHINESE = {f"{100 + n}-0" for n in range(6, 12)}  # the HR base's Chinese documents
VACATION = "How many unused vacation days can I take into next year?"


def open_source(
    stores: StoreSettings,
    embed_model: BaseEmbedding,
    knowledge_id: int,
    texts: Sequence[str],
    embedding: ModelSpec = PACKAGED,
    dimension: int = 384,
) -> KnowledgeSource:
    """A knowledge base holding one single-chunk document per text, document ids
    ``knowledge_id * 100 + 1, + 2, ...``, each document on page 1 under a heading."""
    spec = KnowledgeSpec(
        knowledge_id=knowledge_id,
        collection_name=f"kb_{knowledge_id}_{uuid.uuid4().hex[:8]}",
        embedding=embedding,
    )
    index = KnowledgeIndex.open(spec, stores, dimension)
    tokenizer = build_tokenizer(embedding)
    for number, text in enumerate(texts, start=1):
        document_id = knowledge_id * 100 + number
        section = make_document(
            text, f"doc{document_id}.txt", page=1, heading_path=f"Handbook > {number}"
        )
        nodes = embed_document(
            spec, [section], document_id=document_id, embed_model=embed_model, tokenizer=tokenizer
        )
        index.replace_document(document_id, nodes)
    return KnowledgeSource(spec, index, embed_model)


def by_id(chunks: Sequence[RetrievedChunk]) -> dict[str, RetrievedChunk]:
    return {chunk.node_id: chunk for chunk in chunks}


class CountingEmbedding(BaseEmbedding):
    """Passes through to ``inner``, counting query embeddings."""

    _inner: BaseEmbedding = PrivateAttr()
    _queries: list[str] = PrivateAttr(default_factory=list)

    def __init__(self, inner: BaseEmbedding) -> None:
        super().__init__(model_name=inner.model_name)
        self._inner = inner

    def _get_query_embedding(self, query: str) -> Embedding:
        self._queries.append(query)
        return self._inner.get_query_embedding(query)

    async def _aget_query_embedding(self, query: str) -> Embedding:
        return self._get_query_embedding(query)

    def _get_text_embedding(self, text: str) -> Embedding:
        return self._inner.get_text_embedding(text)

    @property
    def queries(self) -> list[str]:
        return self._queries


@pytest.fixture(scope="module")
def model() -> BaseEmbedding:
    return build_embedding(PACKAGED)


@pytest.fixture(scope="module")
def stores(tmp_path_factory: pytest.TempPathFactory) -> StoreSettings:
    return StoreSettings(index_dir=tmp_path_factory.mktemp("retrieval"))


@pytest.fixture(scope="module")
def hr(stores: StoreSettings, model: BaseEmbedding) -> KnowledgeSource:
    return open_source(stores, model, 1, HR)


@pytest.fixture(scope="module")
def it(stores: StoreSettings, model: BaseEmbedding) -> KnowledgeSource:
    return open_source(stores, model, 2, IT)


def retriever(sources: Sequence[KnowledgeSource], **retrieval: Any) -> RobotRetriever:
    return build_retriever(RetrievalSpec(**retrieval), sources)


# --- the three modes -----------------------------------------------------------------------------


def test_vector_mode_finds_the_right_chunk_with_its_metadata(hr: KnowledgeSource) -> None:
    result = retriever([hr], mode="vector").search(VACATION)

    best = result.chunks[0]
    assert (best.node_id, best.knowledge_id, best.document_id) == ("101-0", 1, 101)
    assert (best.file_name, best.page, best.heading_path) == ("doc101.txt", 1, "Handbook > 1")
    assert best.text == HR[0]
    assert best.node.text == HR[0]
    # The stored node comes back whole: the LLM is not shown the bookkeeping ids.
    assert "document_id" in best.node.excluded_llm_metadata_keys
    assert result.mode == "vector"
    assert result.threshold_on == "similarity"
    for rank, chunk in enumerate(result.chunks, start=1):
        assert chunk.vector_rank == rank
        assert chunk.score == chunk.vector_score == chunk.similarity
        assert (chunk.keyword_rank, chunk.keyword_score, chunk.fused_score) == (None, None, None)
        assert chunk.rerank_score is None
    scores = [chunk.score for chunk in result.chunks]
    assert scores == sorted(scores, reverse=True)
    assert scores[0] > 0.7 > scores[1]


def test_keyword_mode_ranks_by_bm25_without_embedding(it: KnowledgeSource) -> None:
    result = retriever([it], mode="keyword").search("Wi-Fi password at the reception")

    assert result.chunks[0].node_id == "201-0"
    assert result.chunks[0].heading_path == "Handbook > 1"
    for rank, chunk in enumerate(result.chunks, start=1):
        assert chunk.keyword_rank == rank
        assert chunk.score == chunk.keyword_score
        assert chunk.keyword_score is not None
        assert chunk.keyword_score > 0
        assert (chunk.vector_rank, chunk.vector_score, chunk.similarity) == (None, None, None)
        assert chunk.fused_score is None
    assert result.timings_ms["embed"] == result.timings_ms["vector"] == 0.0
    assert result.timings_ms["keyword"] > 0


def test_hybrid_mode_fuses_both_legs_by_rrf(hr: KnowledgeSource) -> None:
    result = retriever([hr], top_k=3).search(VACATION)

    best = result.chunks[0]
    assert best.node_id == "101-0"
    assert (best.vector_rank, best.keyword_rank) == (1, 1)
    assert best.fused_score == pytest.approx(2 / 61)
    assert result.threshold_on == "similarity"
    for chunk in result.candidates:
        expected = sum(1 / (60 + r) for r in (chunk.vector_rank, chunk.keyword_rank) if r)
        assert chunk.fused_score == pytest.approx(expected)
        assert chunk.score == chunk.fused_score
    # Found by both legs beats found by one, even one that ranks it second.
    both = [c.node_id for c in result.candidates if c.vector_rank and c.keyword_rank]
    assert [c.node_id for c in result.candidates[: len(both)]] == both


def test_chinese_question_is_answered_through_the_keyword_leg(hr: KnowledgeSource) -> None:
    question = "活期存款利率是多少"
    hybrid = retriever([hr], top_k=3).search(question)

    right = by_id(hybrid.candidates)["107-0"]
    assert "活期存款利率" in right.text
    assert right.keyword_rank == 1
    assert "107-0" in [chunk.node_id for chunk in hybrid.chunks]
    # Why the keyword leg matters: the English model gives every Chinese chunk about the same
    # similarity (it cannot tell them apart), BM25 over jieba words separates the right one.
    others = [c for c in hybrid.candidates if c.node_id in CHINESE and c.node_id != "107-0"]
    assert max(c.vector_score or 0 for c in others) > (right.vector_score or 0) - 0.05
    assert (right.keyword_score or 0) > 2 * max(c.keyword_score or 0 for c in others)
    keyword = retriever([hr], mode="keyword").search(question)
    assert keyword.chunks[0].node_id == "107-0"


# --- several knowledge bases ---------------------------------------------------------------------


def test_two_knowledge_bases_are_searched_and_fused(
    hr: KnowledgeSource, it: KnowledgeSource
) -> None:
    result = retriever([hr, it], top_k=4).search("Who approves overtime and VPN access?")

    top_two = {(chunk.knowledge_id, chunk.node_id) for chunk in result.chunks[:2]}
    assert top_two == {(1, "105-0"), (2, "204-0")}
    for chunk in result.chunks[:2]:
        assert chunk.vector_score is not None
        assert chunk.keyword_score is not None
        assert chunk.fused_score is not None
        assert chunk.fused_score > 1 / 61
    # Ranks are over the pooled hits of both bases, by score: each rank is given once.
    for leg in ("vector", "keyword"):
        ranked = sorted(
            (c for c in result.candidates if getattr(c, f"{leg}_rank") is not None),
            key=lambda c: getattr(c, f"{leg}_rank"),
        )
        assert [getattr(c, f"{leg}_rank") for c in ranked] == list(range(1, len(ranked) + 1))
        scores = [getattr(c, f"{leg}_score") for c in ranked]
        assert scores == sorted(scores, reverse=True)
        assert {c.knowledge_id for c in ranked} == {1, 2}


def test_query_is_embedded_once_per_distinct_model(
    hr: KnowledgeSource,
    it: KnowledgeSource,
    model: BaseEmbedding,
    stores: StoreSettings,
    openai_server: OpenAIServer,
) -> None:
    counting = CountingEmbedding(model)
    local_sources = [KnowledgeSource(s.spec, s.index, counting) for s in (hr, it)]
    retriever(local_sources).search(VACATION)
    assert counting.queries == [VACATION]

    api = ModelSpec(
        provider="openai-compatible",
        model_name="test-embed",
        model_type="embedding",
        base_url=openai_server.base_url,
        api_key=DEFAULT_API_KEY,
    )
    api_source = open_source(stores, build_embedding(api), 3, IT[:3], embedding=api, dimension=64)
    openai_server.reset()
    result = retriever([*local_sources, api_source], mode="vector").search("Wi-Fi password")

    assert counting.queries == [VACATION, "Wi-Fi password"]
    assert len(openai_server.requests_to("/embeddings")) == 1
    assert {c.knowledge_id for c in result.chunks} == {1, 2, 3}
    assert "301-0" in by_id([c for c in result.chunks if c.knowledge_id == 3])
    api_source.index.drop()


# --- fusion --------------------------------------------------------------------------------------


def test_rrf_k_and_weighted_fusion_give_the_documented_scores(hr: KnowledgeSource) -> None:
    query = "the office desk and thirty days"
    rrf = retriever([hr], rrf_k=1, top_k=50).search(query)
    for chunk in rrf.candidates:
        expected = sum(1 / (1 + r) for r in (chunk.vector_rank, chunk.keyword_rank) if r)
        assert chunk.fused_score == pytest.approx(expected)

    weighted = retriever(
        [hr], fusion="weighted", vector_weight=0.6, keyword_weight=0.2, top_k=50
    ).search(query)
    chunks = weighted.candidates
    vector = min_max({c.node_id: c.vector_score for c in chunks if c.vector_score is not None})
    keyword = min_max({c.node_id: c.keyword_score for c in chunks if c.keyword_score is not None})
    assert set(keyword)
    assert max(keyword.values()) == 1.0
    for chunk in chunks:
        # Weights normalised to sum 1: 0.75 and 0.25.
        expected = 0.75 * vector.get(chunk.node_id, 0) + 0.25 * keyword.get(chunk.node_id, 0)
        assert chunk.fused_score == pytest.approx(expected)
        assert chunk.score == chunk.fused_score
    fused = [c.fused_score or 0 for c in chunks]
    assert fused == sorted(fused, reverse=True)
    # The legs' ranks and scores do not depend on the fusion.
    assert {c.node_id: (c.vector_rank, c.keyword_rank) for c in chunks} == {
        c.node_id: (c.vector_rank, c.keyword_rank) for c in rrf.candidates
    }


def test_weighted_fusion_needs_a_positive_weight(hr: KnowledgeSource) -> None:
    with pytest.raises(IndexesError, match="positive"):
        retriever([hr], fusion="weighted", vector_weight=0, keyword_weight=0)


# --- threshold -----------------------------------------------------------------------------------


def test_keyword_only_hits_get_the_similarity_of_their_stored_embedding(
    hr: KnowledgeSource, it: KnowledgeSource
) -> None:
    query = "Who approves overtime and VPN access?"
    narrow = retriever([hr, it], candidate_k=2, top_k=2).search(query)
    wide = retriever([hr, it], candidate_k=20, top_k=20, mode="vector").search(query)

    keyword_only = [c for c in narrow.candidates if c.vector_rank is None]
    assert keyword_only, "the query should reach a chunk through the keyword leg only"
    vector_scores = {c.node_id: c.vector_score for c in wide.chunks}
    for chunk in keyword_only:
        assert chunk.keyword_rank is not None
        assert chunk.vector_score is None
        assert chunk.similarity == pytest.approx(vector_scores[chunk.node_id], abs=1e-5)
    assert all(c.similarity is not None for c in narrow.candidates)


def test_threshold_drops_weak_chunks_and_leaves_fused_scores_alone(hr: KnowledgeSource) -> None:
    everything = retriever([hr], top_k=20, similarity_threshold=-1).search(VACATION)
    strict = retriever([hr], top_k=20, similarity_threshold=0.3).search(VACATION)

    assert len(everything.chunks) == len(HR)
    kept = {c.node_id for c in everything.chunks if (c.similarity or 0) >= 0.3}
    assert {c.node_id for c in strict.chunks} == kept
    assert "101-0" in kept
    assert len(kept) < len(HR)
    # A chunk that both legs found is dropped all the same when its similarity is low.
    assert any(c.keyword_rank and (c.similarity or 0) < 0.3 for c in everything.chunks)
    fused = {c.node_id: c.fused_score for c in everything.chunks}
    for chunk in strict.chunks:
        assert chunk.fused_score == fused[chunk.node_id]  # RRF scores untouched
        assert chunk.score == chunk.fused_score
    # The dropped chunks stay visible among the candidates.
    assert {c.node_id for c in strict.candidates} == {c.node_id for c in everything.candidates}
    assert strict.threshold_on == "similarity"


def test_threshold_applies_in_vector_mode(hr: KnowledgeSource) -> None:
    result = retriever([hr], mode="vector", top_k=20, similarity_threshold=0.3).search(VACATION)
    assert result.chunks
    assert all((c.vector_score or 0) >= 0.3 for c in result.chunks)
    assert len(result.chunks) < len(result.candidates)


def test_keyword_mode_ignores_the_threshold(it: KnowledgeSource) -> None:
    query = "office desk"
    loose = retriever([it], mode="keyword", similarity_threshold=-1).search(query)
    strict = retriever([it], mode="keyword", similarity_threshold=0.99).search(query)

    assert len(strict.chunks) >= 2
    assert [(c.node_id, c.score) for c in strict.chunks] == [
        (c.node_id, c.score) for c in loose.chunks
    ]
    assert strict.threshold_on is None


# --- limits, timings, interfaces, errors ---------------------------------------------------------


def test_top_k_and_candidate_k_are_honoured(hr: KnowledgeSource, it: KnowledgeSource) -> None:
    result = retriever([hr, it], mode="vector", candidate_k=3, top_k=2).search(VACATION)
    assert len(result.chunks) == 2
    assert len(result.candidates) == 6  # 3 per base
    assert sum(c.knowledge_id == 2 for c in result.candidates) == 3

    hybrid = retriever([hr], candidate_k=2, top_k=1).search(VACATION)
    assert len(hybrid.chunks) == 1
    assert sum(c.vector_rank is not None for c in hybrid.candidates) == 2
    assert sum(c.keyword_rank is not None for c in hybrid.candidates) <= 2

    # A per-search top_k larger than candidate_k deepens the legs to fill it.
    deeper = retriever([hr], mode="vector", candidate_k=2).search(VACATION, top_k=5)
    assert len(deeper.chunks) == 5
    # And the mode can be chosen per search too.
    assert retriever([hr]).search(VACATION, mode="keyword").mode == "keyword"


def test_timings_are_reported(hr: KnowledgeSource, it: KnowledgeSource) -> None:
    result = retriever([hr, it]).search(VACATION)
    timings = result.timings_ms
    assert tuple(timings) == STAGES
    assert all(value >= 0 for value in timings.values())
    assert timings["embed"] > 0
    assert timings["vector"] > 0
    assert timings["keyword"] > 0
    assert timings["rerank"] == 0.0
    parts = sum(value for stage, value in timings.items() if stage != "total")
    assert parts <= timings["total"]


def test_retrieve_gives_nodes_with_the_final_score(hr: KnowledgeSource) -> None:
    robot = retriever([hr], top_k=3)
    result = robot.search(VACATION)
    nodes = robot.retrieve(VACATION)

    assert all(isinstance(n, NodeWithScore) for n in nodes)
    assert [(n.node.node_id, n.score) for n in nodes] == [
        (c.node_id, c.score) for c in result.chunks
    ]


async def test_async_retrieval_matches_sync(hr: KnowledgeSource, it: KnowledgeSource) -> None:
    robot = retriever([hr, it], top_k=3)
    expected = [(c.node_id, c.score) for c in robot.search(VACATION).chunks]

    nodes = await robot.aretrieve(VACATION)
    result = await robot.asearch(VACATION)

    assert [(n.node.node_id, n.score) for n in nodes] == expected
    assert [(c.node_id, c.score) for c in result.chunks] == expected


def test_empty_query_or_no_knowledge_finds_nothing(hr: KnowledgeSource) -> None:
    assert retriever([hr]).search("   ").chunks == []
    assert retriever([]).search(VACATION).chunks == []


def test_bad_requests_are_refused(hr: KnowledgeSource) -> None:
    with pytest.raises(IndexesError, match="top_k"):
        retriever([hr]).search(VACATION, top_k=0)
    with pytest.raises(IndexesError, match="mode"):
        retriever([hr]).search(VACATION, mode="fuzzy")  # type: ignore[arg-type]
    with pytest.raises(IndexesError, match="twice"):
        retriever([hr, hr])


def test_vector_store_failure_is_a_store_error(stores: StoreSettings, model: BaseEmbedding) -> None:
    source = open_source(stores, model, 4, IT[:2])
    robot = retriever([source])
    assert robot.search("printer").candidates
    milvus = source.index.milvus
    milvus.client.drop_collection(milvus.collection_name)

    with pytest.raises(StoreError, match=r"knowledge base 4 .*does not exist") as caught:
        robot.search("printer")
    assert milvus.collection_name in str(caught.value)
    with pytest.raises(StoreError):
        robot.retrieve("printer")
    source.index.drop()


def test_keyword_store_failure_is_a_store_error(
    stores: StoreSettings, model: BaseEmbedding
) -> None:
    source = open_source(stores, model, 5, IT[:2])

    class Broken:
        def search(self, *args: Any, **kwargs: Any) -> Any:
            raise RuntimeError("disk on fire")

    source.index.keyword_store = Broken()  # type: ignore[assignment]
    with pytest.raises(StoreError, match=r"keyword index of knowledge base 5.*disk on fire"):
        retriever([source], mode="keyword").search("printer")
    source.index.milvus.drop()
