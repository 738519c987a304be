"""Pseudonymous learner ids: HMAC-SHA256 of the SIS id under a versioned per-tenant key.

Every service that accepts learner ids at its edge maps them here before touching state, so that
raw SIS ids never enter a log, a table or a log line.
"""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass

from pydantic import SecretStr


class UnknownTenantKey(KeyError):
    """No pseudonymization key is configured for this tenant."""


@dataclass(frozen=True)
class Pseudonymizer:
    keys: dict[str, dict[int, SecretStr]]

    def current_version(self, tenant_id: str) -> int:
        versions = self.keys.get(tenant_id)
        if not versions:
            raise UnknownTenantKey(tenant_id)
        return max(versions)

    def pseudonymize(self, tenant_id: str, sis_id: str, version: int | None = None) -> str:
        """The pseudonymous id: 32 hex characters (128 bits of the HMAC), stable per key version."""
        version = self.current_version(tenant_id) if version is None else version
        try:
            key = self.keys[tenant_id][version].get_secret_value().encode()
        except KeyError as exc:
            raise UnknownTenantKey(f"{tenant_id} v{version}") from exc
        return hmac.new(key, f"{tenant_id}\x1f{sis_id}".encode(), hashlib.sha256).hexdigest()[:32]
