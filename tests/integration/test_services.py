"""Every use case and every refusal, through the services against a real database."""

from __future__ import annotations

import csv
import io
from collections.abc import Callable
from dataclasses import replace
from datetime import UTC, date, datetime, timedelta

import pytest
from sqlalchemy import Engine, func, select, text

from aisc.domain.errors import (
    AuthenticationFailed,
    Conflict,
    ConflictOfInterest,
    InsufficientFunds,
    NotFound,
    OverQuota,
    PermissionDenied,
    ValidationError,
)
from aisc.ledger import accounts as acc
from aisc.services import (
    accounts,
    allocations,
    applications,
    audit,
    decisions,
    invoices,
    jobs,
    rates,
    reviews,
    schemes,
)
from aisc.services.context import Actor, utcnow
from aisc.services.metering import reserve_job, settle_job
from aisc.store.tables import Allocation, Application, Decision, Job
from aisc.store.uow import UnitOfWork
from tests.builders import (
    PRICE_CENTS,
    RUBRIC,
    Centre,
    add_org,
    application_request,
    award,
    build_centre,
)
from tests.builders import run_to_completion as run

UowFactory = Callable[[], UnitOfWork]
TODAY = datetime.now().date()
SCORES = dict.fromkeys(RUBRIC, 7)


@pytest.fixture
def centre(uow_factory: UowFactory) -> Centre:
    return build_centre(uow_factory)


# -- helpers ----------------------------------------------------------------------------------


def snapshot(centre: Centre) -> dict[str, object]:
    """What a refused request must leave exactly as it was."""
    with centre.uow() as uow:
        s = uow.session
        return {
            "head": uow.ledger.head(),
            "balances": uow.ledger.stored_balances(),
            "allocations": s.scalar(select(func.count()).select_from(Allocation)),
            "decisions": s.scalar(select(func.count()).select_from(Decision)),
            "jobs": s.scalar(select(func.count()).select_from(Job)),
            "applications": sorted(s.execute(select(Application.id, Application.status)).all()),
        }


def apply(centre: Centre, org: str, gpu_hours: int = 100, **overrides: object) -> int:
    applicant = centre.applicants.get(org) or add_org(centre, org)
    req = application_request(centre.scheme_id, gpu_hours, **overrides)
    return applications.submit_application(centre.uow(), applicant, req).id


def reviewed(centre: Centre, org: str, gpu_hours: int = 100) -> int:
    app_id = apply(centre, org, gpu_hours)
    for reviewer in centre.reviewers[:2]:
        reviews.submit_review(centre.uow(), reviewer, app_id, SCORES, "approve")
    return app_id


def terms(gpu_hours: int = 100, **changes: object) -> decisions.Approval:
    base = decisions.Approval(
        gpu_hours=gpu_hours,
        starts_on=TODAY - timedelta(days=1),
        ends_on=TODAY + timedelta(days=90),
    )
    return replace(base, **changes)  # type: ignore[arg-type]


def submit(
    centre: Centre,
    org: str,
    allocation_id: int,
    gpus: int = 1,
    time_limit_s: int = 3600,
    **kwargs: object,
) -> Job:
    req = jobs.JobRequest(allocation_id, ["python", "train.py"], gpus, time_limit_s)
    return jobs.submit_job(centre.uow(), centre.applicants[org], req, **kwargs)  # type: ignore[arg-type]


def balance(centre: Centre, allocation_id: int) -> allocations.AllocationBalance:
    return allocations.get_allocation(centre.uow(), centre.operator, allocation_id)


def fund(centre: Centre) -> schemes.FundPosition:
    (position,) = schemes.fund_positions(centre.uow(), centre.funder)
    return position


def month_of(moment: datetime) -> str:
    return f"{moment:%Y-%m}"


def start_within_a_month() -> datetime:
    """Now, or the start of next month when jobs starting now could end in the next one."""
    now = utcnow()
    if month_of(now) == month_of(now + timedelta(hours=2)):
        return now
    return (now + timedelta(hours=2)).replace(day=1, hour=0, minute=0, second=0, microsecond=0)


# -- schemes ----------------------------------------------------------------------------------


def test_a_new_scheme_is_funded_in_the_ledger(centre: Centre) -> None:
    position = fund(centre)
    assert position.total_cents == 1_000_000_00
    assert position.available_cents == 1_000_000_00
    assert position.committed_cents == position.spent_cents == 0


def create_scheme(centre: Centre, actor: Actor | None = None, **overrides: object) -> object:
    fields: dict[str, object] = {
        "name": "Second Scheme",
        "fund_total_cents": 5_000_00,
        "starts_on": TODAY,
        "ends_on": TODAY + timedelta(days=30),
        "rubric": RUBRIC,
    }
    fields.update(overrides)
    return schemes.create_scheme(centre.uow(), actor or centre.operator, **fields)  # type: ignore[arg-type]


