"""The rate card: list prices per GPU-hour, each in force from its effective date."""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import select
from sqlalchemy.orm import Session

from aisc.domain.errors import Conflict, NotFound, ValidationError
from aisc.domain.model import Role
from aisc.domain.money import PriceSegment
from aisc.services.context import Actor, Clock, utcnow
from aisc.store.tables import GpuRate
from aisc.store.uow import UnitOfWork


def set_rate(
    uow: UnitOfWork,
    actor: Actor,
    gpu_model: str,
    cents_per_gpu_hour: int,
    effective_from: datetime | None = None,
    clock: Clock = utcnow,
) -> GpuRate:
    """Prices are never retroactive: usage already run keeps the price it ran at."""
    actor.require(Role.OPERATOR)
    model = gpu_model.strip().upper()
    if not model:
        raise ValidationError("a GPU model is required")
    if cents_per_gpu_hour <= 0:
        raise ValidationError("a price per GPU-hour must be positive")
    now = clock()
    when = effective_from or now
    if when.tzinfo is None:
        raise ValidationError("an effective date needs a time zone")
    if when < now - timedelta(seconds=5):
        raise ValidationError("a price cannot take effect in the past")
    with uow:
        exists = uow.session.scalar(
            select(GpuRate).where(GpuRate.gpu_model == model, GpuRate.effective_from == when)
        )
        if exists:
            raise Conflict(f"{model} already has a price effective {when.isoformat()}")
        rate = GpuRate(gpu_model=model, cents_per_gpu_hour=cents_per_gpu_hour, effective_from=when)
        uow.session.add(rate)
        uow.commit()
        return rate


def list_rates(uow: UnitOfWork) -> list[GpuRate]:
    with uow:
        return list(
            uow.session.scalars(select(GpuRate).order_by(GpuRate.gpu_model, GpuRate.effective_from))
        )


def price_at(session: Session, gpu_model: str, when: datetime) -> int:
    """Cents per GPU-hour in force for a model at a moment; NotFound when there is none."""
    price = session.scalar(
        select(GpuRate.cents_per_gpu_hour)
        .where(GpuRate.gpu_model == gpu_model, GpuRate.effective_from <= when)
        .order_by(GpuRate.effective_from.desc())
        .limit(1)
    )
    if price is None:
        raise NotFound(f"the rate card has no price for GPU model {gpu_model!r}")
    return price


def known_models(session: Session) -> set[str]:
    return set(session.scalars(select(GpuRate.gpu_model).distinct()))


@dataclass(frozen=True)
class PricedSpan:
    start_offset_s: int
    seconds: int
    cents_per_gpu_hour: int


def price_spans(
    session: Session, gpu_model: str, start: datetime, seconds: int
) -> list[PricedSpan]:
    """Split [start, start + seconds) at each price change, so each second has its own price."""
    first = price_at(session, gpu_model, start)
    later = session.execute(
        select(GpuRate.effective_from, GpuRate.cents_per_gpu_hour)
        .where(
            GpuRate.gpu_model == gpu_model,
            GpuRate.effective_from > start,
            GpuRate.effective_from < start + timedelta(seconds=seconds),
        )
        .order_by(GpuRate.effective_from)
    ).all()
    spans: list[PricedSpan] = []
    offset, price = 0, first
    for effective_from, next_price in later:
        cut = min(seconds, math.ceil((effective_from - start).total_seconds()))
        if cut > offset:
            spans.append(PricedSpan(offset, cut - offset, price))
            offset = cut
        price = next_price
    if seconds > offset:
        spans.append(PricedSpan(offset, seconds - offset, price))
    return spans


def usage_segments(spans: list[PricedSpan], gpus: int) -> list[PriceSegment]:
    return [PriceSegment(gpus * s.seconds, s.cents_per_gpu_hour) for s in spans]


def require_model(session: Session, gpu_model: str) -> str:
    model = gpu_model.strip().upper()
    if model not in known_models(session):
        raise ValidationError(f"unknown GPU model {gpu_model!r}: it is not on the rate card")
    return model


__all__ = ["NotFound", "list_rates", "price_at", "price_spans", "set_rate"]
