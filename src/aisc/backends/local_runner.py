"""Per-job supervisor: ``python -m aisc.backends.local_runner JOB_DIR``.

Started by LocalBackend as a session leader, it runs the job's command as a child in its own
process group and records how the command ended in ``exit.json``. A controller that restarts
can then learn the outcome from the file even though it is no longer the runner's parent.

Standard library only and nothing heavy: this starts once per job.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from typing import Any


def write_exit(job_dir: str, returncode: int | None, error: str | None) -> None:
    """Write exit.json atomically so a polling controller never reads half a file."""
    payload = {"returncode": returncode, "error": error, "ended_at": time.time()}
    final = os.path.join(job_dir, "exit.json")
    tmp = f"{final}.tmp.{os.getpid()}"
    with open(tmp, "w", encoding="utf-8") as fh:
        json.dump(payload, fh)
    os.replace(tmp, final)


def _load_spec(job_dir: str) -> tuple[list[str], str, dict[str, str]]:
    with open(os.path.join(job_dir, "spec.json"), encoding="utf-8") as fh:
        spec: Any = json.load(fh)
    argv = spec["argv"]
    if not isinstance(argv, list) or not argv or not all(isinstance(a, str) for a in argv):
        raise ValueError("'argv' must be a non-empty list of strings")
    cwd = spec.get("cwd") or job_dir
    if not isinstance(cwd, str):
        raise ValueError("'cwd' must be a string")
    extra = spec.get("env") or {}
    if not isinstance(extra, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in extra.items()
    ):
        raise ValueError("'env' must map strings to strings")
    env = dict(os.environ)
    env.update(extra)
    return argv, cwd, env


def main(args: list[str]) -> int:
    if len(args) != 1:
        print("usage: python -m aisc.backends.local_runner JOB_DIR", file=sys.stderr)
        return 2
    job_dir = args[0]

    # Ignored dispositions survive exec, so a controller started with SIGTERM/SIGINT ignored
    # would otherwise hand that on. With the default action, killpg() from the controller
    # ends this runner without writing exit.json, which is how the controller tells "it was
    # killed" (it records timeout/cancel itself) from "it exited"; the child gets the same
    # group signal directly, so there is nothing to forward.
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    signal.signal(signal.SIGINT, signal.SIG_DFL)

    try:
        argv, cwd, env = _load_spec(job_dir)
    except (OSError, ValueError, KeyError, TypeError) as exc:
        write_exit(job_dir, None, f"cannot start: bad spec.json: {exc}")
        return 0

    try:
        with (
            open(os.path.join(job_dir, "stdout.log"), "ab") as out,
            open(os.path.join(job_dir, "stderr.log"), "ab") as err,
        ):
            # No new session: the job stays in this runner's process group, so one killpg()
            # reaches the runner, the job and everything the job spawns.
            proc = subprocess.Popen(
                argv,
                cwd=cwd,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=err,
            )
    except (OSError, ValueError, subprocess.SubprocessError) as exc:
        write_exit(job_dir, None, f"cannot start: {exc}")
        return 0

    returncode = proc.wait()
    write_exit(job_dir, returncode, None)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
