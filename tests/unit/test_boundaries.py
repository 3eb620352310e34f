"""`indexes` stands alone: it never imports rag_app or litestar, so a notebook can use it."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import indexes

FORBIDDEN = ("rag_app", "litestar")
INDEXES_DIR = Path(indexes.__file__).resolve().parent


def _imported_modules(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
    return names


def test_no_forbidden_import_statements() -> None:
    files = sorted(INDEXES_DIR.rglob("*.py"))
    assert files, "the indexes package has no modules"
    offenders = [
        f"{path.relative_to(INDEXES_DIR.parent)} imports {name}"
        for path in files
        for name in _imported_modules(path)
        if name.split(".")[0] in FORBIDDEN
    ]
    assert offenders == []


def test_importing_every_module_loads_neither() -> None:
    """Also catches indirect imports (through a third package) that the AST walk cannot see."""
    modules = [
        "indexes." + ".".join(p.relative_to(INDEXES_DIR).with_suffix("").parts)
        for p in sorted(INDEXES_DIR.rglob("*.py"))
        if p.name != "__init__.py"
    ]
    code = (
        "import importlib, sys\n"
        f"for name in {modules!r}: importlib.import_module(name)\n"
        "import indexes\n"
        f"bad = sorted(m for m in sys.modules if m.split('.')[0] in {FORBIDDEN!r})\n"
        "print(','.join(bad))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    )
    assert result.stdout.strip() == ""
