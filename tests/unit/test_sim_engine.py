"""The simulator's engine and planner on small traces whose outcome is worked out by hand."""

from __future__ import annotations

import math
from datetime import UTC, datetime
from itertools import pairwise

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from aisc.scheduler.config import preset
from aisc.sim.engine import POLICIES, SimCluster, SimRun, simulate
from aisc.sim.planner import (
    PFLOPS_PER_GPU,
    cluster_for_capacity,
    money,
    offered_load,
    scale_to_load,
)
from aisc.sim.records import JobRecord, SimResult, Trace, TraceJob

Job = tuple[float, float, int, str]  # submit, duration, gpus, project


def trace(*jobs: Job, name: str = "hand") -> Trace:
    """Jobs numbered 1..n in the order given (the order the readers would give them)."""
    return Trace(
        name,
        [
            TraceJob(i, submit, duration, gpus, project)
            for i, (submit, duration, gpus, project) in enumerate(jobs, start=1)
        ],
    )


def by_id(result: SimResult) -> dict[int, JobRecord]:
    records = {r.job_id: r for r in result.records}
    assert len(records) == len(result.records), "a job completed twice"
    return records


def starts(result: SimResult) -> dict[int, float]:
    return {job_id: r.start_s for job_id, r in by_id(result).items()}


# -- ordering and backfill --------------------------------------------------------------------

# One 8-GPU node. A takes half the node; B wants all of it, so it must wait for A; C is one
# GPU for 10 s, which fits beside A now; D is one GPU for 200 s, which would delay B.
QUEUE = trace(
    (0, 100, 4, "p"),  # A
    (1, 50, 8, "p"),  # B
    (2, 10, 1, "p"),  # C
    (3, 200, 1, "p"),  # D
)
ONE_NODE = SimCluster(nodes=1, gpus_per_node=8)


def test_fifo_keeps_strict_order() -> None:
    # B cannot fit beside A, and in strict order nothing behind B may pass it: C and D wait
    # for B even though GPUs sit idle from 0 to 100.
    result = simulate(QUEUE, ONE_NODE, "fifo")
    assert starts(result) == {1: 0, 2: 100, 3: 150, 4: 150}
    assert {r.job_id: r.end_s for r in result.records} == {1: 100, 2: 150, 3: 160, 4: 350}


def test_backfill_starts_a_short_job_that_ends_before_the_reservation() -> None:
    # limits are durations x 1.5: A's is 150, so B is reserved the whole node at 150. C's limit
    # is 15 s: started at 2 it is surely done by 17 < 150, so it backfills. D's limit is 300 s:
    # it would hold a GPU B needs at 150, so it waits. A really ends at 100 and B starts then.
    result = simulate(QUEUE, ONE_NODE, "backfill", limit_factor=1.5)
    assert starts(result) == {1: 0, 2: 100, 3: 2, 4: 150}
    assert by_id(result)[3].wait_s == 0


@pytest.mark.parametrize(("submit", "start"), [(89, 89), (90, 90), (91, 150)])
def test_backfill_never_delays_the_reservation(submit: float, start: float) -> None:
    # exact limits: B's reserved start is A's limit, 100. A 10 s job on the free GPUs may start
    # if it is surely done by then (ending exactly at 100 is fine); one second later it must
    # wait until B is done, though it would leave room for it by B's true start.
    t = trace((0, 100, 4, "p"), (1, 50, 8, "p"), (submit, 10, 1, "p"))
    result = simulate(t, ONE_NODE, "backfill", limit_factor=1.0)
    assert starts(result) == {1: 0, 2: 100, 3: start}


def test_srtf_starts_the_shortest_waiting_job_first() -> None:
    # A holds the node until 100; B (1000 s) and C (10 s) both wait for all of it. FIFO runs B
    # first; the oracle runs C, submitted later, first.
    waiting = trace((0, 100, 8, "p"), (1, 1000, 8, "p"), (2, 10, 8, "p"))
    assert starts(simulate(waiting, ONE_NODE, "fifo")) == {1: 0, 2: 100, 3: 1100}
    assert starts(simulate(waiting, ONE_NODE, "srtf")) == {1: 0, 2: 110, 3: 100}


