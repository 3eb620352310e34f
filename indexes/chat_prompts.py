"""The text of the chat engines: the answer rules and the condense prompt they send, their fixed
answers in English and Chinese, and chunks written as the numbered passages that answers cite.
The language of a fixed answer follows the question's (see :func:`is_chinese`)."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from llama_index.core.schema import MetadataMode, NodeWithScore

ANSWER_RULES = """\
You answer questions from a knowledge base. Follow these rules:
- Answer using only the numbered passages in the context below, not general knowledge.
- Cite the passages you use by their numbers in square brackets, such as [1] or [2][3], right \
after the statements they support; the numbers are the passages' order in the context.
- If the passages do not contain the answer, say plainly that the knowledge base does not \
cover it, instead of guessing.
- Answer in the language of the user's question: a question in Chinese gets an answer in \
Chinese, a question in English an answer in English.
"""
CONTEXT_BLOCK = "\nContext:\n---------------------\n{context_str}\n---------------------\n"
REFINE_BLOCK = (
    "\nMore context:\n---------------------\n{context_msg}\n---------------------\n"
    "Draft answer from earlier passages:\n{existing_answer}\n"
    "Improve the draft with these passages if they help; keep its citations.\n"
)
CHINESE_ANSWER = "\nThe question is in Chinese: answer in Chinese. 用户用中文提问，请用中文回答。\n"
CONDENSE_PROMPT = """\
Rewrite the user's last message as a standalone question that can be understood without the \
conversation, to search a knowledge base with. Resolve references ("it", "that policy") from \
the conversation. Keep the language of the last message (a Chinese message stays Chinese). \
Reply with the question only.

Conversation:
{chat_history}

Last message: {question}
Standalone question: """

NOTHING_FOUND = {
    False: "The knowledge base has no passage about this question.",
    True: "知识库中没有与该问题相关的内容。",
}
NO_MODEL_HEADER = {
    False: "No chat model is configured for this robot; the most relevant passages are:",
    True: "该机器人未配置对话模型，以下是最相关的段落：",
}
NO_MODEL_NOTHING_FOUND = {
    False: "No chat model is configured for this robot, and no passage in its knowledge bases "
    "matches the question.",
    True: "该机器人未配置对话模型，知识库中也没有与该问题相关的段落。",
}

_HAN = re.compile(r"[\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff]")
_LATIN_WORD = re.compile(r"[A-Za-z]+")


def is_chinese(text: str) -> bool:
    """Mostly Chinese: at least as many Han characters as Latin words ("RAG 是什么" is
    Chinese, "What does 年假 mean?" is not)."""
    han = len(_HAN.findall(text))
    return han > 0 and han >= len(_LATIN_WORD.findall(text))


def source_label(metadata: Mapping[str, Any], *, chinese: bool = False) -> str:
    """Where a chunk comes from: "handbook.pdf, page 3, Leave > Annual" (or in Chinese)."""
    parts = [str(metadata.get("file_name") or ("未知文件" if chinese else "unknown file"))]
    page, slide, sheet = metadata.get("page"), metadata.get("slide"), metadata.get("sheet")
    start, end = metadata.get("row_start"), metadata.get("row_end")
    if page is not None:
        parts.append(f"第 {page} 页" if chinese else f"page {page}")
    if slide is not None:
        parts.append(f"第 {slide} 张幻灯片" if chinese else f"slide {slide}")
    if sheet:
        parts.append(f"工作表 {sheet}" if chinese else f"sheet {sheet}")
    if start is not None:
        rows = f"{start}–{end}" if end is not None and end != start else f"{start}"
        parts.append(f"第 {rows} 行" if chinese else f"rows {rows}")
    if metadata.get("heading_path"):
        parts.append(str(metadata["heading_path"]))
    return ("，" if chinese else ", ").join(parts)


def passage(number: int, node: NodeWithScore, *, chinese: bool = False) -> str:
    """A chunk as it appears in the context and in retrieval-only answers: "[n] source\\ntext"."""
    text = node.node.get_content(metadata_mode=MetadataMode.NONE).strip()
    return f"[{number}] {source_label(node.node.metadata, chinese=chinese)}\n{text}"
