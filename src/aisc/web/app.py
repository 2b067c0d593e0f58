"""Mounts the portal on the API's application: its pages, static files and error pages."""

from __future__ import annotations

from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from fastapi.staticfiles import StaticFiles

from aisc.config import Settings
from aisc.domain.errors import DomainError
from aisc.web.oidc import oidc_from_settings
from aisc.web.render import HERE, page
from aisc.web.routes import applicant, funder, operator, reviewer, signin
from aisc.web.session import SignInRequired, sign_in_url

SECURITY_HEADERS = {
    # everything the pages load comes from this server
    "Content-Security-Policy": "default-src 'self'; img-src 'self' data:; "
    "style-src 'self'; script-src 'self'; frame-ancestors 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
}

# the API answers JSON, and FastAPI's own documentation pages load their scripts elsewhere
UNGUARDED = ("/api/", "/docs", "/redoc")


def mount_portal(app: FastAPI, settings: Settings) -> None:
    app.state.oidc = oidc_from_settings(
        settings.oidc_issuer,
        settings.oidc_client_id,
        settings.oidc_client_secret.get_secret_value(),
        settings.oidc_label,
    )
    app.mount("/static", StaticFiles(directory=HERE / "static"), name="static")
    for module in (signin, applicant, reviewer, operator, funder):
        app.include_router(module.router)

    @app.exception_handler(SignInRequired)
    async def _sign_in(request: Request, exc: SignInRequired) -> Response:
        if request.headers.get("HX-Request"):
            # htmx follows this header with a full page load, not a swap into a fragment
            return Response(status_code=204, headers={"HX-Redirect": sign_in_url(exc.next_path)})
        return RedirectResponse(sign_in_url(exc.next_path), status_code=303)

    @app.middleware("http")
    async def _headers(request: Request, call_next):  # type: ignore[no-untyped-def]
        response = await call_next(request)
        if not request.url.path.startswith(UNGUARDED):
            for name, value in SECURITY_HEADERS.items():
                response.headers.setdefault(name, value)
        return response


def error_page(request: Request, status: int, exc: DomainError) -> HTMLResponse:
    """A refused portal request, as a page rather than problem details."""
    return page(request, "error.html", status_code=status, title=exc.title, detail=exc.detail)
