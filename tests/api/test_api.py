"""Each use case over HTTP, and each refusal as a 4xx problem-details body that changed nothing."""

from __future__ import annotations

from datetime import date, timedelta

import pytest
from fastapi.testclient import TestClient

from aisc.runtime import Runtime
from tests.api.conftest import TokenFor
from tests.builders import RUBRIC, Centre, add_org, application_body, award, build_centre

API = "/api/v1"
TODAY = date.today()


@pytest.fixture
def centre(runtime: Runtime) -> Centre:
    return build_centre(runtime.uow)


def assert_problem(response, status: int, *words: str) -> dict:  # type: ignore[no-untyped-def]
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    body = response.json()
    assert body["status"] == status
    assert body["title"] and body["detail"]
    for word in words:
        assert word.lower() in body["detail"].lower(), body["detail"]
    return body


def ledger_count(client: TestClient, headers: dict[str, str]) -> int:
    response = client.get(f"{API}/ledger/verify", headers=headers)
    assert response.status_code == 200
    assert response.json()["ok"], response.json()
    return int(response.json()["transactions"])


def test_health_needs_no_token_and_names_the_database(client: TestClient, runtime: Runtime) -> None:
    body = client.get(f"{API}/health").json()
    assert body["status"] == "ok"
    assert body["database"] == runtime.engine.dialect.name


def test_openapi_document_lists_versioned_paths(client: TestClient) -> None:
    paths = client.get("/openapi.json").json()["paths"]
    assert f"{API}/jobs" in paths and f"{API}/ledger/verify" in paths
    assert all(p.startswith(API) for p in paths)
    assert client.get("/docs").status_code == 200


def test_requests_without_a_valid_token_get_401_problems(
    client: TestClient, centre: Centre
) -> None:
    assert_problem(client.get(f"{API}/schemes"), 401, "token")
    assert_problem(
        client.get(f"{API}/schemes", headers={"Authorization": "Bearer aisc_forged"}),
        401,
        "not valid",
    )


def test_revoked_token_is_refused(client: TestClient, centre: Centre, runtime: Runtime) -> None:
    from aisc.services import accounts

    token = accounts.issue_token(runtime.uow(), centre.operator, centre.operator.user_id)
    headers = {"Authorization": f"Bearer {token}"}
    assert client.get(f"{API}/me", headers=headers).status_code == 200
    accounts.revoke_token(runtime.uow(), centre.operator, token)
    assert_problem(client.get(f"{API}/me", headers=headers), 401)


def test_tokens_are_stored_only_as_hashes(
    client: TestClient, centre: Centre, runtime: Runtime
) -> None:
    from sqlalchemy import select

    from aisc.services import accounts
    from aisc.store.tables import ApiToken

    token = accounts.issue_token(runtime.uow(), centre.operator, centre.operator.user_id)
    with runtime.uow() as uow:
        stored = list(uow.session.scalars(select(ApiToken.token_hash)))
    assert token not in stored
    assert accounts.hash_token(token) in stored


def test_operator_creates_scheme_and_fund_is_credited(
    client: TestClient, centre: Centre, auth: TokenFor
) -> None:
    op = auth(centre.operator)
    response = client.post(
        f"{API}/schemes",
        headers=op,
        json={
            "name": "AI Subsidy Scheme",
            "fund_total_hkd": "3000000000",
            "starts_on": str(TODAY),
            "ends_on": str(TODAY + timedelta(days=3 * 365)),
            "rubric": RUBRIC,
        },
    )
    assert response.status_code == 201, response.text
    scheme = response.json()
    assert scheme["default_rate"] == "0.70" and scheme["max_rate"] == "0.90"
    fund = {f["scheme_id"]: f for f in client.get(f"{API}/fund", headers=op).json()}
    assert fund[scheme["id"]]["total_cents"] == 3_000_000_000_00
    assert fund[scheme["id"]]["available_cents"] == 3_000_000_000_00


