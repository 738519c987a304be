"""Which partition of the activity (and mastery) topic holds a `tenant/learner` key."""

from __future__ import annotations

from kafka.partitioner.default import murmur2


def partition_of(key: bytes, partitions: int) -> int:
    """The partition the producers pick: kafka-python hashes the key with murmur2, as the Java
    client does (and aiokafka, so Faust's own sends agree)."""
    hashed: int = murmur2(key)
    return (hashed & 0x7FFFFFFF) % partitions
