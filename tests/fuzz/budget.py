"""How hard the fuzz tests try: a small, reproducible sample in CI, as much as you like on demand.

- ``AISC_FUZZ_SCALE=N`` multiplies every fuzz test's number of examples (e.g. 20 for a long
  run before a release).
- ``AISC_FUZZ_RANDOM=1`` draws fresh examples on each run instead of the same ones; a failure
  found that way is saved in ``.hypothesis/`` and tried first on the next run.

By default the examples are derandomized (seeded from each test's name): CI runs the same
requests and files every time, so a red build is never luck and can be replayed as it was.
"""

from __future__ import annotations

import os

from hypothesis import HealthCheck, settings
from hypothesis.database import DirectoryBasedExampleDatabase


def _scale() -> float:
    raw = os.environ.get("AISC_FUZZ_SCALE", "1")
    try:
        value = float(raw)
    except ValueError:
        raise ValueError(f"AISC_FUZZ_SCALE={raw!r}: expected a number, like 10") from None
    if not value > 0:
        raise ValueError(f"AISC_FUZZ_SCALE={raw!r}: expected a number above 0")
    return value


RANDOM = os.environ.get("AISC_FUZZ_RANDOM", "") not in ("", "0")


def fuzz_settings(max_examples: int) -> settings:
    """Settings for one fuzz test: `max_examples` scaled, no deadline (CI machines are slow)."""
    return settings(
        max_examples=max(1, round(max_examples * _scale())),
        deadline=None,
        derandomize=not RANDOM,
        database=DirectoryBasedExampleDatabase(".hypothesis/examples") if RANDOM else None,
        # Fixtures here are set up once per test on purpose (a seeded centre, a temp dir),
        # and generated files or requests may be large and slow to build.
        suppress_health_check=[
            HealthCheck.function_scoped_fixture,
            HealthCheck.too_slow,
            HealthCheck.data_too_large,
            HealthCheck.filter_too_much,
        ],
    )