def test_a_scheme_whose_rubric_does_not_sum_to_100_is_refused(centre: Centre) -> None:
    before = snapshot(centre)
    with pytest.raises(ValidationError, match="sum to 100"):
        create_scheme(centre, rubric={"merit": 60, "team": 30})
    assert snapshot(centre) == before
    assert len(schemes.list_schemes(centre.uow())) == 1


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"default_rate_bp": 9500, "max_rate_bp": 9000}, "default rate <= maximum"),
        ({"max_rate_bp": 10_001}, "maximum rate <= 1"),
        ({"default_rate_bp": 0}, "0 < default"),
        ({"fund_total_cents": 0}, "positive"),
        ({"ends_on": TODAY}, "end after it starts"),
        ({"min_reviews": 0}, "at least one review"),
        ({"eligible_categories": ["charity"]}, "unknown applicant category"),
        ({"eligible_categories": []}, "at least one eligible category"),
        ({"name": "  "}, "needs a name"),
    ],
)
def test_a_scheme_with_bad_terms_is_refused(
    centre: Centre, overrides: dict[str, object], message: str
) -> None:
    with pytest.raises(ValidationError, match=message):
        create_scheme(centre, **overrides)
    assert len(schemes.list_schemes(centre.uow())) == 1


def test_a_second_scheme_with_the_same_name_is_refused(centre: Centre) -> None:
    with pytest.raises(Conflict):
        create_scheme(centre, name="Test Scheme")


def test_an_applicant_cannot_create_a_scheme(centre: Centre) -> None:
    applicant = add_org(centre, "HKU")
    with pytest.raises(PermissionDenied):
        create_scheme(centre, actor=applicant)


def test_only_operators_and_the_funder_see_fund_positions(centre: Centre) -> None:
    assert schemes.fund_positions(centre.uow(), centre.operator)[0].scheme_id == centre.scheme_id
    with pytest.raises(PermissionDenied):
        schemes.fund_positions(centre.uow(), add_org(centre, "HKU"))


def test_an_unknown_scheme_is_not_found(centre: Centre) -> None:
    with pytest.raises(NotFound):
        schemes.get_scheme(centre.uow(), 999)


# -- accounts ---------------------------------------------------------------------------------


def test_an_organisation_with_an_unknown_category_is_refused(centre: Centre) -> None:
    with pytest.raises(ValidationError, match="unknown category"):
        accounts.create_organisation(centre.uow(), centre.operator, "Acme", "charity")


def test_an_applicant_without_an_organisation_is_refused(centre: Centre) -> None:
    with pytest.raises(ValidationError, match="belong to an organisation"):
        accounts.create_user(centre.uow(), centre.operator, "Ann", "ann@x.test", "applicant")


def test_a_second_user_with_the_same_email_is_refused(centre: Centre) -> None:
    with pytest.raises(Conflict):
        accounts.create_user(centre.uow(), centre.operator, "Olive", "OPS@centre.test", "operator")


def test_a_token_authenticates_its_user_until_revoked(centre: Centre) -> None:
    token = accounts.issue_token(centre.uow(), centre.operator, centre.funder.user_id)
    assert accounts.authenticate(centre.uow(), token) == centre.funder
    accounts.revoke_token(centre.uow(), centre.funder, token)
    with pytest.raises(AuthenticationFailed):
        accounts.authenticate(centre.uow(), token)


# -- rate card --------------------------------------------------------------------------------


def test_a_price_cannot_take_effect_in_the_past(centre: Centre) -> None:
    with pytest.raises(ValidationError, match="in the past"):
        rates.set_rate(centre.uow(), centre.operator, "H800", 4000, utcnow() - timedelta(minutes=1))


def test_a_price_needs_a_time_zone(centre: Centre) -> None:
    with pytest.raises(ValidationError, match="time zone"):
        rates.set_rate(centre.uow(), centre.operator, "H800", 4000, datetime(2099, 1, 1))


def test_a_price_must_be_positive(centre: Centre) -> None:
    with pytest.raises(ValidationError, match="positive"):
        rates.set_rate(centre.uow(), centre.operator, "H800", 0)


def test_two_prices_for_the_same_moment_are_refused(centre: Centre) -> None:
    when = utcnow() + timedelta(days=1)
    rates.set_rate(centre.uow(), centre.operator, "h800", 4000, when)
    with pytest.raises(Conflict):
        rates.set_rate(centre.uow(), centre.operator, "H800", 5000, when)


def test_only_an_operator_sets_prices(centre: Centre) -> None:
    with pytest.raises(PermissionDenied):
        rates.set_rate(centre.uow(), centre.funder, "H800", 4000)


def test_the_price_in_force_is_the_latest_that_has_taken_effect(centre: Centre) -> None:
    later = utcnow() + timedelta(days=7)
    rates.set_rate(centre.uow(), centre.operator, "H800", 9000, later)
    with centre.uow() as uow:
        assert rates.price_at(uow.session, "H800", utcnow()) == PRICE_CENTS
        assert rates.price_at(uow.session, "H800", later) == 9000
        assert rates.price_at(uow.session, "H800", later + timedelta(days=1)) == 9000
        with pytest.raises(NotFound):
            rates.price_at(uow.session, "A100", utcnow())


def test_set_rate_judges_the_past_by_the_clock_it_is_given(centre: Centre) -> None:
    past = utcnow() - timedelta(days=30)
    rates.set_rate(centre.uow(), centre.operator, "A100", 2000, past, clock=lambda: past)
    with centre.uow() as uow:
        assert rates.price_at(uow.session, "A100", past + timedelta(days=1)) == 2000


# -- applications -----------------------------------------------------------------------------


def test_an_application_for_an_unknown_gpu_model_is_refused(centre: Centre) -> None:
    add_org(centre, "HKU")
    before = snapshot(centre)
    with pytest.raises(ValidationError, match="not on the rate card"):
        apply(centre, "HKU", gpu_model="Z9000")
    assert snapshot(centre) == before


