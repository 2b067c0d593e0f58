"""Money: integer cents, basis-point rates, per-second charges and the subsidy split."""

from __future__ import annotations

from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from aisc.domain.errors import ValidationError
from aisc.domain.money import (
    BASIS_POINTS,
    PriceSegment,
    award_commitment_cents,
    charge_cents,
    format_cents,
    format_rate,
    parse_cents,
    parse_rate,
    split_charge,
)

cents = st.integers(min_value=0, max_value=10**15)
rates = st.integers(min_value=0, max_value=BASIS_POINTS)
gpu_seconds = st.integers(min_value=0, max_value=10**9)
prices = st.integers(min_value=0, max_value=10**7)


# -- parse_cents / format_cents ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("1234.56", 123456),
        ("0.1", 10),
        ("0.01", 1),
        ("0", 0),
        ("1000000", 100000000),
        (" 12.50 ", 1250),
        (5, 500),
        (Decimal("1.5"), 150),
        ("3.000", 300),
    ],
)
def test_parse_cents_turns_an_amount_into_whole_cents(text: object, expected: int) -> None:
    assert parse_cents(text) == expected  # type: ignore[arg-type]


@pytest.mark.parametrize("text", ["abc", "", "1.234", "0.001", "NaN", "Infinity", "-inf", "1,000"])
def test_parse_cents_refuses_what_is_not_a_whole_number_of_cents(text: str) -> None:
    with pytest.raises(ValidationError):
        parse_cents(text)


def test_parse_cents_names_fractions_of_a_cent_in_its_message() -> None:
    with pytest.raises(ValidationError, match="fractions of a cent"):
        parse_cents("12.345")


def test_parse_cents_refuses_a_float_that_is_not_a_whole_cent() -> None:
    with pytest.raises(ValidationError):
        parse_cents(1.005)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("value", "text"),
    [
        (0, "0.00"),
        (5, "0.05"),
        (123456, "1,234.56"),
        (100000000, "1,000,000.00"),
        (-5, "-0.05"),
        (-123456, "-1,234.56"),
    ],
)
def test_format_cents_writes_two_decimals_and_thousands_separators(value: int, text: str) -> None:
    assert format_cents(value) == text


@given(st.integers(min_value=-(10**15), max_value=10**15))
def test_formatted_cents_parse_back_to_the_same_amount(value: int) -> None:
    assert parse_cents(format_cents(value).replace(",", "")) == value


# -- parse_rate / format_rate -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "bp"),
    [("0.70", 7000), ("0.7", 7000), ("0.725", 7250), ("0.0001", 1), ("1", 10000), ("0", 0)],
)
def test_parse_rate_gives_basis_points(text: str, bp: int) -> None:
    assert parse_rate(text) == bp


def test_parse_rate_accepts_a_float_with_few_decimals() -> None:
    assert parse_rate(0.9) == 9000


@pytest.mark.parametrize("text", ["1.01", "-0.1", "2", "x", "", "nan", "Infinity"])
def test_parse_rate_refuses_rates_outside_zero_to_one_or_not_numbers(text: str) -> None:
    with pytest.raises(ValidationError):
        parse_rate(text)


def test_parse_rate_refuses_more_than_four_decimal_places() -> None:
    with pytest.raises(ValidationError, match="four decimal places"):
        parse_rate("0.12345")


@pytest.mark.parametrize(
    ("bp", "text"),
    [(7000, "0.70"), (7250, "0.725"), (9000, "0.90"), (10000, "1.00"), (0, "0.00"), (1, "0.0001")],
)
def test_format_rate_keeps_at_least_two_decimals(bp: int, text: str) -> None:
    assert format_rate(bp) == text


@given(rates)
def test_formatted_rates_parse_back_to_the_same_basis_points(bp: int) -> None:
    assert parse_rate(format_rate(bp)) == bp


# -- charge_cents -----------------------------------------------------------------------------


def test_one_gpu_hour_at_list_price_costs_the_list_price() -> None:
    assert charge_cents([PriceSegment(3600, 2500)]) == 2500


def test_charge_rounds_half_a_cent_up() -> None:
    # 1 GPU-second at HK$18.00/h is exactly half a cent
    assert charge_cents([PriceSegment(1, 1800)]) == 1


def test_charge_rounds_less_than_half_a_cent_down() -> None:
    assert charge_cents([PriceSegment(1, 1799)]) == 0


def test_charge_rounds_once_per_job_not_once_per_segment() -> None:
    # two segments of 0.5 cents each: 1 cent in all, not 1 + 1
    assert charge_cents([PriceSegment(1, 1800), PriceSegment(1, 1800)]) == 1
    # two segments of 0.28 cents each: 0.56 rounds to 1, though each alone would round to 0
    assert charge_cents([PriceSegment(1, 1000), PriceSegment(1, 1000)]) == 1


