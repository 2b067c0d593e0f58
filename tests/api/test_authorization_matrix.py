"""The API's authorisation matrix: every route x every kind of caller.

TABLE below is the API's access policy written down once: for each (method, path) the callers
who may use it. Every caller then makes the real request against real resources of
organisation A, and gets exactly what the table says: an allowed caller a 2xx, no token, a
revoked token or a deactivated user's token 401, any other caller 403 (the services' convention
for another organisation's resources too: they exist, but are not yours). A route added without
an entry, or an entry whose route is gone, fails test_every_route_has_an_entry, so no endpoint
ships without someone deciding who may call it. The portal's pages have their own matrix in
tests/web/test_portal_authorization_matrix.py.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy import Engine
from starlette.routing import Mount

from aisc.api.app import create_app
from aisc.runtime import Runtime
from aisc.services import accounts, applications, jobs
from aisc.services.context import Actor
from aisc.store.tables import Allocation
from tests import builders
from tests.builders import RUBRIC, Centre, add_org, application_request, award, build_centre
from tests.conftest import fresh_runtime
from tests.routes import flat_routes, methods_of

API = "/api/v1"
ORG_A, ORG_B = "Harbour U", "Kowloon AI"

# who calls
ANONYMOUS = "anonymous"  # no Authorization header
REVOKED = "revoked"  # organisation A's applicant's token, revoked
INACTIVE = "inactive"  # a token of a deactivated member of organisation A
OWNER = "owner"  # organisation A's applicant: A's resources are theirs
OTHER_ORG = "other_org"  # organisation B's applicant
REVIEWER = "reviewer"
OPERATOR = "operator"
FUNDER = "funder"
CALLERS = (ANONYMOUS, REVOKED, INACTIVE, OWNER, OTHER_ORG, REVIEWER, OPERATOR, FUNDER)
UNAUTHENTICATED = frozenset({ANONYMOUS, REVOKED, INACTIVE})

EVERYONE = frozenset(CALLERS)
SIGNED_IN = EVERYONE - UNAUTHENTICATED
APPLICANTS = frozenset({OWNER, OTHER_ORG})
OPERATORS = frozenset({OPERATOR})
OVERSIGHT = frozenset({OPERATOR, FUNDER})
# A's own resources: the owner, and the roles that see every organisation's
SEES_A = frozenset({OWNER, REVIEWER, OPERATOR, FUNDER})
# jobs, the queue and invoices are for grantees and oversight, not for the review committee
JOB_READERS = frozenset({OWNER, OPERATOR, FUNDER})

Params = dict[str, Any]


@dataclass
class World:
    """One centre, built once for the module: organisation A with an award, a job, an invoice."""

    centre: Centre
    client: TestClient
    headers: dict[str, dict[str, str]]
    application_id: int  # A's approved application
    allocation_id: int  # its allocation
    job_id: int  # a queued job under it
    month: str

    @property
    def owner(self) -> Actor:
        return self.centre.applicants[ORG_A]

    def params(self) -> Params:
        """Path parameters: each names one of organisation A's real resources."""
        return {
            "application_id": self.application_id,
            "allocation_id": self.allocation_id,
            "job_id": self.job_id,
            "org_id": self.centre.orgs[ORG_A],
            "month": self.month,
            "user_id": self.owner.user_id,
            "scheme_id": self.centre.scheme_id,
        }

    # fresh resources for requests that change what they touch, one per allowed caller

    def new_application(self) -> Params:
        app = applications.submit_application(
            self.centre.uow(), self.owner, application_request(self.centre.scheme_id)
        )
        return {**self.params(), "application_id": app.id}

    def new_allocation(self) -> Params:
        return {**self.params(), "allocation_id": award(self.centre, ORG_A)}

    def new_job(self) -> Params:
        return {**self.params(), "job_id": queue_job(self.centre, self.allocation_id)}


def queue_job(centre: Centre, allocation_id: int) -> int:
    request = jobs.JobRequest(allocation_id, ["python", "train.py"], 1, 600)
    return jobs.submit_job(centre.uow(), centre.applicants[ORG_A], request).id


Body = Callable[[World], dict[str, Any]]


