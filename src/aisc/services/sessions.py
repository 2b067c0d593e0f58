"""Passwords and browser sessions for the web portal.

Passwords are hashed with argon2. A session is a random cookie value whose SHA-256 alone is
stored (as for API tokens), with its own CSRF token: every form the portal serves carries it and
every change the portal accepts checks it.
"""

from __future__ import annotations

import hmac
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from sqlalchemy import delete, func, select

from aisc.domain.errors import AuthenticationFailed, NotFound, ValidationError
from aisc.domain.model import Role
from aisc.services.accounts import actor_for, hash_token
from aisc.services.context import Actor, Clock, utcnow
from aisc.store.tables import SignInFailure, User, WebSession
from aisc.store.uow import UnitOfWork

PASSWORD_MIN = 10
MAX_FAILURES = 5  # per email within FAILURE_WINDOW; then sign-in waits
FAILURE_WINDOW = timedelta(minutes=15)

_hasher = PasswordHasher()
# verified when the email is unknown, so a wrong email takes as long as a wrong password
_DUMMY_HASH = _hasher.hash("not a password anyone has")


@dataclass(frozen=True)
class SessionInfo:
    actor: Actor
    csrf_token: str
    email: str


@dataclass(frozen=True)
class NewSession:
    token: str  # the cookie's value; only its hash is stored
    info: SessionInfo


def check_password_strength(password: str) -> None:
    if len(password) < PASSWORD_MIN:
        raise ValidationError(f"a password needs at least {PASSWORD_MIN} characters")


def set_password(uow: UnitOfWork, actor: Actor, user_id: int, password: str) -> None:
    """Users set their own; operators set anyone's. Every session of the user ends."""
    if actor.user_id != user_id:
        actor.require(Role.OPERATOR)
    check_password_strength(password)
    with uow:
        user = uow.session.get(User, user_id)
        if user is None:
            raise NotFound(f"user {user_id} does not exist")
        user.password_hash = _hasher.hash(password)
        _revoke_sessions(uow, user_id)
        uow.commit()


def change_password(uow: UnitOfWork, actor: Actor, current: str, new: str) -> None:
    """The user's own change, proven with the current password."""
    with uow:
        user = uow.session.get(User, actor.user_id)
        if user is None or not _password_matches(user.password_hash, current):
            raise AuthenticationFailed("the current password is not right")
    set_password(uow, actor, actor.user_id, new)


def user_by_email(uow: UnitOfWork, email: str) -> User:
    with uow:
        user = uow.session.scalar(select(User).where(User.email == email.strip().lower()))
        if user is None:
            raise NotFound(f"no user has the email {email.strip()}")
        return user


def sign_in(
    uow: UnitOfWork,
    email: str,
    password: str,
    lifetime: timedelta,
    clock: Clock = utcnow,
) -> NewSession:
    """A new session for the right email and password; the same refusal for every wrong one."""
    email = email.strip().lower()
    now = clock()
    refused = AuthenticationFailed("the email or password is not right")
    with uow:
        failures = uow.session.scalar(
            select(func.count())
            .select_from(SignInFailure)
            .where(SignInFailure.email == email, SignInFailure.failed_at > now - FAILURE_WINDOW)
        )
        if (failures or 0) >= MAX_FAILURES:
            minutes = int(FAILURE_WINDOW.total_seconds() // 60)
            raise AuthenticationFailed(
                f"too many failed sign-ins for this email; try again in {minutes} minutes"
            )
        user = uow.session.scalar(select(User).where(User.email == email))
        if not _password_matches(user.password_hash if user else None, password):
            uow.session.add(SignInFailure(email=email, failed_at=now))
            uow.commit()
            raise refused
        assert user is not None
        # a success clears the count, so the owner is not locked out by earlier typos
        uow.session.execute(delete(SignInFailure).where(SignInFailure.email == email))
        return _open_session(uow, user, now, lifetime)


def sign_in_verified_email(
    uow: UnitOfWork, email: str, lifetime: timedelta, clock: Clock = utcnow
) -> NewSession:
    """A session for the user whose email the centre's identity provider has verified.

    Signing in never creates a user: operators do, so awards only go to people they know.
    """
    with uow:
        user = uow.session.scalar(select(User).where(User.email == email.strip().lower()))
        if user is None:
            raise AuthenticationFailed(
                f"{email.strip()} has no aisc account; ask the centre's operators for one"
            )
        return _open_session(uow, user, clock(), lifetime)


def _open_session(uow: UnitOfWork, user: User, now: datetime, lifetime: timedelta) -> NewSession:
    """Adds the session in the caller's unit of work and commits it."""
    if not user.active:
        raise AuthenticationFailed("this account is not active; ask the centre's operators")
    token = secrets.token_urlsafe(32)
    csrf = secrets.token_urlsafe(32)
    uow.session.add(
        WebSession(
            user_id=user.id,
            token_hash=hash_token(token),
            csrf_token=csrf,
            created_at=now,
            expires_at=now + lifetime,
        )
    )
    uow.commit()
    return NewSession(token, SessionInfo(actor_for(user), csrf, user.email))


def _password_matches(password_hash: str | None, password: str) -> bool:
    try:
        return _hasher.verify(password_hash or _DUMMY_HASH, password) and bool(password_hash)
    except (VerificationError, InvalidHashError):
        return False


def session_info(uow: UnitOfWork, token: str | None, clock: Clock = utcnow) -> SessionInfo:
    if not token:
        raise AuthenticationFailed("sign in first")
    with uow:
        row = uow.session.scalar(
            select(WebSession).where(WebSession.token_hash == hash_token(token))
        )
        if row is None or row.revoked_at is not None or row.expires_at <= clock():
            raise AuthenticationFailed("your session has ended; sign in again")
        user = uow.session.get(User, row.user_id)
        if user is None or not user.active:
            raise AuthenticationFailed("this account is not active")
        return SessionInfo(actor_for(user), row.csrf_token, user.email)


def csrf_matches(info: SessionInfo, presented: str | None) -> bool:
    return presented is not None and hmac.compare_digest(info.csrf_token, presented)


def sign_out(uow: UnitOfWork, token: str | None) -> None:
    if not token:
        return
    with uow:
        row = uow.session.scalar(
            select(WebSession).where(WebSession.token_hash == hash_token(token))
        )
        if row is not None and row.revoked_at is None:
            row.revoked_at = utcnow()
            uow.commit()


def _revoke_sessions(uow: UnitOfWork, user_id: int) -> None:
    for row in uow.session.scalars(
        select(WebSession).where(WebSession.user_id == user_id, WebSession.revoked_at.is_(None))
    ):
        row.revoked_at = utcnow()
