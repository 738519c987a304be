"""Structured JSON logs on stdout, one object per line (DESIGN.md §5).

structlog renders both its own loggers and the standard library's (grpc, kafka, faust), so every
line has the same shape: timestamp, level, logger, event, plus the request's contextvars
(request_id, tenant_id, method) that the gRPC interceptor binds. Keys that could carry a token or
learner PII are masked before rendering, whoever logged them.
"""

from __future__ import annotations

import logging
import sys
from typing import Any

import structlog
from structlog.typing import EventDict, Processor, WrappedLogger

__all__ = ["GRPC_AIO_LOGGER", "configure_logging", "get_logger"]

# grpcio (1.75.1 and later, grpc/grpc#43421) logs its AsyncIO loop diagnostics at DEBUG while
# holding its global AIO lock, and a garbage collection in any thread that holds a logging lock
# (kafka-python's, formatting a record) can finalize an AIO object, which waits for that lock: a
# deadlock. Kept at INFO or above, the diagnostics never reach a handler, so no lock is taken.
GRPC_AIO_LOGGER = "grpc._cython.cygrpc"

# Keys never rendered in clear: credentials, and learner identity. `learner_id` is masked too:
# at the edges it holds the SIS id; log the pseudonym under another key if it is ever needed.
_SENSITIVE_KEYS = frozenset(
    {
        "authorization",
        "token",
        "bearer",
        "password",
        "secret",
        "sis_id",
        "learner_sis_id",
        "learner_id",
        "display_name",
        "given_name",
        "family_name",
        "email",
    }
)
_MASK = "[redacted]"


def _redact(_logger: WrappedLogger, _name: str, event_dict: EventDict) -> EventDict:
    for key in _SENSITIVE_KEYS.intersection(event_dict):
        event_dict[key] = _MASK
    return event_dict


class _StdoutHandler(logging.StreamHandler[Any]):
    """Looks sys.stdout up per record: test runners and daemons replace it after configuration."""

    @property
    def stream(self) -> Any:
        return sys.stdout

    @stream.setter
    def stream(self, _value: Any) -> None:
        pass


class _StdoutLogger:
    """structlog's output for its own loggers: one rendered line, written straight to stdout.

    Bypassing the stdlib machinery keeps the per-RPC access line cheap on the hot path.
    """

    def __init__(self, name: str = "") -> None:
        self.name = name  # read by add_logger_name

    def msg(self, message: str) -> None:
        sys.stdout.write(message + "\n")

    log = debug = info = warning = warn = error = critical = exception = fatal = msg


def _stdout_logger_factory(name: str = "", *_args: Any) -> _StdoutLogger:
    return _StdoutLogger(name)


def configure_logging(level: str = "INFO") -> None:
    """Route structlog and stdlib logging to stdout as JSON at `level` (e.g. "INFO", "debug")."""
    numeric = logging.getLevelName(level.upper())
    if not isinstance(numeric, int):
        raise ValueError(f"unknown log level {level!r}")
    shared: list[Processor] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.stdlib.add_logger_name,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        _redact,
    ]
    structlog.configure(
        processors=[
            *shared,
            structlog.processors.format_exc_info,
            structlog.processors.JSONRenderer(),
        ],
        # Calls below the level are no-ops, decided once here.
        wrapper_class=structlog.make_filtering_bound_logger(numeric),
        logger_factory=_stdout_logger_factory,
        # No caching: module-level loggers created before configuration must still follow it.
        cache_logger_on_first_use=False,
    )
    # Records of the standard library (grpc, kafka, faust) get the same keys and rendering.
    handler = _StdoutHandler()
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            foreign_pre_chain=shared,
            processors=[
                structlog.stdlib.ProcessorFormatter.remove_processors_meta,
                structlog.processors.format_exc_info,
                structlog.processors.JSONRenderer(),
            ],
        )
    )
    root = logging.getLogger()
    root.handlers = [handler]
    root.setLevel(numeric)
    # kafka-python logs every connection and metadata step at INFO: only its warnings count,
    # except its group coordinator's (joins, syncs, assignments: rare, and what explains an idle
    # consumer). aiokafka, under Faust, stays at the configured level for the same reason.
    logging.getLogger("kafka").setLevel(max(numeric, logging.WARNING))
    logging.getLogger("kafka.coordinator").setLevel(numeric)
    logging.getLogger(GRPC_AIO_LOGGER).setLevel(max(numeric, logging.INFO))


def get_logger(name: str) -> Any:
    """A structlog logger whose lines carry `logger=name`."""
    return structlog.get_logger(name)
