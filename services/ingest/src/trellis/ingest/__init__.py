"""Trellis ingest: validated, authenticated, idempotent activity, roster and catalog ingest."""
