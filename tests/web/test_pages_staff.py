"""The staff portal: the review committee's, the operators' and the funder's pages, driven through
the real app with a browser's session cookie and CSRF token."""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from html import unescape

import httpx
import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from aisc.api.app import create_app
from aisc.domain.model import Role
from aisc.runtime import Runtime
from aisc.services import accounts, applications, decisions, rates, reviews, schemes, sessions
from aisc.services.context import SYSTEM, Actor
from aisc.store.tables import Allocation, Application, ConflictDeclaration, Review, Scheme
from tests.builders import RUBRIC, Centre, add_org, application_request, award, build_centre

PASSWORD = "a-long-password"

REVIEWER_PAGES = ["/review"]
OPERATOR_PAGES = [
    "/ops",
    "/ops/applications",
    "/ops/cluster",
    "/ops/queue",
    "/ops/queue/table",
    "/ops/schemes",
    "/ops/rates",
]
FUNDER_PAGES = ["/fund", "/fund/ledger"]


# -- fixtures ----------------------------------------------------------------------------------


@dataclass
class Staff:
    centre: Centre
    applicant: Actor
    application_id: int
    same_org_reviewer: Actor


@pytest.fixture
def app(runtime: Runtime) -> Iterator[FastAPI]:
    application = create_app(runtime, run_controller=False)
    with TestClient(application):  # runs the lifespan once for every client below
        yield application


@pytest.fixture
def staff(runtime: Runtime) -> Staff:
    centre = build_centre(runtime.uow)
    applicant = add_org(centre, "Harbour Lab", "university")
    application = applications.submit_application(
        runtime.uow(), applicant, application_request(centre.scheme_id, gpu_hours=120)
    )
    colleague = accounts.create_user(
        runtime.uow(),
        centre.operator,
        "Colleague Reviewer",
        "colleague@harbourlab.test",
        "reviewer",
        centre.orgs["Harbour Lab"],
    )
    return Staff(centre, applicant, application.id, accounts.actor_for(colleague))


SignIn = Callable[[Actor], TestClient]


@pytest.fixture
def sign_in(runtime: Runtime, app: FastAPI) -> SignIn:
    """A browser (its own cookie jar) signed in as the actor."""

    def browser(actor: Actor) -> TestClient:
        sessions.set_password(runtime.uow(), SYSTEM, actor.user_id, PASSWORD)
        email = {u.id: u.email for u in accounts.list_users(runtime.uow(), SYSTEM)}[actor.user_id]
        client = TestClient(app)
        response = client.post("/login", data={"email": email, "password": PASSWORD})
        assert response.status_code == 200, response.text  # followed to the role's home page
        return client

    return browser


def csrf_of(client: TestClient, path: str = "/account") -> str:
    match = re.search(r'name="csrf_token" value="([^"]+)"', client.get(path).text)
    assert match, "no CSRF token on the page"
    return match.group(1)


def post(client: TestClient, path: str, data: dict[str, object]) -> httpx.Response:
    return client.post(path, data={"csrf_token": csrf_of(client), **data}, follow_redirects=False)


def text_of(html: str, name: str) -> list[str]:
    """The text inside every element with data-testid=name (tags stripped)."""
    found = re.findall(
        rf'<(\w+)[^>]*data-testid="{re.escape(name)}"[^>]*>(.*?)</\1>', html, flags=re.S
    )
    return [unescape(re.sub(r"<[^>]+>", "", inner)).strip() for _, inner in found]


def hkd(cents: int) -> str:
    whole, part = divmod(abs(cents), 100)
    return f"{'-' if cents < 0 else ''}HK${whole:,}.{part:02d}"


def good_scores(score: int = 7) -> dict[str, str]:
    return {f"score_{i}": str(score) for i in range(len(RUBRIC))}


def count(runtime: Runtime, table: type[object]) -> int:
    with runtime.uow() as uow:
        return len(list(uow.session.query(table)))


# -- access ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "path", REVIEWER_PAGES + OPERATOR_PAGES + FUNDER_PAGES + ["/review/1", "/ops/applications/1"]
)
def test_pages_redirect_to_sign_in_without_a_session(app: FastAPI, path: str) -> None:
    response = TestClient(app).get(path, follow_redirects=False)
    assert response.status_code == 303
    assert response.headers["location"].startswith("/login?next=")


