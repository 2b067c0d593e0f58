"""Organisations, users, tokens and the caller's own identity."""

from __future__ import annotations

from fastapi import APIRouter, status

from aisc.api import problems
from aisc.api.deps import ActorDep, UowDep
from aisc.api.schemas import (
    IdPath,
    MeOut,
    OrganisationIn,
    OrganisationOut,
    TokenIn,
    TokenOut,
    UserIn,
    UserOut,
)
from aisc.services import accounts

router = APIRouter(tags=["people"], responses=problems.RESPONSES)


@router.get("/me", response_model=MeOut)
def me(actor: ActorDep) -> MeOut:
    return MeOut(user_id=actor.user_id, name=actor.name, role=actor.role.value, org_id=actor.org_id)


@router.get("/organisations", response_model=list[OrganisationOut])
def list_organisations(uow: UowDep, actor: ActorDep) -> list[OrganisationOut]:
    return [OrganisationOut.model_validate(o) for o in accounts.list_organisations(uow, actor)]


@router.post("/organisations", response_model=OrganisationOut, status_code=status.HTTP_201_CREATED)
def create_organisation(body: OrganisationIn, uow: UowDep, actor: ActorDep) -> OrganisationOut:
    org = accounts.create_organisation(uow, actor, body.name, body.category, body.sector)
    return OrganisationOut.model_validate(org)


@router.get("/users", response_model=list[UserOut])
def list_users(uow: UowDep, actor: ActorDep) -> list[UserOut]:
    return [UserOut.model_validate(u) for u in accounts.list_users(uow, actor)]


@router.post("/users", response_model=UserOut, status_code=status.HTTP_201_CREATED)
def create_user(body: UserIn, uow: UowDep, actor: ActorDep) -> UserOut:
    user = accounts.create_user(
        uow, actor, body.name, body.email, body.role, body.org_id, body.slurm_user
    )
    return UserOut.model_validate(user)


@router.post(
    "/users/{user_id}/tokens", response_model=TokenOut, status_code=status.HTTP_201_CREATED
)
def issue_token(user_id: IdPath, body: TokenIn, uow: UowDep, actor: ActorDep) -> TokenOut:
    return TokenOut(token=accounts.issue_token(uow, actor, user_id, body.label))
