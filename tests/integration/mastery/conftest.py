"""The `start_worker` fixture of the mastery integration tests."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.integration.mastery.workers import Worker, free_port, worker_env
from trellis.common.settings import Settings


@pytest.fixture
def start_worker(
    settings: Settings, tmp_path: Path
) -> Iterator[Callable[[str, str | None], Worker]]:
    """Starts `python -m trellis.mastery worker` on the data dir named `disk` (default: its own,
    named like the worker); kills what is left at the end."""
    started: list[Worker] = []

    def start(name: str, disk: str | None = None) -> Worker:
        port = free_port()
        log = tmp_path / f"{name}.log"
        with log.open("wb") as sink:
            process = subprocess.Popen(
                [sys.executable, "-m", "trellis.mastery", "worker"],
                env=worker_env(settings, tmp_path / (disk or name), port, free_port()),
                stdout=sink,
                stderr=subprocess.STDOUT,
            )
        started.append(Worker(process, log, port))
        return started[-1]

    try:
        yield start
    finally:
        for worker in started:
            if worker.process.poll() is None:
                worker.process.kill()
                worker.process.wait(timeout=10)
