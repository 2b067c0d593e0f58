"""Organisations, users and API tokens."""

from __future__ import annotations

import hashlib
import re
import secrets
from collections.abc import Collection

from sqlalchemy import select
from sqlalchemy.orm import Session

from aisc.domain.errors import AuthenticationFailed, Conflict, NotFound, ValidationError
from aisc.domain.model import OrgCategory, Role
from aisc.services.context import Actor, utcnow
from aisc.store.tables import ApiToken, Organisation, User, WebSession
from aisc.store.uow import UnitOfWork

TOKEN_PREFIX = "aisc_"
EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")
# what useradd accepts by default (NAME_REGEX), so the name can be a real login on the cluster
UNIX_USER = re.compile(r"^[a-z_][a-z0-9_-]{0,31}$")


def hash_token(token: str) -> str:
    """Tokens are random and long, so one SHA-256 is enough; only the hash is stored."""
    return hashlib.sha256(token.encode()).hexdigest()


def org_category(category: str) -> OrgCategory:
    try:
        return OrgCategory(category)
    except ValueError:
        allowed = ", ".join(c.value for c in OrgCategory)
        raise ValidationError(f"unknown category {category!r}; use one of {allowed}") from None


def unix_user(name: str) -> str:
    """A Unix user name, as Slurm associations need; anything else is refused."""
    if not UNIX_USER.match(name):
        raise ValidationError(
            f"{name!r} is not a Unix user name (lower-case letters, digits, '_' and '-', "
            "starting with a letter or '_', at most 32)"
        )
    return name


def create_organisation(
    uow: UnitOfWork, actor: Actor, name: str, category: str, sector: str = ""
) -> Organisation:
    actor.require(Role.OPERATOR)
    name = name.strip()
    if not name:
        raise ValidationError("an organisation needs a name")
    cat = org_category(category)
    with uow:
        if uow.session.scalar(select(Organisation).where(Organisation.name == name)):
            raise Conflict(f"an organisation named {name!r} exists already")
        org = Organisation(name=name, category=cat.value, sector=sector.strip())
        uow.session.add(org)
        uow.commit()
        return org


def list_organisations(uow: UnitOfWork, actor: Actor) -> list[Organisation]:
    with uow:
        query = select(Organisation).order_by(Organisation.id)
        if actor.role == Role.APPLICANT:
            query = query.where(Organisation.id == actor.org_id)
        return list(uow.session.scalars(query))


def get_organisation(uow: UnitOfWork, actor: Actor, org_id: int) -> Organisation:
    with uow:
        org = uow.session.get(Organisation, org_id)
        if org is None:
            raise NotFound(f"organisation {org_id} does not exist")
        actor.require_org(org_id)
        return org


def update_organisation(uow: UnitOfWork, actor: Actor, org_id: int, sector: str) -> Organisation:
    """Members keep their organisation's sector current; its name and category are the
    operators' to change, since eligibility depends on them."""
    actor.require(Role.APPLICANT, Role.OPERATOR)
    if len(sector.strip()) > 100:
        raise ValidationError("the sector takes at most 100 characters", {"sector": "too long"})
    with uow:
        org = uow.session.get(Organisation, org_id)
        if org is None:
            raise NotFound(f"organisation {org_id} does not exist")
        actor.require_org(org_id)
        org.sector = sector.strip()
        uow.commit()
        return org


def organisation_members(uow: UnitOfWork, actor: Actor, org_id: int) -> list[User]:
    actor.require_org(org_id)
    with uow:
        return list(
            uow.session.scalars(select(User).where(User.org_id == org_id).order_by(User.id))
        )


def create_user(
    uow: UnitOfWork,
    actor: Actor,
    name: str,
    email: str,
    role: str,
    org_id: int | None = None,
    slurm_user: str | None = None,
) -> User:
    actor.require(Role.OPERATOR)
    slurm_user = None if slurm_user is None else unix_user(slurm_user)
    try:
        user_role = Role(role)
    except ValueError:
        allowed = ", ".join(r.value for r in Role)
        raise ValidationError(f"unknown role {role!r}; use one of {allowed}") from None
    email = email.strip().lower()
    if not EMAIL.match(email):
        raise ValidationError(f"{email!r} is not an email address")
    if not name.strip():
        raise ValidationError("a user needs a name")
    if user_role == Role.APPLICANT and org_id is None:
        raise ValidationError("an applicant must belong to an organisation")
    with uow:
        if org_id is not None and uow.session.get(Organisation, org_id) is None:
            raise NotFound(f"organisation {org_id} does not exist")
        if uow.session.scalar(select(User).where(User.email == email)):
            raise Conflict(f"a user with email {email} exists already")
        if slurm_user and uow.session.scalar(select(User).where(User.slurm_user == slurm_user)):
            raise Conflict(f"a user with Slurm user name {slurm_user} exists already")
        user = User(
            name=name.strip(),
            email=email,
            role=user_role.value,
            org_id=org_id,
            slurm_user=slurm_user,
        )
        uow.session.add(user)
        uow.commit()
        return user


