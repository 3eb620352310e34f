"""Chat models built from a ``ModelSpec``, their errors, and the token usage of their answers.

Every chat provider preset is reached through its OpenAI-compatible ``/chat/completions``
endpoint with ``OpenAILike`` (llama-index-llms-openai-like: any model name, no lookup in
OpenAI's model tables). Azure goes through the same class with ``openai.AzureOpenAI`` as the
client (llama-index-llms-azure-openai is not installed; the official client builds the
deployment path, the ``api-version`` query and the ``api-key`` header).

Context window: ``ModelSpec.max_tokens`` of a chat model is the model's context window (prompt
plus answer) as registered by the admin; unset, a conservative default. The answer length
(``max_tokens=`` here, a robot's ``max_tokens``) is capped at half the window so that the prompt
always keeps room.

Usage: plain calls carry the provider's figures; streamed calls ask for them with
``stream_options={"include_usage": true}`` and the last streamed ``ChatResponse`` (the usage
chunk, empty delta) carries them. :func:`usage_of` reads either. :class:`MeteredLLM` reports the
usage of every call made through it, estimating with tiktoken when a provider sends none.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, AsyncIterator, Callable, Generator, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from functools import cache
from typing import Any, TypeVar
from urllib.parse import urlsplit, urlunsplit

import httpx
import openai
from llama_index.core.base.llms.types import (
    ChatMessage,
    ChatResponse,
    ChatResponseAsyncGen,
    ChatResponseGen,
    CompletionResponse,
    CompletionResponseAsyncGen,
    CompletionResponseGen,
    LLMMetadata,
    MessageRole,
)
from llama_index.core.bridge.pydantic import Field, PrivateAttr
from llama_index.core.llms import LLM
from llama_index.llms.openai_like import OpenAILike

from indexes.connection import remote_connection
from indexes.errors import ModelError
from indexes.models import DEFAULT_MAX_RETRIES, DEFAULT_TIMEOUT, Tokenizer, ensure_tiktoken_offline
from indexes.provider_errors import describe_failure
from indexes.providers import get_provider
from indexes.specs import ModelSpec

DEFAULT_CONTEXT_WINDOW = 8192
# Ollama and llama.cpp serve whatever window the server was started with, 2-4k by default,
# and silently cut longer prompts: assume the small one unless the admin registered more.
_LOCAL_SERVER_WINDOW = {"ollama": 4096, "llamacpp": 4096}
# Sent to keyless providers: with no key the openai client reads OPENAI_API_KEY from the
# environment and would send it to a foreign host.
_NO_KEY = "no-key"
# Per-message overhead of the chat format (role, separators), as OpenAI counts it.
_MESSAGE_OVERHEAD = 4


# --- usage --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Usage:
    """Tokens of one or more calls. ``estimated``: counted here with tiktoken cl100k_base
    because the provider reported nothing (close for OpenAI models, rough for others)."""

    prompt_tokens: int = 0
    completion_tokens: int = 0
    total_tokens: int = 0
    estimated: bool = False

    def __add__(self, other: Usage) -> Usage:
        return Usage(
            self.prompt_tokens + other.prompt_tokens,
            self.completion_tokens + other.completion_tokens,
            self.total_tokens + other.total_tokens,
            self.estimated or other.estimated,
        )


def _count(value: Any, name: str) -> int:
    number = value.get(name) if isinstance(value, dict) else getattr(value, name, None)
    return number if isinstance(number, int) else 0


def usage_of(response: ChatResponse | CompletionResponse) -> Usage | None:
    """The provider's token usage in one response, or None when it has none (a streamed
    chunk other than the last, or a provider that reports nothing)."""
    counts = response.additional_kwargs
    if isinstance(counts.get("total_tokens"), int):
        source: Any = counts
    else:
        raw = response.raw
        # Completions made from chat calls keep the figures only in ``raw``.
        source = raw.get("usage") if isinstance(raw, dict) else getattr(raw, "usage", None)
        if source is None:
            return None
    prompt, completion = _count(source, "prompt_tokens"), _count(source, "completion_tokens")
    return Usage(prompt, completion, _count(source, "total_tokens") or prompt + completion)


@cache
def _cl100k() -> Tokenizer:
    ensure_tiktoken_offline()
    import tiktoken

    return tiktoken.get_encoding("cl100k_base").encode_ordinary


def token_counter() -> Tokenizer:
    """tiktoken cl100k_base from llama-index-core's bundled copy (never downloaded)."""
    return _cl100k()


