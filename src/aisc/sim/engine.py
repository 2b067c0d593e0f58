"""The discrete-event engine: trace jobs arrive, the scheduler (the same core the live controller
drives) decides, jobs run for their true durations. Time jumps from event to event; there is no
fixed time step. The scheduler is told each arrival, start, end and preemption incrementally.

Modelling choices, each documented in the README:
- the scheduler sees only a time limit, the true duration times `limit_factor`, rounded up
  to whole seconds (users over-estimate; 1.0 would be perfect knowledge);
- a job larger than one node takes whole nodes, so its request is rounded up to a multiple of
  the node size; a job larger than the cluster cannot run and is counted as refused;
- a preempted job loses its run and starts again from the beginning when it is next placed;
- `srtf` is the oracle bound: shortest true duration first, with exact time limits for
  backfill (it knows what no real scheduler knows).
"""

from __future__ import annotations

import heapq
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from aisc.scheduler.config import PolicyConfig, preset
from aisc.scheduler.core import Scheduler
from aisc.scheduler.interface import NodeSpec, PendingJob
from aisc.sim.records import JobRecord, SimResult, Trace, TraceJob

POLICIES = ("fifo", "backfill", "aisc", "srtf")
SUBMIT, END, TICK = 1, 0, 2  # ends first at equal times, so freed GPUs are seen by arrivals
TICK_GRID_S = 60.0


@dataclass(frozen=True)
class SimCluster:
    nodes: int
    gpus_per_node: int
    gpu_model: str = "H800"

    def __post_init__(self) -> None:
        if self.nodes < 1 or self.gpus_per_node < 1:
            raise ValueError("a cluster needs at least one node with at least one GPU")

    @property
    def total_gpus(self) -> int:
        return self.nodes * self.gpus_per_node

    def specs(self) -> list[NodeSpec]:
        width = len(str(self.nodes))
        return [
            NodeSpec(f"node{i:0{width}d}", self.gpu_model, self.gpus_per_node)
            for i in range(1, self.nodes + 1)
        ]


def policy_config(name: str) -> PolicyConfig:
    if name == "srtf":
        return preset("backfill")
    return preset(name)


@dataclass
class _Run:
    job: TraceJob
    gpus: int
    limit: int
    start: float = 0.0
    generation: int = 0  # bumped when a run is preempted, so its END event is ignored
    preemptions: int = 0
    lost: float = 0.0


