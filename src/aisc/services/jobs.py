"""Jobs: submission (with every check that can refuse it up front), cancellation, queue and logs."""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from pathlib import Path

from sqlalchemy import select
from sqlalchemy.orm import Session

from aisc.backends.base import LogStream
from aisc.domain.errors import (
    Conflict,
    DomainError,
    NotFound,
    OverQuota,
    PermissionDenied,
    ValidationError,
)
from aisc.domain.model import MAX_TIME_LIMIT_S, JobState, Role
from aisc.ledger import accounts as acc
from aisc.scheduler.interface import Explanation, NodeSpec, PendingJob
from aisc.scheduler.rules import Unschedulable, check_request
from aisc.services.allocations import check_open
from aisc.services.context import Actor, Clock, utcnow
from aisc.services.rates import price_at
from aisc.store.tables import Allocation, Job, Node
from aisc.store.uow import UnitOfWork

MAX_ARGV = 256
MAX_ARG_LEN = 8192
PRIORITY_RANGE = range(-10, 11)  # applicants may lower theirs; only operators raise a job above 0


@dataclass(frozen=True)
class JobRequest:
    allocation_id: int
    argv: Sequence[str]
    gpus: int
    time_limit_s: int
    name: str = ""
    priority: int = 0


@dataclass(frozen=True)
class Submission:
    """One job submission: who asked, what for, and when it arrived."""

    actor: Actor
    request: JobRequest
    at: datetime


def submit_job(uow: UnitOfWork, actor: Actor, req: JobRequest, clock: Clock = utcnow) -> Job:
    with uow:
        [outcome] = queue_submissions(uow, [Submission(actor, req, clock())])
        if isinstance(outcome, DomainError):
            raise outcome
        uow.commit()
        return outcome


def queue_submissions(
    uow: UnitOfWork, submissions: Sequence[Submission]
) -> list[Job | DomainError]:
    """Check each submission on its own and queue those that pass, in the caller's open unit of
    work (the caller commits). Each gets its job or the error that refused it, in order.

    Submission reserves nothing (the controller does, at start), so what one submission is
    checked against (its allocation, the inventory, the rate card, the quota left) is the same
    for every other in the batch and is read once."""
    checks = _SubmissionChecks(uow)
    outcomes: list[Job | DomainError] = []
    for submission in submissions:
        try:
            outcomes.append(checks.job_for(submission))
        except DomainError as exc:
            outcomes.append(exc)
    # added together, after every check: one multi-row INSERT, not a flush per job
    uow.session.add_all(o for o in outcomes if isinstance(o, Job))
    uow.session.flush()
    return outcomes


class _SubmissionChecks:
    """Every check that can refuse a submission up front, over one unit of work."""

    def __init__(self, uow: UnitOfWork) -> None:
        self._uow = uow
        self._allocations: dict[int, Allocation] = {}
        self._nodes: list[NodeSpec] | None = None
        self._priced: set[str] = set()
        self._room: dict[int, int] = {}

    def job_for(self, submission: Submission) -> Job:
        actor, req, now = submission.actor, submission.request, submission.at
        actor.require(Role.APPLICANT, Role.OPERATOR)
        _check_request(actor, req)
        session = self._uow.session
        allocation = self._allocations.get(req.allocation_id)
        if allocation is None:
            allocation = session.get(Allocation, req.allocation_id)
            if allocation is None:
                raise NotFound(f"allocation {req.allocation_id} does not exist")
            self._allocations[allocation.id] = allocation  # held: the session's map is weak
        actor.require_org(allocation.org_id)
        check_open(allocation, now)
        if self._nodes is None:
            self._nodes = node_specs(session)
        _check_fits_inventory(self._nodes, allocation.gpu_model, req.gpus)
        if allocation.gpu_model not in self._priced:
            price_at(session, allocation.gpu_model, now)  # a price, once in force, stays so
            self._priced.add(allocation.gpu_model)
        if allocation.id not in self._room:
            self._room[allocation.id] = self._uow.ledger.balance(
                acc.gpu_available(allocation.scheme_id, allocation.id), acc.Unit.GPU_S
            )
        needed = req.gpus * req.time_limit_s
        room = self._room[allocation.id]
        if needed > room:
            raise OverQuota(
                f"{req.gpus} GPUs for {req.time_limit_s} s is {needed / 3600:.2f} GPU-hours; "
                f"allocation {allocation.id} has {room / 3600:.2f} GPU-hours left"
            )
        return Job(
            allocation_id=allocation.id,
            user_id=actor.user_id,
            name=(req.name or os.path.basename(req.argv[0])).strip()[:200],
            argv=list(req.argv),
            gpus=req.gpus,
            gpu_model=allocation.gpu_model,
            time_limit_s=req.time_limit_s,
            priority=req.priority,
            state=JobState.QUEUED.value,
            submitted_at=now,
        )