# -- preemption -------------------------------------------------------------------------------

TWO_NODES = SimCluster(nodes=2, gpus_per_node=8)


def borrowing(y_submit: float) -> Trace:
    """X and Y have equal GPU-time in the trace (2 x 8 x 5000 = 8 x 10000), so each is entitled
    to half the cluster: 8 GPUs. X runs two 8-GPU jobs from 0, one on borrowed GPUs."""
    return trace(
        (0, 5000, 8, "x"),
        (0, 5000, 8, "x"),
        (y_submit, 10_000, 8, "y"),
    )


def test_aisc_reclaims_borrowed_gpus_by_preemption() -> None:
    result = simulate(borrowing(1000), TWO_NODES, "aisc")
    assert result.entitlements == {"x": 0.5, "y": 0.5}
    jobs = by_id(result)
    # Y is within its guarantee and X's borrowed job has run past its 600 s minimum: Y starts
    # the moment it arrives, in the borrowed job's place
    assert jobs[3].start_s == 1000
    assert jobs[3].preemptions == 0
    victims = [r for r in result.records if r.preemptions]
    assert len(victims) == 1
    victim = victims[0]
    assert victim.project == "x"
    assert victim.lost_gpu_seconds == 8 * (1000 - 0)
    # it starts again from scratch when X's other job frees its node, and runs in full
    assert victim.start_s == 5000
    assert victim.end_s - victim.start_s == victim.duration_s == 5000
    other = jobs[1] if victim.job_id == 2 else jobs[2]
    assert (other.start_s, other.end_s, other.preemptions) == (0, 5000, 0)
    # the cluster stayed full through the swap
    assert dict(result.busy_series) == {0: 16, 10_000: 8, 11_000: 0}


def test_aisc_reclaims_once_the_borrowed_job_reaches_its_minimum_run() -> None:
    # Y arrives at 100, before X's borrowed job has run 600 s. Nothing ends until 5000, but the
    # live controller cycles periodically, so Y gets the GPUs at 600; the replay must too.
    result = simulate(borrowing(100), TWO_NODES, "aisc")
    jobs = by_id(result)
    assert jobs[3].start_s == 600
    victim = next(r for r in result.records if r.preemptions)
    assert victim.lost_gpu_seconds == 8 * 600
    assert (victim.start_s, victim.end_s) == (5000, 10_000)


@pytest.mark.parametrize("policy", ["fifo", "backfill", "srtf"])
def test_baselines_never_preempt(policy: str) -> None:
    # without borrowing, X's second job waits for its first: nothing is lent, nothing taken back
    result = simulate(borrowing(1000), TWO_NODES, policy)
    assert all(r.preemptions == 0 and r.lost_gpu_seconds == 0 for r in result.records)
    assert starts(result) == {1: 0, 2: 0, 3: 5000}


# -- sizes ------------------------------------------------------------------------------------


def test_multi_node_requests_round_up_and_oversized_jobs_are_refused() -> None:
    t = trace((0, 10, 12, "p"), (0, 10, 24, "p"), (5, 10, 3, "p"))
    run = SimRun(t, TWO_NODES, "fifo")
    result = run.run()
    assert run.refused == 1  # 24 GPUs > the cluster's 16
    jobs = by_id(result)
    assert set(jobs) == {1, 3}
    assert (jobs[1].gpus, jobs[1].requested_gpus) == (16, 12)  # whole nodes
    assert (jobs[3].gpus, jobs[3].requested_gpus) == (3, 3)
    assert jobs[3].start_s == 10  # the 12-GPU job held both nodes until 10
    assert max(busy for _, busy in result.busy_series) == 16


def test_progress_reports_the_final_count() -> None:
    seen: list[int] = []
    simulate(QUEUE, ONE_NODE, "fifo", progress=seen.append)
    assert seen == [4]


def test_bad_settings_are_value_errors() -> None:
    with pytest.raises(ValueError, match="at least 1"):
        simulate(QUEUE, ONE_NODE, "fifo", limit_factor=0.9)
    with pytest.raises(ValueError, match="unknown policy 'lottery'"):
        simulate(QUEUE, ONE_NODE, "lottery")
    with pytest.raises(ValueError, match="at least one node"):
        SimCluster(nodes=0, gpus_per_node=8)


