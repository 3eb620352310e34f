"""A real OpenAI-compatible HTTP server on 127.0.0.1: the only stand-in for remote model providers.

The real ``openai`` client (and LlamaIndex on top of it) talks HTTP to it, so batching, retries,
timeouts, streaming and error handling run for real. Endpoints (matched by path suffix, so the
``/v1`` prefix and Azure's ``/openai/deployments/<name>/...`` both work):

- POST .../embeddings: deterministic hashed bag-of-words vectors (similar texts are similar),
  float or base64 encoding, usage;
- POST .../chat/completions: plain and ``stream=True`` (SSE, ``data: [DONE]``, a final usage chunk
  when ``stream_options.include_usage``); reply text set per test, default echoes the question;
- GET .../models;
- POST .../rerank (also ``/rerank``): Cohere style, scores from word overlap with the query.

Faults per test: ``fail(status, times, path, after=n)`` answers the next matching requests with
that status (429/500/401/...), optionally only once ``n`` of them went through (a failure in the
middle of a batch of requests); ``hang(seconds, times, path)`` stalls them (client timeouts), or
until ``release()``. Every request is recorded, with the key's value redacted but whether it
matched kept.
"""

from __future__ import annotations

import base64
import hashlib
import json
import math
import re
import struct
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest

DEFAULT_API_KEY = "test-key"
_TOKEN = re.compile(r"[\u3400-\u9fff]|[^\W_]+")
_REDACTED_HEADERS = ("authorization", "api-key")

Reply = str | Callable[[list[dict[str, Any]]], str]


def words(text: str) -> list[str]:
    """Lower-case words; every CJK character is a word of its own."""
    return _TOKEN.findall(text.lower())


def hashed_embedding(text: str, dimension: int) -> list[float]:
    """A unit vector from hashed words (with hashed signs): shared words make texts similar."""
    vector = [0.0] * dimension
    for word in words(text):
        digest = hashlib.md5(word.encode(), usedforsecurity=False).digest()
        vector[int.from_bytes(digest[:4], "little") % dimension] += 1.0 if digest[4] & 1 else -1.0
    norm = math.sqrt(sum(v * v for v in vector))
    if norm == 0:
        vector[0] = 1.0
        return vector
    return [v / norm for v in vector]


def overlap_score(query: str, document: str) -> float:
    """Share of the query's distinct words found in the document."""
    wanted = set(words(query))
    return len(wanted & set(words(document))) / len(wanted) if wanted else 0.0


@dataclass
class Fault:
    status: int | None  # None: answer normally after the hang
    remaining: int
    path: str | None = None  # only requests whose path ends with this
    hang: float = 0.0
    retry_after_ms: int | None = None
    after: int = 0  # matching requests still to let through before the fault starts

    def matches(self, path: str) -> bool:
        return self.remaining > 0 and (self.path is None or path.endswith(self.path))


@dataclass
class RecordedRequest:
    method: str
    path: str
    query: dict[str, list[str]]
    headers: dict[str, str]  # lower-case names; key values replaced by "<redacted>"
    key_ok: bool | None  # None: no key sent
    body: Any
    status: int = 0  # what the server answered

    @property
    def input_count(self) -> int:
        """Number of texts in an embeddings request."""
        value = self.body.get("input") if isinstance(self.body, dict) else None
        return len(value) if isinstance(value, list) else 1


