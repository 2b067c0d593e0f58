"""The applicant's portal through HTTP: sign-in, CSRF, the multi-step application, jobs,
invoices and progress reports."""

from __future__ import annotations

import re
from collections.abc import Callable
from datetime import date, timedelta

import pytest
from sqlalchemy import func, select

from aisc.runtime import Runtime
from aisc.services import jobs
from aisc.services.context import Actor
from aisc.store.tables import Application, Job, WebSession
from tests.builders import Centre, award
from tests.web.conftest import PASSWORD, Portal

Emails = Callable[[Actor], str]
Portals = Callable[[], Portal]


def count(runtime: Runtime, table: type) -> int:
    with runtime.uow() as uow:
        return uow.session.scalar(select(func.count()).select_from(table)) or 0


def applicant_portal(centre: Centre, email_of: Emails, portal: Portals) -> Portal:
    p = portal()
    p.sign_in(email_of(centre.applicants["Harbour U"]))
    return p


def test_pages_need_a_session_and_sign_in_returns_to_the_page(
    centre: Centre, email_of: Emails, portal: Portals
) -> None:
    p = portal()
    response = p.client.get("/jobs", follow_redirects=False)
    assert response.status_code == 303
    assert response.headers["location"] == "/login?next=/jobs"
    email = email_of(centre.applicants["Harbour U"])
    signed = p.client.post(
        "/login",
        data={"email": email, "password": PASSWORD, "next": "/jobs"},
        follow_redirects=False,
    )
    assert signed.status_code == 303 and signed.headers["location"] == "/jobs"
    cookie = signed.headers["set-cookie"].lower()
    assert "httponly" in cookie and "samesite=lax" in cookie
    assert p.client.get("/jobs").status_code == 200


def test_sign_in_never_redirects_to_another_site(
    centre: Centre, email_of: Emails, portal: Portals
) -> None:
    email = email_of(centre.applicants["Harbour U"])
    signed = portal().client.post(
        "/login",
        data={"email": email, "password": PASSWORD, "next": "//evil.example/"},
        follow_redirects=False,
    )
    assert signed.headers["location"] == "/org"


def test_wrong_passwords_are_refused_alike_and_then_slowed_down(
    centre: Centre, email_of: Emails, portal: Portals, runtime: Runtime
) -> None:
    email = email_of(centre.applicants["Harbour U"])
    p = portal()
    unknown = p.client.post("/login", data={"email": "nobody@x.test", "password": "whatever!!"})
    wrong = p.client.post("/login", data={"email": email, "password": "not the password"})
    assert unknown.status_code == wrong.status_code == 401
    assert "The email or password is not right".lower() in wrong.text.lower()
    assert "the email or password is not right" in unknown.text
    for _ in range(4):
        p.client.post("/login", data={"email": email, "password": "not the password"})
    locked = p.client.post("/login", data={"email": email, "password": PASSWORD})
    assert locked.status_code == 401 and "too many failed sign-ins" in locked.text
    assert count(runtime, WebSession) == 0


def test_sign_out_ends_the_session_on_the_server(
    centre: Centre, email_of: Emails, portal: Portals
) -> None:
    p = applicant_portal(centre, email_of, portal)
    cookie = p.client.cookies.get("aisc_session")
    assert p.post("/logout").status_code == 303
    replay = portal()
    replay.client.cookies.set("aisc_session", cookie or "")
    assert replay.client.get("/org", follow_redirects=False).status_code == 303


def test_a_post_without_the_csrf_token_is_refused_and_changes_nothing(
    centre: Centre, email_of: Emails, portal: Portals, runtime: Runtime
) -> None:
    p = applicant_portal(centre, email_of, portal)
    refused = p.post("/org/profile", {"sector": "Speech AI"}, csrf=False)
    assert refused.status_code == 403 and "did not come from this site" in refused.text
    forged = p.post("/org/profile", {"sector": "Speech AI", "csrf_token": "forged"})
    assert forged.status_code == 403
    assert "Speech AI" not in p.get("/org").text
    assert p.post("/org/profile", {"sector": "Speech AI"}).status_code == 303
    assert "Speech AI" in p.get("/org").text


def application_form(centre: Centre, **overrides: object) -> dict[str, object]:
    today = date.today()
    form: dict[str, object] = {
        "scheme_id": str(centre.scheme_id),
        "title": "Cantonese ASR",
        "gpu_model": "H800",
        "gpu_hours": "500",
        "starts_on": (today + timedelta(days=1)).isoformat(),
        "ends_on": (today + timedelta(days=120)).isoformat(),
        "justification": "A 1B-parameter speech model, 3,000 hours of audio, bf16, batch 512.",
        "intended_use": "Subtitles for public broadcasts",
        "risk_tier": "limited",
        "human_oversight": "Editors review every subtitle file.",
        "declarations": ["accurate", "acceptable_use", "publication"],
    }
    form.update(overrides)
    return form