def test_an_application_from_an_ineligible_category_is_refused(centre: Centre) -> None:
    other = create_scheme(centre, name="Universities Only", eligible_categories=["university"])
    applicant = add_org(centre, "BigCorp", category="enterprise")
    req = application_request(
        other.id,  # type: ignore[attr-defined]
        10,
        starts_on=TODAY,
        ends_on=TODAY + timedelta(days=10),
    )
    with pytest.raises(ValidationError, match="enterprise organisations are not eligible"):
        applications.submit_application(centre.uow(), applicant, req)


def test_an_application_outside_the_scheme_period_is_refused(centre: Centre) -> None:
    add_org(centre, "HKU")
    with pytest.raises(ValidationError, match="within the scheme"):
        apply(centre, "HKU", ends_on=TODAY + timedelta(days=400))


def test_an_application_with_personal_data_must_say_how_it_is_protected(centre: Centre) -> None:
    add_org(centre, "HKU")
    governance = replace(application_request(1).governance, personal_data=True)
    with pytest.raises(ValidationError, match="personal data"):
        apply(centre, "HKU", governance=governance)


def test_an_application_lists_every_problem_at_once(centre: Centre) -> None:
    add_org(centre, "HKU")
    with pytest.raises(ValidationError) as info:
        apply(centre, "HKU", title=" ", gpu_hours=0, justification="short")
    assert "title" in info.value.detail
    assert "GPU-hours" in info.value.detail
    assert "justify" in info.value.detail


def test_an_operator_cannot_apply_for_compute(centre: Centre) -> None:
    with pytest.raises(PermissionDenied):
        applications.submit_application(
            centre.uow(), centre.operator, application_request(centre.scheme_id)
        )


def test_an_applicant_sees_only_their_own_organisations_applications(centre: Centre) -> None:
    mine = apply(centre, "HKU")
    apply(centre, "CUHK")
    hku = centre.applicants["HKU"]
    assert [a.id for a in applications.list_applications(centre.uow(), hku)] == [mine]
    with pytest.raises(PermissionDenied):
        applications.get_application(centre.uow(), centre.applicants["CUHK"], mine)
    assert len(applications.list_applications(centre.uow(), centre.operator)) == 2


# -- reviews ----------------------------------------------------------------------------------


def test_a_review_records_the_weighted_score(centre: Centre) -> None:
    app_id = apply(centre, "HKU")
    review = reviews.submit_review(centre.uow(), centre.reviewers[0], app_id, SCORES, "approve")
    assert review.weighted_score == 70


def test_a_reviewer_from_the_applicants_organisation_is_refused(centre: Centre) -> None:
    app_id = apply(centre, "HKU")
    insider = accounts.actor_for(
        accounts.create_user(
            centre.uow(), centre.operator, "Ian", "ian@hku.test", "reviewer", centre.orgs["HKU"]
        )
    )
    with pytest.raises(ConflictOfInterest, match="your own organisation"):
        reviews.submit_review(centre.uow(), insider, app_id, SCORES, "approve")
    assert reviews.list_reviews(centre.uow(), centre.operator, app_id) == []


def test_a_reviewer_who_declared_a_conflict_is_refused(centre: Centre) -> None:
    app_id = apply(centre, "HKU")
    reviewer = centre.reviewers[0]
    reviews.declare_conflict(centre.uow(), reviewer, app_id, "former supervisor of the PI")
    with pytest.raises(ConflictOfInterest, match="former supervisor"):
        reviews.submit_review(centre.uow(), reviewer, app_id, SCORES, "approve")
    assert reviews.list_reviews(centre.uow(), centre.operator, app_id) == []


def test_a_conflict_cannot_be_declared_after_reviewing(centre: Centre) -> None:
    app_id = apply(centre, "HKU")
    reviewer = centre.reviewers[0]
    reviews.submit_review(centre.uow(), reviewer, app_id, SCORES, "approve")
    with pytest.raises(Conflict, match="already reviewed"):
        reviews.declare_conflict(centre.uow(), reviewer, app_id, "remembered late")


def test_a_reviewer_reviews_an_application_once(centre: Centre) -> None:
    app_id = apply(centre, "HKU")
    reviews.submit_review(centre.uow(), centre.reviewers[0], app_id, SCORES, "approve")
    with pytest.raises(Conflict):
        reviews.submit_review(centre.uow(), centre.reviewers[0], app_id, SCORES, "reject")


def test_a_review_with_bad_scores_or_recommendation_is_refused(centre: Centre) -> None:
    app_id = apply(centre, "HKU")
    reviewer = centre.reviewers[0]
    with pytest.raises(ValidationError, match="missing scores"):
        reviews.submit_review(centre.uow(), reviewer, app_id, {"merit": 5}, "approve")
    with pytest.raises(ValidationError, match="recommendation"):
        reviews.submit_review(centre.uow(), reviewer, app_id, SCORES, "maybe")
    assert reviews.list_reviews(centre.uow(), centre.operator, app_id) == []


def test_an_applicant_cannot_review(centre: Centre) -> None:
    app_id = apply(centre, "HKU")
    with pytest.raises(PermissionDenied):
        reviews.submit_review(centre.uow(), add_org(centre, "CUHK"), app_id, SCORES, "approve")


def test_a_reviewer_sees_only_their_own_reviews(centre: Centre) -> None:
    app_id = reviewed(centre, "HKU")
    mine = reviews.list_reviews(centre.uow(), centre.reviewers[0], app_id)
    assert [r.reviewer_id for r in mine] == [centre.reviewers[0].user_id]
    assert len(reviews.list_reviews(centre.uow(), centre.funder, app_id)) == 2


