"""LocalBackend against real processes (runner, job, grandchildren)."""

from __future__ import annotations

import json
import os
import subprocess
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import TypeVar

import pytest

from aisc.backends.base import (
    ExecutionHandle,
    ExecutionState,
    ExecutionStatus,
    LaunchError,
    LaunchSpec,
)
from aisc.backends.local import LOST_REASON, LocalBackend

pytestmark = pytest.mark.slow

T = TypeVar("T")


def wait_for(check: Callable[[], T | None], timeout: float = 10.0) -> T:
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value is not None and value is not False:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout}s")
        time.sleep(0.02)


def wait_finished(
    backend: LocalBackend, handle: ExecutionHandle, timeout: float = 10.0
) -> ExecutionStatus:
    def finished() -> ExecutionStatus | None:
        status = backend.poll(handle)
        return None if status.state is ExecutionState.RUNNING else status

    return wait_for(finished, timeout)


def first_line_pid(path: Path) -> int:
    """Wait until the job has printed a pid on its first line (it is then set up)."""

    def read() -> int | None:
        lines = path.read_text().splitlines() if path.exists() else []
        return int(lines[0]) if lines else None

    return wait_for(read)


def pid_alive(pid: int) -> bool:
    # Zombies count as dead: nobody may be reaping them (e.g. a container init).
    try:
        stat = Path(f"/proc/{pid}/stat").read_bytes()
    except FileNotFoundError:
        return False
    return stat[stat.rindex(b")") + 2 :].split()[0] not in (b"Z", b"X")


def spec(
    job_id: int,
    argv: Sequence[str],
    cwd: str | None = None,
    env: dict[str, str] | None = None,
    gpus: tuple[int, ...] = (0, 1),
) -> LaunchSpec:
    return LaunchSpec(
        job_id=job_id, argv=tuple(argv), cwd=cwd, env=env or {}, node="node1", gpu_indices=gpus
    )


@pytest.fixture
def root(tmp_path: Path) -> Path:
    return tmp_path / "root"


@pytest.fixture
def backend(root: Path) -> Iterator[LocalBackend]:
    be = LocalBackend(root, kill_grace_s=0.5)
    yield be
    # Never leave jobs behind, whatever the test did.
    jobs = root / "jobs"
    for job_dir in jobs.iterdir() if jobs.exists() else []:
        handle_file = job_dir / "handle.json"
        if handle_file.exists():
            be.kill(ExecutionHandle.from_json(handle_file.read_text()))


def start(backend: LocalBackend, launch: LaunchSpec) -> ExecutionHandle:
    handle = backend.start(launch)
    # Recorded for the fixture's clean-up.
    Path(handle.job_dir, "handle.json").write_text(handle.to_json())
    return handle


def test_job_output_environment_and_exit_code(backend: LocalBackend, root: Path) -> None:
    script = 'echo hello; echo "$CUDA_VISIBLE_DEVICES|$AISC_JOB_ID|$AISC_NODE|$FOO"; pwd'
    # The job's own CUDA_VISIBLE_DEVICES must not override its allocation.
    env = {"FOO": "bar", "CUDA_VISIBLE_DEVICES": "7"}
    before = time.time()
    handle = start(backend, spec(11, ["sh", "-c", script], env=env))

    assert handle.job_id == 11
    assert handle.job_dir == str(root.resolve() / "jobs" / "11")
    assert os.getpgid(handle.pid) == handle.pid  # the runner leads its own group
    status = wait_finished(backend, handle)

    assert status == ExecutionStatus(ExecutionState.EXITED, exit_code=0, ended_at=status.ended_at)
    assert status.ended_at is not None and status.ended_at >= before
    out = backend.log_path(11, "stdout").read_text().splitlines()
    assert out == ["hello", "0,1|11|node1|bar", handle.job_dir]
    assert backend.log_path(11, "stderr").read_text() == ""
    recorded = json.loads(Path(handle.job_dir, "spec.json").read_text())
    assert recorded["argv"] == ["sh", "-c", script]
    assert recorded["env"]["CUDA_VISIBLE_DEVICES"] == "0,1"
    assert recorded["env"]["AISC_JOB_ID"] == "11"


def test_nonzero_exit_and_separate_stderr(backend: LocalBackend) -> None:
    handle = start(backend, spec(12, ["sh", "-c", "echo out; echo err >&2; exit 3"]))
    status = wait_finished(backend, handle)
    assert (status.state, status.exit_code) == (ExecutionState.EXITED, 3)
    assert backend.log_path(12, "stdout").read_text() == "out\n"
    assert backend.log_path(12, "stderr").read_text() == "err\n"


def test_no_gpus_hides_all_devices(backend: LocalBackend) -> None:
    argv = ["sh", "-c", 'echo "[${CUDA_VISIBLE_DEVICES-unset}]"']
    handle = start(backend, spec(13, argv, gpus=()))
    assert wait_finished(backend, handle).exit_code == 0
    assert backend.log_path(13, "stdout").read_text() == "[]\n"


def test_missing_executable_fails_to_start(backend: LocalBackend) -> None:
    handle = start(backend, spec(14, ["nonexistent-cmd-aisc"]))
    status = wait_finished(backend, handle)
    assert status.state is ExecutionState.FAILED_TO_START
    assert status.reason is not None
    assert status.reason.startswith("cannot start:")
    assert "nonexistent-cmd-aisc" in status.reason


def test_bad_cwd_fails_to_start(backend: LocalBackend, tmp_path: Path) -> None:
    handle = start(backend, spec(15, ["true"], cwd=str(tmp_path / "no-such-dir")))
    status = wait_finished(backend, handle)
    assert status.state is ExecutionState.FAILED_TO_START
    assert status.reason is not None and "no-such-dir" in status.reason


