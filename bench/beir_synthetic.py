"""A synthetic BEIR dataset from the standard library's docstrings, for `rag-app eval` where no
real dataset is at hand.

    python bench/beir_synthetic.py OUT_DIR [--queries 300] [--documents 1500]

Each document is the body of one docstring (everything after its first paragraph); the query
for it is that first paragraph, the summary line ("Return the number of items in a
container."). One relevant document per query; the other documents are distractors. Summaries
and bodies share some words, so the keyword leg has something to find, and paraphrase does the
rest. English only. It is a plumbing-scale check, not a benchmark anyone publishes: record its
figures as "synthetic".
"""

from __future__ import annotations

import argparse
import inspect
import json
import random
import re
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from bench.stdlib_docs import members, stdlib_modules


def pairs(limit: int) -> list[tuple[str, str]]:
    """(summary, body) of docstrings with a one-sentence summary and a substantial body."""
    found: list[tuple[str, str]] = []
    seen: set[str] = set()
    for module in stdlib_modules():
        for member in members(module):
            doc = inspect.getdoc(member) or ""
            summary, _, body = doc.partition("\n\n")
            summary = " ".join(summary.split())
            body = body.strip()
            words = len(summary.split())
            if not (4 <= words <= 40) or not (200 <= len(body) <= 2400):
                continue
            if body in seen or summary in seen:
                continue
            # Signatures ("str(object) -> str") and doctests are no questions.
            if re.search(r"->|>>>|^[\w.]+\(|\bdeprecated\b", summary, re.IGNORECASE):
                continue
            seen.update((body, summary))
            found.append((summary, body))
            if len(found) >= limit:
                return found
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("out", type=Path)
    parser.add_argument("--queries", type=int, default=300)
    parser.add_argument("--documents", type=int, default=1500)
    args = parser.parse_args()

    found = pairs(args.documents)
    rng = random.Random(7)  # the same dataset on every run of one Python version
    asked = sorted(rng.sample(range(len(found)), min(args.queries, len(found))))
    (args.out / "qrels").mkdir(parents=True, exist_ok=False)
    with (args.out / "corpus.jsonl").open("w", encoding="utf-8") as corpus:
        for number, (_, body) in enumerate(found):
            corpus.write(json.dumps({"_id": f"d{number}", "title": "", "text": body}) + "\n")
    with (args.out / "queries.jsonl").open("w", encoding="utf-8") as queries:
        for number in asked:
            queries.write(json.dumps({"_id": f"q{number}", "text": found[number][0]}) + "\n")
    lines = ["query-id\tcorpus-id\tscore", *(f"q{n}\td{n}\t1" for n in asked)]
    (args.out / "qrels" / "test.tsv").write_text("\n".join(lines) + "\n", encoding="utf-8")
    print(f"{args.out}: {len(found)} documents, {len(asked)} queries")


if __name__ == "__main__":
    main()
