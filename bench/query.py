"""Retrieval-test endpoint latency against the same retrieval in process, and chat
time-to-first-token overhead, on the embedded default over real HTTP (uvicorn on loopback).

    python bench/query.py [--synthetic 300] [--requests 64]

Builds a knowledge base from ``--synthetic`` English passages (the standard library's
docstrings, as bench/ingest.py) and a robot on it, serves the app with uvicorn on a free
127.0.0.1 port, then:
- POST /api/v1/robots/{id}/retrieval-test at 1, 4 and 16 concurrent clients: p50/p95 and
  requests/s, against RobotRetriever.asearch called in process with the same queries and
  concurrency in the same run (the ratio is what HTTP, auth, the database and JSON cost);
- POST /chat with a chat model served by the local OpenAI-compatible test server: time to the
  first delta event, against the model server's own time to first chunk.
It prints figures; it is not a test. Record results in docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import asyncio
import socket
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import httpx
import uvicorn

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from bench.ingest import synthetic_corpus
from tests.openai_server import DEFAULT_API_KEY, OpenAIServer

PASSWORD = "bench password 1"  # noqa: S105 (a throwaway account in a temporary directory)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def setup(settings: Any, corpus: list[tuple[str, str]], chat_url: str) -> tuple[int, int]:
    """User, models, knowledge base with the corpus, robot; returns (robot id, chat robot id)."""
    from rag_app.context import AppContext
    from rag_app.db.models import ApiKey, Llm
    from rag_app.domain.documents.service import DocumentService
    from rag_app.domain.documents.upload import received_from_path
    from rag_app.domain.knowledge.schemas import KnowledgeCreate
    from rag_app.domain.knowledge.service import KnowledgeService
    from rag_app.domain.robots.schemas import RobotCreate
    from rag_app.domain.robots.service import RobotService
    from rag_app.domain.users.schemas import UserCreate
    from rag_app.domain.users.service import UserService
    from rag_app.jobs.queue import InProcessQueue

    ctx = AppContext.create(settings)
    await asyncio.to_thread(ctx.migrate)
    await ctx.start_jobs()
    folder = settings.data_dir / "corpus"
    folder.mkdir()
    paths = []
    for doc_id, text in corpus:
        (folder / f"{doc_id}.txt").write_text(text, encoding="utf-8")
        paths.append(folder / f"{doc_id}.txt")
    async with ctx.sessionmaker() as db:
        user = await UserService(db, ctx).create(
            UserCreate(username="bench", email="bench@example.com", password=PASSWORD)
        )
        embed = Llm(
            name="MiniLM",
            model_type="embedding",
            provider="local",
            model_name="all-MiniLM-L6-v2",
            dimension=384,
        )
        chat = Llm(
            name="chat",
            model_type="chat",
            provider="openai-compatible",
            model_name="bench-chat",
            base_url=chat_url,
        )
        db.add_all([embed, chat])
        await db.commit()
        encrypted = ctx.secret_box.encrypt(DEFAULT_API_KEY)
        db.add(
            ApiKey(llm_id=chat.id or 0, alias="bench", api_key_encrypted=encrypted, key_mask="***")
        )
        await db.commit()
        knowledge = await KnowledgeService(db, ctx).create(
            user, KnowledgeCreate(name="bench", embed_llm_id=embed.id or 0, chunk_size=256)
        )
        service = DocumentService(db, ctx)
        for start in range(0, len(paths), 50):
            batch = [received_from_path(p) for p in paths[start : start + 50]]
            await service.upload(knowledge, batch, replace=False)
        robots = RobotService(db)
        plain = await robots.create(user, RobotCreate(name="r", knowledge_ids=[knowledge.id or 0]))
        talking = await robots.create(
            user, RobotCreate(name="c", knowledge_ids=[knowledge.id or 0], chat_llm_id=chat.id)
        )
    queue = ctx.job_queue
    assert isinstance(queue, InProcessQueue)
    await queue.join()
    await ctx.close()
    return plain.id or 0, talking.id or 0


def serve(settings: Any, port: int) -> uvicorn.Server:
    from rag_app.api.app import create_app

    server = uvicorn.Server(
        uvicorn.Config(create_app(settings), host="127.0.0.1", port=port, log_level="warning")
    )
    threading.Thread(target=server.run, daemon=True).start()
    while not server.started:
        time.sleep(0.05)
    return server


async def timed_runs(
    call: Callable[[str], Awaitable[Any]], queries: list[str], concurrency: int
) -> tuple[list[float], float]:
    gate = asyncio.Semaphore(concurrency)
    latencies: list[float] = []

    async def one(query: str) -> None:
        async with gate:
            started = time.perf_counter()
            await call(query)
            latencies.append((time.perf_counter() - started) * 1000)

    started = time.perf_counter()
    await asyncio.gather(*(one(q) for q in queries))
    return latencies, len(queries) / (time.perf_counter() - started)


def pct(values: list[float], q: float) -> float:
    return statistics.quantiles(values, n=100)[int(q) - 1] if len(values) > 1 else values[0]


async def measure(
    settings: Any,
    base: str,
    robot_id: int,
    chat_robot: int,
    queries: list[str],
    model: OpenAIServer,
) -> None:
    from rag_app.context import AppContext
    from rag_app.db.models import Robot
    from rag_app.indexing.robots import robot_retriever, robot_spec

    async with httpx.AsyncClient(base_url=base, timeout=120) as http:
        login = await http.post(
            "/api/v1/auth/login", json={"username": "bench", "password": PASSWORD}
        )
        headers = {"Authorization": f"Bearer {login.json()['access_token']}"}

        async def over_http(query: str) -> None:
            response = await http.post(
                f"/api/v1/robots/{robot_id}/retrieval-test", headers=headers, json={"query": query}
            )
            response.raise_for_status()

        ctx = AppContext.create(settings)
        async with ctx.sessionmaker() as db:
            robot = await db.get(Robot, robot_id)
            retriever = await robot_retriever(ctx, await robot_spec(ctx, db, robot))  # type: ignore[arg-type]

        async def in_process(query: str) -> None:
            await retriever.asearch(query)

        await timed_runs(over_http, queries[:8], 1)  # warm-up both paths
        await timed_runs(in_process, queries[:8], 1)
        print("clients | HTTP p50 / p95 ms | HTTP req/s | in-process p50 / p95 ms | req/s | ratio")
        for clients in (1, 4, 16):
            http_lat, http_rate = await timed_runs(over_http, queries, clients)
            proc_lat, proc_rate = await timed_runs(in_process, queries, clients)
            print(
                f"{clients:7} | {pct(http_lat, 50):6.1f} / {pct(http_lat, 95):6.1f} | "
                f"{http_rate:10.1f} | {pct(proc_lat, 50):6.1f} / {pct(proc_lat, 95):6.1f} | "
                f"{proc_rate:5.1f} | {http_rate / proc_rate:.0%}"
            )

        first_delta: list[float] = []
        for query in queries[:20]:
            started = time.perf_counter()
            async with http.stream(
                "POST",
                "/api/v1/chat",
                headers=headers,
                json={"robot_id": chat_robot, "message": query},
            ) as stream:
                async for line in stream.aiter_lines():
                    if line.startswith("event: delta"):
                        first_delta.append((time.perf_counter() - started) * 1000)
                        break
        direct: list[float] = []
        async with httpx.AsyncClient(timeout=60) as raw:
            for query in queries[:20]:
                started = time.perf_counter()
                async with raw.stream(
                    "POST",
                    f"{model.base_url}/chat/completions",
                    headers={"Authorization": f"Bearer {DEFAULT_API_KEY}"},
                    json={
                        "model": "bench-chat",
                        "stream": True,
                        "messages": [{"role": "user", "content": query}],
                    },
                ) as stream:
                    async for line in stream.aiter_lines():
                        if line.startswith("data:"):
                            direct.append((time.perf_counter() - started) * 1000)
                            break
        print(
            f"chat first delta: p50 {pct(first_delta, 50):.0f} ms, model server's own first "
            f"chunk p50 {pct(direct, 50):.1f} ms: overhead ≈ "
            f"{pct(first_delta, 50) - pct(direct, 50):.0f} ms (retrieval, prompt, storage)"
        )
        await ctx.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--synthetic", type=int, default=300)
    parser.add_argument("--requests", type=int, default=64, help="queries per concurrency level")
    args = parser.parse_args()
    from rag_app.settings import Settings

    corpus = synthetic_corpus(args.synthetic)
    summaries = (" ".join(text.split(".")[0].split())[:200] for _, text in corpus)
    queries = [q for q in summaries if len(q) > 10][: args.requests]
    model = OpenAIServer()
    model.start()
    with tempfile.TemporaryDirectory(prefix="rag-bench-") as tmp:
        settings = Settings(environment="test", data_dir=Path(tmp))
        robot_id, chat_robot = asyncio.run(setup(settings, corpus, model.base_url))
        port = free_port()
        server = serve(settings, port)
        try:
            asyncio.run(
                measure(settings, f"http://127.0.0.1:{port}", robot_id, chat_robot, queries, model)
            )
        finally:
            server.should_exit = True
            model.stop()


if __name__ == "__main__":
    main()
