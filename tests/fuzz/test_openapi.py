"""Schemathesis against the served OpenAPI document: every /api/v1 operation, as an operator and
as an applicant, with valid and invalid requests. Whatever is sent, the answer is never a 5xx,
its status code and content type are documented, its body matches the documented schema, and
a request that breaks the document's own schema is refused.

Each operation is its own test, on a freshly seeded centre (a scheme, two organisations, an
award with a finished and queued jobs, a pending application), so a failure replays alone.
Path ids are often swapped for ids the seed made, so requests reach past "not found".
"""

from __future__ import annotations

import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import schemathesis
from fastapi import FastAPI
from fastapi.testclient import TestClient
from hypothesis import strategies as st
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    negative_data_rejection,
    response_schema_conformance,
    status_code_conformance,
)

from aisc.api.app import create_app
from aisc.api.problems import PROBLEM_JSON
from aisc.config import Settings
from aisc.runtime import Runtime
from aisc.services import accounts, applications, jobs
from aisc.services.context import SYSTEM
from aisc.store.types import utcnow
from tests.builders import add_org, application_request, award, build_centre, charged_job
from tests.fuzz.budget import fuzz_settings

Case = schemathesis.Case[Any]

CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
    negative_data_rejection,
]

# Ids the seed makes: a fresh database numbers every table from 1.
SEEDED_IDS = st.integers(min_value=1, max_value=6)


def _served_document() -> dict[str, Any]:
    """The document the app serves, read at import so each operation becomes its own test.
    The routes do not depend on the data, so a throwaway SQLite database serves it."""
    with tempfile.TemporaryDirectory() as home:
        settings = Settings(
            home=Path(home),
            database_url=f"sqlite:///{home}/openapi.db",
            inventory="1x8xH800",
            detect_gpus=False,
        )
        runtime = Runtime.build(settings)
        try:
            with TestClient(create_app(runtime, run_controller=False)) as client:
                response = client.get("/openapi.json")
                response.raise_for_status()
                document: dict[str, Any] = response.json()
                return document
        finally:
            runtime.close()


DOCUMENT = _served_document()


# Schemathesis builds some cases (its coverage phase) when the tests are collected, before any
# fixture has made a token: auth puts this in, and each test swaps in its own token.
PLACEHOLDER = "Bearer <the test's token>"


def _schema() -> schemathesis.BaseSchema:
    schema = schemathesis.openapi.from_dict(DOCUMENT)

    # Through schemathesis's auth, not a fixed header: it then knows which requests carry a
    # token, and still sends some without one, or with a broken one, on purpose (-> 401).
    @schema.auth(refresh_interval=None, retry_on=[])
    class _Bearer:
        def get(self, case: Case, context: schemathesis.AuthContext) -> str:
            return PLACEHOLDER

        def set(self, case: Case, data: str, context: schemathesis.AuthContext) -> None:
            case.headers["Authorization"] = data

    @schema.hook
    def before_generate_path_parameters(
        context: schemathesis.HookContext, strategy: st.SearchStrategy[dict[str, Any]]
    ) -> st.SearchStrategy[dict[str, Any]]:
        # Half the time, valid ids become ones that exist (a valid id stays valid, so the
        # case's own idea of whether it is a valid request still holds).
        return st.one_of(strategy, strategy.flatmap(_existing_ids))

    # Text with a NUL in it is valid by the document, but rare in what schemathesis draws;
    # PostgreSQL cannot store it. Often put one in (in place of a character: lengths hold).
    @schema.hook
    def before_generate_body(
        context: schemathesis.HookContext, strategy: st.SearchStrategy[Any]
    ) -> st.SearchStrategy[Any]:
        return st.one_of(strategy, strategy.flatmap(_nul_somewhere))

    @schema.hook
    def before_generate_query(
        context: schemathesis.HookContext, strategy: st.SearchStrategy[Any]
    ) -> st.SearchStrategy[Any]:
        return st.one_of(strategy, strategy.flatmap(_nul_somewhere))

    return schema


def _existing_ids(params: dict[str, Any]) -> st.SearchStrategy[dict[str, Any]]:
    if not isinstance(params, dict):
        return st.just(params)
    swapped: dict[str, st.SearchStrategy[Any]] = {}
    for name, value in params.items():
        valid_id = isinstance(value, int) and not isinstance(value, bool) and 1 <= value < 2**31
        if name.endswith("_id") and valid_id:
            swapped[name] = SEEDED_IDS
        elif name == "month" and isinstance(value, str):
            swapped[name] = st.sampled_from([_this_month(), value])
        else:
            swapped[name] = st.just(value)
    return st.fixed_dictionaries(swapped)


