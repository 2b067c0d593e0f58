"""What the centre's monitoring reads: one consistent snapshot of the queue, the GPUs, the jobs,
the funds and every allocation's balance, taken from the database at scrape time, so the figures
survive restarts and agree with the ledger. Also the controller's cycle-time histogram and the
check of the scrape token."""

from __future__ import annotations

import hmac
from collections.abc import Callable
from dataclasses import dataclass, field

from prometheus_client import Histogram
from sqlalchemy import func, select

from aisc.domain.errors import AuthenticationFailed
from aisc.domain.model import FINAL_JOB_STATES, JobState
from aisc.services import nodes, schemes
from aisc.services.allocations import AllocationBalance, balances_of
from aisc.services.context import SYSTEM
from aisc.services.schemes import FundPosition
from aisc.store.tables import Allocation, Job, Organisation
from aisc.store.uow import UnitOfWork

# a cycle over a deep queue takes seconds (see benchmarks/), an idle one milliseconds
CYCLE_BUCKETS = (0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)


def cycle_histogram() -> Histogram:
    """A controller's own cycle-time histogram, registered by each app that serves it (not in
    the process-wide registry: a test process builds many controllers)."""
    return Histogram(
        "aisc_scheduler_cycle_seconds",
        "Time one controller cycle takes: reconcile, sync the queue, schedule and launch.",
        buckets=CYCLE_BUCKETS,
        registry=None,
    )


def authorize_scrape(expected: str | None, presented: str | None) -> None:
    """Open when no token is configured; otherwise the bearer token must match it."""
    if not expected:
        return
    if presented is None or not hmac.compare_digest(presented.encode(), expected.encode()):
        raise AuthenticationFailed("/metrics needs the metrics bearer token (AISC_METRICS_TOKEN)")


@dataclass(frozen=True)
class AllocationFigures:
    balance: AllocationBalance
    organisation: str


@dataclass(frozen=True)
class QueuedModel:
    jobs: int
    gpus: int


@dataclass
class CentreFigures:
    jobs_by_state: dict[str, int] = field(default_factory=dict)  # every state, zeros included
    queued: dict[str, QueuedModel] = field(default_factory=dict)  # by GPU model
    gpus_total: dict[str, int] = field(default_factory=dict)  # by GPU model
    gpus_busy: dict[str, int] = field(default_factory=dict)
    # each start of a job, a preempted job's earlier runs included: it only ever grows
    jobs_started: int = 0
    jobs_finished: dict[str, int] = field(default_factory=dict)  # by final state
    funds: list[FundPosition] = field(default_factory=list)
    allocations: list[AllocationFigures] = field(default_factory=list)

    @property
    def queue_depth(self) -> int:
        return self.jobs_by_state.get(JobState.QUEUED.value, 0)


def centre_figures(uow: Callable[[], UnitOfWork]) -> CentreFigures:
    """Everything /metrics reports. Monitoring is not a user, so no role is asked for: who may
    scrape is decided by the scrape token."""
    figures = CentreFigures(funds=schemes.fund_positions(uow(), SYSTEM))
    for node in nodes.list_nodes(uow(), SYSTEM):
        figures.gpus_total[node.gpu_model] = figures.gpus_total.get(node.gpu_model, 0) + node.gpus
        busy = figures.gpus_busy.get(node.gpu_model, 0) + len(node.busy_gpus)
        figures.gpus_busy[node.gpu_model] = busy
    with uow() as work:
        work.ledger.snapshot()  # jobs and balances as of one moment
        _read_jobs(work, figures)
        figures.allocations = _allocation_figures(work)
    return figures


def _read_jobs(uow: UnitOfWork, figures: CentreFigures) -> None:
    figures.jobs_by_state = {state.value: 0 for state in JobState}
    rows = uow.session.execute(
        select(
            Job.state,
            func.count(),
            func.count(Job.started_at),
            func.coalesce(func.sum(Job.preemptions), 0),
        ).group_by(Job.state)
    ).all()
    for state, count, started, preemptions in rows:
        figures.jobs_by_state[state] = int(count)
        # a preempted job's earlier run cleared its started_at and added to its preemptions
        figures.jobs_started += int(started) + int(preemptions)
    figures.jobs_finished = {
        state.value: figures.jobs_by_state.get(state.value, 0) for state in sorted(FINAL_JOB_STATES)
    }
    queued = uow.session.execute(
        select(Job.gpu_model, func.count(), func.sum(Job.gpus))
        .where(Job.state == JobState.QUEUED.value)
        .group_by(Job.gpu_model)
    ).all()
    figures.queued = {model: QueuedModel(int(n), int(gpus or 0)) for model, n, gpus in queued}


def _allocation_figures(uow: UnitOfWork) -> list[AllocationFigures]:
    rows = uow.session.execute(
        select(Allocation, Organisation.name)
        .join(Organisation, Organisation.id == Allocation.org_id)
        .order_by(Allocation.id)
    ).all()
    balances = balances_of(uow, [allocation for allocation, _ in rows])
    return [
        AllocationFigures(balance, org_name)
        for balance, (_, org_name) in zip(balances, rows, strict=True)
    ]
