"""`rag-app eval`: retrieval quality on a BEIR dataset, per retrieval mode, computed with ranx."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from indexes.errors import IndexesError
from rag_app.errors import RagAppError
from rag_app.settings import Settings

if TYPE_CHECKING:
    from rag_app.domain.recall.beir import BeirDataset
    from rag_app.domain.recall.evaluation import EvalReport

# The app's services, torch and ranx are imported inside the functions: `rag-app --help` stays
# fast.


@click.command("eval")
@click.option(
    "--dataset",
    "dataset_dir",
    required=True,
    type=click.Path(path_type=Path),
    help="A BEIR folder: corpus.jsonl, queries.jsonl, qrels/test.tsv.",
)
@click.option(
    "--knowledge",
    "knowledge_id",
    type=int,
    default=None,
    help="Evaluate this knowledge base (its documents named <corpus id>.<ext>) instead of "
    "ingesting the corpus into a new one.",
)
@click.option(
    "--qrels",
    type=click.Path(path_type=Path),
    default=None,
    help="Relevance judgements (default: DATASET/qrels/test.tsv).",
)
@click.option(
    "--robot",
    "robot_id",
    type=int,
    default=None,
    help="Use this robot's retrieval settings and reranker (default: a robot bound to the "
    "knowledge base with rerank on, if any).",
)
@click.option("--json", "as_json", is_flag=True, help="Print the figures as JSON.")
@click.option(
    "--limit", type=click.IntRange(min=1), default=None, help="Evaluate the first N queries."
)
def eval_command(
    dataset_dir: Path,
    knowledge_id: int | None,
    qrels: Path | None,
    robot_id: int | None,
    as_json: bool,
    limit: int | None,
) -> None:
    """Retrieval quality on a BEIR dataset: nDCG@10, Recall@10, Recall@100 and MRR@10 per
    retrieval mode (vector, keyword, hybrid, and hybrid+rerank when a reranker is configured).

    Without --knowledge, every corpus record becomes one document of a new knowledge base of
    the embedded default (packaged embedding model, BM25), ingested through the normal path;
    its id is printed so a later run can reuse it with --knowledge.
    """
    from rag_app.cli import cli_settings
    from rag_app.domain.recall.beir import load_dataset

    try:
        dataset = load_dataset(dataset_dir, qrels, limit)
        if knowledge_id is None and not dataset.corpus_path.is_file():
            raise click.ClickException(f"{dataset.corpus_path} not found")
    except RagAppError as exc:
        raise click.ClickException(exc.detail) from exc
    settings = cli_settings()
    try:
        report = asyncio.run(_evaluate(settings, dataset, knowledge_id, robot_id))
    except RagAppError as exc:
        raise click.ClickException(exc.detail) from exc
    except IndexesError as exc:
        raise click.ClickException(str(exc)) from exc
    if as_json:
        click.echo(json.dumps(_as_json(report), ensure_ascii=False, indent=2))
    else:
        _print_table(report)


async def _evaluate(
    settings: Settings, dataset: BeirDataset, knowledge_id: int | None, robot_id: int | None
) -> EvalReport:
    from tqdm import tqdm

    from rag_app.context import AppContext
    from rag_app.domain.recall.corpus import create_eval_knowledge, existing_corpus, ingest_corpus
    from rag_app.domain.recall.evaluation import eval_settings, evaluate_knowledge

    ctx = AppContext.create(settings)
    try:
        await asyncio.to_thread(ctx.migrate)
        if knowledge_id is None:
            await ctx.start_jobs()
            knowledge = await create_eval_knowledge(ctx, f"eval {dataset.path.name}")
            click.echo(
                f"ingesting {dataset.corpus_path} into knowledge base {knowledge.id} "
                f"(reuse it with --knowledge {knowledge.id})",
                err=True,
            )
            if settings.redis.url:
                click.echo("documents are processed by `rag-app worker` processes", err=True)
            with tqdm(unit="doc", desc="ingesting", total=0) as bar:

                def ingest_progress(done: int, total: int) -> None:
                    bar.total = total
                    bar.n = done
                    bar.refresh()

                corpus = await ingest_corpus(ctx, knowledge, dataset.corpus(), ingest_progress)
        else:
            known = dataset.relevant_ids
            if dataset.corpus_path.is_file():
                known |= {record.corpus_id for record in dataset.corpus()}
            corpus = await existing_corpus(ctx, knowledge_id, known)
        for note in corpus.notes:
            click.echo(f"note: {note}", err=True)
        for failure in corpus.failed[:10]:
            click.echo(f"failed: {failure}", err=True)
        if corpus.failed:
            click.echo(f"{len(corpus.failed)} document(s) failed and are left out", err=True)
        choice = await eval_settings(ctx, corpus.knowledge.id or 0, robot_id)
        bars: dict[str, Any] = {}
        try:

            def query_progress(mode: str) -> None:
                if mode not in bars:
                    for done in bars.values():
                        done.close()
                    bars[mode] = tqdm(total=len(dataset.queries), unit="query", desc=mode)
                bars[mode].update(1)

            return await evaluate_knowledge(ctx, corpus, dataset, choice, query_progress)
        finally:
            for bar in bars.values():
                bar.close()
    finally:
        await ctx.close()


def _as_json(report: EvalReport) -> dict[str, Any]:
    from rag_app.domain.recall.evaluation import DEPTH_CHUNKS, METRICS, describe_retrieval
    from rag_app.domain.recall.metrics import ranx_version

    settings = report.settings
    return {
        "dataset": report.dataset,
        "queries": report.queries,
        "documents": report.documents,
        "knowledge_id": report.knowledge_id,
        "knowledge": report.knowledge_note,
        "settings": f"{settings.source}: {describe_retrieval(settings.retrieval)}",
        "depth_chunks": DEPTH_CHUNKS,
        "relevant_documents_missing": report.missing_relevant,
        "metrics": list(METRICS),
        "modes": {
            result.mode: {
                **{name: round(result.metrics[name], 4) for name in METRICS},
                "mean_latency_ms": round(result.mean_latency_ms, 1),
            }
            for result in report.results
        },
        "reranker": (
            settings.rerank_model.model_name if settings.rerank_model is not None else None
        ),
        "notes": [settings.rerank_note] if settings.rerank_note else [],
        "library": ranx_version(),
    }


def _print_table(report: EvalReport) -> None:
    from rag_app.domain.recall.evaluation import (
        DEPTH_CHUNKS,
        LABELS,
        METRICS,
        RERANKED,
        as_rows,
        describe_retrieval,
    )
    from rag_app.domain.recall.metrics import ranx_version

    settings = report.settings
    click.echo(f"dataset:   {report.dataset}: {report.queries} queries with relevant documents")
    click.echo(
        f"knowledge: base {report.knowledge_id}, {report.documents} documents, "
        f"{report.knowledge_note}"
    )
    click.echo(f"retrieval: {settings.source}: {describe_retrieval(settings.retrieval)}")
    click.echo(f"ranking:   documents by their best chunk among the top {DEPTH_CHUNKS} chunks")
    if report.missing_relevant:
        click.echo(f"warning:   {report.missing_relevant} relevant document(s) are not in the base")
    click.echo("")
    header = ["mode", *(LABELS[m] for m in METRICS), "ms/query"]
    rows = as_rows(report.results)
    if settings.rerank_model is None:
        rows.append([RERANKED, "-", "-", "-", "-", "-"])
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]
    for row in [header, *rows]:
        cells = [
            row[0].ljust(widths[0]),
            *(c.rjust(w) for c, w in zip(row[1:], widths[1:], strict=True)),
        ]
        click.echo("  ".join(cells).rstrip())
    click.echo("")
    if settings.rerank_note:
        click.echo(f"{RERANKED}: {settings.rerank_note}")
    click.echo(f"metrics computed with {ranx_version()}")