# -- decisions --------------------------------------------------------------------------------


def test_approval_commits_the_award_and_opens_an_allocation(centre: Centre) -> None:
    app_id = reviewed(centre, "HKU")
    allocation = decisions.approve(centre.uow(), centre.operator, app_id, terms(100))
    assert allocation.rate_bp == 7000
    assert allocation.commitment_cents == 100 * PRICE_CENTS * 7000 // 10_000
    position = fund(centre)
    assert position.available_cents == 1_000_000_00 - allocation.commitment_cents
    assert position.committed_cents == allocation.commitment_cents
    b = balance(centre, allocation.id)
    assert b.available_gpu_seconds == b.granted_gpu_seconds == 100 * 3600
    assert b.subsidy_committed_cents == allocation.commitment_cents
    app = applications.get_application(centre.uow(), centre.operator, app_id)
    assert app.status == "approved"


def test_approval_before_the_minimum_reviews_is_refused(centre: Centre) -> None:
    app_id = apply(centre, "HKU")
    reviews.submit_review(centre.uow(), centre.reviewers[0], app_id, SCORES, "approve")
    before = snapshot(centre)
    with pytest.raises(Conflict, match="1 of the 2 reviews"):
        decisions.approve(centre.uow(), centre.operator, app_id, terms())
    assert snapshot(centre) == before


def test_a_rate_above_the_schemes_maximum_is_refused_even_with_a_reason(centre: Centre) -> None:
    app_id = reviewed(centre, "HKU")
    before = snapshot(centre)
    with pytest.raises(ValidationError, match=r"above the scheme's maximum 0\.90"):
        decisions.approve(
            centre.uow(), centre.operator, app_id, terms(rate_bp=9100, rate_reason="strategic")
        )
    assert snapshot(centre) == before


def test_a_rate_above_the_default_needs_a_written_reason(centre: Centre) -> None:
    app_id = reviewed(centre, "HKU")
    before = snapshot(centre)
    with pytest.raises(ValidationError, match="written reason"):
        decisions.approve(centre.uow(), centre.operator, app_id, terms(rate_bp=9000))
    assert snapshot(centre) == before


def test_a_rate_above_the_default_with_a_reason_is_accepted(centre: Centre) -> None:
    app_id = reviewed(centre, "HKU")
    allocation = decisions.approve(
        centre.uow(),
        centre.operator,
        app_id,
        terms(100, rate_bp=9000, rate_reason="public-health model, exceptional case"),
    )
    assert allocation.rate_bp == 9000
    assert allocation.commitment_cents == 100 * PRICE_CENTS * 9000 // 10_000
    found = decisions.get_decision(centre.uow(), centre.operator, app_id)
    assert found is not None
    decision, opened = found
    assert opened == allocation.id
    assert decision.rate_reason == "public-health model, exceptional case"


def test_an_award_larger_than_the_uncommitted_fund_is_refused_and_changes_nothing(
    uow_factory: UowFactory,
) -> None:
    # 100 GPU-hours at HK$36 and 70% commits HK$2,520.00; the fund has HK$2,000.00
    centre = build_centre(uow_factory, fund_cents=2_000_00)
    app_id = reviewed(centre, "HKU")
    before = snapshot(centre)
    with pytest.raises(InsufficientFunds, match=r"HK\$2,520.00 but the fund has only HK\$2,000"):
        decisions.approve(centre.uow(), centre.operator, app_id, terms(100))
    assert snapshot(centre) == before
    assert applications.get_application(centre.uow(), centre.operator, app_id).status == (
        "submitted"
    )
    assert allocations.list_allocations(centre.uow(), centre.operator) == []


def test_awards_may_commit_the_whole_fund_but_not_a_cent_more(uow_factory: UowFactory) -> None:
    centre = build_centre(uow_factory, fund_cents=2_520_00 + 2_519_99)
    award(centre, "HKU", gpu_hours=100)
    second = reviewed(centre, "CUHK")
    with pytest.raises(InsufficientFunds):
        decisions.approve(centre.uow(), centre.operator, second, terms(100))
    third = reviewed(centre, "HKUST", gpu_hours=99)
    decisions.approve(centre.uow(), centre.operator, third, terms(99))
    position = fund(centre)
    assert position.available_cents == 2_519_99 - 99 * 2520
    assert position.total_cents == position.available_cents + position.committed_cents


def test_a_funder_cannot_approve(centre: Centre) -> None:
    app_id = reviewed(centre, "HKU")
    with pytest.raises(PermissionDenied):
        decisions.approve(centre.uow(), centre.funder, app_id, terms())


def test_an_application_is_decided_only_once(centre: Centre) -> None:
    app_id = reviewed(centre, "HKU")
    decisions.reject(centre.uow(), centre.operator, app_id, "out of scope")
    with pytest.raises(Conflict, match="already rejected"):
        decisions.approve(centre.uow(), centre.operator, app_id, terms())
    with pytest.raises(Conflict):
        reviews.submit_review(centre.uow(), centre.reviewers[2], app_id, SCORES, "approve")


def test_a_rejection_needs_its_reasons(centre: Centre) -> None:
    app_id = reviewed(centre, "HKU")
    with pytest.raises(ValidationError):
        decisions.reject(centre.uow(), centre.operator, app_id, " ")


