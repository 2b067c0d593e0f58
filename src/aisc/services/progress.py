"""Progress reports an award's conditions call for: a schedule per allocation, then submissions.

Every scheme asks its grantees to report every `report_every_months` months and once more, the
final report, on the award's last day. The schedule is made when an award is approved; awards
made before reports existed get theirs the first time anyone looks.
"""

from __future__ import annotations

import calendar
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta

from sqlalchemy import select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from aisc.domain.errors import Conflict, NotFound, ValidationError
from aisc.domain.model import Role
from aisc.services.context import Actor
from aisc.store.tables import Allocation, Notification, ProgressReport, Scheme
from aisc.store.uow import UnitOfWork

MIN_SUMMARY_CHARS = 50
DUE_SOON_DAYS = 30  # list_reports calls a report "due" this many days ahead


def add_months(day: date, months: int) -> date:
    """The same day `months` later, or that month's last day: 2026-01-31 + 1 -> 2026-02-28."""
    years, month0 = divmod(day.month - 1 + months, 12)
    year, month = day.year + years, month0 + 1
    return date(year, month, min(day.day, calendar.monthrange(year, month)[1]))


def due_dates(starts_on: date, ends_on: date, every_months: int) -> list[tuple[date, bool]]:
    """(due date, final) for an award running from `starts_on` to `ends_on` (both inclusive).

    A report every `every_months` months after the start, strictly before the end, then the final
    one on the end date. Each date counts from the start, so short months cause no drift.
    `every_months` 0 asks for the final report only.
    """
    if ends_on < starts_on:
        raise ValueError(f"an award cannot end ({ends_on}) before it starts ({starts_on})")
    if every_months < 0:
        raise ValueError("reports cannot be due every negative number of months")
    dates: list[tuple[date, bool]] = []
    if every_months:
        k = 1
        while (due := add_months(starts_on, k * every_months)) < ends_on:
            dates.append((due, False))
            k += 1
    dates.append((ends_on, True))
    return dates


def award_days(allocation: Allocation) -> tuple[date, date]:
    """The first and last day (UTC) of an allocation: its ends_at is the exclusive midnight."""
    first = allocation.starts_at.astimezone(UTC).date()
    last = (allocation.ends_at.astimezone(UTC) - timedelta(days=1)).date()
    return first, max(first, last)


def schedule_reports(session: Session, allocation: Allocation, scheme: Scheme) -> None:
    """Add the allocation's reports inside the caller's transaction; nothing if it has any."""
    assert allocation.id is not None, "flush the allocation first"
    has_reports = session.scalar(
        select(ProgressReport.id).where(ProgressReport.allocation_id == allocation.id).limit(1)
    )
    if has_reports is not None:
        return
    first, last = award_days(allocation)
    for due_on, final in due_dates(first, last, scheme.report_every_months):
        session.add(ProgressReport(allocation_id=allocation.id, due_on=due_on, final=final))
    session.flush()


def schedule_missing(session: Session, allocations: Iterable[Allocation] | None = None) -> int:
    """Schedule reports for allocations that have none (all allocations unless given);
    returns how many allocations got a schedule. Safe to race: a clash skips that allocation."""
    if allocations is None:
        has_any = select(ProgressReport.id).where(ProgressReport.allocation_id == Allocation.id)
        candidates = list(session.scalars(select(Allocation).where(~has_any.exists())))
    else:
        given = list(allocations)
        ids = [a.id for a in given]
        done = (
            set(
                session.scalars(
                    select(ProgressReport.allocation_id)
                    .where(ProgressReport.allocation_id.in_(ids))
                    .distinct()
                )
            )
            if ids
            else set()
        )
        candidates = [a for a in given if a.id not in done]
    scheduled = 0
    for allocation in candidates:
        scheme = session.get(Scheme, allocation.scheme_id)
        assert scheme is not None
        try:
            with session.begin_nested():
                schedule_reports(session, allocation, scheme)
            scheduled += 1
        except IntegrityError:
            pass  # another process scheduled it at the same moment
    return scheduled


@dataclass(frozen=True)
class ReportView:
    report: ProgressReport
    allocation_id: int
    allocation_name: str
    org_id: int
    status: str  # "submitted" | "overdue" | "due" | "upcoming"


def report_status(report: ProgressReport, today: date, due_soon_days: int = DUE_SOON_DAYS) -> str:
    if report.submitted_at is not None:
        return "submitted"
    if report.due_on < today:
        return "overdue"
    if report.due_on <= today + timedelta(days=due_soon_days):
        return "due"
    return "upcoming"


def list_reports(
    uow: UnitOfWork, actor: Actor, now: datetime, due_soon_days: int = DUE_SOON_DAYS
) -> list[ReportView]:
    """Reports by due date: applicants see their organisation's; operators and the funder all."""
    actor.require(Role.APPLICANT, Role.OPERATOR, Role.FUNDER)
    today = now.astimezone(UTC).date()
    with uow:
        query = select(Allocation).order_by(Allocation.id)
        if actor.role == Role.APPLICANT:
            query = query.where(Allocation.org_id == actor.org_id)
        visible = list(uow.session.scalars(query))
        if schedule_missing(uow.session, visible):
            uow.commit()
        by_id = {a.id: a for a in visible}
        if not by_id:
            return []
        reports = uow.session.scalars(
            select(ProgressReport)
            .where(ProgressReport.allocation_id.in_(list(by_id)))
            .order_by(ProgressReport.due_on, ProgressReport.allocation_id, ProgressReport.id)
        )
        return [
            ReportView(
                report=r,
                allocation_id=r.allocation_id,
                allocation_name=by_id[r.allocation_id].name,
                org_id=by_id[r.allocation_id].org_id,
                status=report_status(r, today, due_soon_days),
            )
            for r in reports
        ]


def submit_report(
    uow: UnitOfWork, actor: Actor, report_id: int, summary: str, now: datetime
) -> ProgressReport:
    """An applicant of the award's organisation submits a report, once."""
    actor.require(Role.APPLICANT)
    text = summary.strip()
    if len(text) < MIN_SUMMARY_CHARS:
        raise ValidationError(
            f"a progress report needs a summary of at least {MIN_SUMMARY_CHARS} characters; "
            f"this one has {len(text)}"
        )
    with uow:
        report = uow.session.get(ProgressReport, report_id, with_for_update=True)
        if report is None:
            raise NotFound(f"progress report {report_id} does not exist")
        allocation = uow.session.get(Allocation, report.allocation_id)
        assert allocation is not None
        actor.require_org(allocation.org_id)
        if report.submitted_at is not None:
            raise Conflict(
                f"progress report {report_id} was already submitted on "
                f"{report.submitted_at.date().isoformat()}"
            )
        report.summary = text
        report.submitted_by = actor.user_id
        report.submitted_at = now
        # its reminders have done their work
        uow.session.execute(
            update(Notification)
            .where(Notification.key == f"report_due:{report.id}", Notification.read_at.is_(None))
            .values(read_at=now)
        )
        uow.commit()
        return report
