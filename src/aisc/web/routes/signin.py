"""Sign-in and sign-out, the home redirect, the user's password and notifications."""

from __future__ import annotations

from datetime import timedelta
from typing import Annotated

from fastapi import APIRouter, Form, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from aisc.api.deps import RuntimeDep
from aisc.domain.errors import AuthenticationFailed, NotFound, ValidationError
from aisc.services import accounts, notifications, sessions
from aisc.web.oidc import OidcClient, OidcError, PendingSignIn
from aisc.web.render import HOME, page
from aisc.web.session import COOKIE, SignInRequired, UserDep, portal_user

router = APIRouter(include_in_schema=False)


def safe_next(target: str | None) -> str | None:
    """Only a path on this site: never an open redirect to another one."""
    if target and target.startswith("/") and not target.startswith("//"):
        return target
    return None


@router.get("/")
async def home(request: Request, runtime: RuntimeDep) -> Response:
    try:
        user = await portal_user(request, runtime)
    except SignInRequired:
        return RedirectResponse("/login", status_code=303)
    return RedirectResponse(HOME[user.actor.role], status_code=303)


@router.get("/login", response_class=HTMLResponse)
def login_form(request: Request, next: str | None = None) -> HTMLResponse:
    return page(request, "login.html", next=safe_next(next) or "", email="", error="")


@router.post("/login")
def login(
    request: Request,
    runtime: RuntimeDep,
    email: Annotated[str, Form()] = "",
    password: Annotated[str, Form()] = "",
    next: Annotated[str, Form()] = "",
) -> Response:
    lifetime = timedelta(hours=runtime.settings.session_hours)
    try:
        new = sessions.sign_in(runtime.uow(), email, password, lifetime)
    except AuthenticationFailed as exc:
        return page(
            request, "login.html", status_code=401, next=next, email=email, error=exc.detail
        )
    return signed_in(request, runtime, new, next)


def signed_in(
    request: Request, runtime: RuntimeDep, new: sessions.NewSession, next_path: str | None
) -> Response:
    """Off to the page asked for (or the role's home), with the session's cookie."""
    target = safe_next(next_path) or HOME[new.info.actor.role]
    response = RedirectResponse(target, status_code=303)
    response.set_cookie(
        COOKIE,
        new.token,
        max_age=int(runtime.settings.session_hours * 3600),
        httponly=True,
        samesite="lax",
        secure=secure_cookies(request, runtime),
        path="/",
    )
    return response


def secure_cookies(request: Request, runtime: RuntimeDep) -> bool:
    return runtime.settings.cookie_secure or request.url.scheme == "https"


# -- single sign-on ----------------------------------------------------------------------------

SSO_COOKIE = "aisc_sso"
SSO_COOKIE_PATH = "/login/sso"


def oidc_client(request: Request) -> OidcClient:
    client: OidcClient | None = request.app.state.oidc
    if client is None:
        raise NotFound("single sign-on is not configured on this centre")
    return client


def login_refused(request: Request, error: str) -> HTMLResponse:
    return page(request, "login.html", status_code=401, next="", email="", error=error)


@router.get("/login/sso")
def sso_start(request: Request, next: str | None = None) -> Response:
    client = oidc_client(request)
    try:
        url, pending = client.start(str(request.url_for("sso_callback")), safe_next(next) or "")
    except OidcError as exc:
        return login_refused(request, f"single sign-on is unavailable: {exc}")
    response = RedirectResponse(url, status_code=303)
    response.set_cookie(
        SSO_COOKIE,
        pending.encode(),
        max_age=600,  # ten minutes to sign in at the provider
        httponly=True,
        samesite="lax",  # sent on the provider's top-level redirect back
        secure=request.url.scheme == "https",
        path=SSO_COOKIE_PATH,
    )
    return response