def test_empty_command_is_a_launch_error(backend: LocalBackend) -> None:
    with pytest.raises(LaunchError, match="empty command"):
        backend.start(spec(16, []))


def test_kill_takes_down_the_whole_group(backend: LocalBackend) -> None:
    handle = start(backend, spec(17, ["sh", "-c", "sleep 60 & echo $!; sleep 60"]))
    grandchild = first_line_pid(backend.log_path(17, "stdout"))
    assert pid_alive(grandchild)
    assert backend.poll(handle).state is ExecutionState.RUNNING

    # A long grace period: kill() must return as soon as the group has gone, not sit it out
    # (zombies left to a non-reaping init must not count as still running).
    patient = LocalBackend(backend.root, kill_grace_s=10.0)
    began = time.monotonic()
    patient.kill(handle)
    assert time.monotonic() - began < 3.0

    # kill() returns only once the group is gone, so no waiting here.
    assert not pid_alive(grandchild)
    assert not pid_alive(handle.pid)
    status = backend.poll(handle)
    assert status.state is ExecutionState.LOST
    assert status.reason == LOST_REASON
    assert not Path(handle.job_dir, "exit.json").exists()
    backend.kill(handle)  # idempotent: already gone is fine


def test_restarted_controller_polls_running_then_exited(backend: LocalBackend, root: Path) -> None:
    gate = root / "go"
    script = f'while [ ! -f "{gate}" ]; do sleep 0.02; done; exit 7'
    stored = start(backend, spec(18, ["sh", "-c", script])).to_json()

    # A new backend instance (no Popen objects) must work purely from pid + files.
    restarted = LocalBackend(root)
    handle = ExecutionHandle.from_json(stored)
    assert restarted.poll(handle).state is ExecutionState.RUNNING
    gate.touch()
    status = wait_finished(restarted, handle)
    assert (status.state, status.exit_code) == (ExecutionState.EXITED, 7)
    assert backend.poll(handle).exit_code == 7  # the original parent reaps its child


def test_a_restarted_controller_finds_the_latest_launch_of_a_job_it_never_recorded(
    backend: LocalBackend, root: Path
) -> None:
    restarted = LocalBackend(root)
    assert restarted.find(21) is None, "never launched"
    first = start(backend, spec(21, ["true"]))
    wait_finished(backend, first)
    second = start(backend, spec(21, ["sh", "-c", "sleep 60"]))  # the job requeued and run again

    found = restarted.find(21)
    assert found == second != first
    assert restarted.poll(found).state is ExecutionState.RUNNING
    restarted.kill(found)


def test_restarted_controller_can_kill(backend: LocalBackend, root: Path) -> None:
    stored = start(backend, spec(19, ["sh", "-c", "echo $$; sleep 60"])).to_json()
    job_pid = first_line_pid(backend.log_path(19, "stdout"))

    restarted = LocalBackend(root, kill_grace_s=0.5)
    handle = ExecutionHandle.from_json(stored)
    restarted.kill(handle)

    assert not pid_alive(job_pid)
    assert restarted.poll(handle).state is ExecutionState.LOST
    assert backend.poll(handle).state is ExecutionState.LOST


def test_sigterm_ignoring_job_is_killed_after_grace(backend: LocalBackend) -> None:
    # Ignored signals stay ignored across exec, so both sh and its sleep ignore SIGTERM.
    handle = start(backend, spec(20, ["sh", "-c", "trap '' TERM; echo $$; sleep 60"]))
    job_pid = first_line_pid(backend.log_path(20, "stdout"))

    began = time.monotonic()
    backend.kill(handle)
    elapsed = time.monotonic() - began

    assert not pid_alive(job_pid)
    assert backend.kill_grace_s <= elapsed < backend.kill_grace_s + 2.0
    assert backend.poll(handle).state is ExecutionState.LOST


def test_reused_pid_is_neither_polled_nor_killed(backend: LocalBackend, root: Path) -> None:
    # An unrelated group leader sitting on the pid a stale handle points at.
    stranger = subprocess.Popen(["sleep", "30"], start_new_session=True)
    try:
        handle = ExecutionHandle(
            job_id=21, pid=stranger.pid, job_dir=str(root / "jobs" / "21"), started_at=time.time()
        )
        status = backend.poll(handle)
        assert status.state is ExecutionState.LOST
        backend.kill(handle)
        assert stranger.poll() is None
    finally:
        stranger.kill()
        stranger.wait()


def test_handle_json_round_trip_and_validation() -> None:
    handle = ExecutionHandle(job_id=5, pid=1234, job_dir="/x/jobs/5", started_at=1.5, start_ticks=9)
    assert ExecutionHandle.from_json(handle.to_json()) == handle
    legacy = '{"job_id": 5, "pid": 1234, "job_dir": "/x/jobs/5", "started_at": 2}'
    assert ExecutionHandle.from_json(legacy).start_ticks is None
    for bad in (
        "[]",
        "{",
        '{"job_id": 5}',
        '{"job_id": true, "pid": 1, "job_dir": "d", "started_at": 1}',
    ):
        with pytest.raises(ValueError):
            ExecutionHandle.from_json(bad)


def test_log_paths(backend: LocalBackend, root: Path) -> None:
    assert backend.log_path(3, "stdout") == root.resolve() / "jobs" / "3" / "stdout.log"
    assert backend.log_path(3, "stderr") == root.resolve() / "jobs" / "3" / "stderr.log"
