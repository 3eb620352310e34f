"""Real English prose anyone can reproduce: the docstrings of Python's standard library.

The synthetic benchmarks (ingestion, retrieval, query latency, the BEIR-format set) build their
corpora from here. Only ``sys.stdlib_module_names`` is imported: ``pkgutil.iter_modules()``
would also import whatever sits on ``sys.path`` (the bench scripts themselves, or a stray
script in the working directory), and the corpus would change with the machine.
"""

from __future__ import annotations

import importlib
import inspect
import sys
from collections.abc import Iterator
from types import ModuleType

# Modules that open windows, print on import, or take seconds to import for no prose.
SKIP = {"antigravity", "this", "idlelib", "turtledemo", "tkinter", "test"}


def stdlib_modules() -> Iterator[ModuleType]:
    """The importable public standard-library modules, in name order."""
    for name in sorted(sys.stdlib_module_names):
        if name.startswith("_") or name in SKIP:
            continue
        try:
            yield importlib.import_module(name)
        except Exception:  # noqa: S112  (some need a display, a platform, a C library...)
            continue


def members(module: ModuleType) -> list[object]:
    """The module's members, and the methods of the classes it defines."""
    found: list[object] = []
    for _, member in inspect.getmembers(module):
        found.append(member)
        if inspect.isclass(member) and member.__module__ == module.__name__:
            found.extend(vars(member).values())
    return found


def docstrings(min_chars: int, max_chars: int, limit: int) -> list[str]:
    """Up to ``limit`` distinct docstrings of module members, ``min_chars``..``max_chars`` long."""
    found: list[str] = []
    seen: set[str] = set()
    for module in stdlib_modules():
        for _, member in inspect.getmembers(module):
            doc = inspect.getdoc(member) or ""
            if min_chars <= len(doc) <= max_chars and doc not in seen:
                seen.add(doc)
                found.append(doc)
                if len(found) >= limit:
                    return found
    return found
