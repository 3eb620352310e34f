"""Vector and keyword stores of a knowledge base against real Milvus Lite, bm25s and jieba.

Embeddings are computed here (normalised hashed bags of jieba tokens): deterministic, and
similar texts get similar vectors, without a model. Elasticsearch runs only when
RAG_TEST_ES_URL points at one.
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import threading
import time
import uuid
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from llama_index.core.schema import TextNode
from llama_index.core.vector_stores.types import VectorStoreQuery

from indexes.errors import StoreError
from indexes.knowledge_index import KnowledgeIndex
from indexes.specs import KnowledgeSpec, ModelSpec, StoreSettings
from indexes.stores import BM25KeywordStore, KeywordStore
from indexes.tokenize import tokenize
from tests.conftest import require_service

DIM = 64
ES_URL = os.environ.get("RAG_TEST_ES_URL")

BANK_FAQ = [
    "定期存款利率：三年期为2.6%，五年期为2.75%，到期一次还本付息。",
    "活期存款利率为0.2%，按季结息，每季末月的20日为结息日。",
    "信用卡年费：普卡首年免年费，当年刷卡满六次免次年年费。",
    "个人住房贷款利率按贷款市场报价利率（LPR）加点确定。",
    "大额存单起存金额为20万元，可以转让，利率高于同期定期存款。",
    "网上银行转账手续费全免，单日限额可在手机银行中调整。",
]
ENGLISH = [
    "Milvus Lite stores vectors in a local directory and runs inside the Python process.",
    "Elasticsearch uses the IK analysis plugin to split Chinese text into words.",
    "The ingestion worker parses, splits and embeds each uploaded document.",
]


def embed(text: str) -> list[float]:
    """Hashed bag of tokens, L2-normalised (crc32: stable across processes)."""
    vector = np.zeros(DIM, dtype=np.float64)
    for token in tokenize(text) or [text]:
        vector[zlib.crc32(token.encode()) % DIM] += 1.0
    return (vector / np.linalg.norm(vector)).tolist()


def make_nodes(
    document_id: int,
    texts: list[str],
    *,
    positions: list[int] | None = None,
    embedded: bool = True,
    **extra: Any,
) -> list[TextNode]:
    positions = positions if positions is not None else list(range(len(texts)))
    return [
        TextNode(
            id_=f"{document_id}-{position}",
            text=text,
            embedding=embed(text) if embedded else None,
            metadata={
                "knowledge_id": 1,
                "document_id": document_id,
                "file_name": f"doc{document_id}.txt",
                "position": position,
                **extra,
            },
        )
        for position, text in zip(positions, texts, strict=True)
    ]


def make_spec(backend: str = "bm25", name: str | None = None) -> KnowledgeSpec:
    return KnowledgeSpec(
        knowledge_id=1,
        collection_name=name or f"kb_{uuid.uuid4().hex[:10]}",
        embedding=ModelSpec(
            provider="local", model_name="all-MiniLM-L6-v2", model_type="embedding", dimension=DIM
        ),
        keyword_backend=backend,
    )


@pytest.fixture(scope="module")
def es_url() -> str:
    # Not require_service alone: Elasticsearch cannot run on these machines and CI has none,
    # so an unset RAG_TEST_ES_URL skips even with RAG_REQUIRE_SERVICES=1. A URL that is set
    # but unreachable is a missing service like any other.
    if not ES_URL:
        pytest.skip("RAG_TEST_ES_URL is not set: no Elasticsearch to test against")
    from elasticsearch import Elasticsearch

    client = Elasticsearch(ES_URL, request_timeout=5)
    if not client.ping():
        require_service("Elasticsearch", ES_URL)
    return ES_URL


@pytest.fixture(scope="module")
def stores(tmp_path_factory: pytest.TempPathFactory) -> StoreSettings:
    """One Milvus Lite database for the module: collections are unique per test."""
    return StoreSettings(index_dir=tmp_path_factory.mktemp("index"), elasticsearch_url=ES_URL)


@pytest.fixture(params=["bm25", "milvus", "elasticsearch"])
def index(request: pytest.FixtureRequest, stores: StoreSettings) -> Iterator[KnowledgeIndex]:
    if request.param == "elasticsearch":
        request.getfixturevalue("es_url")
    knowledge = KnowledgeIndex.open(make_spec(request.param), stores, DIM)
    yield knowledge
    knowledge.drop()


def test_every_keyword_store_follows_the_protocol(index: KnowledgeIndex) -> None:
    assert isinstance(index.keyword_store, KeywordStore)


def test_replace_count_and_delete_by_document(index: KnowledgeIndex) -> None:
    index.replace_document(1, make_nodes(1, BANK_FAQ[:3]))
    index.replace_document(2, make_nodes(2, BANK_FAQ[3:5]))
    assert (index.count(), index.count(1), index.count(2)) == (5, 3, 2)
    assert index.keyword_store.count() == 5

    # A shorter new version: the old third chunk must not survive.
    index.replace_document(1, make_nodes(1, BANK_FAQ[:2]))
    assert (index.count(1), index.keyword_store.count(1)) == (2, 2)
    assert index.keyword_store.search("信用卡年费", 5) == []

    index.delete_document(2)
    assert (index.count(2), index.keyword_store.count(2), index.count()) == (0, 0, 2)
    index.delete_document(99)  # unknown document: nothing to do, no error
    assert index.count() == 2
    index.replace_document(1, [])  # a document that now has no text: a delete
    assert (index.count(), index.keyword_store.count()) == (0, 0)


def test_readding_the_same_document_replaces_it(index: KnowledgeIndex) -> None:
    nodes = make_nodes(7, ENGLISH)
    index.replace_document(7, nodes)
    index.replace_document(7, nodes)
    assert (index.count(), index.keyword_store.count()) == (3, 3)
    hits = index.keyword_store.search("Milvus Lite vectors", 10)
    assert [hit.node_id for hit in hits].count("7-0") == 1


def test_several_documents_replaced_in_one_write(index: KnowledgeIndex) -> None:
    index.replace_document(1, make_nodes(1, BANK_FAQ[:3]))
    index.replace_document(9, make_nodes(9, ["untouched by the batch"]))
    # One call: document 1 shrinks to one chunk, 2 and 3 are new, 4 has no text (a delete).
    index.replace_documents(
        {
            1: make_nodes(1, BANK_FAQ[:1]),
            2: make_nodes(2, BANK_FAQ[3:5]),
            3: make_nodes(3, ENGLISH),
            4: [],
        }
    )
    counts = [(index.count(d), index.keyword_store.count(d)) for d in (1, 2, 3, 4, 9)]
    assert counts == [(1, 1), (2, 2), (3, 3), (0, 0), (1, 1)]
    index.delete_documents([2, 3, 77])
    assert (index.count(), index.keyword_store.count()) == (2, 2)
    assert [c.text for c in index.list_chunks(1, 0, 10)[0]] == BANK_FAQ[:1]


def test_chinese_keyword_search_finds_the_chunk_through_jieba_words(
    index: KnowledgeIndex,
) -> None:
    index.replace_document(1, make_nodes(1, BANK_FAQ))
    index.replace_document(2, make_nodes(2, ENGLISH))

    hits = index.keyword_store.search("活期存款利率是多少", 3)

    assert hits[0].node_id == "1-1"
    assert "活期存款利率" in hits[0].text
    assert hits[0].metadata["document_id"] == 1
    assert hits[0].metadata["file_name"] == "doc1.txt"
    assert all(hits[i].score >= hits[i + 1].score > 0 for i in range(len(hits) - 1))
    # Filtering by document: the right chunk is out of reach when its document is excluded.
    assert all(hit.node_id != "1-1" for hit in index.keyword_store.search("活期存款", 5, [2]))
    assert index.keyword_store.search("活期存款", 5, []) == []


def test_english_keyword_search(index: KnowledgeIndex) -> None:
    index.replace_document(1, make_nodes(1, BANK_FAQ))
    index.replace_document(2, make_nodes(2, ENGLISH))

    hits = index.keyword_store.search("Which analysis plugin splits Chinese?", 2)

    assert hits[0].node_id == "2-1"
    assert index.keyword_store.search("", 5) == []
    assert index.keyword_store.search("zyxwvut", 5) == []


def test_drop_removes_collection_and_files(stores: StoreSettings) -> None:
    spec = make_spec("bm25")
    knowledge = KnowledgeIndex.open(spec, stores, DIM)
    knowledge.replace_document(1, make_nodes(1, BANK_FAQ[:2]))
    assert knowledge.keyword_store.search("定期存款", 1)  # builds and saves the bm25s index
    bm25_dir = stores.bm25_dir / spec.collection_name
    assert (bm25_dir / "corpus.sqlite").exists()
    assert spec.collection_name in knowledge.milvus.client.list_collections()

    knowledge.drop()

    assert not bm25_dir.exists()
    assert spec.collection_name not in knowledge.milvus.client.list_collections()


def test_drop_removes_the_milvus_full_text_collection(stores: StoreSettings) -> None:
    spec = make_spec("milvus")
    knowledge = KnowledgeIndex.open(spec, stores, DIM)
    knowledge.replace_document(1, make_nodes(1, BANK_FAQ[:2]))
    knowledge.drop()
    assert spec.collection_name not in knowledge.milvus.client.list_collections()
    assert not (stores.bm25_dir / spec.collection_name).exists()


@pytest.mark.parametrize("backend", ["bm25", "milvus"])
def test_list_chunks_in_position_order_with_paging(stores: StoreSettings, backend: str) -> None:
    knowledge = KnowledgeIndex.open(make_spec(backend), stores, DIM)
    positions = [(i * 7) % 25 for i in range(25)]  # written out of order
    texts = [f"chunk number {p}" for p in positions]
    knowledge.replace_document(3, make_nodes(3, texts, positions=positions, page=2))
    knowledge.replace_document(4, make_nodes(4, ["another document"]))

    first, total = knowledge.list_chunks(3, 0, 10)
    second, _ = knowledge.list_chunks(3, 10, 10)
    last, _ = knowledge.list_chunks(3, 20, 10)

    assert total == 25
    assert [c.position for c in first + second + last] == list(range(25))
    assert [c.node_id for c in first[:2]] == ["3-0", "3-1"]
    assert first[1].text == "chunk number 1"
    assert first[1].document_id == 3
    assert first[1].metadata == {
        "knowledge_id": 1,
        "document_id": 3,
        "file_name": "doc3.txt",
        "position": 1,
        "page": 2,
    }
    assert knowledge.list_chunks(3, 30, 10) == ([], 25)
    assert knowledge.list_chunks(5, 0, 10) == ([], 0)
    knowledge.drop()


def test_vector_store_answers_llama_index_queries(stores: StoreSettings) -> None:
    knowledge = KnowledgeIndex.open(make_spec("milvus"), stores, DIM)
    knowledge.replace_document(1, make_nodes(1, BANK_FAQ, heading_path="存款 > 利率"))
    knowledge.replace_document(2, make_nodes(2, ENGLISH))

    result = knowledge.vector_store.query(
        VectorStoreQuery(query_embedding=embed(BANK_FAQ[1]), similarity_top_k=3)
    )
    assert result.ids is not None
    assert result.similarities is not None
    assert result.ids[0] == "1-1"
    # Cosine: identical vectors score 1.0, higher is better.
    assert result.similarities[0] == pytest.approx(1.0, abs=1e-4)
    assert result.similarities[0] >= result.similarities[1]
    assert result.nodes is not None
    node = result.nodes[0]
    assert node.ref_doc_id == "1"
    assert node.metadata["heading_path"] == "存款 > 利率"
    assert node.metadata["document_id"] == 1

    only_second = knowledge.vector_store.query(
        VectorStoreQuery(query_embedding=embed(BANK_FAQ[1]), similarity_top_k=3, doc_ids=["2"])
    )
    assert only_second.ids
    assert all(node_id.startswith("2-") for node_id in only_second.ids)
    knowledge.drop()


def test_two_knowledge_bases_in_one_database_do_not_see_each_other(
    stores: StoreSettings,
) -> None:
    a = KnowledgeIndex.open(make_spec("milvus"), stores, DIM)
    b = KnowledgeIndex.open(make_spec("bm25"), stores, DIM)
    a.replace_document(1, make_nodes(1, BANK_FAQ))
    b.replace_document(1, make_nodes(1, ENGLISH))

    assert (a.count(), b.count()) == (6, 3)
    assert a.keyword_store.search("Milvus Lite", 5) == []
    assert b.keyword_store.search("活期存款", 5) == []
    query = VectorStoreQuery(query_embedding=embed(ENGLISH[0]), similarity_top_k=10)
    a_texts = {node.get_content() for node in a.vector_store.query(query).nodes or []}
    assert a_texts <= set(BANK_FAQ)

    a.drop()
    assert b.count() == 3
    assert b.keyword_store.search("Milvus Lite", 5)[0].node_id == "1-0"
    b.drop()


def test_bm25_index_is_reloaded_not_rebuilt_after_a_restart(stores: StoreSettings) -> None:
    spec = make_spec("bm25")
    first = KnowledgeIndex.open(spec, stores, DIM)
    first.replace_document(1, make_nodes(1, BANK_FAQ))
    store = first.keyword_store
    assert isinstance(store, BM25KeywordStore)

    assert store.search("活期存款", 1)[0].node_id == "1-1"
    assert store.last_index_source == "built"
    store.search("定期存款", 1)
    assert store.last_index_source == "memory"

    # A new process would start with nothing in memory: a new store object models that.
    restarted = BM25KeywordStore.open(stores.bm25_dir, spec.collection_name)
    assert restarted.search("活期存款", 1)[0].node_id == "1-1"
    assert restarted.last_index_source == "disk"

    # A write by anyone (here the other object) makes every reader rebuild once.
    first.replace_document(2, make_nodes(2, ENGLISH))
    assert restarted.search("ingestion worker", 1)[0].node_id == "2-2"
    assert restarted.last_index_source == "built"
    assert store.search("ingestion worker", 1)[0].node_id == "2-2"
    assert store.last_index_source == "disk"
    index_dirs = list((stores.bm25_dir / spec.collection_name / "index").iterdir())
    assert len(index_dirs) == 1  # older versions are cleaned up
    first.drop()


def test_milvus_data_survives_a_restart(tmp_path: Path) -> None:
    # Milvus Lite is one in-process server per database, so only another process can show
    # what reaches the disk: it writes and exits, then this process reads.
    index_dir = tmp_path / "index"
    code = (
        "import sys, pathlib\n"
        "from indexes.knowledge_index import KnowledgeIndex\n"
        "from indexes.specs import StoreSettings\n"
        "from tests.integration.test_stores import BANK_FAQ, DIM, make_nodes, make_spec\n"
        "stores = StoreSettings(index_dir=pathlib.Path(sys.argv[1]))\n"
        "for backend in ('milvus', 'bm25'):\n"
        "    knowledge = KnowledgeIndex.open(make_spec(backend, 'kb_' + backend), stores, DIM)\n"
        "    knowledge.replace_document(5, make_nodes(5, BANK_FAQ))\n"
    )
    subprocess.run(
        [sys.executable, "-c", code, str(index_dir)],
        check=True,
        capture_output=True,
        cwd=Path(__file__).resolve().parents[2],
    )
    stores = StoreSettings(index_dir=index_dir)
    for backend in ("milvus", "bm25"):
        knowledge = KnowledgeIndex.open(make_spec(backend, f"kb_{backend}"), stores, DIM)
        assert knowledge.count(5) == 6
        assert knowledge.keyword_store.search("活期存款利率", 1)[0].node_id == "5-1"
        chunks, total = knowledge.list_chunks(5, 0, 2)
        assert total == 6
        assert [c.text for c in chunks] == BANK_FAQ[:2]
        # This process learns which documents the other one stored (Lite skips deletes for
        # documents without rows): a new version replaces all six old chunks.
        knowledge.replace_document(5, make_nodes(5, BANK_FAQ[:2]))
        assert (knowledge.count(5), knowledge.keyword_store.count(5)) == (2, 2)
        knowledge.delete_document(5)
        assert (knowledge.count(), knowledge.keyword_store.count()) == (0, 0)


def test_lite_deletes_nothing_for_documents_without_chunks(
    stores: StoreSettings, monkeypatch: pytest.MonkeyPatch
) -> None:
    knowledge = index_with_two_documents(stores, "milvus")
    deletes: list[str] = []
    client = knowledge.milvus.client
    real_delete = client.delete

    def counting_delete(collection_name: str, **kwargs: Any) -> Any:
        deletes.append(str(kwargs.get("filter")))
        return real_delete(collection_name, **kwargs)

    monkeypatch.setattr(client, "delete", counting_delete)
    knowledge.replace_document(3, make_nodes(3, BANK_FAQ[:2]))  # new: nothing to delete
    assert deletes == []
    knowledge.replace_documents({2: make_nodes(2, ["version three"]), 4: make_nodes(4, ["new"])})
    assert deletes == ['doc_id in ["2"]']  # only the document that had chunks
    knowledge.delete_documents([1, 3])
    knowledge.delete_document(3)  # deleted already: nothing to do
    assert deletes == ['doc_id in ["2"]', 'doc_id in ["1","3"]']
    assert [knowledge.count(d) for d in (1, 2, 3, 4)] == [0, 1, 0, 1]
    knowledge.drop()


def index_with_two_documents(stores: StoreSettings, backend: str) -> KnowledgeIndex:
    """Document 1 (three English chunks) and an old one-chunk version of document 2."""
    knowledge = KnowledgeIndex.open(make_spec(backend), stores, DIM)
    knowledge.replace_document(1, make_nodes(1, ENGLISH))
    knowledge.replace_document(2, make_nodes(2, ["an old version of document two"]))
    return knowledge


@pytest.mark.parametrize("backend", ["bm25", "milvus"])
def test_a_failed_vector_write_leaves_no_partial_document_anywhere(
    stores: StoreSettings, backend: str
) -> None:
    knowledge = index_with_two_documents(stores, backend)
    # 120 chunks: llama-index inserts 100 per batch, so Milvus has stored the first batch
    # when it rejects the second, whose chunk 110 has a vector of the wrong dimension.
    texts = [f"银行 存款 利率 说明 第{i}条" for i in range(120)]
    nodes = make_nodes(2, texts)
    nodes[110].embedding = [0.1] * (DIM + 3)

    with pytest.raises(StoreError, match=r"document 2|dim"):
        knowledge.replace_document(2, nodes)

    assert (knowledge.count(2), knowledge.keyword_store.count(2)) == (0, 0)
    assert knowledge.keyword_store.search("存款 利率", 5) == []
    assert knowledge.list_chunks(2, 0, 10) == ([], 0)
    assert (knowledge.count(1), knowledge.keyword_store.count(1)) == (3, 3)

    nodes[110].embedding = embed(texts[110])
    knowledge.replace_document(2, nodes)
    assert (knowledge.count(2), knowledge.keyword_store.count(2)) == (120, 120)
    knowledge.drop()


@pytest.mark.parametrize("backend", ["bm25", "milvus"])
def test_a_failed_batch_write_leaves_none_of_its_documents_anywhere(
    stores: StoreSettings, backend: str
) -> None:
    knowledge = index_with_two_documents(stores, backend)
    batch = {
        2: make_nodes(2, [f"银行 存款 利率 第{i}条" for i in range(60)]),
        3: make_nodes(3, [f"credit card fee rule {i}" for i in range(60)]),
    }
    batch[3][50].embedding = [0.1] * (DIM + 3)  # Milvus rejects the second insert batch

    with pytest.raises(StoreError, match=r"documents 2, 3|dim"):
        knowledge.replace_documents(batch)

    for document_id in (2, 3):
        assert (knowledge.count(document_id), knowledge.keyword_store.count(document_id)) == (
            0,
            0,
        )
    assert (knowledge.count(1), knowledge.keyword_store.count(1)) == (3, 3)
    batch[3][50].embedding = embed("credit card fee rule 50")
    knowledge.replace_documents(batch)
    assert (knowledge.count(), knowledge.keyword_store.count()) == (123, 123)
    knowledge.drop()


def test_the_raw_vector_store_does_leave_a_partial_document(stores: StoreSettings) -> None:
    """The premise of the test above, and replace_document cleaning up such leftovers."""
    knowledge = KnowledgeIndex.open(make_spec("milvus"), stores, DIM)
    nodes = make_nodes(3, [f"chunk {i}" for i in range(120)])
    good = nodes[110].embedding
    nodes[110].embedding = [0.1] * (DIM + 3)
    with pytest.raises(StoreError):
        knowledge.milvus.add(nodes)
    assert knowledge.count(3) == 100

    nodes[110].embedding = good
    knowledge.replace_document(3, nodes)
    assert knowledge.count(3) == 120
    assert len({c.node_id for c in knowledge.list_chunks(3, 0, 200)[0]}) == 120
    knowledge.drop()


def test_a_collection_dropped_underneath_fails_readably_and_leaves_no_keyword_chunks(
    stores: StoreSettings,
) -> None:
    spec = make_spec("bm25")
    knowledge = KnowledgeIndex.open(spec, stores, DIM)
    knowledge.replace_document(1, make_nodes(1, ENGLISH))
    knowledge.milvus.client.drop_collection(spec.collection_name)

    with pytest.raises(StoreError, match=f"Milvus failed .* {spec.collection_name}"):
        knowledge.replace_document(1, make_nodes(1, ENGLISH))
    assert knowledge.keyword_store.count(1) == 0

    reopened = KnowledgeIndex.open(spec, stores, DIM)  # recreates the collection
    reopened.replace_document(1, make_nodes(1, ENGLISH))
    assert (reopened.count(1), reopened.keyword_store.count(1)) == (3, 3)
    reopened.drop()


def test_chunks_of_another_document_are_refused(stores: StoreSettings) -> None:
    knowledge = KnowledgeIndex.open(make_spec("bm25"), stores, DIM)
    with pytest.raises(StoreError, match="belongs to document 2"):
        knowledge.replace_document(1, make_nodes(2, ENGLISH))
    assert knowledge.count() == 0
    knowledge.drop()


def test_reopening_with_another_dimension_is_refused(stores: StoreSettings) -> None:
    spec = make_spec("bm25")
    KnowledgeIndex.open(spec, stores, DIM)
    with pytest.raises(StoreError, match=f"{DIM}-dimensional .* gives 8"):
        KnowledgeIndex.open(spec, stores, 8)
    KnowledgeIndex.open(spec, stores, DIM).drop()


def test_switching_an_existing_collection_to_milvus_full_text_is_refused(
    stores: StoreSettings,
) -> None:
    spec = make_spec("bm25")
    KnowledgeIndex.open(spec, stores, DIM)
    with pytest.raises(StoreError, match="without full-text search"):
        KnowledgeIndex.open(spec.model_copy(update={"keyword_backend": "milvus"}), stores, DIM)
    KnowledgeIndex.open(spec, stores, DIM).drop()


def test_invalid_collection_name_is_refused(stores: StoreSettings) -> None:
    with pytest.raises(StoreError, match="Invalid collection name"):
        KnowledgeIndex.open(make_spec("bm25", "kb-with-dash"), stores, DIM)


def test_unreachable_milvus_server_is_a_readable_store_error(tmp_path: Path) -> None:
    stores = StoreSettings(index_dir=tmp_path, milvus_uri="http://127.0.0.1:1")
    with pytest.raises(StoreError, match=r"Milvus is not reachable at http://127\.0\.0\.1:1"):
        KnowledgeIndex.open(make_spec("bm25"), stores, DIM)


def test_unreachable_elasticsearch_is_a_readable_store_error(tmp_path: Path) -> None:
    stores = StoreSettings(index_dir=tmp_path, elasticsearch_url="http://127.0.0.1:1")
    with pytest.raises(
        StoreError, match=r"Elasticsearch is not reachable at http://127\.0\.0\.1:1"
    ):
        KnowledgeIndex.open(make_spec("elasticsearch"), stores, DIM)
    with pytest.raises(StoreError, match="needs an Elasticsearch URL"):
        KnowledgeIndex.open(make_spec("elasticsearch"), StoreSettings(index_dir=tmp_path), DIM)


def test_bm25_writes_from_many_threads(tmp_path: Path) -> None:
    store = BM25KeywordStore.open(tmp_path, "kb_threads")
    errors: list[BaseException] = []

    def write(first: int) -> None:
        try:
            for document_id in range(first, first + 10):
                store.delete_documents([document_id])
                store.add(make_nodes(document_id, [f"thread text {document_id} 存款"] * 3))
                store.search("存款", 3)
        except BaseException as exc:  # collected and re-raised in the main thread
            errors.append(exc)

    threads = [threading.Thread(target=write, args=(n * 10,)) for n in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert store.count() == 120
    assert len(store.search("存款", 200)) == 120


def test_bm25_writes_one_document_at_a_time_are_not_quadratic(tmp_path: Path) -> None:
    store = BM25KeywordStore.open(tmp_path, "kb_scale")
    documents = [  # 5,000 chunks, 10 per document; the BM25 store needs no embeddings
        make_nodes(
            d, [f"第{d}号文件 第{i}段 存款利率 deposit rate {i}" for i in range(10)], embedded=False
        )
        for d in range(500)
    ]
    timings: list[float] = []
    for document_id, nodes in enumerate(documents):
        t0 = time.perf_counter()
        store.delete_documents([document_id])
        store.add(nodes)
        timings.append(time.perf_counter() - t0)
    t0 = time.perf_counter()
    hits = store.search("第499号文件 存款利率", 5)
    first_search = time.perf_counter() - t0
    early, late = statistics.median(timings[:50]), statistics.median(timings[-50:])
    print(
        f"\nBM25: 5,000 chunks written one 10-chunk document at a time in {sum(timings):.2f} s; "
        f"median per document: first 50 {early * 1000:.1f} ms, last 50 {late * 1000:.1f} ms; "
        f"first search (rebuild) {first_search:.3f} s"
    )
    assert store.count() == 5000
    assert hits[0].metadata["document_id"] == 499
    # Linear: a write costs the same with 4,900 chunks stored as with none (medians: robust
    # to a busy CI machine; quadratic growth would make the last ones ~10x slower).
    assert late < 3 * early + 0.005
