"""Trellis recommender: next activities, learning paths and groups."""
