"""The portal's authorisation matrix: every page and form action x every kind of caller.

TABLE below says, for each (method, path) the portal serves, who may use it. Every caller then
makes the real request (with their CSRF token, for a POST) against real resources of
organisation A: an allowed caller gets the page or its redirect; no session, a signed-out
session or a deactivated user's is sent to sign in; a signed-in caller of the wrong role, or
of another organisation, gets a 403 page. A route without an entry, or an entry whose route is
gone, fails test_every_page_has_an_entry. The API has its own matrix in
tests/api/test_authorization_matrix.py.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from dataclasses import dataclass, replace
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy import Engine, select

from aisc.api.app import create_app
from aisc.runtime import Runtime
from aisc.services import accounts, applications, jobs, reviews, sessions
from aisc.services.context import SYSTEM, Actor
from aisc.store.tables import Allocation, ApiToken, ProgressReport, User, WebSession
from tests.builders import RUBRIC, Centre, add_org, application_request, award, build_centre
from tests.conftest import fresh_runtime
from tests.routes import flat_routes, methods_of

ORG_A, ORG_B = "Harbour U", "Kowloon AI"
PASSWORD = "correct horse battery"
CSRF = re.compile(r'name="csrf_token" value="([^"]+)"')

# who calls
ANONYMOUS = "anonymous"  # no session cookie
SIGNED_OUT = "signed_out"  # the cookie of a session that was signed out
INACTIVE = "inactive"  # the cookie of a member of organisation A who was then deactivated
OWNER = "owner"  # organisation A's applicant: A's resources are theirs
OTHER_ORG = "other_org"  # organisation B's applicant
REVIEWER = "reviewer"
OPERATOR = "operator"
FUNDER = "funder"
CALLERS = (ANONYMOUS, SIGNED_OUT, INACTIVE, OWNER, OTHER_ORG, REVIEWER, OPERATOR, FUNDER)
NO_SESSION = frozenset({ANONYMOUS, SIGNED_OUT, INACTIVE})

EVERYONE = frozenset(CALLERS)
SIGNED_IN = EVERYONE - NO_SESSION
APPLICANTS = frozenset({OWNER, OTHER_ORG})
OWNER_ONLY = frozenset({OWNER})
REVIEWERS = frozenset({REVIEWER})
OPERATORS = frozenset({OPERATOR})
OVERSIGHT = frozenset({OPERATOR, FUNDER})

Params = dict[str, Any]
TODAY = date.today()


@dataclass
class Caller:
    client: TestClient
    csrf: str = ""


@dataclass
class World:
    """One centre for the module: organisation A with an award, a job, a progress report."""

    runtime: Runtime
    app: FastAPI
    centre: Centre
    callers: dict[str, Caller]
    emails: dict[str, str]
    application_id: int  # A's approved application
    allocation_id: int
    job_id: int  # queued
    report_id: int  # due under A's allocation
    token_id: int  # an API token of A's applicant
    spare_user_id: int  # for the operators' password and activation forms
    login_email: str  # a user every caller may sign in as
    stack: ExitStack

    @property
    def owner(self) -> Actor:
        return self.centre.applicants[ORG_A]

    def params(self) -> Params:
        return {
            "application_id": self.application_id,
            "allocation_id": self.allocation_id,
            "job_id": self.job_id,
            "report_id": self.report_id,
            "month": datetime.now(UTC).strftime("%Y-%m"),
            "user_id": self.spare_user_id,
            "token_id": self.token_id,
        }

    def client(self) -> TestClient:
        return self.stack.enter_context(TestClient(self.app))

    def copy_of(self, caller: Caller) -> Caller:
        copy = Caller(self.client(), caller.csrf)
        copy.client.cookies.update(caller.client.cookies)
        return copy

    def signed_in(self, who: str) -> Caller:
        caller = Caller(self.client())
        sign_in(caller, self.emails[who])
        return caller

    # fresh resources for requests that change what they touch, one per allowed caller

    def new_application(self) -> Params:
        app = applications.submit_application(
            self.centre.uow(), self.owner, application_request(self.centre.scheme_id)
        )
        return {**self.params(), "application_id": app.id}

    def new_reviewed_application(self) -> Params:
        params = self.new_application()
        for reviewer in self.centre.reviewers[:2]:
            reviews.submit_review(
                self.centre.uow(),
                reviewer,
                params["application_id"],
                dict.fromkeys(RUBRIC, 7),
                "approve",
                "sound plan",
            )
        return params

    def new_allocation(self) -> Params:
        return {**self.params(), "allocation_id": award(self.centre, ORG_A)}

    def new_job(self) -> Params:
        return {**self.params(), "job_id": queue_job(self.centre, self.allocation_id)}

    def new_token(self) -> Params:
        return {**self.params(), "token_id": new_token_id(self.runtime, self.owner)}


def queue_job(centre: Centre, allocation_id: int) -> int:
    request = jobs.JobRequest(allocation_id, ["python", "train.py"], 1, 600)
    return jobs.submit_job(centre.uow(), centre.applicants[ORG_A], request).id


def new_token_id(runtime: Runtime, actor: Actor) -> int:
    token = accounts.issue_token(runtime.uow(), SYSTEM, actor.user_id, "matrix")
    with runtime.uow() as uow:
        row = uow.session.scalar(
            select(ApiToken).where(ApiToken.token_hash == accounts.hash_token(token))
        )
        assert row is not None
        return row.id


def sign_in(caller: Caller, email: str) -> None:
    signed = caller.client.post(
        "/login", data={"email": email, "password": PASSWORD}, follow_redirects=False
    )
    assert signed.status_code == 303, signed.text
    found = CSRF.search(caller.client.get("/account").text)
    assert found, "the account page carries no CSRF token"
    caller.csrf = found.group(1)


Form = Callable[[World], dict[str, Any]]


@dataclass(frozen=True)
class Entry:
    allowed: frozenset[str]
    form: Form | None = None
    # for a request that changes what it touches: each allowed caller's own fresh resource
    fresh: Callable[[World], Params] | None = None
    # the allowed callers' answers when not a page or a redirect (for a form whose minimal
    # body is refused on its merits, after the permission check)
    ok: frozenset[int] | None = None
    refused: int = 403  # what a signed-in caller who is not allowed gets
    own_session: bool = False  # the request ends the session: each caller signs in anew
    # the request replaces the session cookie: it is sent from a copy of the caller's client
    isolated: bool = False


def application_form(w: World) -> dict[str, Any]:
    return {
        "step": "review",
        "scheme_id": str(w.centre.scheme_id),
        "title": "Cantonese ASR",
        "gpu_model": "H800",
        "gpu_hours": "100",
        "starts_on": str(TODAY + timedelta(days=1)),
        "ends_on": str(TODAY + timedelta(days=90)),
        "justification": "A 1B-parameter speech model, 3,000 hours of audio, bf16, batch 512.",
        "intended_use": "Subtitles for public broadcasts",
        "risk_tier": "limited",
        "human_oversight": "Editors review every subtitle file.",
        "declarations": list(applications.DECLARATIONS),
    }


def approval_form(w: World) -> dict[str, Any]:
    return {
        "gpu_hours": "50",
        "starts_on": str(TODAY),
        "ends_on": str(TODAY + timedelta(days=60)),
        "subsidy_rate": "70",
    }


def scheme_form(w: World) -> dict[str, Any]:
    return {
        "name": "Matrix Scheme",
        "fund_total": "1000000",
        "starts_on": str(TODAY),
        "ends_on": str(TODAY + timedelta(days=365)),
        "default_rate": "70",
        "max_rate": "90",
        "rubric": "merit=50\nimpact=50",
        "min_reviews": "2",
        "eligible_categories": ["university"],
    }


def review_form(w: World) -> dict[str, Any]:
    scores = {f"score_{i}": "7" for i in range(len(RUBRIC))}
    return {**scores, "recommendation": "approve", "comment": "A sound plan."}


TABLE: dict[tuple[str, str], Entry] = {
    # signing in and out: public, or for anyone signed in
    ("GET", "/"): Entry(EVERYONE),  # to sign-in, or to the role's home page
    ("GET", "/login"): Entry(EVERYONE),
    ("POST", "/login"): Entry(
        EVERYONE, form=lambda w: {"email": w.login_email, "password": PASSWORD}, isolated=True
    ),
    # single sign-on is not configured on this centre (tests/web/test_sso.py covers it)
    ("GET", "/login/sso"): Entry(EVERYONE, ok=frozenset({404})),
    ("GET", "/login/sso/callback"): Entry(EVERYONE, ok=frozenset({404})),
    ("POST", "/logout"): Entry(SIGNED_IN, own_session=True),
    ("GET", "/account"): Entry(SIGNED_IN),
    ("POST", "/account/tokens"): Entry(SIGNED_IN, form=lambda w: {"label": "laptop"}),
    # {token_id} is a token of A's applicant: only its holder and operators may revoke it,
    # and to anyone else it does not exist
    ("POST", "/account/tokens/{token_id}/revoke"): Entry(
        frozenset({OWNER, OPERATOR}), fresh=World.new_token, refused=404
    ),
    # a wrong current password: refused on its merits, so nobody's sessions end
    ("POST", "/account/password"): Entry(
        SIGNED_IN,
        form=lambda w: {"current": "not my password", "new": "x" * 16, "repeat": "x" * 16},
        ok=frozenset({422}),
    ),
    ("GET", "/notifications"): Entry(SIGNED_IN),
    ("POST", "/notifications/read"): Entry(SIGNED_IN),
    # the applicant's pages: their own organisation's, never another's
    ("GET", "/org"): Entry(APPLICANTS),
    ("POST", "/org/profile"): Entry(APPLICANTS, form=lambda w: {"sector": "Speech AI"}),
    ("GET", "/applications"): Entry(APPLICANTS),
    ("GET", "/apply"): Entry(APPLICANTS),
    ("POST", "/apply"): Entry(APPLICANTS, form=application_form),
    ("GET", "/applications/{application_id}"): Entry(OWNER_ONLY),
    ("GET", "/allocations/{allocation_id}"): Entry(OWNER_ONLY),
    ("GET", "/jobs"): Entry(APPLICANTS),
    ("GET", "/jobs/table"): Entry(APPLICANTS),
    ("POST", "/jobs"): Entry(
        OWNER_ONLY,
        form=lambda w: {
            "allocation_id": str(w.allocation_id),
            "command": "python train.py",
            "gpus": "1",
            "time_limit_min": "10",
        },
    ),
    ("GET", "/jobs/{job_id}"): Entry(OWNER_ONLY),
    ("GET", "/jobs/{job_id}/live"): Entry(OWNER_ONLY),
    ("POST", "/jobs/{job_id}/cancel"): Entry(OWNER_ONLY, fresh=World.new_job),
    ("GET", "/invoices"): Entry(APPLICANTS),
    ("GET", "/invoices/{month}.csv"): Entry(APPLICANTS),  # the caller's own organisation's
    ("GET", "/invoices/{month}.pdf"): Entry(APPLICANTS),
    ("GET", "/reports"): Entry(APPLICANTS),
    ("POST", "/reports/{report_id}"): Entry(
        OWNER_ONLY,
        form=lambda w: {"summary": "We trained the first model and published its results. " * 2},
    ),
    # the review committee's pages
    ("GET", "/review"): Entry(REVIEWERS),
    ("GET", "/review/{application_id}"): Entry(REVIEWERS),
    ("POST", "/review/{application_id}"): Entry(
        REVIEWERS, form=review_form, fresh=World.new_application
    ),
    ("POST", "/review/{application_id}/conflict"): Entry(
        REVIEWERS,
        form=lambda w: {"reason": "I supervise one of the applicants."},
        fresh=World.new_application,
    ),
    # the operators' pages
    ("GET", "/ops"): Entry(OPERATORS),
    ("GET", "/ops/applications"): Entry(OPERATORS),
    ("GET", "/ops/applications/{application_id}"): Entry(OPERATORS),
    ("POST", "/ops/applications/{application_id}/approve"): Entry(
        OPERATORS, form=approval_form, fresh=World.new_reviewed_application
    ),
    ("POST", "/ops/applications/{application_id}/reject"): Entry(
        OPERATORS,
        form=lambda w: {"reasons": "Outside the scheme's priorities."},
        fresh=World.new_application,
    ),
    ("POST", "/ops/applications/{application_id}/assign"): Entry(
        OPERATORS,
        form=lambda w: {"reviewer_id": str(w.centre.reviewers[2].user_id)},
        fresh=World.new_application,
    ),
    ("GET", "/ops/cluster"): Entry(OPERATORS),
    ("GET", "/ops/queue"): Entry(OPERATORS),
    ("GET", "/ops/queue/table"): Entry(OPERATORS),
    ("GET", "/ops/schemes"): Entry(OPERATORS),
    ("POST", "/ops/schemes"): Entry(OPERATORS, form=scheme_form),
    ("GET", "/ops/rates"): Entry(OPERATORS),
    ("POST", "/ops/rates"): Entry(OPERATORS, form=lambda w: {"gpu_model": "A100", "price": "20"}),
    ("GET", "/ops/allocations"): Entry(OPERATORS),
    ("POST", "/ops/allocations/{allocation_id}/close"): Entry(
        OPERATORS, fresh=World.new_allocation
    ),
    ("GET", "/ops/people"): Entry(OPERATORS),
    ("POST", "/ops/people/organisations"): Entry(
        OPERATORS, form=lambda w: {"org_name": "Matrix Labs", "category": "startup"}
    ),
    ("POST", "/ops/people/users"): Entry(
        OPERATORS,
        form=lambda w: {"name": "Matrix User", "email": "matrix@panel.test", "role": "reviewer"},
    ),
    ("POST", "/ops/people/users/{user_id}/password"): Entry(
        OPERATORS, form=lambda w: {"password": "a brand new passphrase"}
    ),
    ("POST", "/ops/people/users/{user_id}/active"): Entry(
        OPERATORS, form=lambda w: {"active": "true"}
    ),
    # the funder's pages, which operators see too
    ("GET", "/fund"): Entry(OVERSIGHT),
    ("GET", "/fund/ledger"): Entry(OVERSIGHT),
    ("GET", "/fund/ledger/export"): Entry(OVERSIGHT),
}


def portal_routes(app: FastAPI) -> set[tuple[str, str]]:
    """(method, path template) of every route the portal's modules (aisc.web) serve."""
    found: set[tuple[str, str]] = set()
    for route in flat_routes(app):
        endpoint = getattr(route, "endpoint", None)
        if endpoint is None or not (endpoint.__module__ or "").startswith("aisc.web"):
            continue  # the API, FastAPI's docs and /static, whose rules live elsewhere
        found.update((method, route.path) for method in methods_of(route))
    return found


