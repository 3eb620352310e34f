"""`rag-app demo` as a user runs it: a process of its own on a fresh data directory, offline,
building the demo knowledge base from the shipped documents and answering English and Chinese
questions with their sources; retrieval-only, then with a chat model (the local
OpenAI-compatible server); a second run reuses what the first made."""

from __future__ import annotations

import sqlite3
import subprocess
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rag_app.demo import DEFAULT_QUESTIONS, shipped_documents
from tests.integration.test_first_run import GENERATED, RAG_APP, fresh_env
from tests.openai_server import OpenAIServer

RUN_SECONDS = 600
DOCUMENTS = ["faq.html", "file-types.csv", "rag_app-guide.md", "知识库与机器人使用说明.md"]
NO_MODEL = "No chat model is configured for this robot; the most relevant passages are:"
NO_MODEL_ZH = "该机器人未配置对话模型，以下是最相关的段落："


@dataclass
class Run:
    returncode: int
    stdout: str
    stderr: str


def demo(env: dict[str, str], cwd: Path, *args: str) -> Run:
    done = subprocess.run(
        [str(RAG_APP), "demo", *args],
        env=env,
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=RUN_SECONDS,
        check=False,
    )
    return Run(done.returncode, done.stdout, done.stderr)


def rows(data_dir: Path, query: str) -> list[tuple[Any, ...]]:
    with sqlite3.connect(data_dir / "rag_app.db") as db:
        return db.execute(query).fetchall()


def state(data_dir: Path) -> dict[str, Any]:
    """What the demo made, as stored."""
    return {
        "users": rows(data_dir, "SELECT id, username, role FROM rag_user"),
        "models": rows(data_dir, "SELECT id, provider, model_name, model_type FROM rag_llm"),
        "knowledge": rows(
            data_dir, "SELECT id, name, user_id, document_count, total_chunks FROM rag_knowledge"
        ),
        "documents": rows(
            data_dir,
            "SELECT id, file_name, status, chunk_count FROM rag_document ORDER BY file_name",
        ),
        "robots": rows(data_dir, "SELECT id, name, user_id FROM rag_robot"),
        "links": rows(data_dir, "SELECT robot_id, knowledge_id FROM rag_robot_knowledge"),
    }


def answer_block(stdout: str, question: str) -> str:
    """The output from ``Question: <question>`` to the next question (or the end)."""
    start = stdout.index(f"Question: {question}")
    end = stdout.find("\nQuestion: ", start + 1)
    return stdout[start : end if end != -1 else None]


def test_the_shipped_documents_are_the_expected_ones() -> None:
    assert [path.name for path in shipped_documents()] == DOCUMENTS


