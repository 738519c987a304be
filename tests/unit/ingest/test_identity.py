"""Sealed learner identities: only the tenant key opens them, only for the learner they name."""

from __future__ import annotations

import pytest
from cryptography.exceptions import InvalidTag

from trellis.ingest.identity import open_identity, seal_identity, sealed_version

KEY = b"tenant-key"
CLEAR = {"sis_id": "sis-42", "display_name": "Ada Lovelace", "email": "ada@example.org"}


def test_seal_round_trip_and_no_clear_text() -> None:
    sealed = seal_identity(KEY, 3, "district-a", "p42", CLEAR)
    assert sealed_version(sealed) == 3
    assert open_identity(KEY, "district-a", "p42", sealed) == CLEAR
    for clear in CLEAR.values():
        assert clear.encode() not in sealed
    assert sealed != seal_identity(KEY, 3, "district-a", "p42", CLEAR)  # fresh nonce


@pytest.mark.parametrize(
    ("key", "tenant", "pseudonym"),
    [(b"other-key", "district-a", "p42"), (KEY, "district-b", "p42"), (KEY, "district-a", "p43")],
)
def test_wrong_key_tenant_or_learner_cannot_open(key: bytes, tenant: str, pseudonym: str) -> None:
    sealed = seal_identity(KEY, 1, "district-a", "p42", CLEAR)
    with pytest.raises(InvalidTag):
        open_identity(key, tenant, pseudonym, sealed)
