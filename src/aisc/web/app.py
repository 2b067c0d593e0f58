"""Mounts the portal on the API's application: its pages, static files and error pages."""

from __future__ import annotations

from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from fastapi.staticfiles import StaticFiles
from starlette.datastructures import MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

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

    app.add_middleware(SecurityHeaders)


class SecurityHeaders:
    """SECURITY_HEADERS on every response but the API's and the docs'. Plain ASGI: Starlette's
    @app.middleware("http") passes each request through a task and memory streams, which costs
    more than a small API request's own work."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"].startswith(UNGUARDED):
            await self.app(scope, receive, send)
            return

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = MutableHeaders(scope=message)
                for name, value in SECURITY_HEADERS.items():
                    headers.setdefault(name, value)
            await send(message)

        await self.app(scope, receive, send_with_headers)


def error_page(request: Request, status: int, exc: DomainError) -> HTMLResponse:
    """A refused portal request, as a page rather than problem details."""
    return page(request, "error.html", status_code=status, title=exc.title, detail=exc.detail)
