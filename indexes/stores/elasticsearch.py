"""Elasticsearch keyword store: one index per knowledge base, BM25 over an analysed text field.

Chinese needs the IK analysis plugin (``ik_max_word`` at index time for recall, ``ik_smart``
at query time for precision). Whether a cluster has it is discovered by creating the index
with IK and falling back to ``standard`` (one character per token for Chinese: poor but
working) when Elasticsearch does not know the analyzer; a log line says which one an index
uses. Probing by creation rather than ``_cat/plugins`` also works for users who may create
indices but not read cluster metadata.

One shard: BM25 statistics are per shard, and knowledge bases are small enough that one
shard keeps scores consistent between queries.
"""

from __future__ import annotations

import logging
from collections.abc import Collection, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

from elasticsearch import ApiError, BadRequestError, Elasticsearch, TransportError
from elasticsearch.helpers import BulkIndexError, bulk
from llama_index.core.schema import BaseNode, MetadataMode

from indexes.errors import StoreError
from indexes.specs import StoreSettings
from indexes.stores.base import KeywordHit, documents_label, node_document_id, node_position

logger = logging.getLogger(__name__)

IK_TEXT = {"type": "text", "analyzer": "ik_max_word", "search_analyzer": "ik_smart"}
STANDARD_TEXT = {"type": "text", "analyzer": "standard"}


def _mappings(text_field: dict[str, Any]) -> dict[str, Any]:
    return {
        "dynamic": False,
        "properties": {
            "node_id": {"type": "keyword"},
            "document_id": {"type": "long"},
            "position": {"type": "integer"},
            "text": text_field,
            # Returned with hits, never searched: not indexed, so any metadata shape fits.
            "metadata": {"type": "object", "enabled": False},
        },
    }


def _reason(exc: ApiError) -> str:
    """The human part of an Elasticsearch error body, e.g. "analyzer [x] has not been ..."."""
    body = exc.body if isinstance(exc.body, dict) else {}
    error = body.get("error")
    if isinstance(error, dict):
        cause = error.get("caused_by") or {}
        return str(cause.get("reason") or error.get("reason") or exc.message)
    return str(error or exc.message)


class ElasticsearchKeywordStore:
    """The Elasticsearch index of one knowledge base."""

    def __init__(self, client: Elasticsearch, index: str, url: str) -> None:
        self.client = client
        self.index = index
        self.url = url
        self.analyzer: str | None = None

    @classmethod
    def open(
        cls, stores: StoreSettings, collection_name: str, *, timeout: float = 10.0
    ) -> ElasticsearchKeywordStore:
        if not stores.elasticsearch_url:
            raise StoreError("The Elasticsearch keyword backend needs an Elasticsearch URL.")
        api_key = stores.elasticsearch_api_key
        client = Elasticsearch(
            stores.elasticsearch_url,
            api_key=api_key.get_secret_value() if api_key is not None else None,
            request_timeout=timeout,
        )
        # Index names must be lowercase in Elasticsearch.
        store = cls(client, collection_name.lower(), stores.elasticsearch_url)
        store._ensure_index()
        return store

    @contextmanager
    def _translate(self, action: str) -> Iterator[None]:
        try:
            yield
        except BulkIndexError as exc:
            first = exc.errors[0] if exc.errors else {}
            raise StoreError(
                f"Elasticsearch rejected {len(exc.errors)} chunks in index {self.index}: {first}"
            ) from exc
        except ApiError as exc:
            raise StoreError(
                f"Elasticsearch failed to {action} in index {self.index}: {_reason(exc)}"
            ) from exc
        except TransportError as exc:
            raise StoreError(f"Elasticsearch is not reachable at {self.url}: {exc}") from exc

    def _ensure_index(self) -> None:
        with self._translate("create the index"):
            if self.client.indices.exists(index=self.index):
                mapping = self.client.indices.get_mapping(index=self.index)
                text = mapping[self.index]["mappings"]["properties"]["text"]
                self.analyzer = str(text.get("analyzer", "standard"))
                return
            settings = {"number_of_shards": 1}
            try:
                self.client.indices.create(
                    index=self.index, settings=settings, mappings=_mappings(IK_TEXT)
                )
                self.analyzer = "ik_max_word"
            except BadRequestError as exc:
                if "resource_already_exists" in str(exc):  # another process was first
                    self._ensure_index()
                    return
                if "analyzer" not in str(exc).lower():
                    raise
                self.client.indices.create(
                    index=self.index, settings=settings, mappings=_mappings(STANDARD_TEXT)
                )
                self.analyzer = "standard"
        logger.info(
            "Elasticsearch index %s created with the %s analyzer", self.index, self.analyzer
        )
        if self.analyzer == "standard":
            logger.warning(
                "Elasticsearch at %s has no IK plugin: Chinese is searched character by character",
                self.url,
            )

    def add(self, nodes: Sequence[BaseNode]) -> None:
        actions = [
            {
                "_op_type": "index",
                "_index": self.index,
                "_id": node.node_id,
                "_source": {
                    "node_id": node.node_id,
                    "document_id": node_document_id(node),
                    "position": node_position(node),
                    "text": node.get_content(metadata_mode=MetadataMode.NONE),
                    "metadata": node.metadata,
                },
            }
            for node in nodes
        ]
        if not actions:
            return
        with self._translate("store chunks"):
            bulk(self.client, actions)
            # Searchable now, not after the next periodic refresh: the ingestion job reports
            # the document as done right after this.
            self.client.indices.refresh(index=self.index)

    def delete_documents(self, document_ids: Collection[int]) -> None:
        if not document_ids:
            return
        with self._translate(f"delete the chunks of {documents_label(document_ids)}"):
            self.client.delete_by_query(
                index=self.index,
                query={"terms": {"document_id": sorted(document_ids)}},
                conflicts="proceed",
                refresh=True,
            )

    def drop(self) -> None:
        with self._translate("drop the index"):
            self.client.indices.delete(index=self.index, ignore_unavailable=True)

    def count(self, document_id: int | None = None) -> int:
        query: dict[str, Any] = (
            {"match_all": {}} if document_id is None else {"term": {"document_id": document_id}}
        )
        with self._translate("count chunks"):
            return int(self.client.count(index=self.index, query=query)["count"])

    def search(
        self, query: str, top_k: int, document_ids: Collection[int] | None = None
    ) -> list[KeywordHit]:
        if not query.strip() or top_k <= 0 or (document_ids is not None and not document_ids):
            return []
        bool_query: dict[str, Any] = {"must": {"match": {"text": query}}}
        if document_ids is not None:
            bool_query["filter"] = [{"terms": {"document_id": list(document_ids)}}]
        with self._translate("search"):
            response = self.client.search(
                index=self.index,
                query={"bool": bool_query},
                size=top_k,
                source_includes=["text", "metadata"],
            )
        return [
            KeywordHit(
                node_id=str(hit["_id"]),
                score=float(hit["_score"]),
                text=str(hit["_source"].get("text", "")),
                metadata=dict(hit["_source"].get("metadata") or {}),
            )
            for hit in response["hits"]["hits"]
            if hit.get("_score")
        ]

    def close(self) -> None:
        self.client.close()
