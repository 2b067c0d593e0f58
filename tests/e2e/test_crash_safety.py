"""Crash safety: `aisc serve`, a real process, killed with SIGKILL while jobs run and while
metering, then restarted on the same home and database.

The first server dies in the middle of a settlement (the fault-injection hook in
services/metering.py kills it after the settlement is written, before it is committed); while
it is down one job finishes and another job's runner is killed. The second server is killed as
a job's exit is being metered. After each restart running jobs are found again by their stored
handles, ended ones are settled from their exit records, the lost one is failed with its hold
released and its orphans stopped; in the end every job that ran is charged exactly once and
`aisc ledger verify` says OK.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import uuid
from collections import Counter
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path

import httpx
import pytest
from sqlalchemy import select

from aisc.backends.base import ExecutionHandle
from aisc.services import accounts, allocations
from aisc.services.context import SYSTEM
from aisc.services.metering import FAULT_KILL_BEFORE_COMMIT
from aisc.store.tables import Job, JobCharge
from tests.builders import award, build_centre
from tests.conftest import UowFactory
from tests.integration.test_overspend_under_concurrency import (
    MARK,
    check_centre_invariants,
    kill_marked,
    marked_processes,
    wait_for,
)
from tests.servers import free_port

pytestmark = pytest.mark.slow

FINAL = ("completed", "failed", "cancelled", "timeout")


class Server:
    """`aisc serve` as its own process on a fixed home, database and port, restartable."""

    def __init__(self, home: Path, database_url: str, mark: str) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = home.parent / "server.log"
        self.env = {
            **os.environ,
            "AISC_HOME": str(home),
            "AISC_DATABASE_URL": database_url,
            "AISC_INVENTORY": "2x8xH800",
            "AISC_DETECT_GPUS": "0",
            "AISC_CONTROLLER_INTERVAL_S": "0.1",
            "AISC_KILL_GRACE_S": "1",
            "AISC_NOTIFY_INTERVAL_S": "3600",
            "AISC_LOG_FORMAT": "text",
            MARK: mark,  # inherited by every runner and job: nothing escapes the clean-up
        }
        self.env.pop(FAULT_KILL_BEFORE_COMMIT, None)
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, fault: str | None = None) -> None:
        env = dict(self.env)
        if fault:
            env[FAULT_KILL_BEFORE_COMMIT] = fault
        argv = [sys.executable, "-m", "aisc.cli.main", "serve", "--no-migrate"]
        with self.log.open("ab") as log:
            self.proc = subprocess.Popen(
                [*argv, "--port", str(self.port)],
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        proc = self.proc

        def ready() -> bool:
            assert proc.poll() is None, f"the server exited: {self.tail()}"
            try:
                return httpx.get(f"{self.url}/api/v1/health", timeout=2).status_code == 200
            except httpx.TransportError:
                return False

        wait_for(ready, "the server to answer", timeout=60)

    def kill(self) -> None:
        """SIGKILL: no shutdown code runs, whatever it was doing."""
        assert self.proc is not None
        os.kill(self.proc.pid, signal.SIGKILL)
        self.proc.wait(timeout=30)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=30)

    def tail(self) -> str:
        return self.log.read_text(errors="replace")[-3000:]


@pytest.fixture
def server(database_url: str, uow_factory: UowFactory, tmp_path: Path) -> Iterator[Server]:
    home = tmp_path / "home"
    mark = uuid.uuid4().hex
    srv = Server(home, database_url, mark)
    try:
        yield srv
    finally:
        srv.stop()
        kill_marked(mark)  # servers, runners, jobs and their orphans, even after a failure


def test_killed_servers_lose_nothing_and_charge_every_job_exactly_once(
    server: Server, uow_factory: UowFactory, tmp_path: Path
) -> None:
    uow = uow_factory
    centre = build_centre(uow)  # seeded in-process, before any server runs
    allocation_id = award(centre, "Harbour University", gpu_hours=10)
    grantee = centre.applicants["Harbour University"]
    grantee_token = accounts.issue_token(uow(), SYSTEM, grantee.user_id)
    funder_token = accounts.issue_token(uow(), SYSTEM, centre.funder.user_id)
    home = Path(server.env["AISC_HOME"])
    mark = server.env[MARK]

    def api() -> httpx.Client:
        headers = {"Authorization": f"Bearer {grantee_token}"}
        return httpx.Client(base_url=f"{server.url}/api/v1", headers=headers, timeout=30)

    def submit(seconds: int) -> int:
        with api() as http:
            body = {
                "allocation_id": allocation_id,
                "command": ["sleep", str(seconds)],
                "gpus": 1,
                "time_limit_s": 120,
            }
            created = http.post("/jobs", json=body)
        assert created.status_code == 201, created.text
        return int(created.json()["id"])

    def state(job_id: int) -> str:
        with api() as http:
            return str(http.get(f"/jobs/{job_id}").json()["state"])

    def job(job_id: int) -> Job:
        with uow() as u:
            found = u.session.get(Job, job_id)
            assert found is not None
            return found

    def handle(job_id: int) -> ExecutionHandle:
        ref = job(job_id).backend_ref
        assert ref is not None
        return ExecutionHandle.from_json(ref)

    def exit_record(job_id: int) -> Path:
        return home / "jobs" / str(job_id) / "exit.json"

    def settlements(job_id: int) -> Counter[str]:
        with uow() as u:
            return Counter(
                t.kind
                for t in u.ledger.transactions()
                if t.refs.get("job_id") == job_id and t.kind != "reserve"
            )

    def charge(job_id: int) -> JobCharge | None:
        with uow() as u:
            return u.session.scalar(select(JobCharge).where(JobCharge.job_id == job_id))

    # -- 1. the first server dies in the middle of metering ----------------------------------
    server.start(fault="settle")
    long_job = submit(12)  # outlives both crashes
    lost = submit(60)  # its runner is killed while no server is up
    ends_while_down = submit(3)  # ends while no server is up
    metered_at_crash = submit(1)  # submitted last: the others are running when it ends
    assert server.proc is not None
    # the server kills itself settling the first job to end (the others have been running)
    assert server.proc.wait(timeout=60) == -signal.SIGKILL, server.tail()

    # the settlement was written but never committed: the job is still running, uncharged
    assert job(metered_at_crash).state == "running"
    assert exit_record(metered_at_crash).exists()
    assert charge(metered_at_crash) is None and not settlements(metered_at_crash)
    running = {j: handle(j) for j in (long_job, lost, ends_while_down, metered_at_crash)}
    assert all(job(j).state == "running" for j in running)

    # -- while no server is up: one job ends, another job's runner is killed -----------------
    victim = running[lost]
    os.kill(victim.pid, signal.SIGKILL)  # the runner alone: its command lives on, orphaned

    def orphans() -> set[int]:
        return {pid for pid, pgid in marked_processes(mark).items() if pgid == victim.pid}

    wait_for(lambda: bool(orphans()) and victim.pid not in orphans(), "the runner to die")
    wait_for(exit_record(ends_while_down).exists, "a job to end while the server is down")
    assert not exit_record(lost).exists()

    # -- 2. restart: reconcile with what happened meanwhile ----------------------------------
    server.start()
    wait_for(
        lambda: all(state(j) in FINAL for j in (lost, ends_while_down, metered_at_crash)),
        "the restarted server to reconcile",
    )
    for j in (metered_at_crash, ends_while_down):
        done, charged = job(j), charge(j)
        assert done.state == "completed" and done.exit_code == 0, (j, done.reason)
        assert charged is not None and settlements(j) == Counter(settle=1)
        # settled from the exit record, not from when the server came back
        ended_at = json.loads(exit_record(j).read_text())["ended_at"]
        assert charged.usage_ended_at == datetime.fromtimestamp(
            ended_at, charged.usage_ended_at.tzinfo
        )
        assert charged.charge_cents == charged.subsidy_cents + charged.copay_cents
    failed = job(lost)
    assert failed.state == "failed" and "without recording an exit status" in failed.reason
    assert charge(lost) is None and settlements(lost) == Counter(release=1)
    assert failed.reserved_gpu_seconds == 0
    wait_for(lambda: not orphans(), "the lost job's orphaned command to be stopped", timeout=30)
    # found again: the long job still runs under the runner it had before the crash
    assert state(long_job) == "running" and handle(long_job) == running[long_job]
    check_centre_invariants(uow, centre.funder)

    # -- 3. the second server is killed as a job's exit is being metered ---------------------
    short = [submit(s) for s in (1, 1, 2, 3)]
    wait_for(lambda: all(state(j) in ("running", *FINAL) for j in short), "the jobs to start")
    wait_for(exit_record(short[0]).exists, "the first short job to end")
    server.kill()  # the controller polls every 0.1 s: typically mid-settlement, or just before
    wait_for(lambda: all(exit_record(j).exists() for j in short), "the short jobs to end")

    # -- 4. restart again: everything ends, each job charged exactly once --------------------
    server.start()
    everything = [long_job, lost, ends_while_down, metered_at_crash, *short]
    wait_for(lambda: all(state(j) in FINAL for j in everything), "every job to end", timeout=90)
    assert handle(long_job) == running[long_job]  # the same process, across both crashes
    for j in everything:
        if j == lost:
            continue
        done, charged = job(j), charge(j)
        assert done.state == "completed" and done.exit_code == 0, (j, done.reason)
        assert charged is not None and settlements(j) == Counter(settle=1), j
    long_charge = charge(long_job)
    assert long_charge is not None and 12 <= long_charge.gpu_seconds <= 14
    balance = allocations.get_allocation(uow(), SYSTEM, allocation_id)
    assert balance.reserved_gpu_seconds == 0 and balance.subsidy_reserved_cents == 0
    check_centre_invariants(uow, centre.funder)

    # the auditor's own check, through the real CLI against the restarted server
    verify = subprocess.run(
        [sys.executable, "-m", "aisc.cli.main", "ledger", "verify"],
        env={
            **os.environ,
            "AISC_URL": server.url,
            "AISC_TOKEN": funder_token,
            "AISC_CONFIG": str(tmp_path / "cli.json"),
        },
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert verify.returncode == 0, verify.stdout + verify.stderr
    assert verify.stdout.startswith("OK:"), verify.stdout

    server.stop()
    wait_for(lambda: not marked_processes(mark), "every process to end", timeout=30)
