"""The lifecycle the sink and its decoding-process runner share: a loop in a daemon thread of its
own, `running` while it consumes, asked to finish with `stop()`."""

from __future__ import annotations

import threading


class BackgroundLoop:
    def __init__(self) -> None:
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.running = threading.Event()

    def run(self) -> None:
        """The loop; returns once `_stop` is set and its work is finished."""
        raise NotImplementedError

    def start(self) -> threading.Thread:
        """Run `run()` in a daemon thread."""
        if self._thread is not None:
            raise RuntimeError("the sink was started already")
        self._thread = threading.Thread(target=self.run, name="reporting-sink", daemon=True)
        self._thread.start()
        return self._thread

    def stop(self, timeout: float | None = None) -> bool:
        """Ask the loop to flush what it has, commit and leave the group; True if it ended in
        time."""
        self._stop.set()
        if self._thread is None:
            return True
        self._thread.join(timeout)
        return not self._thread.is_alive()
