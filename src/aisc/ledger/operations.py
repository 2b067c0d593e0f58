"""Builders for every movement of money and GPU-seconds. Each checks balances before it moves them.

`balances` maps account name to its current balance (missing means zero). The caller holds the
locks that keep those balances current while the transaction is appended.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from aisc.domain.errors import InsufficientFunds, OverQuota, ValidationError
from aisc.domain.money import Split, format_cents
from aisc.ledger import accounts as acc
from aisc.ledger.accounts import Unit
from aisc.ledger.transaction import Transaction, build

Balances = Mapping[str, int]


@dataclass(frozen=True)
class AllocationRef:
    scheme_id: int
    allocation_id: int
    org_id: int


def fund_scheme(scheme_id: int, total_cents: int) -> Transaction:
    if total_cents <= 0:
        raise ValidationError("a fund total must be positive")
    return build(
        "fund",
        [
            (acc.scheme_funding(scheme_id), Unit.HKD, -total_cents),
            (acc.scheme_available(scheme_id), Unit.HKD, total_cents),
        ],
        memo="scheme funded",
        scheme_id=scheme_id,
    )


def commit_award(
    alloc: AllocationRef, subsidy_cents: int, gpu_seconds: int, balances: Balances
) -> Transaction:
    """Approval: commit the award's subsidy from the fund and grant its GPU-seconds."""
    if gpu_seconds <= 0:
        raise ValidationError("an award must grant some GPU-hours")
    available = balances.get(acc.scheme_available(alloc.scheme_id), 0)
    if subsidy_cents > available:
        raise InsufficientFunds(
            f"the award needs HK${format_cents(subsidy_cents)} but the fund has only "
            f"HK${format_cents(available)} uncommitted"
        )
    s, a = alloc.scheme_id, alloc.allocation_id
    return build(
        "award",
        [
            (acc.scheme_available(s), Unit.HKD, -subsidy_cents),
            (acc.subsidy_committed(s, a), Unit.HKD, subsidy_cents),
            (acc.gpu_granted(s, a), Unit.GPU_S, -gpu_seconds),
            (acc.gpu_available(s, a), Unit.GPU_S, gpu_seconds),
        ],
        memo="award committed",
        scheme_id=s,
        allocation_id=a,
    )


def reserve(
    alloc: AllocationRef, job_id: int, gpu_seconds: int, subsidy_cents: int, balances: Balances
) -> Transaction:
    """Phase one: hold GPUs x time limit and the matching subsidy before a job starts.

    The subsidy held is capped at what the allocation still has committed; GPU-seconds are not:
    an allocation without room for the whole time limit refuses the job.
    """
    s, a = alloc.scheme_id, alloc.allocation_id
    room = balances.get(acc.gpu_available(s, a), 0)
    if gpu_seconds > room:
        raise OverQuota(
            f"job {job_id} needs {gpu_seconds / 3600:.2f} GPU-hours for its time limit but the "
            f"allocation has {room / 3600:.2f} GPU-hours left"
        )
    held = min(subsidy_cents, balances.get(acc.subsidy_committed(s, a), 0))
    return build(
        "reserve",
        [
            (acc.gpu_available(s, a), Unit.GPU_S, -gpu_seconds),
            (acc.gpu_reserved(s, a), Unit.GPU_S, gpu_seconds),
            (acc.subsidy_committed(s, a), Unit.HKD, -held),
            (acc.subsidy_reserved(s, a), Unit.HKD, held),
        ],
        memo=f"job {job_id} reserved",
        scheme_id=s,
        allocation_id=a,
        job_id=job_id,
        gpu_seconds=gpu_seconds,
        subsidy=held,
    )


def settle(
    alloc: AllocationRef,
    job_id: int,
    reserved_gpu_seconds: int,
    reserved_subsidy: int,
    used_gpu_seconds: int,
    split: Split,
) -> Transaction:
    """Phase two: post what the job used, bill the split, release the rest of the reservation."""
    if not 0 <= used_gpu_seconds <= reserved_gpu_seconds:
        raise ValidationError(
            f"job {job_id} used {used_gpu_seconds} GPU-seconds of {reserved_gpu_seconds} reserved"
        )
    if split.subsidy > reserved_subsidy:
        raise ValidationError(f"job {job_id}'s subsidy exceeds what was reserved for it")
    s, a = alloc.scheme_id, alloc.allocation_id
    return build(
        "settle",
        [
            # GPU-seconds: used, and the rest back to the allocation
            (acc.gpu_reserved(s, a), Unit.GPU_S, -reserved_gpu_seconds),
            (acc.gpu_used(s, a), Unit.GPU_S, used_gpu_seconds),
            (acc.gpu_available(s, a), Unit.GPU_S, reserved_gpu_seconds - used_gpu_seconds),
            # fund side: the subsidy is spent, the rest of the hold goes back to the commitment
            (acc.subsidy_reserved(s, a), Unit.HKD, -reserved_subsidy),
            (acc.subsidy_spent(s, a), Unit.HKD, split.subsidy),
            (acc.subsidy_committed(s, a), Unit.HKD, reserved_subsidy - split.subsidy),
            # centre side: the charge is revenue, owed by the fund and the grantee
            (acc.CENTRE_REVENUE, Unit.HKD, -split.charge),
            (acc.CENTRE_SUBSIDY_RECEIVABLE, Unit.HKD, split.subsidy),
            (acc.org_receivable(alloc.org_id), Unit.HKD, split.copay),
        ],
        memo=f"job {job_id} settled",
        scheme_id=s,
        allocation_id=a,
        org_id=alloc.org_id,
        job_id=job_id,
        gpu_seconds=used_gpu_seconds,
        charge=split.charge,
        subsidy=split.subsidy,
        copay=split.copay,
    )


def release(
    alloc: AllocationRef, job_id: int, reserved_gpu_seconds: int, reserved_subsidy: int
) -> Transaction:
    """A job that never ran (it could not launch, or was lost) gives its hold back."""
    s, a = alloc.scheme_id, alloc.allocation_id
    return build(
        "release",
        [
            (acc.gpu_reserved(s, a), Unit.GPU_S, -reserved_gpu_seconds),
            (acc.gpu_available(s, a), Unit.GPU_S, reserved_gpu_seconds),
            (acc.subsidy_reserved(s, a), Unit.HKD, -reserved_subsidy),
            (acc.subsidy_committed(s, a), Unit.HKD, reserved_subsidy),
        ],
        memo=f"job {job_id} released",
        scheme_id=s,
        allocation_id=a,
        job_id=job_id,
    )


def close_allocation(alloc: AllocationRef, balances: Balances) -> Transaction | None:
    """An allocation ends: its unspent commitment returns to the fund, its GPU-seconds lapse."""
    s, a = alloc.scheme_id, alloc.allocation_id
    if balances.get(acc.gpu_reserved(s, a), 0) or balances.get(acc.subsidy_reserved(s, a), 0):
        raise ValidationError("an allocation with running jobs cannot be closed")
    committed = balances.get(acc.subsidy_committed(s, a), 0)
    gpu_left = balances.get(acc.gpu_available(s, a), 0)
    if committed == 0 and gpu_left == 0:
        return None
    return build(
        "close",
        [
            (acc.subsidy_committed(s, a), Unit.HKD, -committed),
            (acc.scheme_available(s), Unit.HKD, committed),
            (acc.gpu_available(s, a), Unit.GPU_S, -gpu_left),
            (acc.gpu_granted(s, a), Unit.GPU_S, gpu_left),
        ],
        memo="allocation closed",
        scheme_id=s,
        allocation_id=a,
    )
