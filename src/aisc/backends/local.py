"""Run jobs as real processes on this machine.

Each job is supervised by ``python -m aisc.backends.local_runner JOB_DIR``, a session leader
whose pid is also the job's process group id. All state the controller needs lives in the
job directory (spec.json, logs, exit.json) plus that pid, so a restarted controller can poll
and kill jobs it did not start itself.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

from aisc.backends.base import (
    ExecutionHandle,
    ExecutionState,
    ExecutionStatus,
    LaunchError,
    LaunchSpec,
    LogStream,
)

log = logging.getLogger(__name__)

RUNNER_MODULE = "aisc.backends.local_runner"
HANDLE_FILE = "handle.json"
LOST_REASON = "process ended without recording an exit status (killed?)"

# Directory holding the `aisc` package this module was loaded from. The runner is started
# there so `-m` resolves to this same code even when aisc is importable only through
# sys.path tweaks (tests, PYTHONPATH=src) rather than an install.
_IMPORT_ROOT = Path(__file__).resolve().parents[2]
_PROC = Path("/proc")
_POLL_INTERVAL_S = 0.02
_AFTER_SIGKILL_WAIT_S = 1.0
_RUNNER_LOG_TAIL = 500
_REAP_AFTER_EXIT_S = 0.2


class LocalBackend:
    name: str = "local"

    def __init__(self, root: Path, kill_grace_s: float = 2.0) -> None:
        self.root = Path(root).resolve()
        self.kill_grace_s = kill_grace_s
        # Runners this process started, by pid, so they can be reaped (no zombies). Entries
        # are dropped once reaped; after a controller restart this is empty and everything
        # is worked out from the pid and the job directory.
        self._procs: dict[int, subprocess.Popen[bytes]] = {}
        self._lock = threading.Lock()

    # -- paths ---------------------------------------------------------------------------

    def job_dir(self, job_id: int) -> Path:
        return self.root / "jobs" / str(job_id)

    def log_path(self, job_id: int, stream: LogStream) -> Path:
        if stream not in ("stdout", "stderr"):
            raise ValueError(f"unknown log stream {stream!r}")
        return self.job_dir(job_id) / f"{stream}.log"

    # -- start ---------------------------------------------------------------------------

    def start(self, spec: LaunchSpec) -> ExecutionHandle:
        if not spec.argv:
            raise LaunchError("cannot start: empty command")
        job_dir = self.job_dir(spec.job_id)
        env = dict(spec.env)
        # Set after the user's env so a job cannot escape its GPU allocation by naming
        # CUDA_VISIBLE_DEVICES itself.
        env["CUDA_VISIBLE_DEVICES"] = spec.cuda_visible_devices
        env["AISC_JOB_ID"] = str(spec.job_id)
        env["AISC_NODE"] = spec.node
        cwd = os.path.abspath(spec.cwd) if spec.cwd else str(job_dir)
        payload = {"job_id": spec.job_id, "argv": list(spec.argv), "cwd": cwd, "env": env}
        try:
            job_dir.mkdir(parents=True, exist_ok=True)
            # A stale exit.json or handle.json from an earlier attempt would make the new run
            # look finished, or point `find` at the old runner.
            (job_dir / "exit.json").unlink(missing_ok=True)
            (job_dir / HANDLE_FILE).unlink(missing_ok=True)
            _write_json_atomic(job_dir / "spec.json", payload)
            runner_log = open(job_dir / "runner.log", "ab")  # noqa: SIM115 (closed below)
        except OSError as exc:
            raise LaunchError(f"cannot prepare job directory {job_dir}: {exc}") from exc

        started_at = time.time()
        try:
            with runner_log:
                proc = subprocess.Popen(
                    [sys.executable, "-m", RUNNER_MODULE, str(job_dir)],
                    cwd=str(_IMPORT_ROOT),
                    stdin=subprocess.DEVNULL,
                    stdout=runner_log,
                    stderr=runner_log,
                    start_new_session=True,
                )
        except (OSError, subprocess.SubprocessError) as exc:
            raise LaunchError(f"cannot start job runner: {exc}") from exc

        with self._lock:
            self._procs[proc.pid] = proc
        # Popen has returned, so the child has exec'd and is unreaped: its start time is
        # readable and unambiguous.
        stat = _read_stat(proc.pid)
        handle = ExecutionHandle(
            job_id=spec.job_id,
            pid=proc.pid,
            job_dir=str(job_dir),
            started_at=started_at,
            start_ticks=stat.start_ticks if stat else None,
        )
        # Beside the job, for a controller that dies before recording the handle (see find).
        try:
            _write_text_atomic(job_dir / HANDLE_FILE, handle.to_json())
        except OSError:
            log.warning("could not record job %s's handle in %s", spec.job_id, job_dir)
        return handle

    def find(self, job_id: int) -> ExecutionHandle | None:
        try:
            return ExecutionHandle.from_json((self.job_dir(job_id) / HANDLE_FILE).read_text())
        except (OSError, ValueError):
            return None

    # -- poll ----------------------------------------------------------------------------

    def poll(self, handle: ExecutionHandle) -> ExecutionStatus:
        status = self._read_exit(handle)
        if status is not None:
            # The runner exits right after writing exit.json; reap it now, since the
            # controller may never poll this job again.
            self._reap(handle.pid, wait_s=_REAP_AFTER_EXIT_S, forget=True)
            return status
        if self._runner_alive(handle):
            return ExecutionStatus(ExecutionState.RUNNING)
        # The runner may have written exit.json and exited between the two checks above.
        status = self._read_exit(handle)
        if status is not None:
            return status
        reason = LOST_REASON
        tail = _tail(Path(handle.job_dir) / "runner.log", _RUNNER_LOG_TAIL)
        if tail:
            reason = f"{reason}; runner.log: {tail}"
        return ExecutionStatus(ExecutionState.LOST, reason=reason)

    def _read_exit(self, handle: ExecutionHandle) -> ExecutionStatus | None:
        path = Path(handle.job_dir) / "exit.json"
        try:
            data: Any = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return None
        except (OSError, ValueError) as exc:
            return ExecutionStatus(ExecutionState.LOST, reason=f"unreadable {path}: {exc}")
        if not isinstance(data, dict):
            return ExecutionStatus(ExecutionState.LOST, reason=f"malformed {path}")
        ended_at = data.get("ended_at")
        ended = float(ended_at) if isinstance(ended_at, int | float) else None
        error = data.get("error")
        if error:
            return ExecutionStatus(
                ExecutionState.FAILED_TO_START, reason=str(error), ended_at=ended
            )
        returncode = data.get("returncode")
        if isinstance(returncode, bool) or not isinstance(returncode, int):
            return ExecutionStatus(
                ExecutionState.LOST, reason=f"malformed {path}: no returncode", ended_at=ended
            )
        return ExecutionStatus(ExecutionState.EXITED, exit_code=returncode, ended_at=ended)

    # -- kill ----------------------------------------------------------------------------

    def kill(self, handle: ExecutionHandle) -> None:
        pgid = handle.pid
        if not self._group_may_be_ours(handle):
            # The pid now belongs to an unrelated process: never signal someone else's group.
            log.warning("not killing pid %d: it is no longer job %d's runner", pgid, handle.job_id)
            return
        if not self._signal_group(pgid, signal.SIGTERM):
            self._reap(pgid)
            return
        deadline = time.monotonic() + self.kill_grace_s
        while time.monotonic() < deadline:
            self._reap(pgid)
            if not _group_alive(pgid):
                self._reap(pgid, wait_s=_AFTER_SIGKILL_WAIT_S)
                return
            time.sleep(_POLL_INTERVAL_S)
        self._signal_group(pgid, signal.SIGKILL)
        # SIGKILL is asynchronous; wait briefly so callers can usually treat the GPUs as free.
        deadline = time.monotonic() + _AFTER_SIGKILL_WAIT_S
        while _group_alive(pgid) and time.monotonic() < deadline:
            self._reap(pgid)
            time.sleep(_POLL_INTERVAL_S)
        self._reap(pgid, wait_s=_AFTER_SIGKILL_WAIT_S)
        if _group_alive(pgid):
            log.warning("process group %d survived SIGKILL (uninterruptible sleep?)", pgid)

    @staticmethod
    def _signal_group(pgid: int, sig: signal.Signals) -> bool:
        """Signal the group; False when there is nothing (left) to signal."""
        try:
            os.killpg(pgid, sig)
        except ProcessLookupError:
            return False
        except PermissionError:
            log.warning("no permission to signal process group %d", pgid)
            return False
        return True

    # -- process bookkeeping -------------------------------------------------------------

    def _reap(self, pid: int, wait_s: float = 0.0, forget: bool = False) -> bool:
        """Reap our own runner if it has ended; True while it is ours and still running.

        With forget=True the Popen is dropped even if still running: subprocess then reaps
        it in the background (its __del__ queues it), and later polls use /proc instead.
        """
        with self._lock:
            proc = self._procs.get(pid)
        if proc is None:
            return False
        try:
            if wait_s > 0:
                proc.wait(timeout=wait_s)
            elif proc.poll() is None and not forget:
                return True
        except subprocess.TimeoutExpired:
            if not forget:
                return True
        with self._lock:
            self._procs.pop(pid, None)
        return False

    def _owns(self, pid: int) -> bool:
        with self._lock:
            return pid in self._procs

    def _runner_alive(self, handle: ExecutionHandle) -> bool:
        if self._owns(handle.pid):
            # We are the parent and have not reaped it, so the pid cannot have been reused.
            return self._reap(handle.pid)
        return _is_our_runner(handle)

    def _group_may_be_ours(self, handle: ExecutionHandle) -> bool:
        if self._owns(handle.pid) or _is_our_runner(handle):
            return True
        # Runner gone. Linux never hands out a pid that is still some group's id, so if the
        # pid is not a live process any surviving group with that id is the job's orphans.
        return not _pid_exists_not_zombie(handle.pid)


# -- /proc helpers (Linux; degrade to signal-0 probes elsewhere) -------------------------


class _Stat:
    __slots__ = ("pgrp", "start_ticks", "state")

    def __init__(self, state: str, pgrp: int, start_ticks: int) -> None:
        self.state = state
        self.pgrp = pgrp
        self.start_ticks = start_ticks


def _read_stat(pid: int | str) -> _Stat | None:
    try:
        raw = (_PROC / str(pid) / "stat").read_bytes()
    except OSError:
        return None
    # comm (field 2) may contain spaces and parentheses; the fields after the last ')' don't.
    try:
        rest = raw[raw.rindex(b")") + 2 :].split()
        return _Stat(rest[0].decode(), int(rest[2]), int(rest[19]))
    except (ValueError, IndexError):
        return None


def _pid_exists_not_zombie(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # exists, owned by someone else
    stat = _read_stat(pid)
    return stat is None or stat.state not in ("Z", "X")


def _is_our_runner(handle: ExecutionHandle) -> bool:
    """True if handle.pid is a live runner for this very job (guards against pid reuse)."""
    if not _pid_exists_not_zombie(handle.pid):
        return False
    if not _PROC.is_dir():
        return True  # no way to check identity; the pid exists
    stat = _read_stat(handle.pid)
    if stat is None:
        return False  # vanished just now
    if handle.start_ticks is not None and stat.start_ticks != handle.start_ticks:
        return False
    try:
        cmdline = (_PROC / str(handle.pid) / "cmdline").read_bytes()
    except OSError:
        return False
    args = cmdline.split(b"\0")
    return RUNNER_MODULE.encode() in args and os.fsencode(handle.job_dir) in args


def _group_alive(pgid: int) -> bool:
    """Whether any non-zombie process is left in the group.

    Zombies are ignored: an init that does not reap (common in containers) would otherwise
    make a dead group look alive forever.
    """
    if not _PROC.is_dir():
        try:
            os.killpg(pgid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
        return True
    for entry in os.scandir(_PROC):
        if not entry.name.isdigit():
            continue
        stat = _read_stat(entry.name)
        if stat is not None and stat.pgrp == pgid and stat.state not in ("Z", "X"):
            return True
    return False


def _write_json_atomic(path: Path, payload: dict[str, Any]) -> None:
    _write_text_atomic(path, json.dumps(payload, indent=2, sort_keys=True))


def _write_text_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(f"{path.name}.tmp.{os.getpid()}")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


def _tail(path: Path, limit: int) -> str:
    try:
        with open(path, "rb") as fh:
            fh.seek(0, os.SEEK_END)
            size = fh.tell()
            fh.seek(max(0, size - limit))
            data = fh.read()
    except OSError:
        return ""
    return data.decode("utf-8", errors="replace").strip()
