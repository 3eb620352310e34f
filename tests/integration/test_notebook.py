"""docs/notebook.md runs as written: its Python blocks are executed against real components (a
folder of English and Chinese files, the packaged embedding model, Milvus Lite + BM25, the local
OpenAI-compatible test server as the chat and API-embedding provider, a robot of a real app),
with only the page's marked placeholders replaced. Plus what the page promises beyond its code:
re-running ``from_folder`` never duplicates a chunk, the library builds what the API uses, and
Milvus Lite's one-process rule fails with a clear message."""

from __future__ import annotations

import ast
import asyncio
import inspect
import json
import os
import re
import subprocess
import sys
import textwrap
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest

from indexes.kb import KnowledgeBase, document_id_for, packaged_embedding
from rag_app.context import AppContext
from rag_app.library import RagApp, robot_chat_engine_sync
from rag_app.settings import Settings
from tests.conftest import Api
from tests.fixtures_docs import docx_bytes, markdown_bytes
from tests.integration.test_retrieval_api import ready_kb
from tests.openai_server import DEFAULT_API_KEY, OpenAIServer

DOC = Path(__file__).resolve().parents[2] / "docs" / "notebook.md"
FOLDER = "path/to/your/documents"
CHAT_URL = "https://api.example.com/v1"
CHAT_MODEL = "your-model-name"
EMBEDDING_URL = "https://api.siliconflow.cn/v1"
ROBOT_ID = "ROBOT_ID = 1"

ENGLISH = (
    "# Leave policy\n\nEmployees receive twenty days of paid annual leave each calendar year.\n\n"
    "# Expense claims\n\nTravel expenses are reimbursed within thirty days of a complete claim.\n\n"
    "# Security\n\nLaptops must use full disk encryption and a screen lock after five minutes.\n"
)
CHINESE = (
    "活期存款利率\n\n本行活期存款年利率为百分之零点二五，按季结息，每季度末月的二十日为结息日。\n\n"
    "信用卡年费\n\n普通信用卡首年免年费，当年刷卡满六次可免次年年费，白金卡年费另行规定。\n"
)
# (words of the question, what the prompt must hold, the answer): the test server answers only
# from a prompt that carries the passage, so an answer proves the retrieval reached the model.
FACTS = (
    ("annual leave", "twenty days of paid annual leave", "Employees get twenty days a year [1]."),
    ("how many days", "twenty days of paid annual leave", "Employees get twenty days a year [1]."),
    ("利率", "百分之零点二五", "活期存款年利率为百分之零点二五 [1]。"),
    ("年费", "首年免年费", "普通信用卡首年免年费 [1]。"),
)
NOT_IN_CONTEXT = "The passage is not in the prompt."


def _text(content: Any) -> str:
    if isinstance(content, list):
        return "".join(str(part.get("text", "")) for part in content if isinstance(part, dict))
    return str(content or "")


def reply(messages: list[dict[str, Any]]) -> str:
    prompt = "\n".join(_text(m.get("content")) for m in messages)
    question = _text(messages[-1].get("content")) if messages else ""
    if "Standalone question:" in question:  # the condense step: keep the question as asked
        match = re.search(r"Last message: (.*)", question)
        return match.group(1).strip() if match else question
    for words, fact, answer in FACTS:
        if words in question.lower():
            return answer if fact in prompt else NOT_IN_CONTEXT
    return "No rule for this question."


def doc_sections() -> dict[str, list[str]]:
    """The ```python blocks of the page by their ``## `` section's number ("1", "2", ...)."""
    sections: dict[str, list[str]] = {}
    section, block, in_block = "0", [], False
    for line in DOC.read_text(encoding="utf-8").splitlines():
        if in_block:
            if line.strip() == "```":
                sections.setdefault(section, []).append("\n".join(block) + "\n")
                in_block = False
            else:
                block.append(line)
        elif line.startswith("## "):
            section = line[3:].split(".", 1)[0].strip()
        elif line.strip() == "```python":
            block, in_block = [], True
    return sections


def substituted(code: str, replacements: Mapping[str, str]) -> str:
    for placeholder, value in replacements.items():
        code = code.replace(placeholder, value)
    return code


def run_blocks(blocks: list[str], replacements: Mapping[str, str]) -> dict[str, Any]:
    """Run the blocks one after another in one namespace, as notebook cells: top-level
    ``await`` runs on one event loop kept for all of them (like a kernel's); call it from a
    thread without a running loop. Returns the namespace."""
    namespace: dict[str, Any] = {"__name__": "__notebook__"}
    loop = asyncio.new_event_loop()
    try:
        for number, code in enumerate(blocks, 1):
            compiled = compile(
                substituted(code, replacements),
                f"<docs/notebook.md block {number}>",
                "exec",
                flags=ast.PyCF_ALLOW_TOP_LEVEL_AWAIT,
            )
            result = eval(compiled, namespace)  # noqa: S307  (the page's own code)
            if inspect.iscoroutine(result):
                loop.run_until_complete(result)
    finally:
        loop.close()
    return namespace


