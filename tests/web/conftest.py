"""Portal fixtures: a centre built through the services, and clients signed in through /login."""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from aisc.api.app import create_app
from aisc.runtime import Runtime
from aisc.services import sessions
from aisc.services.context import SYSTEM, Actor
from tests.builders import Centre, add_org, build_centre
from tests.conftest import runtime

__all__ = ["runtime"]

PASSWORD = "correct horse battery"
CSRF = re.compile(r'name="csrf_token" value="([^"]+)"')


class Portal:
    """A browser-like client: cookies kept, the CSRF token read from the pages it gets."""

    def __init__(self, client: TestClient) -> None:
        self.client = client
        self.csrf = ""

    def get(self, path: str, **kwargs: object):  # type: ignore[no-untyped-def]
        response = self.client.get(path, **kwargs)  # type: ignore[arg-type]
        found = CSRF.search(response.text)
        if found:
            self.csrf = found.group(1)
        return response

    def post(self, path: str, data: dict[str, object] | None = None, csrf: bool = True):  # type: ignore[no-untyped-def]
        form = dict(data or {})
        if csrf:
            form.setdefault("csrf_token", self.csrf)
        return self.client.post(path, data=form, follow_redirects=False)

    def sign_in_to(self, email: str, next_path: str) -> None:
        """Sign in and go straight to `next_path` (not the role's home page)."""
        response = self.client.post(
            "/login",
            data={"email": email, "password": PASSWORD, "next": next_path},
            follow_redirects=False,
        )
        assert response.status_code == 303 and response.headers["location"] == next_path

    def sign_in(self, email: str, password: str = PASSWORD) -> None:
        response = self.client.post(
            "/login", data={"email": email, "password": password}, follow_redirects=False
        )
        assert response.status_code == 303, response.text
        self.get(response.headers["location"])


@pytest.fixture
def centre(runtime: Runtime) -> Centre:
    built = build_centre(runtime.uow)
    add_org(built, "Harbour U")
    return built


@pytest.fixture
def email_of(centre: Centre, runtime: Runtime) -> Callable[[Actor], str]:
    """Gives the actor a portal password and returns their email."""
    from aisc.store.tables import User

    def email(actor: Actor) -> str:
        sessions.set_password(runtime.uow(), SYSTEM, actor.user_id, PASSWORD)
        with runtime.uow() as uow:
            user = uow.session.get(User, actor.user_id)
            assert user is not None
            return user.email

    return email


@pytest.fixture
def portal(runtime: Runtime) -> Iterator[Callable[[], Portal]]:
    clients: list[TestClient] = []

    def new() -> Portal:
        client = TestClient(create_app(runtime, run_controller=False))
        client.__enter__()
        clients.append(client)
        return Portal(client)

    yield new
    for client in clients:
        client.__exit__(None, None, None)


CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


@pytest.fixture(scope="session")
def browser() -> Iterator[object]:
    """Debian's chromium, headless, driven by playwright."""
    if not os.path.exists(CHROMIUM):
        if os.environ.get("AISC_TEST_BROWSER") == "1":
            pytest.fail(f"AISC_TEST_BROWSER=1 but {CHROMIUM} is missing")
        pytest.skip(f"{CHROMIUM} is not installed (scripts/ensure-chromium installs it)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        launched = pw.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        yield launched
        launched.close()


@pytest.fixture(scope="session")
def artifacts() -> Path:
    """Where browser tests leave their screenshots (AISC_TEST_ARTIFACTS, or test-artifacts/)."""
    path = Path(os.environ.get("AISC_TEST_ARTIFACTS", "test-artifacts")) / "screenshots"
    path.mkdir(parents=True, exist_ok=True)
    return path
