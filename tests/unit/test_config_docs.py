"""Every setting is documented: docs/configuration.md and .env.example are generated from the
settings classes and must be regenerated when a setting changes."""

from __future__ import annotations

import subprocess
import sys

from rag_app.config_docs import DOC, ENV_EXAMPLE, entries, render_env, render_markdown


def test_generated_files_are_up_to_date() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "rag_app.config_docs", "--check"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stdout


def test_every_setting_is_in_both_files() -> None:
    doc, env = DOC.read_text("utf-8"), ENV_EXAMPLE.read_text("utf-8")
    found = list(entries())
    assert len(found) > 30
    for entry in found:
        assert f"`{entry.env}`" in doc
        assert f"# {entry.env}=" in env
    assert doc == render_markdown()
    assert env == render_env()
