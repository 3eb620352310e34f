"""The doctor's building blocks that need no service: the table, secret hiding, the failure
classification of model errors, the writability probe."""

from __future__ import annotations

import os
from pathlib import Path

import httpx
import openai
import pytest

from indexes.errors import ModelError
from rag_app.doctor.common import (
    CheckResult,
    has_problems,
    hide_password,
    ok,
    problem,
    skipped,
    unwritable_reason,
    warning,
)
from rag_app.doctor.models import failure_kind
from rag_app.doctor.runner import settings_secrets
from rag_app.doctor.table import format_table, summary
from rag_app.settings import Settings


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("redis://:hunter22@127.0.0.1:6379/0", "redis://:***@127.0.0.1:6379/0"),
        ("http://elastic:pw-1234@es.local:9200", "http://elastic:***@es.local:9200"),
        ("http://user:pw-1234@[::1]:9200/x", "http://user:***@[::1]:9200/x"),
        ("redis://127.0.0.1:6379/0", "redis://127.0.0.1:6379/0"),
        ("http://u:pw-1234@host:notaport/", "(a URL that cannot be parsed)"),
    ],
)
def test_hide_password(url: str, shown: str) -> None:
    assert hide_password(url) == shown


def test_scrubbed_replaces_every_secret_but_not_short_strings() -> None:
    result = problem("x", "key sk-abcdef and sk-abcdef-longer in detail", "use ab or sk-abcdef")

    scrubbed = result.scrubbed(["sk-abcdef", "sk-abcdef-longer", "ab"])

    assert scrubbed.detail == "key *** and *** in detail"
    assert scrubbed.fix == "use ab or ***"
    assert scrubbed.component == "x"
    assert scrubbed.status == "problem"


def test_only_problems_fail() -> None:
    assert not has_problems([ok("a", "fine"), warning("b", "meh", "x"), skipped("c", "off")])
    assert has_problems([ok("a", "fine"), problem("b", "broken", "fix it")])


def test_table_keeps_its_columns_aligned_while_wrapping() -> None:
    results = [
        ok("database", "SQLite database /data/rag_app.db answers"),
        problem("server port", "the port 8000 on 127.0.0.1 is taken " * 4, "set RAG_SERVER__PORT"),
        skipped("redis", "not configured"),
    ]

    lines = format_table(results, width=100).splitlines()

    header = lines[0]
    status_at, detail_at, fix_at = (header.index(h) for h in ("STATUS", "DETAIL", "FIX"))
    assert lines[2].startswith("database")
    assert lines[2][status_at:].startswith("OK ")
    port_lines = [line for line in lines if "taken" in line]
    assert len(port_lines) > 1  # the long detail wrapped ...
    for line in port_lines:
        assert line[detail_at - 2 : detail_at] == "  "  # ... inside its column
    assert lines[3][fix_at:].startswith("set RAG_SERVER__PORT")
    assert all(len(line) <= 100 for line in lines)
    assert lines[-1] == "1 problem (1 ok, 1 skipped)."


def test_summary_counts() -> None:
    assert summary([ok("a", ""), skipped("b", "")]) == "No problems found (1 ok, 1 skipped)."
    two = [problem("a", "", ""), problem("b", "", ""), warning("c", "", "")]
    assert summary(two) == "2 problems, 1 warning (0 ok, 0 skipped)."


def test_result_as_json_dict() -> None:
    assert CheckResult("redis", "ok", "answers").to_dict() == {
        "component": "redis",
        "status": "ok",
        "detail": "answers",
        "fix": "",
    }


def _model_error_from(exc: Exception) -> ModelError:
    # As the model builders raise it: `from None`, keeping the provider's error as context.
    try:
        try:
            raise exc
        except openai.OpenAIError:
            raise ModelError("The embedding API failed.") from None
    except ModelError as error:
        return error


def test_failure_kind_reads_the_provider_error_behind_a_model_error() -> None:
    request = httpx.Request("POST", "http://127.0.0.1/v1/embeddings")
    rejected = openai.AuthenticationError(
        "bad key", response=httpx.Response(401, request=request), body=None
    )
    assert failure_kind(_model_error_from(rejected)) == "key"
    assert failure_kind(_model_error_from(openai.APIConnectionError(request=request))) == (
        "unreachable"
    )
    assert failure_kind(_model_error_from(openai.APITimeoutError(request=request))) == (
        "unreachable"
    )
    missing = openai.NotFoundError(
        "no model", response=httpx.Response(404, request=request), body=None
    )
    assert failure_kind(_model_error_from(missing)) == "other"


def test_failure_kind_of_rerank_wording() -> None:
    who = "The vllm rerank API at http://h/v1 (model 'r')"
    assert failure_kind(ModelError(f"{who} rejected the API key (HTTP 401): check")) == "key"
    assert failure_kind(ModelError(f"{who} could not be reached (ConnectError)")) == "unreachable"
    assert failure_kind(ModelError(f"{who} answered HTTP 404: check the model")) == "other"


def test_unwritable_reason(tmp_path: Path) -> None:
    assert unwritable_reason(tmp_path / "not" / "yet" / "there") is None
    afile = tmp_path / "file"
    afile.write_text("x")
    assert unwritable_reason(afile / "sub") == f"{afile} is a file, not a folder"
    if os.geteuid() != 0:  # root may write anywhere
        locked = tmp_path / "locked"
        locked.mkdir(mode=0o500)
        assert unwritable_reason(locked / "files") == f"{locked} is not writable by this user"


def test_settings_secrets_finds_every_secret(tmp_path: Path) -> None:
    settings = Settings(
        data_dir=tmp_path,
        database={"url": "mysql+pymysql://app:p%40ss-word@db:3306/rag_app"},
        redis={"url": "redis://:redis-secret@cache:6379/0"},
        security={"jwt_secret": "jwt-secret-value", "encryption_key": "encryption-value"},
        storage={"s3_access_key": "access-value", "s3_secret_key": "s3-secret-value"},
        index={"elasticsearch_url": "http://elastic:es-secret@es:9200", "milvus_token": "u:p-mv"},
    )

    found = set(settings_secrets(settings))

    assert {
        "p%40ss-word",
        "p@ss-word",
        "redis-secret",
        "jwt-secret-value",
        "encryption-value",
        "access-value",
        "s3-secret-value",
        "es-secret",
        "u:p-mv",
    } <= found
