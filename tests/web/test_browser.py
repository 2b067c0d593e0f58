"""The whole award cycle in a real browser (Debian's chromium, driven by playwright), against a
server started on localhost: apply, a conflicted reviewer refused, two reviews, approval, a job
watched to the end, the invoice's split, and the fund moving. Screenshots of each role's main
page, at laptop and phone widths, are left in test-artifacts/screenshots."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import pytest

from aisc.runtime import Runtime
from aisc.services.context import Actor
from tests.builders import RUBRIC, Centre
from tests.servers import serve_in_thread
from tests.web.conftest import PASSWORD

pytestmark = pytest.mark.slow

LAPTOP = {"width": 1280, "height": 860}
PHONE = {"width": 390, "height": 844}


def cents(text: str) -> int:
    """'HK$1,234.56' -> 123456"""
    match = re.search(r"(-?)HK\$([\d,]+)\.(\d\d)", text)
    assert match, f"no HK$ amount in {text!r}"
    value = int(match.group(2).replace(",", "")) * 100 + int(match.group(3))
    return -value if match.group(1) else value


class Browsing:
    """One signed-in browser context per user; console errors (CSP included) are collected."""

    def __init__(self, browser: Any, url: str, artifacts: Path) -> None:
        self.browser, self.url, self.artifacts = browser, url, artifacts
        self.errors: list[str] = []

    @contextmanager
    def as_user(self, email: str, viewport: dict[str, int] = LAPTOP) -> Iterator[Any]:
        context = self.browser.new_context(viewport=viewport)
        page = context.new_page()
        page.set_default_timeout(15_000)
        page.on("console", self._console)
        page.on("pageerror", lambda e: self.errors.append(str(e)))
        page.on("response", self._response)
        page.goto(self.url + "/")
        page.fill("#email", email)
        page.fill("#password", PASSWORD)
        page.click("button:has-text('Sign in')")
        page.wait_for_load_state()
        assert "/login" not in page.url, f"{email} could not sign in"
        try:
            yield page
        finally:
            context.close()

    def _console(self, message: Any) -> None:
        # a page answered 4xx on purpose (a form error, a refusal) is logged as a failed load;
        # assets are checked in _response instead
        if message.type == "error" and not message.text.startswith("Failed to load resource"):
            self.errors.append(message.text)

    def _response(self, response: Any) -> None:
        if "/static/" in response.url and response.status >= 400:
            self.errors.append(f"{response.url}: {response.status}")

    def go(self, page: Any, path: str) -> None:
        page.goto(self.url + path)

    def shoot(self, page: Any, name: str) -> None:
        page.wait_for_timeout(300)  # charts draw after load
        page.screenshot(path=str(self.artifacts / f"{name}.png"), full_page=True)


def test_the_award_cycle_in_a_browser(
    runtime: Runtime,
    centre: Centre,
    email_of: Callable[[Actor], str],
    browser: Any,
    artifacts: Path,
) -> None:
    applicant = email_of(centre.applicants["Harbour U"])
    conflicted, first, second = (email_of(r) for r in centre.reviewers)
    operator, funder = email_of(centre.operator), email_of(centre.funder)
    today = date.today()
    with serve_in_thread(runtime) as url:
        b = Browsing(browser, url, artifacts)

        # the applicant applies through the multi-step form; a mistake is shown beside its field
        with b.as_user(applicant) as page:
            b.go(page, "/apply")
            page.select_option("#f-scheme_id", str(centre.scheme_id))
            page.fill("#f-title", "Cantonese speech recognition")
            page.fill("#f-gpu_hours", "20")
            page.fill("#f-starts_on", today.isoformat())
            page.fill("#f-ends_on", (today + timedelta(days=90)).isoformat())
            page.fill("#f-justification", "too short")
            page.click("button:has-text('Continue')")
            error = page.locator("[data-error-for=justification]")
            assert "at least" in error.inner_text()
            page.fill(
                "#f-justification",
                "A 1B-parameter model on 3,000 hours of audio in bf16: 20 GPU-hours on H800.",
            )
            page.click("button:has-text('Continue')")
            page.fill("#f-intended_use", "Subtitles for public broadcasts")
            page.select_option("#f-risk_tier", "limited")
            page.fill("#f-human_oversight", "Editors check every subtitle file before release.")
            page.click("button:has-text('Continue')")
            for box in page.locator("input[name=declarations]").all():
                box.check()
            page.click("button:has-text('Continue')")
            assert "Check your application" in page.content()
            page.click("button:has-text('Submit application')")
            page.wait_for_url(re.compile(r"/applications/\d+"))
            assert "was submitted" in page.content()
            application_id = int(re.search(r"/applications/(\d+)", page.url).group(1))  # type: ignore[union-attr]

        # a reviewer with a conflict declares it and is refused the scoring form
        with b.as_user(conflicted) as page:
            b.go(page, f"/review/{application_id}")
            page.fill("#f-reason", "I supervise the project lead's doctoral student.")
            page.click("button:has-text('Declare conflict')")
            b.go(page, f"/review/{application_id}")
            assert page.locator("[data-testid=refusal]").is_visible()
            assert page.locator("[data-testid=review-form]").count() == 0

        # two reviewers score against the rubric
        for n, email in enumerate((first, second)):
            with b.as_user(email) as page:
                b.go(page, "/review")
                if n == 0:
                    b.shoot(page, "reviewer")
                page.click(f"a[href='/review/{application_id}']")
                inputs = page.locator("[data-testid=review-form] input[type=number]")
                assert inputs.count() == len(RUBRIC)
                for i in range(inputs.count()):
                    inputs.nth(i).fill(str(7 + n))
                page.select_option("#f-recommendation", "approve")
                page.fill("#f-comment", "A clear plan with a sound compute estimate.")
                page.click("button:has-text('Submit review')")
                page.wait_for_load_state()
                # after their own review, a reviewer sees the committee's
                assert "The committee's reviews" in page.content()

        # the funder's position before the award
        with b.as_user(funder) as page:
            b.go(page, "/fund")
            committed_before = cents(page.locator("[data-testid=fund-committed]").inner_text())
            spent_before = cents(page.locator("[data-testid=fund-spent]").inner_text())

        # the operator sees both scores side by side and approves
        with b.as_user(operator) as page:
            b.go(page, f"/ops/applications/{application_id}")
            assert "2 of 2 required" in page.locator("[data-testid=review-count]").inner_text()
            page.click("button:has-text('Approve and commit the award')")
            page.wait_for_load_state()
            allocation_text = page.locator("[data-testid=allocation]").inner_text()
            allocation_id = int(re.search(r"\d+", allocation_text).group(0))  # type: ignore[union-attr]
            b.go(page, "/ops")
            b.shoot(page, "operator")

        # the grantee is told, submits a job and watches it finish
        with b.as_user(applicant) as page:
            assert page.locator("[data-testid=unread]").inner_text() == "1"
            b.go(page, "/notifications")
            assert "approved" in page.locator("ul.inbox").inner_text()
            b.go(page, "/jobs")
            page.select_option("#f-allocation_id", str(allocation_id))
            page.fill("#f-name", "asr-smoke")
            page.fill("#f-command", "python -c \"import time; time.sleep(1.5); print('done')\"")
            page.fill("#f-gpus", "2")
            page.fill("#f-time_limit_min", "5")
            page.click("button:has-text('Submit job')")
            page.wait_for_selector("[data-testid=job-state][data-state=completed]", timeout=30_000)
            assert "done" in page.locator("[data-testid=stdout]").inner_text()
            b.go(page, f"/invoices?month={today:%Y-%m}")
            charge = cents(page.locator("[data-testid=charge]").inner_text())
            subsidy = cents(page.locator("[data-testid=subsidy]").inner_text())
            copay = cents(page.locator("[data-testid=copay]").inner_text())
            assert charge > 0 and subsidy + copay == charge
            assert subsidy == charge * 7000 // 10_000  # the scheme's default 70%
            b.go(page, "/org")
            b.shoot(page, "applicant")
            b.go(page, f"/allocations/{allocation_id}")
            b.shoot(page, "allocation")

        # the funder sees the award committed and the job's subsidy spent; the ledger verifies
        with b.as_user(funder) as page:
            b.go(page, "/fund")
            committed = cents(page.locator("[data-testid=fund-committed]").inner_text())
            spent = cents(page.locator("[data-testid=fund-spent]").inner_text())
            assert spent - spent_before == subsidy
            assert committed - committed_before == 20 * 3600 * 7000 // 10_000 - subsidy
            assert page.locator("[data-testid=ledger-status]").inner_text() == "OK"
            b.shoot(page, "funder")

        # every role's main page also reads at a phone's width
        for role, email, path in (
            ("applicant", applicant, "/org"),
            ("reviewer", first, "/review"),
            ("operator", operator, "/ops"),
            ("funder", funder, "/fund"),
        ):
            with b.as_user(email, viewport=PHONE) as page:
                b.go(page, path)
                width = page.evaluate("document.documentElement.scrollWidth")
                assert width <= PHONE["width"], f"{path} scrolls sideways on a phone ({width}px)"
                b.shoot(page, f"{role}-phone")

        assert b.errors == []
