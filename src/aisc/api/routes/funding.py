"""Schemes, the fund's position and the rate card."""

from __future__ import annotations

from fastapi import APIRouter, status

from aisc.api import problems
from aisc.api.deps import ActorDep, UowDep
from aisc.api.schemas import FundOut, IdPath, RateIn, RateOut, SchemeIn, SchemeOut, hkd, scheme_out
from aisc.domain.money import parse_cents, parse_rate
from aisc.services import rates, schemes

router = APIRouter(tags=["funding"], responses=problems.RESPONSES)


@router.get("/schemes", response_model=list[SchemeOut])
def list_schemes(uow: UowDep, actor: ActorDep) -> list[SchemeOut]:
    return [scheme_out(s) for s in schemes.list_schemes(uow)]


@router.post("/schemes", response_model=SchemeOut, status_code=status.HTTP_201_CREATED)
def create_scheme(body: SchemeIn, uow: UowDep, actor: ActorDep) -> SchemeOut:
    scheme = schemes.create_scheme(
        uow,
        actor,
        name=body.name,
        fund_total_cents=parse_cents(body.fund_total_hkd),
        starts_on=body.starts_on,
        ends_on=body.ends_on,
        rubric=body.rubric,
        eligible_categories=body.eligible_categories,
        default_rate_bp=parse_rate(body.default_rate),
        max_rate_bp=parse_rate(body.max_rate),
        min_reviews=body.min_reviews,
    )
    return scheme_out(scheme)


@router.get("/schemes/{scheme_id}", response_model=SchemeOut)
def get_scheme(scheme_id: IdPath, uow: UowDep, actor: ActorDep) -> SchemeOut:
    return scheme_out(schemes.get_scheme(uow, scheme_id))


@router.get("/fund", response_model=list[FundOut])
def fund(uow: UowDep, actor: ActorDep) -> list[FundOut]:
    return [
        FundOut(
            **p.__dict__,
            total=hkd(p.total_cents),
            available=hkd(p.available_cents),
            committed=hkd(p.committed_cents),
            spent=hkd(p.spent_cents),
        )
        for p in schemes.fund_positions(uow, actor)
    ]


@router.get("/rates", response_model=list[RateOut])
def list_rates(uow: UowDep, actor: ActorDep) -> list[RateOut]:
    return [RateOut.model_validate(r) for r in rates.list_rates(uow)]


@router.post("/rates", response_model=RateOut, status_code=status.HTTP_201_CREATED)
def set_rate(body: RateIn, uow: UowDep, actor: ActorDep) -> RateOut:
    rate = rates.set_rate(
        uow, actor, body.gpu_model, parse_cents(body.hkd_per_gpu_hour), body.effective_from
    )
    return RateOut.model_validate(rate)
