"""Length-prefixed pickle frames over a pipe, between this process and its own embedding worker.

Pickle is safe here only because both ends are this program (the parent starts the worker and
holds both pipe ends); never use these functions on a socket or a file from elsewhere.
"""

from __future__ import annotations

import pickle
import struct
from typing import IO, Any

_HEADER = struct.Struct(">Q")


def write_frame(stream: IO[bytes], value: Any) -> None:
    payload = pickle.dumps(value, protocol=pickle.HIGHEST_PROTOCOL)
    stream.write(_HEADER.pack(len(payload)) + payload)
    stream.flush()


def read_frame(stream: IO[bytes]) -> Any | None:
    """The next value, or None at a clean end of stream. A stream cut inside a frame raises
    EOFError."""
    start = stream.read(_HEADER.size)
    if not start:
        return None
    (length,) = _HEADER.unpack(start + _read_exactly(stream, _HEADER.size - len(start)))
    payload = _read_exactly(stream, length)
    return pickle.loads(payload)  # noqa: S301 (our own child process, see the module docstring)


def _read_exactly(stream: IO[bytes], size: int) -> bytes:
    parts: list[bytes] = []
    remaining = size
    while remaining:
        part = stream.read(remaining)
        if not part:
            raise EOFError(f"the stream ended {remaining} bytes before the end of a frame")
        parts.append(part)
        remaining -= len(part)
    return b"".join(parts)
