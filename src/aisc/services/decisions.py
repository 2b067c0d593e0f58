"""Committee decisions. Approval commits the award from the fund and opens an allocation."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta

from sqlalchemy import func, select

from aisc.domain.errors import Conflict, NotFound, ValidationError
from aisc.domain.model import ApplicationStatus, Role
from aisc.domain.money import (
    SECONDS_PER_HOUR,
    award_commitment_cents,
    format_cents,
    format_rate,
)
from aisc.ledger import accounts as acc
from aisc.ledger import operations as ops
from aisc.services import notifications, progress
from aisc.services.context import Actor, Clock, utcnow
from aisc.services.rates import price_at
from aisc.store.tables import Allocation, Application, Decision, Review, Scheme
from aisc.store.uow import UnitOfWork


@dataclass(frozen=True)
class Approval:
    gpu_hours: int
    starts_on: date
    ends_on: date
    rate_bp: int | None = None  # None: the scheme's default rate
    rate_reason: str = ""
    conditions: str = ""


def day_start(d: date) -> datetime:
    return datetime.combine(d, time.min, tzinfo=UTC)


def award_price(uow: UnitOfWork, gpu_model: str, starts_on: date, clock: Clock = utcnow) -> int:
    """The list price an award starting that day is committed at: the price when it can first
    be used (prices are never retroactive). Called inside the caller's unit of work."""
    return price_at(uow.session, gpu_model, max(day_start(starts_on), clock()))


def approve(
    uow: UnitOfWork, actor: Actor, application_id: int, terms: Approval, clock: Clock = utcnow
) -> Allocation:
    actor.require(Role.OPERATOR)
    if terms.gpu_hours <= 0:
        raise ValidationError("an award must grant some GPU-hours")
    if terms.ends_on <= terms.starts_on:
        raise ValidationError("an award must end after it starts")
    with uow:
        uow.ledger.lock()  # fund checks and the award's posting see one consistent balance
        application = _decidable(uow, application_id)
        scheme = uow.session.get(Scheme, application.scheme_id)
        assert scheme is not None
        rate_bp = scheme.default_rate_bp if terms.rate_bp is None else terms.rate_bp
        if not 0 <= rate_bp <= scheme.max_rate_bp:
            raise ValidationError(
                f"subsidy rate {format_rate(rate_bp)} is above the scheme's maximum "
                f"{format_rate(scheme.max_rate_bp)}"
            )
        if rate_bp > scheme.default_rate_bp and not terms.rate_reason.strip():
            raise ValidationError(
                f"a rate above the default {format_rate(scheme.default_rate_bp)} needs a "
                "written reason"
            )
        if terms.starts_on < scheme.starts_on or terms.ends_on > scheme.ends_on:
            raise ValidationError(
                f"the award must fall within the scheme's {scheme.starts_on} to {scheme.ends_on}"
            )
        reviews = uow.session.scalar(
            select(func.count()).select_from(Review).where(Review.application_id == application.id)
        )
        if (reviews or 0) < scheme.min_reviews:
            raise Conflict(
                f"application {application.id} has {reviews} of the {scheme.min_reviews} "
                "reviews the scheme requires"
            )
        price = award_price(uow, application.gpu_model, terms.starts_on, clock)
        starts_at = day_start(terms.starts_on)
        commitment = award_commitment_cents(terms.gpu_hours, price, rate_bp)
        allocation = Allocation(
            application_id=application.id,
            scheme_id=scheme.id,
            org_id=application.org_id,
            name=application.title,
            gpu_model=application.gpu_model,
            gpu_hours=terms.gpu_hours,
            rate_bp=rate_bp,
            price_cents_per_gpu_hour=price,
            commitment_cents=commitment,
            starts_at=starts_at,
            # the end date is inclusive: the allocation runs to the end of that day
            ends_at=day_start(terms.ends_on) + timedelta(days=1),
            conditions=terms.conditions.strip(),
        )
        uow.session.add(allocation)
        uow.session.flush()
        ref = ops.AllocationRef(scheme.id, allocation.id, application.org_id)
        balances = uow.ledger.balances([acc.scheme_available(scheme.id)])
        uow.ledger.append(
            ops.commit_award(ref, commitment, terms.gpu_hours * SECONDS_PER_HOUR, balances)
        )
        application.status = ApplicationStatus.APPROVED.value
        uow.session.add(
            Decision(
                application_id=application.id,
                decided_by=actor.user_id,
                outcome=ApplicationStatus.APPROVED.value,
                conditions=terms.conditions.strip(),
                rate_reason=terms.rate_reason.strip(),
            )
        )
        progress.schedule_reports(uow.session, allocation, scheme)
        _notify_approved(uow, application, allocation, scheme)
        uow.commit()
        return allocation


