"""One Milvus collection per knowledge base: dense vectors, and optionally full-text BM25.

Writes go through llama-index's ``MilvusVectorStore`` so that its retrieval (dense and hybrid
query modes) reads exactly what we wrote. Collection layout (created by that class):

- ``id`` (VARCHAR primary key): the node id, ``"{document_id}-{position}"``;
- ``doc_id`` (VARCHAR): ``str(document_id)``. llama-index fills it from ``node.ref_doc_id`` and
  filters on it for ``VectorStoreQuery.doc_ids`` and ``delete()``, so we make every stored
  chunk's ref_doc_id the document id and delete with ``doc_id == "<id>"``. (A scalar INT64
  ``document_id`` field is impossible through llama-index: ``node_to_metadata_dict``
  overwrites ``metadata["document_id"]`` with ``ref_doc_id`` as a string.)
- ``position`` (INT64): chunk order within the document, for listing;
- ``text`` (VARCHAR): with full text on, analysed by jieba and fed to a BM25 function
  that fills ``sparse_embedding`` (SPARSE_INVERTED_INDEX, metric BM25);
- ``embedding`` (FLOAT_VECTOR, AUTOINDEX, metric COSINE): cosine similarity in [-1, 1],
  higher is better, whatever the provider's normalisation, so one similarity threshold means
  the same for every embedding model. (IP would equal it only for unit vectors.)
- dynamic JSON: the rest of the metadata and ``_node_content`` (the serialised node).

Milvus Lite (``uri`` a ``.db`` path) runs in-process, one server per path shared by every
client of the process (milvus_lite's ServerManager), and pymilvus pools one connection per
address: many collections in one process need nothing more. Lite searches unflushed rows
slowly (~55 ms against 4–10 ms flushed, RUNTIME-NOTES), so its writes are flushed, but once a
second rather than after every document; a Milvus server rate-limits flush (0.1/s per
collection by default) and searches growing segments anyway, so not there. What else a Lite
collection needs from its writers is in :mod:`indexes.stores.milvus_lite`.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Collection, Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager, nullcontext
from pathlib import Path
from typing import Any

import grpc
from llama_index.core.schema import BaseNode, NodeRelationship, RelatedNodeInfo
from llama_index.core.vector_stores.utils import metadata_dict_to_node
from llama_index.vector_stores.milvus import MilvusVectorStore
from llama_index.vector_stores.milvus.utils import BM25BuiltInFunction
from pymilvus import DataType, MilvusClient
from pymilvus.client.types import LoadState, Status
from pymilvus.exceptions import MilvusException

from indexes.errors import StoreError
from indexes.specs import StoreSettings
from indexes.stores.base import (
    Chunk,
    KeywordHit,
    documents_label,
    node_document_id,
    node_position,
)
from indexes.stores.milvus_lite import lite_collection
from indexes.tokenize import configure_jieba

logger = logging.getLogger(__name__)

TEXT_FIELD = "text"
SPARSE_FIELD = "sparse_embedding"
EMBEDDING_FIELD = "embedding"
# Lite rejects any other drop_ratio_search (llama-index's sparse mode hard-codes 0.2).
BM25_SEARCH_PARAMS: dict[str, Any] = {"metric_type": "BM25", "params": {"drop_ratio_search": 0}}
_COLLECTION_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,254}")
# Milvus caps offset + limit of one query at 16,384 rows; longer documents are paged through
# a query iterator (which on Lite logs a harmless warning per call).
_QUERY_WINDOW = 16_384
_NODE_FIELDS = ["id", "doc_id", "position", TEXT_FIELD, "_node_content", "_node_type"]


def document_filter(document_ids: Collection[int]) -> str:
    """Milvus boolean expression selecting these documents' chunks."""
    quoted = ",".join(f'"{int(d)}"' for d in document_ids)
    return f"doc_id in [{quoted}]"


def _with_document_source(node: BaseNode) -> BaseNode:
    """The node with ref_doc_id = its document id, which fills the ``doc_id`` field."""
    document_id = str(node_document_id(node))
    if node.ref_doc_id == document_id:
        return node
    source = node.relationships.get(NodeRelationship.SOURCE)
    copy = node.model_copy()
    copy.relationships = {
        **node.relationships,
        NodeRelationship.SOURCE: RelatedNodeInfo(
            node_id=document_id,
            metadata=source.metadata if isinstance(source, RelatedNodeInfo) else {},
        ),
    }
    return copy


