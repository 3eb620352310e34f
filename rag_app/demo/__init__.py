"""The demo of `rag-app demo`: documents about rag_app shipped with the package (English and
Chinese), and the knowledge base and robot built from them (rag_app.demo.setup)."""

from __future__ import annotations

import importlib.resources
from pathlib import Path

KNOWLEDGE_NAME = "rag_app demo"
ROBOT_NAME = "rag_app demo robot"
# Answered by rag_app-guide.md and 知识库与机器人使用说明.md: the tests check those passages.
DEFAULT_QUESTIONS = (
    "How large are the chunks that a knowledge base splits documents into?",
    "机器人支持哪几种检索模式？",
)


def docs_dir() -> Path:
    """The shipped documents' folder (package data, installed with rag_app)."""
    return Path(str(importlib.resources.files("rag_app.demo") / "docs"))


def shipped_documents() -> list[Path]:
    return sorted(path for path in docs_dir().iterdir() if path.is_file())