def reject(uow: UnitOfWork, actor: Actor, application_id: int, reasons: str) -> Decision:
    actor.require(Role.OPERATOR)
    if not reasons.strip():
        raise ValidationError("a rejection needs its reasons")
    with uow:
        application = _decidable(uow, application_id)
        application.status = ApplicationStatus.REJECTED.value
        decision = Decision(
            application_id=application.id,
            decided_by=actor.user_id,
            outcome=ApplicationStatus.REJECTED.value,
            reasons=reasons.strip(),
        )
        uow.session.add(decision)
        notifications.notify(
            uow.session,
            notifications.org_applicants(uow.session, application.org_id),
            key=f"decision:{application.id}",
            kind="decision",
            subject=f"Your application {application.id} was not approved",
            body=(
                f"Your application {application.id} ({application.title}) was not approved. "
                f"The committee's reasons:\n\n{reasons.strip()}"
            ),
            link=f"/applications/{application.id}",
        )
        uow.commit()
        return decision


def get_decision(
    uow: UnitOfWork, actor: Actor, application_id: int
) -> tuple[Decision, int | None] | None:
    """The decision on an application and the allocation it opened, if any."""
    with uow:
        application = uow.session.get(Application, application_id)
        if application is None:
            raise NotFound(f"application {application_id} does not exist")
        actor.require_org(application.org_id)
        decision = uow.session.scalar(
            select(Decision).where(Decision.application_id == application_id)
        )
        if decision is None:
            return None
        allocation_id = uow.session.scalar(
            select(Allocation.id).where(Allocation.application_id == application_id)
        )
        return decision, allocation_id


def _notify_approved(
    uow: UnitOfWork, application: Application, allocation: Allocation, scheme: Scheme
) -> None:
    first, last = progress.award_days(allocation)
    lines = [
        f"Your application {application.id} ({application.title}) was approved: "
        f"{allocation.gpu_hours:,} {allocation.gpu_model} GPU-hours from {first.isoformat()} "
        f"to {last.isoformat()}. The {scheme.name} scheme pays {format_rate(allocation.rate_bp)} "
        f"of the list price of HK${format_cents(allocation.price_cents_per_gpu_hour)} per "
        "GPU-hour; your organisation pays the rest.",
        f"Allocation {allocation.id} is open for jobs from its first day.",
    ]
    if allocation.conditions:
        lines.append(f"Conditions of the award:\n{allocation.conditions}")
    if every := scheme.report_every_months:
        period = "month" if every == 1 else f"{every} months"
        lines.append(
            f"Progress reports are due every {period} and a final one on {last.isoformat()}."
        )
    else:
        lines.append(f"A final progress report is due on {last.isoformat()}.")
    notifications.notify(
        uow.session,
        notifications.org_applicants(uow.session, application.org_id),
        key=f"decision:{application.id}",
        kind="decision",
        subject=f"Your application {application.id} was approved",
        body="\n\n".join(lines),
        link=f"/applications/{application.id}",
    )


def _decidable(uow: UnitOfWork, application_id: int) -> Application:
    application = uow.session.get(Application, application_id)
    if application is None:
        raise NotFound(f"application {application_id} does not exist")
    if application.status != ApplicationStatus.SUBMITTED.value:
        raise Conflict(f"application {application_id} is already {application.status}")
    return application