def test_each_page_renders_for_its_role_and_is_refused_to_others(
    staff: Staff, sign_in: SignIn
) -> None:
    centre = staff.centre
    browsers = {
        Role.REVIEWER: sign_in(centre.reviewers[0]),
        Role.OPERATOR: sign_in(centre.operator),
        Role.FUNDER: sign_in(centre.funder),
        Role.APPLICANT: sign_in(staff.applicant),
    }
    app_id = staff.application_id
    allowed = {
        Role.REVIEWER: [*REVIEWER_PAGES, f"/review/{app_id}"],
        Role.OPERATOR: [*OPERATOR_PAGES, f"/ops/applications/{app_id}", *FUNDER_PAGES],
        Role.FUNDER: FUNDER_PAGES,
    }
    every = {p for pages in allowed.values() for p in pages}
    for role, browser in browsers.items():
        for path in sorted(every):
            response = browser.get(path)
            expected = 200 if path in allowed.get(role, []) else 403
            assert response.status_code == expected, (role, path, response.text[:300])
            assert "<script>" not in response.text  # CSP: no inline scripts


def test_ledger_export_downloads_for_oversight_only(staff: Staff, sign_in: SignIn) -> None:
    funder = sign_in(staff.centre.funder)
    response = funder.get("/fund/ledger/export")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("application/x-ndjson")
    assert 'filename="aisc-ledger.jsonl"' in response.headers["content-disposition"]
    lines = [json.loads(line) for line in response.text.splitlines()]
    assert lines[0]["format"] == "aisc-ledger/1" and lines[-1]["end"] is True
    assert sign_in(staff.centre.reviewers[0]).get("/fund/ledger/export").status_code == 403


def test_a_post_without_the_csrf_token_is_refused_and_changes_nothing(
    runtime: Runtime, staff: Staff, sign_in: SignIn
) -> None:
    reviewer = sign_in(staff.centre.reviewers[0])
    response = reviewer.post(
        f"/review/{staff.application_id}",
        data={**good_scores(), "recommendation": "approve"},
        follow_redirects=False,
    )
    assert response.status_code == 403
    conflict = reviewer.post(
        f"/review/{staff.application_id}/conflict",
        data={"reason": "I co-authored with the lead", "csrf_token": "forged"},
        follow_redirects=False,
    )
    assert conflict.status_code == 403
    operator = sign_in(staff.centre.operator)
    scheme = operator.post("/ops/schemes", data={"name": "Sneaky", "fund_total": "100"})
    assert scheme.status_code == 403
    assert count(runtime, Review) == 0
    assert count(runtime, ConflictDeclaration) == 0
    assert [s.name for s in schemes.list_schemes(runtime.uow())] == ["Test Scheme"]


# -- the review committee ----------------------------------------------------------------------


def test_worklist_orders_open_then_reviewed_then_conflicts(
    runtime: Runtime, staff: Staff, sign_in: SignIn
) -> None:
    centre = staff.centre
    reviewer = centre.reviewers[0]
    second = applications.submit_application(
        runtime.uow(), staff.applicant, application_request(centre.scheme_id, title="Second")
    )
    third = applications.submit_application(
        runtime.uow(), staff.applicant, application_request(centre.scheme_id, title="Third")
    )
    reviews.submit_review(runtime.uow(), reviewer, second.id, dict.fromkeys(RUBRIC, 6), "approve")
    reviews.declare_conflict(runtime.uow(), reviewer, third.id, "my former student")
    html = sign_in(reviewer).get("/review").text
    to_review = html.index('data-testid="to-review"')
    reviewed = html.index('data-testid="reviewed"')
    conflicts = html.index('data-testid="conflicts"')
    assert to_review < html.index(f'data-application="{staff.application_id}"') < reviewed
    assert reviewed < html.index(f'data-application="{second.id}"') < conflicts
    assert conflicts < html.index(f'data-application="{third.id}"')
    assert "Harbour Lab" in html and "my former student" in html
    assert text_of(html, "review-count")[:2] == ["0 of 2", "1 of 2"]