def test_an_award_outside_the_schemes_period_is_refused(centre: Centre) -> None:
    app_id = reviewed(centre, "HKU")
    with pytest.raises(ValidationError, match="within the scheme"):
        decisions.approve(
            centre.uow(), centre.operator, app_id, terms(ends_on=TODAY + timedelta(days=400))
        )


def test_approving_an_unknown_application_is_not_found(centre: Centre) -> None:
    with pytest.raises(NotFound):
        decisions.approve(centre.uow(), centre.operator, 999, terms())


# -- allocations ------------------------------------------------------------------------------


def test_closing_an_allocation_returns_its_unspent_subsidy_to_the_fund(centre: Centre) -> None:
    allocation_id = award(centre, "HKU", gpu_hours=100)
    job = submit(centre, "HKU", allocation_id, gpus=1, time_limit_s=3600)
    run(centre, job.id, utcnow(), 1000)
    closed = allocations.close_allocation(centre.uow(), centre.operator, allocation_id)
    assert closed.status == "closed"
    assert closed.subsidy_committed_cents == 0
    assert closed.available_gpu_seconds == 0
    position = fund(centre)
    assert position.spent_cents == 700
    assert position.committed_cents == 0
    assert position.available_cents == 1_000_000_00 - 700
    with pytest.raises(Conflict, match="closed"):
        submit(centre, "HKU", allocation_id)


def test_an_allocation_with_a_running_job_cannot_be_closed(centre: Centre) -> None:
    allocation_id = award(centre, "HKU")
    job = submit(centre, "HKU", allocation_id)
    with centre.uow() as uow:
        uow.ledger.lock()
        row = uow.session.get(Job, job.id)
        reserve_job(uow, row, uow.session.get(Allocation, allocation_id), utcnow())
        uow.commit()
    with pytest.raises(ValidationError, match="running jobs"):
        allocations.close_allocation(centre.uow(), centre.operator, allocation_id)


def test_an_applicant_sees_only_their_own_allocations(centre: Centre) -> None:
    mine = award(centre, "HKU")
    theirs = award(centre, "CUHK")
    listed = allocations.list_allocations(centre.uow(), centre.applicants["HKU"])
    assert [b.allocation.id for b in listed] == [mine]
    with pytest.raises(PermissionDenied):
        allocations.get_allocation(centre.uow(), centre.applicants["HKU"], theirs)


# -- jobs -------------------------------------------------------------------------------------


def test_a_job_within_quota_is_queued(centre: Centre) -> None:
    allocation_id = award(centre, "HKU", gpu_hours=10)
    job = submit(centre, "HKU", allocation_id, gpus=8, time_limit_s=4500)  # exactly 10 GPU-hours
    assert job.state == "queued"
    assert job.gpu_model == "H800"
    assert job.name == "python"


def test_a_job_over_quota_is_refused(centre: Centre) -> None:
    allocation_id = award(centre, "HKU", gpu_hours=10)
    before = snapshot(centre)
    with pytest.raises(OverQuota, match=r"10\.00 GPU-hours left"):
        submit(centre, "HKU", allocation_id, gpus=8, time_limit_s=4501)
    assert snapshot(centre) == before


def test_a_job_needing_more_gpus_than_any_node_has_is_refused(centre: Centre) -> None:
    allocation_id = award(centre, "HKU")
    with pytest.raises(ValidationError, match="more than any H800 node has"):
        submit(centre, "HKU", allocation_id, gpus=9, time_limit_s=60)


def test_a_job_needing_more_gpus_than_the_cluster_has_is_refused(centre: Centre) -> None:
    allocation_id = award(centre, "HKU")
    with pytest.raises(ValidationError, match="more than the cluster has"):
        submit(centre, "HKU", allocation_id, gpus=17, time_limit_s=60)


def test_a_job_before_its_allocation_starts_is_refused(centre: Centre) -> None:
    app_id = reviewed(centre, "HKU")
    future = terms(starts_on=TODAY + timedelta(days=10), ends_on=TODAY + timedelta(days=20))
    allocation = decisions.approve(centre.uow(), centre.operator, app_id, future)
    with pytest.raises(Conflict, match="starts on"):
        submit(centre, "HKU", allocation.id)
    job = submit(
        centre, "HKU", allocation.id, clock=lambda: allocation.starts_at + timedelta(hours=1)
    )
    assert job.state == "queued"


def test_a_job_after_its_allocation_has_ended_is_refused(centre: Centre) -> None:
    allocation_id = award(centre, "HKU")
    ends_at = balance(centre, allocation_id).allocation.ends_at
    with pytest.raises(Conflict, match="ended"):
        submit(centre, "HKU", allocation_id, clock=lambda: ends_at)
    submit(centre, "HKU", allocation_id, clock=lambda: ends_at - timedelta(seconds=1))


def test_a_job_on_another_organisations_allocation_is_refused(centre: Centre) -> None:
    allocation_id = award(centre, "HKU")
    add_org(centre, "CUHK")
    with pytest.raises(PermissionDenied):
        submit(centre, "CUHK", allocation_id)


def test_a_funder_cannot_submit_jobs(centre: Centre) -> None:
    allocation_id = award(centre, "HKU")
    req = jobs.JobRequest(allocation_id, ["true"], 1, 60)
    with pytest.raises(PermissionDenied):
        jobs.submit_job(centre.uow(), centre.funder, req)