def write_folder(folder: Path) -> list[str]:
    """English and Chinese documents, plus two files that must be skipped; returns the paths
    (relative) that get indexed."""
    files = {
        "handbook.md": ENGLISH.encode(),
        "银行业务.txt": CHINESE.encode(),
        "policies/员工手册.docx": docx_bytes(),
        "guides/安装指南.md": markdown_bytes(),
        "photo.png": b"\x89PNG\r\n\x1a\n" + bytes(64),
        "empty.txt": b"",
        ".hidden/secret.md": b"# Hidden\n\nNever indexed.\n",
    }
    for name, data in files.items():
        path = folder / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    return sorted(["handbook.md", "银行业务.txt", "policies/员工手册.docx", "guides/安装指南.md"])


def assert_consistent(kb: KnowledgeBase) -> None:
    """Every file's chunks exactly once, in the vector and the keyword store alike."""
    total = kb.count()
    assert total == sum(record.chunks for record in kb.documents.values()) > 0
    assert kb.index.keyword_store.count() == total
    for relative, record in kb.documents.items():
        assert record.document_id == document_id_for(relative)
        assert kb.index.count(record.document_id) == record.chunks
        assert kb.index.keyword_store.count(record.document_id) == record.chunks


def test_the_page_has_its_placeholders() -> None:
    text = DOC.read_text(encoding="utf-8")
    for placeholder in (FOLDER, CHAT_URL, CHAT_MODEL, EMBEDDING_URL, ROBOT_ID):
        assert placeholder in text, placeholder
    sections = doc_sections()
    assert len(sections["1"]) >= 4
    assert len(sections["2"]) >= 2
    assert len(sections["3"]) >= 3
    # The headline example stays short: a knowledge base and a chat in about ten statements.
    first = ast.parse(sections["1"][0])
    assert len(first.body) <= 10


def test_indexes_exports_load_lazily() -> None:
    import indexes

    assert set(indexes.__all__) == set(indexes._EXPORTS)
    for name in indexes.__all__:
        assert getattr(indexes, name) is not None
    code = "import indexes, sys; print(sorted(m for m in sys.modules if m.startswith('llama')))"
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    )
    assert result.stdout.strip() == "[]"


