"""Every error leaves the API as RFC 9457 problem details; domain errors are mapped here, once."""

from __future__ import annotations

import logging
from collections.abc import Callable
from http import HTTPStatus
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from starlette.exceptions import HTTPException as StarletteHTTPException

from aisc.api.schemas import ProblemDetails
from aisc.domain import errors
from aisc.logs import request_id

log = logging.getLogger(__name__)

PROBLEM_JSON = "application/problem+json"

# Declared on every router, so the OpenAPI document says what a refusal looks like: 401 (no or
# bad token), 403 (role), 404 (no such id), 409 (state clash), 422 (invalid input). Inline, not
# a `model`: FastAPI would file a model under the route's own media type, not problem+json.
RESPONSES: dict[int | str, dict[str, Any]] = {
    "4XX": {
        "description": "Refused: problem details (RFC 9457) say why; nothing was changed.",
        "content": {PROBLEM_JSON: {"schema": ProblemDetails.model_json_schema()}},
    }
}

STATUS = {
    errors.AuthenticationFailed: 401,
    errors.PermissionDenied: 403,
    errors.NotFound: 404,
    errors.Conflict: 409,
    errors.ValidationError: 422,
    errors.Unavailable: 503,
}


def status_for(exc: errors.DomainError) -> int:
    for kind in type(exc).__mro__:
        if kind in STATUS:
            return STATUS[kind]
    return 400


def _phrase(status: int) -> str:
    """'Bad request' for 400: a title that says what happened, not just 'Error'."""
    try:
        return HTTPStatus(status).phrase.capitalize()
    except ValueError:
        return "Error"


def slug(title: str) -> str:
    return title.lower().replace(" ", "-")


def problem(status: int, title: str, detail: str, instance: str, **extra: Any) -> JSONResponse:
    body = {
        "type": f"/problems/{slug(title)}",
        "title": title,
        "status": status,
        "detail": detail,
        "instance": instance,
        **extra,
    }
    if (rid := request_id.get()) is not None:
        body["request_id"] = rid  # the id in the server's logs, for a support request
    headers = {"WWW-Authenticate": "Bearer"} if status == 401 else None
    return JSONResponse(body, status_code=status, media_type=PROBLEM_JSON, headers=headers)


HtmlError = Callable[[Request, int, errors.DomainError], Response]


def is_api(request: Request) -> bool:
    return request.url.path.startswith("/api/")


def install(app: FastAPI, html: HtmlError | None = None) -> None:
    """Problem details for the API; `html` renders the same refusals as pages elsewhere."""

    @app.exception_handler(errors.DomainError)
    async def _domain(request: Request, exc: errors.DomainError) -> Response:
        if html is not None and not is_api(request):
            return html(request, status_for(exc), exc)
        extra = {}
        if isinstance(exc, errors.ValidationError) and exc.fields:
            extra["errors"] = [{"field": f, "message": m} for f, m in exc.fields.items()]
        return problem(status_for(exc), exc.title, exc.detail, request.url.path, **extra)

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        issues = [
            {
                "field": ".".join(str(p) for p in e.get("loc", ()) if p != "body"),
                "message": e.get("msg", ""),
            }
            for e in exc.errors()
        ]
        detail = "; ".join(f"{i['field']}: {i['message']}" for i in issues) or "invalid request"
        return problem(422, "Invalid input", detail, request.url.path, errors=issues)

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> Response:
        title = {404: "Not found", 405: "Method not allowed"}.get(exc.status_code) or _phrase(
            exc.status_code
        )
        if html is not None and not is_api(request) and exc.status_code == 404:
            return html(request, 404, errors.NotFound("there is no such page"))
        return problem(exc.status_code, title, str(exc.detail), request.url.path)

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> Response:
        log.exception("unhandled error on %s", request.url.path)
        if html is not None and not is_api(request):
            failure = errors.DomainError("the server failed; nothing was changed")
            failure.title = "Internal error"
            return html(request, 500, failure)
        return problem(
            500, "Internal error", "the server failed; nothing was changed", request.url.path
        )
