"""The operators' onboarding pages through HTTP: organisations and users at /ops/people,
allocations at /ops/allocations."""

from __future__ import annotations

import re
from collections.abc import Callable
from html import unescape

import pytest
from sqlalchemy import func, select

from aisc.domain.model import JobState, Role
from aisc.runtime import Runtime
from aisc.services import accounts, allocations, jobs, schemes
from aisc.services.context import Actor
from aisc.services.jobs import JobRequest
from aisc.services.metering import reserve_job
from aisc.store.tables import Allocation, Job, Organisation, User, WebSession
from tests.builders import Centre, award
from tests.web.conftest import Portal

Emails = Callable[[Actor], str]
Portals = Callable[[], Portal]

PAGES = ["/ops/people", "/ops/allocations"]
NEW_PASSWORD = "a brand new passphrase"


def count(runtime: Runtime, table: type) -> int:
    with runtime.uow() as uow:
        return uow.session.scalar(select(func.count()).select_from(table)) or 0


def error_for(html: str, name: str) -> str:
    found = re.search(rf'data-error-for="{re.escape(name)}">([^<]*)<', html)
    assert found, f"no error shown beside {name}"
    return unescape(found.group(1))


def user_by_email(runtime: Runtime, email: str) -> User | None:
    with runtime.uow() as uow:
        return uow.session.scalar(select(User).where(User.email == email))


def operator_portal(centre: Centre, email_of: Emails, portal: Portals) -> Portal:
    p = portal()
    p.sign_in(email_of(centre.operator))
    p.get("/ops/people")  # the CSRF token for the forms
    return p


# -- access ------------------------------------------------------------------------------------


@pytest.mark.parametrize("path", PAGES)
def test_pages_redirect_to_sign_in_without_a_session(portal: Portals, path: str) -> None:
    response = portal().client.get(path, follow_redirects=False)
    assert response.status_code == 303
    assert response.headers["location"] == f"/login?next={path}"


def test_pages_are_for_operators_only(centre: Centre, email_of: Emails, portal: Portals) -> None:
    award(centre, "Harbour U")
    signed_in = {
        Role.OPERATOR: centre.operator,
        Role.FUNDER: centre.funder,
        Role.REVIEWER: centre.reviewers[0],
        Role.APPLICANT: centre.applicants["Harbour U"],
    }
    for role, actor in signed_in.items():
        p = portal()
        p.sign_in(email_of(actor))
        for path in PAGES:
            response = p.get(path)
            assert response.status_code == (200 if role == Role.OPERATOR else 403), (role, path)
            assert "<script>" not in response.text and "style=" not in response.text
        refused = p.post("/ops/people/organisations", {"org_name": "X", "category": "startup"})
        assert refused.status_code == (303 if role == Role.OPERATOR else 403)


def test_the_pages_list_organisations_users_and_allocations(
    centre: Centre, email_of: Emails, portal: Portals
) -> None:
    allocation_id = award(centre, "Harbour U", gpu_hours=50)
    p = operator_portal(centre, email_of, portal)
    people = p.get("/ops/people").text
    assert "Harbour U" in people and "lead@harbouru.test" in people
    assert 'data-org="' in people and 'data-user="' in people
    allocs = p.get("/ops/allocations").text
    row = allocs[allocs.index(f'data-allocation="{allocation_id}"') :]
    assert "Harbour U" in row and "H800" in row and "50.0" in row
    assert f'action="/ops/allocations/{allocation_id}/close"' in row


# -- organisations and users -------------------------------------------------------------------