@dataclass
class OpenAIServer:
    api_key: str | None = DEFAULT_API_KEY  # None: any key (or none) is accepted
    embedding_dimension: int = 64
    chat_reply: Reply | None = None  # None: "Echo: <last user message>"
    stream_delay: float = 0.0  # seconds between streamed chunks
    models: list[str] = field(default_factory=lambda: ["test-chat", "test-embed", "test-rerank"])
    requests: list[RecordedRequest] = field(default_factory=list)
    _faults: list[Fault] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _release: threading.Event = field(default_factory=threading.Event)  # ends hangs
    _httpd: ThreadingHTTPServer | None = None
    _thread: threading.Thread | None = None

    # --- lifecycle ------------------------------------------------------------------------------

    def start(self) -> None:
        server = self

        class Handler(_Handler):
            owner = server

        self._httpd = _QuietServer(("127.0.0.1", 0), Handler)
        self._thread = threading.Thread(
            target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self._thread.start()

    def stop(self) -> None:
        self._release.set()  # releases hanging handlers
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)

    @property
    def url(self) -> str:
        assert self._httpd is not None, "server not started"
        return f"http://127.0.0.1:{self._httpd.server_address[1]}"

    @property
    def base_url(self) -> str:
        return f"{self.url}/v1"

    # --- faults and records ---------------------------------------------------------------------

    def fail(
        self,
        status: int,
        times: int = 1,
        path: str | None = None,
        retry_after_ms: int | None = 1,
        after: int = 0,
    ) -> None:
        """Answer the next ``times`` requests (ending with ``path``) with ``status``, once
        ``after`` of them have been answered normally. ``retry_after_ms`` keeps the client's
        retry pause short (None: its own backoff)."""
        with self._lock:
            self._faults.append(
                Fault(status, times, path, retry_after_ms=retry_after_ms, after=after)
            )

    def hang(self, seconds: float, times: int = 1, path: str | None = None) -> None:
        """Stall the next ``times`` requests for ``seconds`` (or until ``release()``) before
        answering normally."""
        with self._lock:
            self._release.clear()
            self._faults.append(Fault(None, times, path, hang=seconds))

    def release(self) -> None:
        """Let stalled requests (and later ones that would stall) answer now."""
        self._release.set()

    def reset(self) -> None:
        with self._lock:
            self._faults.clear()
            self.requests.clear()

    def requests_to(self, suffix: str) -> list[RecordedRequest]:
        with self._lock:
            return [r for r in self.requests if r.path.endswith(suffix)]

    def _take_fault(self, path: str) -> Fault | None:
        with self._lock:
            for fault in self._faults:
                if fault.matches(path):
                    if fault.after > 0:
                        fault.after -= 1
                        continue
                    fault.remaining -= 1
                    return fault
        return None

    def _record(self, request: RecordedRequest) -> None:
        with self._lock:
            self.requests.append(request)

    # --- answers --------------------------------------------------------------------------------

    def reply_for(self, messages: list[dict[str, Any]]) -> str:
        if callable(self.chat_reply):
            return self.chat_reply(messages)
        if self.chat_reply is not None:
            return self.chat_reply
        users = [m for m in messages if m.get("role") == "user"]
        return f"Echo: {_content_text(users[-1].get('content')) if users else ''}"


def _content_text(content: Any) -> str:
    if isinstance(content, list):  # content parts
        return " ".join(str(p.get("text", "")) for p in content if isinstance(p, dict))
    return "" if content is None else str(content)


def _error(message: str, kind: str, code: str | None = None) -> dict[str, Any]:
    return {"error": {"message": message, "type": kind, "param": None, "code": code}}


class _QuietServer(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request: Any, client_address: Any) -> None:
        pass  # clients hanging up mid-answer (timeouts) are part of the tests


