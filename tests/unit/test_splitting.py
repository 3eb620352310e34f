"""Chunking guarantees on long generated English, Chinese and mixed text, with the packaged
model's tokenizer and with tiktoken cl100k_base: sizes, overlap, no loss, no duplication,
sentence boundaries, ids and metadata."""

from __future__ import annotations

import itertools
import random
import re
from collections.abc import Callable
from dataclasses import dataclass

import pytest
from llama_index.core.node_parser import SentenceSplitter
from llama_index.core.schema import Document, MetadataMode

from indexes.errors import IndexesError
from indexes.models import build_tokenizer
from indexes.specs import PACKAGED_EMBEDDING, ModelSpec
from indexes.splitting import build_splitter, split_documents, split_sentences
from tests import openai_server as stand_in

Tokenizer = Callable[[str], list[int]]
forbid_global_settings = stand_in.forbid_global_settings  # the fixture, for pytest to find here
pytestmark = pytest.mark.usefixtures("forbid_global_settings")

HANZI = (
    "的一是在不了有和人这中大为上个国我以要他时来用们生到作地于出就分对成会可主发年动同工也能"
    "下过子说产种面而方后多定行学法所民得经十三之进着等部度家电力里如水化高自二理起小物现实加量"
    "都两体制机当使点从业本去把性好应开它合还因由其些然前外天政四日那社义事平形相全表间样与关各"
)
WORDS = [
    "the",
    "report",
    "describes",
    "how",
    "our",
    "system",
    "stores",
    "documents",
    "and",
    "retrieves",
    "relevant",
    "passages",
    "for",
    "questions",
    "asked",
    "by",
    "users",
    "in",
    "many",
    "departments",
    "across",
    "the",
    "company",
    "every",
    "quarter",
]


@pytest.fixture(scope="module", params=["packaged", "tiktoken"])
def tokenizer(request: pytest.FixtureRequest) -> Tokenizer:
    if request.param == "packaged":
        spec = ModelSpec(provider="local", model_name=PACKAGED_EMBEDDING, model_type="embedding")
    else:
        spec = ModelSpec(
            provider="openai", model_name="text-embedding-3-small", model_type="embedding"
        )
    return build_tokenizer(spec)


@dataclass
class Text:
    text: str
    sentences: list[str]  # in order; the text is these plus whitespace


def english(rng: random.Random, i: int, low: int = 4, high: int = 18) -> str:
    body = " ".join(rng.choice(WORDS) for _ in range(rng.randint(low, high)))
    return f"Sentence {i} says {body}."


def chinese(rng: random.Random, i: int, low: int = 4, high: int = 22) -> str:
    body = "".join(rng.choice(HANZI) for _ in range(rng.randint(low, high)))
    return f"第{i}句{body}" + rng.choice("。！？；")


def generate(kind: str, count: int, seed: int = 7) -> Text:
    """Sentences of the kind asked, joined the way documents join them: spaces after English
    sentences, nothing after Chinese ones, a line break or a blank line now and then."""
    rng = random.Random(seed)
    parts: list[str] = []
    sentences: list[str] = []
    for i in range(count):
        is_chinese = kind == "chinese" or (kind == "mixed" and rng.random() < 0.5)
        sentence = chinese(rng, i) if is_chinese else english(rng, i)
        sentences.append(sentence)
        parts.append(sentence)
        roll = rng.random()
        if roll < 0.08:
            parts.append("\n\n")
        elif roll < 0.15:
            parts.append("\n")
        elif not is_chinese:
            parts.append(" ")
    return Text("".join(parts), sentences)


def squash(text: str) -> str:
    return re.sub(r"\s+", "", text)


