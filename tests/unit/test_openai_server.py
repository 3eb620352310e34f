"""The test server speaks the OpenAI protocol well enough for the official client."""

from __future__ import annotations

import math
import threading

import httpx
import openai
import pytest

from tests import openai_server as stand_in
from tests.openai_server import DEFAULT_API_KEY, OpenAIServer, hashed_embedding

openai_server = stand_in.openai_server  # the fixture, for pytest to find here


def client(server: OpenAIServer, **kwargs: object) -> openai.OpenAI:
    options: dict[str, object] = {"api_key": DEFAULT_API_KEY, "base_url": server.base_url}
    options.update(kwargs)
    return openai.OpenAI(**options)  # type: ignore[arg-type]


def cosine(a: list[float], b: list[float]) -> float:
    return sum(x * y for x, y in zip(a, b, strict=True))


def test_chat_completion(openai_server: OpenAIServer) -> None:
    answer = client(openai_server).chat.completions.create(
        model="test-chat", messages=[{"role": "user", "content": "What is RAG?"}]
    )
    assert answer.choices[0].message.content == "Echo: What is RAG?"
    assert answer.choices[0].finish_reason == "stop"
    assert answer.usage is not None
    assert answer.usage.total_tokens > 0
    (request,) = openai_server.requests_to("/chat/completions")
    assert request.key_ok is True
    assert request.headers["authorization"] == "<redacted>"


def test_chat_stream_with_usage(openai_server: OpenAIServer) -> None:
    openai_server.chat_reply = "Retrieval augmented generation, grounded in your documents."
    stream = client(openai_server).chat.completions.create(
        model="test-chat",
        messages=[{"role": "user", "content": "hi"}],
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == openai_server.chat_reply
    assert len([c for c in chunks if c.choices and c.choices[0].delta.content]) > 3
    assert chunks[-1].choices == []
    assert chunks[-1].usage is not None
    assert chunks[-1].usage.completion_tokens == 7


def test_chat_stream_without_usage(openai_server: OpenAIServer) -> None:
    chunks = list(
        client(openai_server).chat.completions.create(
            model="m", messages=[{"role": "user", "content": "hello there"}], stream=True
        )
    )
    assert all(c.usage is None for c in chunks)
    assert chunks[-1].choices[0].finish_reason == "stop"


def test_embeddings_float_and_base64(openai_server: OpenAIServer) -> None:
    api = client(openai_server)
    texts = ["the cat sat on the mat", "a cat sat on a mat", "quarterly revenue grew"]
    as_base64 = api.embeddings.create(model="test-embed", input=texts)  # client default: base64
    as_float = api.embeddings.create(model="test-embed", input=texts, encoding_format="float")
    vectors = [d.embedding for d in as_float.data]
    for decoded, plain in zip(as_base64.data, vectors, strict=True):
        assert decoded.embedding == pytest.approx(plain, abs=1e-6)
    assert all(len(v) == 64 and math.isclose(cosine(v, v), 1.0) for v in vectors)
    assert cosine(vectors[0], vectors[1]) > cosine(vectors[0], vectors[2])
    assert as_float.usage.prompt_tokens == 15  # words of the three texts
    assert vectors[0] == pytest.approx(hashed_embedding(texts[0], 64))


def test_embeddings_honour_dimensions(openai_server: OpenAIServer) -> None:
    answer = client(openai_server).embeddings.create(model="m", input="x", dimensions=16)
    assert len(answer.data[0].embedding) == 16


def test_retry_after_429_then_success(openai_server: OpenAIServer) -> None:
    openai_server.fail(429, times=2, path="/embeddings")
    answer = client(openai_server, max_retries=2).embeddings.create(model="m", input="hello")
    assert len(answer.data) == 1
    assert [r.status for r in openai_server.requests_to("/embeddings")] == [429, 429, 200]


def test_persistent_500_reaches_the_client(openai_server: OpenAIServer) -> None:
    openai_server.fail(500, times=10)
    with pytest.raises(openai.InternalServerError):
        client(openai_server, max_retries=1).models.list()
    assert len(openai_server.requests) == 2


def test_fault_after_some_requests_went_through(openai_server: OpenAIServer) -> None:
    openai_server.fail(500, times=2, path="/embeddings", after=2)
    embeddings = client(openai_server, max_retries=0).embeddings
    for _ in range(2):
        embeddings.create(model="m", input="fine")
    for _ in range(2):
        with pytest.raises(openai.InternalServerError):
            embeddings.create(model="m", input="broken")
    embeddings.create(model="m", input="fine again")
    assert client(openai_server).models.list().data  # other paths were never affected
    statuses = [r.status for r in openai_server.requests_to("/embeddings")]
    assert statuses == [200, 200, 500, 500, 200]


def test_wrong_key_is_401(openai_server: OpenAIServer) -> None:
    with pytest.raises(openai.AuthenticationError):
        client(openai_server, api_key="wrong").models.list()
    assert openai_server.requests[0].key_ok is False


def test_hang_times_the_client_out(openai_server: OpenAIServer) -> None:
    openai_server.hang(5, path="/models")
    with pytest.raises(openai.APITimeoutError):
        client(openai_server, max_retries=0, timeout=0.3).models.list()


def test_release_ends_a_hang(openai_server: OpenAIServer) -> None:
    openai_server.hang(60, path="/models")
    answered = threading.Event()

    def call() -> None:
        client(openai_server, max_retries=0, timeout=30).models.list()
        answered.set()

    caller = threading.Thread(target=call)
    caller.start()
    assert not answered.wait(0.3)  # stalled
    openai_server.release()
    assert answered.wait(10)
    caller.join()


def test_models_and_rerank(openai_server: OpenAIServer) -> None:
    models = client(openai_server).models.list()
    assert [m.id for m in models.data] == openai_server.models
    for path in ("/v1/rerank", "/rerank"):
        response = httpx.post(
            openai_server.url + path,
            headers={"Authorization": f"Bearer {DEFAULT_API_KEY}"},
            json={
                "model": "test-rerank",
                "query": "milvus vector search",
                "documents": ["cooking pasta", "vector search in milvus", {"text": "search"}],
                "top_n": 2,
                "return_documents": True,
            },
        )
        assert response.status_code == 200
        results = response.json()["results"]
        assert [r["index"] for r in results] == [1, 2]
        assert results[0]["relevance_score"] == 1.0
        assert results[0]["document"] == {"text": "vector search in milvus"}