@dataclass(frozen=True)
class Entry:
    allowed: frozenset[str]
    body: Body | None = None
    # for a request that changes what it touches: each allowed caller's own fresh resource,
    # so no row (nor the callers after it) finds the shared one spent
    fresh: Callable[[World], Params] | None = None


TODAY = date.today()


def application_body(w: World) -> dict[str, Any]:
    return builders.application_body(w.centre.scheme_id, gpu_hours=100)


TABLE: dict[tuple[str, str], Entry] = {
    # FastAPI's own documentation, the health check and the metrics: public on purpose
    ("GET", "/openapi.json"): Entry(EVERYONE),
    ("GET", "/docs"): Entry(EVERYONE),
    ("GET", "/docs/oauth2-redirect"): Entry(EVERYONE),
    ("GET", "/redoc"): Entry(EVERYONE),
    ("GET", f"{API}/health"): Entry(EVERYONE),
    ("GET", "/metrics"): Entry(EVERYONE),  # open unless AISC_METRICS_TOKEN is set
    # people
    ("GET", f"{API}/me"): Entry(SIGNED_IN),
    ("GET", f"{API}/organisations"): Entry(SIGNED_IN),  # an applicant sees only their own
    ("POST", f"{API}/organisations"): Entry(
        OPERATORS, body=lambda w: {"name": "Matrix Labs", "category": "startup"}
    ),
    ("GET", f"{API}/users"): Entry(OPERATORS),
    ("POST", f"{API}/users"): Entry(
        OPERATORS,
        body=lambda w: {"name": "Matrix User", "email": "matrix@panel.test", "role": "reviewer"},
    ),
    # {user_id} is A's applicant: a token for oneself, or from an operator
    ("POST", f"{API}/users/{{user_id}}/tokens"): Entry(
        frozenset({OWNER, OPERATOR}), body=lambda w: {"label": "matrix"}
    ),
    # schemes, the fund, the rate card
    ("GET", f"{API}/schemes"): Entry(SIGNED_IN),
    ("POST", f"{API}/schemes"): Entry(
        OPERATORS,
        body=lambda w: {
            "name": "Matrix Scheme",
            "fund_total_hkd": "1000000",
            "starts_on": str(TODAY),
            "ends_on": str(TODAY + timedelta(days=365)),
            "rubric": RUBRIC,
        },
    ),
    ("GET", f"{API}/schemes/{{scheme_id}}"): Entry(SIGNED_IN),
    ("GET", f"{API}/fund"): Entry(OVERSIGHT),
    ("GET", f"{API}/rates"): Entry(SIGNED_IN),
    ("POST", f"{API}/rates"): Entry(
        OPERATORS, body=lambda w: {"gpu_model": "A100", "hkd_per_gpu_hour": "20"}
    ),
    # applications, reviews, decisions
    ("GET", f"{API}/applications"): Entry(SIGNED_IN),  # an applicant sees only their own
    ("POST", f"{API}/applications"): Entry(APPLICANTS, body=application_body),
    ("GET", f"{API}/applications/{{application_id}}"): Entry(SEES_A),
    ("POST", f"{API}/applications/{{application_id}}/conflicts"): Entry(
        frozenset({REVIEWER}),
        body=lambda w: {"reason": "I supervise one of the applicants"},
        fresh=World.new_application,
    ),
    ("GET", f"{API}/applications/{{application_id}}/reviews"): Entry(
        frozenset({REVIEWER, OPERATOR, FUNDER})
    ),
    ("POST", f"{API}/applications/{{application_id}}/reviews"): Entry(
        frozenset({REVIEWER}),
        body=lambda w: {"scores": dict.fromkeys(RUBRIC, 7), "recommendation": "approve"},
        fresh=World.new_application,
    ),
    ("POST", f"{API}/applications/{{application_id}}/decision"): Entry(
        OPERATORS,
        body=lambda w: {"outcome": "reject", "reasons": "Outside the scheme's priorities."},
        fresh=World.new_application,
    ),
    ("GET", f"{API}/applications/{{application_id}}/decision"): Entry(SEES_A),
    # allocations, jobs, the queue, the cluster
    ("GET", f"{API}/allocations"): Entry(SIGNED_IN),  # an applicant sees only their own
    ("GET", f"{API}/allocations/{{allocation_id}}"): Entry(SEES_A),
    ("POST", f"{API}/allocations/{{allocation_id}}/close"): Entry(
        OPERATORS, fresh=World.new_allocation
    ),
    ("GET", f"{API}/jobs"): Entry(JOB_READERS | {OTHER_ORG}),  # an applicant sees their own
    ("POST", f"{API}/jobs"): Entry(
        frozenset({OWNER, OPERATOR}),
        body=lambda w: {
            "allocation_id": w.allocation_id,
            "command": ["python", "train.py"],
            "gpus": 1,
            "time_limit_s": 600,
        },
    ),
    ("GET", f"{API}/jobs/{{job_id}}"): Entry(JOB_READERS),
    ("POST", f"{API}/jobs/{{job_id}}/cancel"): Entry(
        frozenset({OWNER, OPERATOR}), fresh=World.new_job
    ),
    ("GET", f"{API}/jobs/{{job_id}}/logs"): Entry(frozenset({OWNER, OPERATOR})),
    ("GET", f"{API}/jobs/{{job_id}}/why"): Entry(JOB_READERS),
    ("GET", f"{API}/queue"): Entry(JOB_READERS | {OTHER_ORG}),  # an applicant sees their own
    ("GET", f"{API}/nodes"): Entry(SIGNED_IN),
    # invoices and the ledger
    ("GET", f"{API}/invoices/{{org_id}}/{{month}}"): Entry(JOB_READERS),
    ("GET", f"{API}/invoices/{{org_id}}/{{month}}/csv"): Entry(JOB_READERS),
    ("GET", f"{API}/ledger/verify"): Entry(OVERSIGHT),
    ("GET", f"{API}/ledger/export"): Entry(OVERSIGHT),
}