def test_rubric_not_summing_to_100_is_refused_and_nothing_is_created(
    client: TestClient, centre: Centre, auth: TokenFor
) -> None:
    op = auth(centre.operator)
    before = client.get(f"{API}/schemes", headers=op).json()
    count = ledger_count(client, op)
    response = client.post(
        f"{API}/schemes",
        headers=op,
        json={
            "name": "Bad rubric",
            "fund_total_hkd": "1000",
            "starts_on": str(TODAY),
            "ends_on": str(TODAY + timedelta(days=30)),
            "rubric": {"merit": 60, "impact": 30},
        },
    )
    assert_problem(response, 422, "100")
    assert client.get(f"{API}/schemes", headers=op).json() == before
    assert ledger_count(client, op) == count


def test_malformed_body_gets_422_problem_with_field_errors(
    client: TestClient, centre: Centre, auth: TokenFor
) -> None:
    response = client.post(f"{API}/jobs", headers=auth(centre.operator), json={"gpus": "many"})
    body = assert_problem(response, 422)
    fields = {e["field"] for e in body["errors"]}
    assert {"allocation_id", "command", "gpus"} <= fields


def test_applicant_cannot_create_a_scheme(
    client: TestClient, centre: Centre, auth: TokenFor
) -> None:
    applicant = add_org(centre, "Harbour University")
    response = client.post(
        f"{API}/schemes",
        headers=auth(applicant),
        json={
            "name": "Mine",
            "fund_total_hkd": "1",
            "starts_on": str(TODAY),
            "ends_on": str(TODAY + timedelta(days=1)),
            "rubric": RUBRIC,
        },
    )
    assert_problem(response, 403, "operator")


def test_rates_are_listed_and_a_past_effective_date_is_refused(
    client: TestClient, centre: Centre, auth: TokenFor
) -> None:
    op = auth(centre.operator)
    future = f"{TODAY + timedelta(days=40)}T00:00:00+00:00"
    created = client.post(
        f"{API}/rates",
        headers=op,
        json={"gpu_model": "h800", "hkd_per_gpu_hour": "32.50", "effective_from": future},
    )
    assert created.status_code == 201, created.text
    assert created.json()["cents_per_gpu_hour"] == 3250
    models = [
        (r["gpu_model"], r["cents_per_gpu_hour"])
        for r in client.get(f"{API}/rates", headers=op).json()
    ]
    assert ("H800", 3250) in models
    past = f"{TODAY - timedelta(days=40)}T00:00:00+00:00"
    assert_problem(
        client.post(
            f"{API}/rates",
            headers=op,
            json={"gpu_model": "H800", "hkd_per_gpu_hour": "1", "effective_from": past},
        ),
        422,
        "past",
    )
    fraction = client.post(
        f"{API}/rates", headers=op, json={"gpu_model": "H800", "hkd_per_gpu_hour": "1.001"}
    )
    assert_problem(fraction, 422, "cent")


def test_apply_review_and_approve_over_http(
    client: TestClient, centre: Centre, auth: TokenFor
) -> None:
    applicant = add_org(centre, "Kowloon Institute", "research_institute")
    created = client.post(
        f"{API}/applications", headers=auth(applicant), json=application_body(centre.scheme_id)
    )
    assert created.status_code == 201, created.text
    app_id = created.json()["id"]
    for reviewer in centre.reviewers[:2]:
        response = client.post(
            f"{API}/applications/{app_id}/reviews",
            headers=auth(reviewer),
            json={"scores": {k: 8 for k in RUBRIC}, "recommendation": "approve"},
        )
        assert response.status_code == 201, response.text
        assert response.json()["weighted_score"] == 80.0
    op = auth(centre.operator)
    decided = client.post(
        f"{API}/applications/{app_id}/decision",
        headers=op,
        json={
            "outcome": "approve",
            "gpu_hours": 1000,
            "starts_on": str(TODAY),
            "ends_on": str(TODAY + timedelta(days=90)),
            "conditions": "Quarterly reports",
        },
    )
    assert decided.status_code == 201, decided.text
    allocation_id = decided.json()["allocation_id"]
    allocation = client.get(f"{API}/allocations/{allocation_id}", headers=auth(applicant)).json()
    assert allocation["gpu_hours_granted"] == 1000
    assert allocation["subsidy_rate"] == "0.70"
    # 1000 GPU-hours x HK$36 x 0.70
    assert allocation["subsidy_commitment_cents"] == 1000 * 3600 * 7000 // 10000
    assert (
        client.get(f"{API}/applications/{app_id}", headers=auth(applicant)).json()["status"]
        == "approved"
    )


