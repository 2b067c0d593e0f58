"""The scheduler's policy core on small hand-made clusters whose right answer is known, plus
property tests over random workloads. `run` below is a tiny event-driven driver: it plays the
part of the controller (or the simulator), confirming every start and preemption the core asks
for and finishing each job at its start plus its true duration."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from unittest.mock import patch

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from aisc.scheduler import core
from aisc.scheduler.config import PolicyConfig, preset
from aisc.scheduler.core import Scheduler, Unschedulable, node_specs
from aisc.scheduler.interface import CycleResult, NodeSpec, PendingJob, Placement

H800 = "H800"
A100 = "A100"
A, B, C = 1, 2, 3  # projects

# -- helpers -----------------------------------------------------------------------------------


def cluster(nodes: int, gpus: int = 8, model: str = H800) -> list[NodeSpec]:
    return node_specs((f"node{i + 1}", model, gpus) for i in range(nodes))


def job(
    job_id: int,
    gpus: int = 1,
    *,
    project: int = A,
    at: float = 0.0,
    limit: int = 1000,
    model: str = H800,
    priority: int = 0,
) -> PendingJob:
    return PendingJob(job_id, project, gpus, model, priority, at, limit)


def start_all(s: Scheduler, now: float) -> CycleResult:
    """One cycle whose preemptions and starts the driver all carries out."""
    result = s.cycle(now)
    for job_id in result.preemptions:
        s.preempted(job_id, now)
    for placement in result.starts:
        s.started(placement, now)
    return result


def where(result: CycleResult) -> dict[int, tuple[str, ...]]:
    return {p.job_id: tuple(n.node for n in p.nodes) for p in result.starts}


@dataclass
class Stint:
    """One stretch a job spent running: it ended (finished or preempted) or was still running."""

    job: PendingJob
    placement: Placement
    start: float
    end: float | None = None
    preempted: bool = False


@dataclass
class Trace:
    stints: list[Stint] = field(default_factory=list)
    first_reserved: dict[int, float] = field(default_factory=dict)
    preemptions: list[tuple[int, float]] = field(default_factory=list)
    until: float = 0.0

    def starts(self, job_id: int) -> list[float]:
        return [s.start for s in self.stints if s.job.job_id == job_id]

    def start(self, job_id: int) -> float:
        (only,) = self.starts(job_id)
        return only

    def finished(self) -> dict[int, Stint]:
        return {s.job.job_id: s for s in self.stints if s.end is not None and not s.preempted}

    def gpu_seconds(self, project: int, since: float, until: float) -> float:
        total = 0.0
        for s in self.stints:
            if s.job.project != project:
                continue
            end = self.until if s.end is None else s.end
            total += s.job.gpus * max(0.0, min(end, until) - max(s.start, since))
        return total


def run(
    scheduler: Scheduler,
    jobs: Sequence[tuple[PendingJob, float]],
    until: float,
    *,
    tick: float | None = None,
    on_cycle: Callable[[Scheduler, CycleResult, float], None] | None = None,
) -> Trace:
    """Submit each job at its submit time and run it for its true duration once started.

    The scheduler cycles at every event time (a submission or a job's end) and, with `tick`,
    also every `tick` seconds while jobs wait; at one time, ends come first, then submissions,
    then the cycle, whose preemptions the driver applies before its starts.
    """
    duration = {j.job_id: d for j, d in jobs}
    for j, d in jobs:
        assert 0 < d <= j.time_limit_s, "a true duration is within the time limit"
    arrivals = sorted((j for j, _ in jobs), key=lambda j: (j.submitted_at, j.job_id))
    trace = Trace(until=until)
    running: dict[int, Stint] = {}
    nxt = 0
    now = -math.inf
    while True:
        times = [s.start + duration[i] for i, s in running.items()]
        if nxt < len(arrivals):
            times.append(arrivals[nxt].submitted_at)
        if tick is not None and len(scheduler.queue) and now > -math.inf:
            times.append((math.floor(now / tick) + 1) * tick)
        if not times or min(times) > until:
            break
        now = min(times)
        for job_id, stint in sorted(running.items()):
            if stint.start + duration[job_id] <= now:
                scheduler.finished(job_id, now)
                stint.end = now
                del running[job_id]
        while nxt < len(arrivals) and arrivals[nxt].submitted_at <= now:
            scheduler.submit(arrivals[nxt])
            nxt += 1
        result = scheduler.cycle(now)
        if on_cycle is not None:
            on_cycle(scheduler, result, now)
        for reservation in result.reservations:
            trace.first_reserved.setdefault(reservation.job_id, reservation.start_at)
        for job_id in result.preemptions:
            scheduler.preempted(job_id, now)
            stint = running.pop(job_id)
            stint.end, stint.preempted = now, True
            trace.preemptions.append((job_id, now))
        for placement in result.starts:
            pending = scheduler.queue.jobs[placement.job_id]
            scheduler.started(placement, now)
            stint = Stint(pending, placement, now)
            running[placement.job_id] = stint
            trace.stints.append(stint)
    return trace


def exact(*jobs: PendingJob) -> list[tuple[PendingJob, float]]:
    """Jobs that run exactly to their time limits."""
    return [(j, float(j.time_limit_s)) for j in jobs]


# -- 1. EASY backfill never delays the reserved job -----------------------------------------


def test_a_blocked_whole_cluster_job_is_reserved_and_only_short_jobs_backfill() -> None:
    s = Scheduler(cluster(2), preset("backfill"))
    s.submit(job(1, 4, limit=1000))  # node1: 4 busy until 1000
    s.submit(job(2, 8, limit=1000))  # node2: full until 1000
    start_all(s, 0)
    s.submit(job(3, 16, at=1, limit=500))  # needs both nodes: reserved for 1000
    s.submit(job(4, 2, at=2, limit=500))  # ends at 510, before 1000: may backfill
    s.submit(job(5, 2, at=3, limit=2000))  # would end after 1000: must wait

    result = s.cycle(10)

    assert [(r.job_id, r.start_at, r.nodes) for r in result.reservations] == [
        (3, 1000.0, ("node1", "node2"))
    ]
    assert where(result) == {4: ("node1",)}
    assert 5 not in result.started_ids


def test_the_reserved_job_starts_exactly_when_the_running_jobs_reach_their_limits() -> None:
    s = Scheduler(cluster(2), preset("backfill"))
    trace = run(
        s,
        exact(
            job(1, 4, limit=1000),
            job(2, 8, limit=1000),
            job(3, 16, at=1, limit=500),
            job(4, 2, at=2, limit=500),
            job(5, 2, at=3, limit=2000),
            job(6, 1, at=4, limit=900),  # ends at 904: backfills too
        ),
        until=10_000,
    )
    assert trace.first_reserved[3] == 1000.0
    assert trace.start(3) == 1000.0
    assert trace.start(4) == 2.0
    assert trace.start(6) == 4.0
    assert trace.start(5) == 1500.0  # after the reserved job, never before it


def test_a_long_job_may_use_reserved_node_gpus_the_reservation_does_not_need() -> None:
    s = Scheduler(cluster(2), preset("backfill"))
    s.submit(job(1, 6, limit=1000))  # node1: 2 free, all 8 free at 1000
    s.submit(job(2, 8, limit=1500))  # node2: full until 1500
    start_all(s, 0)
    s.submit(job(3, 4, at=1, limit=500))  # blocked: node1 at 1000 is its earliest
    s.submit(job(4, 2, at=2, limit=5000))  # ends long after 1000, but node1 has 4 spare then

    result = s.cycle(10)

    assert [(r.job_id, r.start_at, r.nodes) for r in result.reservations] == [
        (3, 1000.0, ("node1",))
    ]
    assert where(result) == {4: ("node1",)}


def test_a_long_job_that_would_eat_into_the_reserved_gpus_waits() -> None:
    s = Scheduler(cluster(1), preset("backfill"))
    s.submit(job(1, 6, limit=1000))
    start_all(s, 0)
    s.submit(job(2, 7, at=1, limit=500))  # reserved at 1000, leaving 1 GPU spare then
    s.submit(job(3, 2, at=2, limit=5000))  # needs 2 past 1000: would delay job 2
    s.submit(job(4, 1, at=3, limit=5000))  # the 1 spare GPU: fine
    s.submit(job(5, 1, at=4, limit=5000))  # the spare GPU is gone now

    result = s.cycle(10)

    assert [r.job_id for r in result.reservations] == [2]
    assert result.started_ids == [4]
    assert "delay" in s.explain(3, 10).reason
    assert "delay" in s.explain(5, 10).reason


def test_a_whole_cluster_job_starts_at_its_reservation_despite_a_stream_of_small_jobs() -> None:
    small = [job(10 + k, 1, at=5 + 50 * k, limit=300) for k in range(40)]
    s = Scheduler(cluster(2), preset("backfill"))
    trace = run(
        s,
        exact(job(1, 8, limit=1000), job(2, 4, limit=700), job(3, 16, at=1, limit=100), *small),
        until=20_000,
    )
    assert trace.first_reserved[3] == 1000.0
    assert trace.start(3) == 1000.0
    # short jobs did backfill before 1000, and none of them was running at 1000
    assert any(trace.start(j.job_id) < 1000 for j in small)
    for j in small:
        began, ended = trace.start(j.job_id), trace.finished()[j.job_id].end
        assert ended is not None
        assert ended <= 1000 or began >= 1100


@st.composite
def workloads(draw: st.DrawFn, max_jobs: int = 14) -> tuple[int, list[PendingJob]]:
    nodes = draw(st.integers(1, 3))
    sizes = [g for g in (1, 2, 3, 4, 6, 8, 16) if g <= 8 * nodes]
    count = draw(st.integers(1, max_jobs))
    jobs = []
    at = 0
    for k in range(count):
        at += draw(st.one_of(st.just(0), st.integers(0, 300)))  # often several at once
        jobs.append(
            job(
                k + 1,
                draw(st.sampled_from(sizes)),
                project=draw(st.sampled_from((A, B, C))),
                at=float(at),
                limit=draw(st.one_of(st.integers(1, 1000), st.sampled_from((100, 1000, 5000)))),
            )
        )
    return nodes, jobs


@settings(max_examples=250, deadline=None)
@given(workloads())
def test_under_easy_backfill_a_reserved_job_starts_at_its_first_reserved_time(
    workload: tuple[int, list[PendingJob]],
) -> None:
    nodes, jobs = workload
    s = Scheduler(cluster(nodes), preset("backfill"))
    trace = run(s, exact(*jobs), until=1e9)

    finished = trace.finished()
    assert set(finished) == {j.job_id for j in jobs}, "every job ran to the end"
    for j in jobs:
        stint = finished[j.job_id]
        assert stint.end is not None and stint.end - stint.start <= j.time_limit_s
    for job_id, reserved_at in trace.first_reserved.items():
        assert trace.start(job_id) <= reserved_at
        assert trace.start(job_id) == reserved_at  # no job ends early, so none sooner either


# -- 2. fair share converges to the entitlements ---------------------------------------------


def backlog(first_id: int, project: int, count: int, at: float, limit: int) -> list[PendingJob]:
    return [job(first_id + k, 1, project=project, at=at, limit=limit) for k in range(count)]


def shares_used(trace: Trace, projects: Sequence[int], since: float, until: float) -> list[float]:
    used = [trace.gpu_seconds(p, since, until) for p in projects]
    return [u / sum(used) for u in used]


@pytest.mark.parametrize(
    ("shares", "nodes"),
    [({A: 1, B: 1}, 1), ({A: 1, B: 3}, 1), ({A: 1, B: 1, C: 2}, 2)],
    ids=["1:1", "1:3", "1:1:2"],
)
def test_fair_share_gives_backlogged_projects_their_entitled_fractions(
    shares: dict[int, float], nodes: int
) -> None:
    duration, until = 600, 60_000
    depth = 8 * nodes * until // duration + 8  # each could keep the whole cluster busy
    jobs = []
    for n, project in enumerate(shares):  # the first project queues everything first
        jobs += backlog(10_000 * project, project, depth, at=float(n), limit=duration)
    config = preset("aisc").with_(usage_half_life_s=3_600.0)
    s = Scheduler(cluster(nodes), config)
    s.set_shares(shares)

    trace = run(s, exact(*jobs), until=until, tick=300)

    got = shares_used(trace, list(shares), until / 2, until)
    total = sum(shares.values())
    for fraction, share in zip(got, shares.values(), strict=True):
        assert abs(fraction - share / total) <= 0.10, (got, shares)

    # the same workload in strict submit order: the project that queued first takes everything
    fifo = run(Scheduler(cluster(nodes), preset("fifo")), exact(*jobs), until=until)
    first = shares_used(fifo, list(shares), until / 2, until)[0]
    assert first == 1.0


# -- 3. borrowing fills idle GPUs; the owner reclaims them -----------------------------------


def borrowing_cluster() -> Scheduler:
    """2x8 GPUs, A and B entitled to 8 each; B alone has work: 16 jobs, one every 10 s."""
    s = Scheduler(cluster(2))
    s.set_shares({A: 1, B: 1})
    for k in range(16):
        s.submit(job(100 + k, 1, project=B, at=10.0 * k, limit=100_000))
        start_all(s, 10.0 * k)
    return s


def test_an_idle_cluster_is_lent_and_jobs_beyond_the_guarantee_are_marked_borrowed() -> None:
    s = borrowing_cluster()
    assert len(s.running) == 16
    borrowed = sorted(i for i, r in s.running.items() if r.borrowed)
    assert borrowed == list(range(108, 116))  # the 8 beyond B's guaranteed 8
    assert "borrowed" in s.explain(115, 200).reason
    assert "borrowed" not in s.explain(100, 200).reason


def test_the_owner_waits_until_borrowed_jobs_have_run_their_minimum_time() -> None:
    s = borrowing_cluster()
    s.submit(job(1, 1, at=600))
    # borrowed jobs 108..115 started at 80..150; by 700 only 108, 109, 110 have run 600 s
    result = s.cycle(700)
    assert result.preemptions == [110]  # the most recently started that may be stopped
    assert result.started_ids == [1]
    assert s.cycle(600).preemptions == []  # nobody has run 600 s yet
    assert s.cycle(600).starts == []


def test_reclaiming_preempts_the_fewest_most_recently_started_borrowed_jobs() -> None:
    s = borrowing_cluster()
    s.submit(job(1, 1, at=1000))
    s.submit(job(2, 1, at=1001))
    s.submit(job(3, 4, at=1002, priority=-10))  # after the two small ones

    result = s.cycle(2000)

    # 115 and 114 make room for the small ones; the 4-GPU job needs the next 4 on node2
    assert sorted(result.preemptions) == [110, 111, 112, 113, 114, 115]
    assert sorted(result.started_ids) == [1, 2, 3]
    assert not any(p.borrowed for p in result.starts), "within A's guarantee"
    assert all(s.running[i].borrowed for i in result.preemptions)


def test_preempted_jobs_wait_again_and_run_later() -> None:
    s = borrowing_cluster()
    s.submit(job(1, 2, at=1000, limit=500))
    result = start_all(s, 2000)
    assert sorted(result.preemptions) == [114, 115]
    assert 114 in s.queue and 115 in s.queue
    assert s.explain(115, 2000).state == "pending"

    s.finished(1, 2500)
    again = start_all(s, 2500)
    assert sorted(again.started_ids) == [114, 115]


def test_non_borrowed_jobs_are_never_preempted_even_when_the_owner_wants_more() -> None:
    s = borrowing_cluster()
    for k in range(12):
        s.submit(job(k + 1, 1, at=1000))
    first = start_all(s, 2000)
    second = start_all(s, 3000)
    preempted = first.preemptions + second.preemptions
    assert sorted(preempted) == list(range(108, 116))
    assert len(s.running) == 16
    assert sum(1 for r in s.running.values() if r.job.project == A) == 8
    assert sum(1 for r in s.running.values() if r.job.project == B) == 8
    assert not s.cycle(10_000).preemptions


def test_jobs_within_their_guarantee_go_before_borrowers_of_higher_priority() -> None:
    """As Kueue orders its heads: a job that would borrow waits behind one that fits within
    its project's guarantee, whatever their priorities, so a freed GPU is not lent only to be
    reclaimed minutes later."""
    s = Scheduler(cluster(2))
    s.set_shares({A: 1, B: 1})  # 8 GPUs guaranteed each
    for k in range(8):
        s.submit(job(100 + k, 1, project=B, limit=100_000))
    for k in range(7):
        s.submit(job(200 + k, 1, project=A, limit=100_000))
    start_all(s, 0)  # B runs its 8, A 7 of its 8: one GPU is free on node2
    s.submit(job(1, 1, project=B, at=50, priority=10))  # B's 9th GPU would be borrowed
    s.submit(job(2, 1, project=A, at=50, priority=-10))  # A's 8th is within its guarantee

    # by priority alone B's job comes first: its class is worth 2,000 (qos weight x 1), and
    # A's fair share (7 of 15 GPU-seconds used against half) only about 470 (10,000 x
    # (2^(-14/15) - 2^(-16/15)))
    assert s.explain(1, 100).factors.priority > s.explain(2, 100).factors.priority
    assert s.ordered_ids(100) == [2, 1]
    assert s.explain(1, 100).position == 2
    assert "guaranteed share" in s.explain(1, 100).reason
    result = start_all(s, 100)
    assert result.started_ids == [2]
    assert not result.starts[0].borrowed

    # without borrowing there are no guarantees to order by: priority decides
    plain = Scheduler(cluster(2), PolicyConfig(borrowing=False, preemption=False))
    plain.set_shares({A: 1, B: 1})
    for k in range(8):
        plain.submit(job(100 + k, 1, project=B, limit=100_000))
    for k in range(7):
        plain.submit(job(200 + k, 1, project=A, limit=100_000))
    start_all(plain, 0)
    plain.submit(job(1, 1, project=B, at=50, priority=10))
    plain.submit(job(2, 1, project=A, at=50, priority=-10))
    assert plain.ordered_ids(100) == [1, 2]
    assert start_all(plain, 100).started_ids == [1]


def test_reclaiming_stops_at_the_guarantee_and_never_preempts_to_borrow() -> None:
    s = Scheduler(cluster(2))
    s.set_shares({A: 1, B: 1})  # C has no share: everything it runs is borrowed
    for k in range(6):
        s.submit(job(k + 1, 1, project=A))
    for k in range(10):
        s.submit(job(100 + k, 1, project=C, limit=100_000))
    start_all(s, 0)
    for k in range(4):
        s.submit(job(10 + k, 1, project=A, at=1000))

    result = s.cycle(1000)

    assert len(result.preemptions) == 2  # A needs 2 more to reach its 8
    assert len(result.starts) == 2
    assert not any(p.borrowed for p in result.starts)


def test_a_project_back_within_its_guarantee_keeps_its_once_borrowed_jobs() -> None:
    """As Kueue reclaims: a job started on borrowed GPUs is preempted only while its project
    still uses more than its guarantee, whatever its mark says."""
    s = Scheduler(cluster(2))
    s.set_shares({A: 1, B: 1})  # 8 GPUs each; C has no share
    for k in range(4):
        s.submit(job(200 + k, 1, project=C, at=0, limit=100_000))
    start_all(s, 0)
    for k in range(12):
        s.submit(job(100 + k, 1, project=B, at=10.0 + k, limit=100_000))
        start_all(s, 10.0 + k)
    assert sorted(i for i, r in s.running.items() if r.borrowed and r.job.project == B) == [
        108,
        109,
        110,
        111,
    ]
    for k in range(4):  # four of B's own jobs end: B is back at its guarantee of 8
        s.finished(100 + k, 100)
    for k in range(4):
        s.submit(job(300 + k, 1, project=A, at=100, limit=100_000))
    start_all(s, 100)
    s.submit(job(1, 1, project=A, at=2000))

    result = s.cycle(2000)

    # B's once-borrowed jobs are the most recently started, but B is no longer borrowing;
    # C, which has no share at all, gives a GPU back instead
    assert result.started_ids == [1]
    assert len(result.preemptions) == 1
    assert s.running[result.preemptions[0]].job.project == C


def test_a_multi_node_job_reclaiming_after_a_small_one_gets_whole_nodes() -> None:
    s = Scheduler(cluster(4))
    s.set_shares({A: 1, B: 1})  # 16 guaranteed each; C borrows the whole idle cluster
    for k in range(32):
        s.submit(job(100 + k, 1, project=C, limit=100_000))
    start_all(s, 0)
    s.submit(job(1, 1, project=A, at=1000, priority=10))  # reclaims first
    s.submit(job(2, 16, project=B, at=1000))

    result = s.cycle(2000)

    placed = {p.job_id: p for p in result.starts}
    assert set(placed) == {1, 2}
    big = placed[2]
    assert len(big.nodes) == 2 and placed[1].node not in {n.node for n in big.nodes}
    assert all(len(n.gpu_indices) == 8 for n in big.nodes)
    assert len(result.preemptions) == 17


def test_a_reservation_made_after_a_preemption_does_not_count_the_preempted_job_twice() -> None:
    s = Scheduler(cluster(2))
    s.set_shares({A: 1, B: 1})
    for k in range(8):  # B's guaranteed 8 on node1, until 20000
        s.submit(job(100 + k, 1, project=B, limit=20_000))
    start_all(s, 0)
    for k in range(8):  # B's borrowed 8 on node2, until 10000
        s.submit(job(200 + k, 1, project=B, limit=10_000))
    start_all(s, 0)
    s.submit(job(1, 1, project=A, at=1000, limit=50_000))  # takes a GPU of node2 until 51000
    s.submit(job(2, 8, project=B, at=1000, limit=100))

    result = s.cycle(1000)

    assert len(result.preemptions) == 1 and result.started_ids == [1]
    assert [(r.job_id, r.start_at, r.nodes) for r in result.reservations] == [
        (2, 20_000.0, ("node1",))
    ]


def test_under_a_periodic_driver_preemption_waits_min_runtime_and_hits_only_borrowed() -> None:
    jobs = backlog(100, B, 24, at=0, limit=5_000) + backlog(1, A, 12, at=300, limit=5_000)
    s = Scheduler(cluster(2))
    s.set_shares({A: 1, B: 1})
    stints: dict[int, Placement] = {}
    starts: dict[int, float] = {}

    def remember(sched: Scheduler, result: CycleResult, now: float) -> None:
        for job_id in result.preemptions:
            assert stints[job_id].borrowed
            assert now - starts[job_id] >= sched.config.min_runtime_s
        for p in result.starts:
            stints[p.job_id], starts[p.job_id] = p, now

    trace = run(s, exact(*jobs), until=100_000, tick=60, on_cycle=remember)

    assert trace.preemptions, "A reclaimed its share"
    assert min(t for _, t in trace.preemptions) == 600.0
    assert set(trace.finished()) == {j.job_id for j in jobs}, "preempted jobs ran later"
    # A reaches its guaranteed 8 in two ticks: at most `preemption_attempts` reclaims a cycle
    a_starts = sorted(trace.starts(j.job_id)[0] for j in jobs if j.project == A)
    assert a_starts[:8] == [600.0] * 4 + [660.0] * 4


# -- 4. placement keeps whole nodes for large jobs -------------------------------------------


def test_a_small_job_goes_to_the_fullest_node_it_fits_on() -> None:
    s = Scheduler(cluster(3))
    s.submit(job(1, 8))
    start_all(s, 0)
    s.submit(job(2, 5))
    start_all(s, 0)  # node1: full; node2: 3 free; node3: 8 free
    s.submit(job(3, 2, at=1))
    result = s.cycle(1)
    assert where(result) == {3: ("node2",)}
    assert result.starts[0].gpu_indices == (5, 6)
    s.finished(1, 2)  # node1: 8 free, node2: 3 free
    assert where(s.cycle(2)) == {3: ("node2",)}


def test_small_jobs_pack_so_that_a_later_whole_node_job_can_start() -> None:
    s = Scheduler(cluster(3), preset("backfill"))  # submit order: the 2-GPU job goes first
    s.submit(job(1, 5))
    start_all(s, 0)
    s.submit(job(2, 6))
    start_all(s, 0)  # node1: 3 free, node2: 2 free, node3: 8 free
    assert [r.gpus for r in s.running.values()] == [5, 6]
    assert list(s.free) == [3, 2, 8]
    s.submit(job(3, 2, at=1))  # exactly fills node2 (first fit would take node1)
    s.submit(job(4, 3, at=2))  # exactly fills node1 (first fit: node3, then no room for 5)
    s.submit(job(5, 8, at=3))
    s.submit(job(6, 1, at=4, limit=5000))  # nothing left but node3, which job 5 has taken
    result = s.cycle(10)
    assert where(result) == {3: ("node2",), 4: ("node1",), 5: ("node3",)}


def test_a_job_of_two_nodes_takes_two_whole_nodes() -> None:
    s = Scheduler(cluster(3))
    s.submit(job(1, 1))
    start_all(s, 0)
    s.submit(job(2, 16, at=1))
    result = s.cycle(1)
    (placement,) = result.starts
    assert [n.node for n in placement.nodes] == ["node2", "node3"]
    assert [n.gpu_indices for n in placement.nodes] == [tuple(range(8))] * 2


@pytest.mark.parametrize(
    ("gpus", "model", "says"),
    [
        (12, H800, "multiple of 8"),
        (24, H800, "more than the cluster has"),
        (1, "B200", "no B200"),
        (0, H800, "at least one"),
        (8, A100, "more than the cluster has"),
    ],
)
def test_requests_the_cluster_can_never_run_are_unschedulable(
    gpus: int, model: str, says: str
) -> None:
    s = Scheduler(cluster(2) + node_specs([("gpu-a", A100, 4)]))
    with pytest.raises(Unschedulable, match=says):
        s.check(gpus, model)
    with pytest.raises(Unschedulable):
        s.submit(job(1, gpus, model=model))
    assert len(s.queue) == 0


def test_each_job_runs_on_nodes_of_its_gpu_model() -> None:
    s = Scheduler(node_specs([("a1", A100, 4), ("h1", H800, 8), ("h2", H800, 8)]))
    s.submit(job(1, 4, model=A100))
    s.submit(job(2, 4, model=H800))
    s.submit(job(3, 3, model=A100))  # h1 and h2 have room, but no A100 is free
    result = s.cycle(0)
    assert where(result) == {1: ("a1",), 2: ("h1",)}
    assert s.explain(3, 0).reserved_nodes == ("a1",)


def test_a_multi_node_job_of_a_smaller_node_model_takes_whole_nodes_of_that_model() -> None:
    s = Scheduler(node_specs([("a1", A100, 4), ("a2", A100, 4), ("h1", H800, 8)]))
    s.submit(job(1, 8, model=A100))
    assert where(s.cycle(0)) == {1: ("a1", "a2")}


def test_physical_gpu_indices_are_reported_and_taken_back() -> None:
    s = Scheduler([NodeSpec("n", H800, 4, (2, 3, 6, 7))])
    s.submit(job(1, 2))
    (p,) = start_all(s, 0).starts
    assert p.gpu_indices == (2, 3)
    s.submit(job(2, 2, at=1))
    (q,) = start_all(s, 1).starts
    assert q.gpu_indices == (6, 7)
    s.finished(1, 5)
    s.submit(job(3, 1, at=5))
    assert start_all(s, 5).starts[0].gpu_indices == (2,)


# -- 5. FIFO is strict; backfill lets a short job pass ---------------------------------------


def head_blocked(policy: str) -> Scheduler:
    s = Scheduler(cluster(1), preset(policy))
    s.submit(job(1, 4, limit=1000))
    start_all(s, 0)
    s.submit(job(2, 8, at=1, limit=1000))  # cannot start until 1000
    s.submit(job(3, 2, at=2, limit=100))  # fits now and ends long before 1000
    return s


def test_fifo_never_lets_a_later_job_pass_a_blocked_head() -> None:
    s = head_blocked("fifo")
    result = s.cycle(10)
    assert result.starts == [] and result.reservations == []


def test_fifo_starts_the_next_jobs_in_order_once_the_head_fits() -> None:
    s = Scheduler(cluster(1), preset("fifo"))
    trace = run(
        s,
        exact(job(1, 4, limit=1000), job(2, 8, at=1, limit=1000), job(3, 2, at=2, limit=100)),
        until=10_000,
    )
    assert (trace.start(1), trace.start(2), trace.start(3)) == (0, 1000, 2000)


def test_backfill_lets_a_short_job_pass_a_blocked_head() -> None:
    s = head_blocked("backfill")
    result = s.cycle(10)
    assert result.started_ids == [3]
    assert [(r.job_id, r.start_at) for r in result.reservations] == [(2, 1000.0)]


def test_fifo_orders_by_submit_time_not_priority_class() -> None:
    s = Scheduler(cluster(1), preset("fifo"))
    s.submit(job(1, 8, at=0, priority=-10))
    s.submit(job(2, 8, at=1, priority=10))
    assert s.cycle(5).started_ids == [1]
    assert s.explain(2, 5).position == 2


# -- 6. explain --------------------------------------------------------------------------------


def test_explain_a_running_job_says_where() -> None:
    s = Scheduler(cluster(2))
    s.submit(job(1, 3))
    start_all(s, 0)
    e = s.explain(1, 10)
    assert e.state == "running"
    assert "node1[0,1,2]" in e.reason
    assert e.position is None


def test_explain_a_reserved_job_gives_its_reserved_start_and_nodes() -> None:
    s = head_blocked("backfill")
    s.cycle(10)
    e = s.explain(2, 10)
    assert e.state == "pending"
    assert e.reserved_start == 1000.0
    assert e.reserved_nodes == ("node1",)
    assert e.position == 1


def test_explain_positions_follow_priority_order_and_factors_are_fractions() -> None:
    s = Scheduler(cluster(1))
    s.set_shares({A: 1, B: 1})
    s.submit(job(99, 8, limit=10_000))
    start_all(s, 0)  # the node is full; everything below waits
    s.submit(job(1, 1, at=1, priority=0))
    s.submit(job(2, 1, at=2, priority=5))
    s.submit(job(3, 1, at=3, priority=-5))
    s.submit(job(4, 4, at=4, priority=0, project=B))  # B is unused: a higher fair-share factor
    s.submit(job(5, 1, at=5, priority=0))
    s.cycle(100)

    positions = {i: s.explain(i, 100).position for i in (1, 2, 3, 4, 5)}
    assert positions == {4: 1, 2: 2, 1: 3, 5: 4, 3: 5}
    for i in positions:
        f = s.explain(i, 100).factors
        assert f is not None
        for value in (f.age, f.fairshare, f.size, f.qos):
            assert 0.0 <= value <= 1.0
    e4, e1 = s.explain(4, 100).factors, s.explain(1, 100).factors
    assert e4 is not None and e1 is not None
    assert e4.fairshare == 1.0 and e1.fairshare < 1.0
    assert e4.size > e1.size


def test_explain_breaks_priority_ties_by_submit_time_then_id_as_the_cycle_does() -> None:
    s = Scheduler(cluster(1))
    s.submit(job(99, 8, limit=100))
    start_all(s, 0)
    s.submit(job(2, 8, at=10))
    s.submit(job(1, 8, at=10))
    s.submit(job(3, 8, at=5))
    now = 30 * 86_400.0  # every job's age factor has saturated: equal priorities
    s.finished(99, now)
    factors = {i: s.explain(i, now).factors for i in (1, 2, 3)}
    assert len({f.priority for f in factors.values() if f is not None}) == 1
    assert {i: s.explain(i, now).position for i in (1, 2, 3)} == {3: 1, 1: 2, 2: 3}
    assert s.cycle(now).started_ids == [3]


def test_explain_a_job_it_does_not_know() -> None:
    assert Scheduler(cluster(1)).explain(7, 0).state == "unknown"


# -- the queue's bookkeeping -----------------------------------------------------------------


def test_cancel_removes_a_pending_job_and_only_once() -> None:
    s = Scheduler(cluster(1))
    s.submit(job(99, 8))
    start_all(s, 0)
    s.submit(job(1, 1, at=1))
    assert s.cancel(1)
    assert 1 not in s.queue
    assert not s.cancel(1)
    assert not s.cancel(99), "a running job is not pending"
    s.finished(99, 10)
    assert s.cycle(10).starts == []


def test_submitting_a_job_id_twice_is_refused() -> None:
    s = Scheduler(cluster(1))
    s.submit(job(1, 1))
    with pytest.raises(ValueError, match="already"):
        s.submit(job(1, 2))
    start_all(s, 0)
    with pytest.raises(ValueError, match="already"):
        s.submit(job(1, 1, at=5))


def test_cycle_does_not_change_the_scheduler_state() -> None:
    s = head_blocked("aisc")
    free_before = s.free.copy()
    first = s.cycle(10)
    assert first.starts
    assert np.array_equal(s.free, free_before)
    assert len(s.queue) == 2 and len(s.running) == 1
    assert s.cycle(10) == first


def test_finishing_a_job_that_is_not_running_is_an_error() -> None:
    s = Scheduler(cluster(1))
    s.submit(job(1, 1))
    with pytest.raises(ValueError):
        s.finished(1, 5)
    with pytest.raises(ValueError):
        s.preempted(1, 5)


# -- properties of any one cycle -------------------------------------------------------------


def assert_cycle_is_sound(
    s: Scheduler, result: CycleResult, now: float, held: dict[int, tuple[Placement, float]]
) -> None:
    """What one cycle hands out is free, unique, of the right model and shape."""
    spec = {n.name: n for n in s.specs}
    owner = {(n.node, g): i for i, (p, _) in held.items() for n in p.nodes for g in n.gpu_indices}
    preempted = set(result.preemptions)
    assert len(preempted) == len(result.preemptions)
    for job_id in preempted:
        placement, started = held[job_id]
        assert placement.borrowed
        assert now - started >= s.config.min_runtime_s
    handed: set[tuple[str, int]] = set()
    for p in result.starts:
        pending = s.queue.jobs[p.job_id]
        assert len(p.gpu_indices) == pending.gpus
        for part in p.nodes:
            node = spec[part.node]
            assert node.gpu_model == pending.gpu_model
            for g in part.gpu_indices:
                assert g in (node.gpu_indices or range(node.gpus))
                assert (part.node, g) not in handed, "a GPU handed out twice"
                handed.add((part.node, g))
                assert owner.get((part.node, g), p.job_id) in preempted | {p.job_id}
        if pending.gpus <= 8:
            assert len(p.nodes) == 1
        else:
            assert len({part.node for part in p.nodes}) == len(p.nodes)
            assert all(len(part.gpu_indices) == spec[part.node].gpus for part in p.nodes)


round_ = st.tuples(
    st.integers(0, 1500),  # time to the next cycle
    st.lists(
        st.tuples(
            st.sampled_from((1, 2, 4, 8, 16)),
            st.sampled_from((A, B, C)),
            st.integers(1, 1000),  # time limit
            st.integers(-3, 3),  # priority class
            st.floats(0.05, 1.0),  # true duration, as a fraction of the limit
        ),
        max_size=8,
    ),
)


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    nodes=st.integers(1, 4),
    policy=st.sampled_from(("aisc", "backfill", "fifo")),
    shares=st.sampled_from(({}, {A: 1, B: 1}, {A: 1, B: 3, C: 1}, {A: 3})),
    rounds=st.lists(round_, min_size=1, max_size=5),
)
def test_every_cycle_hands_out_free_gpus_once_and_is_deterministic(
    nodes: int,
    policy: str,
    shares: dict[int, float],
    rounds: list[tuple[int, list[tuple[int, int, int, int, float]]]],
) -> None:
    s = Scheduler(cluster(nodes), preset(policy))
    s.set_shares(shares)
    held: dict[int, tuple[Placement, float]] = {}
    duration: dict[int, float] = {}  # true run time, within the limit
    ends: dict[int, float] = {}
    now, next_id = 0.0, 1
    for gap, batch in rounds:
        now += gap
        for job_id in sorted(held):
            if ends[job_id] <= now:
                s.finished(job_id, now)
                del held[job_id]
        for gpus, project, limit, priority, fraction in batch:
            if gpus > 8 * nodes:
                continue
            s.submit(job(next_id, gpus, project=project, at=now, limit=limit, priority=priority))
            duration[next_id] = fraction * limit
            next_id += 1

        result = s.cycle(now)
        assert_cycle_is_sound(s, result, now, held)
        assert s.cycle(now) == result, "the same state gives the same cycle"

        for job_id in result.preemptions:
            s.preempted(job_id, now)
            del held[job_id]
        for p in result.starts:
            s.started(p, now)
            ends[p.job_id] = now + duration[p.job_id]
            held[p.job_id] = (p, now)
        assert (s.free >= 0).all()
        busy = {n.name: 0 for n in s.specs}
        for p, _ in held.values():
            for part in p.nodes:
                busy[part.node] += len(part.gpu_indices)
        assert list(s.free) == [n.gpus - busy[n.name] for n in s.specs]


@settings(max_examples=80, deadline=None)
@given(
    nodes=st.integers(1, 4),
    policy=st.sampled_from(("aisc", "backfill")),
    # limits drawn so that pending jobs (cycled at 50) often end exactly at a reserved start
    running=st.lists(
        st.tuples(st.sampled_from((1, 2, 4, 8)), st.sampled_from((100, 500, 1000))), max_size=8
    ),
    pending=st.lists(
        st.tuples(st.sampled_from((1, 2, 4, 8, 16, 24)), st.sampled_from((50, 51, 450, 950, 2000))),
        min_size=1,
        max_size=30,
    ),
    reservations=st.integers(1, 2),
)
def test_skipping_jobs_that_cannot_fit_in_bulk_never_changes_a_cycle(
    nodes: int,
    policy: str,
    running: list[tuple[int, int]],
    pending: list[tuple[int, int]],
    reservations: int,
) -> None:
    """The vectorised bound is only a shortcut: with it off, the cycle decides the same."""
    s = Scheduler(cluster(nodes), preset(policy).with_(reservations=reservations))
    for k, (gpus, limit) in enumerate(running):
        s.submit(job(1000 + k, gpus, limit=limit))
    start_all(s, 0)
    for k, (gpus, limit) in enumerate(pending):
        if gpus <= 8 * nodes and (gpus <= 8 or gpus % 8 == 0):
            s.submit(job(k + 1, gpus, project=B, at=1 + k, limit=limit))
    # the bound applies from the first chunk after the reservations are made: small chunks
    # let a short queue reach it
    with patch.object(core, "HEAD", 2):
        with_bound = s.cycle(50)

        def everything(c: object, chunk: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
            """The bound off: every job may fit, none is held in bulk."""
            return np.ones(len(chunk), np.bool_), np.zeros(len(chunk), np.bool_)

        with patch.object(s, "_could_fit", everything):
            assert s.cycle(50) == with_bound


def test_a_config_can_be_varied_without_touching_the_preset() -> None:
    base = preset("aisc")
    varied = base.with_(usage_half_life_s=60.0)
    assert varied.usage_half_life_s == 60.0 and base.usage_half_life_s != 60.0
    assert isinstance(varied, PolicyConfig)
    with pytest.raises(ValueError, match="unknown policy"):
        preset("lottery")
