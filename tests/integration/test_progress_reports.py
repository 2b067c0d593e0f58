"""Progress reports: the schedule an award's approval makes, who sees it, and who submits."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

import pytest
from sqlalchemy import func, select

from aisc.domain.errors import Conflict, NotFound, PermissionDenied, ValidationError
from aisc.services import decisions, notifications, progress
from aisc.services.context import utcnow
from aisc.store.tables import Allocation, ProgressReport, Scheme
from tests.builders import Centre, UowFactory, add_org, award, build_centre

SUMMARY = "Trained the 7B speech model to 8.1% CER on the test set; next: dialect fine-tuning."


@pytest.fixture
def centre(uow_factory: UowFactory) -> Centre:
    return build_centre(uow_factory)


def at(day: date) -> datetime:
    return datetime.combine(day, datetime.min.time(), UTC)


def report_count(centre: Centre, allocation_id: int | None = None) -> int:
    with centre.uow() as uow:
        query = select(func.count()).select_from(ProgressReport)
        if allocation_id is not None:
            query = query.where(ProgressReport.allocation_id == allocation_id)
        return uow.session.scalar(query) or 0


# -- the schedule, worked out by hand ---------------------------------------------------------


@pytest.mark.parametrize(
    ("starts_on", "ends_on", "every", "expected"),
    [
        # a calendar year, quarterly: three interim reports and the final on the last day
        (
            date(2026, 1, 1),
            date(2026, 12, 31),
            3,
            [
                (date(2026, 4, 1), False),
                (date(2026, 7, 1), False),
                (date(2026, 10, 1), False),
                (date(2026, 12, 31), True),
            ],
        ),
        # monthly from the 31st: each date counts from the start, short months clamp, no drift
        (
            date(2026, 1, 31),
            date(2026, 6, 30),
            1,
            [
                (date(2026, 2, 28), False),
                (date(2026, 3, 31), False),
                (date(2026, 4, 30), False),
                (date(2026, 5, 31), False),
                (date(2026, 6, 30), True),  # 2026-06-30 is also start + 5: not before the end
            ],
        ),
        # a report that would fall on the last day is the final one, not a second report
        (date(2026, 3, 15), date(2026, 6, 15), 3, [(date(2026, 6, 15), True)]),
        (
            date(2026, 3, 15),
            date(2026, 6, 16),
            3,
            [(date(2026, 6, 15), False), (date(2026, 6, 16), True)],
        ),
        # leap day plus a year
        (
            date(2024, 2, 29),
            date(2025, 6, 30),
            12,
            [(date(2025, 2, 28), False), (date(2025, 6, 30), True)],
        ),
        # across the year end, every six months
        (
            date(2025, 11, 1),
            date(2027, 1, 31),
            6,
            [
                (date(2026, 5, 1), False),
                (date(2026, 11, 1), False),
                (date(2027, 1, 31), True),
            ],
        ),
        # shorter than one period, a one-day award, and a scheme asking for the final only
        (date(2026, 1, 1), date(2026, 2, 15), 3, [(date(2026, 2, 15), True)]),
        (date(2026, 1, 1), date(2026, 1, 1), 3, [(date(2026, 1, 1), True)]),
        (date(2026, 1, 1), date(2026, 12, 31), 0, [(date(2026, 12, 31), True)]),
    ],
)
def test_due_dates(
    starts_on: date, ends_on: date, every: int, expected: list[tuple[date, bool]]
) -> None:
    assert progress.due_dates(starts_on, ends_on, every) == expected


def test_due_dates_refuses_impossible_terms() -> None:
    with pytest.raises(ValueError, match="before it starts"):
        progress.due_dates(date(2026, 2, 1), date(2026, 1, 31), 3)
    with pytest.raises(ValueError, match="negative"):
        progress.due_dates(date(2026, 1, 1), date(2026, 12, 31), -1)


# -- scheduling at approval -------------------------------------------------------------------


def test_an_approval_schedules_the_awards_reports(centre: Centre) -> None:
    allocation_id = award(centre, "HKU")
    with centre.uow() as uow:
        allocation = uow.session.get(Allocation, allocation_id)
        assert allocation is not None
        first = allocation.starts_at.date()
        last = (allocation.ends_at - timedelta(days=1)).date()
    views = progress.list_reports(centre.uow(), centre.applicants["HKU"], utcnow())
    assert [(v.report.due_on, v.report.final) for v in views] == progress.due_dates(first, last, 3)
    assert views[-1].report.due_on == last and views[-1].report.final
    assert {v.allocation_id for v in views} == {allocation_id}
    assert views[0].allocation_name == "Cantonese speech model"


def test_the_schemes_period_sets_the_schedule(centre: Centre) -> None:
    with centre.uow() as uow:
        scheme = uow.session.get(Scheme, centre.scheme_id)
        assert scheme is not None
        scheme.report_every_months = 1
        uow.commit()
    allocation_id = award(centre, "HKU")  # 91 days, from yesterday
    views = progress.list_reports(centre.uow(), centre.operator, utcnow())
    assert len(views) in (3, 4)  # two or three monthly reports, then the final
    assert [v.report.final for v in views] == [False] * (len(views) - 1) + [True]
    assert report_count(centre, allocation_id) == len(views)


def test_schedule_reports_is_idempotent(centre: Centre) -> None:
    allocation_id = award(centre, "HKU")
    before = report_count(centre, allocation_id)
    with centre.uow() as uow:
        allocation = uow.session.get(Allocation, allocation_id)
        scheme = uow.session.get(Scheme, centre.scheme_id)
        assert allocation is not None and scheme is not None
        progress.schedule_reports(uow.session, allocation, scheme)
        assert progress.schedule_missing(uow.session) == 0
        uow.commit()
    assert report_count(centre, allocation_id) == before


def test_a_refused_approval_schedules_nothing(centre: Centre) -> None:
    add_org(centre, "HKU")
    award(centre, "HKU")
    before = report_count(centre)
    today = utcnow().date()
    with pytest.raises(NotFound):
        decisions.approve(
            centre.uow(),
            centre.operator,
            999,
            decisions.Approval(10, today, today + timedelta(days=30)),
        )
    assert report_count(centre) == before


def test_awards_made_before_reports_existed_get_a_schedule_when_listed(centre: Centre) -> None:
    allocation_id = award(centre, "HKU")
    expected = report_count(centre, allocation_id)
    with centre.uow() as uow:
        for report in uow.session.scalars(select(ProgressReport)):
            uow.session.delete(report)
        uow.commit()
    assert report_count(centre) == 0
    views = progress.list_reports(centre.uow(), centre.applicants["HKU"], utcnow())
    assert len(views) == expected == report_count(centre, allocation_id)
    progress.list_reports(centre.uow(), centre.applicants["HKU"], utcnow())
    assert report_count(centre, allocation_id) == expected


# -- who sees what, and status ----------------------------------------------------------------


def test_applicants_see_their_own_organisations_reports_staff_see_all(centre: Centre) -> None:
    hku = award(centre, "HKU")
    cuhk = award(centre, "CUHK")
    now = utcnow()
    mine = progress.list_reports(centre.uow(), centre.applicants["HKU"], now)
    assert {v.allocation_id for v in mine} == {hku}
    assert {v.org_id for v in mine} == {centre.orgs["HKU"]}
    for staff in (centre.operator, centre.funder):
        seen = progress.list_reports(centre.uow(), staff, now)
        assert {v.allocation_id for v in seen} == {hku, cuhk}
    with pytest.raises(PermissionDenied):
        progress.list_reports(centre.uow(), centre.reviewers[0], now)


def test_status_upcoming_due_overdue_submitted(centre: Centre) -> None:
    award(centre, "HKU")
    applicant = centre.applicants["HKU"]
    (first, *_) = progress.list_reports(centre.uow(), applicant, utcnow())
    due_on = first.report.due_on

    def status_on(day: date) -> str:
        views = progress.list_reports(centre.uow(), applicant, at(day))
        (view,) = [v for v in views if v.report.id == first.report.id]
        return view.status

    assert status_on(due_on - timedelta(days=31)) == "upcoming"
    assert status_on(due_on - timedelta(days=30)) == "due"
    assert status_on(due_on) == "due"
    assert status_on(due_on + timedelta(days=1)) == "overdue"
    progress.submit_report(centre.uow(), applicant, first.report.id, SUMMARY, utcnow())
    assert status_on(due_on + timedelta(days=1)) == "submitted"


# -- submitting -------------------------------------------------------------------------------


def test_an_applicant_submits_a_report_once(centre: Centre) -> None:
    award(centre, "HKU")
    applicant = centre.applicants["HKU"]
    (view, *_) = progress.list_reports(centre.uow(), applicant, utcnow())
    now = utcnow()
    report = progress.submit_report(centre.uow(), applicant, view.report.id, f"  {SUMMARY} ", now)
    assert report.summary == SUMMARY
    assert report.submitted_by == applicant.user_id
    assert report.submitted_at == now
    with pytest.raises(Conflict, match="already submitted"):
        progress.submit_report(centre.uow(), applicant, view.report.id, SUMMARY, utcnow())
    with centre.uow() as uow:
        stored = uow.session.get(ProgressReport, view.report.id)
        assert stored is not None and stored.summary == SUMMARY


def test_a_report_summary_needs_fifty_characters(centre: Centre) -> None:
    award(centre, "HKU")
    applicant = centre.applicants["HKU"]
    (view, *_) = progress.list_reports(centre.uow(), applicant, utcnow())
    with pytest.raises(ValidationError, match="at least 50 characters"):
        progress.submit_report(
            centre.uow(), applicant, view.report.id, " " + "x" * 49 + " ", utcnow()
        )
    progress.submit_report(centre.uow(), applicant, view.report.id, "x" * 50, utcnow())


def test_only_the_awards_own_applicants_submit(centre: Centre) -> None:
    award(centre, "HKU")
    other = add_org(centre, "CUHK")
    (view, *_) = progress.list_reports(centre.uow(), centre.applicants["HKU"], utcnow())
    with pytest.raises(PermissionDenied, match="another organisation"):
        progress.submit_report(centre.uow(), other, view.report.id, SUMMARY, utcnow())
    with pytest.raises(PermissionDenied):
        progress.submit_report(centre.uow(), centre.operator, view.report.id, SUMMARY, utcnow())
    with pytest.raises(NotFound):
        progress.submit_report(centre.uow(), other, 999_999, SUMMARY, utcnow())
    (again, *_) = progress.list_reports(centre.uow(), centre.applicants["HKU"], utcnow())
    assert again.status != "submitted" and again.report.submitted_by is None


def test_submitting_a_report_marks_its_reminder_read(centre: Centre) -> None:
    award(centre, "HKU")
    applicant = centre.applicants["HKU"]
    (view, *_) = progress.list_reports(centre.uow(), applicant, utcnow())
    notifications.check_due(
        centre.uow(),
        at(view.report.due_on - timedelta(days=1)),
        notifications.NotificationSettings((25, 10), 14, 7),
    )
    key = f"report_due:{view.report.id}"
    unread = notifications.list_notifications(centre.uow(), applicant, unread_only=True)
    assert key in [n.key for n in unread]
    progress.submit_report(centre.uow(), applicant, view.report.id, SUMMARY, utcnow())
    unread = notifications.list_notifications(centre.uow(), applicant, unread_only=True)
    assert key not in [n.key for n in unread]
