"""trellis.common.logging: one JSON object per line on stdout, context bound, secrets masked."""

from __future__ import annotations

import json
import logging
import subprocess
import sys
from collections.abc import Iterator
from typing import Any

import pytest
import structlog

from trellis.common.logging import configure_logging, get_logger


@pytest.fixture(autouse=True)
def restore_logging() -> Iterator[None]:
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    structlog.reset_defaults()
    structlog.contextvars.clear_contextvars()
    root.handlers, root.level = handlers, level


def lines(capsys: pytest.CaptureFixture[str]) -> list[dict[str, Any]]:
    return [json.loads(line) for line in capsys.readouterr().out.splitlines() if line]


def test_structlog_lines_are_json_with_the_standard_keys(
    capsys: pytest.CaptureFixture[str],
) -> None:
    configure_logging("INFO")
    structlog.contextvars.bind_contextvars(request_id="r1", tenant_id="t1", method="S/M")

    get_logger("trellis.test").info("hello", items=3)

    (line,) = lines(capsys)
    assert line["event"] == "hello" and line["items"] == 3
    assert line["level"] == "info" and line["logger"] == "trellis.test"
    assert line["timestamp"].endswith("Z")
    assert (line["request_id"], line["tenant_id"], line["method"]) == ("r1", "t1", "S/M")


def test_stdlib_records_are_rendered_the_same_way(capsys: pytest.CaptureFixture[str]) -> None:
    configure_logging("INFO")
    structlog.contextvars.bind_contextvars(request_id="r2")

    logging.getLogger("kafka.conn").warning("broker %s down", "b1")

    (line,) = lines(capsys)
    assert line["event"] == "broker b1 down"
    assert line["level"] == "warning" and line["logger"] == "kafka.conn"
    assert line["request_id"] == "r2"


def test_the_level_filters(capsys: pytest.CaptureFixture[str]) -> None:
    configure_logging("warning")

    get_logger("trellis.test").info("dropped")
    logging.getLogger("other").info("dropped too")
    get_logger("trellis.test").error("kept")

    assert [line["event"] for line in lines(capsys)] == ["kept"]


def test_an_unknown_level_is_refused() -> None:
    with pytest.raises(ValueError):
        configure_logging("chatty")


def test_tokens_and_learner_identity_are_masked(capsys: pytest.CaptureFixture[str]) -> None:
    configure_logging("INFO")

    get_logger("trellis.test").info(
        "oops", authorization="Bearer abc", token="abc", learner_id="S123", display_name="Ada"
    )

    (line,) = lines(capsys)
    assert "abc" not in json.dumps(line) and "S123" not in json.dumps(line)
    assert "Ada" not in json.dumps(line)
    assert line["learner_id"] == "[redacted]"


def test_exceptions_carry_their_traceback(capsys: pytest.CaptureFixture[str]) -> None:
    configure_logging("INFO")

    try:
        raise ValueError("bad")
    except ValueError:
        get_logger("trellis.test").exception("failed")

    (line,) = lines(capsys)
    assert line["level"] == "error"
    assert "Traceback" in line["exception"] and "ValueError: bad" in line["exception"]


def test_loggers_made_before_configuration_follow_it(capsys: pytest.CaptureFixture[str]) -> None:
    early = get_logger("trellis.early")
    early.info("before")  # unconfigured structlog: not JSON, ignore
    capsys.readouterr()

    configure_logging("INFO")
    early.info("after")

    (line,) = lines(capsys)
    assert line["event"] == "after" and line["logger"] == "trellis.early"


# A service at DEBUG: the event loop churns through grpc AsyncIO channels left in reference cycles
# (freed by the collector, in whichever thread it runs) while other threads log DEBUG records whose
# formatting makes cyclic garbage, as kafka-python's threads do. With grpc's AIO diagnostics at
# DEBUG this stalled within seconds (grpc/grpc#43421); the watchdog exits 3 on a stall.
_CHURN_AT_DEBUG = """
import asyncio, logging, os, threading, time
import grpc
from trellis.common.logging import configure_logging

configure_logging("DEBUG")
progress = 0

class Cyclic:
    def __str__(self):
        for _ in range(200):
            cycle = []
            cycle.append(cycle)
        return "record"

def chatter():
    while True:
        logging.getLogger("aiokafka.conn").debug("sent %s", Cyclic())

def watchdog():
    last = -1
    for _ in range(3):
        time.sleep(2.5)
        if progress == last:
            os._exit(3)
        last = progress
    os._exit(0)

async def churn():
    global progress
    while True:
        channel = grpc.aio.insecure_channel("127.0.0.1:1")
        channel.cycle = channel
        del channel
        progress += 1
        await asyncio.sleep(0)

for _ in range(3):
    threading.Thread(target=chatter, daemon=True).start()
threading.Thread(target=watchdog, daemon=True).start()
asyncio.run(churn())
"""


def test_debug_logging_beside_grpc_aio_does_not_deadlock() -> None:
    run = subprocess.run(
        [sys.executable, "-c", _CHURN_AT_DEBUG], stdout=subprocess.DEVNULL, timeout=60
    )
    assert run.returncode == 0, "the event loop stalled: lock inversion with grpc's AIO lock"
