"""Bringing a folder knowledge base's index up to date with its folder: scan the files, embed the
new and changed ones on a few worker threads, remove the chunks of files that are gone, and keep
the manifest (see indexes.kb_manifest) in step as each file is done."""

from __future__ import annotations

import hashlib
import os
import warnings
from collections.abc import Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, get_args

from indexes.errors import IndexesError, ModelError, StoreError
from indexes.filetypes import ACCEPTED_EXTENSIONS
from indexes.kb_ids import document_id_for
from indexes.kb_manifest import DocumentRecord, Manifest, chunking, index_identity
from indexes.kb_resources import open_knowledge_index
from indexes.specs import KeywordBackend, KnowledgeSpec, StoreSettings

if TYPE_CHECKING:
    from llama_index.core.base.embeddings.base import BaseEmbedding

    from indexes.knowledge_index import KnowledgeIndex
    from indexes.splitting import Tokenizer

Outcome = Literal["indexed", "unchanged", "skipped"]


@dataclass
class FolderSync:
    """What one ``from_folder`` run did, by path relative to the folder."""

    added: list[str] = field(default_factory=list)
    updated: list[str] = field(default_factory=list)
    unchanged: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)
    skipped: dict[str, str] = field(default_factory=dict)  # path -> why it was not indexed
    seconds: float = 0.0


def scan_folder(folder: Path, exclude: Path) -> tuple[list[tuple[str, Path]], dict[str, str]]:
    """Supported files under ``folder`` by relative path (sorted), and the others with why.
    Hidden files and folders and ``exclude`` (the index) are left out; links are not followed
    into folders."""
    files: list[tuple[str, Path]] = []
    skipped: dict[str, str] = {}
    for root, dirs, names in os.walk(folder):
        here = Path(root)
        dirs[:] = sorted(d for d in dirs if not d.startswith(".") and here / d != exclude)
        for name in sorted(names):
            path = here / name
            if name.startswith(".") or not path.is_file():
                continue
            relative = path.relative_to(folder).as_posix()
            if path.suffix.lower().lstrip(".") not in ACCEPTED_EXTENSIONS:
                skipped[relative] = f"'{path.suffix or name}' files are not supported"
                continue
            files.append((relative, path))
    files.sort()
    return files, skipped


def reconcile(
    manifest: Manifest,
    spec: KnowledgeSpec,
    stores: StoreSettings,
    dimension: int,
    folder: Path,
    name: str,
) -> bool:
    """Adapt to a manifest of an earlier run; True when every file must be re-embedded."""
    previous_folder = manifest.data.get("folder")
    if previous_folder and previous_folder != str(folder):
        # stacklevel 3: the caller of KnowledgeBase.from_folder, which calls this directly.
        warnings.warn(
            f"Knowledge base {name!r} in {stores.index_dir} was built from "
            f"{previous_folder}; it now follows {folder}, and documents that are not there "
            "are removed. Pass name= to keep both.",
            stacklevel=3,
        )
    identity = manifest.data.get("index", {})
    if identity != index_identity(spec, dimension):
        # Other vectors (model, dimension) or another keyword store: start afresh.
        old_dimension = identity.get("dimension")
        old_backend = identity.get("keyword_backend")
        if isinstance(old_dimension, int) and old_backend in get_args(KeywordBackend):
            old_spec = spec.model_copy(update={"keyword_backend": old_backend})
            open_knowledge_index(old_spec, stores, old_dimension).drop()
        manifest.documents = {}
        return True
    return bool(manifest.data.get("chunking") != chunking(spec))


def progress_bar(total: int) -> Any:
    """A tqdm bar over the files of a run."""
    from tqdm import tqdm

    # Plain tqdm: it prints in notebooks too, where tqdm.auto needs ipywidgets.
    return tqdm(total=total, unit="file", desc="indexing")


