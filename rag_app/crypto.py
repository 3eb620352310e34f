"""Provider API keys at rest (AES-256-GCM) and user passwords (Argon2id)."""

from __future__ import annotations

import base64
import os

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from rag_app.errors import ConfigurationError

_VERSION = "v1"
_NONCE_BYTES = 12


class SecretBox:
    """Encrypts short secrets with AES-256-GCM. The 256-bit key is derived with HKDF from the
    configured passphrase, so any long random string works as ``encryption_key``."""

    def __init__(self, passphrase: str) -> None:
        key = HKDF(
            algorithm=hashes.SHA256(), length=32, salt=None, info=b"rag_app apikey v1"
        ).derive(passphrase.encode("utf-8"))
        self._aead = AESGCM(key)

    def encrypt(self, plaintext: str) -> str:
        nonce = os.urandom(_NONCE_BYTES)
        sealed = self._aead.encrypt(nonce, plaintext.encode("utf-8"), None)
        return f"{_VERSION}:{base64.urlsafe_b64encode(nonce + sealed).decode('ascii')}"

    def decrypt(self, token: str) -> str:
        version, _, payload = token.partition(":")
        if version != _VERSION:
            raise ConfigurationError("stored API key has an unknown format")
        raw = base64.urlsafe_b64decode(payload)
        try:
            plain = self._aead.decrypt(raw[:_NONCE_BYTES], raw[_NONCE_BYTES:], None)
        except InvalidTag as exc:
            raise ConfigurationError(
                "a stored API key cannot be decrypted: the encryption key changed since it was "
                "saved; enter the API key again"
            ) from exc
        return plain.decode("utf-8")


def mask_secret(secret: str) -> str:
    """What a response shows of a key: its first 3 and last 4 characters at most."""
    if len(secret) <= 8:
        return "*" * len(secret)
    return f"{secret[:3]}…{secret[-4:]}"


class PasswordService:
    def __init__(self, time_cost: int = 3, memory_kib: int = 65536) -> None:
        self._hasher = PasswordHasher(time_cost=time_cost, memory_cost=memory_kib)

    def hash(self, password: str) -> str:
        return self._hasher.hash(password)

    def verify(self, password_hash: str, password: str) -> bool:
        try:
            return self._hasher.verify(password_hash, password)
        except (VerificationError, InvalidHashError):
            return False