def test_a_reviewer_from_the_applicants_organisation_is_refused(
    runtime: Runtime, staff: Staff, sign_in: SignIn
) -> None:
    colleague = sign_in(staff.same_org_reviewer)
    page = colleague.get(f"/review/{staff.application_id}")
    assert page.status_code == 403
    assert "your own organisation" in page.text
    assert 'data-testid="review-form"' not in page.text
    response = post(
        colleague,
        f"/review/{staff.application_id}",
        {**good_scores(), "recommendation": "approve"},
    )
    assert response.status_code == 403
    assert "your own organisation" in response.text
    invalid = post(colleague, f"/review/{staff.application_id}", {"score_0": "99"})
    assert invalid.status_code == 403
    assert (
        "your own organisation" in invalid.text and 'data-error-for="score_0"' not in invalid.text
    )
    assert count(runtime, Review) == 0
    # and it is listed among their conflicts, not their work
    listing = colleague.get("/review").text
    assert listing.index('data-testid="conflicts"') < listing.index(
        f'data-application="{staff.application_id}"'
    )


def test_review_flow_conflict_validation_and_hidden_scores(
    runtime: Runtime, staff: Staff, sign_in: SignIn
) -> None:
    centre = staff.centre
    app_id = staff.application_id
    first, second, third = (sign_in(r) for r in centre.reviewers)

    # the third reviewer declares a conflict and is then refused the scoring form
    empty = post(third, f"/review/{app_id}/conflict", {"reason": "  "})
    assert empty.status_code == 422
    assert 'data-error-for="reason"' in empty.text
    declared = post(third, f"/review/{app_id}/conflict", {"reason": "I advise their lab"})
    assert declared.status_code == 303
    refused = third.get(f"/review/{app_id}")
    assert refused.status_code == 403
    assert "conflict of interest" in refused.text and "I advise their lab" in refused.text
    assert 'data-testid="review-form"' not in refused.text
    attempt = post(third, f"/review/{app_id}", {**good_scores(), "recommendation": "approve"})
    assert attempt.status_code == 403
    assert 'class="flash error"' in attempt.text

    # the first reviewer sees the form, with each criterion's weight, and no one's scores
    page = first.get(f"/review/{app_id}")
    assert page.status_code == 200
    assert 'data-testid="review-form"' in page.text
    assert "alignment (weight 25%)" in page.text
    assert 'data-testid="weighted-score"' not in page.text
    assert "Fine-tune a 7B model" in page.text  # the justification, in full

    # a score out of range is shown beside its field, and nothing is recorded
    bad = post(first, f"/review/{app_id}", {**good_scores(), "score_1": "11", "recommendation": ""})
    assert bad.status_code == 422
    assert re.search(r'data-error-for="score_1">[^<]*0 to 10', bad.text)
    assert 'data-error-for="recommendation"' in bad.text
    assert 'value="11"' in bad.text  # what was typed comes back
    assert count(runtime, Review) == 0

    # the second reviewer submits first; the first still must not see that score
    done = post(
        second,
        f"/review/{app_id}",
        {**good_scores(9), "recommendation": "approve", "comment": "excellent team"},
    )
    assert done.status_code == 303
    before = first.get(f"/review/{app_id}").text
    assert 'data-testid="weighted-score"' not in before
    assert "90.0" not in before and "excellent team" not in before
    assert reviews.reviews_visible_to(runtime.uow(), centre.reviewers[0], app_id) == []

    # once the first reviewer has scored, every review's weighted score is shown
    good = post(first, f"/review/{app_id}", {**good_scores(6), "recommendation": "revise"})
    assert good.status_code == 303
    after = first.get(good.headers["location"])
    assert after.status_code == 200
    assert sorted(text_of(after.text, "weighted-score")) == ["60.0", "90.0"]
    assert "excellent team" in after.text
    assert 'data-testid="review-form"' not in after.text
    stored = reviews.list_reviews(runtime.uow(), centre.operator, app_id)
    assert [(r.reviewer_id, r.weighted_score) for r in stored] == [
        (centre.reviewers[1].user_id, 90.0),
        (centre.reviewers[0].user_id, 60.0),
    ]
    # a second review by the same reviewer is refused
    again = post(first, f"/review/{app_id}", {**good_scores(), "recommendation": "approve"})
    assert again.status_code == 409
    assert count(runtime, Review) == 2


