"""Burn charts, fund burn-down, KPIs and utilisation, with figures worked out by hand.

The builder's price is HK$36 per GPU-hour, so one GPU-second costs one cent, and awards subsidise
70%: a job's subsidy is 0.7 cents per GPU-second. The builder prices usage from the moment the
centre is built, so every job here runs in the future of the real clock; each service is handed
`now` explicitly.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, date, datetime, time, timedelta

import pytest

from aisc.domain.errors import NotFound, PermissionDenied, ValidationError
from aisc.domain.model import JobState
from aisc.services import accounts, allocations, applications, decisions, jobs, reviews, schemes
from aisc.services.context import Actor, utcnow
from aisc.services.metering import reserve_job, settle_job
from aisc.services.usage import (
    BurnPoint,
    FundMonth,
    allocation_burn,
    fund_burn,
    kpis,
    utilisation_series,
)
from aisc.store.tables import Allocation, Job, JobCharge
from aisc.store.uow import UnitOfWork
from tests.builders import RUBRIC, Centre, application_request, award, build_centre

UowFactory = Callable[[], UnitOfWork]


@pytest.fixture
def centre(uow_factory: UowFactory) -> Centre:
    return build_centre(uow_factory)


def midnight(day: date) -> datetime:
    return datetime.combine(day, time.min, tzinfo=UTC)


def first_of_month(day: date, months_ahead: int) -> date:
    index = day.year * 12 + day.month - 1 + months_ahead
    return date(index // 12, index % 12 + 1, 1)


def run_job(
    centre: Centre,
    org: str,
    allocation_id: int,
    gpus: int,
    start: datetime,
    seconds: int,
    wait_s: int = 0,
    settle: bool = True,
) -> Job:
    """Submit a job `wait_s` before `start`, start it then and (unless told not to) let it finish
    `seconds` later, reserving and settling its quota as the controller does."""
    job = jobs.submit_job(
        centre.uow(),
        centre.applicants[org],
        jobs.JobRequest(allocation_id, ["python", "train.py"], gpus, seconds),
        clock=lambda: start - timedelta(seconds=wait_s),
    )
    with centre.uow() as uow:
        uow.ledger.lock()
        row = uow.session.get(Job, job.id)
        assert row is not None
        allocation = uow.session.get(Allocation, row.allocation_id)
        assert allocation is not None
        reserve_job(uow, row, allocation, start)
        row.state, row.started_at = JobState.RUNNING.value, start
        if settle:
            end = start + timedelta(seconds=seconds)
            assert settle_job(uow, row, allocation, end) is not None
            row.state, row.ended_at = JobState.COMPLETED.value, end
        uow.commit()
        return row


def first_day(centre: Centre, allocation_id: int) -> date:
    return allocations.get_allocation(
        centre.uow(), centre.operator, allocation_id
    ).allocation.starts_at.date()


# -- an allocation's burn -----------------------------------------------------------------------


def test_an_allocations_burn_counts_charges_by_day_and_projects_the_run_out(
    centre: Centre,
) -> None:
    hku = award(centre, "HKU", gpu_hours=20)
    d0 = first_day(centre, hku)  # the award starts yesterday; usage is priced from today
    at = lambda days, hour: midnight(d0 + timedelta(days=days)) + timedelta(hours=hour)  # noqa: E731
    run_job(centre, "HKU", hku, gpus=2, start=at(2, 11), seconds=3600)  # 2 GPU-hours on day 2
    run_job(centre, "HKU", hku, gpus=1, start=at(5, 9), seconds=3 * 3600)  # 3 on day 5
    run_job(centre, "HKU", hku, gpus=7, start=at(18, 9), seconds=3600)  # 7 on day 18

    burn = allocation_burn(centre.uow(), centre.applicants["HKU"], hku, now=at(20, 0))

    assert burn.allocation_id == hku
    assert burn.granted_gpu_hours == 20
    assert burn.used_gpu_hours == 12
    balance = allocations.get_allocation(centre.uow(), centre.operator, hku)
    assert burn.used_gpu_hours * 3600 == balance.used_gpu_seconds  # the ledger agrees
    expected = [0] * 2 + [2] * 3 + [5] * 13 + [12] * 3  # days 0..20
    assert burn.points == [
        BurnPoint(d0 + timedelta(days=i), float(hours)) for i, hours in enumerate(expected)
    ]
    # the last 14 days (from day 6) hold only the 7 GPU-hours of day 18: 0.5 a day, so the
    # 8 hours left last 16 days, well before the award ends on day 91
    assert burn.rate_gpu_hours_per_day == pytest.approx(0.5)
    assert burn.runs_out_on == d0 + timedelta(days=36)
    assert burn.outlasts_award is False


def test_a_young_allocations_rate_is_averaged_since_its_start(centre: Centre) -> None:
    hku = award(centre, "HKU", gpu_hours=20)
    big = award(centre, "CUHK", gpu_hours=1000)
    d0 = first_day(centre, hku)
    start = midnight(d0 + timedelta(days=2)) + timedelta(hours=11)
    run_job(centre, "HKU", hku, gpus=2, start=start, seconds=3600)
    run_job(centre, "CUHK", big, gpus=2, start=start, seconds=3600)
    later = midnight(d0 + timedelta(days=5)) + timedelta(hours=9)
    run_job(centre, "HKU", hku, gpus=1, start=later, seconds=3600)  # after `now`: not counted

    now = midnight(d0 + timedelta(days=4))
    burn = allocation_burn(centre.uow(), centre.operator, hku, now=now)
    assert [p.used_gpu_hours for p in burn.points] == [0, 0, 2, 2, 2]
    assert burn.used_gpu_hours == 2
    # 2 GPU-hours over the 4 days since the start; 18 left last 36 days
    assert burn.rate_gpu_hours_per_day == pytest.approx(0.5)
    assert burn.runs_out_on == d0 + timedelta(days=40)
    assert burn.outlasts_award is False

    # 998 hours at 0.5 a day last 1,996 days, far past the award's 91
    burn = allocation_burn(centre.uow(), centre.operator, big, now=now)
    assert burn.runs_out_on == d0 + timedelta(days=4 + 1996)
    assert burn.outlasts_award is True


def test_an_idle_allocation_never_runs_out(centre: Centre) -> None:
    hku = award(centre, "HKU", gpu_hours=20)
    d0 = first_day(centre, hku)
    burn = allocation_burn(centre.uow(), centre.operator, hku, now=midnight(d0) + timedelta(days=1))
    assert burn.points == [BurnPoint(d0, 0.0), BurnPoint(d0 + timedelta(days=1), 0.0)]
    assert burn.rate_gpu_hours_per_day == 0
    assert burn.runs_out_on is None
    assert burn.outlasts_award is True


def test_an_allocations_points_stop_at_its_end(centre: Centre) -> None:
    hku = award(centre, "HKU", gpu_hours=20)
    d0 = first_day(centre, hku)
    run_job(centre, "HKU", hku, gpus=2, start=midnight(d0 + timedelta(days=2)), seconds=3600)
    end = allocations.get_allocation(centre.uow(), centre.operator, hku).allocation.ends_at
    burn = allocation_burn(centre.uow(), centre.operator, hku, now=end + timedelta(days=9))
    assert burn.points[-1] == BurnPoint((end - timedelta(days=1)).date(), 2.0)
    assert len(burn.points) == (end.date() - d0).days
    assert burn.runs_out_on is None  # nothing used in the last 14 days


def test_an_allocations_burn_is_its_organisations_alone(centre: Centre) -> None:
    hku = award(centre, "HKU")
    award(centre, "CUHK")
    with pytest.raises(PermissionDenied):
        allocation_burn(centre.uow(), centre.applicants["CUHK"], hku, utcnow())
    with pytest.raises(NotFound):
        allocation_burn(centre.uow(), centre.operator, 999, utcnow())
    with pytest.raises(ValidationError, match="time zone"):
        allocation_burn(centre.uow(), centre.operator, hku, datetime(2026, 1, 1))


# -- fund burn-down -----------------------------------------------------------------------------


def fund_centre(uow_factory: UowFactory) -> Centre:
    # HK$2,800: a 100 GPU-hour award commits 100 x HK$36 x 0.7 = HK$2,520 of it
    return build_centre(uow_factory, fund_cents=280_000)


def months_between(first: date, last: date) -> list[str]:
    keys = []
    month = first.replace(day=1)
    while month <= last:
        keys.append(f"{month:%Y-%m}")
        month = first_of_month(month, 1)
    return keys


def test_a_funds_burn_follows_awards_and_settled_jobs_month_by_month(
    uow_factory: UowFactory,
) -> None:
    centre = fund_centre(uow_factory)
    today = utcnow().date()
    hku = award(centre, "HKU", gpu_hours=100)  # committed now, in this month
    next_month = midnight(first_of_month(today, 1)) + timedelta(hours=10)
    run_job(centre, "HKU", hku, gpus=1, start=next_month, seconds=3600)  # subsidy 2,520
    month_after = midnight(first_of_month(today, 2) + timedelta(days=14)) + timedelta(hours=10)
    run_job(centre, "HKU", hku, gpus=1, start=month_after, seconds=3000)  # subsidy 2,100
    now = month_after + timedelta(days=1)

    (burn,) = fund_burn(centre.uow(), centre.funder, now)

    (position,) = schemes.fund_positions(centre.uow(), centre.funder)
    assert (burn.total_cents, burn.committed_cents, burn.spent_cents, burn.available_cents) == (
        position.total_cents,
        position.committed_cents,
        position.spent_cents,
        position.available_cents,
    )
    assert (burn.total_cents, burn.committed_cents, burn.spent_cents) == (280_000, 247_380, 4_620)
    assert burn.available_cents == 28_000
    scheme = schemes.get_scheme(centre.uow(), centre.scheme_id)
    keys = months_between(scheme.starts_on, now.date())
    assert [m.month for m in burn.months] == keys
    this_month = f"{today:%Y-%m}"
    expected = {
        this_month: FundMonth(this_month, 252_000, 0),
        f"{next_month:%Y-%m}": FundMonth(f"{next_month:%Y-%m}", 249_480, 2_520),
        f"{month_after:%Y-%m}": FundMonth(f"{month_after:%Y-%m}", 247_380, 4_620),
    }
    for month in burn.months:
        assert month == expected.get(month.month, FundMonth(month.month, 0, 0))
    # the last 30 days hold the second job only: 2,100 / 30 = 70 cents a day, and the
    # 275,380 cents not yet spent last 3,934 days at that rate
    assert burn.spend_rate_cents_per_day == 70
    assert burn.exhausted_on == now.date() + timedelta(days=3934)


def test_a_funds_burn_is_drawn_as_of_the_moment_asked(uow_factory: UowFactory) -> None:
    centre = fund_centre(uow_factory)
    today = utcnow().date()
    hku = award(centre, "HKU", gpu_hours=100)
    next_month = midnight(first_of_month(today, 1)) + timedelta(hours=10)
    run_job(centre, "HKU", hku, gpus=1, start=next_month, seconds=3600)
    run_job(centre, "HKU", hku, gpus=1, start=next_month + timedelta(days=20), seconds=3000)

    now = next_month + timedelta(days=1)
    (burn,) = fund_burn(centre.uow(), centre.operator, now)
    # the months and the rate stop at `now`; the headline figures are the ledger's balances,
    # as fund_positions reports them, so they hold the later job too
    assert burn.months[-1] == FundMonth(f"{next_month:%Y-%m}", 249_480, 2_520)
    assert burn.spend_rate_cents_per_day == 2_520 // 30  # 84
    assert burn.spent_cents == 4_620
    # total - spent = 275,380 cents at 84 a day: 3,278.33 days from now
    moment = now + timedelta(seconds=275_380 * 86_400 // 84)
    assert moment == now + timedelta(days=3278, hours=8)
    assert burn.exhausted_on == moment.date()


def test_closing_an_allocation_returns_its_commitment_in_the_month_it_closes(
    uow_factory: UowFactory,
) -> None:
    centre = fund_centre(uow_factory)
    today = utcnow().date()
    hku = award(centre, "HKU", gpu_hours=100)
    next_month = midnight(first_of_month(today, 1)) + timedelta(hours=10)
    run_job(centre, "HKU", hku, gpus=1, start=next_month, seconds=3600)
    closed_at = next_month + timedelta(days=1)
    allocations.close_allocation(centre.uow(), centre.operator, hku, clock=lambda: closed_at)

    (burn,) = fund_burn(centre.uow(), centre.funder, closed_at + timedelta(hours=1))
    assert burn.months[-2] == FundMonth(f"{today:%Y-%m}", 252_000, 0)
    assert burn.months[-1] == FundMonth(f"{next_month:%Y-%m}", 0, 2_520)
    (position,) = schemes.fund_positions(centre.uow(), centre.funder)
    assert (burn.committed_cents, burn.spent_cents, burn.available_cents) == (0, 2_520, 277_480)
    assert burn.available_cents == position.available_cents
    for month in burn.months:  # fund total = available + committed + spent, every month
        assert month.committed_cents + month.spent_cents <= burn.total_cents


def test_an_untouched_fund_has_no_exhaustion_date(centre: Centre) -> None:
    (burn,) = fund_burn(centre.uow(), centre.funder, utcnow())
    assert burn.spend_rate_cents_per_day == 0
    assert burn.exhausted_on is None
    assert all(m.committed_cents == m.spent_cents == 0 for m in burn.months)
    assert burn.months[-1].month == f"{utcnow():%Y-%m}"


def test_only_operators_and_the_funder_see_the_fund_burn(centre: Centre) -> None:
    award(centre, "HKU")
    with pytest.raises(PermissionDenied):
        fund_burn(centre.uow(), centre.applicants["HKU"], utcnow())
    with pytest.raises(PermissionDenied):
        kpis(centre.uow(), centre.reviewers[0], utcnow(), 16)
    with pytest.raises(PermissionDenied):
        utilisation_series(centre.uow(), centre.applicants["HKU"], utcnow(), 16)


# -- KPIs ---------------------------------------------------------------------------------------


def add_org_with_sector(centre: Centre, name: str, category: str, sector: str) -> Actor:
    org = accounts.create_organisation(centre.uow(), centre.operator, name, category, sector)
    user = accounts.create_user(
        centre.uow(), centre.operator, f"{name} Lead", f"lead@{org.id}.test", "applicant", org.id
    )
    centre.orgs[name] = org.id
    centre.applicants[name] = accounts.actor_for(user)
    return centre.applicants[name]


def test_kpis_count_decisions_split_the_subsidy_and_measure_the_last_30_days(
    centre: Centre,
) -> None:
    add_org_with_sector(centre, "Lion Rock AI", "startup", "fintech")
    hku = award(centre, "HKU")  # a university with no sector
    lion = award(centre, "Lion Rock AI")
    rejected = applications.submit_application(
        centre.uow(), centre.applicants["HKU"], application_request(centre.scheme_id)
    )
    for reviewer in centre.reviewers[:2]:
        reviews.submit_review(
            centre.uow(), reviewer, rejected.id, dict.fromkeys(RUBRIC, 2), "reject"
        )
    decisions.reject(centre.uow(), centre.operator, rejected.id, "not ready")
    applications.submit_application(  # still pending
        centre.uow(), centre.applicants["Lion Rock AI"], application_request(centre.scheme_id)
    )

    t0 = midnight(utcnow().date() + timedelta(days=1)) + timedelta(hours=10)
    run_job(centre, "HKU", hku, gpus=1, start=t0, seconds=3600, wait_s=10)  # subsidy 2,520
    recent = t0 + timedelta(days=31)
    run_job(centre, "HKU", hku, gpus=1, start=recent, seconds=1000, wait_s=60)  # 700
    run_job(centre, "Lion Rock AI", lion, gpus=2, start=recent, seconds=1500, wait_s=600)  # 2,100
    run_job(centre, "Lion Rock AI", lion, gpus=1, start=recent, seconds=1000, wait_s=120)  # 700
    now = t0 + timedelta(days=32)

    k = kpis(centre.uow(), centre.funder, now, capacity_gpus=16)

    assert (k.applications, k.approved, k.rejected, k.pending) == (4, 2, 1, 1)
    assert k.approval_rate == pytest.approx(2 / 3)
    assert k.subsidy_by_category == {"startup": 2_800, "university": 3_220}
    assert k.subsidy_by_sector == {"fintech": 2_800, "unspecified": 3_220}
    with centre.uow() as uow:  # the split accounts for every cent of subsidy spent
        total = sum(c.subsidy_cents for c in uow.session.query(JobCharge))
    assert sum(k.subsidy_by_category.values()) == total == 6_020
    # the first job settled 31 days before `now`: the window holds 1,000 + 3,000 + 1,000 GPU-s
    assert k.gpu_hours_30d == pytest.approx(5_000 / 3600)
    assert k.utilisation_30d == pytest.approx(5_000 / (16 * 30 * 86_400))
    assert k.median_wait_s_30d == 120


def test_kpis_before_anything_happened(centre: Centre) -> None:
    k = kpis(centre.uow(), centre.operator, utcnow(), capacity_gpus=0)
    assert (k.applications, k.approved, k.rejected, k.pending) == (0, 0, 0, 0)
    assert k.approval_rate is None
    assert k.subsidy_by_category == k.subsidy_by_sector == {}
    assert k.gpu_hours_30d == 0
    assert k.utilisation_30d is None
    assert k.median_wait_s_30d is None


# -- utilisation --------------------------------------------------------------------------------


def test_utilisation_is_the_busy_fraction_of_capacity_hour_by_hour(centre: Centre) -> None:
    hku = award(centre, "HKU")
    h = midnight(utcnow().date() + timedelta(days=2)) + timedelta(hours=10)
    run_job(centre, "HKU", hku, gpus=4, start=h, seconds=2 * 3600)  # 4 of 8 GPUs, 2 hours
    running = h + timedelta(hours=4, minutes=30)
    run_job(centre, "HKU", hku, gpus=8, start=running, seconds=3 * 3600, settle=False)

    series = utilisation_series(centre.uow(), centre.funder, h + timedelta(hours=5), 8, days=1)

    assert len(series) == 24
    assert series[0][0] == h - timedelta(hours=19)
    assert all(moment.minute == 0 and moment.tzinfo is not None for moment, _ in series)
    busy = {moment: fraction for moment, fraction in series if fraction}
    assert busy == {
        h: pytest.approx(0.5),
        h + timedelta(hours=1): pytest.approx(0.5),
        h + timedelta(hours=4): pytest.approx(0.5),  # the running job, half of that hour
    }

    # half-way through an hour, that hour is measured up to now: the running job fills it
    series = utilisation_series(
        centre.uow(), centre.operator, h + timedelta(hours=5, minutes=30), 8, days=1
    )
    assert series[-1] == (h + timedelta(hours=5), pytest.approx(1.0))
    assert len(series) == 25


def test_utilisation_needs_a_sensible_window(centre: Centre) -> None:
    with pytest.raises(ValidationError):
        utilisation_series(centre.uow(), centre.operator, utcnow(), 8, days=0)
    with pytest.raises(ValidationError):
        utilisation_series(centre.uow(), centre.operator, utcnow(), -1)
    assert all(f == 0 for _, f in utilisation_series(centre.uow(), centre.operator, utcnow(), 0))


def test_a_trickle_against_a_huge_award_and_fund_forecasts_no_date(
    uow_factory: UowFactory,
) -> None:
    """HK$3bn and a million GPU-hours against one GPU-second: a century-long forecast is no
    forecast (and a date that far out cannot even be written)."""
    centre = build_centre(uow_factory, fund_cents=3_000_000_000_00)
    big = award(centre, "HKU", gpu_hours=1_000_000)
    d0 = first_day(centre, big)
    run_job(centre, "HKU", big, gpus=1, start=midnight(d0 + timedelta(days=2)), seconds=1)
    now = midnight(d0 + timedelta(days=3))
    burn = allocation_burn(centre.uow(), centre.applicants["HKU"], big, now=now)
    assert burn.rate_gpu_hours_per_day > 0
    assert burn.runs_out_on is None and burn.outlasts_award is True
    (fund,) = fund_burn(centre.uow(), centre.funder, now)
    assert fund.spend_rate_cents_per_day == 0  # under a cent a day rounds to nothing
    run_job(centre, "HKU", big, gpus=8, start=now - timedelta(hours=1), seconds=3000)
    (fund,) = fund_burn(centre.uow(), centre.funder, now + timedelta(hours=1))
    assert fund.spend_rate_cents_per_day > 0 and fund.exhausted_on is None