def test_an_operator_onboards_an_organisation_and_an_applicant_who_can_sign_in(
    runtime: Runtime, centre: Centre, email_of: Emails, portal: Portals
) -> None:
    p = operator_portal(centre, email_of, portal)
    created = p.post(
        "/ops/people/organisations",
        {"org_name": "Kowloon AI Ltd", "category": "startup", "sector": "finance"},
    )
    assert created.status_code == 303
    page = p.get(created.headers["location"]).text
    assert "Organisation Kowloon AI Ltd was created" in page
    org = next(
        o
        for o in accounts.list_organisations(runtime.uow(), centre.operator)
        if o.name == "Kowloon AI Ltd"
    )
    assert (org.category, org.sector) == ("startup", "finance")

    made = p.post(
        "/ops/people/users",
        {
            "name": "Kit Chan",
            "email": "Kit@Kowloon.test",
            "role": "applicant",
            "org_id": str(org.id),
            "slurm_user": "kchan",
            "password": NEW_PASSWORD,
        },
    )
    assert made.status_code == 303, made.text
    page = p.get(made.headers["location"]).text
    assert "Kit Chan (kit@kowloon.test) was created" in page
    user = user_by_email(runtime, "kit@kowloon.test")
    assert user is not None and user.org_id == org.id and user.slurm_user == "kchan"
    assert user.password_hash is not None and user.active

    newcomer = portal()
    newcomer.sign_in("kit@kowloon.test", NEW_PASSWORD)
    landing = newcomer.get("/org")
    assert landing.status_code == 200 and "Kowloon AI Ltd" in landing.text
    signed = newcomer.client.post(
        "/login",
        data={"email": "kit@kowloon.test", "password": NEW_PASSWORD},
        follow_redirects=False,
    )
    assert signed.headers["location"] == "/org"


def test_bad_fields_are_shown_beside_them_and_create_nobody(
    runtime: Runtime, centre: Centre, email_of: Emails, portal: Portals
) -> None:
    p = operator_portal(centre, email_of, portal)
    users, orgs = count(runtime, User), count(runtime, Organisation)
    good = {
        "name": "Kit Chan",
        "email": "kit@kowloon.test",
        "role": "applicant",
        "org_id": str(centre.orgs["Harbour U"]),
        "password": NEW_PASSWORD,
    }

    weak = p.post("/ops/people/users", {**good, "password": "short"})
    assert weak.status_code == 422
    assert "at least 10 characters" in error_for(weak.text, "password")
    assert "Kit Chan" in weak.text and "short" not in re.findall(r'value="([^"]*)"', weak.text)

    bad_email = p.post("/ops/people/users", {**good, "email": "not-an-email"})
    assert bad_email.status_code == 422
    assert "is not an email address" in error_for(bad_email.text, "email")

    no_org = p.post("/ops/people/users", {**good, "org_id": ""})
    assert no_org.status_code == 422
    assert "must belong to an organisation" in error_for(no_org.text, "org_id")

    bad_slurm = p.post("/ops/people/users", {**good, "slurm_user": "Not A Login"})
    assert bad_slurm.status_code == 422
    assert "not a Unix user name" in error_for(bad_slurm.text, "slurm_user")

    no_name = p.post("/ops/people/organisations", {"org_name": "", "category": "startup"})
    assert no_name.status_code == 422
    assert "needs a name" in error_for(no_name.text, "org_name")
    bad_category = p.post("/ops/people/organisations", {"org_name": "X", "category": "club"})
    assert bad_category.status_code == 422
    assert error_for(bad_category.text, "category")

    assert (count(runtime, User), count(runtime, Organisation)) == (users, orgs)
    assert user_by_email(runtime, "kit@kowloon.test") is None


def test_duplicates_are_refused_as_conflicts(
    runtime: Runtime, centre: Centre, email_of: Emails, portal: Portals
) -> None:
    p = operator_portal(centre, email_of, portal)
    users = count(runtime, User)
    taken = p.post(
        "/ops/people/users",
        {
            "name": "Another Lead",
            "email": "LEAD@harbouru.test",
            "role": "reviewer",
            "password": NEW_PASSWORD,
        },
    )
    assert taken.status_code == 409
    assert "exists already" in error_for(taken.text, "email")
    assert count(runtime, User) == users

    org = p.post("/ops/people/organisations", {"org_name": "Harbour U", "category": "university"})
    assert org.status_code == 409
    assert "exists already" in error_for(org.text, "org_name")


