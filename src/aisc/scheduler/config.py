"""Policy settings, with documented defaults. Presets name the policies the simulator compares."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Literal

Ordering = Literal["multifactor", "fifo"]
DAY = 86_400.0
# 32 bits, as Slurm's PriorityWeight*: a weight past a float's range would break the priority sum.
MAX_WEIGHT = 2**32 - 1


@dataclass(frozen=True)
class PriorityWeights:
    """Integer weights of Slurm-style multifactor priority; each factor is in [0, 1]."""

    age: int = 1_000
    fairshare: int = 10_000
    size: int = 1_000
    qos: int = 2_000

    def __post_init__(self) -> None:
        for name, value in vars(self).items():
            if not isinstance(value, int) or not 0 <= value <= MAX_WEIGHT:
                raise ValueError(
                    f"priority weight {name}={value!r}: a whole number from 0 to {MAX_WEIGHT}"
                )


@dataclass(frozen=True)
class PolicyConfig:
    ordering: Ordering = "multifactor"
    weights: PriorityWeights = field(default_factory=PriorityWeights)
    # the age factor grows linearly and saturates here (Slurm's PriorityMaxAge)
    max_age_s: float = 7 * DAY
    # decayed usage halves over this time (Slurm's PriorityDecayHalfLife)
    usage_half_life_s: float = 7 * DAY
    # larger jobs get a larger size factor unless this is set (Slurm's PriorityFavorSmall)
    favor_small: bool = False
    # fair share computed in two levels, organisation then project, as Slurm's account tree
    group_by_org: bool = False
    # backfill: lower-priority jobs may start if no reserved start is delayed
    backfill: bool = True
    # how many blocked jobs, in priority order, get a reserved start (EASY backfill: one)
    reservations: int = 1
    # jobs may use idle GPUs beyond their project's guaranteed share; those are preemptible
    borrowing: bool = True
    preemption: bool = True
    # a borrowed job runs at least this long before it can be preempted
    min_runtime_s: float = 600.0
    # how many blocked jobs of under-share projects may reclaim GPUs in one cycle
    preemption_attempts: int = 4
    # compute reserved starts even when no GPU is free to backfill, so `why` can show them;
    # the simulator turns this off, since such reservations change no decision
    always_reserve: bool = True

    def with_(self, **changes: object) -> PolicyConfig:
        return replace(self, **changes)  # type: ignore[arg-type]


def preset(name: str) -> PolicyConfig:
    """fifo: strict submit order; backfill: FIFO with EASY backfill (a Slurm-like baseline);
    aisc: multifactor fair share, EASY backfill, borrowing with preemption."""
    if name == "fifo":
        return PolicyConfig(ordering="fifo", backfill=False, borrowing=False, preemption=False)
    if name == "backfill":
        return PolicyConfig(ordering="fifo", backfill=True, borrowing=False, preemption=False)
    if name == "aisc":
        return PolicyConfig()
    raise ValueError(f"unknown policy {name!r}: use fifo, backfill or aisc")
