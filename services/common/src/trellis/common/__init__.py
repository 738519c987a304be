"""Shared runtime: settings, gRPC server kit, Kafka helpers, event codec, generated contracts."""
