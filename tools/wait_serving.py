"""Waits until gRPC services answer SERVING on the standard health service.

`python tools/wait_serving.py 127.0.0.1:50051 127.0.0.1:50052 --timeout 90`
"""

from __future__ import annotations

import argparse
import sys
import time

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc


def serving(target: str) -> bool:
    with grpc.insecure_channel(target) as channel:
        try:
            reply = health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(service=""), timeout=2
            )
        except grpc.RpcError:
            return False
    return reply.status == health_pb2.HealthCheckResponse.SERVING


def wait_serving(targets: list[str], timeout: float) -> list[str]:
    """The targets still not serving after timeout seconds (empty: all serving)."""
    deadline = time.monotonic() + timeout
    waiting = list(targets)
    while waiting and time.monotonic() < deadline:
        waiting = [t for t in waiting if not serving(t)]
        if waiting:
            time.sleep(0.5)
    return waiting


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("targets", nargs="+")
    parser.add_argument("--timeout", type=float, default=90.0)
    args = parser.parse_args()
    waiting = wait_serving(args.targets, args.timeout)
    if waiting:
        print(f"not SERVING after {args.timeout:.0f} s: {', '.join(waiting)}", file=sys.stderr)
        return 1
    print(f"SERVING: {', '.join(args.targets)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
