"""Sealing a learner's clear identity (SIS id, display name, e-mail) for the roster. Pure.

AES-256-GCM under a key derived (HKDF-SHA256) from the tenant's pseudonym key of the given
version; the tenant and the learner's pseudonymous id are the associated data, so a sealed
identity cannot be moved to another learner or tenant. Layout: version (4 bytes, big-endian),
nonce (12 bytes), ciphertext with tag. Only holders of the tenant key (authorized staff views)
can open it; the clear text never reaches Kafka.
"""

from __future__ import annotations

import json
import os
import struct

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

_INFO = b"trellis roster sealed identity v1"


def _key(pseudonym_key: bytes, tenant_id: str) -> bytes:
    hkdf = HKDF(algorithm=hashes.SHA256(), length=32, salt=tenant_id.encode(), info=_INFO)
    return hkdf.derive(pseudonym_key)


def _aad(tenant_id: str, pseudonym: str) -> bytes:
    return f"{tenant_id}\x1f{pseudonym}".encode()


def seal_identity(
    pseudonym_key: bytes,
    version: int,
    tenant_id: str,
    pseudonym: str,
    identity: dict[str, str],
    nonce: bytes | None = None,
) -> bytes:
    nonce = os.urandom(12) if nonce is None else nonce
    plain = json.dumps(identity, sort_keys=True, separators=(",", ":")).encode()
    sealed = AESGCM(_key(pseudonym_key, tenant_id)).encrypt(
        nonce, plain, _aad(tenant_id, pseudonym)
    )
    return struct.pack(">I", version) + nonce + sealed


def sealed_version(sealed: bytes) -> int:
    """The key version a sealed identity was made with (to pick the key that opens it)."""
    (version,) = struct.unpack(">I", sealed[:4])
    return int(version)


def open_identity(
    pseudonym_key: bytes, tenant_id: str, pseudonym: str, sealed: bytes
) -> dict[str, str]:
    """The clear identity; raises cryptography's InvalidTag when key, tenant or learner differ."""
    nonce, body = sealed[4:16], sealed[16:]
    plain = AESGCM(_key(pseudonym_key, tenant_id)).decrypt(nonce, body, _aad(tenant_id, pseudonym))
    loaded: dict[str, str] = json.loads(plain)
    return loaded