def list_users(uow: UnitOfWork, actor: Actor) -> list[User]:
    actor.require(Role.OPERATOR)
    with uow:
        return list(uow.session.scalars(select(User).order_by(User.id)))


def set_user_active(uow: UnitOfWork, actor: Actor, user_id: int, active: bool) -> User:
    """An operator deactivates or reactivates a user.

    While inactive the user can neither sign in nor use the portal or their API tokens
    (authenticate() and the portal's session check both refuse an inactive user). Deactivating
    also ends every portal session they have, so reactivating them does not revive an old one;
    their API tokens are left as they were and work again once they are reactivated.
    """
    actor.require(Role.OPERATOR)
    if not active and actor.user_id == user_id:
        raise ValidationError(
            "you cannot deactivate your own account; ask another operator",
            {"active": "you cannot deactivate yourself"},
        )
    with uow:
        user = uow.session.get(User, user_id)
        if user is None:
            raise NotFound(f"user {user_id} does not exist")
        user.active = active
        if not active:
            now = utcnow()
            for row in uow.session.scalars(
                select(WebSession).where(
                    WebSession.user_id == user_id, WebSession.revoked_at.is_(None)
                )
            ):
                row.revoked_at = now
        uow.commit()
        return user


def issue_token(uow: UnitOfWork, actor: Actor, user_id: int, label: str = "") -> str:
    """A new API token for a user; the plain token is returned once and never stored."""
    if actor.user_id != user_id:
        actor.require(Role.OPERATOR)
    token = TOKEN_PREFIX + secrets.token_urlsafe(32)
    with uow:
        if uow.session.get(User, user_id) is None:
            raise NotFound(f"user {user_id} does not exist")
        uow.session.add(ApiToken(user_id=user_id, token_hash=hash_token(token), label=label))
        uow.commit()
    return token


def list_tokens(uow: UnitOfWork, actor: Actor) -> list[ApiToken]:
    """The caller's own API tokens (their hashes never leave the server), newest first."""
    with uow:
        return list(
            uow.session.scalars(
                select(ApiToken)
                .where(ApiToken.user_id == actor.user_id)
                .order_by(ApiToken.id.desc())
            )
        )


def revoke_token_by_id(uow: UnitOfWork, actor: Actor, token_id: int) -> None:
    """Revoke one of the caller's own tokens (operators: anyone's), when the plain token is
    long gone: the portal lists tokens by label and date."""
    with uow:
        row = uow.session.get(ApiToken, token_id)
        if row is None or (row.user_id != actor.user_id and actor.role != Role.OPERATOR):
            raise NotFound(f"token {token_id} does not exist")
        if row.revoked_at is None:
            row.revoked_at = utcnow()
            uow.commit()


def revoke_token(uow: UnitOfWork, actor: Actor, token: str) -> None:
    with uow:
        row = uow.session.scalar(select(ApiToken).where(ApiToken.token_hash == hash_token(token)))
        if row is None:
            raise NotFound("no such token")
        if row.user_id != actor.user_id:
            actor.require(Role.OPERATOR)
        row.revoked_at = utcnow()
        uow.commit()


TOKEN_REQUIRED = "an API token is required (Authorization: Bearer <token>)"


def authenticate(uow: UnitOfWork, token: str | None) -> Actor:
    if not token:
        raise AuthenticationFailed(TOKEN_REQUIRED)
    with uow:
        # every request pays for this: one indexed lookup, read without waiting for writers
        uow.ledger.snapshot()
        found = identify(uow.session, [token])[token]
        if isinstance(found, AuthenticationFailed):
            raise found
        return found


def identify(session: Session, tokens: Collection[str]) -> dict[str, Actor | AuthenticationFailed]:
    """Who each API token belongs to, in one indexed read: its actor, or why it is refused."""
    by_hash = {hash_token(t): t for t in tokens}
    rows = session.execute(  # columns, not User rows: every request pays for this read
        select(
            ApiToken.token_hash,
            ApiToken.revoked_at,
            User.id,
            User.role,
            User.org_id,
            User.name,
            User.active,
        )
        .join(User, User.id == ApiToken.user_id)
        .where(ApiToken.token_hash.in_(list(by_hash)))
    ).all()
    found: dict[str, Actor | AuthenticationFailed] = {
        t: AuthenticationFailed("the API token is not valid") for t in tokens
    }
    for row in rows:
        token = by_hash[row.token_hash]
        if row.revoked_at is not None:
            continue
        if not row.active:
            found[token] = AuthenticationFailed("the API token's user is not active")
        else:
            found[token] = Actor(
                user_id=row.id, role=Role(row.role), org_id=row.org_id, name=row.name
            )
    return found


def actor_for(user: User) -> Actor:
    return Actor(user_id=user.id, role=Role(user.role), org_id=user.org_id, name=user.name)
