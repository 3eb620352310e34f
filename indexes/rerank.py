"""Rerankers built from a ``ModelSpec``: LlamaIndex node postprocessors that score
(query, chunk) pairs and keep the best ``top_n``, each node's score being its rerank score.

- API providers (SiliconFlow, vLLM, Xinference, llama.cpp, Jina, any Cohere-compatible
  endpoint): ``POST {base_url}/rerank`` with ``{model, query, documents, top_n}``, answered with
  ``{"results": [{"index", "relevance_score"}]}``. LlamaIndex's ``CohereRerank`` needs the
  ``cohere`` package and talks to Cohere's own endpoint, and nothing else in the installed
  llama-index speaks this protocol to an arbitrary URL, so :class:`CompatibleRerank` is a small
  postprocessor around ``httpx``: bearer key, timeout, a few retries with backoff on 429 and
  5xx, then :class:`ModelError` naming status, provider and model (never the key).
- ``local`` (``model_name`` a folder holding a cross-encoder): LlamaIndex's
  ``SentenceTransformerRerank``, which accepts a local path and loads offline once the Hugging
  Face libraries are told to stay offline. Loaded once per folder and process; its scores are
  the cross-encoder's sigmoid outputs in [0, 1].
"""

from __future__ import annotations

import logging
import threading
import time
from functools import cache
from pathlib import Path
from typing import Any

import httpx
from llama_index.core.bridge.pydantic import Field, PrivateAttr
from llama_index.core.postprocessor.types import BaseNodePostprocessor
from llama_index.core.schema import MetadataMode, NodeWithScore, QueryBundle

from indexes.connection import remote_connection
from indexes.errors import IndexesError, ModelError
from indexes.models import force_offline
from indexes.specs import ModelSpec

logger = logging.getLogger(__name__)

LOCAL = "local"
DEFAULT_TIMEOUT = 30.0
DEFAULT_MAX_RETRIES = 2
# Backoff between attempts: 0.5 s, 1 s, 2 s, ... capped; a server's Retry-After wins (capped too).
_BACKOFF_BASE = 0.5
_BACKOFF_CAP = 8.0
_MAX_ERROR_CHARS = 500


def _retry_delay(attempt: int, response: httpx.Response | None) -> float:
    if response is not None:
        headers = response.headers
        try:
            if "retry-after-ms" in headers:
                return min(float(headers["retry-after-ms"]) / 1000, _BACKOFF_CAP)
            if "retry-after" in headers:
                return min(float(headers["retry-after"]), _BACKOFF_CAP)
        except ValueError:
            pass  # an HTTP date or garbage: fall back to our own backoff
    return min(_BACKOFF_BASE * 2**attempt, _BACKOFF_CAP)


class CompatibleRerank(BaseNodePostprocessor):
    """Cohere-style ``/rerank`` of any provider (see the module docstring)."""

    provider: str = Field(description="Provider preset name, for error messages")
    model: str = Field(description="Provider model id")
    base_url: str
    top_n: int = Field(ge=1, description="Number of nodes to return, best first")
    timeout: float = Field(default=DEFAULT_TIMEOUT, gt=0, description="Seconds per request")
    max_retries: int = Field(default=DEFAULT_MAX_RETRIES, ge=0)
    # Private: never part of the component's dict/JSON (LlamaIndex serialises fields).
    _api_key: str | None = PrivateAttr(default=None)
    _client: httpx.Client = PrivateAttr()

    def __init__(self, *, api_key: str | None = None, **data: Any) -> None:
        super().__init__(**data)
        self._api_key = api_key or None
        self._client = httpx.Client(timeout=self.timeout)

    @classmethod
    def class_name(cls) -> str:
        return "CompatibleRerank"

    @property
    def url(self) -> str:
        return f"{self.base_url.rstrip('/')}/rerank"

    def _postprocess_nodes(
        self, nodes: list[NodeWithScore], query_bundle: QueryBundle | None = None
    ) -> list[NodeWithScore]:
        if query_bundle is None:
            raise ModelError("Reranking needs the query.")
        if not nodes:
            return []
        documents = [n.node.get_content(metadata_mode=MetadataMode.EMBED) for n in nodes]
        payload = {
            "model": self.model,
            "query": query_bundle.query_str,
            "documents": documents,
            "top_n": min(self.top_n, len(documents)),
            "return_documents": False,
        }
        scores = self._parse(self._post(payload), len(documents))
        reranked = [NodeWithScore(node=nodes[i].node, score=score) for i, score in scores]
        reranked.sort(key=lambda n: -(n.score or 0.0))
        return reranked[: self.top_n]

    def _who(self) -> str:
        return f"The {self.provider} rerank API at {self.base_url} (model '{self.model}')"

    def _error(self, message: str) -> ModelError:
        # Belt and braces: a server may echo the key in an error body we quote.
        if self._api_key:
            message = message.replace(self._api_key, "***")
        return ModelError(message[:_MAX_ERROR_CHARS])

    def _post(self, payload: dict[str, Any]) -> Any:
        headers = {"Authorization": f"Bearer {self._api_key}"} if self._api_key else {}
        failure = "failed"
        for attempt in range(self.max_retries + 1):
            response: httpx.Response | None = None
            try:
                response = self._client.post(self.url, json=payload, headers=headers)
            except httpx.TimeoutException:
                failure = f"did not answer within {self.timeout:g} s"
            except httpx.TransportError as exc:
                failure = f"could not be reached ({type(exc).__name__})"
            else:
                status = response.status_code
                if status == 200:
                    try:
                        return response.json()
                    except ValueError:
                        raise self._error(f"{self._who()} answered with invalid JSON.") from None
                if status != 429 and status < 500:
                    raise self._refused(response)
                failure = f"failed with HTTP {status}"
            if attempt < self.max_retries:
                delay = _retry_delay(attempt, response)
                logger.info("%s %s; retrying in %.2f s", self._who(), failure, delay)
                time.sleep(delay)
        tries = self.max_retries + 1
        raise self._error(f"{self._who()} {failure}, after {tries} attempts.")

    def _refused(self, response: httpx.Response) -> ModelError:
        status = response.status_code
        if status in (401, 403):
            return self._error(
                f"{self._who()} rejected the API key (HTTP {status}): check the key "
                "registered for this model."
            )
        if status == 404:
            return self._error(
                f"{self._who()} answered HTTP 404: check the model name and the base URL."
            )
        detail = ""
        try:
            body = response.json()
            error = body.get("error") if isinstance(body, dict) else None
            detail = str(error.get("message") if isinstance(error, dict) else error or body)
        except ValueError:
            detail = response.text
        return self._error(f"{self._who()} refused the request (HTTP {status}): {detail}")

    def _parse(self, body: Any, count: int) -> list[tuple[int, float]]:
        # Cohere/Jina/SiliconFlow/vLLM: {"results": [...]}; some servers answer the bare list.
        results = body.get("results") if isinstance(body, dict) else body
        if not isinstance(results, list):
            raise self._error(f"{self._who()} answered without a list of results.")
        scores: list[tuple[int, float]] = []
        for item in results:
            index = item.get("index") if isinstance(item, dict) else None
            score = item.get("relevance_score", item.get("score")) if index is not None else None
            if (
                not isinstance(index, int)
                or not 0 <= index < count
                or not isinstance(score, int | float)
            ):
                raise self._error(f"{self._who()} answered a malformed result: {item!r:.200}")
            scores.append((index, float(score)))
        return scores


