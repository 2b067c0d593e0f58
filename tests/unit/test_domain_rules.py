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
from aisc.scheduler.interface import NodeView, PendingJob, Placement
from aisc.scheduler.simple import PriorityFirstFit

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


# -- PriorityFirstFit -------------------------------------------------------------------------


def job(
    job_id: int, gpus: int = 1, priority: int = 0, submitted: float | None = None, model="H800"
) -> PendingJob:
    return PendingJob(
        job_id=job_id,
        project=1,
        gpus=gpus,
        gpu_model=model,
        priority=priority,
        submitted_at=float(job_id) if submitted is None else submitted,
        time_limit_s=3600,
    )


def node(name: str, free: range | tuple[int, ...], model: str = "H800") -> NodeView:
    return NodeView(name, model, tuple(free))


def schedule(pending: list[PendingJob], nodes: list[NodeView]) -> list[Placement]:
    return PriorityFirstFit().schedule(pending, nodes, now=0.0)


def test_higher_priority_goes_first_whatever_its_submit_time() -> None:
    placed = schedule([job(1, gpus=8), job(2, gpus=8, priority=5)], [node("n1", range(8))])
    assert [p.job_id for p in placed] == [2]


def test_equal_priority_goes_in_submit_order() -> None:
    pending = [job(1, gpus=8, submitted=20.0), job(2, gpus=8, submitted=10.0)]
    placed = schedule(pending, [node("n1", range(8))])
    assert [p.job_id for p in placed] == [2]


def test_placements_come_back_in_scheduling_order() -> None:
    pending = [job(1, submitted=3.0), job(2, priority=1, submitted=9.0), job(3, submitted=1.0)]
    placed = schedule(pending, [node("n1", range(8))])
    assert [p.job_id for p in placed] == [2, 3, 1]


def test_best_fit_chooses_the_fullest_node_that_fits() -> None:
    nodes = [node("roomy", range(8)), node("tight", (5, 6)), node("tiny", (3,))]
    placed = schedule([job(1, gpus=2)], nodes)
    assert placed == [Placement(1, "tight", (5, 6))]


def test_best_fit_breaks_ties_by_node_name() -> None:
    placed = schedule([job(1, gpus=2)], [node("b", range(4)), node("a", range(4))])
    assert placed[0].node == "a"


def test_a_job_takes_the_lowest_free_indices_on_its_node() -> None:
    placed = schedule([job(1, gpus=3)], [node("n1", (7, 2, 5, 0))])
    assert placed == [Placement(1, "n1", (0, 2, 5))]


def test_jobs_share_a_node_without_sharing_gpus() -> None:
    placed = schedule([job(1, gpus=3), job(2, gpus=3)], [node("n1", range(8))])
    assert [p.gpu_indices for p in placed] == [(0, 1, 2), (3, 4, 5)]


def test_a_job_only_runs_on_its_own_gpu_model() -> None:
    nodes = [node("a100", range(8), model="A100"), node("h800", range(2), model="H800")]
    placed = schedule([job(1, gpus=4, model="H800"), job(2, gpus=4, model="A100")], nodes)
    assert {p.job_id: p.node for p in placed} == {2: "a100"}


def test_a_job_that_does_not_fit_is_skipped_and_smaller_ones_behind_it_start() -> None:
    pending = [job(1, gpus=8, priority=3), job(2, gpus=2), job(3, gpus=4)]
    placed = schedule(pending, [node("n1", range(6))])
    assert [p.job_id for p in placed] == [2, 3]


def test_nothing_is_placed_without_free_gpus() -> None:
    assert schedule([job(1)], [node("n1", ())]) == []
    assert schedule([job(1)], []) == []
    assert schedule([], [node("n1", range(8))]) == []


@st.composite
def cluster(draw: st.DrawFn) -> tuple[list[NodeView], list[PendingJob]]:
    nodes = []
    for i in range(draw(st.integers(0, 6))):
        size = draw(st.integers(0, 8))
        free = draw(st.lists(st.integers(0, 7), max_size=size, unique=True))
        nodes.append(node(f"n{i}", tuple(free), draw(st.sampled_from(["H800", "A100"]))))
    pending = [
        PendingJob(
            job_id=i,
            project=draw(st.integers(1, 3)),
            gpus=draw(st.integers(1, 9)),
            gpu_model=draw(st.sampled_from(["H800", "A100"])),
            priority=draw(st.integers(-2, 2)),
            submitted_at=draw(st.floats(0, 100)),
            time_limit_s=3600,
        )
        for i in range(draw(st.integers(0, 20)))
    ]
    return nodes, pending


@given(cluster())
def test_the_scheduler_never_hands_out_a_gpu_twice_or_one_that_is_not_free(
    state: tuple[list[NodeView], list[PendingJob]],
) -> None:
    nodes, pending = state
    placed = schedule(pending, nodes)
    by_id = {j.job_id: j for j in pending}
    by_node = {n.name: n for n in nodes}
    assert len({p.job_id for p in placed}) == len(placed)
    handed_out = [(p.node, g) for p in placed for g in p.gpu_indices]
    assert len(set(handed_out)) == len(handed_out)
    for p in placed:
        assert set(p.gpu_indices) <= set(by_node[p.node].free_gpus)
        assert len(p.gpu_indices) == by_id[p.job_id].gpus
        assert by_node[p.node].gpu_model == by_id[p.job_id].gpu_model


@given(cluster())
def test_every_job_left_waiting_would_not_fit_on_what_is_left(
    state: tuple[list[NodeView], list[PendingJob]],
) -> None:
    nodes, pending = state
    placed = schedule(pending, nodes)
    left = {n.name: len(n.free_gpus) for n in nodes}
    for p in placed:
        left[p.node] -= len(p.gpu_indices)
    started = {p.job_id for p in placed}
    for j in pending:
        if j.job_id not in started:
            assert all(left[n.name] < j.gpus for n in nodes if n.gpu_model == j.gpu_model)


@given(cluster())
def test_placements_follow_priority_then_submit_order(
    state: tuple[list[NodeView], list[PendingJob]],
) -> None:
    nodes, pending = state
    placed = schedule(pending, nodes)
    order = [p.job_id for p in placed]
    rank = {j.job_id: (-j.priority, j.submitted_at, j.job_id) for j in pending}
    assert order == sorted(order, key=rank.__getitem__)