@pytest.fixture(scope="module")
def world(
    database_url: str, engine: Engine, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[World]:
    runtime = fresh_runtime(database_url, engine, Path(tmp_path_factory.mktemp("portal-matrix")))
    try:
        with ExitStack() as stack:
            yield build_world(runtime, stack)
    finally:
        runtime.close()


def build_world(runtime: Runtime, stack: ExitStack) -> World:
    centre = build_centre(runtime.uow)
    allocation_id = award(centre, ORG_A)
    add_org(centre, ORG_B)

    def person(name: str, email: str, role: str, org: str | None = None) -> Actor:
        org_id = centre.orgs[org] if org else None
        user = accounts.create_user(runtime.uow(), centre.operator, name, email, role, org_id)
        return accounts.actor_for(user)

    colleague = person("A Colleague", "colleague@harbouru.test", "applicant", ORG_A)
    spare = person("Spare Reviewer", "spare@panel.test", "reviewer")
    login = person("Login Reviewer", "login@panel.test", "reviewer")
    actors = {
        SIGNED_OUT: centre.applicants[ORG_A],
        INACTIVE: colleague,
        OWNER: centre.applicants[ORG_A],
        OTHER_ORG: centre.applicants[ORG_B],
        REVIEWER: centre.reviewers[0],
        OPERATOR: centre.operator,
        FUNDER: centre.funder,
    }
    emails: dict[str, str] = {}
    for who, actor in [*actors.items(), ("login", login)]:
        sessions.set_password(runtime.uow(), SYSTEM, actor.user_id, PASSWORD)
        emails[who] = email_of(runtime, actor)
    with runtime.uow() as uow:
        found = uow.session.get(Allocation, allocation_id)
        assert found is not None
        application_id = found.application_id
        report_id = uow.session.scalars(
            select(ProgressReport.id)
            .where(ProgressReport.allocation_id == allocation_id)
            .order_by(ProgressReport.due_on)
        ).first()
        assert report_id is not None
    w = World(
        runtime=runtime,
        app=create_app(runtime, run_controller=False),
        centre=centre,
        callers={},
        emails=emails,
        application_id=application_id,
        allocation_id=allocation_id,
        job_id=queue_job(centre, allocation_id),
        report_id=report_id,
        token_id=new_token_id(runtime, centre.applicants[ORG_A]),
        spare_user_id=spare.user_id,
        login_email=emails["login"],
        stack=stack,
    )
    w.callers = {who: w.signed_in(who) for who in actors}
    w.callers[ANONYMOUS] = Caller(w.client())
    # both sessions worked until now, so the sign-in redirects below come from ending them
    for who in (SIGNED_OUT, INACTIVE):
        assert w.callers[who].client.get("/account").status_code == 200
    assert post(w.callers[SIGNED_OUT], "/logout").status_code == 303
    accounts.set_user_active(runtime.uow(), centre.operator, colleague.user_id, False)
    return w


def email_of(runtime: Runtime, actor: Actor) -> str:
    with runtime.uow() as uow:
        user = uow.session.get(User, actor.user_id)
        assert user is not None
        return user.email


def post(caller: Caller, url: str, form: dict[str, Any] | None = None) -> httpx.Response:
    data = {**(form or {}), "csrf_token": caller.csrf}
    response: httpx.Response = caller.client.post(url, data=data, follow_redirects=False)
    return response


def test_every_page_has_an_entry(world: World) -> None:
    served = portal_routes(world.app)
    missing = sorted(served - TABLE.keys())
    stale = sorted(TABLE.keys() - served)
    assert not missing, (
        "portal routes with no entry in the authorisation matrix (add one to TABLE saying "
        f"who may use each): {missing}"
    )
    assert not stale, f"TABLE entries for routes the portal no longer serves: {stale}"


def to_sign_in(response: httpx.Response) -> bool:
    return response.status_code == 303 and response.headers["location"].startswith("/login?next=")


def verdict(caller: str, entry: Entry, response: httpx.Response) -> str | None:
    """None when the answer is what the table says; else what was expected."""
    status = response.status_code
    if caller in entry.allowed:
        if entry.ok is not None:
            return None if status in entry.ok else f"one of {sorted(entry.ok)}"
        return None if status < 400 and not to_sign_in(response) else "the page or a redirect"
    if caller in NO_SESSION:
        return None if to_sign_in(response) else "303 to /login?next=..."
    if status != entry.refused:
        return str(entry.refused)
    if "text/html" not in response.headers.get("content-type", ""):
        return f"{entry.refused} as an error page"
    return None


@pytest.mark.parametrize(
    ("method", "path"), sorted(TABLE), ids=[" ".join(k) for k in sorted(TABLE)]
)
def test_each_caller_gets_what_the_table_says(world: World, method: str, path: str) -> None:
    entry = TABLE[(method, path)]
    wrong: list[str] = []
    # refused callers first: they change nothing, so the allowed ones after them still find
    # the resources as the table assumes
    for who in sorted(CALLERS, key=lambda c: c in entry.allowed):
        allowed = who in entry.allowed
        params = entry.fresh(world) if allowed and entry.fresh else world.params()
        url = path.format(**params)
        caller = world.callers[who]
        if allowed and entry.own_session:
            caller = world.signed_in(who)
        elif entry.isolated:
            caller = world.copy_of(caller)
        if method == "GET":
            response = caller.client.get(url, follow_redirects=False)
        else:
            response = post(caller, url, entry.form(world) if entry.form else None)
        expected = verdict(who, entry, response)
        if expected is not None:
            wrong.append(
                f"{who} {method} {url}: expected {expected}, got {response.status_code} "
                f"{response.headers.get('location', '')}"
            )
    assert not wrong, "\n".join(wrong)


POSTS = sorted(
    key for key, entry in TABLE.items() if key[0] == "POST" and entry.allowed != EVERYONE
)


@pytest.mark.parametrize(("method", "path"), POSTS, ids=[" ".join(k) for k in POSTS])
def test_every_form_action_needs_the_csrf_token(world: World, method: str, path: str) -> None:
    """An allowed caller's POST without the session's CSRF token is refused before it runs."""
    entry = TABLE[(method, path)]
    who = sorted(entry.allowed)[0]
    caller = world.callers[who]
    url = path.format(**world.params())
    form = entry.form(world) if entry.form else {}
    for token in (None, "forged"):
        data = dict(form) if token is None else {**form, "csrf_token": token}
        response = caller.client.post(url, data=data, follow_redirects=False)
        assert response.status_code == 403, (who, url, token, response.status_code)
        assert "did not come from this site" in response.text


def test_the_session_cookie_is_stored_hashed_and_secure_over_https(world: World) -> None:
    https = world.stack.enter_context(TestClient(world.app, base_url="https://testserver"))
    signed = https.post(
        "/login",
        data={"email": world.login_email, "password": PASSWORD},
        follow_redirects=False,
    )
    assert signed.status_code == 303
    cookie = signed.headers["set-cookie"].lower()
    assert "secure" in cookie and "httponly" in cookie and "samesite=lax" in cookie
    token = signed.cookies["aisc_session"]
    with world.runtime.uow() as uow:
        stored = set(uow.session.scalars(select(WebSession.token_hash)))
    assert token not in stored and accounts.hash_token(token) in stored
    # behind an HTTPS proxy the request itself is plain HTTP: AISC_COOKIE_SECURE says so
    proxied = replace(
        world.runtime, settings=world.runtime.settings.model_copy(update={"cookie_secure": True})
    )
    plain = TestClient(create_app(proxied, run_controller=False))  # no lifespan: shared runtime
    behind = plain.post(
        "/login",
        data={"email": world.login_email, "password": PASSWORD},
        follow_redirects=False,
    )
    assert behind.status_code == 303 and "secure" in behind.headers["set-cookie"].lower()