def test_reviews_visible_to(runtime: Runtime, staff: Staff) -> None:
    centre = staff.centre
    app_id = staff.application_id
    first, second = centre.reviewers[:2]
    reviews.submit_review(runtime.uow(), first, app_id, dict.fromkeys(RUBRIC, 5), "approve")
    assert reviews.reviews_visible_to(runtime.uow(), second, app_id) == []
    assert len(reviews.reviews_visible_to(runtime.uow(), first, app_id)) == 1
    assert len(reviews.reviews_visible_to(runtime.uow(), centre.operator, app_id)) == 1
    assert len(reviews.reviews_visible_to(runtime.uow(), centre.funder, app_id)) == 1
    reviews.submit_review(runtime.uow(), second, app_id, dict.fromkeys(RUBRIC, 8), "approve")
    assert len(reviews.reviews_visible_to(runtime.uow(), second, app_id)) == 2
    with pytest.raises(Exception, match="role"):
        reviews.reviews_visible_to(runtime.uow(), staff.applicant, app_id)


# -- operators ---------------------------------------------------------------------------------


def approval_form(runtime: Runtime, app_id: int, **overrides: str) -> dict[str, object]:
    application = applications.get_application(runtime.uow(), SYSTEM, app_id)
    return {
        "gpu_hours": str(application.gpu_hours),
        "starts_on": application.starts_on.isoformat(),
        "ends_on": application.ends_on.isoformat(),
        "subsidy_rate": "70",
        "rate_reason": "",
        "conditions": "Acknowledge the centre in publications.",
        **overrides,
    }


def test_operator_approves_only_with_enough_reviews(
    runtime: Runtime, staff: Staff, sign_in: SignIn
) -> None:
    centre = staff.centre
    app_id = staff.application_id
    operator = sign_in(centre.operator)
    fund_before = schemes.fund_positions(runtime.uow(), centre.operator)

    page = operator.get(f"/ops/applications/{app_id}")
    assert page.status_code == 200
    assert 'data-testid="decision-form"' in page.text
    assert 'value="120"' in page.text and 'value="70"' in page.text  # request and default rate

    reviews.submit_review(
        runtime.uow(), centre.reviewers[0], app_id, dict.fromkeys(RUBRIC, 8), "approve", "solid"
    )
    short = post(operator, f"/ops/applications/{app_id}/approve", approval_form(runtime, app_id))
    assert short.status_code == 409
    assert "1 of the 2 reviews" in text_of(short.text, "decision-error")[0]
    assert count(runtime, Allocation) == 0
    assert schemes.fund_positions(runtime.uow(), centre.operator) == fund_before

    # a rate above the scheme's maximum is refused too
    reviews.submit_review(
        runtime.uow(), centre.reviewers[1], app_id, dict.fromkeys(RUBRIC, 6), "approve"
    )
    too_high = post(
        operator,
        f"/ops/applications/{app_id}/approve",
        approval_form(runtime, app_id, subsidy_rate="95", rate_reason="strategic"),
    )
    assert too_high.status_code == 422
    assert "maximum" in too_high.text
    bad_field = post(
        operator,
        f"/ops/applications/{app_id}/approve",
        approval_form(runtime, app_id, gpu_hours="lots"),
    )
    assert bad_field.status_code == 422
    assert 'data-error-for="gpu_hours"' in bad_field.text
    assert count(runtime, Allocation) == 0

    # the list shows both reviewers' weighted scores side by side, and their mean
    listing = operator.get("/ops/applications").text
    assert "80.0" in listing and "60.0" in listing
    assert text_of(listing, "mean-score") == ["70.0"]
    assert text_of(listing, "review-count") == ["2 of 2"]

    ok = post(
        operator,
        f"/ops/applications/{app_id}/approve",
        approval_form(runtime, app_id, gpu_hours="100", subsidy_rate="80", rate_reason="public"),
    )
    assert ok.status_code == 303
    done = operator.get(ok.headers["location"])
    assert "approved" in text_of(done.text, "decision")[0]
    assert 'data-testid="decision-form"' not in done.text
    with runtime.uow() as uow:
        allocation = uow.session.query(Allocation).one()
        assert (allocation.application_id, allocation.gpu_hours, allocation.rate_bp) == (
            app_id,
            100,
            8000,
        )
        assert uow.session.get(Application, app_id).status == "approved"  # type: ignore[union-attr]
    after = {p.scheme_id: p for p in schemes.fund_positions(runtime.uow(), centre.operator)}
    assert after[centre.scheme_id].committed_cents == allocation.commitment_cents


