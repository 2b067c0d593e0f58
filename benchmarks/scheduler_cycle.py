"""One full scheduling cycle (priority, placement, backfill, preemption check) on 512 nodes x 8
GPUs with 1,000 projects, at 1k, 10k, 50k and 100k pending jobs.

    python benchmarks/scheduler_cycle.py [--sizes 1000,10000,50000,100000] [--cycles 21]

The cluster is brought to a steady state first: a cycle from empty fills it with running jobs
(started at random times in the past), as a busy centre is. Each measured cycle follows the
end of about 1% of the running jobs, so it has GPUs to hand out, reservations to make and a
deep queue to walk; its starts are then applied, as the controller would, outside the timing.
Prints one line per size: `pending=50000 median_ms=87.3`, then the p90, what the cycles did,
and the time of the one cold cycle that filled the empty cluster (thousands of starts).
"""

from __future__ import annotations

import argparse
import random
import statistics
import time

from aisc.scheduler.config import PolicyConfig
from aisc.scheduler.core import Scheduler
from aisc.scheduler.interface import NodeSpec, PendingJob

NODES, GPUS_PER_NODE, PROJECTS = 512, 8, 1000
# a production-like mix of job sizes: mostly small, a long tail of large jobs
SIZES = [1, 2, 4, 8, 16, 32, 64]
SIZE_WEIGHTS = [0.55, 0.12, 0.12, 0.13, 0.04, 0.025, 0.015]


def make_job(rng: random.Random, job_id: int, now: float) -> PendingJob:
    gpus = rng.choices(SIZES, SIZE_WEIGHTS)[0]
    limit = int(300 * (3 * 86_400 / 300) ** rng.random())  # log-uniform, 5 minutes to 3 days
    project = (
        min(PROJECTS, int(rng.paretovariate(1.2)))
        if rng.random() < 0.5
        else rng.randint(1, PROJECTS)
    )
    return PendingJob(
        job_id=job_id,
        project=project,
        gpus=gpus,
        gpu_model="H800",
        priority=rng.choice([0, 0, 0, 0, 1, -1]),
        submitted_at=now - rng.uniform(0, 3 * 86_400),
        time_limit_s=limit,
    )


def build(pending: int, seed: int = 7) -> tuple[Scheduler, random.Random, float, int, float]:
    rng = random.Random(seed)
    nodes = [NodeSpec(f"gpu{i:04d}", "H800", GPUS_PER_NODE) for i in range(NODES)]
    scheduler = Scheduler(nodes, PolicyConfig())
    scheduler.set_shares({p: rng.uniform(1, 100) for p in range(1, PROJECTS + 1)})
    now = 1_000_000.0
    for p in range(1, PROJECTS + 1):  # a history of use, for fair share
        scheduler.add_usage(p, rng.uniform(0, 5e6), now - rng.uniform(0, 14 * 86_400))
    next_id = 1
    for _ in range(pending):
        scheduler.submit(make_job(rng, next_id, now))
        next_id += 1
    t0 = time.perf_counter()
    fill = scheduler.cycle(now)  # from empty: fill the cluster
    cold_ms = (time.perf_counter() - t0) * 1000
    for placement in fill.starts:
        scheduler.started(placement, now - rng.uniform(0, 3600))
    while len(scheduler.queue) < pending:  # top the queue back up to its size
        scheduler.submit(make_job(rng, next_id, now))
        next_id += 1
    return scheduler, rng, now, next_id, cold_ms


def measure(pending: int, cycles: int) -> None:
    scheduler, rng, now, next_id, cold_ms = build(pending)
    times: list[float] = []
    started = reserved = preempted = 0
    for _ in range(cycles):
        now += 30.0
        running = list(scheduler.running)
        for job_id in rng.sample(running, max(1, len(running) // 100)):
            scheduler.finished(job_id, now)
        t0 = time.perf_counter()
        result = scheduler.cycle(now)
        times.append((time.perf_counter() - t0) * 1000)
        started += len(result.starts)
        reserved += len(result.reservations)
        preempted += len(result.preemptions)
        for job_id in result.preemptions:
            scheduler.preempted(job_id, now)
        for placement in result.starts:
            scheduler.started(placement, now)
        while len(scheduler.queue) < pending:
            scheduler.submit(make_job(rng, next_id, now))
            next_id += 1
    times.sort()
    print(
        f"pending={pending} median_ms={statistics.median(times):.1f} "
        f"p90_ms={times[int(0.9 * (len(times) - 1))]:.1f} "
        f"starts_per_cycle={started / cycles:.1f} reservations_per_cycle={reserved / cycles:.1f} "
        f"preemptions_per_cycle={preempted / cycles:.1f} cold_fill_ms={cold_ms:.0f}",
        flush=True,
    )


def main() -> None:
    parser = argparse.ArgumentParser(
        description="Time one scheduling cycle at several queue depths."
    )
    parser.add_argument("--sizes", default="1000,10000,50000,100000")
    parser.add_argument("--cycles", type=int, default=21)
    args = parser.parse_args()
    for size in (int(s) for s in args.sizes.split(",")):
        measure(size, args.cycles)


if __name__ == "__main__":
    main()