def test_only_an_operator_raises_a_jobs_priority(centre: Centre) -> None:
    allocation_id = award(centre, "HKU")
    urgent = jobs.JobRequest(allocation_id, ["true"], 1, 60, priority=5)
    with pytest.raises(PermissionDenied, match="priority"):
        jobs.submit_job(centre.uow(), centre.applicants["HKU"], urgent)
    assert jobs.submit_job(centre.uow(), centre.operator, urgent).priority == 5


@pytest.mark.parametrize(
    ("argv", "gpus", "limit"),
    [([], 1, 60), ([" "], 1, 60), (["a\x00b"], 1, 60), (["t"], 0, 60), (["t"], 1, 0)],
)
def test_a_malformed_job_is_refused(centre: Centre, argv: list[str], gpus: int, limit: int) -> None:
    allocation_id = award(centre, "HKU")
    with pytest.raises(ValidationError):
        jobs.submit_job(
            centre.uow(),
            centre.applicants["HKU"],
            jobs.JobRequest(allocation_id, argv, gpus, limit),
        )


def test_a_job_on_an_unknown_allocation_is_not_found(centre: Centre) -> None:
    add_org(centre, "HKU")
    with pytest.raises(NotFound):
        submit(centre, "HKU", 999)


def test_a_queued_job_is_cancelled_at_once_and_only_once(centre: Centre) -> None:
    allocation_id = award(centre, "HKU")
    job = submit(centre, "HKU", allocation_id)
    cancelled = jobs.cancel_job(centre.uow(), centre.applicants["HKU"], job.id)
    assert cancelled.state == "cancelled"
    with pytest.raises(Conflict, match="already ended"):
        jobs.cancel_job(centre.uow(), centre.applicants["HKU"], job.id)


def test_another_organisation_cannot_see_or_cancel_a_job(centre: Centre) -> None:
    allocation_id = award(centre, "HKU")
    job = submit(centre, "HKU", allocation_id)
    outsider = add_org(centre, "CUHK")
    with pytest.raises(PermissionDenied):
        jobs.cancel_job(centre.uow(), outsider, job.id)
    assert jobs.list_jobs(centre.uow(), outsider) == []
    assert [j.id for j in jobs.list_jobs(centre.uow(), centre.funder)] == [job.id]


# -- metering ---------------------------------------------------------------------------------


def test_a_finished_job_is_charged_per_second_and_split(centre: Centre) -> None:
    allocation_id = award(centre, "HKU")
    job = submit(centre, "HKU", allocation_id, gpus=2, time_limit_s=3600)
    charge = run(centre, job.id, utcnow(), 1001)
    # one GPU-second costs one cent at HK$36 per GPU-hour
    assert (charge.gpu_seconds, charge.charge_cents) == (2002, 2002)
    assert (charge.subsidy_cents, charge.copay_cents) == (1401, 601)
    b = balance(centre, allocation_id)
    assert b.used_gpu_seconds == 2002
    assert b.reserved_gpu_seconds == 0
    assert b.available_gpu_seconds == 100 * 3600 - 2002
    assert b.subsidy_spent_cents == 1401


def test_a_job_is_never_billed_beyond_its_time_limit(centre: Centre) -> None:
    allocation_id = award(centre, "HKU")
    job = submit(centre, "HKU", allocation_id, gpus=1, time_limit_s=600)
    charge = run(centre, job.id, utcnow(), 5000)
    assert charge.gpu_seconds == 600


def test_settling_a_job_twice_charges_it_once(centre: Centre) -> None:
    allocation_id = award(centre, "HKU")
    job = submit(centre, "HKU", allocation_id)
    start = utcnow()
    run(centre, job.id, start, 100)
    before = snapshot(centre)
    with centre.uow() as uow:
        uow.ledger.lock()
        row = uow.session.get(Job, job.id)
        again = settle_job(uow, row, uow.session.get(Allocation, allocation_id), start)
        uow.commit()
    assert again is None
    assert snapshot(centre) == before


def test_a_job_spanning_a_price_change_pays_each_price_for_its_own_seconds(
    centre: Centre,
) -> None:
    change = utcnow().replace(microsecond=0) + timedelta(hours=1)
    rates.set_rate(centre.uow(), centre.operator, "H800", 2 * PRICE_CENTS, change)
    allocation_id = award(centre, "HKU")
    job = submit(centre, "HKU", allocation_id, gpus=2, time_limit_s=3600)
    charge = run(centre, job.id, change - timedelta(seconds=600), 1200)
    assert charge.price_detail == [
        {"gpu_seconds": 1200, "cents_per_gpu_hour": PRICE_CENTS},
        {"gpu_seconds": 1200, "cents_per_gpu_hour": 2 * PRICE_CENTS},
    ]
    assert charge.charge_cents == 1200 + 2400
    assert charge.subsidy_cents + charge.copay_cents == charge.charge_cents
    assert charge.subsidy_cents == 3600 * 7000 // 10_000


def test_a_reservation_holds_the_worst_case_at_the_prices_ahead(centre: Centre) -> None:
    change = utcnow().replace(microsecond=0) + timedelta(hours=1)
    rates.set_rate(centre.uow(), centre.operator, "H800", 2 * PRICE_CENTS, change)
    allocation_id = award(centre, "HKU")
    job = submit(centre, "HKU", allocation_id, gpus=2, time_limit_s=3600)
    with centre.uow() as uow:
        uow.ledger.lock()
        row = uow.session.get(Job, job.id)
        allocation = uow.session.get(Allocation, allocation_id)
        hold = reserve_job(uow, row, allocation, change - timedelta(seconds=600))
        uow.commit()
    # 2 GPUs: 600 s at 1 cent, then 3000 s at 2 cents, per GPU-second
    assert hold.gpu_seconds == 7200
    assert hold.subsidy_cents == (1200 + 12000) * 7000 // 10_000
    assert balance(centre, allocation_id).subsidy_reserved_cents == hold.subsidy_cents


