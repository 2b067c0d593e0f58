"""Usage and money over time: an allocation's burn, each fund's burn-down, the funder's KPIs and
the cluster's utilisation.

Money comes from the ledger (the source of truth) and from `job_charges`, which metering writes in
the same database transaction as each settlement, so a job's subsidy and GPU-seconds there are
exactly the amounts its settlement posted. Every function reads one consistent snapshot and takes
`now`, so a report can be drawn as of any moment.
"""

from __future__ import annotations

import json
import statistics
from collections import defaultdict
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta

from sqlalchemy import ColumnElement, func, select

from aisc.domain.errors import NotFound, ValidationError
from aisc.domain.model import ApplicationStatus, JobState, Role
from aisc.domain.money import SECONDS_PER_HOUR
from aisc.ledger import accounts as acc
from aisc.services.context import Actor
from aisc.store.tables import (
    Allocation,
    Application,
    Job,
    JobCharge,
    LedgerTransaction,
    Organisation,
    Scheme,
)
from aisc.store.uow import UnitOfWork

SECONDS_PER_DAY = 86_400
BURN_WINDOW_DAYS = 14
SPEND_WINDOW_DAYS = 30
KPI_WINDOW_DAYS = 30
UNSPECIFIED_SECTOR = "unspecified"
# Ledger kinds written once per job. Reservations and releases only move subsidy between an
# allocation's committed and reserved accounts, which are both "committed" in the fund's terms;
# settlements are read from job_charges (one row per settled job) instead of parsing each one.
JOB_KINDS = ("reserve", "release", "settle")


def _aware(moment: datetime) -> datetime:
    if moment.tzinfo is None:
        raise ValidationError("`now` needs a time zone")
    return moment.astimezone(UTC)


def _day_start(day: date) -> datetime:
    return datetime.combine(day, time.min, tzinfo=UTC)


# a forecast further out than this says nothing useful (and would overflow a date)
FORECAST_HORIZON_DAYS = 100 * 365