# -- conservation on random workloads ---------------------------------------------------------


@st.composite
def workloads(draw: st.DrawFn) -> tuple[Trace, SimCluster]:
    cluster = SimCluster(nodes=draw(st.integers(1, 3)), gpus_per_node=8)
    sizes = [g for g in (1, 2, 4, 8, 16) if g <= cluster.total_gpus]
    jobs = draw(
        st.lists(
            st.tuples(
                st.integers(0, 1000),
                st.integers(1, 500),
                st.sampled_from(sizes),
                st.sampled_from(["a", "b", "c"][: draw(st.integers(1, 3))]),
            ),
            min_size=1,
            max_size=25,
        )
    )
    jobs.sort(key=lambda j: j[0])  # the readers number jobs in submission order
    return trace(*((float(s), float(d), g, p) for s, d, g, p in jobs), name="random"), cluster


def placed(gpus: int, node: int) -> int:
    return gpus if gpus <= node else math.ceil(gpus / node) * node


# durations stay under the aisc preset's 600 s minimum run, so a shorter one lets preemption in
QUICK_RECLAIM = preset("aisc").with_(min_runtime_s=60)


@pytest.mark.parametrize("policy", [*POLICIES, "aisc-60"])
@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(workload=workloads())
def test_every_job_runs_once_in_full_within_the_cluster(
    policy: str, workload: tuple[Trace, SimCluster]
) -> None:
    t, cluster = workload
    if policy == "aisc-60":
        run = SimRun(t, cluster, "aisc", config=QUICK_RECLAIM)
    else:
        run = SimRun(t, cluster, policy)
    result = run.run()
    assert run.refused == 0
    records = by_id(result)
    assert sorted(records) == [j.job_id for j in t.jobs]
    for job in t.jobs:
        r = records[job.job_id]
        assert r.end_s - r.start_s == job.duration_s == r.duration_s
        assert r.start_s >= job.submit_s
        assert (r.gpus, r.requested_gpus) == (placed(job.gpus, cluster.gpus_per_node), job.gpus)
        if not policy.startswith("aisc"):
            assert r.preemptions == 0 and r.lost_gpu_seconds == 0
    used = sum(r.gpus * (r.end_s - r.start_s) for r in result.records)
    assert used == sum(placed(j.gpus, cluster.gpus_per_node) * j.duration_s for j in t.jobs)
    assert used == sum(r.gpus * r.duration_s for r in result.records)

    # the completed runs never overlap beyond the cluster (ends before starts at equal times)
    steps = sorted(
        [(r.start_s, 1, r.gpus) for r in result.records]
        + [(r.end_s, 0, -r.gpus) for r in result.records]
    )
    busy = 0
    for _, _, delta in steps:
        busy += delta
        assert 0 <= busy <= cluster.total_gpus

    # the engine's own busy series: in range, in time order, back to idle, and its area is
    # the completed work plus the work preemptions threw away
    series = result.busy_series
    assert series[-1][1] == 0
    assert all(0 <= b <= cluster.total_gpus for _, b in series)
    assert all(t0 <= t1 for (t0, _), (t1, _) in pairwise(series))
    area = sum(b * (t1 - t0) for (t0, b), (t1, _) in pairwise(series))
    lost = sum(r.lost_gpu_seconds for r in result.records)
    assert area == pytest.approx(used + lost)
    assert series[-1][0] == max(r.end_s for r in result.records)


# -- planner ----------------------------------------------------------------------------------


def test_cluster_for_capacity() -> None:
    cluster = cluster_for_capacity(3000, "H800")
    assert cluster.nodes == math.ceil(3000 / 0.989 / 8) == 380
    assert (cluster.gpus_per_node, cluster.gpu_model) == (8, "H800")
    assert cluster.total_gpus * PFLOPS_PER_GPU["H800"] >= 3000
    assert (cluster.nodes - 1) * 8 * PFLOPS_PER_GPU["H800"] < 3000
    # a figure for a model the table lacks, or to override it (FP8, say)
    assert cluster_for_capacity(100, "MI300X", 8, pflops_per_gpu=1.3).nodes == math.ceil(
        100 / 1.3 / 8
    )
    assert cluster_for_capacity(3000, "H800", 4, pflops_per_gpu=1.978).nodes == math.ceil(
        3000 / 1.978 / 4
    )