def test_operator_rejects_with_reasons(runtime: Runtime, staff: Staff, sign_in: SignIn) -> None:
    operator = sign_in(staff.centre.operator)
    app_id = staff.application_id
    empty = post(operator, f"/ops/applications/{app_id}/reject", {"reasons": ""})
    assert empty.status_code == 422
    assert 'data-error-for="reasons"' in empty.text
    done = post(operator, f"/ops/applications/{app_id}/reject", {"reasons": "Out of scope."})
    assert done.status_code == 303
    decided = decisions.get_decision(runtime.uow(), staff.centre.operator, app_id)
    assert decided is not None and decided[0].outcome == "rejected"
    listing = operator.get("/ops/applications").text
    assert listing.index('data-testid="decided"') < listing.index(f'data-application="{app_id}"')


def test_operator_overview_cluster_and_queue(
    runtime: Runtime, staff: Staff, sign_in: SignIn
) -> None:
    operator = sign_in(staff.centre.operator)
    overview = operator.get("/ops").text
    assert text_of(overview, "gpus-busy") == ["0 of 16"]
    assert text_of(overview, "awaiting") == ["1"]
    assert "Test Scheme" in overview and "data-chart=" in overview
    cluster = operator.get("/ops/cluster").text
    assert 'data-node="node1"' in cluster and 'data-node="node2"' in cluster
    queue = operator.get("/ops/queue").text
    assert 'hx-get="/ops/queue/table"' in queue and 'hx-trigger="every 3s"' in queue
    assert "The queue is empty" in operator.get("/ops/queue/table").text


def test_queue_shows_positions_and_the_schedulers_reason(
    runtime: Runtime, staff: Staff, sign_in: SignIn
) -> None:
    from aisc.services import jobs

    centre = staff.centre
    allocation_id = award(centre, "Kowloon AI", gpu_hours=500)
    user = centre.applicants["Kowloon AI"]
    job = jobs.submit_job(
        runtime.uow(),
        user,
        jobs.JobRequest(allocation_id=allocation_id, argv=["true"], gpus=2, time_limit_s=600),
    )
    table = sign_in(centre.operator).get("/ops/queue/table").text
    row = re.search(rf'<tr data-job="{job.id}".*?</tr>', table, flags=re.S)
    assert row, table
    cells = re.findall(r"<td[^>]*>(.*?)</td>", row.group(0), flags=re.S)
    assert cells[0].strip() == "1"  # first in line
    assert "Cantonese speech model" in cells[3]
    assert text_of(row.group(0), "reason")[0]  # the scheduler says why it waits


