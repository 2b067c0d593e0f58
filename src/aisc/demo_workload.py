"""A stand-in training or inference job for the demo: prints progress like a real one would."""

from __future__ import annotations

import argparse
import os
import sys
import time


def main() -> int:
    parser = argparse.ArgumentParser(description="aisc demo workload")
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--step-seconds", type=float, default=0.5)
    parser.add_argument("--fail-at", type=int, default=0, help="Crash at this step (0: never).")
    args = parser.parse_args()
    gpus = os.environ.get("CUDA_VISIBLE_DEVICES", "")
    print(f"job {os.environ.get('AISC_JOB_ID')} on {os.environ.get('AISC_NODE')} GPUs [{gpus}]")
    loss = 2.5
    for step in range(1, args.steps + 1):
        time.sleep(args.step_seconds)
        if step == args.fail_at:
            print(f"step {step}: CUDA error: out of memory (simulated)", file=sys.stderr)
            return 1
        loss *= 0.8
        print(f"step {step}/{args.steps} loss={loss:.4f}", flush=True)
    print("done")
    return 0


if __name__ == "__main__":
    sys.exit(main())
