"""The `start_worker` fixture of the mastery integration tests."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.integration.mastery.workers import Worker, launch_worker
from trellis.common.settings import Settings


@pytest.fixture
def start_worker(
    settings: Settings, tmp_path: Path
) -> Iterator[Callable[[str, str | None], Worker]]:
    """Starts `python -m trellis.mastery worker` on the data dir named `disk` (default: its own,
    named like the worker); kills what is left at the end."""
    started: list[Worker] = []

    def start(name: str, disk: str | None = None) -> Worker:
        worker = launch_worker(settings, tmp_path / (disk or name), tmp_path / f"{name}.log")
        started.append(worker)
        return worker

    try:
        yield start
    finally:
        for worker in started:
            if worker.process.poll() is None:
                worker.process.kill()
                worker.process.wait(timeout=10)