def _check_request(actor: Actor, req: JobRequest) -> None:
    if not req.argv or not all(isinstance(a, str) for a in req.argv):
        raise ValidationError("a job needs a command (a non-empty list of strings)")
    if not req.argv[0].strip():
        raise ValidationError("a job's command cannot be empty")
    if len(req.argv) > MAX_ARGV or any(len(a) > MAX_ARG_LEN for a in req.argv):
        raise ValidationError("the command is too long")
    if any("\x00" in a for a in req.argv):
        raise ValidationError("the command cannot contain NUL characters")
    if req.gpus < 1:
        raise ValidationError("a job needs at least one GPU")
    if not 1 <= req.time_limit_s <= MAX_TIME_LIMIT_S:
        raise ValidationError(f"the time limit must be 1 s to {MAX_TIME_LIMIT_S // 86400} days")
    if req.priority not in PRIORITY_RANGE:
        raise ValidationError("priority must be between -10 and 10")
    if req.priority > 0 and actor.role != Role.OPERATOR:
        raise PermissionDenied("only operators can raise a job's priority above 0")


def node_specs(session: Session) -> list[NodeSpec]:
    """The inventory as the scheduler sees it."""
    return [
        NodeSpec(n.name, n.gpu_model, n.gpus, tuple(n.gpu_indices))
        for n in session.scalars(select(Node).order_by(Node.name))
    ]


def _check_fits_inventory(nodes: list[NodeSpec], gpu_model: str, gpus: int) -> None:
    try:
        check_request(nodes, gpus, gpu_model)
    except Unschedulable as exc:
        raise ValidationError(str(exc)) from None


def cancel_job(uow: UnitOfWork, actor: Actor, job_id: int, clock: Clock = utcnow) -> Job:
    """A queued job is cancelled at once; a running one is stopped by the controller, which
    then charges what it ran."""
    actor.require(Role.APPLICANT, Role.OPERATOR)
    with uow:
        # the controller reserves and settles under this lock: a cancel read here cannot be
        # overtaken by a start (which would leave a hold and a running job marked cancelled)
        uow.ledger.lock()
        job = _visible_job(uow, actor, job_id)
        state = JobState(job.state)
        if state.is_final:
            raise Conflict(f"job {job_id} has already ended ({job.state})")
        if state == JobState.QUEUED:
            job.state = JobState.CANCELLED.value
            job.ended_at = clock()
            job.reason = f"cancelled by {actor.name} before it started"
        else:
            job.cancel_requested = True
            job.reason = f"cancel requested by {actor.name}"
        uow.commit()
        return job


def list_jobs(
    uow: UnitOfWork,
    actor: Actor,
    states: Sequence[str] = (),
    allocation_id: int | None = None,
    limit: int = 500,
) -> list[Job]:
    actor.require(Role.APPLICANT, Role.OPERATOR, Role.FUNDER)
    with uow:
        query = select(Job).order_by(Job.id.desc()).limit(limit)
        if actor.role == Role.APPLICANT:
            query = query.join(Allocation).where(Allocation.org_id == actor.org_id)
        if states:
            query = query.where(Job.state.in_(list(states)))
        if allocation_id is not None:
            query = query.where(Job.allocation_id == allocation_id)
        return list(uow.session.scalars(query))


def get_job(uow: UnitOfWork, actor: Actor, job_id: int) -> Job:
    with uow:
        return _visible_job(uow, actor, job_id)


def _visible_job(uow: UnitOfWork, actor: Actor, job_id: int) -> Job:
    actor.require(Role.APPLICANT, Role.OPERATOR, Role.FUNDER)
    job = uow.session.get(Job, job_id)
    if job is None:
        raise NotFound(f"job {job_id} does not exist")
    allocation = uow.session.get(Allocation, job.allocation_id)
    assert allocation is not None
    actor.require_org(allocation.org_id)
    return job