def test_cluster_for_capacity_errors() -> None:
    with pytest.raises(ValueError, match="--pflops-per-gpu"):
        cluster_for_capacity(3000, "MI300X")
    with pytest.raises(ValueError, match="positive"):
        cluster_for_capacity(0, "H800")
    with pytest.raises(ValueError, match="positive"):
        cluster_for_capacity(100, "H800", pflops_per_gpu=-1)


def test_scale_to_load_hits_the_target_and_keeps_durations() -> None:
    t = trace((0, 3600, 8, "a"), (600, 7200, 4, "b"), (1800, 100, 1, "a"), (3000, 50, 16, "b"))
    for target in (0.25, 0.9, 1.7):
        scaled = scale_to_load(t, 64, target)
        assert offered_load(scaled, 64) == pytest.approx(target, abs=1e-9)
        assert [j.duration_s for j in scaled.jobs] == [j.duration_s for j in t.jobs]
        assert [(j.job_id, j.gpus, j.project) for j in scaled.jobs] == [
            (j.job_id, j.gpus, j.project) for j in t.jobs
        ]
        assert scaled.jobs[0].submit_s == 0
        factor = scaled.jobs[-1].submit_s / t.jobs[-1].submit_s
        assert [j.submit_s for j in scaled.jobs] == pytest.approx(
            [j.submit_s * factor for j in t.jobs]
        )
    assert offered_load(t, 64) == pytest.approx(t.gpu_seconds / (64 * 3000))
    with pytest.raises(ValueError, match="positive"):
        scale_to_load(t, 64, 0)


def one_job(start: float, end: float, gpus: int = 8) -> SimResult:
    record = JobRecord(1, "p", gpus, gpus, start, start, end, end - start)
    return SimResult("fifo", "hand", 16, [record], {"p": 1.0}, [(0.0, 0), (start, gpus), (end, 0)])


def test_money_books_the_charge_in_the_month_the_job_ends() -> None:
    # 8 GPUs from 23:00 on 31 January for 2 hours: 16 GPU-hours at HKD 30.00 is HKD 480.00,
    # 70% of it subsidised, all booked in February when the job ended
    origin = datetime(2026, 1, 31, tzinfo=UTC)
    result = one_job(23 * 3600, 25 * 3600)
    summary = money(result, 1_000_000_00, 3000, 7000, start=origin)
    assert [(m.month, m.subsidy_cents, m.charge_cents) for m in summary.months] == [
        ("2026-02", 33600, 48000)
    ]
    assert summary.subsidy_cents == 33600
    assert summary.exhaustion_date is not None and summary.exhaustion_date > "2030"
    # a fund of twice that lasts twice as long at the same burn rate: 50 h from the origin,
    # 02:00 on 2 February
    assert money(result, 67200, 3000, 7000, start=origin).exhaustion_date == "2026-02-02"
    # per-second billing rounds half up once per job: 1 GPU for 1 s at 30.00/h is 0.83 cents
    assert money(one_job(0, 1, gpus=1), 100, 3000, 7000, start=origin).months[0].charge_cents == 1


def test_money_runs_out_within_the_run() -> None:
    origin = datetime(2026, 1, 31, tzinfo=UTC)
    summary = money(one_job(23 * 3600, 25 * 3600), 30000, 3000, 7000, start=origin)
    assert summary.exhaustion_date == "2026-02-28"  # the subsidy (336.00) passed the fund
    # without a start, the trace's own wall-clock start, else 1 January 2026
    result = one_job(0, 3600)
    assert money(result, 10**9, 3000, 7000).months[0].month == "2026-01"
    result.start_time = datetime(2017, 10, 31, 23, 30, tzinfo=UTC)
    assert money(result, 10**9, 3000, 7000).months[0].month == "2017-11"
