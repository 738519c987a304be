"""A bounded memory of recently accepted event ids and their content fingerprints.

The window is an optimization that answers DUPLICATE early: downstream consumers dedupe by
event_id too, so forgetting an old id costs a redundant record, never a double count.
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from enum import Enum

from trellis.common.pb.events.v1 import envelope_pb2


class Seen(Enum):
    NEW = "new"
    DUPLICATE = "duplicate"
    CONFLICT = "conflict"


def fingerprint(envelope: envelope_pb2.Envelope) -> bytes:
    """Digest of what the caller sent: the same event resent later has the same fingerprint."""
    content = envelope_pb2.Envelope()
    content.CopyFrom(envelope)
    content.ClearField("ingested_at")
    return hashlib.sha256(content.SerializeToString(deterministic=True)).digest()[:16]


class DedupWindow:
    def __init__(self, capacity: int) -> None:
        self._capacity = capacity
        self._seen: OrderedDict[tuple[str, str], bytes] = OrderedDict()

    def check(self, tenant_id: str, event_id: str, digest: bytes) -> Seen:
        known = self._seen.get((tenant_id, event_id))
        if known is None:
            return Seen.NEW
        return Seen.DUPLICATE if known == digest else Seen.CONFLICT

    def remember(self, tenant_id: str, event_id: str, digest: bytes) -> None:
        self._seen[(tenant_id, event_id)] = digest
        self._seen.move_to_end((tenant_id, event_id))
        while len(self._seen) > self._capacity:
            self._seen.popitem(last=False)

    def __len__(self) -> int:
        return len(self._seen)
