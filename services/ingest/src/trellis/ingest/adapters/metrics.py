"""Prometheus metrics of ingest: answers per item (by tenant, record kind, status and reason: the
first violation, or the first warning of an item accepted with remarks) and
produce latency. Reasons name the field without its batch index, so label values stay bounded."""

from __future__ import annotations

import re
from collections.abc import Iterable

from prometheus_client import Counter, Histogram

from trellis.ingest.service import ItemOutcome

ITEMS = Counter(
    "trellis_ingest_items",
    "Items answered by ingest",
    ["tenant", "kind", "status", "reason"],
)
PRODUCE_SECONDS = Histogram(
    "trellis_ingest_produce_seconds",
    "Time from sending a batch to Kafka until every record is acknowledged or failed",
    ["topic"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
)
_INDEX = re.compile(r"\[\d+\]")


def count_outcomes(tenant_id: str, kind: str, outcomes: Iterable[ItemOutcome]) -> None:
    for outcome in outcomes:
        # The first violation, or for an item accepted with remarks its first warning.
        remarks = outcome.violations or outcome.warnings
        reason = f"{_INDEX.sub('[]', remarks[0].field)} {remarks[0].reason}" if remarks else ""

        ITEMS.labels(tenant_id, kind, outcome.status.value, reason).inc()