def test_a_staff_user_without_a_password_can_be_given_one_later(
    runtime: Runtime, centre: Centre, email_of: Emails, portal: Portals
) -> None:
    p = operator_portal(centre, email_of, portal)
    made = p.post(
        "/ops/people/users",
        {"name": "Rae Reviewer", "email": "rae@panel.test", "role": "reviewer"},
    )
    assert made.status_code == 303
    assert "without a portal password" in p.get(made.headers["location"]).text
    user = user_by_email(runtime, "rae@panel.test")
    assert user is not None and user.password_hash is None and user.org_id is None
    assert p.post(f"/ops/people/users/{user.id}/password", {"password": NEW_PASSWORD}).is_redirect
    rae = portal()
    rae.sign_in("rae@panel.test", NEW_PASSWORD)
    assert rae.get("/review").status_code == 200


def test_resetting_a_password_ends_the_users_sessions(
    runtime: Runtime, centre: Centre, email_of: Emails, portal: Portals
) -> None:
    applicant = centre.applicants["Harbour U"]
    email = email_of(applicant)
    old = portal()
    old.sign_in(email)
    assert old.get("/org").status_code == 200
    p = operator_portal(centre, email_of, portal)

    weak = p.post(f"/ops/people/users/{applicant.user_id}/password", {"password": "short"})
    assert weak.status_code == 422
    assert "at least 10 characters" in error_for(weak.text, f"user-{applicant.user_id}")
    assert old.get("/org").status_code == 200  # nothing changed

    reset = p.post(f"/ops/people/users/{applicant.user_id}/password", {"password": NEW_PASSWORD})
    assert reset.status_code == 303
    assert "has a new password" in p.get(reset.headers["location"]).text
    gone = old.client.get("/org", follow_redirects=False)
    assert gone.status_code == 303 and gone.headers["location"].startswith("/login")
    fresh = portal()
    fresh.sign_in(email, NEW_PASSWORD)
    assert fresh.get("/org").status_code == 200


def test_deactivating_a_user_ends_their_sessions_and_tokens_until_reactivated(
    runtime: Runtime, centre: Centre, email_of: Emails, portal: Portals
) -> None:
    applicant = centre.applicants["Harbour U"]
    email = email_of(applicant)
    token = accounts.issue_token(runtime.uow(), centre.operator, applicant.user_id, "laptop")
    bearer = {"Authorization": f"Bearer {token}"}
    browser = portal()
    browser.sign_in(email)
    assert browser.client.get("/api/v1/me", headers=bearer).status_code == 200
    p = operator_portal(centre, email_of, portal)

    off = p.post(f"/ops/people/users/{applicant.user_id}/active", {"active": "false"})
    assert off.status_code == 303
    assert "was deactivated" in p.get(off.headers["location"]).text
    gone = browser.client.get("/org", follow_redirects=False)
    assert gone.status_code == 303 and gone.headers["location"].startswith("/login")
    assert browser.client.get("/api/v1/me", headers=bearer).status_code == 401
    refused = portal().client.post(
        "/login", data={"email": email, "password": "correct horse battery"}
    )
    assert refused.status_code == 401
    with runtime.uow() as uow:
        open_sessions = uow.session.scalar(
            select(func.count())
            .select_from(WebSession)
            .where(WebSession.user_id == applicant.user_id, WebSession.revoked_at.is_(None))
        )
    assert open_sessions == 0

    on = p.post(f"/ops/people/users/{applicant.user_id}/active", {"active": "true"})
    assert on.status_code == 303
    assert "was reactivated" in p.get(on.headers["location"]).text
    assert browser.client.get("/org", follow_redirects=False).status_code == 303  # stays ended
    again = portal()
    again.sign_in(email)
    assert again.get("/org").status_code == 200
    assert again.client.get("/api/v1/me", headers=bearer).status_code == 200


def test_an_operator_cannot_deactivate_themselves(
    runtime: Runtime, centre: Centre, email_of: Emails, portal: Portals
) -> None:
    p = operator_portal(centre, email_of, portal)
    me = centre.operator.user_id
    refused = p.post(f"/ops/people/users/{me}/active", {"active": "false"})
    assert refused.status_code == 422
    assert "cannot deactivate your own account" in refused.text
    assert p.get("/ops/people").status_code == 200  # still signed in
    user = user_by_email(runtime, "ops@centre.test")
    assert user is not None and user.active