def _after_days(now: datetime, amount: int, per_day: int) -> datetime | None:
    """The moment `amount` is used up at `per_day`, counted from `now` (integers throughout);
    None when that is beyond the forecast horizon."""
    if amount // per_day > FORECAST_HORIZON_DAYS:
        return None
    return now + timedelta(seconds=amount * SECONDS_PER_DAY // per_day)


# -- an allocation's burn -----------------------------------------------------------------------


@dataclass(frozen=True)
class BurnPoint:
    day: date
    used_gpu_hours: float  # cumulative GPU-hours charged by the end of that day (UTC)


@dataclass(frozen=True)
class AllocationBurn:
    allocation_id: int
    granted_gpu_hours: int
    used_gpu_hours: float
    # one per day from the start (or the first charge, if earlier) to today, capped at the end
    points: list[BurnPoint]
    rate_gpu_hours_per_day: float  # average over the last 14 days, or since the start if shorter
    runs_out_on: date | None  # when the remaining hours run out at that rate; None at rate 0
    outlasts_award: bool  # at that rate, hours are left when the allocation ends


def allocation_burn(
    uow: UnitOfWork, actor: Actor, allocation_id: int, now: datetime
) -> AllocationBurn:
    """GPU-hours charged to an allocation day by day, and when its hours run out at the recent
    rate. Counts settled jobs only (settled at or before `now`); running jobs count when they
    finish."""
    now = _aware(now)
    with uow:
        uow.ledger.snapshot()
        allocation = uow.session.get(Allocation, allocation_id)
        if allocation is None:
            raise NotFound(f"allocation {allocation_id} does not exist")
        actor.require_org(allocation.org_id)
        charges = uow.session.execute(
            select(JobCharge.settled_at, JobCharge.gpu_seconds)
            .where(JobCharge.allocation_id == allocation.id, JobCharge.settled_at <= now)
            .order_by(JobCharge.settled_at)
        ).all()
        granted_hours = allocation.gpu_hours
        starts_at, ends_at = allocation.starts_at, allocation.ends_at

    used_s = sum(seconds for _, seconds in charges)
    by_day: dict[date, int] = defaultdict(int)
    for settled_at, seconds in charges:
        by_day[settled_at.date()] += seconds

    first_day = starts_at.date()
    if charges:
        first_day = min(first_day, charges[0][0].date())
    last_day = min(now.date(), (ends_at - timedelta(microseconds=1)).date())
    points = []
    running = 0
    for offset in range((last_day - first_day).days + 1):
        day = first_day + timedelta(days=offset)
        running += by_day.get(day, 0)
        points.append(BurnPoint(day, running / SECONDS_PER_HOUR))

    began = starts_at if not charges else min(starts_at, charges[0][0])
    window_start = max(now - timedelta(days=BURN_WINDOW_DAYS), began)
    window_s = (now - window_start).total_seconds()
    recent_s = sum(seconds for settled_at, seconds in charges if settled_at > window_start)
    # GPU-hours charged in the window per day of it (the window shrinks for a young allocation)
    rate = recent_s / SECONDS_PER_HOUR / (window_s / SECONDS_PER_DAY) if window_s > 0 else 0.0

    remaining_s = granted_hours * SECONDS_PER_HOUR - used_s
    runs_out_on: date | None = None
    if rate > 0 and recent_s > 0:
        if remaining_s <= 0:
            runs_out_on = now.date()
            outlasts = False
        else:
            lasts_s = remaining_s * window_s / recent_s
            if lasts_s > FORECAST_HORIZON_DAYS * SECONDS_PER_DAY:
                outlasts = True  # at this trickle it lasts for ever, and past the award
            else:
                runs_out_at = now + timedelta(seconds=lasts_s)
                runs_out_on = runs_out_at.date()
                outlasts = runs_out_at >= ends_at
    else:
        outlasts = remaining_s > 0
    return AllocationBurn(
        allocation_id=allocation_id,
        granted_gpu_hours=granted_hours,
        used_gpu_hours=used_s / SECONDS_PER_HOUR,
        points=points,
        rate_gpu_hours_per_day=rate,
        runs_out_on=runs_out_on,
        outlasts_award=outlasts,
    )


# -- fund burn-down -----------------------------------------------------------------------------


@dataclass(frozen=True)
class FundMonth:
    month: str  # "YYYY-MM"
    # the fund's committed balance (awarded, not yet spent, as in fund_positions) at month end
    committed_cents: int
    spent_cents: int  # cumulative subsidy spent by the end of that month


@dataclass(frozen=True)
class FundBurn:
    scheme_id: int
    name: str
    total_cents: int
    committed_cents: int  # as fund_positions: awarded and not yet spent
    spent_cents: int
    available_cents: int
    months: list[FundMonth]  # from the scheme's start month to the current month
    spend_rate_cents_per_day: int  # subsidy spent over the last 30 days // 30
    exhausted_on: date | None  # when (total - spent) is used up at that rate; None at rate 0


def _month_start(day: date) -> date:
    return day.replace(day=1)


def _next_month(first: date) -> date:
    return date(first.year + (first.month == 12), first.month % 12 + 1, 1)


@dataclass
class _Event:
    at: datetime
    committed: int
    spent: int


def _ledger_events(uow: UnitOfWork, now: datetime) -> dict[int, list[_Event]]:
    """The fund-side effect of every ledger transaction that is not a job's, per scheme."""
    events: dict[int, list[_Event]] = defaultdict(list)
    rows = uow.session.execute(
        select(LedgerTransaction.created_at, LedgerTransaction.postings)
        .where(LedgerTransaction.kind.not_in(JOB_KINDS))
        .order_by(LedgerTransaction.seq)
    ).all()
    for created_at, postings in rows:
        at = datetime.fromisoformat(created_at).astimezone(UTC)
        if at > now:
            continue
        deltas: dict[int, list[int]] = defaultdict(lambda: [0, 0])
        for posting in json.loads(postings)["postings"]:
            if posting["unit"] != acc.Unit.HKD.value:
                continue
            scheme_id = acc.scheme_of(posting["account"])
            bucket = acc.fund_bucket(posting["account"])
            if scheme_id is None or bucket not in ("committed", "spent"):
                continue
            deltas[scheme_id][bucket == "spent"] += int(posting["amount"])
        for scheme_id, (committed, spent) in deltas.items():
            if committed or spent:
                events[scheme_id].append(_Event(at, committed, spent))
    return events


def _subsidy_settled(uow: UnitOfWork, *conditions: ColumnElement[bool]) -> dict[int, int]:
    """Subsidy settled per scheme, by jobs whose settlement meets the conditions."""
    rows = uow.session.execute(
        select(Allocation.scheme_id, func.coalesce(func.sum(JobCharge.subsidy_cents), 0))
        .join(Allocation, Allocation.id == JobCharge.allocation_id)
        .where(*conditions)
        .group_by(Allocation.scheme_id)
    ).all()
    return {scheme_id: int(total) for scheme_id, total in rows}


def fund_burn(uow: UnitOfWork, actor: Actor, now: datetime) -> list[FundBurn]:
    """Each scheme's fund as fund_positions reports it, month by month, and when it runs dry at
    the last 30 days' rate of spending. Months count what happened up to `now`."""
    actor.require(Role.OPERATOR, Role.FUNDER)
    now = _aware(now)
    with uow:
        uow.ledger.snapshot()
        schemes = list(uow.session.scalars(select(Scheme).order_by(Scheme.id)))
        positions = {s.id: _position(uow, s.id) for s in schemes}
        events = _ledger_events(uow, now)
        # subsidy settled per scheme in each month, from the earliest scheme's first month (which
        # also takes anything earlier) to the current month; each settlement is read once
        settled_by_month: dict[date, dict[int, int]] = {}
        month = min((_month_start(s.starts_on) for s in schemes), default=None)
        first = True
        while month is not None and _day_start(month) <= now:
            conditions = [
                JobCharge.settled_at < _day_start(_next_month(month)),
                JobCharge.settled_at <= now,
            ]
            if not first:
                conditions.append(JobCharge.settled_at >= _day_start(month))
            settled_by_month[month] = _subsidy_settled(uow, *conditions)
            month, first = _next_month(month), False
        recent = _subsidy_settled(
            uow,
            JobCharge.settled_at > now - timedelta(days=SPEND_WINDOW_DAYS),
            JobCharge.settled_at <= now,
        )

    result = []
    for scheme in schemes:
        total, available, committed, spent = positions[scheme.id]
        pending = sorted(events.get(scheme.id, []), key=lambda e: e.at)
        months = []
        committed_so_far = spent_so_far = 0
        for month_start, settled in settled_by_month.items():
            cutoff = _day_start(_next_month(month_start))  # events after `now` are already out
            while pending and pending[0].at < cutoff:
                event = pending.pop(0)
                committed_so_far += event.committed
                spent_so_far += event.spent
            subsidy = settled.get(scheme.id, 0)
            committed_so_far -= subsidy  # a settlement spends what the award committed
            spent_so_far += subsidy
            if month_start >= _month_start(scheme.starts_on):
                months.append(FundMonth(f"{month_start:%Y-%m}", committed_so_far, spent_so_far))
        rate = recent.get(scheme.id, 0) // SPEND_WINDOW_DAYS
        exhausted_on = None
        if rate > 0:
            left = total - spent
            runs_out = _after_days(now, left, rate) if left > 0 else now
            exhausted_on = runs_out.date() if runs_out else None
        result.append(
            FundBurn(
                scheme_id=scheme.id,
                name=scheme.name,
                total_cents=total,
                committed_cents=committed,
                spent_cents=spent,
                available_cents=available,
                months=months,
                spend_rate_cents_per_day=rate,
                exhausted_on=exhausted_on,
            )
        )
    return result


def _position(uow: UnitOfWork, scheme_id: int) -> tuple[int, int, int, int]:
    """(total, available, committed, spent) from the ledger's balances, as fund_positions."""
    sums = {"total": 0, "available": 0, "committed": 0, "spent": 0}
    for (account, unit), value in uow.ledger.scheme_balances(scheme_id).items():
        if unit != acc.Unit.HKD:
            continue
        bucket = acc.fund_bucket(account)
        if bucket == "total":
            sums["total"] -= value
        elif bucket is not None:
            sums[bucket] += value
    return sums["total"], sums["available"], sums["committed"], sums["spent"]


# -- the funder's KPIs --------------------------------------------------------------------------


@dataclass(frozen=True)
class Kpis:
    applications: int
    approved: int
    rejected: int
    pending: int
    approval_rate: float | None  # approved / decided; None before any decision
    subsidy_by_category: dict[str, int]  # cents spent, by the organisation's category
    subsidy_by_sector: dict[str, int]  # cents spent, by sector ("" shown as "unspecified")
    gpu_hours_30d: float
    # GPU-seconds charged in the last 30 days / (capacity GPUs x 30 days); None at capacity 0
    utilisation_30d: float | None
    median_wait_s_30d: float | None  # started_at - submitted_at of jobs started in 30 days


def _check_capacity(capacity_gpus: int) -> None:
    if capacity_gpus < 0:
        raise ValidationError("capacity cannot be negative")


def kpis(uow: UnitOfWork, actor: Actor, now: datetime, capacity_gpus: int) -> Kpis:
    """The scheme's headline figures as of `now` (subsidy and usage settled by then)."""
    actor.require(Role.OPERATOR, Role.FUNDER)
    _check_capacity(capacity_gpus)
    now = _aware(now)
    since = now - timedelta(days=KPI_WINDOW_DAYS)
    with uow:
        uow.ledger.snapshot()
        status_counts: dict[str, int] = {
            status: int(count)
            for status, count in uow.session.execute(
                select(Application.status, func.count()).group_by(Application.status)
            ).all()
        }
        split = uow.session.execute(
            select(
                Organisation.category,
                Organisation.sector,
                func.coalesce(func.sum(JobCharge.subsidy_cents), 0),
            )
            .join(Organisation, Organisation.id == JobCharge.org_id)
            .where(JobCharge.settled_at <= now)
            .group_by(Organisation.category, Organisation.sector)
        ).all()
        gpu_seconds = uow.session.scalar(
            select(func.coalesce(func.sum(JobCharge.gpu_seconds), 0)).where(
                JobCharge.settled_at > since, JobCharge.settled_at <= now
            )
        )
        started = uow.session.execute(
            select(Job.submitted_at, Job.started_at).where(
                Job.started_at.is_not(None), Job.started_at > since, Job.started_at <= now
            )
        ).all()

    approved = status_counts.get(ApplicationStatus.APPROVED.value, 0)
    rejected = status_counts.get(ApplicationStatus.REJECTED.value, 0)
    total = sum(status_counts.values())
    by_category: dict[str, int] = defaultdict(int)
    by_sector: dict[str, int] = defaultdict(int)
    for category, sector, cents in split:
        by_category[category] += int(cents)
        by_sector[sector.strip() or UNSPECIFIED_SECTOR] += int(cents)
    charged = int(gpu_seconds or 0)
    window_capacity = capacity_gpus * KPI_WINDOW_DAYS * SECONDS_PER_DAY
    waits = [max(0.0, (s - sub).total_seconds()) for sub, s in started if s is not None]
    return Kpis(
        applications=total,
        approved=approved,
        rejected=rejected,
        pending=total - approved - rejected,
        approval_rate=approved / (approved + rejected) if approved + rejected else None,
        subsidy_by_category=dict(sorted(by_category.items())),
        subsidy_by_sector=dict(sorted(by_sector.items())),
        gpu_hours_30d=charged / SECONDS_PER_HOUR,
        utilisation_30d=charged / window_capacity if window_capacity else None,
        median_wait_s_30d=statistics.median(waits) if waits else None,
    )


# -- utilisation --------------------------------------------------------------------------------

ACTIVE_STATES = (JobState.STARTING.value, JobState.RUNNING.value)


def utilisation_series(
    uow: UnitOfWork, actor: Actor, now: datetime, capacity_gpus: int, days: int = 14
) -> list[tuple[datetime, float]]:
    """The fraction of capacity busy in each UTC hour of the last `days`, from jobs' start and end
    times (running jobs count up to `now`). Each point is (hour start, fraction); the first hour
    is the one `days` before now, the last the current one, measured up to `now`."""
    actor.require(Role.OPERATOR, Role.FUNDER)
    _check_capacity(capacity_gpus)
    if days < 1:
        raise ValidationError("the series needs at least one day")
    now = _aware(now)
    first = (now - timedelta(days=days)).replace(minute=0, second=0, microsecond=0)
    with uow:
        rows = uow.session.execute(
            select(Job.gpus, Job.started_at, Job.ended_at, Job.state).where(
                Job.started_at.is_not(None),
                Job.started_at < now,
                (Job.ended_at.is_(None) | (Job.ended_at > first)),
            )
        ).all()
    spans: list[tuple[int, datetime, datetime]] = []
    for gpus, started_at, ended_at, state in rows:
        if started_at is None:
            continue
        if ended_at is None:
            if state not in ACTIVE_STATES:
                continue  # ended without a recorded end: nothing to place on the timeline
            ended_at = now
        spans.append((gpus, started_at, min(ended_at, now)))

    hours = int((now - first).total_seconds() // SECONDS_PER_HOUR) + 1
    busy = [0.0] * hours  # GPU-seconds per hour
    for gpus, start, end in spans:
        if end <= start:
            continue
        index = max(0, int((start - first).total_seconds() // SECONDS_PER_HOUR))
        while index < hours:
            lo = first + timedelta(hours=index)
            hi = lo + timedelta(hours=1)
            if lo >= end:
                break
            overlap = (min(hi, end) - max(lo, start)).total_seconds()
            if overlap > 0:
                busy[index] += gpus * overlap
            index += 1

    series = []
    for index in range(hours):
        lo = first + timedelta(hours=index)
        length = (min(lo + timedelta(hours=1), now) - lo).total_seconds()
        if length <= 0:
            break
        fraction = busy[index] / (capacity_gpus * length) if capacity_gpus else 0.0
        series.append((lo, fraction))
    return series
