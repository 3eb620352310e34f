"""Chat models for real: LlamaIndex's OpenAILike and the official openai client against the
local OpenAI-compatible test server (retries, timeouts, streaming and usage included)."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
from llama_index.core.base.llms.types import ChatMessage, ChatResponse, MessageRole
from llama_index.llms.openai_like import OpenAILike

from indexes.errors import ModelError
from indexes.llms import (
    DEFAULT_CONTEXT_WINDOW,
    Usage,
    build_llm,
    estimate_usage,
    translate_llm_error,
    usage_of,
)
from indexes.models import tiktoken_cache_dir
from indexes.providers import PROVIDERS
from indexes.specs import ModelSpec
from tests.openai_server import DEFAULT_API_KEY, OpenAIServer, words

SECRET = "sk-test-9d1e4c-SECRET"
MODEL = "Qwen/Qwen2.5-7B-Instruct"  # not an OpenAI model name: must still be accepted
REPO = Path(__file__).resolve().parents[2]
QUESTION = [ChatMessage(role=MessageRole.USER, content="hello there")]


def chat_spec(server: OpenAIServer, **fields: Any) -> ModelSpec:
    values: dict[str, Any] = {
        "provider": "openai-compatible",
        "model_name": MODEL,
        "model_type": "chat",
        "base_url": server.base_url,
        "api_key": DEFAULT_API_KEY,
    }
    values.update(fields)
    return ModelSpec(**values)


def llm_for(server: OpenAIServer, *, spec: ModelSpec | None = None, **options: Any) -> Any:
    settings: dict[str, Any] = {"temperature": 0.3, "max_tokens": 256}
    settings.update(options)
    return build_llm(spec or chat_spec(server), **settings)


def expected_usage(messages: list[ChatMessage], reply: str) -> Usage:
    """What the test server reports: one token per word."""
    prompt = sum(len(words(m.content or "")) for m in messages)
    return Usage(prompt, len(words(reply)), prompt + len(words(reply)))


# --- presets ------------------------------------------------------------------------------------

CHAT_PRESETS = sorted(p.name for p in PROVIDERS.values() if p.supports("chat"))


@pytest.mark.parametrize(
    "name", [n for n in CHAT_PRESETS if PROVIDERS[n].default_base_url is not None]
)
def test_presets_default_to_their_endpoint(name: str) -> None:
    spec = ModelSpec(provider=name, model_name="some-model", model_type="chat", api_key="k")
    llm = build_llm(spec, temperature=0.1, max_tokens=100)
    assert isinstance(llm, OpenAILike)
    assert llm.api_base == PROVIDERS[name].default_base_url
    assert llm.metadata.is_chat_model
    assert llm.metadata.model_name == "some-model"
    expected_window = 4096 if name in ("ollama", "llamacpp") else DEFAULT_CONTEXT_WINDOW
    assert llm.metadata.context_window == expected_window


def test_every_chat_preset_is_covered() -> None:
    assert set(CHAT_PRESETS) == {
        "openai",
        "azure",
        "deepseek",
        "qwen",
        "siliconflow",
        "moonshot",
        "zhipu",
        "ollama",
        "vllm",
        "xinference",
        "llamacpp",
        "openai-compatible",
    }


def test_registered_max_tokens_is_the_window_and_caps_the_answer(
    openai_server: OpenAIServer,
) -> None:
    llm = llm_for(openai_server, spec=chat_spec(openai_server, max_tokens=1000), max_tokens=2000)
    assert llm.metadata.context_window == 1000
    assert llm.metadata.num_output == 500  # half the window stays for the prompt
    llm.chat(QUESTION)
    assert openai_server.requests[0].body["max_tokens"] == 500


@pytest.mark.parametrize("provider", ["ollama", "vllm", "xinference", "llamacpp"])
def test_keyless_presets_never_send_the_environment_key(
    openai_server: OpenAIServer, monkeypatch: pytest.MonkeyPatch, provider: str
) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", SECRET)
    openai_server.api_key = SECRET  # would accept the environment's key, were it sent
    spec = chat_spec(openai_server, provider=provider, api_key=None)
    with pytest.raises(ModelError, match="rejected the API key"):
        llm_for(openai_server, spec=spec).chat(QUESTION)
    assert [r.key_ok for r in openai_server.requests] == [False]


def test_azure_uses_deployment_path_version_and_key_header(openai_server: OpenAIServer) -> None:
    spec = chat_spec(
        openai_server,
        provider="azure",
        model_name="gpt4o-deployment",
        base_url=openai_server.url,
        api_version="2024-10-21",
    )
    llm = llm_for(openai_server, spec=spec)
    assert llm.chat(QUESTION).message.content == "Echo: hello there"
    assert "".join(r.delta or "" for r in llm.stream_chat(QUESTION)) == "Echo: hello there"
    for request in openai_server.requests:
        assert request.path == "/openai/deployments/gpt4o-deployment/chat/completions"
        assert request.query["api-version"] == ["2024-10-21"]
        assert request.key_ok
        assert request.headers["api-key"] == "<redacted>"


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"provider": "nope"}, "Unknown model provider"),
        ({"provider": "local"}, "offers no chat models"),
        ({"provider": "openai-compatible", "base_url": None}, "needs a base URL"),
        ({"provider": "deepseek", "api_key": None}, "needs an API key"),
        ({"provider": "azure", "api_version": None}, "needs an API version"),
        ({"model_type": "embedding"}, "not a chat model"),
    ],
)
def test_unusable_specs_are_refused(
    openai_server: OpenAIServer, fields: dict[str, Any], message: str
) -> None:
    with pytest.raises(ModelError, match=message):
        llm_for(openai_server, spec=chat_spec(openai_server, **fields))


# --- calls and usage ----------------------------------------------------------------------------


def test_chat_sends_the_settings_and_reports_usage(openai_server: OpenAIServer) -> None:
    response = llm_for(openai_server).chat(QUESTION)
    assert response.message.content == "Echo: hello there"
    assert usage_of(response) == expected_usage(QUESTION, "Echo: hello there")
    (request,) = openai_server.requests
    assert request.body["model"] == MODEL
    assert request.body["temperature"] == 0.3
    assert request.body["max_tokens"] == 256
    assert "stream_options" not in request.body  # only for streamed calls
    assert request.key_ok


def test_stream_yields_deltas_then_a_usage_chunk(openai_server: OpenAIServer) -> None:
    openai_server.chat_reply = "Annual leave is twenty days [1]."
    chunks = list(llm_for(openai_server).stream_chat(QUESTION))
    assert "".join(c.delta or "" for c in chunks) == openai_server.chat_reply
    assert len([c for c in chunks if c.delta]) > 3
    assert chunks[-1].delta == ""
    assert chunks[-1].message.content == openai_server.chat_reply
    assert usage_of(chunks[-1]) == expected_usage(QUESTION, openai_server.chat_reply)
    assert all(usage_of(c) is None for c in chunks[:-1])
    (request,) = openai_server.requests
    assert request.body["stream"] is True
    assert request.body["stream_options"] == {"include_usage": True}


async def test_async_chat_and_stream_report_usage(openai_server: OpenAIServer) -> None:
    llm = llm_for(openai_server)
    expected = expected_usage(QUESTION, "Echo: hello there")
    assert usage_of(await llm.achat(QUESTION)) == expected
    last: ChatResponse | None = None
    text = ""
    async for chunk in await llm.astream_chat(QUESTION):
        text += chunk.delta or ""
        last = chunk
    assert text == "Echo: hello there"
    assert last is not None
    assert usage_of(last) == expected
    # A completion made from a chat call keeps the figures in ``raw`` only.
    assert usage_of(await llm.acomplete("hello there")) == expected


def test_stream_usage_can_be_turned_off(openai_server: OpenAIServer) -> None:
    chunks = list(llm_for(openai_server, include_stream_usage=False).stream_chat(QUESTION))
    assert all(usage_of(c) is None for c in chunks)
    assert "stream_options" not in openai_server.requests[0].body
    estimate = estimate_usage(QUESTION, "Echo: hello there")
    assert estimate.estimated
    assert estimate.completion_tokens > 0
    assert estimate.total_tokens == estimate.prompt_tokens + estimate.completion_tokens


# --- failures -----------------------------------------------------------------------------------


@pytest.mark.parametrize("status", [429, 500, 503])
def test_transient_failures_are_retried_once_per_attempt(
    openai_server: OpenAIServer, status: int
) -> None:
    openai_server.fail(status, times=2)
    assert llm_for(openai_server, max_retries=2).chat(QUESTION).message.content
    # One retry layer: LlamaIndex's own would have multiplied the attempts.
    assert [r.status for r in openai_server.requests] == [status, status, 200]


async def test_streamed_and_async_calls_are_retried_too(openai_server: OpenAIServer) -> None:
    llm = llm_for(openai_server)
    openai_server.fail(429, times=1)
    assert "".join(c.delta or "" for c in llm.stream_chat(QUESTION)) == "Echo: hello there"
    openai_server.fail(503, times=1)
    stream = await llm.astream_chat(QUESTION)
    assert "".join([c.delta or "" async for c in stream]) == "Echo: hello there"
    assert [r.status for r in openai_server.requests] == [429, 200, 503, 200]


def test_persistent_500_is_a_clear_model_error(openai_server: OpenAIServer) -> None:
    openai_server.api_key = SECRET
    openai_server.fail(500, times=100)  # the server's error body echoes the key it received
    llm = llm_for(openai_server, spec=chat_spec(openai_server, api_key=SECRET), max_retries=2)
    with pytest.raises(ModelError) as caught:
        llm.chat(QUESTION)
    message = str(caught.value)
    for fragment in ("HTTP 500", "openai-compatible", MODEL, openai_server.base_url, "2 retries"):
        assert fragment in message
    assert SECRET not in message
    assert caught.value.__cause__ is None  # the openai error (with the echoed key) is dropped
    assert len(openai_server.requests) == 3


async def test_persistent_500_while_streaming_is_a_model_error(
    openai_server: OpenAIServer,
) -> None:
    openai_server.fail(500, times=100)
    llm = llm_for(openai_server, max_retries=1)
    with pytest.raises(ModelError, match="HTTP 500"):
        list(llm.stream_chat(QUESTION))
    with pytest.raises(ModelError, match="HTTP 500"):
        async for _ in await llm.astream_chat(QUESTION):
            pass
    assert len(openai_server.requests) == 4


def test_wrong_key_is_not_retried_and_not_shown(openai_server: OpenAIServer) -> None:
    wrong = "sk-wrong-key-4242"  # the server's 401 body echoes it
    llm = llm_for(openai_server, spec=chat_spec(openai_server, api_key=wrong))
    with pytest.raises(ModelError, match="rejected the API key") as caught:
        llm.chat(QUESTION)
    assert wrong not in str(caught.value)
    assert [r.key_ok for r in openai_server.requests] == [False]


def test_refused_request_detail_never_shows_the_key(openai_server: OpenAIServer) -> None:
    openai_server.api_key = SECRET
    openai_server.fail(400, retry_after_ms=None)
    llm = llm_for(openai_server, spec=chat_spec(openai_server, api_key=SECRET))
    with pytest.raises(ModelError, match="HTTP 400") as caught:
        llm.chat(QUESTION)
    assert SECRET not in str(caught.value)
    assert "***" in str(caught.value)  # the echoed key, scrubbed


def test_timeout_is_a_model_error(openai_server: OpenAIServer) -> None:
    openai_server.hang(10, times=5)
    llm = llm_for(openai_server, max_retries=1, timeout=0.3)
    with pytest.raises(ModelError, match=r"did not answer within 0\.3 s, after 1 retries"):
        llm.chat(QUESTION)
    assert len(openai_server.requests) == 2


def test_translate_llm_error_serves_calls_made_elsewhere() -> None:
    spec = ModelSpec(
        provider="deepseek",
        model_name="deepseek-chat",
        model_type="chat",
        api_key=SECRET,
        base_url="https://user:pw@api.example.com/v1",
    )
    timeout = translate_llm_error(httpx.ReadTimeout("read timed out"), spec, timeout=5)
    assert str(timeout).startswith("The deepseek chat model 'deepseek-chat' at ")
    assert "did not answer within 5 s" in str(timeout)
    assert "user:pw" not in str(timeout)
    request = httpx.Request("POST", "https://api.example.com/v1/chat/completions")
    refused = openai.BadRequestError(
        "bad", response=httpx.Response(400, request=request), body={"message": f"key {SECRET}"}
    )
    message = str(translate_llm_error(refused, spec))
    assert "HTTP 400" in message
    assert SECRET not in message
    already = ModelError("already translated")
    assert translate_llm_error(already, spec) is already


def test_nothing_downloads_with_the_network_disabled() -> None:
    """A fresh process without TIKTOKEN_CACHE_DIR, every non-loopback connection refused: building
    a model with an unknown name, counting tokens and a full engine turn must not try one."""
    script = textwrap.dedent(
        """
        import os, socket

        LOOPBACK = ("127.0.0.1", "::1", "localhost")
        real_connect, real_getaddrinfo = socket.socket.connect, socket.getaddrinfo

        def connect(sock, address):
            if address[0] not in LOOPBACK:
                raise OSError("network disabled by the test")
            return real_connect(sock, address)

        def getaddrinfo(host, *args, **kwargs):
            if host not in LOOPBACK:
                raise OSError("network disabled by the test")
            return real_getaddrinfo(host, *args, **kwargs)

        socket.socket.connect = connect
        socket.getaddrinfo = getaddrinfo

        from llama_index.core.retrievers import BaseRetriever
        from llama_index.core.schema import NodeWithScore, TextNode
        from indexes.chat import build_chat_engine, turn_info
        from indexes.llms import build_llm, estimate_usage
        from indexes.models import tiktoken_cache_dir
        from indexes.specs import ModelSpec, RobotSpec
        from tests.openai_server import OpenAIServer

        class Fixed(BaseRetriever):
            def _retrieve(self, query):
                return [NodeWithScore(node=TextNode(text="Leave is 20 days."), score=1.0)]

        server = OpenAIServer()
        server.start()
        spec = ModelSpec(provider="vllm", model_name="some-unknown-model", model_type="chat",
                         base_url=server.base_url, api_key="test-key")
        llm = build_llm(spec, temperature=0.1, max_tokens=50)
        assert os.environ["TIKTOKEN_CACHE_DIR"] == str(tiktoken_cache_dir())
        assert estimate_usage([], "离线也能数 token").completion_tokens > 3
        engine = build_chat_engine(RobotSpec(chat_model=spec), Fixed(), llm=llm)
        response = engine.chat("How long is leave?")
        assert turn_info(response).usage.total_tokens > 0
        server.stop()
        print("ok")
        """
    )
    env = {k: v for k, v in os.environ.items() if k != "TIKTOKEN_CACHE_DIR"}
    env["PYTHONPATH"] = str(REPO)
    result = subprocess.run(
        [sys.executable, "-c", script],
        capture_output=True,
        text=True,
        env=env,
        cwd=REPO,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.strip().endswith("ok")
    assert any(tiktoken_cache_dir().iterdir())
