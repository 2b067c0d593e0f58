"""Single sign-on against a real OpenID Connect provider on localhost (oidc-provider-mock: a
provider for tests that signs real ID tokens and serves its discovery document and keys)."""

from __future__ import annotations

from collections.abc import Iterator
from urllib.parse import urlsplit

import httpx
import pytest
from fastapi.testclient import TestClient
from oidc_provider_mock import User, run_server_in_thread
from pydantic import SecretStr

from aisc.api.app import create_app
from aisc.runtime import Runtime
from aisc.web.oidc import PendingSignIn
from aisc.web.routes.signin import SSO_COOKIE
from tests.builders import Centre

APPLICANT_EMAIL = "lead@harbouru.test"  # tests.builders.add_org's lead of "Harbour U"
PEOPLE = [
    User(sub="hu-lead", claims={"email": APPLICANT_EMAIL, "email_verified": True}),
    User(sub="unverified", claims={"email": APPLICANT_EMAIL, "email_verified": False}),
    User(sub="stranger", claims={"email": "stranger@elsewhere.test", "email_verified": True}),
]


@pytest.fixture
def issuer() -> Iterator[str]:
    with run_server_in_thread(user_claims=PEOPLE, require_nonce=True) as server:
        yield f"http://localhost:{server.server_port}"


@pytest.fixture
def sso_client(runtime: Runtime, centre: Centre, issuer: str) -> Iterator[TestClient]:
    runtime.settings = runtime.settings.model_copy(
        update={
            "oidc_issuer": issuer,
            "oidc_label": "Centre ID",
            "oidc_client_secret": SecretStr("aisc-test-secret"),
        }
    )
    with TestClient(create_app(runtime, run_controller=False)) as client:
        yield client


def at_provider(authorize_url: str, subject: str) -> str:
    """The person signs in at the provider; returns where it sends the browser back to."""
    answer = httpx.post(authorize_url, data={"sub": subject}, follow_redirects=False)
    assert answer.status_code in (302, 303), answer.text
    return answer.headers["location"]


def back_at_aisc(client: TestClient, location: str):  # type: ignore[no-untyped-def]
    parts = urlsplit(location)
    return client.get(f"{parts.path}?{parts.query}", follow_redirects=False)


def sign_in_as(client: TestClient, subject: str, next_path: str = "/jobs"):  # type: ignore[no-untyped-def]
    started = client.get(f"/login/sso?next={next_path}", follow_redirects=False)
    assert started.status_code == 303
    return back_at_aisc(client, at_provider(started.headers["location"], subject))


def test_a_verified_email_signs_in_and_lands_on_the_page_asked_for(
    sso_client: TestClient,
) -> None:
    assert "Sign in with Centre ID" in sso_client.get("/login").text
    started = sso_client.get("/login/sso?next=/jobs", follow_redirects=False)
    authorize = started.headers["location"]
    assert "code_challenge_method=S256" in authorize and "nonce=" in authorize
    returned = back_at_aisc(sso_client, at_provider(authorize, "hu-lead"))
    assert returned.status_code == 303 and returned.headers["location"] == "/jobs"
    page = sso_client.get("/jobs")
    assert page.status_code == 200 and "Harbour U Lead" in page.text


@pytest.mark.parametrize(
    ("subject", "refusal"),
    [
        ("unverified", "has not verified this email"),
        ("stranger", "has no aisc account"),
    ],
)
def test_only_a_verified_email_of_an_existing_user_signs_in(
    sso_client: TestClient, subject: str, refusal: str
) -> None:
    returned = sign_in_as(sso_client, subject)
    assert returned.status_code == 401 and refusal in returned.text
    assert sso_client.get("/jobs", follow_redirects=False).status_code == 303  # still signed out


def test_a_return_that_did_not_start_here_is_refused(sso_client: TestClient) -> None:
    started = sso_client.get("/login/sso", follow_redirects=False)
    location = at_provider(started.headers["location"], "hu-lead")
    sso_client.cookies.delete(SSO_COOKIE, path="/login/sso")
    refused = back_at_aisc(sso_client, location)
    assert refused.status_code == 401 and "did not start here" in refused.text


def test_an_id_token_for_another_sign_in_is_refused(sso_client: TestClient) -> None:
    started = sso_client.get("/login/sso", follow_redirects=False)
    location = at_provider(started.headers["location"], "hu-lead")
    pending = PendingSignIn.decode(sso_client.cookies.get(SSO_COOKIE))
    assert pending is not None
    # same state, another nonce: the provider's token was minted for a different sign-in
    swapped = PendingSignIn(pending.state, "another-nonce", pending.verifier, pending.next_path)
    sso_client.cookies.set(SSO_COOKIE, swapped.encode(), path="/login/sso")
    refused = back_at_aisc(sso_client, location)
    assert refused.status_code == 401 and "ID token is not valid" in refused.text


def test_the_provider_saying_no_is_shown(sso_client: TestClient) -> None:
    started = sso_client.get("/login/sso", follow_redirects=False)
    denied = httpx.post(started.headers["location"], data={"action": "deny"})
    assert denied.status_code in (302, 303)
    refused = back_at_aisc(sso_client, denied.headers["location"])
    assert refused.status_code == 401 and "did not sign you in (access_denied)" in refused.text


def test_without_an_issuer_there_is_no_single_sign_on(runtime: Runtime, centre: Centre) -> None:
    with TestClient(create_app(runtime, run_controller=False)) as client:
        assert "Sign in with" not in client.get("/login").text
        assert client.get("/login/sso").status_code == 404