def estimate_usage(messages: Sequence[ChatMessage], completion: str) -> Usage:
    """Usage counted with tiktoken, for providers that report none."""
    count = _cl100k()
    prompt = sum(len(count(m.content or "")) + _MESSAGE_OVERHEAD for m in messages)
    answer = len(count(completion))
    return Usage(prompt, answer, prompt + answer, estimated=True)


# --- errors -------------------------------------------------------------------------------------


def _endpoint(spec: ModelSpec) -> str:
    preset = get_provider(spec.provider)
    url = spec.base_url or (preset.default_base_url if preset else None) or "(no URL)"
    parts = urlsplit(url)
    if parts.username or parts.password:  # never show credentials embedded in a URL
        parts = parts._replace(netloc=parts.hostname or "")
    return urlunsplit(parts)


def translate_llm_error(
    exc: BaseException,
    spec: ModelSpec,
    *,
    timeout: float | None = None,
    max_retries: int | None = None,
) -> ModelError:
    """A ``ModelError`` a person can read for a failed call to ``spec``'s model: HTTP status,
    provider, model and URL, never the key (also scrubbed from anything the server echoed).
    Use it around calls made outside this module, e.g. ``except Exception as exc: raise
    translate_llm_error(exc, spec) from None`` while consuming a stream."""
    if isinstance(exc, ModelError):
        return exc
    who = f"The {spec.provider} chat model '{spec.model_name}' at {_endpoint(spec)}"
    key = spec.api_key.get_secret_value() if spec.api_key else None
    return ModelError(
        describe_failure(exc, who, timeout=timeout, max_retries=max_retries, secret=key)
    )


# --- the model ----------------------------------------------------------------------------------


class CompatibleLLM(OpenAILike):
    """OpenAILike for any provider preset, with one retry layer (the openai client's: backoff
    on 429, 5xx, timeouts and dropped connections, honouring Retry-After) and failures raised
    as ``ModelError``. Build it with :func:`build_llm`."""

    # Kept out of repr() and serialisation: the base class shows and dumps the key in clear.
    api_key: str | None = Field(default=None, repr=False, exclude=True)
    provider: str = Field(default="openai-compatible", description="Provider preset name")
    client_max_retries: int = Field(
        default=DEFAULT_MAX_RETRIES, ge=0, description="Retries made by the openai client"
    )
    _spec: ModelSpec = PrivateAttr()

    def __init__(self, *, spec: ModelSpec, client_max_retries: int, **kwargs: Any) -> None:
        # max_retries=0 turns LlamaIndex's tenacity layer off: on top of the client's retries
        # it would multiply the attempts (and the waiting) for every failure.
        super().__init__(
            provider=spec.provider,
            client_max_retries=client_max_retries,
            max_retries=0,
            **kwargs,
        )
        self._spec = spec

    @classmethod
    def class_name(cls) -> str:
        return "CompatibleLLM"

    def _get_credential_kwargs(self, is_async: bool = False) -> dict[str, Any]:
        kwargs = super()._get_credential_kwargs(is_async=is_async)
        kwargs["max_retries"] = self.client_max_retries
        if self.provider == "azure":
            kwargs["azure_endpoint"] = kwargs.pop("base_url")
            kwargs["api_version"] = self.api_version
        return kwargs

    def _get_client(self) -> openai.OpenAI:
        if self.provider != "azure":
            return super()._get_client()
        if self._client is None or not self.reuse_client:
            self._client = openai.AzureOpenAI(**self._get_credential_kwargs())
        return self._client

    def _get_aclient(self) -> openai.AsyncOpenAI:
        if self.provider != "azure":
            return super()._get_aclient()
        if self._aclient is None or not self.reuse_client:
            self._aclient = openai.AsyncAzureOpenAI(**self._get_credential_kwargs(is_async=True))
        return self._aclient

    @contextmanager
    def _translated_errors(self) -> Iterator[None]:
        try:
            yield
        except (openai.OpenAIError, httpx.HTTPError) as exc:
            # from None: the original may carry the key a server echoed back.
            raise translate_llm_error(
                exc, self._spec, timeout=self.timeout, max_retries=self.client_max_retries
            ) from None

    # Every chat-model path (chat, complete, their async and streamed forms) ends in these four.

    def _chat(self, messages: Sequence[ChatMessage], **kwargs: Any) -> ChatResponse:
        with self._translated_errors():
            return super()._chat(messages, **kwargs)

    async def _achat(self, messages: Sequence[ChatMessage], **kwargs: Any) -> ChatResponse:
        with self._translated_errors():
            return await super()._achat(messages, **kwargs)

    def _stream_chat(self, messages: Sequence[ChatMessage], **kwargs: Any) -> ChatResponseGen:
        stream = super()._stream_chat(messages, **kwargs)

        def guarded() -> ChatResponseGen:
            # The request is sent on the first next(): its errors surface while iterating.
            with self._translated_errors():
                yield from stream

        return guarded()

    async def _astream_chat(
        self, messages: Sequence[ChatMessage], **kwargs: Any
    ) -> ChatResponseAsyncGen:
        with self._translated_errors():
            stream = await super()._astream_chat(messages, **kwargs)

        async def guarded() -> ChatResponseAsyncGen:
            with self._translated_errors():
                async for response in stream:
                    yield response

        return guarded()


