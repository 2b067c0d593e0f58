"""Money is HKD in integer cents; rates are integer basis points. No floats touch money."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation

from aisc.domain.errors import ValidationError

BASIS_POINTS = 10_000  # 1.0 == 10_000 bp
SECONDS_PER_HOUR = 3600


def parse_cents(text: str | int | Decimal) -> int:
    """'1234.56' -> 123456. Refuses fractions of a cent instead of rounding them away."""
    try:
        value = Decimal(str(text))
    except InvalidOperation as exc:
        raise ValidationError(f"not an amount of money: {text!r}") from exc
    if not value.is_finite():
        raise ValidationError(f"not an amount of money: {text!r}")
    cents = value * 100
    if cents != cents.to_integral_value():
        raise ValidationError(f"amount {text!r} has fractions of a cent")
    return int(cents)


def format_cents(cents: int) -> str:
    """123456 -> '1,234.56' (sign kept)."""
    sign = "-" if cents < 0 else ""
    whole, frac = divmod(abs(cents), 100)
    return f"{sign}{whole:,}.{frac:02d}"


def parse_rate(text: str | float | Decimal) -> int:
    """'0.70' -> 7000 basis points; at most four decimal places, between 0 and 1."""
    try:
        value = Decimal(str(text))
    except InvalidOperation as exc:
        raise ValidationError(f"not a rate: {text!r}") from exc
    if not value.is_finite() or value < 0 or value > 1:
        raise ValidationError(f"rate {text!r} must be between 0 and 1")
    bp = value * BASIS_POINTS
    if bp != bp.to_integral_value():
        raise ValidationError(f"rate {text!r} has more than four decimal places")
    return int(bp)


def format_rate(bp: int) -> str:
    """7000 -> '0.70', 7250 -> '0.725'."""
    digits = format(Decimal(bp).scaleb(-4), "f").rstrip("0")
    whole, _, frac = digits.partition(".")
    return f"{whole}.{frac.ljust(2, '0')}"


@dataclass(frozen=True)
class PriceSegment:
    """GPU-seconds that ran while one list price (cents per GPU-hour) was in force."""

    gpu_seconds: int
    cents_per_gpu_hour: int


def charge_cents(segments: Sequence[PriceSegment]) -> int:
    """Per-second billing: sum(GPU-seconds x price / 3600), rounded half up once per job."""
    numerator = 0
    for seg in segments:
        if seg.gpu_seconds < 0 or seg.cents_per_gpu_hour < 0:
            raise ValidationError("GPU-seconds and prices cannot be negative")
        numerator += seg.gpu_seconds * seg.cents_per_gpu_hour
    return (numerator + SECONDS_PER_HOUR // 2) // SECONDS_PER_HOUR


@dataclass(frozen=True)
class Split:
    charge: int
    subsidy: int
    copay: int


def split_charge(charge: int, rate_bp: int, subsidy_cap: int | None = None) -> Split:
    """subsidy = floor(charge x rate), co-pay = charge - subsidy, so they always add up exactly.

    `subsidy_cap` is what the allocation still holds for this job: when a later price rise or
    per-job rounding would take the subsidy past the award's commitment, the grantee pays the rest.
    """
    if charge < 0:
        raise ValidationError("a charge cannot be negative")
    if not 0 <= rate_bp <= BASIS_POINTS:
        raise ValidationError("a subsidy rate must be between 0 and 1")
    subsidy = charge * rate_bp // BASIS_POINTS
    if subsidy_cap is not None:
        subsidy = max(0, min(subsidy, subsidy_cap))
    return Split(charge=charge, subsidy=subsidy, copay=charge - subsidy)


def award_commitment_cents(gpu_hours: int, cents_per_gpu_hour: int, rate_bp: int) -> int:
    """What an award commits from the fund: floor(GPU-hours x list price x rate)."""
    return gpu_hours * cents_per_gpu_hour * rate_bp // BASIS_POINTS