def test_reviewer_from_the_applicants_organisation_is_refused(
    client: TestClient, centre: Centre, auth: TokenFor, runtime: Runtime
) -> None:
    from aisc.services import accounts

    applicant = add_org(centre, "Harbour University")
    colleague = accounts.actor_for(
        accounts.create_user(
            runtime.uow(),
            centre.operator,
            "Dr Colleague",
            "c@hu.test",
            "reviewer",
            applicant.org_id,
        )
    )
    app_id = client.post(
        f"{API}/applications", headers=auth(applicant), json=application_body(centre.scheme_id)
    ).json()["id"]
    response = client.post(
        f"{API}/applications/{app_id}/reviews",
        headers=auth(colleague),
        json={"scores": {k: 10 for k in RUBRIC}, "recommendation": "approve"},
    )
    assert_problem(response, 403, "own organisation")
    assert (
        client.get(f"{API}/applications/{app_id}/reviews", headers=auth(centre.operator)).json()
        == []
    )


def test_reviewer_with_a_declared_conflict_is_refused(
    client: TestClient, centre: Centre, auth: TokenFor
) -> None:
    applicant = add_org(centre, "Lantern Robotics", "startup")
    app_id = client.post(
        f"{API}/applications", headers=auth(applicant), json=application_body(centre.scheme_id)
    ).json()["id"]
    reviewer = auth(centre.reviewers[0])
    declared = client.post(
        f"{API}/applications/{app_id}/conflicts",
        headers=reviewer,
        json={"reason": "Former adviser"},
    )
    assert declared.status_code == 201
    response = client.post(
        f"{API}/applications/{app_id}/reviews",
        headers=reviewer,
        json={"scores": {k: 10 for k in RUBRIC}, "recommendation": "approve"},
    )
    assert_problem(response, 403, "conflict")


def test_reject_records_reasons(client: TestClient, centre: Centre, auth: TokenFor) -> None:
    applicant = add_org(centre, "Fintech Ltd", "enterprise")
    app_id = client.post(
        f"{API}/applications", headers=auth(applicant), json=application_body(centre.scheme_id)
    ).json()["id"]
    op = auth(centre.operator)
    assert_problem(
        client.post(
            f"{API}/applications/{app_id}/decision", headers=op, json={"outcome": "reject"}
        ),
        422,
        "reasons",
    )
    response = client.post(
        f"{API}/applications/{app_id}/decision",
        headers=op,
        json={"outcome": "reject", "reasons": "Out of scope"},
    )
    assert response.status_code == 201
    seen = client.get(f"{API}/applications/{app_id}/decision", headers=auth(applicant)).json()
    assert seen["outcome"] == "rejected" and seen["reasons"] == "Out of scope"
    assert seen["allocation_id"] is None


def approvable(client: TestClient, centre: Centre, auth: TokenFor, org: str, hours: int) -> int:
    applicant = centre.applicants.get(org) or add_org(centre, org)
    app_id = client.post(
        f"{API}/applications",
        headers=auth(applicant),
        json=application_body(centre.scheme_id, gpu_hours=hours),
    ).json()["id"]
    for reviewer in centre.reviewers[:2]:
        client.post(
            f"{API}/applications/{app_id}/reviews",
            headers=auth(reviewer),
            json={"scores": {k: 5 for k in RUBRIC}, "recommendation": "approve"},
        )
    return int(app_id)


def approve_body(hours: int, **extra: object) -> dict:  # type: ignore[type-arg]
    return {
        "outcome": "approve",
        "gpu_hours": hours,
        "starts_on": str(TODAY),
        "ends_on": str(TODAY + timedelta(days=30)),
        **extra,
    }