# -- invoices ---------------------------------------------------------------------------------


def test_a_monthly_invoice_lists_each_job_and_totals_them(centre: Centre) -> None:
    hku = award(centre, "HKU")
    cuhk = award(centre, "CUHK")
    start = start_within_a_month()
    first = run(centre, submit(centre, "HKU", hku, gpus=1).id, start, 1001)
    second = run(centre, submit(centre, "HKU", hku, gpus=4).id, start, 250)
    run(centre, submit(centre, "CUHK", cuhk).id, start, 3000)
    month = month_of(first.settled_at)
    invoice = invoices.monthly_invoice(
        centre.uow(), centre.applicants["HKU"], centre.orgs["HKU"], month
    )
    assert invoice.org_name == "HKU"
    assert invoice.number == f"AISC-{month.replace('-', '')}-{centre.orgs['HKU']:05d}"
    # in the order they were settled
    assert [line.job_id for line in invoice.lines] == [second.job_id, first.job_id]
    assert invoice.gpu_seconds == 1001 + 1000
    assert invoice.charge_cents == 2001
    assert invoice.subsidy_cents == 700 + 700
    assert invoice.copay_cents == 301 + 300
    assert all(line.charge_cents == line.subsidy_cents + line.copay_cents for line in invoice.lines)


def test_an_invoice_csv_has_a_row_per_job_and_a_total(centre: Centre) -> None:
    hku = award(centre, "HKU")
    charge = run(centre, submit(centre, "HKU", hku, gpus=2).id, start_within_a_month(), 1800)
    invoice = invoices.monthly_invoice(
        centre.uow(), centre.operator, centre.orgs["HKU"], month_of(charge.settled_at)
    )
    rows = list(csv.DictReader(io.StringIO(invoices.invoice_csv(invoice))))
    assert len(rows) == 2
    line, total = rows
    assert line["job_id"] == str(charge.job_id)
    assert line["gpus"] == "2"
    assert line["gpu_hours"] == "1.0000"
    assert line["subsidy_rate"] == "0.70"
    assert (line["charge_hkd"], line["subsidy_hkd"], line["copay_hkd"]) == (
        "36.00",
        "25.20",
        "10.80",
    )
    assert total["job_id"] == "TOTAL"
    assert (total["charge_hkd"], total["copay_hkd"]) == ("36.00", "10.80")


def test_an_invoice_for_a_month_without_jobs_is_empty(centre: Centre) -> None:
    add_org(centre, "HKU")
    invoice = invoices.monthly_invoice(centre.uow(), centre.operator, centre.orgs["HKU"], "2001-01")
    assert invoice.lines == []
    assert invoice.copay_cents == 0
    assert invoices.invoice_csv(invoice).count("\n") == 2


@pytest.mark.parametrize("month", ["2026-13", "2026-00", "2026-1", "26-01", "2026/01", ""])
def test_an_invoice_month_must_look_like_year_dash_month(centre: Centre, month: str) -> None:
    add_org(centre, "HKU")
    with pytest.raises(ValidationError, match="month must look like"):
        invoices.monthly_invoice(centre.uow(), centre.operator, centre.orgs["HKU"], month)


def test_december_invoices_end_at_the_new_year() -> None:
    assert invoices.month_bounds("2026-12") == (date(2026, 12, 1), date(2027, 1, 1))


def test_an_organisation_cannot_read_another_organisations_invoice(centre: Centre) -> None:
    add_org(centre, "HKU")
    outsider = add_org(centre, "CUHK")
    with pytest.raises(PermissionDenied):
        invoices.monthly_invoice(centre.uow(), outsider, centre.orgs["HKU"], "2026-01")


def test_an_invoice_for_an_unknown_organisation_is_not_found(centre: Centre) -> None:
    with pytest.raises(NotFound):
        invoices.monthly_invoice(centre.uow(), centre.operator, 999, "2026-01")


# -- audit ------------------------------------------------------------------------------------


def busy(centre: Centre) -> None:
    """Awards, a refused award, jobs run and settled, one released, one allocation closed."""
    hku = award(centre, "HKU")
    cuhk = award(centre, "CUHK", rate_bp=9000, reason="exceptional")
    start = utcnow()
    run(centre, submit(centre, "HKU", hku, gpus=2).id, start, 1234)
    run(centre, submit(centre, "CUHK", cuhk, gpus=8).id, start, 99)
    allocations.close_allocation(centre.uow(), centre.operator, cuhk)


def export(centre: Centre) -> list[str]:
    return list(audit.export_lines(centre.uow(), centre.funder))


def test_the_ledger_verifies_after_activity(centre: Centre) -> None:
    busy(centre)
    report = audit.verify_ledger(centre.uow(), centre.funder)
    assert report.ok, report.problems
    with centre.uow() as uow:
        assert report.transactions == uow.ledger.head()[0] >= 6
    assert report.funds[centre.scheme_id].adds_up


def test_an_applicant_cannot_verify_or_export_the_ledger(centre: Centre) -> None:
    applicant = add_org(centre, "HKU")
    with pytest.raises(PermissionDenied):
        audit.verify_ledger(centre.uow(), applicant)
    with pytest.raises(PermissionDenied):
        list(audit.export_lines(centre.uow(), applicant))


