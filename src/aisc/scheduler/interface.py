"""The contract between the scheduler and what drives it: the live controller, the simulator."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class NodeSpec:
    name: str
    gpu_model: str
    gpus: int
    gpu_indices: tuple[int, ...] = ()  # physical indices; empty means 0..gpus-1

    def physical(self, slot: int) -> int:
        return self.gpu_indices[slot] if self.gpu_indices else slot


@dataclass(frozen=True)
class PendingJob:
    job_id: int
    project: int  # the allocation the job runs under
    gpus: int
    gpu_model: str
    priority: int  # the job's priority class, -10..10 (0 normal); the QOS factor
    submitted_at: float  # epoch seconds
    time_limit_s: int
    org: int = 0  # the project's organisation, for two-level fair share
    sort_key: float = 0.0  # for orderings that need one (the simulator's SRTF oracle)


@dataclass(frozen=True)
class NodeGpus:
    node: str
    gpu_indices: tuple[int, ...]


@dataclass(frozen=True)
class Placement:
    job_id: int
    nodes: tuple[NodeGpus, ...]
    borrowed: bool = False  # started beyond its project's guaranteed share: preemptible

    @property
    def node(self) -> str:
        return self.nodes[0].node

    @property
    def gpu_indices(self) -> tuple[int, ...]:
        return tuple(i for n in self.nodes for i in n.gpu_indices)


@dataclass(frozen=True)
class Reservation:
    job_id: int
    start_at: float
    nodes: tuple[str, ...]


@dataclass(frozen=True)
class CycleResult:
    starts: list[Placement]
    preemptions: list[int]  # running jobs to stop and requeue, before the starts
    reservations: list[Reservation]
    pending: int  # how many pending jobs the cycle ordered and could have started

    @property
    def started_ids(self) -> list[int]:
        return [p.job_id for p in self.starts]


@dataclass(frozen=True)
class PriorityFactors:
    age: float
    fairshare: float
    size: float
    qos: float
    priority: float


@dataclass(frozen=True)
class Explanation:
    job_id: int
    state: str  # pending, running, unknown
    position: int | None  # 1-based place in priority order among pending jobs
    factors: PriorityFactors | None
    reason: str
    reserved_start: float | None = None
    reserved_nodes: tuple[str, ...] = ()