@dataclass
class SimRun:
    """One replay in progress; `run()` drives it to the end."""

    trace: Trace
    cluster: SimCluster
    policy: str
    limit_factor: float = 1.5
    config: PolicyConfig | None = None
    progress: Callable[[int], None] | None = None
    refused: int = 0
    records: list[JobRecord] = field(default_factory=list)

    def run(self) -> SimResult:
        if self.policy not in POLICIES:
            raise ValueError(f"unknown policy {self.policy!r}: use {', '.join(POLICIES)}")
        if self.limit_factor < 1:
            raise ValueError("the time-limit factor must be at least 1 (limits >= durations)")
        wall = time.perf_counter()
        config = (self.config or policy_config(self.policy)).with_(always_reserve=False)
        scheduler = Scheduler(self.cluster.specs(), config)
        oracle = self.policy == "srtf"
        # a borrowed job becomes preemptible after its minimum run; a tick then lets a waiting
        # job reclaim it, as the live controller's periodic cycle would
        min_run = config.min_runtime_s if config.borrowing and config.preemption else None
        projects: dict[str, int] = {}
        for job in self.trace.jobs:
            projects.setdefault(job.project, len(projects) + 1)
        entitlements = _entitlements(self.trace)
        scheduler.set_shares({projects[p]: share for p, share in entitlements.items()})

        runs: dict[int, _Run] = {}
        events: list[tuple[float, int, int, int]] = []  # (time, kind, job id, generation)
        size = self.cluster.gpus_per_node
        for job in self.trace.jobs:
            gpus = job.gpus if job.gpus <= size else math.ceil(job.gpus / size) * size
            if gpus > self.cluster.total_gpus:
                self.refused += 1
                continue
            limit = max(1, math.ceil(job.duration_s * (1.0 if oracle else self.limit_factor)))
            runs[job.job_id] = _Run(job, gpus, limit)
            events.append((job.submit_s, SUBMIT, job.job_id, 0))
        heapq.heapify(events)

        ticks: set[float] = set()
        busy = 0
        busy_series: list[tuple[float, int]] = [(0.0, 0)]
        done = 0
        while events:
            now = events[0][0]
            freed = False  # a job ended or a tick came: a cycle may start something
            arrival_may_start = False  # a new job may fit now, or take borrowed GPUs back
            while events and events[0][0] == now:
                _, kind, job_id, generation = heapq.heappop(events)
                r = runs[job_id] if kind != TICK else None
                if kind == SUBMIT and r is not None:
                    arrival_may_start = (
                        arrival_may_start
                        or scheduler.may_fit(r.gpus, self.cluster.gpu_model)
                        or scheduler.may_reclaim(projects[r.job.project], r.gpus)
                    )
                    scheduler.submit(
                        PendingJob(
                            job_id=job_id,
                            project=projects[r.job.project],
                            gpus=r.gpus,
                            gpu_model=self.cluster.gpu_model,
                            priority=0,
                            submitted_at=r.job.submit_s,
                            time_limit_s=r.limit,
                            sort_key=r.job.duration_s,
                        )
                    )
                elif kind == END and r is not None and generation == r.generation:
                    freed = True
                    scheduler.finished(job_id, now)
                    busy -= r.gpus
                    self.records.append(
                        JobRecord(
                            job_id=job_id,
                            project=r.job.project,
                            gpus=r.gpus,
                            requested_gpus=r.job.gpus,
                            submit_s=r.job.submit_s,
                            start_s=r.start,
                            end_s=now,
                            duration_s=r.job.duration_s,
                            preemptions=r.preemptions,
                            lost_gpu_seconds=r.lost,
                        )
                    )
                    done += 1
                    if self.progress is not None and done % 1000 == 0:
                        self.progress(done)
                elif kind == TICK:
                    freed = True
                    ticks.discard(now)
            if not freed and not arrival_may_start:
                continue  # only arrivals that can neither fit nor reclaim: nothing can start
            order = scheduler.order_by_key(now) if oracle else None
            result = scheduler.cycle(now, order)
            for job_id in result.preemptions:
                r = runs[job_id]
                scheduler.preempted(job_id, now)
                busy -= r.gpus
                r.lost += r.gpus * (now - r.start)
                r.preemptions += 1
                r.generation += 1
            for placement in result.starts:
                r = runs[placement.job_id]
                scheduler.started(placement, now)
                r.start = now
                busy += r.gpus
                heapq.heappush(
                    events, (now + r.job.duration_s, END, placement.job_id, r.generation)
                )
                if placement.borrowed and min_run is not None and min_run < r.job.duration_s:
                    # look again when it becomes preemptible, on a one-minute grid (as a
                    # controller cycling every minute would) so many borrowed starts share a look
                    tick = math.ceil((now + min_run) / TICK_GRID_S) * TICK_GRID_S
                    if tick not in ticks:
                        ticks.add(tick)
                        heapq.heappush(events, (tick, TICK, 0, 0))
            if busy_series[-1][1] != busy:
                busy_series.append((now, busy))
        if self.progress is not None:
            self.progress(done)
        return SimResult(
            policy=self.policy,
            trace_name=self.trace.name,
            total_gpus=self.cluster.total_gpus,
            records=self.records,
            entitlements=entitlements,
            busy_series=busy_series,
            wall_s=time.perf_counter() - wall,
            start_time=self.trace.start_time,
        )


def _entitlements(trace: Trace) -> dict[str, float]:
    """Each project's entitlement: its share of the trace's GPU-time."""
    usage: dict[str, float] = {}
    for job in trace.jobs:
        usage[job.project] = usage.get(job.project, 0.0) + job.gpus * job.duration_s
    total = sum(usage.values())
    if total <= 0:
        count = len(usage) or 1
        return {p: 1.0 / count for p in usage}
    return {p: u / total for p, u in usage.items()}


def simulate(
    trace: Trace,
    cluster: SimCluster,
    policy: str,
    limit_factor: float = 1.5,
    progress: Callable[[int], None] | None = None,
) -> SimResult:
    return SimRun(trace, cluster, policy, limit_factor, progress=progress).run()
