"""Small domain rules (rubrics, scores, job states) and the simple scheduling policy."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from aisc.domain.errors import ValidationError
from aisc.domain.model import (
    FINAL_JOB_STATES,
    JobState,
    validate_rubric,
    validate_scores,
    weighted_score,
)

RUBRIC = {"alignment": 25, "reasonableness": 20, "merit": 25, "team": 15, "impact": 15}

# -- rubrics ----------------------------------------------------------------------------------


def test_a_rubric_whose_weights_sum_to_100_is_accepted() -> None:
    assert validate_rubric(RUBRIC) == RUBRIC


def test_a_single_criterion_of_weight_100_is_a_rubric() -> None:
    assert validate_rubric({"merit": 100}) == {"merit": 100}


def test_rubric_criterion_names_are_trimmed() -> None:
    assert validate_rubric({" merit ": 60, "team": 40}) == {"merit": 60, "team": 40}


@pytest.mark.parametrize(
    ("weights", "message"),
    [
        ({"a": 50, "b": 49}, "sum to 100, not 99"),
        ({"a": 50, "b": 51}, "sum to 100, not 101"),
        ({}, "at least one criterion"),
        ({"a": 100, "b": 0}, "positive whole number"),
        ({"a": 110, "b": -10}, "positive whole number"),
        ({"a": 50.0, "b": 50}, "positive whole number"),
        ({"a": True, "b": 99}, "positive whole number"),
        ({"  ": 100}, "cannot be empty"),
        ({"merit": 50, " merit": 50}, "appears twice"),
    ],
)
def test_a_bad_rubric_is_refused_with_its_reason(weights: dict, message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        validate_rubric(weights)


# -- scores -----------------------------------------------------------------------------------


def test_scores_for_every_criterion_within_0_to_10_are_accepted() -> None:
    scores = dict.fromkeys(RUBRIC, 7) | {"merit": 0, "team": 10}
    assert validate_scores(RUBRIC, scores) == scores


def test_a_missing_score_is_named() -> None:
    scores = dict.fromkeys(RUBRIC, 7)
    del scores["team"]
    with pytest.raises(ValidationError, match="missing scores for: team"):
        validate_scores(RUBRIC, scores)


def test_an_unknown_criterion_is_named() -> None:
    scores = dict.fromkeys(RUBRIC, 7) | {"charisma": 9}
    with pytest.raises(ValidationError, match="unknown criteria: charisma"):
        validate_scores(RUBRIC, scores)


@pytest.mark.parametrize("bad", [-1, 11, 7.5, "7", True])
def test_a_score_outside_0_to_10_or_not_whole_is_refused(bad: object) -> None:
    scores = dict.fromkeys(RUBRIC, 7) | {"merit": bad}
    with pytest.raises(ValidationError, match="'merit'"):
        validate_scores(RUBRIC, scores)


def test_weighted_score_is_out_of_100() -> None:
    assert weighted_score(RUBRIC, dict.fromkeys(RUBRIC, 10)) == 100
    assert weighted_score(RUBRIC, dict.fromkeys(RUBRIC, 0)) == 0
    assert weighted_score(RUBRIC, dict.fromkeys(RUBRIC, 7)) == 70


def test_weighted_score_weighs_each_criterion() -> None:
    scores = dict.fromkeys(RUBRIC, 0) | {"alignment": 10}
    assert weighted_score(RUBRIC, scores) == 25
    scores = dict.fromkeys(RUBRIC, 0) | {"team": 4}
    assert weighted_score(RUBRIC, scores) == 6


@given(st.lists(st.integers(0, 10), min_size=5, max_size=5))
def test_weighted_score_stays_between_0_and_100(values: list[int]) -> None:
    score = weighted_score(RUBRIC, dict(zip(RUBRIC, values, strict=True)))
    assert 0 <= score <= 100


# -- job states -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "state", [JobState.COMPLETED, JobState.FAILED, JobState.CANCELLED, JobState.TIMEOUT]
)
def test_a_finished_job_is_final_and_not_active(state: JobState) -> None:
    assert state.is_final
    assert not state.is_active


@pytest.mark.parametrize("state", [JobState.STARTING, JobState.RUNNING])
def test_a_starting_or_running_job_is_active_and_not_final(state: JobState) -> None:
    assert state.is_active
    assert not state.is_final


@pytest.mark.parametrize("state", [JobState.QUEUED, JobState.PREEMPTED])
def test_a_waiting_or_requeued_job_is_neither_active_nor_final(state: JobState) -> None:
    assert not state.is_active
    assert not state.is_final


def test_no_job_state_is_both_active_and_final() -> None:
    for state in JobState:
        assert sum([state.is_final, state.is_active]) <= 1
    assert set(FINAL_JOB_STATES) <= set(JobState)


def test_job_states_round_trip_through_their_stored_text() -> None:
    assert JobState("timeout") is JobState.TIMEOUT
    assert JobState.RUNNING.value == "running"