def test_retrieval_only_demo_then_a_second_run_reuses_it(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    env = fresh_env(data_dir)
    first = demo(env, tmp_path)
    assert first.returncode == 0, first.stdout + first.stderr
    out = first.stdout
    assert len(GENERATED.findall(out)) == 1  # the first start's set-up ran, password shown
    assert "Registered the packaged embedding model all-MiniLM-L6-v2" in out
    assert "Created knowledge base 'rag_app demo' (id 1)." in out
    assert "Created robot 'rag_app demo robot' (id 1)." in out
    for name in DOCUMENTS:
        assert f"  {name}: " in out
    assert "(retrieval only)" in out

    english, chinese = DEFAULT_QUESTIONS
    answer = answer_block(out, english)
    assert NO_MODEL in answer
    assert "chunks of 500 tokens" in answer
    assert "overlap of\n50 tokens" in answer
    assert "  [1] rag_app-guide.md, rag_app guide > Knowledge bases" in answer
    answer = answer_block(out, chinese)
    assert NO_MODEL_ZH in answer
    assert "向量检索（vector）、关键词检索（keyword）和混合检索（hybrid）" in answer
    assert "知识库与机器人使用说明.md, 知识库与机器人使用说明 > 检索模式" in answer

    made = state(data_dir)
    assert made["users"] == [(1, "admin", "admin")]
    assert made["models"] == [(1, "local", "all-MiniLM-L6-v2", "embedding")]
    [(kb_id, kb_name, owner, document_count, total_chunks)] = made["knowledge"]
    assert (kb_id, kb_name, owner, document_count) == (1, "rag_app demo", 1, 4)
    assert [(name, status) for _, name, status, _ in made["documents"]] == [
        (name, "completed") for name in DOCUMENTS
    ]
    assert total_chunks == sum(chunks for *_, chunks in made["documents"])
    assert made["robots"] == [(1, "rag_app demo robot", 1)]
    assert made["links"] == [(1, 1)]
    assert rows(data_dir, "SELECT chat_llm_id FROM rag_robot") == [(None,)]
    assert rows(data_dir, "SELECT count(*) FROM rag_session") == [(2,)]

    again = demo(env, tmp_path, "--question", "Where does rag_app keep my data?")
    assert again.returncode == 0, again.stdout + again.stderr
    assert "Using knowledge base 'rag_app demo' (id 1)." in again.stdout
    assert "Using robot 'rag_app demo robot' (id 1)." in again.stdout
    for unexpected in ("Created", "Registered"):
        assert unexpected not in again.stdout
    assert GENERATED.search(again.stdout) is None
    assert state(data_dir) == made  # same rows, same documents, nothing ingested twice
    answer = answer_block(again.stdout, "Where does rag_app keep my data?")
    assert "  [1] faq.html, " in answer
    assert "the SQLite database `rag_app.db`" in answer
    assert english not in again.stdout  # --question replaces the default questions


def test_demo_with_a_chat_model_then_retrieval_only(
    tmp_path: Path, openai_server: OpenAIServer
) -> None:
    key = f"sk-demo-{uuid.uuid4().hex}"
    openai_server.api_key = key
    reply = "rag_app splits documents into chunks of 500 tokens [1]."
    openai_server.chat_reply = reply
    data_dir = tmp_path / "data"
    env = fresh_env(
        data_dir,
        RAG_CHAT_BASE_URL=openai_server.base_url,
        RAG_CHAT_MODEL="test-chat",
        RAG_CHAT_API_KEY=key,
    )
    english, chinese = DEFAULT_QUESTIONS
    first = demo(env, tmp_path)
    assert first.returncode == 0, first.stdout + first.stderr
    out = first.stdout
    assert "Registered the chat model 'test-chat'" in out
    assert "(chat model 2)" in out
    for question in DEFAULT_QUESTIONS:
        answer = answer_block(out, question)
        assert f"Answer:\n{reply}\nSources:\n  [1] " in answer
        assert NO_MODEL not in answer
    # Each source with a snippet of its passage under it.
    assert (
        "  [1] rag_app-guide.md, rag_app guide > Knowledge bases\n      ## Knowledge bases A"
        in (answer_block(out, english))
    )
    modes = "知识库与机器人使用说明 > 检索模式\n      ## 检索模式 机器人支持三种检索模式"
    assert modes in answer_block(out, chinese)
    assert key not in out + first.stderr

    calls = openai_server.requests_to("/chat/completions")
    assert len(calls) == 2
    assert all(call.key_ok for call in calls)  # the stored, encrypted key reached the server
    prompts = [str(call.body["messages"]) for call in calls]
    assert "chunks of 500 tokens" in prompts[0]  # the retrieved passages went to the model
    assert "混合检索（hybrid）" in prompts[1]
    assert rows(data_dir, "SELECT chat_llm_id FROM rag_robot") == [(2,)]
    made = state(data_dir)

    # Without the variables and with --retrieval-only: the same robot, now without the model.
    plain = fresh_env(data_dir)
    again = demo(plain, tmp_path, "--retrieval-only", "-q", english)
    assert again.returncode == 0, again.stdout + again.stderr
    assert "Using robot 'rag_app demo robot' (id 1)." in again.stdout
    assert NO_MODEL in again.stdout
    assert len(openai_server.requests_to("/chat/completions")) == 2
    assert rows(data_dir, "SELECT chat_llm_id FROM rag_robot") == [(None,)]
    assert state(data_dir) == made
