"""Who is signed in, and the CSRF check every change made through the portal passes."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Any
from urllib.parse import quote

from fastapi import Depends, Request

from aisc.api.deps import RuntimeDep
from aisc.domain.errors import AuthenticationFailed, PermissionDenied
from aisc.domain.model import Role
from aisc.services import notifications, sessions
from aisc.services.context import Actor

COOKIE = "aisc_session"
CSRF_FIELD = "csrf_token"
CSRF_HEADER = "X-CSRF-Token"


class SignInRequired(Exception):
    """Raised by a page that needs a session; the portal answers with a redirect to sign-in."""

    def __init__(self, next_path: str) -> None:
        super().__init__(next_path)
        self.next_path = next_path


def sign_in_url(next_path: str) -> str:
    return f"/login?next={quote(next_path, safe='/')}"


@dataclass(frozen=True)
class PortalUser:
    actor: Actor
    email: str
    csrf_token: str
    unread: int


async def portal_user(request: Request, runtime: RuntimeDep) -> PortalUser:
    token = request.cookies.get(COOKIE)
    try:
        info = sessions.session_info(runtime.uow(), token)
    except AuthenticationFailed:
        target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
        raise SignInRequired(target) from None
    if request.method not in ("GET", "HEAD"):
        form = await request.form()  # Starlette keeps it, so the page's own Form fields still work
        presented = request.headers.get(CSRF_HEADER) or form.get(CSRF_FIELD)
        if not sessions.csrf_matches(info, presented if isinstance(presented, str) else None):
            raise PermissionDenied(
                "the form has expired or did not come from this site; reload the page and retry"
            )
    user = PortalUser(
        actor=info.actor,
        email=info.email,
        csrf_token=info.csrf_token,
        unread=notifications.unread_count(runtime.uow(), info.actor),
    )
    request.state.portal_user = user
    return user


UserDep = Annotated[PortalUser, Depends(portal_user)]


def role_user(*roles: Role) -> Any:
    """A dependency: the signed-in user, who must hold one of these roles."""

    async def dependency(user: UserDep) -> PortalUser:
        user.actor.require(*roles)
        return user

    return Depends(dependency)


ApplicantDep = Annotated[PortalUser, role_user(Role.APPLICANT)]
ReviewerDep = Annotated[PortalUser, role_user(Role.REVIEWER)]
OperatorDep = Annotated[PortalUser, role_user(Role.OPERATOR)]
OversightDep = Annotated[PortalUser, role_user(Role.OPERATOR, Role.FUNDER)]