@router.get("/login/sso/callback", name="sso_callback")
def sso_callback(
    request: Request,
    runtime: RuntimeDep,
    code: str | None = None,
    state: str | None = None,
    error: str | None = None,
) -> Response:
    client = oidc_client(request)
    pending = PendingSignIn.decode(request.cookies.get(SSO_COOKIE))
    if error:
        return login_refused(request, f"the identity provider did not sign you in ({error})")
    if pending is None or not code or state != pending.state:
        return login_refused(request, "the sign-in expired or did not start here; try again")
    try:
        identity = client.finish(code, pending, str(request.url_for("sso_callback")))
        lifetime = timedelta(hours=runtime.settings.session_hours)
        new = sessions.sign_in_verified_email(runtime.uow(), identity.email, lifetime)
    except OidcError as exc:
        return login_refused(request, str(exc))
    except AuthenticationFailed as exc:
        return login_refused(request, exc.detail)
    response = signed_in(request, runtime, new, pending.next_path)
    response.delete_cookie(SSO_COOKIE, path=SSO_COOKIE_PATH)
    return response


@router.post("/logout")
def logout(request: Request, runtime: RuntimeDep, user: UserDep) -> Response:
    sessions.sign_out(runtime.uow(), request.cookies.get(COOKIE))
    response = RedirectResponse("/login", status_code=303)
    response.delete_cookie(COOKIE, path="/")
    return response


def account_page(
    request: Request,
    runtime: RuntimeDep,
    user: UserDep,
    errors: dict[str, str] | None = None,
    new_token: str = "",
    status_code: int = 200,
) -> HTMLResponse:
    return page(
        request,
        "account.html",
        status_code=status_code,
        errors=errors or {},
        tokens=accounts.list_tokens(runtime.uow(), user.actor),
        new_token=new_token,
        api_url=runtime.settings.url,
    )


@router.get("/account", response_class=HTMLResponse)
def account(request: Request, runtime: RuntimeDep, user: UserDep) -> HTMLResponse:
    return account_page(request, runtime, user)


@router.post("/account/tokens", response_class=HTMLResponse)
def issue_token(
    request: Request, runtime: RuntimeDep, user: UserDep, label: Annotated[str, Form()] = ""
) -> HTMLResponse:
    """A token for the command line and scripts, shown once on the page that answers."""
    if len(label.strip()) > 100:
        return account_page(
            request, runtime, user, {"label": "a label takes at most 100 characters"}, "", 422
        )
    token = accounts.issue_token(runtime.uow(), user.actor, user.actor.user_id, label.strip())
    return account_page(request, runtime, user, new_token=token)


@router.post("/account/tokens/{token_id}/revoke")
def revoke_token(token_id: int, runtime: RuntimeDep, user: UserDep) -> Response:
    accounts.revoke_token_by_id(runtime.uow(), user.actor, token_id)
    return RedirectResponse("/account", status_code=303)


@router.post("/account/password", response_class=HTMLResponse)
def change_password(
    request: Request,
    runtime: RuntimeDep,
    user: UserDep,
    current: Annotated[str, Form()] = "",
    new: Annotated[str, Form()] = "",
    repeat: Annotated[str, Form()] = "",
) -> Response:
    errors: dict[str, str] = {}
    if new != repeat:
        errors["repeat"] = "the two new passwords differ"
    else:
        try:
            sessions.change_password(runtime.uow(), user.actor, current, new)
        except AuthenticationFailed as exc:
            errors["current"] = exc.detail
        except ValidationError as exc:
            errors["new"] = exc.detail
    if errors:
        return account_page(request, runtime, user, errors, status_code=422)
    # every session ended with the change, this one too
    return RedirectResponse("/login?next=/account", status_code=303)


@router.get("/notifications", response_class=HTMLResponse)
def inbox(request: Request, runtime: RuntimeDep, user: UserDep) -> HTMLResponse:
    items = notifications.list_notifications(runtime.uow(), user.actor, limit=100)
    return page(request, "notifications.html", items=items)


@router.post("/notifications/read")
def read_all(runtime: RuntimeDep, user: UserDep) -> Response:
    notifications.mark_read(runtime.uow(), user.actor)
    return RedirectResponse("/notifications", status_code=303)
