"""The contract between the controller (or simulator) and a scheduling policy."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol


@dataclass(frozen=True)
class NodeView:
    name: str
    gpu_model: str
    free_gpus: tuple[int, ...]  # GPU indices not held by any running job


@dataclass(frozen=True)
class PendingJob:
    job_id: int
    project: int  # the allocation the job runs under
    gpus: int
    gpu_model: str
    priority: int
    submitted_at: float  # epoch seconds
    time_limit_s: int


@dataclass(frozen=True)
class Placement:
    job_id: int
    node: str
    gpu_indices: tuple[int, ...]


class SchedulingPolicy(Protocol):
    name: str

    def schedule(
        self, pending: Sequence[PendingJob], nodes: Sequence[NodeView], now: float
    ) -> list[Placement]:
        """Which pending jobs to start now, and where. Must never hand out a GPU twice."""
        ...