def test_subsidy_rate_above_maximum_or_unexplained_is_refused(
    client: TestClient, centre: Centre, auth: TokenFor
) -> None:
    app_id = approvable(client, centre, auth, "Startup A", 10)
    op = auth(centre.operator)
    url = f"{API}/applications/{app_id}/decision"
    assert_problem(
        client.post(url, headers=op, json=approve_body(10, subsidy_rate="0.95")), 422, "maximum"
    )
    assert_problem(
        client.post(url, headers=op, json=approve_body(10, subsidy_rate="0.85")), 422, "reason"
    )
    ok = client.post(
        url, headers=op, json=approve_body(10, subsidy_rate="0.85", rate_reason="Exceptional case")
    )
    assert ok.status_code == 201, ok.text


def test_award_larger_than_the_uncommitted_fund_is_refused_and_changes_nothing(
    client: TestClient, centre: Centre, auth: TokenFor
) -> None:
    # the fund is HK$1,000,000; 50,000 GPU-hours x HK$36 x 0.70 = HK$1,260,000
    app_id = approvable(client, centre, auth, "Big Lab", 50_000)
    op = auth(centre.operator)
    count = ledger_count(client, op)
    fund_before = client.get(f"{API}/fund", headers=op).json()
    response = client.post(
        f"{API}/applications/{app_id}/decision", headers=op, json=approve_body(50_000)
    )
    assert_problem(response, 409, "uncommitted")
    assert client.get(f"{API}/fund", headers=op).json() == fund_before
    assert client.get(f"{API}/allocations", headers=op).json() == []
    assert client.get(f"{API}/applications/{app_id}", headers=op).json()["status"] == "submitted"
    assert ledger_count(client, op) == count


def test_approval_before_enough_reviews_is_refused(
    client: TestClient, centre: Centre, auth: TokenFor
) -> None:
    applicant = add_org(centre, "Hasty Ltd", "startup")
    app_id = client.post(
        f"{API}/applications", headers=auth(applicant), json=application_body(centre.scheme_id)
    ).json()["id"]
    response = client.post(
        f"{API}/applications/{app_id}/decision",
        headers=auth(centre.operator),
        json=approve_body(10),
    )
    assert_problem(response, 409, "reviews")


def test_unknown_gpu_model_is_refused(client: TestClient, centre: Centre, auth: TokenFor) -> None:
    applicant = add_org(centre, "Model Lab")
    response = client.post(
        f"{API}/applications",
        headers=auth(applicant),
        json=application_body(centre.scheme_id, gpu_model="B300"),
    )
    assert_problem(response, 422, "B300")


def submit(client: TestClient, headers: dict[str, str], allocation_id: int, **extra: object):  # type: ignore[no-untyped-def]
    body = {"allocation_id": allocation_id, "command": ["true"], "gpus": 1, "time_limit_s": 60}
    body.update(extra)
    return client.post(f"{API}/jobs", headers=headers, json=body)


def test_job_submission_refusals(client: TestClient, centre: Centre, auth: TokenFor) -> None:
    allocation = award(centre, "Harbour University", gpu_hours=2)
    headers = auth(centre.applicants["Harbour University"])
    assert_problem(submit(client, headers, allocation, gpus=8, time_limit_s=3600), 409, "GPU-hours")
    assert_problem(submit(client, headers, allocation, gpus=9), 422, "any H800 node")
    assert_problem(submit(client, headers, allocation, gpus=17), 422, "cluster")
    assert_problem(submit(client, headers, allocation, command=[""]), 422, "command")
    assert_problem(submit(client, headers, allocation, priority=5), 403, "operator")
    assert_problem(submit(client, headers, 999), 404)
    assert client.get(f"{API}/jobs", headers=headers).json() == []
    ok = submit(client, headers, allocation, gpus=2, time_limit_s=600)
    assert ok.status_code == 201 and ok.json()["state"] == "queued"


def test_another_organisations_allocation_is_out_of_reach(
    client: TestClient, centre: Centre, auth: TokenFor
) -> None:
    theirs = award(centre, "Harbour University", gpu_hours=10)
    outsider = add_org(centre, "Other Org")
    assert_problem(submit(client, auth(outsider), theirs), 403, "another organisation")
    assert_problem(client.get(f"{API}/allocations/{theirs}", headers=auth(outsider)), 403)
    assert client.get(f"{API}/allocations", headers=auth(outsider)).json() == []


