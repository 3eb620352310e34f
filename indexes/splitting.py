"""Chunking: LlamaIndex's SentenceSplitter with Chinese sentence boundaries and exact token sizes.

What ``chunk_size`` bounds: the chunk text, counted with the tokenizer passed in (the embedding
model's own, see ``indexes.models.build_tokenizer``), without special tokens. Metadata is not
counted because it is not embedded: every metadata key is excluded from the embedding input, so
``node.get_content(MetadataMode.EMBED) == node.text`` and the embedding model sees exactly what
was sized. The LLM view keeps file name, page and heading for citations but not the ids.

Sentence boundaries are LlamaIndex's punkt (English) plus 。！？； and line breaks. Chunks are
built from whole sentences, so the overlap is whole sentences too: up to ``chunk_overlap``
tokens of the previous chunk's last sentences (a sentence longer than that is not repeated).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from typing import Any

from llama_index.core.node_parser import NodeParser, SentenceSplitter
from llama_index.core.node_parser.text.utils import split_by_char, split_by_regex, split_by_sep
from llama_index.core.schema import BaseNode, Document, TextNode
from llama_index.core.utils import globals_helper

from indexes.errors import IndexesError

Tokenizer = Callable[[str], list[int]]

KNOWLEDGE_ID = "knowledge_id"
DOCUMENT_ID = "document_id"
POSITION = "position"
# Bookkeeping keys: useless (even misleading) to the LLM.
_ID_KEYS = (KNOWLEDGE_ID, DOCUMENT_ID, POSITION)

# Split points after a Chinese sentence end (with any closing quotes or brackets after it) and
# after a run of line breaks. ASCII ! and ? are left to punkt: they occur inside URLs.
_SENTENCE_BREAK = re.compile(
    r"(?<=[。！？；｡])(?![。！？；｡”’」』）》】])"
    r"|(?<=[。！？；｡][”’」』）》】])(?![”’」』）》】])"
    r"|(?<=\n)(?!\n)"
)
# Inside a sentence too long for one chunk: cut at clause punctuation, English and Chinese.
_CLAUSE_REGEX = "[^,.;:，、；：。！？]+[,.;:，、；：。！？]?|[,.;:，、；：。！？]"
# Sizing by summed sentence sizes can undercount at a joint (BPE merges across it); each retry
# shrinks the budget by the overshoot, so two rounds are the most seen in practice.
_MAX_RESIZE_ROUNDS = 8


def _punkt_sentences(text: str) -> list[str]:
    """English sentences by punkt, losslessly (LlamaIndex's helper drops leading whitespace)."""
    starts = [start for start, _ in globals_helper.punkt_tokenizer.span_tokenize(text)]
    if not starts:
        return [text]
    starts[0] = 0
    return [text[a:b] for a, b in zip(starts, [*starts[1:], len(text)], strict=True)]


def split_sentences(text: str) -> list[str]:
    """Sentences of mixed Chinese/English text; ``"".join(result) == text``."""
    sentences: list[str] = []
    for piece in _SENTENCE_BREAK.split(text):
        if piece:
            sentences.extend(s for s in _punkt_sentences(piece) if s)
    return sentences


class ChunkSplitter(SentenceSplitter):
    """SentenceSplitter whose sentences end at 。！？；and line breaks as well as English ends,
    whose chunks never exceed ``chunk_size`` tokens as measured on the joined text, and which
    numbers the chunks of each document (``position``, id ``f"{document_id}-{position}"``)."""

    def __init__(self, *, chunk_size: int, chunk_overlap: int, tokenizer: Tokenizer) -> None:
        super().__init__(
            chunk_size=chunk_size,
            chunk_overlap=chunk_overlap,
            tokenizer=tokenizer,
            chunking_tokenizer_fn=split_sentences,
            secondary_chunking_regex=_CLAUSE_REGEX,
        )
        # No paragraph level: paragraphs that fit would stay atomic, and then the overlap (whole
        # splits only) would almost never happen. Line breaks are sentence ends instead.
        self._split_fns = [split_sentences]
        self._sub_sentence_split_fns = [split_by_regex(_CLAUSE_REGEX), split_by_sep(" ")]
        self._sub_sentence_split_fns.append(split_by_char())

    @classmethod
    def class_name(cls) -> str:
        return "ChunkSplitter"

    def split_text_metadata_aware(self, text: str, metadata_str: str) -> list[str]:
        # Metadata is never embedded (see module docstring), so it takes no room in a chunk.
        return self._split_text(text, chunk_size=self.chunk_size)

    def _split_text(self, text: str, chunk_size: int) -> list[str]:
        budget = chunk_size
        for _ in range(_MAX_RESIZE_ROUNDS):
            try:
                chunks = [c for c in super()._split_text(text, budget) if c.strip()]
            except ValueError:  # "Single token exceeded chunk size": one character is too big
                break
            overshoot = max((self._token_size(c) - chunk_size for c in chunks), default=0)
            if overshoot <= 0:
                return chunks
            budget -= overshoot
            if budget < 1:
                break
        raise IndexesError(
            f"The text could not be cut into chunks of at most {chunk_size} tokens; "
            "increase the knowledge base's chunk size."
        )

    def _parse_nodes(
        self, nodes: Sequence[BaseNode], show_progress: bool = False, **kwargs: Any
    ) -> list[BaseNode]:
        parsed: list[BaseNode] = []
        positions: dict[str, int] = {}
        for source in nodes:
            # Positions and ids run across all sections (pages, sheets) of one document.
            key = str(source.metadata.get(DOCUMENT_ID, source.node_id))
            for node in super()._parse_nodes([source], show_progress=False, **kwargs):
                position = positions.get(key, 0)
                positions[key] = position + 1
                # Ids are set here, before LlamaIndex links prev/next nodes by id.
                node.id_ = f"{key}-{position}"
                node.metadata[POSITION] = position
                keys = {*source.metadata, POSITION}
                # Fresh lists: LlamaIndex hands every node the source document's list object.
                node.excluded_embed_metadata_keys = sorted(keys)
                node.excluded_llm_metadata_keys = sorted(
                    {*source.excluded_llm_metadata_keys, *_ID_KEYS}
                )
                parsed.append(node)
        return parsed


def build_splitter(chunk_size: int, chunk_overlap: int, tokenizer: Tokenizer) -> ChunkSplitter:
    """A node parser cutting text into chunks of at most ``chunk_size`` tokens of ``tokenizer``,
    consecutive chunks sharing up to ``chunk_overlap`` tokens of whole sentences."""
    if chunk_size < 1:
        raise IndexesError(f"The chunk size must be at least 1 token, not {chunk_size}.")
    if not 0 <= chunk_overlap < chunk_size:
        raise IndexesError(
            f"The chunk overlap ({chunk_overlap} tokens) must be at least 0 and smaller than "
            f"the chunk size ({chunk_size} tokens)."
        )
    return ChunkSplitter(chunk_size=chunk_size, chunk_overlap=chunk_overlap, tokenizer=tokenizer)


def prepare_documents(
    documents: Sequence[Document], *, knowledge_id: int, document_id: int
) -> list[Document]:
    """Copies of ``documents`` carrying the ids every chunk needs (the inputs stay untouched)."""
    prepared: list[Document] = []
    for document in documents:
        copy = document.model_copy(deep=True)
        copy.metadata[KNOWLEDGE_ID] = knowledge_id
        copy.metadata[DOCUMENT_ID] = document_id
        prepared.append(copy)
    return prepared


def split_documents(
    documents: Sequence[Document], splitter: NodeParser, *, knowledge_id: int, document_id: int
) -> list[TextNode]:
    """The chunks of one document (all its sections), in order, with deterministic ids
    ``f"{document_id}-{position}"`` so that a re-ingest overwrites the same ids.

    Metadata: knowledge_id, document_id, position (0-based within the document) and whatever
    the reader put on each section (file_name, page, slide, sheet, heading_path, ...).
    """
    prepared = prepare_documents(documents, knowledge_id=knowledge_id, document_id=document_id)
    nodes = splitter.get_nodes_from_documents(prepared)
    chunks = [node for node in nodes if isinstance(node, TextNode)]
    if not isinstance(splitter, ChunkSplitter):
        # A foreign parser numbers nothing: do it here (its prev/next links keep its own ids).
        for position, node in enumerate(chunks):
            node.id_ = f"{document_id}-{position}"
            node.metadata[POSITION] = position
    return chunks