def test_the_application_form_goes_step_by_step_and_shows_errors_beside_fields(
    centre: Centre, email_of: Emails, portal: Portals, runtime: Runtime
) -> None:
    p = applicant_portal(centre, email_of, portal)
    assert "Compute request" in p.get("/apply").text
    bad = application_form(centre, gpu_hours="lots", justification="short", step="request")
    first = p.post("/apply", bad)
    assert first.status_code == 422
    assert 'data-error-for="gpu_hours"' in first.text and "whole number" in first.text
    assert 'data-error-for="justification"' in first.text
    good = application_form(centre, step="request")
    good.pop("intended_use")
    second = p.post("/apply", good)
    assert second.status_code == 200 and 'value="governance"' in second.text
    # leaving the governance step with a missing answer stays there, beside the field
    governance = p.post("/apply", {**good, "step": "governance"})
    assert governance.status_code == 422 and 'data-error-for="intended_use"' in governance.text
    no_declarations = application_form(centre, step="declarations", declarations=["accurate"])
    declared = p.post("/apply", no_declarations)
    assert declared.status_code == 422 and "every declaration is needed" in declared.text
    assert count(runtime, Application) == 0
    review = p.post("/apply", application_form(centre, step="declarations"))
    assert review.status_code == 200 and "Check your application" in review.text
    submitted = p.post("/apply", application_form(centre, step="review"))
    assert submitted.status_code == 303
    page = p.get(submitted.headers["location"])
    assert "was submitted" in page.text and "Under review" in page.text
    with runtime.uow() as uow:
        stored = uow.session.scalars(select(Application)).one()
    assert stored.title == "Cantonese ASR" and stored.gpu_hours == 500
    assert stored.declarations == ["acceptable_use", "accurate", "publication"]


def test_a_period_outside_the_scheme_is_shown_on_the_request_step(
    centre: Centre, email_of: Emails, portal: Portals, runtime: Runtime
) -> None:
    p = applicant_portal(centre, email_of, portal)
    late = application_form(centre, step="review", ends_on="2099-01-01")
    response = p.post("/apply", late)
    assert response.status_code == 422
    assert 'value="request"' in response.text and "within the scheme" in response.text
    assert count(runtime, Application) == 0


def test_jobs_are_submitted_watched_and_cancelled_from_the_portal(
    centre: Centre, email_of: Emails, portal: Portals, runtime: Runtime
) -> None:
    allocation_id = award(centre, "Harbour U", gpu_hours=10)
    p = applicant_portal(centre, email_of, portal)
    assert "10.0 GPU-h left" in p.get("/jobs").text
    too_big = p.post(
        "/jobs",
        {
            "allocation_id": allocation_id,
            "name": "big",
            "command": "python train.py",
            "gpus": "8",
            "time_limit_min": "600",
        },
    )
    assert too_big.status_code == 422 and "GPU-hours left" in too_big.text
    unreadable = p.post(
        "/jobs",
        {
            "allocation_id": allocation_id,
            "name": "x",
            "command": "python 'unclosed",
            "gpus": "1",
            "time_limit_min": "10",
        },
    )
    assert unreadable.status_code == 422 and 'data-error-for="command"' in unreadable.text
    assert count(runtime, Job) == 0
    ok = p.post(
        "/jobs",
        {
            "allocation_id": allocation_id,
            "name": "asr-train",
            "command": "python -c 'print(1)'",
            "gpus": "1",
            "time_limit_min": "10",
        },
    )
    assert ok.status_code == 303
    job_page = p.get(ok.headers["location"])
    assert 'data-state="queued"' in job_page.text and "asr-train" in job_page.text
    job_id = int(ok.headers["location"].rsplit("/", 1)[1])
    with runtime.uow() as uow:
        assert uow.session.get(Job, job_id).argv == ["python", "-c", "print(1)"]  # type: ignore[union-attr]
    assert "asr-train" in p.get("/jobs/table").text
    assert p.post(f"/jobs/{job_id}/cancel").status_code == 303
    assert jobs.get_job(runtime.uow(), centre.operator, job_id).state == "cancelled"


