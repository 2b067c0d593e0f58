"""Drive a controller through cycles until something has happened, as its loop would."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Protocol


class Cycles(Protocol):
    def cycle(self) -> object: ...


def cycle_until(controller: Cycles, done: Callable[[], bool], timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not done():
        assert time.monotonic() < deadline, "the jobs did not get there in time"
        controller.cycle()
        time.sleep(0.05)
