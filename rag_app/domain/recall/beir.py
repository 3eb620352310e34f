"""Reading a BEIR-format dataset: ``corpus.jsonl`` (``_id``, ``title``, ``text``),
``queries.jsonl`` (``_id``, ``text``) and ``qrels/test.tsv`` (``query-id``, ``corpus-id``,
``score``; a header line is optional)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from rag_app.errors import ValidationFailed


@dataclass(frozen=True)
class CorpusRecord:
    corpus_id: str
    text: str  # title and text, as one document


@dataclass
class BeirDataset:
    path: Path
    queries: dict[str, str]  # only the queries with relevant documents, in file order
    qrels: dict[str, dict[str, int]]  # query id -> corpus id -> grade (> 0)

    @property
    def corpus_path(self) -> Path:
        return self.path / "corpus.jsonl"

    def corpus(self) -> Iterator[CorpusRecord]:
        for number, row in _jsonl(self.corpus_path):
            corpus_id = _id(row, self.corpus_path, number)
            title = str(row.get("title") or "").strip()
            text = str(row.get("text") or "").strip()
            yield CorpusRecord(corpus_id, f"{title}\n\n{text}".strip() if title else text)

    @property
    def relevant_ids(self) -> set[str]:
        return {doc for relevant in self.qrels.values() for doc in relevant}


def load_dataset(path: Path, qrels: Path | None = None, limit: int | None = None) -> BeirDataset:
    """The queries that have relevant documents (the first ``limit`` of them) and their qrels.
    Raises ValidationFailed naming what is missing or malformed."""
    if not path.is_dir():
        raise ValidationFailed(f"dataset {path} not found (a BEIR folder is expected)")
    qrels_path = qrels or path / "qrels" / "test.tsv"
    for needed in (path / "queries.jsonl", qrels_path):
        if not needed.is_file():
            raise ValidationFailed(f"{needed} not found")
    judgements = _read_qrels(qrels_path)
    queries: dict[str, str] = {}
    queries_path = path / "queries.jsonl"
    for number, row in _jsonl(queries_path):
        query_id = _id(row, queries_path, number)
        if query_id in judgements and str(row.get("text") or "").strip():
            queries[query_id] = str(row["text"]).strip()
            if limit is not None and len(queries) >= limit:
                break
    if not queries:
        raise ValidationFailed(
            f"no query of {queries_path} has a relevant document in {qrels_path}"
        )
    return BeirDataset(path, queries, {qid: judgements[qid] for qid in queries})


def _jsonl(path: Path) -> Iterator[tuple[int, dict[str, object]]]:
    with path.open(encoding="utf-8") as handle:
        for number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as exc:
                raise ValidationFailed(f"{path}, line {number}: not JSON ({exc.msg})") from exc
            if not isinstance(row, dict):
                raise ValidationFailed(f"{path}, line {number}: not a JSON object")
            yield number, row


def _id(row: dict[str, object], path: Path, number: int) -> str:
    value = row.get("_id")
    if value is None or not str(value).strip():
        raise ValidationFailed(f"{path}, line {number}: no _id")
    return str(value).strip()


def _read_qrels(path: Path) -> dict[str, dict[str, int]]:
    qrels: dict[str, dict[str, int]] = {}
    with path.open(encoding="utf-8") as handle:
        for number, line in enumerate(handle, start=1):
            parts = line.split()
            if not parts:
                continue
            if len(parts) == 4:  # TREC style: query-id, iteration, corpus-id, score
                parts = [parts[0], parts[2], parts[3]]
            if len(parts) != 3:
                raise ValidationFailed(f"{path}, line {number}: expected query-id corpus-id score")
            query_id, corpus_id, score = parts
            try:
                grade = int(float(score))
            except ValueError:
                if number == 1:
                    continue  # the header line
                raise ValidationFailed(
                    f"{path}, line {number}: score {score!r} is not a number"
                ) from None
            if grade > 0:
                qrels.setdefault(query_id, {})[corpus_id] = grade
    return qrels
