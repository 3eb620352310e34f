"""The child side of indexes.embedding_process: ``python -m indexes.embedding_worker DIR N``.

Loads the local sentence-transformers model in folder ``DIR`` exactly as the parent would
(through ``indexes.models``), computing with ``N`` threads, then answers requests read from stdin
until stdin closes, which is also how it notices that its parent is gone. Every message is a
frame of :mod:`indexes.frames`.

Requests: a list of texts. Replies: ``("ready", max_length)`` once the model is loaded, then
``("ok", float32 array)`` or ``("error", message)`` per request. A model that cannot be loaded
answers ``("error", message)`` instead of "ready" and exits.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import IO


def serve(folder: Path, threads: int, requests: IO[bytes], replies: IO[bytes]) -> int:
    import numpy as np
    import torch

    torch.set_num_threads(threads)

    from indexes.errors import ModelError
    from indexes.frames import read_frame, write_frame
    from indexes.models import LOCAL_BATCH_SIZE, load_local_model

    try:
        # The parent sends texts sorted by length: forward passes of a few similar texts each.
        model = load_local_model(folder).model_copy(update={"embed_batch_size": LOCAL_BATCH_SIZE})
    except ModelError as exc:
        write_frame(replies, ("error", str(exc)))
        return 1
    write_frame(replies, ("ready", model.max_length))
    try:
        while (texts := read_frame(requests)) is not None:
            try:
                vectors = model.get_text_embedding_batch(list(texts))
                reply: tuple[str, object] = ("ok", np.asarray(vectors, dtype=np.float32))
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
