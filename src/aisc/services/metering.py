"""The money side of a job's life: reserve at start, settle what it used at the end, or release.

Callers hold the ledger lock (`uow.ledger.lock()`) and commit.
"""

from __future__ import annotations

import math
import os
import signal
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import select

from aisc.domain.money import charge_cents, split_charge
from aisc.ledger import accounts as acc
from aisc.ledger import operations as ops
from aisc.services.allocations import ref_of
from aisc.services.rates import price_spans, usage_segments
from aisc.store.tables import Allocation, Job, JobCharge
from aisc.store.uow import UnitOfWork

# Fault injection for tests/e2e/test_crash_safety.py, and nothing else: with this variable set to
# "settle", the process SIGKILLs itself once a settlement is written to the open transaction but
# not yet committed, as a power cut mid-metering would. Unset (always, in service) it does nothing.
FAULT_KILL_BEFORE_COMMIT = "AISC_FAULT_KILL_BEFORE_COMMIT"


@dataclass(frozen=True)
class Hold:
    gpu_seconds: int
    subsidy_cents: int


def reserve_job(uow: UnitOfWork, job: Job, allocation: Allocation, now: datetime) -> Hold:
    """Hold GPUs x time limit, and the subsidy that much use would cost, before the job starts.

    Raises OverQuota (and changes nothing) when the allocation has no room for the time limit.
    """
    gpu_seconds = job.gpus * job.time_limit_s
    spans = price_spans(uow.session, allocation.gpu_model, now, job.time_limit_s)
    worst_case = split_charge(charge_cents(usage_segments(spans, job.gpus)), allocation.rate_bp)
    s, a = allocation.scheme_id, allocation.id
    balances = uow.ledger.balances([acc.gpu_available(s, a), acc.subsidy_committed(s, a)])
    txn = ops.reserve(ref_of(allocation), job.id, gpu_seconds, worst_case.subsidy, balances)
    uow.ledger.append(txn, now=now)
    held = int(txn.refs["subsidy"])
    job.reserved_gpu_seconds = gpu_seconds
    job.reserved_subsidy_cents = held
    return Hold(gpu_seconds, held)


def billed_seconds(job: Job, ended_at: datetime) -> int:
    """Per-second billing: started seconds count, never beyond the time limit."""
    assert job.started_at is not None
    elapsed = (ended_at - job.started_at).total_seconds()
    return max(0, min(job.time_limit_s, math.ceil(elapsed)))


def settle_job(
    uow: UnitOfWork, job: Job, allocation: Allocation, ended_at: datetime
) -> JobCharge | None:
    """Charge a job exactly once for what it ran; a second call finds the charge, does nothing."""
    if uow.session.scalar(select(JobCharge).where(JobCharge.job_id == job.id)) is not None:
        return None
    if job.reserved_gpu_seconds == 0:
        return None  # nothing was ever reserved, so nothing ran
    assert job.started_at is not None
    seconds = billed_seconds(job, ended_at)
    spans = price_spans(uow.session, allocation.gpu_model, job.started_at, seconds)
    segments = usage_segments(spans, job.gpus)
    split = split_charge(charge_cents(segments), allocation.rate_bp, job.reserved_subsidy_cents)
    used = job.gpus * seconds
    sealed = uow.ledger.append(
        ops.settle(
            ref_of(allocation),
            job.id,
            job.reserved_gpu_seconds,
            job.reserved_subsidy_cents,
            used,
            split,
        ),
        now=ended_at,
    )
    charge = JobCharge(
        job_id=job.id,
        allocation_id=allocation.id,
        org_id=allocation.org_id,
        gpu_seconds=used,
        charge_cents=split.charge,
        subsidy_cents=split.subsidy,
        copay_cents=split.copay,
        rate_bp=allocation.rate_bp,
        price_detail=[
            {"gpu_seconds": job.gpus * s.seconds, "cents_per_gpu_hour": s.cents_per_gpu_hour}
            for s in spans
        ],
        usage_started_at=job.started_at,
        usage_ended_at=ended_at,
        settled_at=ended_at,
        ledger_seq=sealed.seq,
    )
    uow.session.add(charge)
    job.reserved_gpu_seconds = 0
    job.reserved_subsidy_cents = 0
    if os.environ.get(FAULT_KILL_BEFORE_COMMIT) == "settle":
        uow.session.flush()  # the whole settlement is in the database, uncommitted
        os.kill(os.getpid(), signal.SIGKILL)
    return charge


def release_job(uow: UnitOfWork, job: Job, allocation: Allocation, now: datetime) -> None:
    """Give back the hold of a job that never ran."""
    if job.reserved_gpu_seconds == 0:
        return
    uow.ledger.append(
        ops.release(
            ref_of(allocation), job.id, job.reserved_gpu_seconds, job.reserved_subsidy_cents
        ),
        now=now,
    )
    job.reserved_gpu_seconds = 0
    job.reserved_subsidy_cents = 0
