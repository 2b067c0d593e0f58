"""The controller: moves jobs through their life on an executor backend, one cycle at a time.

Each cycle (1) reconciles running jobs with the backend: exits, timeouts, cancellations, lost
processes; (2) asks the scheduling policy which queued jobs to start on the free GPUs; (3)
reserves each one's quota in the ledger, then launches it. Every state change that moves money
is one database transaction with its ledger posting, so a crash between cycles loses nothing:
the next controller finds running jobs again from their stored handles.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime

from sqlalchemy import select

from aisc.backends.base import (
    ExecutionHandle,
    ExecutionState,
    ExecutorBackend,
    LaunchError,
    LaunchSpec,
)
from aisc.backends.inventory import Node as InventoryNode
from aisc.domain.errors import Conflict, OverQuota
from aisc.domain.model import JobState
from aisc.scheduler.interface import NodeView, SchedulingPolicy
from aisc.services.allocations import check_open
from aisc.services.context import Clock, utcnow
from aisc.services.jobs import as_pending
from aisc.services.metering import release_job, reserve_job, settle_job
from aisc.store.tables import Allocation, Job, Node
from aisc.store.uow import UnitOfWork

log = logging.getLogger(__name__)

ACTIVE = (JobState.STARTING.value, JobState.RUNNING.value)
LAUNCH_GRACE_S = 60


@dataclass(frozen=True)
class Outcome:
    """How a job ended. `ran` says whether it is charged (settled) or only released."""

    state: JobState
    reason: str
    ended_at: datetime
    exit_code: int | None = None
    ran: bool = False


@dataclass
class CycleReport:
    started: list[int] = field(default_factory=list)
    finished: list[int] = field(default_factory=list)
    refused: list[int] = field(default_factory=list)


def sync_inventory(uow: UnitOfWork, nodes: list[InventoryNode], backend: str) -> None:
    """Make the nodes table match the executor's inventory (added, changed and removed nodes)."""
    with uow:
        existing = {n.name: n for n in uow.session.scalars(select(Node))}
        for node in nodes:
            row = existing.pop(node.name, None)
            if row is None:
                row = Node(name=node.name)
                uow.session.add(row)
            row.gpu_model = node.gpu_model
            row.gpus = node.gpus
            row.gpu_indices = list(node.gpu_indices)
            row.backend = backend
            row.updated_at = utcnow()
        for stale in existing.values():
            uow.session.delete(stale)
        uow.commit()