def test_a_job_over_a_price_change_pays_each_price_for_its_own_seconds() -> None:
    segments = [PriceSegment(2 * 600, 3600), PriceSegment(2 * 600, 7200)]
    assert charge_cents(segments) == 1200 + 2400


def test_no_usage_costs_nothing() -> None:
    assert charge_cents([]) == 0
    assert charge_cents([PriceSegment(0, 3600)]) == 0


@pytest.mark.parametrize("segment", [PriceSegment(-1, 3600), PriceSegment(3600, -1)])
def test_negative_usage_or_price_is_refused(segment: PriceSegment) -> None:
    with pytest.raises(ValidationError):
        charge_cents([segment])


@given(st.lists(st.tuples(gpu_seconds, prices), max_size=5))
def test_charge_is_the_exact_price_rounded_to_the_nearest_cent(
    parts: list[tuple[int, int]],
) -> None:
    exact_times_3600 = sum(s * p for s, p in parts)
    charge = charge_cents([PriceSegment(s, p) for s, p in parts])
    # within half a cent of the exact amount, and half a cent rounds up
    assert -1800 < charge * 3600 - exact_times_3600 <= 1800


@given(gpu_seconds, gpu_seconds, prices)
def test_charge_never_falls_when_gpu_seconds_grow(a: int, b: int, price: int) -> None:
    low, high = sorted((a, b))
    assert charge_cents([PriceSegment(low, price)]) <= charge_cents([PriceSegment(high, price)])


# -- split_charge -----------------------------------------------------------------------------


def test_split_floors_the_subsidy_and_gives_the_grantee_the_remainder() -> None:
    split = split_charge(1001, 7000)
    assert (split.charge, split.subsidy, split.copay) == (1001, 700, 301)


def test_split_at_full_rate_leaves_no_copay_and_at_zero_rate_no_subsidy() -> None:
    assert split_charge(999, BASIS_POINTS).copay == 0
    assert split_charge(999, 0).subsidy == 0


def test_subsidy_cap_moves_the_excess_to_the_copay() -> None:
    split = split_charge(1000, 9000, subsidy_cap=500)
    assert (split.subsidy, split.copay) == (500, 500)


def test_subsidy_cap_above_the_subsidy_changes_nothing() -> None:
    assert split_charge(1000, 7000, subsidy_cap=10_000) == split_charge(1000, 7000)


def test_a_negative_subsidy_cap_means_no_subsidy() -> None:
    split = split_charge(1000, 7000, subsidy_cap=-5)
    assert (split.subsidy, split.copay) == (0, 1000)


def test_split_refuses_a_negative_charge() -> None:
    with pytest.raises(ValidationError):
        split_charge(-1, 7000)


@pytest.mark.parametrize("rate", [-1, BASIS_POINTS + 1])
def test_split_refuses_a_rate_outside_zero_to_one(rate: int) -> None:
    with pytest.raises(ValidationError):
        split_charge(100, rate)


@given(cents, rates)
def test_subsidy_and_copay_always_add_up_to_the_charge(charge: int, rate: int) -> None:
    split = split_charge(charge, rate)
    assert split.charge == charge
    assert split.subsidy + split.copay == charge
    assert 0 <= split.subsidy <= charge
    assert split.subsidy == charge * rate // BASIS_POINTS


@given(cents, rates, st.integers(min_value=-(10**6), max_value=10**15))
def test_a_capped_subsidy_still_adds_up_and_never_exceeds_the_cap(
    charge: int, rate: int, cap: int
) -> None:
    split = split_charge(charge, rate, subsidy_cap=cap)
    assert split.subsidy + split.copay == charge
    assert 0 <= split.subsidy <= max(cap, 0)
    assert split.subsidy <= charge * rate // BASIS_POINTS


# -- award_commitment_cents -------------------------------------------------------------------


def test_award_commits_hours_times_price_times_rate() -> None:
    # 100 GPU-hours at HK$36/h, 70% subsidised
    assert award_commitment_cents(100, 3600, 7000) == 252_000


def test_award_commitment_rounds_down_to_the_cent() -> None:
    assert award_commitment_cents(1, 1, 7000) == 0
    assert award_commitment_cents(3, 333, 5000) == 499  # 499.5


@given(st.integers(min_value=0, max_value=10**7), prices, rates)
def test_award_commitment_never_exceeds_the_list_value(hours: int, price: int, rate: int) -> None:
    commitment = award_commitment_cents(hours, price, rate)
    assert 0 <= commitment <= hours * price
    assert commitment == split_charge(hours * price, rate).subsidy