def test_an_export_verifies_offline(centre: Centre) -> None:
    busy(centre)
    lines = export(centre)
    report = audit.verify_export(io.StringIO("".join(lines)))
    assert report.ok, report.problems
    assert report.transactions == len(lines) - 2
    with centre.uow() as uow:
        assert report.head_hash == uow.ledger.head()[1]


def test_an_edited_export_line_is_detected(centre: Centre) -> None:
    busy(centre)
    lines = export(centre)
    assert '"memo": "award committed"' in lines[2]
    lines[2] = lines[2].replace('"memo": "award committed"', '"memo": "award revoked"')
    report = audit.verify_export(io.StringIO("".join(lines)))
    assert not report.ok
    assert report.first_bad_seq == 2


def test_an_export_with_an_amount_changed_is_detected(centre: Centre) -> None:
    busy(centre)
    lines = export(centre)
    settle = next(i for i, line in enumerate(lines) if '"kind": "settle"' in line)
    edited = lines[settle].replace('"charge": 2468', '"charge": 2400')
    assert edited != lines[settle]
    lines[settle] = edited
    report = audit.verify_export(io.StringIO("".join(lines)))
    assert report.first_bad_seq == settle


def test_an_export_missing_a_transaction_is_detected(centre: Centre) -> None:
    busy(centre)
    lines = export(centre)
    del lines[3]
    report = audit.verify_export(io.StringIO("".join(lines)))
    assert report.first_bad_seq == 3


def test_a_truncated_export_is_detected(centre: Centre) -> None:
    busy(centre)
    lines = export(centre)[:-2]
    report = audit.verify_export(io.StringIO("".join(lines)))
    assert not report.ok
    assert any("truncated" in p for p in report.problems)


def test_an_export_that_is_not_a_ledger_is_refused(centre: Centre) -> None:
    with pytest.raises(ValidationError, match="header line is missing"):
        audit.verify_export(io.StringIO('{"end": true}\n'))
    lines = export(centre)
    lines.insert(1, "not json\n")
    with pytest.raises(ValidationError, match="line 2"):
        audit.verify_export(io.StringIO("".join(lines)))


def test_a_ledger_row_edited_in_the_database_is_detected(centre: Centre) -> None:
    busy(centre)
    with centre.uow() as uow:
        uow.session.execute(text("UPDATE ledger_transactions SET memo = 'x' WHERE seq = 3"))
        uow.commit()
    report = audit.verify_ledger(centre.uow(), centre.operator)
    assert not report.ok
    assert report.first_bad_seq == 3


def test_a_ledger_row_deleted_from_the_database_is_detected(centre: Centre) -> None:
    busy(centre)
    with centre.uow() as uow:
        last = uow.ledger.head()[0]
        uow.session.execute(text("DELETE FROM ledger_transactions WHERE seq = :s"), {"s": last})
        uow.commit()
    report = audit.verify_ledger(centre.uow(), centre.operator)
    assert not report.ok
    assert any("head" in p for p in report.problems)


def test_a_stored_balance_edited_in_the_database_is_detected(centre: Centre) -> None:
    busy(centre)
    account = acc.scheme_available(centre.scheme_id)
    with centre.uow() as uow:
        uow.session.execute(
            text("UPDATE ledger_balances SET balance = balance + 1 WHERE account = :a"),
            {"a": account},
        )
        uow.commit()
    report = audit.verify_ledger(centre.uow(), centre.operator)
    assert not report.ok
    assert any(account in p for p in report.problems)


def test_refused_requests_leave_the_ledger_verifiable(uow_factory: UowFactory) -> None:
    centre = build_centre(uow_factory, fund_cents=3_000_00)
    hku = award(centre, "HKU", gpu_hours=100)
    with pytest.raises(InsufficientFunds):
        award(centre, "CUHK", gpu_hours=100)
    with pytest.raises(OverQuota):
        submit(centre, "HKU", hku, gpus=8, time_limit_s=14 * 24 * 3600)
    assert audit.verify_ledger(centre.uow(), centre.funder).ok
    assert fund(centre).available_cents == 3_000_00 - 2_520_00


def test_timestamps_are_stored_in_utc(centre: Centre) -> None:
    allocation_id = award(centre, "HKU")
    job = submit(centre, "HKU", allocation_id)
    assert jobs.get_job(centre.uow(), centre.operator, job.id).submitted_at.tzinfo == UTC


def test_an_export_taken_while_the_centre_keeps_working_still_verifies(
    centre: Centre, engine: Engine
) -> None:
    busy(centre)
    stream = audit.export_lines(centre.uow(), centre.funder)
    lines = [next(stream)]  # the export has read the ledger's head...
    award(centre, "PolyU")  # ...and the centre appends more while it streams
    lines += list(stream)
    report = audit.verify_export(io.StringIO("".join(lines)))
    assert report.ok, report.problems


def test_verifying_while_the_centre_keeps_working_reports_no_false_tampering(
    centre: Centre, engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    busy(centre)
    real_verify = audit.verify

    def verify_after_a_write(*args: object, **kwargs: object) -> object:
        award(centre, "PolyU")  # committed by another unit of work mid-verification
        return real_verify(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(audit, "verify", verify_after_a_write)
    report = audit.verify_ledger(centre.uow(), centre.funder)
    assert report.ok, report.problems