def test_posts_without_the_csrf_token_change_nothing(
    runtime: Runtime, centre: Centre, email_of: Emails, portal: Portals
) -> None:
    allocation_id = award(centre, "Harbour U")
    applicant = centre.applicants["Harbour U"]
    p = operator_portal(centre, email_of, portal)
    users, orgs = count(runtime, User), count(runtime, Organisation)
    attempts = [
        ("/ops/people/organisations", {"org_name": "Sneaky Ltd", "category": "startup"}),
        (
            "/ops/people/users",
            {"name": "Sneak", "email": "sneak@x.test", "role": "operator", "password": "x" * 12},
        ),
        (f"/ops/people/users/{applicant.user_id}/password", {"password": "x" * 12}),
        (f"/ops/people/users/{applicant.user_id}/active", {"active": "false"}),
        (f"/ops/allocations/{allocation_id}/close", {}),
    ]
    for path, data in attempts:
        assert p.post(path, data, csrf=False).status_code == 403, path
        assert p.post(path, {**data, "csrf_token": "forged"}).status_code == 403, path
    assert (count(runtime, User), count(runtime, Organisation)) == (users, orgs)
    user = user_by_email(runtime, "lead@harbouru.test")
    assert user is not None and user.active and user.password_hash is None
    assert allocations.get_allocation(runtime.uow(), centre.operator, allocation_id).status == (
        "active"
    )


# -- allocations -------------------------------------------------------------------------------


def test_closing_an_allocation_returns_its_unspent_subsidy_to_the_fund(
    runtime: Runtime, centre: Centre, email_of: Emails, portal: Portals
) -> None:
    allocation_id = award(centre, "Harbour U", gpu_hours=100)
    before = {f.scheme_id: f for f in schemes.fund_positions(runtime.uow(), centre.operator)}
    balance = allocations.get_allocation(runtime.uow(), centre.operator, allocation_id)
    unspent = balance.subsidy_committed_cents
    assert unspent > 0
    p = operator_portal(centre, email_of, portal)
    p.get("/ops/allocations")

    closed = p.post(f"/ops/allocations/{allocation_id}/close")
    assert closed.status_code == 303
    page = p.get(closed.headers["location"]).text
    whole, part = divmod(unspent, 100)
    assert f"HK${whole:,}.{part:02d} of unspent subsidy returned to the fund" in page
    after = {f.scheme_id: f for f in schemes.fund_positions(runtime.uow(), centre.operator)}
    s = centre.scheme_id
    assert after[s].available_cents == before[s].available_cents + unspent
    assert after[s].committed_cents == before[s].committed_cents - unspent
    assert f'action="/ops/allocations/{allocation_id}/close"' not in page

    again = p.post(f"/ops/allocations/{allocation_id}/close")
    assert again.status_code == 409
    assert "already closed" in again.text
    assert schemes.fund_positions(runtime.uow(), centre.operator)[0] == after[s]
    assert p.post("/ops/allocations/999999/close").status_code == 404


def test_an_allocation_with_running_jobs_is_not_closed(
    runtime: Runtime, centre: Centre, email_of: Emails, portal: Portals
) -> None:
    allocation_id = award(centre, "Harbour U", gpu_hours=100)
    applicant = centre.applicants["Harbour U"]
    job = jobs.submit_job(
        runtime.uow(),
        applicant,
        JobRequest(allocation_id=allocation_id, argv=["true"], gpus=1, time_limit_s=600),
    )
    with runtime.uow() as uow:  # what the controller does as it starts the job
        uow.ledger.lock()
        row = uow.session.get(Job, job.id)
        allocation = uow.session.get(Allocation, allocation_id)
        assert row is not None and allocation is not None
        reserve_job(uow, row, allocation, row.submitted_at)
        row.state, row.node, row.gpu_indices = JobState.RUNNING.value, "node1", [0]
        uow.commit()
    before = schemes.fund_positions(runtime.uow(), centre.operator)
    p = operator_portal(centre, email_of, portal)
    p.get("/ops/allocations")
    refused = p.post(f"/ops/allocations/{allocation_id}/close")
    assert refused.status_code == 422
    assert "running jobs cannot be closed" in refused.text
    assert schemes.fund_positions(runtime.uow(), centre.operator) == before
    with runtime.uow() as uow:
        row = uow.session.get(Allocation, allocation_id)
        assert row is not None and row.status == "active"
