"""Trellis mastery: knowledge tracing on the event log and the mastery read API."""
