"""The controller: moves jobs through their life on an executor backend, one cycle at a time.

Each cycle (1) reconciles running jobs with the backend: exits, timeouts, cancellations, lost
processes; (2) brings the scheduler's queue and entitlements up to date with the database;
(3) asks the scheduler (the same policy core the simulator drives) what to preempt and what to
start; (4) stops and requeues preempted jobs, then reserves each start's quota in the ledger and
launches it. Every state change that moves money is one database transaction with its ledger
posting, so a crash between cycles loses nothing: the next controller rebuilds the scheduler's
state from the database and finds running jobs again from their stored handles.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime

from sqlalchemy import func, select

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
from aisc.scheduler.config import PolicyConfig
from aisc.scheduler.core import Scheduler
from aisc.scheduler.interface import Explanation, NodeGpus, Placement
from aisc.scheduler.rules import Unschedulable
from aisc.services.allocations import check_open
from aisc.services.context import Clock, utcnow
from aisc.services.jobs import as_pending, node_specs
from aisc.services.metering import release_job, reserve_job, settle_job
from aisc.services.metrics import cycle_histogram
from aisc.store.tables import Allocation, Job, JobCharge, Node
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
    preempted: list[int] = field(default_factory=list)


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


def waits_for_quota(uow: UnitOfWork, job_id: int, refusal: Conflict) -> bool:
    """Over quota while the allocation's active jobs may give quota back: the job waits, with
    the reason noted, and True. Otherwise False: the caller fails the job."""
    with uow:
        job = uow.session.get(Job, job_id)
        assert job is not None
        holders = uow.session.scalar(
            select(Job.id)
            .where(Job.allocation_id == job.allocation_id, Job.state.in_(ACTIVE))
            .limit(1)
        )
        if isinstance(refusal, OverQuota) and holders is not None:
            job.reason = f"waiting for running jobs to return quota: {refusal.detail}"
            uow.commit()
            return True
    return False


FULL_QUEUE_READ_EVERY = 20  # syncs (ten seconds at the default interval)


class Controller:
    # the local executor is always reachable; the Slurm controller reports outages here
    status = "ok"
    last_contact: datetime | None = None

    def __init__(
        self,
        uow_factory: Callable[[], UnitOfWork],
        backend: ExecutorBackend,
        config: PolicyConfig | None = None,
        clock: Clock = utcnow,
    ) -> None:
        self.uow = uow_factory
        self.backend = backend
        self.config = config or PolicyConfig()
        self.clock = clock
        # the API explains the queue from another thread while cycles change it
        self.lock = threading.RLock()
        self._scheduler: Scheduler | None = None
        self._newest_queued = 0  # the highest job id the scheduler has been given
        self._syncs_since_full_read = FULL_QUEUE_READ_EVERY  # the first sync reads it all
        self.cycle_seconds = cycle_histogram()  # served at /metrics

    @property
    def scheduler(self) -> Scheduler:
        """The policy core, built from the database on first use."""
        with self.lock:
            if self._scheduler is None:
                self._scheduler = self._build_scheduler()
            return self._scheduler

    def cycle(self) -> CycleReport:
        with self.lock, self.cycle_seconds.time():
            report = CycleReport()
            self._reconcile(report)
            self._sync_queue(report)
            self._schedule(report)
            return report

    def explain(self, job_id: int) -> Explanation:
        with self.lock:
            self._sync_queue(CycleReport())  # jobs submitted since the last cycle count too
            return self.scheduler.explain(job_id, self.clock().timestamp())

    def positions(self) -> dict[int, int]:
        """Each pending job's 1-based place in the order the scheduler considers them."""
        with self.lock:
            self._sync_queue(CycleReport())
            ordered = self.scheduler.ordered_ids(self.clock().timestamp())
            return {job_id: i for i, job_id in enumerate(ordered, start=1)}

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
            handle = self.backend.find(job.id)
            if handle is not None and job.started_at is not None:
                # launched, but the controller stopped before recording it: adopt the run, so
                # it is metered, rather than leaving it on GPUs the scheduler thinks are free
                self._record_launch(job.id, handle)
                return None
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
        # lost: the centre cannot show what ran, so the grantee is not charged. Whatever the job
        # left running (its runner killed, its command orphaned) is stopped: the GPUs are free
        # again for the scheduler, and nothing runs on them uncharged
        self.backend.kill(handle)
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
        if job_id in self.scheduler.running:
            self.scheduler.finished(job_id, outcome.ended_at.timestamp())
        log.info("job %s %s %s", job_id, outcome.state.value, outcome.reason)

    # -- 2. the scheduler's view of the database ---------------------------------------------

    def _build_scheduler(self) -> Scheduler:
        with self.uow() as uow:
            scheduler = Scheduler(node_specs(uow.session), self.config)
            self._refresh_shares(uow, scheduler)
            usage = uow.session.execute(
                select(JobCharge.allocation_id, JobCharge.gpu_seconds, JobCharge.usage_ended_at)
            ).all()
            for allocation_id, gpu_seconds, ended_at in usage:
                scheduler.add_usage(allocation_id, gpu_seconds, ended_at.timestamp())
            active = uow.session.execute(
                select(Job, Allocation.org_id)
                .join(Allocation, Allocation.id == Job.allocation_id)
                .where(Job.state.in_(ACTIVE), Job.placement.is_not(None))
            ).all()
            for job, org_id in active:
                assert job.started_at is not None and job.placement is not None
                placement = Placement(
                    job.id,
                    tuple(NodeGpus(p["node"], tuple(p["gpus"])) for p in job.placement),
                    job.borrowed,
                )
                scheduler.adopt(as_pending(job, org_id), placement, job.started_at.timestamp())
        return scheduler

    def _refresh_shares(self, uow: UnitOfWork, scheduler: Scheduler) -> None:
        """Entitlement: each active award's GPU-hours over its period, i.e. its average GPUs."""
        shares: dict[int, float] = {}
        org_of: dict[int, int] = {}
        for allocation in uow.session.scalars(
            select(Allocation).where(Allocation.status == "active")
        ):
            hours = max(1.0, (allocation.ends_at - allocation.starts_at).total_seconds() / 3600)
            shares[allocation.id] = allocation.gpu_hours / hours
            org_of[allocation.id] = allocation.org_id
        scheduler.set_shares(shares, org_of)

    def _sync_queue(self, report: CycleReport) -> None:
        """Queued jobs in the database are exactly the scheduler's pending jobs."""
        scheduler = self.scheduler
        with self.uow() as uow:
            uow.ledger.snapshot()  # only reads: submissions go on while a deep queue is read
            gone, new = self._queue_changes(uow, set(scheduler.queue.slot_of))
            for job_id in gone:
                scheduler.cancel(job_id)
            rows = (
                uow.session.execute(
                    select(Job, Allocation.org_id)
                    .join(Allocation, Allocation.id == Job.allocation_id)
                    .where(Job.id.in_(new))
                ).all()
                if new
                else []
            )
            self._refresh_shares(uow, scheduler)
        for job, org_id in rows:
            try:
                scheduler.submit(as_pending(job, org_id))
            except Unschedulable as exc:  # the inventory shrank since it was submitted
                self._fail_queued(job.id, f"refused: {exc}", report)

    def _queue_changes(self, uow: UnitOfWork, pending: set[int]) -> tuple[set[int], set[int]]:
        """The pending jobs no longer queued, and the queued jobs not yet pending.

        Reading every queued id each cycle costs a deep queue tens of milliseconds. Jobs come
        in with ids above the newest the scheduler has seen, and only the controller queues
        an older job again (after preemption), so the newer ids and a count tell whether
        anything else changed; only then is the whole queue read, and in any case every
        FULL_QUEUE_READ_EVERY syncs (a job committed late under a lower id and a cancelled
        one would leave the count as it was)."""
        queued = select(Job.id).where(Job.state == JobState.QUEUED.value)
        newer = set(uow.session.scalars(queued.where(Job.id > self._newest_queued)))
        unchanged = False
        if self._syncs_since_full_read < FULL_QUEUE_READ_EVERY:
            count = uow.session.scalar(select(func.count()).select_from(queued.subquery()))
            unchanged = count == len(pending) + len(newer - pending)
        if unchanged:
            self._syncs_since_full_read += 1
            gone, new = set(), newer - pending
            seen = new
        else:
            self._syncs_since_full_read = 0
            seen = set(uow.session.scalars(queued))
            gone, new = pending - seen, seen - pending
        if seen:
            self._newest_queued = max(self._newest_queued, max(seen))
        return gone, new

    # -- 3. schedule, 4. preempt, reserve and launch -------------------------------------------

    def _schedule(self, report: CycleReport) -> None:
        scheduler = self.scheduler
        now = self.clock()
        result = scheduler.cycle(now.timestamp())
        for job_id in result.preemptions:
            self._preempt(job_id, report)
        for placement in result.starts:
            spec = self._reserve(placement, report)
            if spec is not None:
                self._launch(spec, placement, report)

    def _preempt(self, job_id: int, report: CycleReport) -> None:
        """Stop a borrowed job and queue it again. The run it loses is not charged."""
        now = self.clock()
        with self.uow() as uow:
            uow.ledger.lock()
            job = uow.session.get(Job, job_id)
            assert job is not None
            if job.backend_ref is not None:
                self.backend.kill(ExecutionHandle.from_json(job.backend_ref))
            allocation = uow.session.get(Allocation, job.allocation_id)
            assert allocation is not None
            release_job(uow, job, allocation, now)
            job.state = JobState.QUEUED.value
            job.reason = (
                "preempted: a project under its guaranteed share reclaimed the GPUs it borrowed; "
                "queued again"
            )
            job.preemptions += 1
            job.started_at = job.backend_ref = job.node = None
            job.gpu_indices = job.placement = None
            job.borrowed = False
            uow.commit()
        self.scheduler.preempted(job_id, now.timestamp())
        report.preempted.append(job_id)

    def _reserve(self, placement: Placement, report: CycleReport) -> LaunchSpec | None:
        now = self.clock()
        job_id = placement.job_id
        refusal: Conflict
        with self.uow() as uow:
            uow.ledger.lock()
            job = uow.session.get(Job, job_id)
            if job is None or job.state != JobState.QUEUED.value:
                self.scheduler.cancel(job_id)
                return None
            allocation = uow.session.get(Allocation, job.allocation_id)
            assert allocation is not None
            try:
                check_open(allocation, now)
                reserve_job(uow, job, allocation, now)
            except Conflict as exc:  # OverQuota is a Conflict too
                refusal = exc
            else:
                first = placement.nodes[0]
                job.state = JobState.STARTING.value
                job.started_at = now  # replaced by the process's own start time at launch
                job.node = first.node
                job.gpu_indices = list(first.gpu_indices)
                job.placement = [
                    {"node": n.node, "gpus": list(n.gpu_indices)} for n in placement.nodes
                ]
                job.borrowed = placement.borrowed
                job.backend = self.backend.name
                job.reason = ""
                uow.commit()
                env = {"AISC_ALLOCATION_ID": str(job.allocation_id)}
                if len(placement.nodes) > 1:
                    env["AISC_NODES"] = ";".join(
                        f"{n.node}:{','.join(map(str, n.gpu_indices))}" for n in placement.nodes
                    )
                return LaunchSpec(
                    job_id=job.id,
                    argv=tuple(job.argv),
                    cwd=None,
                    env=env,
                    node=first.node,
                    gpu_indices=first.gpu_indices,
                )
        self._refuse_or_wait(job_id, refusal, report)
        return None

    def _refuse_or_wait(self, job_id: int, refusal: Conflict, report: CycleReport) -> None:
        if waits_for_quota(self.uow(), job_id, refusal):
            return
        self._fail_queued(job_id, f"refused: {refusal.detail}", report)

    def _fail_queued(self, job_id: int, reason: str, report: CycleReport) -> None:
        with self.uow() as uow:
            job = uow.session.get(Job, job_id)
            assert job is not None
            job.state = JobState.FAILED.value
            job.reason = reason
            job.ended_at = self.clock()
            uow.commit()
        self.scheduler.cancel(job_id)
        report.refused.append(job_id)

    def _launch(self, spec: LaunchSpec, placement: Placement, report: CycleReport) -> None:
        now = self.clock()
        try:
            handle = self.backend.start(spec)
        except LaunchError as exc:
            self.scheduler.cancel(spec.job_id)
            self._finish(spec.job_id, Outcome(JobState.FAILED, f"cannot start: {exc}", now))
            report.finished.append(spec.job_id)
            return
        self.scheduler.started(placement, now.timestamp())
        self._record_launch(spec.job_id, handle)
        report.started.append(spec.job_id)

    def _record_launch(self, job_id: int, handle: ExecutionHandle) -> None:
        with self.uow() as uow:
            job = uow.session.get(Job, job_id)
            assert job is not None
            job.state = JobState.RUNNING.value
            job.started_at = _at(handle.started_at)
            job.backend_ref = handle.to_json()
            uow.commit()


def _at(epoch: float) -> datetime:
    return datetime.fromtimestamp(epoch, tz=UTC)