class FolderIngestion:
    """One ``from_folder`` run over the files of ``folder``, into ``index``, recorded in
    ``manifest`` (which the caller saves at the end, whatever happens)."""

    def __init__(
        self,
        *,
        folder: Path,
        index_dir: Path,
        spec: KnowledgeSpec,
        index: KnowledgeIndex,
        embed_model: BaseEmbedding,
        tokenizer: Tokenizer,
        manifest: Manifest,
    ) -> None:
        self.folder = folder
        self.index_dir = index_dir
        self.spec = spec
        self.index = index
        self.embed_model = embed_model
        self.tokenizer = tokenizer
        self.manifest = manifest

    def sync(self, *, rebuild: bool, progress: bool, workers: int) -> FolderSync:
        """Remove the chunks of files that are gone, then ingest the others (unchanged ones
        only with ``rebuild``) on ``workers`` threads."""
        manifest = self.manifest
        files, skipped = scan_folder(self.folder, self.index_dir)
        report = FolderSync(skipped=skipped)
        ids: dict[int, str] = {}
        for relative, _ in files:
            document_id = document_id_for(relative)
            if document_id in ids:  # 2^-52 per pair: never seen, but never silent either
                raise IndexesError(f"{relative} and {ids[document_id]} hash to one document id.")
            ids[document_id] = relative

        current = {relative for relative, _ in files}
        for relative in sorted(set(manifest.documents) - current):
            self.index.delete_document(manifest.documents.pop(relative).document_id)
            report.removed.append(relative)
            manifest.save(force=False)

        bar = progress_bar(len(files)) if progress else None
        try:
            self._run(files, rebuild, workers, report, bar)
        finally:
            if bar is not None:
                bar.close()
        return report

    def _run(
        self,
        files: Sequence[tuple[str, Path]],
        rebuild: bool,
        workers: int,
        report: FolderSync,
        bar: Any,
    ) -> None:
        manifest = self.manifest
        pending = iter(files)
        running: dict[Future[tuple[Outcome, DocumentRecord | str]], str] = {}
        with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="kb-ingest") as pool:
            try:
                while True:
                    # Submit lazily: a failure stops the run without a queue of doomed work.
                    while len(running) < workers * 2:
                        item = next(pending, None)
                        if item is None:
                            break
                        relative, file = item
                        previous = None if rebuild else manifest.documents.get(relative)
                        future = pool.submit(self._ingest, relative, file, previous)
                        running[future] = relative
                    if not running:
                        break
                    done, _ = wait(running, return_when=FIRST_COMPLETED)
                    for future in done:
                        relative = running.pop(future)
                        outcome, value = future.result()  # ModelError/StoreError: stop
                        self._record(report, relative, outcome, value)
                        if bar is not None:
                            bar.set_postfix_str(relative[-40:], refresh=False)
                            bar.update(1)
            except BaseException:
                # KeyboardInterrupt in a notebook too: finish nothing new, keep what is done.
                for future in running:
                    future.cancel()
                raise

    def _record(
        self,
        report: FolderSync,
        relative: str,
        outcome: Outcome,
        value: DocumentRecord | str,
    ) -> None:
        manifest = self.manifest
        if isinstance(value, str):
            report.skipped[relative] = value
            if manifest.documents.pop(relative, None) is not None:
                report.removed.append(relative)
        else:
            existed = relative in manifest.documents
            manifest.documents[relative] = value
            if outcome == "unchanged":
                report.unchanged.append(relative)
            elif existed:
                report.updated.append(relative)
            else:
                report.added.append(relative)
        manifest.save(force=False)

    def _ingest(
        self, relative: str, file: Path, previous: DocumentRecord | None
    ) -> tuple[Outcome, DocumentRecord | str]:
        """One file, in a worker thread: (outcome, its record) or ("skipped", why)."""
        from indexes.pipeline import embed_document
        from indexes.readers import read_document

        document_id = document_id_for(relative)
        try:
            data = file.read_bytes()
        except OSError as exc:
            return "skipped", f"cannot read the file: {exc.strerror or exc}"
        digest = hashlib.sha256(data).hexdigest()
        if previous is not None and previous.sha256 == digest:
            return "unchanged", previous
        try:
            sections = read_document(data, file.name)
            for section in sections:
                # The relative path tells apart same-named files in different folders; the
                # answer cites it.
                section.metadata["file_name"] = relative
            nodes = embed_document(
                self.spec,
                sections,
                document_id=document_id,
                embed_model=self.embed_model,
                tokenizer=self.tokenizer,
            )
        except (ModelError, StoreError):
            raise
        except IndexesError as exc:
            # Unreadable now: whatever an earlier version left must go too.
            self.index.delete_document(document_id)
            return "skipped", str(exc)
        self.index.replace_document(document_id, nodes)
        return "indexed", DocumentRecord(document_id, digest, len(nodes))