def sentence_ranges(source: Text, chunks: list[str]) -> list[tuple[int, int]]:
    """Each chunk as (first, last) sentence index; fails when a chunk starts or ends inside a
    sentence."""
    starts: dict[int, int] = {}
    ends: dict[int, int] = {}
    offset = 0
    for index, sentence in enumerate(source.sentences):
        starts[offset] = index
        offset += len(squash(sentence))
        ends[offset] = index
    full = squash(source.text)
    ranges: list[tuple[int, int]] = []
    search_from = 0
    for chunk in chunks:
        at = full.find(squash(chunk), search_from)
        assert at >= 0, f"chunk not found in order: {chunk[:60]!r}"
        end = at + len(squash(chunk))
        assert at in starts, f"chunk starts inside a sentence: {chunk[:60]!r}"
        assert end in ends, f"chunk ends inside a sentence: {chunk[-60:]!r}"
        ranges.append((starts[at], ends[end]))
        search_from = at + 1
    return ranges


def check_guarantees(
    source: Text,
    chunks: list[str],
    tokenizer: Tokenizer,
    chunk_size: int,
    overlap: int,
    *,
    overlap_by_sentence: bool = False,
) -> None:
    assert chunks
    sizes = [len(tokenizer(chunk)) for chunk in chunks]
    assert max(sizes) <= chunk_size
    ranges = sentence_ranges(source, chunks)
    assert ranges[0][0] == 0
    assert ranges[-1][1] == len(source.sentences) - 1
    shared_pairs = 0
    for (first_a, last_a), (first_b, last_b) in itertools.pairwise(ranges):
        assert first_a < first_b, "a chunk repeats another"
        assert last_a < last_b, "a chunk swallows the next"
        assert first_b <= last_a + 1, "sentences between two chunks were lost"
        repeated = source.sentences[first_b : last_a + 1]
        # Duplication is limited to the overlap (LlamaIndex sizes it sentence by sentence)...
        if overlap_by_sentence:
            assert sum(len(tokenizer(s)) for s in repeated) <= overlap
        else:
            assert len(tokenizer(" ".join(repeated))) <= overlap
        # ...and the overlap is there whenever the boundary sentence fits in it.
        if overlap and len(tokenizer(source.sentences[last_a])) <= overlap:
            assert repeated, "no overlap although the last sentence fits in it"
        shared_pairs += bool(repeated)
    if overlap:
        assert shared_pairs > len(chunks) // 2


@pytest.mark.parametrize("kind", ["english", "chinese", "mixed"])
@pytest.mark.parametrize(("chunk_size", "overlap"), [(128, 40), (256, 0), (500, 60)])
def test_guarantees(kind: str, chunk_size: int, overlap: int, tokenizer: Tokenizer) -> None:
    source = generate(kind, 1500)
    chunks = build_splitter(chunk_size, overlap, tokenizer).split_text(source.text)
    assert len(chunks) > 10
    check_guarantees(source, chunks, tokenizer, chunk_size, overlap)


def test_chinese_sentence_ends_split_text_without_loss() -> None:
    text = (
        "第一句。第二句！“引用的话。”然后呢？结束；\n\n"
        "Hello world. Second one here.\nNew line 第三句。"
    )
    sentences = split_sentences(text)
    assert "".join(sentences) == text
    assert sentences[:5] == ["第一句。", "第二句！", "“引用的话。”", "然后呢？", "结束；"]
    assert "Hello world. " in sentences
    assert "Second one here.\n" in sentences


@pytest.mark.parametrize("language", ["english", "chinese"])
def test_a_sentence_longer_than_a_chunk_is_cut_without_loss(
    language: str, tokenizer: Tokenizer
) -> None:
    if language == "english":
        clauses = [f"clause w{i:04d} of one endless sentence" for i in range(300)]
        sentence = ", ".join(clauses) + "."
    else:
        clauses = [f"第{i}段没有句号的长句子" for i in range(300)]
        sentence = "，".join(clauses) + "。"
    text = f"A short one. {sentence} 短句。"
    chunks = build_splitter(64, 16, tokenizer).split_text(text)
    assert max(len(tokenizer(chunk)) for chunk in chunks) <= 64
    joined = squash("".join(chunks))
    marker = re.compile(r"w\d{4}" if language == "english" else r"第\d+段")
    assert set(marker.findall(joined)) == set(marker.findall(text))
    assert joined.startswith(squash("A short one."))
    assert joined.endswith("短句。")


