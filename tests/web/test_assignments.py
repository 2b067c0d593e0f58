"""An operator asks a reviewer for a review from the decision page; the reviewer sees it first."""

from __future__ import annotations

from collections.abc import Callable

from aisc.runtime import Runtime
from aisc.services import applications, reviews
from aisc.services.context import Actor
from tests.builders import Centre, application_request
from tests.web.conftest import Portal


def test_an_operator_asks_and_withdraws_a_review_in_the_portal(
    runtime: Runtime,
    centre: Centre,
    email_of: Callable[[Actor], str],
    portal: Callable[[], Portal],
) -> None:
    app_id = applications.submit_application(
        runtime.uow(), centre.applicants["Harbour U"], application_request(centre.scheme_id)
    ).id
    asked, conflicted = centre.reviewers[0], centre.reviewers[1]
    reviews.declare_conflict(runtime.uow(), conflicted, app_id, "Former student of the lead")
    operator = portal()
    operator.sign_in(email_of(centre.operator))
    page = operator.get(f"/ops/applications/{app_id}")
    assert 'data-testid="assignments"' in page.text
    refused = operator.post(
        f"/ops/applications/{app_id}/assign", {"reviewer_id": conflicted.user_id}
    )
    assert refused.status_code == 403 and "Former student" in refused.text
    done = operator.post(f"/ops/applications/{app_id}/assign", {"reviewer_id": asked.user_id})
    assert done.status_code == 303
    assert f'data-assigned="{asked.user_id}"' in operator.get(f"/ops/applications/{app_id}").text

    reviewer = portal()
    reviewer.sign_in(email_of(asked))
    worklist = reviewer.get("/review")
    assert 'data-testid="assigned"' in worklist.text
    assert 'data-testid="unread">1<' in worklist.text  # the request is in their inbox
    withdrawn = operator.post(
        f"/ops/applications/{app_id}/assign", {"reviewer_id": asked.user_id, "remove": "on"}
    )
    assert withdrawn.status_code == 303
    assert 'data-testid="assigned"' not in reviewer.get("/review").text
    unknown = operator.post(f"/ops/applications/{app_id}/assign", {"reviewer_id": "nobody"})
    assert unknown.status_code == 422 and "whole number" in unknown.text
