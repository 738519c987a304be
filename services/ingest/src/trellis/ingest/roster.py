"""What ingest knows of each tenant's roster: the school of every class. Pure data.

Filled from the compacted roster topic by `adapters.follower`; backs the tenant/school
consistency check of activity events.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field

from trellis.common.pb.events.v1 import roster_pb2


@dataclass
class RosterView:
    """Written by the follower thread, read by the request handlers."""

    # tenant id -> class id -> school id
    classes: dict[str, dict[str, str]] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def school_of(self, tenant_id: str, class_id: str) -> str | None:
        """The school that the roster places the class in; None when the roster lacks the class."""
        with self._lock:
            return self.classes.get(tenant_id, {}).get(class_id)

    def apply(self, record: roster_pb2.RosterRecord) -> None:
        if record.WhichOneof("entity") != "school_class":
            return
        with self._lock:
            tenant = self.classes.setdefault(record.tenant_id, {})
            tenant[record.school_class.sourced_id] = record.school_class.school_id