def _nul_somewhere(value: Any) -> st.SearchStrategy[Any]:
    """`value` with the first character of one of its non-empty strings made a NUL."""
    paths = list(_text_paths(value, ()))
    if not paths:
        return st.just(value)
    return st.sampled_from(paths).map(lambda path: _with_nul(value, path))


def _text_paths(value: Any, path: tuple[Any, ...]) -> Iterator[tuple[Any, ...]]:
    if isinstance(value, str) and value:
        yield path
    elif isinstance(value, dict):
        for key, item in value.items():
            yield from _text_paths(item, (*path, key))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            yield from _text_paths(item, (*path, index))


def _with_nul(value: Any, path: tuple[Any, ...]) -> Any:
    if not path:
        return "\x00" + value[1:]
    head, rest = path[0], path[1:]
    if isinstance(value, dict):
        return {**value, head: _with_nul(value[head], rest)}
    return [_with_nul(item, rest) if i == head else item for i, item in enumerate(value)]


def _this_month() -> str:
    return f"{utcnow():%Y-%m}"


operator_schema = _schema()
applicant_schema = _schema()


@dataclass
class Seeded:
    operator_token: str
    applicant_token: str


@pytest.fixture
def seeded(runtime: Runtime) -> Seeded:
    centre = build_centre(runtime.uow)
    allocation_id = award(centre, "HKU")
    charged_job(centre, "HKU", allocation_id, 2, 90)
    for gpus in (1, 4):
        request = jobs.JobRequest(allocation_id, ["python", "train.py"], gpus, 600, name="q")
        jobs.submit_job(runtime.uow(), centre.applicants["HKU"], request)
    add_org(centre, "Startup", "startup")
    applications.submit_application(
        runtime.uow(), centre.applicants["Startup"], application_request(centre.scheme_id)
    )
    return Seeded(
        accounts.issue_token(runtime.uow(), SYSTEM, centre.operator.user_id, "fuzz"),
        accounts.issue_token(runtime.uow(), SYSTEM, centre.applicants["HKU"].user_id, "fuzz"),
    )


@pytest.fixture
def app(runtime: Runtime) -> FastAPI:
    return create_app(runtime, run_controller=False)


def _call_and_validate(case: Case, app: FastAPI, token: str) -> None:
    if case.headers.get("Authorization") == PLACEHOLDER:
        case.headers["Authorization"] = f"Bearer {token}"
    case.call_and_validate(app=app, checks=CHECKS)


@operator_schema.parametrize()
@fuzz_settings(40)
def test_as_operator(case: Case, seeded: Seeded, app: FastAPI) -> None:
    _call_and_validate(case, app, seeded.operator_token)


@applicant_schema.parametrize()
@fuzz_settings(10)
def test_as_applicant(case: Case, seeded: Seeded, app: FastAPI) -> None:
    _call_and_validate(case, app, seeded.applicant_token)


def test_the_fuzzed_document_is_the_served_one(app: FastAPI) -> None:
    with TestClient(app) as client:
        assert client.get("/openapi.json").json() == DOCUMENT


def test_every_operation_documents_its_refusals() -> None:
    for path, item in DOCUMENT["paths"].items():
        for method, operation in item.items():
            if path == "/api/v1/health":
                continue  # no token, no input: nothing to refuse
            refused = operation["responses"].get("4XX", {}).get("content", {})
            assert list(refused) == [PROBLEM_JSON], (method, path)
            assert refused[PROBLEM_JSON]["schema"]["required"] == [
                "type",
                "title",
                "status",
                "detail",
                "instance",
            ]


# What the fuzzers found, kept as plain examples: each was a 500 before it was refused.
REFUSED = [
    ("post", "/api/v1/users/9223372036854775808/tokens", {}),  # overflowed the id column
    ("get", "/api/v1/jobs/2147483648", None),
    ("get", "/api/v1/jobs?allocation_id=99999999999999999999", None),
    ("post", "/api/v1/rates", {"gpu_model": "H800", "hkd_per_gpu_hour": 9.3e16}),  # bigint
    ("post", "/api/v1/users/1/tokens", {"label": "\x00"}),  # NUL: PostgreSQL refuses it
    ("get", "/api/v1/applications?status=%00", None),
    ("get", "/api/v1/jobs?state=queued&state=%00", None),
]


@pytest.mark.parametrize(("method", "url", "body"), REFUSED)
def test_unstorable_input_is_refused(
    method: str, url: str, body: dict[str, Any] | None, seeded: Seeded, app: FastAPI
) -> None:
    headers = {"Authorization": f"Bearer {seeded.operator_token}"}
    with TestClient(app) as client:
        response = client.request(method, url, json=body, headers=headers)
    assert response.status_code == 422, response.text
    assert response.headers["content-type"] == PROBLEM_JSON
    assert response.json()["title"] == "Invalid input"