def test_scheme_creation_validation_and_success(
    runtime: Runtime, staff: Staff, sign_in: SignIn
) -> None:
    operator = sign_in(staff.centre.operator)
    today = date.today()
    form = {
        "name": "Startup Boost",
        "fund_total": "2,500,000",
        "starts_on": today.isoformat(),
        "ends_on": (today + timedelta(days=365)).isoformat(),
        "default_rate": "60",
        "max_rate": "80",
        "eligible_categories": ["startup", "enterprise"],
        "rubric": "merit=50\nimpact=40",
        "min_reviews": "3",
    }
    bad = post(operator, "/ops/schemes", form)
    assert bad.status_code == 422
    assert re.search(r'data-error-for="rubric">[^<]*sum to 100', bad.text)
    bad_money = post(operator, "/ops/schemes", {**form, "fund_total": "a lot"})
    assert 'data-error-for="fund_total"' in bad_money.text
    assert len(schemes.list_schemes(runtime.uow())) == 1

    ok = post(operator, "/ops/schemes", {**form, "rubric": "merit=50\nimpact=50"})
    assert ok.status_code == 303
    created = [s for s in schemes.list_schemes(runtime.uow()) if s.name == "Startup Boost"]
    assert len(created) == 1
    scheme: Scheme = created[0]
    assert (scheme.fund_total_cents, scheme.default_rate_bp, scheme.max_rate_bp) == (
        250_000_000,
        6000,
        8000,
    )
    assert scheme.eligible_categories == ["enterprise", "startup"]
    assert scheme.rubric == {"merit": 50, "impact": 50} and scheme.min_reviews == 3
    listing = operator.get(ok.headers["location"]).text
    assert "Startup Boost" in listing and "HK$2,500,000.00" in listing

    duplicate = post(operator, "/ops/schemes", {**form, "rubric": "merit=100"})
    assert duplicate.status_code == 422
    assert re.search(r'data-error-for="name">[^<]*exists already', duplicate.text)


def test_rate_card_validation_and_success(runtime: Runtime, staff: Staff, sign_in: SignIn) -> None:
    operator = sign_in(staff.centre.operator)
    past = post(
        operator,
        "/ops/rates",
        {"gpu_model": "H200", "price": "48.50", "effective_from": "2001-01-01T00:00"},
    )
    assert past.status_code == 422
    assert re.search(r'data-error-for="effective_from">[^<]*past', past.text)
    free = post(operator, "/ops/rates", {"gpu_model": "H200", "price": "0"})
    assert 'data-error-for="price"' in free.text
    assert [r.gpu_model for r in rates.list_rates(runtime.uow())] == ["H800"]

    later = (datetime.now(UTC) + timedelta(days=30)).strftime("%Y-%m-%dT%H:%M")
    ok = post(
        operator, "/ops/rates", {"gpu_model": "h200", "price": "48.50", "effective_from": later}
    )
    assert ok.status_code == 303
    added = [r for r in rates.list_rates(runtime.uow()) if r.gpu_model == "H200"]
    assert [(r.cents_per_gpu_hour, r.effective_from.strftime("%Y-%m-%dT%H:%M")) for r in added] == [
        (4850, later)
    ]
    page = operator.get("/ops/rates").text
    assert "HK$48.50" in page and "scheduled" in page and "in force" in page


# -- the funder --------------------------------------------------------------------------------


def test_fund_page_matches_the_ledger(runtime: Runtime, staff: Staff, sign_in: SignIn) -> None:
    centre = staff.centre
    award(centre, "Kowloon AI", gpu_hours=300)
    html = sign_in(centre.funder).get("/fund").text
    (position,) = schemes.fund_positions(runtime.uow(), centre.funder)
    assert position.committed_cents > 0
    assert text_of(html, "fund-committed") == [hkd(position.committed_cents)]
    assert text_of(html, "fund-spent") == [hkd(position.spent_cents)]
    assert text_of(html, "fund-available") == [hkd(position.available_cents)]
    assert text_of(html, "fund-total") == [hkd(position.total_cents)]
    assert text_of(html, "ledger-status") == ["OK"]
    assert text_of(html, "kpi-applications") == ["2"] and text_of(html, "kpi-approved") == ["1"]
    charts = re.findall(r'data-chart="([^"]+)"', html)
    burn = json.loads(unescape(charts[0]))
    assert burn["data"]["datasets"][0]["data"][-1] == position.committed_cents

    ledger = sign_in(centre.funder).get("/fund/ledger").text
    assert text_of(ledger, "ledger-status") == ["OK"]
    assert 'href="/fund/ledger/export"' in ledger


def test_operators_see_the_fund_pages_too(staff: Staff, sign_in: SignIn) -> None:
    operator = sign_in(staff.centre.operator)
    assert operator.get("/fund").status_code == 200
    assert operator.get("/fund/ledger/export").status_code == 200
