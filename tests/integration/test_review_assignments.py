"""Operators ask reviewers to review: conflicts refused, the reviewer notified once, and the
reviewer's worklist puts what they were asked for first."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from aisc.domain.errors import (
    Conflict,
    ConflictOfInterest,
    NotFound,
    PermissionDenied,
    ValidationError,
)
from aisc.services import accounts, applications, decisions, notifications, reviews
from aisc.store.uow import UnitOfWork
from tests.builders import Centre, add_org, application_request, build_centre

UowFactory = Callable[[], UnitOfWork]


@pytest.fixture
def centre(uow_factory: UowFactory) -> Centre:
    built = build_centre(uow_factory)
    add_org(built, "HKU")
    return built


def apply(centre: Centre, title: str) -> int:
    req = application_request(centre.scheme_id, title=title)
    return applications.submit_application(centre.uow(), centre.applicants["HKU"], req).id


def test_an_asked_reviewer_is_notified_once_and_sees_it_first(centre: Centre) -> None:
    first, second = apply(centre, "First"), apply(centre, "Second")
    reviewer = centre.reviewers[0]
    reviews.assign_reviewer(centre.uow(), centre.operator, second, reviewer.user_id)
    reviews.assign_reviewer(centre.uow(), centre.operator, second, reviewer.user_id)  # again
    inbox = notifications.list_notifications(centre.uow(), reviewer)
    assert [(n.kind, n.link) for n in inbox] == [("assignment", f"/review/{second}")]
    work = reviews.reviewer_worklist(centre.uow(), reviewer)
    assert [(i.application.id, i.assigned) for i in work] == [(second, True), (first, False)]
    other = reviews.reviewer_worklist(centre.uow(), centre.reviewers[1])
    assert [i.application.id for i in other] == [first, second]  # submission order
    asked = reviews.assigned_reviewers(centre.uow(), centre.operator, second)
    assert [u.id for u in asked] == [reviewer.user_id]
    reviews.unassign_reviewer(centre.uow(), centre.operator, second, reviewer.user_id)
    assert reviews.assigned_reviewers(centre.uow(), centre.operator, second) == []
    with pytest.raises(NotFound):
        reviews.unassign_reviewer(centre.uow(), centre.operator, second, reviewer.user_id)


def test_a_conflicted_reviewer_cannot_be_asked(centre: Centre) -> None:
    app_id = apply(centre, "Speech")
    reviewer = centre.reviewers[0]
    reviews.declare_conflict(centre.uow(), reviewer, app_id, "I co-authored with the lead")
    with pytest.raises(ConflictOfInterest, match="co-authored"):
        reviews.assign_reviewer(centre.uow(), centre.operator, app_id, reviewer.user_id)
    colleague = accounts.create_user(
        centre.uow(),
        centre.operator,
        "HKU Reviewer",
        "rev@hku.test",
        "reviewer",
        centre.orgs["HKU"],
    )
    with pytest.raises(ConflictOfInterest, match="applicant's organisation"):
        reviews.assign_reviewer(centre.uow(), centre.operator, app_id, colleague.id)
    assert reviews.assigned_reviewers(centre.uow(), centre.operator, app_id) == []
    assert notifications.list_notifications(centre.uow(), reviewer) == []


def test_only_operators_ask_only_reviewers_of_open_applications(centre: Centre) -> None:
    app_id = apply(centre, "Speech")
    with pytest.raises(PermissionDenied):
        reviews.assign_reviewer(centre.uow(), centre.reviewers[0], app_id, 1)
    with pytest.raises(ValidationError, match="not an active reviewer"):
        reviews.assign_reviewer(centre.uow(), centre.operator, app_id, centre.funder.user_id)
    decisions.reject(centre.uow(), centre.operator, app_id, "Out of scope")
    with pytest.raises(Conflict, match="already rejected"):
        reviews.assign_reviewer(centre.uow(), centre.operator, app_id, centre.reviewers[0].user_id)