def app_routes(app: FastAPI) -> set[tuple[str, str]]:
    """(method, path template) of every route the application serves but the portal's pages
    (tests/web/test_portal_authorization_matrix.py) and its static files; ("*", path) for any
    other mounted application."""
    found: set[tuple[str, str]] = set()
    for route in flat_routes(app):
        mounted = getattr(route, "original_route", route)
        if isinstance(mounted, Mount):
            if mounted.path != "/static":  # the portal's CSS and scripts: public by nature
                found.add(("*", mounted.path))  # a mounted app needs its own entry too
            continue
        if (route.endpoint.__module__ or "").startswith("aisc.web"):
            continue
        found.update((method, route.path) for method in methods_of(route))
    return found


@pytest.fixture(scope="module")
def world(
    database_url: str, engine: Engine, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[World]:
    runtime = fresh_runtime(database_url, engine, Path(tmp_path_factory.mktemp("matrix")))
    try:
        with TestClient(create_app(runtime, run_controller=False)) as client:
            yield build_world(runtime, client)
    finally:
        runtime.close()


def build_world(runtime: Runtime, client: TestClient) -> World:
    centre = build_centre(runtime.uow)
    allocation_id = award(centre, ORG_A)
    add_org(centre, ORG_B)
    owner = centre.applicants[ORG_A]
    with runtime.uow() as uow:
        found = uow.session.get(Allocation, allocation_id)
        assert found is not None
        application_id = found.application_id

    def headers(actor: Actor) -> dict[str, str]:
        token = accounts.issue_token(runtime.uow(), centre.operator, actor.user_id, "matrix")
        return {"Authorization": f"Bearer {token}"}

    revoked = headers(owner)
    colleague = accounts.actor_for(
        accounts.create_user(
            runtime.uow(),
            centre.operator,
            "A Colleague",
            "colleague@harbouru.test",
            "applicant",
            centre.orgs[ORG_A],
        )
    )
    inactive = headers(colleague)
    # both worked until now, so their 401s below come from the revocation and the deactivation
    for valid in (revoked, inactive):
        assert client.get(f"{API}/me", headers=valid).status_code == 200
    accounts.revoke_token(
        runtime.uow(), centre.operator, revoked["Authorization"].removeprefix("Bearer ")
    )
    accounts.set_user_active(runtime.uow(), centre.operator, colleague.user_id, False)
    return World(
        centre=centre,
        client=client,
        headers={
            ANONYMOUS: {},
            REVOKED: revoked,
            INACTIVE: inactive,
            OWNER: headers(owner),
            OTHER_ORG: headers(centre.applicants[ORG_B]),
            REVIEWER: headers(centre.reviewers[0]),
            OPERATOR: headers(centre.operator),
            FUNDER: headers(centre.funder),
        },
        application_id=application_id,
        allocation_id=allocation_id,
        job_id=queue_job(centre, allocation_id),
        month=datetime.now(UTC).strftime("%Y-%m"),
    )


def test_every_route_has_an_entry(world: World) -> None:
    app = world.client.app
    assert isinstance(app, FastAPI)
    served = app_routes(app)
    missing = sorted(served - TABLE.keys())
    stale = sorted(TABLE.keys() - served)
    assert not missing, (
        "routes with no entry in the authorisation matrix (add one to TABLE saying who may "
        f"call each): {missing}"
    )
    assert not stale, f"TABLE entries for routes the API no longer serves: {stale}"


def expected_status(caller: str, entry: Entry) -> str:
    if caller in entry.allowed:
        return "2xx"
    return "401" if caller in UNAUTHENTICATED else "403"


def is_problem(response: Any) -> bool:
    """A refusal is a problem-details body, like every other API error."""
    return str(response.headers.get("content-type", "")).startswith("application/problem+json")


def matches(expected: str, status: int) -> bool:
    return 200 <= status < 300 if expected == "2xx" else str(status) == expected


@pytest.mark.parametrize(
    ("method", "path"), sorted(TABLE), ids=[" ".join(k) for k in sorted(TABLE)]
)
def test_each_caller_gets_what_the_table_says(world: World, method: str, path: str) -> None:
    entry = TABLE[(method, path)]
    wrong: list[str] = []
    # refused callers first: they change nothing, so the allowed ones after them still find
    # the resources as the table assumes
    for caller in sorted(CALLERS, key=lambda c: c in entry.allowed):
        allowed = caller in entry.allowed
        params = entry.fresh(world) if allowed and entry.fresh else world.params()
        url = path.format(**params)
        body = entry.body(world) if entry.body else None
        response = world.client.request(method, url, headers=world.headers[caller], json=body)
        want = expected_status(caller, entry)
        if not matches(want, response.status_code):
            wrong.append(
                f"{caller} {method} {url}: expected {want}, got {response.status_code} "
                f"{response.text[:200]}"
            )
        elif not allowed and not is_problem(response):
            wrong.append(f"{caller} {method} {url}: the refusal is not problem details")
    assert not wrong, "\n".join(wrong)


def test_lists_show_another_organisation_none_of_a(world: World) -> None:
    """Lists an applicant may read are filtered to their organisation: B sees nothing of A."""
    org_a = world.centre.orgs[ORG_A]
    b = world.headers[OTHER_ORG]
    get = world.client.get
    a_allocations = {
        a["id"] for a in get(f"{API}/allocations", headers=world.headers[OWNER]).json()
    }
    assert world.allocation_id in a_allocations
    seen = {
        "organisations": [o["id"] for o in get(f"{API}/organisations", headers=b).json()],
        "applications": [a["org_id"] for a in get(f"{API}/applications", headers=b).json()],
        "allocations": [a["org_id"] for a in get(f"{API}/allocations", headers=b).json()],
    }
    assert all(org_a not in ids for ids in seen.values()), seen
    job_allocations = [j["allocation_id"] for j in get(f"{API}/jobs", headers=b).json()]
    queued = [e["job"]["allocation_id"] for e in get(f"{API}/queue", headers=b).json()]
    assert not a_allocations & {*job_allocations, *queued}
    # and the owner does see A's job in both: the filter is by organisation, not empty
    owner = world.headers[OWNER]
    assert world.job_id in [j["id"] for j in get(f"{API}/jobs", headers=owner).json()]
    assert world.job_id in [e["job"]["id"] for e in get(f"{API}/queue", headers=owner).json()]