class _Handler(BaseHTTPRequestHandler):
    owner: OpenAIServer
    protocol_version = "HTTP/1.1"  # keep-alive, as real providers do
    timeout = 10

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def do_GET(self) -> None:
        self._serve("GET")

    def do_POST(self) -> None:
        self._serve("POST")

    # --- plumbing -------------------------------------------------------------------------------

    def _serve(self, method: str) -> None:
        try:
            self._dispatch(method)
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True

    def _dispatch(self, method: str) -> None:
        server = self.owner
        parts = urlsplit(self.path)
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        try:
            body = json.loads(raw) if raw else None
        except ValueError:
            body = raw.decode(errors="replace")
        bearer = self.headers.get("Authorization", "")
        sent_key = bearer.removeprefix("Bearer ") if bearer else self.headers.get("api-key")
        record = RecordedRequest(
            method=method,
            path=parts.path,
            query=parse_qs(parts.query),
            headers={
                k.lower(): "<redacted>" if k.lower() in _REDACTED_HEADERS else v
                for k, v in self.headers.items()
            },
            key_ok=None if sent_key is None else sent_key == server.api_key,
            body=body,
        )
        server._record(record)

        fault = server._take_fault(parts.path)
        if fault is not None and fault.hang:
            server._release.wait(fault.hang)
        if fault is not None and fault.status is not None:
            self._fail(record, fault.status, sent_key, fault.retry_after_ms)
            return
        if server.api_key is not None and not record.key_ok:
            self._fail(record, 401, sent_key, None)
            return

        path = parts.path.rstrip("/")
        if method == "POST" and path.endswith("/embeddings"):
            self._embeddings(record, body)
        elif method == "POST" and path.endswith("/chat/completions"):
            self._chat(record, body)
        elif method == "GET" and path.endswith("/models"):
            data = [
                {"id": m, "object": "model", "created": 0, "owned_by": "tests"}
                for m in server.models
            ]
            self._json(record, 200, {"object": "list", "data": data})
        elif method == "POST" and path.endswith("/rerank"):
            self._rerank(record, body)
        else:
            self._json(record, 404, _error(f"No route {method} {parts.path}", "not_found"))

    def _json(
        self,
        record: RecordedRequest,
        status: int,
        payload: Any,
        headers: dict[str, str] | None = None,
    ) -> None:
        data = json.dumps(payload, ensure_ascii=False).encode()
        record.status = status
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(data)

    def _fail(
        self, record: RecordedRequest, status: int, sent_key: str | None, retry_after_ms: int | None
    ) -> None:
        headers = {"retry-after-ms": str(retry_after_ms)} if retry_after_ms is not None else {}
        if status == 401:
            # Real providers echo (part of) the key: the client side must never repeat it.
            payload = _error(
                f"Incorrect API key provided: {sent_key}.",
                "invalid_request_error",
                "invalid_api_key",
            )
        elif status == 429:
            payload = _error(
                "Rate limit reached, slow down.", "rate_limit_error", "rate_limit_exceeded"
            )
        else:
            payload = _error(f"Injected failure {status} (key {sent_key}).", "server_error")
        self._json(record, status, payload, headers)

    def _bad_request(self, record: RecordedRequest, message: str) -> None:
        self._json(record, 400, _error(message, "invalid_request_error"))

    # --- endpoints ------------------------------------------------------------------------------

    def _embeddings(self, record: RecordedRequest, body: Any) -> None:
        if not isinstance(body, dict) or "input" not in body or not body.get("model"):
            self._bad_request(record, "'model' and 'input' are required")
            return
        value = body["input"]
        if isinstance(value, str) or (
            isinstance(value, list) and value and isinstance(value[0], int)
        ):
            value = [value]
        if not isinstance(value, list) or not value:
            self._bad_request(record, "'input' must be a string or a non-empty list")
            return
        texts = [v if isinstance(v, str) else " ".join(map(str, v)) for v in value]
        dimension = int(body.get("dimensions") or self.owner.embedding_dimension)
        as_base64 = body.get("encoding_format") == "base64"
        data = []
        for index, text in enumerate(texts):
            vector = hashed_embedding(text, dimension)
            embedding: Any = (
                base64.b64encode(struct.pack(f"<{dimension}f", *vector)).decode()
                if as_base64
                else vector
            )
            data.append({"object": "embedding", "index": index, "embedding": embedding})
        tokens = sum(len(words(t)) for t in texts)
        usage = {"prompt_tokens": tokens, "total_tokens": tokens}
        self._json(
            record, 200, {"object": "list", "data": data, "model": body["model"], "usage": usage}
        )

    def _chat(self, record: RecordedRequest, body: Any) -> None:
        if not isinstance(body, dict) or not isinstance(body.get("messages"), list):
            self._bad_request(record, "'messages' is required")
            return
        reply = self.owner.reply_for(body["messages"])
        prompt_tokens = sum(len(words(_content_text(m.get("content")))) for m in body["messages"])
        completion_tokens = len(words(reply))
        usage = {
            "prompt_tokens": prompt_tokens,
            "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens,
        }
        base = {
            "id": f"chatcmpl-{uuid.uuid4().hex[:12]}",
            "created": int(time.time()),
            "model": body.get("model", ""),
        }
        if not body.get("stream"):
            choice = {
                "index": 0,
                "message": {"role": "assistant", "content": reply},
                "finish_reason": "stop",
            }
            self._json(
                record,
                200,
                {**base, "object": "chat.completion", "choices": [choice], "usage": usage},
            )
            return
        include_usage = bool((body.get("stream_options") or {}).get("include_usage"))
        self._stream(record, base, reply, usage if include_usage else None)

    def _stream(
        self,
        record: RecordedRequest,
        base: dict[str, Any],
        reply: str,
        usage: dict[str, int] | None,
    ) -> None:
        record.status = 200
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Cache-Control", "no-cache")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()

        def chunk(delta: dict[str, Any], finish: str | None) -> dict[str, Any]:
            payload = {**base, "object": "chat.completion.chunk"}
            payload["choices"] = [{"index": 0, "delta": delta, "finish_reason": finish}]
            if usage is not None:
                payload["usage"] = None  # as OpenAI does when usage comes at the end
            return payload

        events: list[Any] = [chunk({"role": "assistant", "content": ""}, None)]
        events += [chunk({"content": piece}, None) for piece in re.findall(r"\S+\s*|\s+", reply)]
        events.append(chunk({}, "stop"))
        if usage is not None:
            events.append(
                {**base, "object": "chat.completion.chunk", "choices": [], "usage": usage}
            )
        for event in [*events, "[DONE]"]:
            text = event if isinstance(event, str) else json.dumps(event, ensure_ascii=False)
            self._write_chunk(f"data: {text}\n\n".encode())
            if self.owner.stream_delay:
                time.sleep(self.owner.stream_delay)
        self._write_chunk(b"")

    def _write_chunk(self, data: bytes) -> None:
        self.wfile.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")
        self.wfile.flush()

    def _rerank(self, record: RecordedRequest, body: Any) -> None:
        if (
            not isinstance(body, dict)
            or not isinstance(body.get("documents"), list)
            or "query" not in body
        ):
            self._bad_request(record, "'query' and 'documents' are required")
            return
        texts = [d.get("text", "") if isinstance(d, dict) else str(d) for d in body["documents"]]
        scored = sorted(
            ((overlap_score(str(body["query"]), t), i) for i, t in enumerate(texts)),
            key=lambda p: (-p[0], p[1]),
        )
        top_n = body.get("top_n")
        results = []
        for score, index in scored[: top_n if isinstance(top_n, int) else None]:
            result: dict[str, Any] = {"index": index, "relevance_score": score}
            if body.get("return_documents"):
                result["document"] = {"text": texts[index]}
            results.append(result)
        tokens = len(words(str(body["query"]))) + sum(len(words(t)) for t in texts)
        self._json(
            record,
            200,
            {
                "id": uuid.uuid4().hex,
                "model": body.get("model", ""),
                "results": results,
                "usage": {"total_tokens": tokens},
            },
        )


@pytest.fixture
def openai_server() -> Iterator[OpenAIServer]:
    """A fresh server per test (no faults, no records), key ``DEFAULT_API_KEY``."""
    server = OpenAIServer()
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def forbid_global_settings(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Fail the test if anything reads LlamaIndex's global ``Settings.llm`` or ``.embed_model``
    (DESIGN: pass llm= and embed_model= explicitly). Reads raise, and are also recorded in case
    library code swallows the exception."""
    from llama_index.core import Settings

    used: list[str] = []

    def forbidden(name: str) -> property:
        def read(self: Any) -> Any:
            used.append(name)
            raise AssertionError(f"LlamaIndex's global Settings.{name} was used; pass {name}=")

        return property(read)

    for name in ("llm", "embed_model"):
        monkeypatch.setattr(type(Settings), name, forbidden(name))
    yield
    if used:
        pytest.fail(f"LlamaIndex's global Settings were read: {sorted(set(used))}")