@cache
def _local_reranker_class() -> type[BaseNodePostprocessor]:
    # Imported on first use: sentence-transformers and torch take seconds to import.
    from llama_index.core.postprocessor import SentenceTransformerRerank

    class LocalRerank(SentenceTransformerRerank):
        """SentenceTransformerRerank with plain float scores, inputs left untouched and
        failures raised as ModelError."""

        @classmethod
        def class_name(cls) -> str:
            return "LocalRerank"

        def _postprocess_nodes(
            self, nodes: list[NodeWithScore], query_bundle: QueryBundle | None = None
        ) -> list[NodeWithScore]:
            if query_bundle is None:
                raise ModelError("Reranking needs the query.")
            # The parent overwrites the scores of the nodes it is given: hand it copies.
            copies = [NodeWithScore(node=n.node, score=n.score) for n in nodes]
            try:
                ranked = super()._postprocess_nodes(copies, query_bundle)
            except Exception as exc:
                raise ModelError(
                    f"The local reranker '{self.model}' failed: {type(exc).__name__}: {exc}"
                ) from exc
            # numpy float32 otherwise, which JSON encoders and pydantic refuse.
            return [NodeWithScore(node=n.node, score=float(n.score or 0.0)) for n in ranked]

    return LocalRerank


_local_lock = threading.Lock()
_local_rerankers: dict[Path, BaseNodePostprocessor] = {}


def _load_local(spec: ModelSpec, top_n: int) -> BaseNodePostprocessor:
    folder = Path(spec.model_name).expanduser()
    if not folder.is_dir():
        raise ModelError(
            f"The local rerank model folder '{spec.model_name}' does not exist: a local "
            "reranker is the path of a folder holding a sentence-transformers cross-encoder."
        )
    folder = folder.resolve()
    with _local_lock:
        reranker = _local_rerankers.get(folder)
        if reranker is None:
            force_offline()
            try:
                # trust_remote_code=False: a model folder must not run code of its own.
                reranker = _local_reranker_class()(
                    top_n=top_n, model=str(folder), device="cpu", trust_remote_code=False
                )
            except Exception as exc:
                raise ModelError(
                    f"Could not load the local rerank model from '{folder}': {exc}"
                ) from exc
            _local_rerankers[folder] = reranker
    # A shallow copy shares the loaded cross-encoder; only top_n differs.
    return reranker.model_copy(update={"top_n": top_n})


def build_reranker(
    spec: ModelSpec,
    top_n: int,
    *,
    timeout: float = DEFAULT_TIMEOUT,
    max_retries: int = DEFAULT_MAX_RETRIES,
) -> BaseNodePostprocessor:
    """The reranker for ``spec``, returning the best ``top_n`` nodes scored by relevance.
    ``timeout`` (seconds per request) and ``max_retries`` apply to API providers."""
    if spec.model_type != "rerank":
        raise ModelError(f"'{spec.model_name}' is a {spec.model_type} model, not a rerank model.")
    if top_n < 1:
        raise IndexesError(f"A reranker must keep at least one chunk, not {top_n}.")
    if spec.provider == LOCAL:
        return _load_local(spec, top_n)
    connection = remote_connection(spec)
    base_url, api_key = connection.base_url, connection.api_key or None
    return CompatibleRerank(
        provider=spec.provider,
        model=spec.model_name,
        base_url=base_url,
        top_n=top_n,
        timeout=timeout,
        max_retries=max_retries,
        api_key=api_key,
    )