def test_notebook_over_a_folder(
    tmp_path: Path,
    openai_server: OpenAIServer,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    folder = tmp_path / "documents"
    indexed = write_folder(folder)
    openai_server.chat_reply = reply
    monkeypatch.setenv("CHAT_API_KEY", DEFAULT_API_KEY)
    monkeypatch.setenv("SILICONFLOW_API_KEY", DEFAULT_API_KEY)
    replacements = {
        FOLDER: str(folder),
        CHAT_URL: openai_server.base_url,
        CHAT_MODEL: "test-chat",
        EMBEDDING_URL: openai_server.base_url,
    }
    sections = doc_sections()

    cells = run_blocks(sections["1"], replacements)
    output = capsys.readouterr().out
    response = cells["response"]
    assert response.response == "Employees get twenty days a year [1]."
    assert response.source_nodes[0].node.metadata["file_name"] == "handbook.md"
    assert "handbook.md" in output
    best = cells["result"].chunks[0]
    assert "活期存款" in best.text
    assert best.file_name == "银行业务.txt"
    assert best.keyword_rank == 1
    kb: KnowledgeBase = cells["kb"]
    assert sorted(kb.documents) == indexed
    assert sorted(kb.last_sync.unchanged) == indexed  # the later cells re-ran from_folder
    assert set(kb.last_sync.skipped) == {"photo.png", "empty.txt"}
    assert kb.stores.index_dir == folder.resolve() / ".rag_index"
    # The conversation cell: the system prompt, the history condensed, the streamed answer.
    assert output.count("Employees get twenty days a year [1].") == 2
    chats = [r.body for r in openai_server.requests_to("/chat/completions")]
    assert all(r.key_ok for r in openai_server.requests_to("/chat/completions"))
    assert any("Standalone question" in json.dumps(body, ensure_ascii=False) for body in chats)
    assert any("You are the HR assistant" in json.dumps(body) for body in chats)
    passages = cells["passages_only"]
    assert "年费" in passages.response
    assert passages.source_nodes  # retrieval-only: the passages themselves
    assert_consistent(kb)

    cells = run_blocks(sections["2"], replacements)
    kb_bge: KnowledgeBase = cells["kb_bge"]
    assert sorted(kb_bge.documents) == indexed
    assert kb_bge.spec.collection_name != kb.spec.collection_name
    assert openai_server.requests_to("/embeddings"), "the API embedding model was not used"
    assert all(r.key_ok for r in openai_server.requests_to("/embeddings"))
    assert_consistent(kb_bge)
    assert cells["deepseek"].model_type == "chat"


def test_from_folder_again_never_duplicates(tmp_path: Path) -> None:
    folder = tmp_path / "documents"
    indexed = write_folder(folder)
    index_dir = tmp_path / "index"
    first = KnowledgeBase.from_folder(folder, index_dir=index_dir, chunk_size=64, chunk_overlap=0)
    assert sorted(first.last_sync.added) == indexed
    assert_consistent(first)
    total = first.count()

    again = KnowledgeBase.from_folder(folder, index_dir=index_dir, chunk_size=64, chunk_overlap=0)
    assert sorted(again.last_sync.unchanged) == indexed
    assert again.last_sync.added == again.last_sync.updated == []
    assert again.count() == total

    # Every file written again by document id: replaced, not added.
    rebuilt = KnowledgeBase.from_folder(
        folder, index_dir=index_dir, chunk_size=64, chunk_overlap=0, rebuild=True
    )
    assert sorted(rebuilt.last_sync.updated) == indexed
    assert rebuilt.count() == total
    assert_consistent(rebuilt)

    # A changed, a deleted and a new file.
    (folder / "handbook.md").write_text(
        "# Leave policy\n\nEmployees receive twenty-five days of annual leave.\n", "utf-8"
    )
    (folder / "guides" / "安装指南.md").unlink()
    (folder / "faq.txt").write_text("The office opens at eight in the morning.\n", "utf-8")
    changed = KnowledgeBase.from_folder(folder, index_dir=index_dir, chunk_size=64, chunk_overlap=0)
    assert changed.last_sync.updated == ["handbook.md"]
    assert changed.last_sync.removed == ["guides/安装指南.md"]
    assert changed.last_sync.added == ["faq.txt"]
    assert_consistent(changed)
    texts = [c.text for c in changed.search("annual leave days", top_k=10).chunks]
    assert any("twenty-five days" in t for t in texts)
    assert not any("twenty days of paid" in t for t in texts)

    # Other chunk sizes re-embed everything; another embedding model rebuilds the index.
    resized = KnowledgeBase.from_folder(folder, index_dir=index_dir, chunk_size=128)
    assert len(resized.last_sync.updated) == len(changed.documents)
    assert_consistent(resized)
    assert resized.count() <= changed.count()

    # Unreadable now: the earlier version's chunks go.
    (folder / "faq.txt").write_bytes(b"")
    emptied = KnowledgeBase.from_folder(folder, index_dir=index_dir, chunk_size=128)
    assert emptied.last_sync.removed == ["faq.txt"]
    assert "faq.txt" in emptied.last_sync.skipped
    assert_consistent(emptied)

    emptied.drop()
    assert not list(index_dir.glob("*.manifest.json"))


def test_embedding_change_rebuilds(tmp_path: Path, openai_server: OpenAIServer) -> None:
    from indexes.specs import ModelSpec

    folder = tmp_path / "documents"
    write_folder(folder)
    api_model = ModelSpec(
        provider="openai-compatible",
        model_type="embedding",
        model_name="test-embed",
        base_url=openai_server.base_url,
        api_key=DEFAULT_API_KEY,
    )
    by_api = KnowledgeBase.from_folder(folder, embedding=api_model, name="handbook")
    assert_consistent(by_api)
    # 64 dimensions before, 384 now: the old collection is dropped, every file embedded anew.
    local = KnowledgeBase.from_folder(folder, embedding=packaged_embedding(), name="handbook")
    assert sorted(local.last_sync.added) == sorted(by_api.documents)
    assert_consistent(local)
    assert local.count() == sum(r.chunks for r in local.documents.values())


def _other_process(
    code: str, env: Mapping[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, **(env or {})},
        check=False,
    )


def test_another_process_is_told_milvus_lite_is_taken(tmp_path: Path) -> None:
    folder = tmp_path / "documents"
    write_folder(folder)
    KnowledgeBase.from_folder(folder)  # this process now serves <folder>/.rag_index/milvus.db
    result = _other_process(
        f"""
        from indexes import KnowledgeBase, StoreError
        try:
            KnowledgeBase.from_folder({str(folder)!r})
        except StoreError as exc:
            print(exc)
        """
    )
    assert "is open in another process" in result.stdout, result.stderr[-2000:]


def library_env(settings: Settings) -> dict[str, str]:
    """How a second program is pointed at the instance: the variables `rag-app serve` reads."""
    return {
        "RAG_ENVIRONMENT": settings.environment,
        "RAG_DATA_DIR": str(settings.data_dir),
        "RAG_DATABASE__URL": settings.database_url,
    }


async def test_notebook_with_a_robot(
    api: Api,
    openai_server: OpenAIServer,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    openai_server.chat_reply = reply
    user, admin = await api.user(), await api.admin()
    kb = await ready_kb(api, user)
    llm = await api.create_llm(
        admin,
        provider="openai-compatible",
        model_type="chat",
        model_name="test-chat",
        base_url=openai_server.base_url,
    )
    await api.create_api_key(admin, llm["id"], api_key=DEFAULT_API_KEY)
    robot = await api.create_robot(user, knowledge_ids=[kb["id"]], top_k=3, chat_llm_id=llm["id"])
    env = library_env(api.ctx.settings)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    assert Settings().index_dir == api.ctx.settings.index_dir

    # A second AppContext in the app's process: both share the Milvus Lite database.
    cells = await asyncio.to_thread(
        run_blocks, doc_sections()["3"], {ROBOT_ID: f"ROBOT_ID = {robot['id']}"}
    )
    output = capsys.readouterr().out
    assert cells["response"].response == "活期存款年利率为百分之零点二五 [1]。"
    assert "Employees get twenty days a year [1]." in output  # the streamed program
    assert "普通信用卡首年免年费 [1]。" in output  # the synchronous helper
    calls = openai_server.requests_to("/chat/completions")
    assert calls
    assert all(call.key_ok for call in calls)  # the key stored encrypted, decrypted alike

    # Exactly the API's retrieval for the robot.
    result = cells["result"]
    assert "活期存款" in result.chunks[0].text
    response = await api.client.post(
        f"/api/v1/robots/{robot['id']}/retrieval-test",
        headers=user.headers,
        json={"query": "活期存款的利率是多少？"},
    )
    assert response.status_code == 200, response.text
    items = response.json()["items"]
    assert [i["node_id"] for i in items] == [c.node_id for c in result.chunks]
    assert [i["score"] for i in items] == pytest.approx([c.score for c in result.chunks])

    # Another process while this one holds Milvus Lite: refused, with the reason.
    other = await asyncio.to_thread(
        _other_process,
        f"""
        import asyncio
        from indexes.errors import StoreError
        from rag_app.library import search
        try:
            asyncio.run(search({robot["id"]}, "活期存款"))
        except StoreError as exc:
            print(exc)
        """,
        env,
    )
    assert "is open in another process" in other.stdout, other.stderr[-2000:]
    assert "rag-app serve" in other.stdout


async def test_library_robot_rules(api: Api) -> None:
    from rag_app.errors import NotFound, ValidationFailed

    owner = await api.user()
    robot = await api.robot(owner)
    disabled = await api.robot(owner, status=0)
    other = await api.robot(owner)
    chat = await api.chat_session(owner, robot.id or 0)
    await api.message(chat.session_id, 1, content="年假有几天？")
    await api.message(chat.session_id, 2, role="assistant", content="五天。")
    settings = api.ctx.settings

    async with RagApp(settings) as app:
        engine = await app.chat_engine(robot.id or 0, session_id=chat.session_id)
        assert [m.content for m in engine.chat_history] == ["年假有几天？", "五天。"]
        with pytest.raises(ValidationFailed, match="disabled"):
            await app.chat_engine(disabled.id or 0)
        assert (await app.robot_spec(disabled.id or 0)).robot_id == disabled.id
        with pytest.raises(NotFound):
            await app.chat_engine(10**9)
        with pytest.raises(NotFound):  # a session of another robot
            await app.chat_engine(other.id or 0, session_id=chat.session_id)
        empty = await app.search(robot.id or 0, "年假")
        assert empty.chunks == []  # no knowledge base bound

    # A borrowed context stays open (its pool belongs to this event loop, as in the app's
    # own handlers).
    ctx = AppContext.create(settings)
    try:
        async with RagApp(ctx=ctx) as borrowed:
            await borrowed.robot_spec(robot.id or 0)
        assert (await RagApp(ctx=ctx).robot_spec(robot.id or 0)).name == "helper"
    finally:
        await ctx.close()

    # The synchronous helper inside a running event loop (a notebook's): built in a thread.
    engine = robot_chat_engine_sync(
        robot.id or 0, settings=settings, history=[{"role": "user", "content": "hello"}]
    )
    answer = engine.chat("年假有几天？")
    assert "未配置对话模型" in answer.response  # no chat model: retrieval-only