class Controller:
    def __init__(
        self,
        uow_factory: Callable[[], UnitOfWork],
        backend: ExecutorBackend,
        policy: SchedulingPolicy,
        clock: Clock = utcnow,
    ) -> None:
        self.uow = uow_factory
        self.backend = backend
        self.policy = policy
        self.clock = clock

    def cycle(self) -> CycleReport:
        report = CycleReport()
        self._reconcile(report)
        self._schedule(report)
        return report

    # -- 1. reconcile running jobs with the backend ------------------------------------------

    def _reconcile(self, report: CycleReport) -> None:
        with self.uow() as uow:
            active = list(uow.session.scalars(select(Job).where(Job.state.in_(ACTIVE))))
        for job in active:
            try:
                outcome = self._observe(job)
                if outcome is not None:
                    self._finish(job.id, outcome)
                    report.finished.append(job.id)
            except Exception:  # one job's trouble must not stop the others being metered
                log.exception("could not reconcile job %s; will retry next cycle", job.id)

    def _observe(self, job: Job) -> Outcome | None:
        """What became of a starting or running job; None while it is still running."""
        now = self.clock()
        if job.backend_ref is None:
            # reserved but not launched: another controller may be launching it right now, so
            # only a reservation older than the grace period is taken as a crash mid-launch
            assert job.started_at is not None
            if (now - job.started_at).total_seconds() < LAUNCH_GRACE_S:
                return None
            return Outcome(JobState.FAILED, "the controller stopped before the job launched", now)
        handle = ExecutionHandle.from_json(job.backend_ref)
        if job.cancel_requested:
            self.backend.kill(handle)
            return Outcome(JobState.CANCELLED, job.reason or "cancelled", now, ran=True)
        status = self.backend.poll(handle)
        if status.state == ExecutionState.RUNNING:
            assert job.started_at is not None
            if (now - job.started_at).total_seconds() >= job.time_limit_s:
                self.backend.kill(handle)
                reason = f"killed at its time limit of {job.time_limit_s} s"
                return Outcome(JobState.TIMEOUT, reason, now, ran=True)
            return None
        ended = _at(status.ended_at) if status.ended_at else now
        if status.state == ExecutionState.EXITED:
            code = status.exit_code
            if code == 0:
                return Outcome(JobState.COMPLETED, "", ended, exit_code=code, ran=True)
            return Outcome(
                JobState.FAILED, f"exited with status {code}", ended, exit_code=code, ran=True
            )
        if status.state == ExecutionState.FAILED_TO_START:
            return Outcome(JobState.FAILED, status.reason or "could not start", ended)
        # lost: the centre cannot show what ran, so the grantee is not charged
        return Outcome(JobState.FAILED, status.reason or "the job's process was lost", now)

    def _finish(self, job_id: int, outcome: Outcome) -> None:
        """Settle (or release) and record the end, in one transaction; a no-op if already done."""
        with self.uow() as uow:
            uow.ledger.lock()
            job = uow.session.get(Job, job_id)
            if job is None or JobState(job.state).is_final:
                return  # another controller got there first
            allocation = uow.session.get(Allocation, job.allocation_id)
            assert allocation is not None
            if outcome.ran:
                settle_job(uow, job, allocation, outcome.ended_at)
            else:
                release_job(uow, job, allocation, outcome.ended_at)
            job.state = outcome.state.value
            job.reason = outcome.reason
            job.exit_code = outcome.exit_code
            job.ended_at = outcome.ended_at
            uow.commit()
        log.info("job %s %s %s", job_id, outcome.state.value, outcome.reason)

    # -- 2. schedule and 3. launch ----------------------------------------------------------

    def _schedule(self, report: CycleReport) -> None:
        now = self.clock()
        with self.uow() as uow:
            queued = list(
                uow.session.scalars(
                    select(Job).where(Job.state == JobState.QUEUED.value).order_by(Job.id)
                )
            )
            if not queued:
                return
            nodes = list(uow.session.scalars(select(Node).order_by(Node.name)))
            busy: dict[str, set[int]] = {}
            for job in uow.session.scalars(select(Job).where(Job.state.in_(ACTIVE))):
                if job.node and job.gpu_indices is not None:
                    busy.setdefault(job.node, set()).update(job.gpu_indices)
        views = [
            NodeView(
                n.name,
                n.gpu_model,
                tuple(i for i in n.gpu_indices if i not in busy.get(n.name, set())),
            )
            for n in nodes
        ]
        pending = [as_pending(j) for j in queued]
        for placement in self.policy.schedule(pending, views, now.timestamp()):
            spec = self._reserve(placement.job_id, placement.node, placement.gpu_indices, report)
            if spec is not None:
                self._launch(spec, report)

    def _reserve(
        self, job_id: int, node: str, gpu_indices: tuple[int, ...], report: CycleReport
    ) -> LaunchSpec | None:
        now = self.clock()
        refusal: Conflict
        with self.uow() as uow:
            uow.ledger.lock()
            job = uow.session.get(Job, job_id)
            if job is None or job.state != JobState.QUEUED.value:
                return None
            allocation = uow.session.get(Allocation, job.allocation_id)
            assert allocation is not None
            try:
                check_open(allocation, now)
                reserve_job(uow, job, allocation, now)
            except Conflict as exc:  # OverQuota is a Conflict too
                refusal = exc
            else:
                job.state = JobState.STARTING.value
                job.started_at = now  # replaced by the process's own start time at launch
                job.node = node
                job.gpu_indices = list(gpu_indices)
                job.backend = self.backend.name
                job.reason = ""
                uow.commit()
                return LaunchSpec(
                    job_id=job.id,
                    argv=tuple(job.argv),
                    cwd=None,
                    env={"AISC_ALLOCATION_ID": str(job.allocation_id)},
                    node=node,
                    gpu_indices=gpu_indices,
                )
        self._refuse_or_wait(job_id, refusal, report)
        return None

    def _refuse_or_wait(self, job_id: int, refusal: Conflict, report: CycleReport) -> None:
        """Over quota: wait while running jobs may give quota back; otherwise fail the job."""
        with self.uow() as uow:
            job = uow.session.get(Job, job_id)
            assert job is not None
            holders = uow.session.scalar(
                select(Job.id)
                .where(Job.allocation_id == job.allocation_id, Job.state.in_(ACTIVE))
                .limit(1)
            )
            if isinstance(refusal, OverQuota) and holders is not None:
                job.reason = f"waiting for running jobs to return quota: {refusal.detail}"
            else:
                job.state = JobState.FAILED.value
                job.reason = f"refused: {refusal.detail}"
                job.ended_at = self.clock()
                report.refused.append(job_id)
            uow.commit()

    def _launch(self, spec: LaunchSpec, report: CycleReport) -> None:
        try:
            handle = self.backend.start(spec)
        except LaunchError as exc:
            self._finish(
                spec.job_id, Outcome(JobState.FAILED, f"cannot start: {exc}", self.clock())
            )
            report.finished.append(spec.job_id)
            return
        with self.uow() as uow:
            job = uow.session.get(Job, spec.job_id)
            assert job is not None
            job.state = JobState.RUNNING.value
            job.started_at = _at(handle.started_at)
            job.backend_ref = handle.to_json()
            uow.commit()
        report.started.append(spec.job_id)


def _at(epoch: float) -> datetime:
    return datetime.fromtimestamp(epoch, tz=UTC)
