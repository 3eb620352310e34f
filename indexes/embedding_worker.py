"""The child side of indexes.embedding_process: ``python -m indexes.embedding_worker DIR N``.

Loads the local sentence-transformers model in folder ``DIR`` exactly as the parent would
(through ``indexes.models``), computing with ``N`` threads, then answers requests read from stdin
until stdin closes, which is also how it notices that its parent is gone. Every message is a
frame of :mod:`indexes.frames`.

Requests: a list of texts. Replies: ``("ready", max_length)`` once the model is loaded, then
``("ok", float32 array)`` or ``("error", message)`` per request. A model that cannot be loaded
answers ``("error", message)`` instead of "ready" and exits.

A request's texts are embedded in groups of nearly equal token length (``length_groups``), not
as one batch: the model pads every text of a forward pass to the longest, and on a CPU that
padding costs more than the batching saves. On the benchmark's chunks (bench/ingest.py, two
one-thread processes, 2 cores), batches of 8 in arrival order took 75 ms of CPU per chunk,
length-sorted batches of 8 took 60 ms, of 4 took 54 ms, and one text at a time 56 ms
(docs/benchmarks.md, session 5).
"""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import IO

# A text joins a group if padding it to the group's longest adds at most this share of that
# length, or this many tokens (padding a short text a little costs less than a forward pass).
PADDING_TOLERANCE = 0.1
PADDING_SLACK_TOKENS = 8


def length_groups(lengths: Sequence[int], max_size: int) -> list[list[int]]:
    """Indexes of ``lengths`` grouped for forward passes: longest first, at most ``max_size``
    per group, each text within the padding tolerance of its group's longest."""
    order = sorted(range(len(lengths)), key=lengths.__getitem__, reverse=True)
    groups: list[list[int]] = []
    for index in order:
        if groups and len(groups[-1]) < max_size:
            longest = lengths[groups[-1][0]]
            if longest - lengths[index] <= max(PADDING_SLACK_TOKENS, PADDING_TOLERANCE * longest):
                groups[-1].append(index)
                continue
        groups.append([index])
    return groups


def serve(folder: Path, threads: int, requests: IO[bytes], replies: IO[bytes]) -> int:
    import numpy as np
    import torch

    torch.set_num_threads(threads)

    from indexes.errors import ModelError
    from indexes.frames import read_frame, write_frame
    from indexes.models import LOCAL_BATCH_SIZE, load_local_model, local_tokenizer

    try:
        model = load_local_model(folder).model_copy(update={"embed_batch_size": LOCAL_BATCH_SIZE})
        tokenize = local_tokenizer(folder)
    except ModelError as exc:
        write_frame(replies, ("error", str(exc)))
        return 1
    write_frame(replies, ("ready", model.max_length))
    # Inputs past the model's limit are truncated to it: they are all of that length.
    limit = model.max_length or sys.maxsize

    def embed(texts: list[str]) -> np.ndarray:
        lengths = [min(len(tokenize(text)), limit) for text in texts]
        vectors: list[object] = [None] * len(texts)
        for group in length_groups(lengths, LOCAL_BATCH_SIZE):
            embedded = model.get_text_embedding_batch([texts[i] for i in group])
            for index, vector in zip(group, embedded, strict=True):
                vectors[index] = vector
        return np.asarray(vectors, dtype=np.float32)

    try:
        while (texts := read_frame(requests)) is not None:
            try:
                reply: tuple[str, object] = ("ok", embed(list(texts)))
            except Exception as exc:  # the parent raises it as the caller's error
                reply = ("error", f"{type(exc).__name__}: {exc}")
            write_frame(replies, reply)
    except (BrokenPipeError, EOFError):
        pass  # the parent is gone (it died mid-frame, or before reading the reply)
    return 0


def main() -> int:
    if len(sys.argv) != 3 or not sys.argv[2].isdigit() or int(sys.argv[2]) < 1:
        print("usage: python -m indexes.embedding_worker MODEL_FOLDER THREADS", file=sys.stderr)
        return 2
    # The protocol owns the original stdout; anything else written to fd 1 (a progress bar, a
    # library's print) goes to stderr instead of corrupting a frame.
    replies = os.fdopen(os.dup(sys.stdout.fileno()), "wb")
    os.dup2(sys.stderr.fileno(), sys.stdout.fileno())
    return serve(Path(sys.argv[1]), int(sys.argv[2]), sys.stdin.buffer, replies)


if __name__ == "__main__":
    sys.exit(main())
