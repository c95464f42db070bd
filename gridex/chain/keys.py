"""Key custody: the platform keypair and the custodial keypairs of users.

The platform keypair signs every chain transaction (fee payer, mint authority, owner of the
escrow and fee token accounts, and delegate of every custodial token account). It is read from
``GRIDEX_CHAIN_KEYPAIR`` (a Solana CLI keypair file: a JSON array of 64 numbers) or from
``platform-keypair.json`` in the data dir, generated there with mode 0600 on first start.

A user's keypair seed is sealed with AES-GCM (256-bit key from HKDF-SHA256 over
``GRIDEX_SECRET_KEY``); the user id is the associated data, so a sealed seed copied onto
another user's row does not open. ``key_id`` names the sealing key, so that rotation can open
rows sealed under a previous secret (``GRIDEX_CHAIN_PREVIOUS_SECRET_KEYS``) and reseal them.
"""

from __future__ import annotations

import hashlib
import json
import os
import secrets
import uuid
from dataclasses import dataclass
from pathlib import Path

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from solders.keypair import Keypair

KEYPAIR_FILE = "platform-keypair.json"
_NONCE_BYTES = 12
_HKDF_INFO = b"gridex chain custodial keys v1"


class KeyUnavailable(RuntimeError):
    """A sealed seed that no configured secret opens."""


def load_platform_keypair(data_dir: Path, configured: Path | None) -> Keypair:
    """The platform keypair: the configured file, else the data dir's (created on first use)."""
    path = configured or data_dir / KEYPAIR_FILE
    if path.exists():
        return Keypair.from_bytes(bytes(json.loads(path.read_text())))
    if configured is not None:
        raise FileNotFoundError(f"GRIDEX_CHAIN_KEYPAIR points at {path}, which does not exist")
    keypair = Keypair()
    path.parent.mkdir(parents=True, exist_ok=True)
    # Created with mode 0600 from the start: the secret is never readable by others, not
    # even between a write and a chmod.
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as file:
        json.dump(list(bytes(keypair)), file)
    return keypair


def _derive(secret: str) -> bytes:
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=_HKDF_INFO).derive(
        secret.encode()
    )


def _key_id(key: bytes) -> str:
    return hashlib.sha256(b"key-id:" + key).hexdigest()[:16]


@dataclass(frozen=True, slots=True)
class Sealed:
    data: bytes
    key_id: str


class KeyVault:
    """Seals and opens custodial seeds; the current secret seals, every listed one opens."""

    def __init__(self, secret: str, previous: list[str] | None = None) -> None:
        current = _derive(secret)
        self.key_id = _key_id(current)
        self._keys = {self.key_id: current}
        for old in previous or []:
            key = _derive(old)
            self._keys.setdefault(_key_id(key), key)

    def new_keypair(self, user_id: uuid.UUID) -> tuple[Keypair, Sealed]:
        seed = secrets.token_bytes(32)
        return Keypair.from_seed(seed), self.seal(user_id, seed)

    def seal(self, user_id: uuid.UUID, seed: bytes) -> Sealed:
        nonce = secrets.token_bytes(_NONCE_BYTES)
        box = AESGCM(self._keys[self.key_id]).encrypt(nonce, seed, user_id.bytes)
        return Sealed(nonce + box, self.key_id)

    def open(self, user_id: uuid.UUID, sealed: Sealed) -> Keypair:
        key = self._keys.get(sealed.key_id)
        if key is None:
            raise KeyUnavailable(f"no configured secret has key id {sealed.key_id}")
        nonce, box = sealed.data[:_NONCE_BYTES], sealed.data[_NONCE_BYTES:]
        return Keypair.from_seed(AESGCM(key).decrypt(nonce, box, user_id.bytes))

    def needs_reseal(self, sealed: Sealed) -> bool:
        return sealed.key_id != self.key_id