def test_another_organisations_pages_are_refused(
    centre: Centre, email_of: Emails, portal: Portals
) -> None:
    allocation_id = award(centre, "Kowloon AI", gpu_hours=10)
    p = applicant_portal(centre, email_of, portal)
    refused = p.get(f"/allocations/{allocation_id}")
    assert refused.status_code == 403 and "another organisation" in refused.text
    assert p.get("/ops").status_code == 403


def test_invoices_download_as_csv_and_pdf(
    centre: Centre, email_of: Emails, portal: Portals
) -> None:
    award(centre, "Harbour U", gpu_hours=10)
    p = applicant_portal(centre, email_of, portal)
    month = date.today().strftime("%Y-%m")
    page = p.get(f"/invoices?month={month}")
    assert page.status_code == 200 and "Co-pay" in page.text
    csv = p.get(f"/invoices/{month}.csv")
    assert csv.headers["content-type"].startswith("text/csv")
    assert csv.text.splitlines()[0].startswith("invoice,job_id")
    pdf = p.get(f"/invoices/{month}.pdf")
    assert pdf.headers["content-type"] == "application/pdf" and pdf.content.startswith(b"%PDF")
    assert p.get("/invoices?month=2026-13").status_code == 422


def test_pages_carry_a_content_security_policy(
    centre: Centre, email_of: Emails, portal: Portals
) -> None:
    p = applicant_portal(centre, email_of, portal)
    headers = p.get("/org").headers
    assert "default-src 'self'" in headers["content-security-policy"]
    assert headers["x-content-type-options"] == "nosniff"


def test_an_unexpected_failure_is_an_error_page_not_json(
    centre: Centre, email_of: Emails, runtime: Runtime, monkeypatch: pytest.MonkeyPatch
) -> None:
    from fastapi.testclient import TestClient

    from aisc.api.app import create_app
    from aisc.services import accounts

    def broken(*args: object, **kwargs: object) -> None:
        raise RuntimeError("disk on fire")

    monkeypatch.setattr(accounts, "get_organisation", broken)
    with TestClient(create_app(runtime, run_controller=False), raise_server_exceptions=False) as c:
        p = Portal(c)
        p.sign_in_to(email_of(centre.applicants["Harbour U"]), "/jobs")
        failed = c.get("/org")
        assert failed.status_code == 500
        assert failed.headers["content-type"].startswith("text/html")
        assert "nothing was changed" in failed.text and "disk on fire" not in failed.text
        api = c.get("/api/v1/health")
        assert api.status_code == 200  # the API's own answers are untouched


def test_api_tokens_are_issued_once_and_revoked_from_the_account_page(
    centre: Centre, email_of: Emails, portal: Portals
) -> None:
    p = applicant_portal(centre, email_of, portal)
    issued = p.post("/account/tokens", {"label": "laptop"})
    assert issued.status_code == 200
    token = re.search(r'data-testid="new-token">(aisc_[^<]+)<', issued.text)
    assert token, "the new token is shown once"
    headers = {"Authorization": f"Bearer {token.group(1)}"}
    me = p.client.get("/api/v1/me", headers=headers)
    assert me.status_code == 200 and me.json()["name"] == "Harbour U Lead"
    listed = p.get("/account")
    assert "laptop" in listed.text and token.group(1) not in listed.text  # never shown again
    assert "<title>Your account · aisc</title>" in listed.text
    token_id = re.search(r'data-token="(\d+)"', listed.text)
    assert token_id
    assert p.post(f"/account/tokens/{token_id.group(1)}/revoke").status_code == 303
    assert p.client.get("/api/v1/me", headers=headers).status_code == 401
    # nobody revokes another user's token
    other = portal()
    other.sign_in(email_of(centre.reviewers[0]))
    assert other.post(f"/account/tokens/{token_id.group(1)}/revoke").status_code == 404


def test_progress_reports_are_submitted_with_errors_beside_the_summary(
    centre: Centre, email_of: Emails, portal: Portals, runtime: Runtime
) -> None:
    from aisc.services import progress
    from aisc.services.context import utcnow

    award(centre, "Harbour U", gpu_hours=10)
    p = applicant_portal(centre, email_of, portal)
    listed = p.get("/reports")
    assert listed.status_code == 200
    first = progress.list_reports(runtime.uow(), centre.operator, utcnow())[0].report
    assert f'data-report="{first.id}"' in listed.text
    short = p.post(f"/reports/{first.id}", {"summary": "Going well."})
    assert short.status_code == 422 and 'data-error-for="summary"' in short.text
    assert "Going well." in short.text  # what was typed comes back
    summary = "Trained the 1B model to 6.1% word error rate; two papers submitted; on budget."
    assert p.post(f"/reports/{first.id}", {"summary": summary}).status_code == 303
    assert summary in p.get("/reports").text