def test_sizes_hold_when_joining_costs_tokens() -> None:
    """Summed sentence sizes undercount when the joint costs tokens of its own (BPE merges can
    do that); the splitter measures the joined chunk and shrinks until it fits."""

    def joint_penalty(text: str) -> list[int]:
        return [0] * (len(text.split()) + 3 * text.count(". S"))

    source = generate("english", 400)
    plain = SentenceSplitter(
        chunk_size=80,
        chunk_overlap=25,
        tokenizer=joint_penalty,
        chunking_tokenizer_fn=split_sentences,
    )
    assert max(len(joint_penalty(c)) for c in plain.split_text(source.text)) > 80
    chunks = build_splitter(80, 25, joint_penalty).split_text(source.text)
    check_guarantees(source, chunks, joint_penalty, 80, 25, overlap_by_sentence=True)


def test_a_chunk_size_below_one_character_is_an_indexes_error() -> None:
    def costly_characters(text: str) -> list[int]:
        return [0] * (5 * len(text))

    with pytest.raises(IndexesError, match="at most 4 tokens"):
        build_splitter(4, 0, costly_characters).split_text("abc def")


def test_empty_and_blank_text_give_no_chunks(tokenizer: Tokenizer) -> None:
    splitter = build_splitter(64, 8, tokenizer)
    assert splitter.split_text("") == []
    assert splitter.split_text(" \n\n \t") == []


@pytest.mark.parametrize(("size", "overlap"), [(0, 0), (100, 100), (100, 150), (100, -1)])
def test_invalid_sizes_are_refused(size: int, overlap: int, tokenizer: Tokenizer) -> None:
    with pytest.raises(IndexesError, match="chunk"):
        build_splitter(size, overlap, tokenizer)


def pages() -> list[Document]:
    first = generate("mixed", 120, seed=1).text
    second = generate("mixed", 120, seed=2).text
    return [
        Document(text=first, metadata={"file_name": "手册.pdf", "page": 1}),
        Document(text="", metadata={"file_name": "手册.pdf", "page": 2}),
        Document(
            text=second, metadata={"file_name": "手册.pdf", "page": 3, "heading_path": "A > B"}
        ),
    ]


def test_split_documents_numbers_chunks_across_sections(tokenizer: Tokenizer) -> None:
    documents = pages()
    splitter = build_splitter(128, 20, tokenizer)
    nodes = split_documents(documents, splitter, knowledge_id=3, document_id=42)

    assert [n.node_id for n in nodes] == [f"42-{i}" for i in range(len(nodes))]
    assert [n.metadata["position"] for n in nodes] == list(range(len(nodes)))
    assert {n.metadata["page"] for n in nodes} == {1, 3}
    assert all(n.metadata["knowledge_id"] == 3 and n.metadata["document_id"] == 42 for n in nodes)
    assert all(n.metadata["file_name"] == "手册.pdf" for n in nodes)
    assert {n.metadata.get("heading_path") for n in nodes} == {None, "A > B"}
    # What is embedded is exactly the sized text; the LLM sees the source but not the ids.
    for node in nodes:
        assert node.get_content(MetadataMode.EMBED) == node.text
        assert len(tokenizer(node.text)) <= 128
        llm_view = node.get_content(MetadataMode.LLM)
        assert "手册.pdf" in llm_view
        assert "document_id" not in llm_view
    # Links follow the final ids, within a section.
    second = nodes[1]
    assert second.prev_node is not None
    assert second.prev_node.node_id == "42-0"
    # The inputs are untouched and a re-run gives the same chunks under the same ids.
    assert "document_id" not in documents[0].metadata
    again = split_documents(documents, splitter, knowledge_id=3, document_id=42)
    assert [(n.node_id, n.text) for n in again] == [(n.node_id, n.text) for n in nodes]


def test_split_documents_of_nothing(tokenizer: Tokenizer) -> None:
    splitter = build_splitter(128, 20, tokenizer)
    assert split_documents([], splitter, knowledge_id=1, document_id=1) == []
    blank = [Document(text="  \n ", metadata={"page": 1})]
    assert split_documents(blank, splitter, knowledge_id=1, document_id=1) == []