class MilvusStore:
    """The Milvus collection of one knowledge base."""

    def __init__(self, vector_store: MilvusVectorStore, uri: str, full_text: bool) -> None:
        self.vector_store = vector_store
        self.uri = uri
        self.full_text = full_text
        self.collection_name = vector_store.collection_name
        self.is_lite = uri.endswith(".db")
        self._lite = lite_collection(uri, self.collection_name) if self.is_lite else None
        # A Milvus server orders concurrent writes itself.
        self._writing: AbstractContextManager[object] = (
            self._lite.write_lock if self._lite is not None else nullcontext()
        )

    @classmethod
    def open(
        cls,
        stores: StoreSettings,
        collection_name: str,
        dimension: int,
        *,
        full_text: bool = False,
        batch_size: int = 100,
        timeout: float = 10.0,
    ) -> MilvusStore:
        """Open (creating if needed) the collection; check it fits ``dimension``/``full_text``."""
        # A Milvus server enforces this; Lite does not, so check here to fail the same way.
        if not _COLLECTION_NAME.fullmatch(collection_name):
            raise StoreError(
                f"Invalid collection name {collection_name!r}: use letters, digits and "
                "underscores, starting with a letter or underscore (at most 255)."
            )
        token = ""
        options: dict[str, Any] = {}
        if stores.milvus_uri:
            uri, where = stores.milvus_uri, stores.milvus_uri
            if stores.milvus_token is not None:
                token = stores.milvus_token.get_secret_value()
        else:
            path = stores.milvus_lite_path
            uri, where = str(path), f"Milvus Lite database {path}"
            # pymilvus pings every 10 s even while idle; Milvus Lite's gRPC server counts idle
            # pings as abuse and drops the connection ("Too many pings") after ~30 s idle, and a
            # reconnect can then lose a race with the next call. A loopback server needs no
            # keepalive: ping only during calls, and rarely.
            options = {
                "grpc_options": {
                    "grpc.keepalive_time_ms": 300_000,
                    "grpc.keepalive_permit_without_calls": False,
                }
            }
            try:
                path.parent.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise StoreError(f"Cannot create the index directory {path.parent}: {exc}") from exc
        # Milvus Lite's jieba analyzer shares jieba's global dictionary: keep its cache ours.
        configure_jieba(Path(stores.index_dir) / "jieba")
        sparse: dict[str, Any] = {}
        if full_text:
            sparse = {
                "enable_sparse": True,
                "sparse_embedding_field": SPARSE_FIELD,
                "sparse_embedding_function": BM25BuiltInFunction(
                    input_field_names=TEXT_FIELD,
                    output_field_names=SPARSE_FIELD,
                    analyzer_params={"tokenizer": "jieba"},
                ),
            }
        try:
            vector_store = MilvusVectorStore(
                uri=uri,
                token=token,
                collection_name=collection_name,
                dim=dimension,
                embedding_field=EMBEDDING_FIELD,
                text_key=TEXT_FIELD,
                similarity_metric="COSINE",
                index_config={"index_type": "AUTOINDEX"},
                scalar_field_names=["position"],
                scalar_field_types=[DataType.INT64],
                # Strong: the API process counts and lists chunks a worker process has just
                # written; milliseconds more per search, against an LLM call of seconds.
                consistency_level="Strong",
                batch_size=batch_size,
                timeout=timeout,
                **sparse,
                **options,
            )
        except MilvusException as exc:
            if exc.code == Status.CONNECT_FAILED:
                raise StoreError(f"Milvus is not reachable at {where}: {exc.message}") from exc
            raise StoreError(
                f"Milvus at {where} could not open collection {collection_name}: {exc.message}"
            ) from exc
        except grpc.RpcError as exc:
            raise StoreError(f"Milvus is not reachable at {where}: {exc}") from exc
        store = cls(vector_store, uri, full_text)
        store._check_schema(dimension)
        store._load()
        return store

    @property
    def client(self) -> MilvusClient:
        return self.vector_store.client

    @contextmanager
    def _translate(self, action: str) -> Iterator[None]:
        try:
            yield
        except MilvusException as exc:
            raise StoreError(
                f"Milvus failed to {action} in collection {self.collection_name}: {exc.message}"
            ) from exc
        except grpc.RpcError as exc:  # the codes pymilvus does not retry come through raw
            raise StoreError(
                f"Milvus at {self.uri} failed to {action} in collection "
                f"{self.collection_name}: {exc}"
            ) from exc

    def _check_schema(self, dimension: int) -> None:
        with self._translate("describe the collection"):
            info = self.client.describe_collection(self.collection_name)
        fields = {field["name"]: field for field in info["fields"]}
        dim = fields.get(EMBEDDING_FIELD, {}).get("params", {}).get("dim")
        if dim is not None and int(dim) != dimension:
            raise StoreError(
                f"Collection {self.collection_name} holds {dim}-dimensional vectors but the "
                f"embedding model gives {dimension}: re-index the knowledge base."
            )
        if self.full_text and SPARSE_FIELD not in fields:
            raise StoreError(
                f"Collection {self.collection_name} was created without full-text search: "
                "re-index the knowledge base to use the Milvus keyword backend."
            )

    def _load(self) -> None:
        # An existing collection comes back released after a restart (always on Lite), and
        # MilvusVectorStore only loads the collections it creates.
        with self._translate("load the collection"):
            state = self.client.get_load_state(self.collection_name).get("state")
            if state != LoadState.Loaded:
                self.client.load_collection(self.collection_name)

    def _written(self) -> None:
        """After a write, under the write lock: schedule the Lite flush."""
        if self._lite is not None:
            client, name = self.client, self.collection_name
            self._lite.flusher.written(lambda: client.flush(name))

    def _stored_documents(self) -> list[int] | None:
        """Every document with rows in the collection (read once per process, on Lite), or
        None for a collection too large for one query: Lite answers a query iterator with an
        error it logs (no AllocTimestamp), which every process's first write would show."""
        rows = self.client.query(
            self.collection_name,
            filter='doc_id != ""',
            output_fields=["doc_id"],
            limit=_QUERY_WINDOW,
        )
        if len(rows) >= _QUERY_WINDOW:
            return None
        return [int(row["doc_id"]) for row in rows]

    def flush_pending(self) -> None:
        """Before a search: flush rows still waiting for the debounced Lite flush."""
        if self._lite is not None:
            with self._translate("flush"):
                self._lite.flusher.flush_pending()

    def add(self, nodes: Sequence[BaseNode]) -> None:
        prepared = [_with_document_source(node) for node in nodes]
        for node in prepared:
            node_position(node)  # position is a schema field: fail before writing anything
            if node.embedding is None:
                raise StoreError(f"Chunk {node.node_id} has no embedding.")
        if not prepared:
            return
        with self._writing, self._translate("store chunks"):
            if self._lite is not None:
                self._lite.documents.load(self._stored_documents)
                self._lite.documents.writing(node_document_id(node) for node in prepared)
            self.vector_store.add(prepared)
            self._written()

    def delete_documents(self, document_ids: Collection[int]) -> None:
        if not document_ids:
            return
        action = f"delete the chunks of {documents_label(document_ids)}"
        with self._writing, self._translate(action):
            if self._lite is not None:
                self._lite.documents.load(self._stored_documents)
                document_ids = self._lite.documents.present(document_ids)
                if not document_ids:
                    return  # none has rows: a new document (see LiteDocuments)
            self.client.delete(self.collection_name, filter=document_filter(document_ids))
            self._written()
            if self._lite is not None:
                self._lite.documents.deleted(document_ids)

    def drop(self) -> None:
        with self._writing, self._translate("drop the collection"):
            if self._lite is not None:
                self._lite.flusher.forget()
                self._lite.documents.forget()
            if self.client.has_collection(self.collection_name):
                self.client.drop_collection(self.collection_name)

    def count(self, document_id: int | None = None) -> int:
        expr = "" if document_id is None else document_filter([document_id])
        self.flush_pending()
        with self._translate("count chunks"):
            rows = self.client.query(self.collection_name, filter=expr, output_fields=["count(*)"])
        return int(rows[0]["count(*)"]) if rows else 0

    def list_chunks(self, document_id: int, offset: int, limit: int) -> tuple[list[Chunk], int]:
        """One page of a document's chunks in position order, and the document's chunk count."""
        with self._translate(f"list the chunks of document {document_id}"):
            # Milvus queries have no ORDER BY: sort the (id, position) pairs here, then
            # fetch only the page's full rows.
            expr = document_filter([document_id])
            fields = ["id", "position"]
            total = self.count(document_id)
            if total <= _QUERY_WINDOW:
                rows = self.client.query(
                    self.collection_name, filter=expr, output_fields=fields, limit=_QUERY_WINDOW
                )
            else:
                rows = self._query_all(expr, fields)
            positions = [(int(row["position"]), str(row["id"])) for row in rows]
            positions.sort()
            page_ids = [node_id for _, node_id in positions[offset : offset + limit]]
            page_rows = (
                self.client.query(self.collection_name, ids=page_ids, output_fields=_NODE_FIELDS)
                if page_ids
                else []
            )
        chunks = sorted((self._chunk(row) for row in page_rows), key=lambda c: c.position)
        return chunks, len(positions)

    def _query_all(self, expr: str, fields: list[str]) -> list[dict[str, Any]]:
        rows: list[dict[str, Any]] = []
        iterator = self.client.query_iterator(
            self.collection_name, batch_size=1000, filter=expr, output_fields=fields
        )
        try:
            while batch := iterator.next():
                rows.extend(batch)
        finally:
            iterator.close()
        return rows

    def keyword_search(
        self, query: str, top_k: int, document_ids: Collection[int] | None = None
    ) -> list[KeywordHit]:
        """Full-text BM25 search through pymilvus (llama-index's sparse mode fails on Lite)."""
        if not self.full_text:
            raise StoreError(f"Collection {self.collection_name} has no full-text index.")
        if not query.strip() or top_k <= 0 or (document_ids is not None and not document_ids):
            return []
        self.flush_pending()
        with self._translate("search the full-text index"):
            results = self.client.search(
                self.collection_name,
                data=[query],
                anns_field=SPARSE_FIELD,
                limit=top_k,
                filter="" if document_ids is None else document_filter(document_ids),
                output_fields=_NODE_FIELDS,
                search_params=BM25_SEARCH_PARAMS,
            )
        hits: list[KeywordHit] = []
        for hit in results[0] if results else []:
            # Lite returns BM25 as negative distances (best first), a server as positive
            # scores; BM25 is never negative, so the magnitude is the score either way.
            score = abs(float(hit["distance"]))
            if score > 0:
                chunk = self._chunk(hit["entity"])
                hits.append(KeywordHit(chunk.node_id, score, chunk.text, chunk.metadata))
        return hits

    @staticmethod
    def _chunk(row: dict[str, Any]) -> Chunk:
        text = str(row.get(TEXT_FIELD) or "")
        metadata: dict[str, Any] = {}
        if row.get("_node_content"):
            metadata = dict(metadata_dict_to_node(row, text=text).metadata)
        return Chunk(
            node_id=str(row["id"]),
            document_id=int(row["doc_id"]),
            position=int(row["position"]),
            text=text,
            metadata=metadata,
        )


class MilvusKeywordStore:
    """The keyword view of a full-text Milvus collection.

    The BM25 sparse vectors are computed by Milvus from the ``text`` field the vector store
    writes, so chunks are added and deleted with the vector rows: ``add``, ``delete_document``
    and ``drop`` are no-ops here and only ``count`` and ``search`` do work.
    """

    def __init__(self, milvus: MilvusStore) -> None:
        if not milvus.full_text:
            raise StoreError(f"Collection {milvus.collection_name} has no full-text index.")
        self.milvus = milvus

    def add(self, nodes: Sequence[BaseNode]) -> None:
        return None

    def delete_documents(self, document_ids: Collection[int]) -> None:
        return None

    def drop(self) -> None:
        return None

    def count(self, document_id: int | None = None) -> int:
        return self.milvus.count(document_id)

    def search(
        self, query: str, top_k: int, document_ids: Collection[int] | None = None
    ) -> list[KeywordHit]:
        return self.milvus.keyword_search(query, top_k, document_ids)