@dataclass(frozen=True)
class QueueEntry:
    position: int | None  # 1-based place among queued jobs; None once running
    job: Job


def queue(uow: UnitOfWork, actor: Actor, positions: Mapping[int, int]) -> list[QueueEntry]:
    """Running jobs, then queued jobs in the order the scheduler considers them.

    `positions` is the scheduler's order (job id -> place); positions are global, so an
    applicant sees where their jobs stand among everyone's.
    """
    actor.require(Role.APPLICANT, Role.OPERATOR, Role.FUNDER)
    with uow:
        query = select(Job).where(Job.state.in_([s.value for s in LIVE_STATES]))
        if actor.role == Role.APPLICANT:
            query = query.join(Allocation).where(Allocation.org_id == actor.org_id)
        live = list(uow.session.scalars(query.order_by(Job.id)))
    running = [QueueEntry(None, j) for j in live if j.state != JobState.QUEUED.value]
    waiting = sorted(
        (j for j in live if j.state == JobState.QUEUED.value),
        key=lambda j: (positions.get(j.id, len(positions) + 1), j.submitted_at, j.id),
    )
    return running + [QueueEntry(positions.get(j.id), j) for j in waiting]


def explain_job(
    uow: UnitOfWork, actor: Actor, job_id: int, explain: Callable[[int], Explanation]
) -> tuple[Job, Explanation]:
    """Why a job waits (its priority factors, what it waits for, its reserved start).

    The scheduling policy knows GPUs, not money: a queued job whose time limit needs more
    quota than its allocation has left right now waits for that, whatever GPUs are free."""
    job = get_job(uow, actor, job_id)
    explanation = explain(job_id)  # outside any unit of work: the controller opens its own
    if job.state != JobState.QUEUED.value:
        return job, explanation
    with uow:
        uow.ledger.snapshot()  # only reads: no write lock
        allocation = uow.session.get(Allocation, job.allocation_id)
        assert allocation is not None
        account = acc.gpu_available(allocation.scheme_id, allocation.id)
        available = uow.ledger.balances([account])[account]
    needed = job.gpus * job.time_limit_s
    if needed > available:
        reason = (
            f"waiting for quota: its time limit needs {needed / 3600:,.2f} GPU-hours and "
            f"the allocation has {available / 3600:,.2f} left until running jobs return "
            "what they do not use"
        )
        explanation = replace(explanation, reason=reason)
    return job, explanation


LIVE_STATES = (JobState.QUEUED, JobState.STARTING, JobState.RUNNING)


def as_pending(job: Job, org_id: int = 0) -> PendingJob:
    """A queued job as the scheduling policy sees it."""
    return PendingJob(
        job_id=job.id,
        project=job.allocation_id,
        gpus=job.gpus,
        gpu_model=job.gpu_model,
        priority=job.priority,
        submitted_at=job.submitted_at.timestamp(),
        time_limit_s=job.time_limit_s,
        org=org_id,
    )


LOG_TAIL_MAX = 1_000_000


def job_log(
    uow: UnitOfWork,
    actor: Actor,
    job_id: int,
    stream: str,
    log_path: Callable[[int, LogStream], Path],
    tail_bytes: int = 64_000,
) -> str:
    """The last `tail_bytes` of a job's stdout or stderr."""
    # what a job prints is the grantee's work, not the public's: the funder audits the money
    # and the usage, and reads no output
    actor.require(Role.APPLICANT, Role.OPERATOR)
    if stream not in ("stdout", "stderr"):
        raise ValidationError("stream must be stdout or stderr")
    if not 1 <= tail_bytes <= LOG_TAIL_MAX:
        raise ValidationError(f"tail must be 1 to {LOG_TAIL_MAX} bytes")
    get_job(uow, actor, job_id)
    path = log_path(job_id, "stdout" if stream == "stdout" else "stderr")
    if not path.exists():
        return ""
    with path.open("rb") as f:
        size = f.seek(0, os.SEEK_END)
        f.seek(max(0, size - tail_bytes))
        return f.read().decode("utf-8", errors="replace")
