"""SecretBox (provider API keys at rest), mask_secret, and database errors that never show the
values of a row (where the ciphertext and password hashes are)."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
from sqlalchemy import text
from sqlalchemy.exc import IntegrityError

from rag_app.crypto import SecretBox, mask_secret
from rag_app.db.engine import create_db_engine, create_sync_engine
from rag_app.errors import ConfigurationError

KEY = "sk-proj-0123456789abcdefXYZ"


def test_round_trip_keeps_any_text() -> None:
    box = SecretBox("a long random passphrase")
    for secret in (KEY, "密钥-中文-🔑", "x"):
        sealed = box.encrypt(secret)
        assert sealed.startswith("v1:")
        assert box.decrypt(sealed) == secret
    assert KEY not in box.encrypt(KEY)
    assert KEY[-8:] not in box.encrypt(KEY)


def test_same_secret_encrypts_differently_each_time() -> None:
    box = SecretBox("passphrase")
    sealed = {box.encrypt(KEY) for _ in range(5)}
    assert len(sealed) == 5
    assert {box.decrypt(s) for s in sealed} == {KEY}


def test_another_instance_with_the_same_passphrase_decrypts() -> None:
    assert SecretBox("shared").decrypt(SecretBox("shared").encrypt(KEY)) == KEY


def test_wrong_passphrase_is_a_readable_configuration_error() -> None:
    sealed = SecretBox("old passphrase").encrypt(KEY)
    with pytest.raises(ConfigurationError) as caught:
        SecretBox("new passphrase").decrypt(sealed)
    message = str(caught.value)
    assert "encryption key changed" in message
    assert "enter the API key again" in message
    assert KEY not in message


def test_tampered_ciphertext_is_refused() -> None:
    box = SecretBox("passphrase")
    sealed = box.encrypt(KEY)
    flipped = sealed[:-2] + ("A" if sealed[-2] != "A" else "B") + sealed[-1]
    with pytest.raises(ConfigurationError):
        box.decrypt(flipped)


def test_unknown_format_is_refused() -> None:
    with pytest.raises(ConfigurationError, match="unknown format"):
        SecretBox("passphrase").decrypt("v0:abcd")


@pytest.mark.parametrize(
    ("secret", "mask"),
    [
        (KEY, "sk-…fXYZ"),
        ("123456789", "123…6789"),
        ("12345678", "********"),
        ("abc", "***"),
        ("", ""),
    ],
)
def test_mask_secret(secret: str, mask: str) -> None:
    assert mask_secret(secret) == mask
    # A mask always fits the rag_apikey.key_mask column.
    assert len(mask_secret(secret * 50)) <= 32


def test_database_errors_and_logs_hide_row_values(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="sqlalchemy.engine")
    sealed = SecretBox("passphrase").encrypt(KEY)
    engine = create_sync_engine(f"sqlite:///{tmp_path / 'db.sqlite'}", echo=True)
    try:
        with engine.begin() as conn:
            conn.execute(text("CREATE TABLE t (secret TEXT UNIQUE)"))
            conn.execute(text("INSERT INTO t VALUES (:secret)"), {"secret": sealed})
        with pytest.raises(IntegrityError) as caught, engine.begin() as conn:
            conn.execute(text("INSERT INTO t VALUES (:secret)"), {"secret": sealed})
    finally:
        engine.dispose()
    message = str(caught.value)
    assert "INSERT INTO t" in message  # the statement is still there to debug with
    assert sealed not in message
    assert "hidden" in message
    assert caplog.text  # echo logged the statements...
    assert sealed not in caplog.text  # ...but not their values


@pytest.mark.parametrize("url", ["sqlite:///x.db", "mysql://root@127.0.0.1/x"])
def test_every_engine_hides_parameters(url: str) -> None:
    assert create_sync_engine(url).hide_parameters is True
    assert create_db_engine(url).sync_engine.hide_parameters is True
