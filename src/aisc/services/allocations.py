"""Allocations and their balances, read from the ledger."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import select

from aisc.domain.errors import Conflict, NotFound, ValidationError
from aisc.domain.model import Role
from aisc.domain.money import SECONDS_PER_HOUR
from aisc.ledger import accounts as acc
from aisc.ledger import operations as ops
from aisc.services.context import Actor, Clock, utcnow
from aisc.store.tables import Allocation
from aisc.store.uow import UnitOfWork


@dataclass(frozen=True)
class AllocationBalance:
    allocation: Allocation
    granted_gpu_seconds: int
    available_gpu_seconds: int
    reserved_gpu_seconds: int
    used_gpu_seconds: int
    subsidy_committed_cents: int  # awarded, not yet spent or held
    subsidy_reserved_cents: int
    subsidy_spent_cents: int

    @property
    def status(self) -> str:
        return self.allocation.status


def ref_of(allocation: Allocation) -> ops.AllocationRef:
    return ops.AllocationRef(allocation.scheme_id, allocation.id, allocation.org_id)


def balance_of(uow: UnitOfWork, allocation: Allocation) -> AllocationBalance:
    (balance,) = balances_of(uow, [allocation])
    return balance


def balances_of(uow: UnitOfWork, allocations: Sequence[Allocation]) -> list[AllocationBalance]:
    """Each allocation's balances, read from the ledger in one query."""
    names = {
        a.id: {
            "available": acc.gpu_available(a.scheme_id, a.id),
            "reserved": acc.gpu_reserved(a.scheme_id, a.id),
            "used": acc.gpu_used(a.scheme_id, a.id),
            "committed": acc.subsidy_committed(a.scheme_id, a.id),
            "sub_reserved": acc.subsidy_reserved(a.scheme_id, a.id),
            "spent": acc.subsidy_spent(a.scheme_id, a.id),
        }
        for a in allocations
    }
    b = uow.ledger.balances(name for per in names.values() for name in per.values())
    return [
        AllocationBalance(
            allocation=a,
            granted_gpu_seconds=a.gpu_hours * SECONDS_PER_HOUR,
            available_gpu_seconds=b[names[a.id]["available"]],
            reserved_gpu_seconds=b[names[a.id]["reserved"]],
            used_gpu_seconds=b[names[a.id]["used"]],
            subsidy_committed_cents=b[names[a.id]["committed"]],
            subsidy_reserved_cents=b[names[a.id]["sub_reserved"]],
            subsidy_spent_cents=b[names[a.id]["spent"]],
        )
        for a in allocations
    ]


def list_allocations(uow: UnitOfWork, actor: Actor) -> list[AllocationBalance]:
    with uow:
        query = select(Allocation).order_by(Allocation.id)
        if actor.role == Role.APPLICANT:
            query = query.where(Allocation.org_id == actor.org_id)
        return balances_of(uow, list(uow.session.scalars(query)))


def get_allocation(uow: UnitOfWork, actor: Actor, allocation_id: int) -> AllocationBalance:
    with uow:
        allocation = uow.session.get(Allocation, allocation_id)
        if allocation is None:
            raise NotFound(f"allocation {allocation_id} does not exist")
        actor.require_org(allocation.org_id)
        return balance_of(uow, allocation)


def check_open(allocation: Allocation, now: datetime) -> None:
    """Jobs run only inside an allocation's period and while it is active."""
    if allocation.status != "active":
        raise Conflict(f"allocation {allocation.id} is {allocation.status}")
    if now < allocation.starts_at:
        raise Conflict(
            f"allocation {allocation.id} starts on {allocation.starts_at.date().isoformat()}"
        )
    if now >= allocation.ends_at:
        raise Conflict(
            f"allocation {allocation.id} ended on {allocation.ends_at.date().isoformat()}"
        )


def close_allocation(
    uow: UnitOfWork, actor: Actor, allocation_id: int, clock: Clock = utcnow
) -> AllocationBalance:
    """End an allocation: unspent subsidy returns to the fund's available balance."""
    actor.require(Role.OPERATOR)
    with uow:
        uow.ledger.lock()
        allocation = uow.session.get(Allocation, allocation_id)
        if allocation is None:
            raise NotFound(f"allocation {allocation_id} does not exist")
        if allocation.status == "closed":
            raise Conflict(f"allocation {allocation_id} is already closed")
        current = balance_of(uow, allocation)
        if current.reserved_gpu_seconds:
            raise ValidationError("an allocation with running jobs cannot be closed")
        s, a = allocation.scheme_id, allocation.id
        balances = uow.ledger.balances(
            [
                acc.subsidy_committed(s, a),
                acc.gpu_available(s, a),
                acc.gpu_reserved(s, a),
                acc.subsidy_reserved(s, a),
            ]
        )
        txn = ops.close_allocation(ref_of(allocation), balances)
        if txn is not None:
            uow.ledger.append(txn, now=clock())
        allocation.status = "closed"
        uow.commit()
        return balance_of(uow, allocation)
