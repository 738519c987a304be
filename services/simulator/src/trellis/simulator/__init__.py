"""Synthetic district and load generator: a client of Trellis's public APIs."""
