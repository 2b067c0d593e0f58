"""Replay the whole Philly trace (82,247 jobs) through each policy and report jobs per second.

    python benchmarks/sim_replay.py [--trace ../shared/traces/philly.csv] [--nodes 64]
                                    [--policies fifo,backfill,aisc,srtf]

The default cluster, 64 nodes x 8 GPUs (512 GPUs) for a trace whose jobs used about 978,000
GPU-hours over 109 days (an average of about 374 busy GPUs), keeps the queue contended. The
goal is the aisc policy replaying the whole trace in at most 20 s on a 2-core machine.
Prints one line per policy:
`policy=aisc jobs=82247 wall_s=... jobs_per_s=... avg_wait_s=... median_wait_s=... preemptions=...`.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from aisc.sim.engine import SimCluster, SimRun
from aisc.sim.traces import load_trace

DEFAULT_TRACE = Path(__file__).resolve().parents[2] / "shared" / "traces" / "philly.csv"


def main() -> None:
    parser = argparse.ArgumentParser(description="Time a whole-trace replay per policy.")
    parser.add_argument("--trace", type=Path, default=DEFAULT_TRACE)
    parser.add_argument("--nodes", type=int, default=64)
    parser.add_argument("--policies", default="fifo,backfill,aisc,srtf")
    args = parser.parse_args()
    trace = load_trace(args.trace)
    cluster = SimCluster(args.nodes, 8)
    for policy in args.policies.split(","):
        result = SimRun(trace, cluster, policy).run()
        waits = sorted(r.wait_s for r in result.records)
        print(
            f"policy={policy} jobs={len(result.records)} wall_s={result.wall_s:.1f} "
            f"jobs_per_s={len(result.records) / result.wall_s:.0f} "
            f"avg_wait_s={sum(waits) / len(waits):.0f} "
            f"median_wait_s={waits[len(waits) // 2]:.0f} "
            f"preemptions={sum(r.preemptions for r in result.records)}",
            flush=True,
        )


if __name__ == "__main__":
    main()