def test_allocation_not_yet_started_refuses_jobs(
    client: TestClient, centre: Centre, auth: TokenFor
) -> None:
    app_id = approvable(client, centre, auth, "Future Lab", 10)
    decided = client.post(
        f"{API}/applications/{app_id}/decision",
        headers=auth(centre.operator),
        json={
            "outcome": "approve",
            "gpu_hours": 10,
            "starts_on": str(TODAY + timedelta(days=10)),
            "ends_on": str(TODAY + timedelta(days=20)),
        },
    )
    assert decided.status_code == 201, decided.text
    allocation = decided.json()["allocation_id"]
    assert_problem(
        submit(client, auth(centre.applicants["Future Lab"]), allocation), 409, "starts on"
    )


def test_closed_allocation_returns_its_commitment_and_refuses_jobs(
    client: TestClient, centre: Centre, auth: TokenFor
) -> None:
    allocation = award(centre, "Harbour University", gpu_hours=10)
    op = auth(centre.operator)
    available_before = client.get(f"{API}/fund", headers=op).json()[0]["available_cents"]
    closed = client.post(f"{API}/allocations/{allocation}/close", headers=op)
    assert closed.status_code == 200, closed.text
    assert closed.json()["status"] == "closed"
    fund = client.get(f"{API}/fund", headers=op).json()[0]
    assert fund["available_cents"] == available_before + 10 * 3600 * 7000 // 10000
    assert_problem(
        submit(client, auth(centre.applicants["Harbour University"]), allocation), 409, "closed"
    )
    ledger_count(client, op)


def test_cancel_a_queued_job_and_see_it_in_the_queue_first(
    client: TestClient, centre: Centre, auth: TokenFor
) -> None:
    allocation = award(centre, "Harbour University", gpu_hours=10)
    headers = auth(centre.applicants["Harbour University"])
    first = submit(client, headers, allocation).json()["id"]
    second = submit(client, headers, allocation).json()["id"]
    queue = client.get(f"{API}/queue", headers=headers).json()
    assert [(e["position"], e["job"]["id"]) for e in queue] == [(1, first), (2, second)]
    cancelled = client.post(f"{API}/jobs/{first}/cancel", headers=headers).json()
    assert cancelled["state"] == "cancelled"
    assert_problem(client.post(f"{API}/jobs/{first}/cancel", headers=headers), 409, "already ended")
    assert [e["job"]["id"] for e in client.get(f"{API}/queue", headers=headers).json()] == [second]


def test_funder_reads_but_cannot_decide(client: TestClient, centre: Centre, auth: TokenFor) -> None:
    app_id = approvable(client, centre, auth, "Read Only Lab", 10)
    funder = auth(centre.funder)
    assert client.get(f"{API}/fund", headers=funder).status_code == 200
    assert client.get(f"{API}/ledger/verify", headers=funder).json()["ok"] is True
    assert_problem(
        client.post(f"{API}/applications/{app_id}/decision", headers=funder, json=approve_body(10)),
        403,
    )
    applicant = auth(centre.applicants["Read Only Lab"])
    assert_problem(client.get(f"{API}/fund", headers=applicant), 403)
    assert_problem(client.get(f"{API}/ledger/export", headers=applicant), 403)


def test_nodes_show_the_inventory(client: TestClient, centre: Centre, auth: TokenFor) -> None:
    nodes = client.get(f"{API}/nodes", headers=auth(centre.operator)).json()
    assert [(n["name"], n["gpus"], n["free_gpus"]) for n in nodes] == [
        ("node1", 8, 8),
        ("node2", 8, 8),
    ]


def test_invoice_month_must_be_well_formed(
    client: TestClient, centre: Centre, auth: TokenFor
) -> None:
    applicant = add_org(centre, "Invoice Lab")
    assert_problem(
        client.get(f"{API}/invoices/{applicant.org_id}/2026-13", headers=auth(applicant)),
        422,
        "month",
    )
    other = add_org(centre, "Other Lab")
    assert_problem(
        client.get(f"{API}/invoices/{other.org_id}/2026-11", headers=auth(applicant)), 403
    )
