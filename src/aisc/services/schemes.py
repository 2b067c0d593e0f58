"""Subsidy schemes: a fund, a period, rates, eligibility, a rubric and a review quorum."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import date

from sqlalchemy import select

from aisc.domain.errors import Conflict, NotFound, ValidationError
from aisc.domain.model import OrgCategory, Role, validate_rubric
from aisc.ledger import accounts as acc
from aisc.ledger import operations as ops
from aisc.services.context import Actor
from aisc.store.tables import Scheme
from aisc.store.uow import UnitOfWork

DEFAULT_RATE_BP = 7000
ALL_CATEGORIES = tuple(category.value for category in OrgCategory)
MAX_RATE_BP = 9000


def create_scheme(
    uow: UnitOfWork,
    actor: Actor,
    name: str,
    fund_total_cents: int,
    starts_on: date,
    ends_on: date,
    rubric: Mapping[str, int],
    eligible_categories: Sequence[str] = ALL_CATEGORIES,
    default_rate_bp: int = DEFAULT_RATE_BP,
    max_rate_bp: int = MAX_RATE_BP,
    min_reviews: int = 2,
) -> Scheme:
    """Create a scheme and fund it in the ledger, in one transaction."""
    actor.require(Role.OPERATOR)
    if not name.strip():
        raise ValidationError("a scheme needs a name")
    if fund_total_cents <= 0:
        raise ValidationError("the fund total must be positive")
    if ends_on <= starts_on:
        raise ValidationError("a scheme must end after it starts")
    if not 0 < default_rate_bp <= max_rate_bp <= 10_000:
        raise ValidationError("rates must satisfy 0 < default rate <= maximum rate <= 1")
    if min_reviews < 1:
        raise ValidationError("a scheme needs at least one review per application")
    categories = []
    for c in eligible_categories:
        try:
            categories.append(OrgCategory(c).value)
        except ValueError:
            raise ValidationError(f"unknown applicant category {c!r}") from None
    if not categories:
        raise ValidationError("a scheme needs at least one eligible category")
    weights = validate_rubric(rubric)
    with uow:
        if uow.session.scalar(select(Scheme).where(Scheme.name == name.strip())):
            raise Conflict(f"a scheme named {name.strip()!r} exists already")
        scheme = Scheme(
            name=name.strip(),
            fund_total_cents=fund_total_cents,
            starts_on=starts_on,
            ends_on=ends_on,
            default_rate_bp=default_rate_bp,
            max_rate_bp=max_rate_bp,
            eligible_categories=sorted(set(categories)),
            rubric=weights,
            min_reviews=min_reviews,
        )
        uow.session.add(scheme)
        uow.session.flush()
        uow.ledger.append(ops.fund_scheme(scheme.id, fund_total_cents))
        uow.commit()
        return scheme


def list_schemes(uow: UnitOfWork) -> list[Scheme]:
    with uow:
        return list(uow.session.scalars(select(Scheme).order_by(Scheme.id)))


def get_scheme(uow: UnitOfWork, scheme_id: int) -> Scheme:
    with uow:
        scheme = uow.session.get(Scheme, scheme_id)
        if scheme is None:
            raise NotFound(f"scheme {scheme_id} does not exist")
        return scheme


@dataclass(frozen=True)
class FundPosition:
    scheme_id: int
    name: str
    total_cents: int
    available_cents: int
    committed_cents: int  # awarded and not yet spent, including what running jobs hold
    reserved_cents: int  # the part of `committed` held by running jobs
    spent_cents: int


def fund_positions(uow: UnitOfWork, actor: Actor) -> list[FundPosition]:
    """Every scheme's fund from the ledger's balances: total = available + committed + spent."""
    actor.require(Role.OPERATOR, Role.FUNDER)
    with uow:
        schemes = list(uow.session.scalars(select(Scheme).order_by(Scheme.id)))
        result = []
        for scheme in schemes:
            sums = {"available": 0, "committed": 0, "reserved": 0, "spent": 0, "total": 0}
            for (account, unit), value in uow.ledger.scheme_balances(scheme.id).items():
                if unit != acc.Unit.HKD:
                    continue
                bucket = acc.fund_bucket(account)
                if bucket == "total":
                    sums["total"] -= value
                elif bucket is not None:
                    sums[bucket] += value
                if account.endswith(":subsidy_reserved"):
                    sums["reserved"] += value
            result.append(
                FundPosition(
                    scheme_id=scheme.id,
                    name=scheme.name,
                    total_cents=sums["total"],
                    available_cents=sums["available"],
                    committed_cents=sums["committed"],
                    reserved_cents=sums["reserved"],
                    spent_cents=sums["spent"],
                )
            )
        return result