def context_window_of(spec: ModelSpec) -> int:
    """The context window assumed for ``spec`` (see the module docstring)."""
    return spec.max_tokens or _LOCAL_SERVER_WINDOW.get(spec.provider, DEFAULT_CONTEXT_WINDOW)


def build_llm(
    spec: ModelSpec,
    *,
    temperature: float,
    max_tokens: int | None,
    timeout: float = DEFAULT_TIMEOUT,
    max_retries: int = DEFAULT_MAX_RETRIES,
    include_stream_usage: bool = True,
) -> LLM:
    """The LlamaIndex chat model for ``spec``. ``max_tokens`` caps the answer (None: the
    provider's default, budgeted as half the window); ``timeout`` is per request in seconds;
    ``max_retries`` are the openai client's. ``include_stream_usage=False`` for a server that
    rejects ``stream_options`` (streamed usage is then estimated by :class:`MeteredLLM`)."""
    if spec.model_type != "chat":
        raise ModelError(f"'{spec.model_name}' is a {spec.model_type} model, not a chat model.")
    connection = remote_connection(spec)
    base_url, api_key = connection.base_url, connection.api_key
    if not 0 <= temperature <= 2:
        raise ModelError(f"The temperature must be between 0 and 2, not {temperature:g}.")
    window = context_window_of(spec)
    if max_tokens is not None:
        if max_tokens < 1:
            raise ModelError(f"max_tokens must be at least 1, not {max_tokens}.")
        max_tokens = max(1, min(max_tokens, window // 2))
    # Token counting elsewhere (memory, prompt packing) uses the bundled cl100k_base file;
    # the LLM itself has no tokenizer (tokenizer=None), so nothing looks one up by model name.
    ensure_tiktoken_offline()
    return CompatibleLLM(
        spec=spec,
        client_max_retries=max_retries,
        model=spec.model_name,
        api_base=base_url,
        api_key=api_key or _NO_KEY,
        # "" rather than None: None would let the client read OPENAI_API_VERSION.
        api_version=spec.api_version or "",
        is_chat_model=True,
        is_function_calling_model=False,
        context_window=window,
        temperature=temperature,
        max_tokens=max_tokens,
        timeout=timeout,
        tokenizer=None,
        additional_kwargs=(
            {"stream_options": {"include_usage": True}} if include_stream_usage else {}
        ),
    )


# --- metering -----------------------------------------------------------------------------------

UsageSink = Callable[[Usage], None]
R = TypeVar("R", ChatResponse, CompletionResponse)


class MeteredLLM(LLM):
    """Forwards every call to ``inner`` and reports each answer's usage (the provider's, else a
    tiktoken estimate) to the sink ``on_call()`` returns when the call starts. LlamaIndex's
    synthesizers keep only an answer's text, so a chat engine wraps its model in one of these
    to learn what its calls cost. ``context_window``/``num_output`` override what the inner
    model's metadata says (the budget the engine plans with)."""

    _inner: LLM = PrivateAttr()
    _on_call: Callable[[], UsageSink] = PrivateAttr()
    _overrides: dict[str, int] = PrivateAttr()

    def __init__(
        self,
        inner: LLM,
        on_call: Callable[[], UsageSink],
        *,
        context_window: int | None = None,
        num_output: int | None = None,
    ) -> None:
        super().__init__(callback_manager=inner.callback_manager, system_prompt=inner.system_prompt)
        self._inner = inner
        self._on_call = on_call
        overrides = {"context_window": context_window, "num_output": num_output}
        self._overrides = {k: v for k, v in overrides.items() if v is not None}

    @classmethod
    def class_name(cls) -> str:
        return "MeteredLLM"

    @property
    def inner(self) -> LLM:
        return self._inner

    @property
    def metadata(self) -> LLMMetadata:
        return self._inner.metadata.model_copy(update=self._overrides)

    @staticmethod
    def _as_messages(prompt: str) -> list[ChatMessage]:
        return [ChatMessage(role=MessageRole.USER, content=prompt)]

    def chat(self, messages: Sequence[ChatMessage], **kwargs: Any) -> ChatResponse:
        sink = self._on_call()
        response = self._inner.chat(messages, **kwargs)
        sink(usage_of(response) or estimate_usage(messages, response.message.content or ""))
        return response

    async def achat(self, messages: Sequence[ChatMessage], **kwargs: Any) -> ChatResponse:
        sink = self._on_call()
        response = await self._inner.achat(messages, **kwargs)
        sink(usage_of(response) or estimate_usage(messages, response.message.content or ""))
        return response

    def complete(self, prompt: str, formatted: bool = False, **kwargs: Any) -> CompletionResponse:
        sink = self._on_call()
        response = self._inner.complete(prompt, formatted=formatted, **kwargs)
        sink(usage_of(response) or estimate_usage(self._as_messages(prompt), response.text))
        return response

    async def acomplete(
        self, prompt: str, formatted: bool = False, **kwargs: Any
    ) -> CompletionResponse:
        sink = self._on_call()
        response = await self._inner.acomplete(prompt, formatted=formatted, **kwargs)
        sink(usage_of(response) or estimate_usage(self._as_messages(prompt), response.text))
        return response

    def stream_chat(self, messages: Sequence[ChatMessage], **kwargs: Any) -> ChatResponseGen:
        return _metered(self._inner.stream_chat(messages, **kwargs), messages, self._on_call())

    async def astream_chat(
        self, messages: Sequence[ChatMessage], **kwargs: Any
    ) -> ChatResponseAsyncGen:
        stream = await self._inner.astream_chat(messages, **kwargs)
        return _ametered(stream, messages, self._on_call())

    def stream_complete(
        self, prompt: str, formatted: bool = False, **kwargs: Any
    ) -> CompletionResponseGen:
        stream = self._inner.stream_complete(prompt, formatted=formatted, **kwargs)
        return _metered(stream, self._as_messages(prompt), self._on_call())

    async def astream_complete(
        self, prompt: str, formatted: bool = False, **kwargs: Any
    ) -> CompletionResponseAsyncGen:
        stream = await self._inner.astream_complete(prompt, formatted=formatted, **kwargs)
        return _ametered(stream, self._as_messages(prompt), self._on_call())


def _metered(
    stream: Iterator[R], messages: Sequence[ChatMessage], sink: UsageSink
) -> Generator[R, None, None]:
    usage, text = None, ""
    for response in stream:
        usage = usage_of(response) or usage
        text += response.delta or ""
        yield response
    # Reported once the stream is consumed; a stream abandoned half way reports nothing.
    sink(usage or estimate_usage(messages, text))


async def _ametered(
    stream: AsyncIterator[R], messages: Sequence[ChatMessage], sink: UsageSink
) -> AsyncGenerator[R, None]:
    usage, text = None, ""
    async for response in stream:
        usage = usage_of(response) or usage
        text += response.delta or ""
        yield response
    sink(usage or estimate_usage(messages, text))
