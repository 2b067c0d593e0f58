"""Real processes through the local executor and the controller, checked against the ledger."""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from pathlib import Path

import httpx
from sqlalchemy import func, select

from aisc.runtime import Runtime
from aisc.services import accounts, allocations, audit, invoices, jobs
from aisc.services.context import SYSTEM
from aisc.services.controller import Controller
from aisc.store.tables import Job, JobCharge
from aisc.store.uow import UnitOfWork
from tests.builders import Centre, award, build_centre
from tests.driving import cycle_until
from tests.servers import serve_in_thread

PY = sys.executable


def drive(runtime: Runtime, done: Callable[[], bool]) -> None:
    cycle_until(runtime.controller, done)


def state_of(runtime: Runtime, job_id: int) -> str:
    return jobs.get_job(runtime.uow(), SYSTEM, job_id).state


def setup(runtime: Runtime, gpu_hours: int = 10) -> tuple[Centre, int]:
    centre = build_centre(runtime.uow)
    return centre, award(centre, "Harbour University", gpu_hours=gpu_hours)


def submit(
    runtime: Runtime,
    centre: Centre,
    allocation: int,
    argv: list[str],
    gpus: int = 1,
    limit: int = 60,
) -> int:
    actor = centre.applicants["Harbour University"]
    return jobs.submit_job(runtime.uow(), actor, jobs.JobRequest(allocation, argv, gpus, limit)).id


def test_jobs_complete_fail_time_out_and_cannot_start_with_the_right_charges(
    runtime: Runtime,
) -> None:
    centre, allocation = setup(runtime)
    ok = submit(
        runtime,
        centre,
        allocation,
        [
            PY,
            "-c",
            "import os,time; print('gpus', os.environ['CUDA_VISIBLE_DEVICES']); time.sleep(1)",
        ],
        gpus=2,
    )
    bad = submit(
        runtime,
        centre,
        allocation,
        [PY, "-c", "import sys; print('boom', file=sys.stderr); sys.exit(3)"],
    )
    slow = submit(runtime, centre, allocation, ["sleep", "30"], limit=2)
    missing = submit(runtime, centre, allocation, ["/nonexistent/train.sh"])
    ids = [ok, bad, slow, missing]
    drive(
        runtime,
        lambda: all(state_of(runtime, i) in ("completed", "failed", "timeout") for i in ids),
    )

    got = {i: jobs.get_job(runtime.uow(), SYSTEM, i) for i in ids}
    assert got[ok].state == "completed" and got[ok].exit_code == 0
    assert got[bad].state == "failed" and got[bad].exit_code == 3
    assert got[slow].state == "timeout"
    assert got[missing].state == "failed" and "/nonexistent/train.sh" in got[missing].reason

    log = jobs.job_log(runtime.uow(), SYSTEM, ok, "stdout", runtime.backend.log_path)
    assert log.strip() == "gpus " + ",".join(str(i) for i in got[ok].gpu_indices or [])
    assert "boom" in jobs.job_log(runtime.uow(), SYSTEM, bad, "stderr", runtime.backend.log_path)

    with runtime.uow() as uow:
        charges = {c.job_id: c for c in uow.session.scalars(select(JobCharge))}
    assert missing not in charges, "a job that never started is not charged"
    assert charges[slow].gpu_seconds == 2, "a timed-out job is billed up to its limit, no more"
    assert 2 * 1 <= charges[ok].gpu_seconds <= 2 * 3
    for charge in charges.values():
        assert charge.charge_cents == charge.subsidy_cents + charge.copay_cents
        # PRICE_CENTS makes one GPU-second cost one cent
        assert charge.charge_cents == charge.gpu_seconds
        assert charge.subsidy_cents == charge.charge_cents * 7000 // 10000

    balance = allocations.get_allocation(runtime.uow(), centre.operator, allocation)
    assert balance.reserved_gpu_seconds == 0 and balance.subsidy_reserved_cents == 0
    assert balance.used_gpu_seconds == sum(c.gpu_seconds for c in charges.values())
    assert balance.subsidy_spent_cents == sum(c.subsidy_cents for c in charges.values())
    assert balance.available_gpu_seconds == 10 * 3600 - balance.used_gpu_seconds
    assert audit.verify_ledger(runtime.uow(), centre.funder).ok

    month = time.strftime("%Y-%m", time.gmtime())
    org = centre.applicants["Harbour University"].org_id
    assert org is not None
    invoice = invoices.monthly_invoice(runtime.uow(), centre.operator, org, month)
    assert sorted(line.job_id for line in invoice.lines) == sorted(charges)
    assert invoice.copay_cents == sum(c.copay_cents for c in charges.values())


def test_cancelling_a_running_job_kills_its_process_group_and_charges_what_ran(
    runtime: Runtime, tmp_path: Path
) -> None:
    centre, allocation = setup(runtime)
    marker = tmp_path / "child.pid"
    script = f"sleep 60 & echo $! > {marker}; wait"
    job = submit(runtime, centre, allocation, ["sh", "-c", script])
    drive(runtime, lambda: state_of(runtime, job) == "running" and marker.exists())
    child = int(marker.read_text())
    jobs.cancel_job(runtime.uow(), centre.applicants["Harbour University"], job)
    drive(runtime, lambda: state_of(runtime, job) == "cancelled")
    assert (
        not Path(f"/proc/{child}").exists()
        or "Z" in Path(f"/proc/{child}/stat").read_text().split()[2]
    )
    with runtime.uow() as uow:
        charge = uow.session.scalar(select(JobCharge).where(JobCharge.job_id == job))
    assert charge is not None and charge.gpu_seconds >= 1
    assert audit.verify_ledger(runtime.uow(), centre.funder).ok


def test_a_restarted_controller_finds_the_running_job_and_charges_it_once(runtime: Runtime) -> None:
    centre, allocation = setup(runtime)
    job = submit(runtime, centre, allocation, [PY, "-c", "import time; time.sleep(1.5)"])
    drive(runtime, lambda: state_of(runtime, job) == "running")
    # a new controller (as after a server restart) with a fresh backend object
    from aisc.backends.local import LocalBackend

    factory = runtime.session_factory
    fresh = Controller(
        lambda: UnitOfWork(factory),
        LocalBackend(runtime.settings.home.resolve()),
    )
    cycle_until(fresh, lambda: state_of(runtime, job) == "completed")
    for _ in range(3):  # further cycles of both controllers change nothing
        fresh.cycle()
        runtime.controller.cycle()
    with runtime.uow() as uow:
        charges = uow.session.scalar(
            select(func.count()).select_from(JobCharge).where(JobCharge.job_id == job)
        )
        settles = [
            t
            for t in uow.ledger.transactions()
            if t.kind == "settle" and t.refs.get("job_id") == job
        ]
    assert charges == 1 and len(settles) == 1
    assert audit.verify_ledger(runtime.uow(), centre.funder).ok


def test_over_quota_at_start_waits_while_quota_is_held_then_is_refused(runtime: Runtime) -> None:
    # 1 GPU-hour: two 1-GPU jobs with 40-minute limits do not both fit at once
    centre, allocation = setup(runtime, gpu_hours=1)
    first = submit(
        runtime, centre, allocation, [PY, "-c", "import time; time.sleep(1)"], limit=2400
    )
    second = submit(runtime, centre, allocation, ["true"], limit=2400)
    runtime.controller.cycle()
    assert state_of(runtime, first) == "running"
    waiting = jobs.get_job(runtime.uow(), SYSTEM, second)
    assert waiting.state == "queued" and "waiting for running jobs" in waiting.reason
    drive(runtime, lambda: state_of(runtime, second) in ("completed", "failed"))
    assert state_of(runtime, second) == "completed"
    with runtime.uow() as uow:
        assert uow.session.get(Job, second) is not None
    balance = allocations.get_allocation(runtime.uow(), centre.operator, allocation)
    assert balance.used_gpu_seconds <= 3600


def test_over_http_a_grantee_runs_a_job_and_the_funder_sees_the_fund_move(runtime: Runtime) -> None:
    centre, allocation = setup(runtime)
    grantee = centre.applicants["Harbour University"]
    token = accounts.issue_token(runtime.uow(), SYSTEM, grantee.user_id)
    funder_token = accounts.issue_token(runtime.uow(), SYSTEM, centre.funder.user_id)
    with serve_in_thread(runtime) as url:
        api = httpx.Client(base_url=f"{url}/api/v1", headers={"Authorization": f"Bearer {token}"})
        funder = httpx.Client(
            base_url=f"{url}/api/v1", headers={"Authorization": f"Bearer {funder_token}"}
        )
        spent_before = funder.get("/fund").json()[0]["spent_cents"]
        created = api.post(
            "/jobs",
            json={
                "allocation_id": allocation,
                "command": [PY, "-c", "import time; print('trained'); time.sleep(2)"],
                "gpus": 4,
                "time_limit_s": 60,
            },
        )
        assert created.status_code == 201, created.text
        job_id = created.json()["id"]
        deadline = time.monotonic() + 30
        while api.get(f"/jobs/{job_id}").json()["state"] != "completed":
            assert time.monotonic() < deadline
            time.sleep(0.1)
        assert api.get(f"/jobs/{job_id}/logs").text.strip() == "trained"
        month = time.strftime("%Y-%m", time.gmtime())
        invoice = api.get(f"/invoices/{grantee.org_id}/{month}").json()
        line = next(x for x in invoice["lines"] if x["job_id"] == job_id)
        assert line["charge_cents"] == line["subsidy_cents"] + line["copay_cents"] > 0
        assert funder.get("/fund").json()[0]["spent_cents"] == spent_before + line["subsidy_cents"]
        assert funder.get("/ledger/verify").json()["ok"] is True


def test_a_reservation_left_by_a_crash_before_launch_is_released(runtime: Runtime) -> None:
    from datetime import timedelta

    from aisc.services.metering import reserve_job
    from aisc.store.tables import Allocation

    centre, allocation_id = setup(runtime)
    job_id = submit(runtime, centre, allocation_id, ["true"], gpus=2, limit=600)
    long_ago = jobs.get_job(runtime.uow(), SYSTEM, job_id).submitted_at - timedelta(minutes=5)
    with runtime.uow() as uow:  # what a controller had done when it died mid-launch
        uow.ledger.lock()
        job = uow.session.get(Job, job_id)
        allocation = uow.session.get(Allocation, allocation_id)
        assert job is not None and allocation is not None
        reserve_job(uow, job, allocation, job.submitted_at)
        job.state, job.started_at, job.node, job.gpu_indices = "starting", long_ago, "node1", [0, 1]
        uow.commit()
    held = allocations.get_allocation(runtime.uow(), SYSTEM, allocation_id)
    assert held.reserved_gpu_seconds == 2 * 600
    runtime.controller.cycle()
    job = jobs.get_job(runtime.uow(), SYSTEM, job_id)
    assert job.state == "failed" and "before the job launched" in job.reason
    after = allocations.get_allocation(runtime.uow(), SYSTEM, allocation_id)
    assert after.reserved_gpu_seconds == 0 and after.used_gpu_seconds == 0
    assert after.subsidy_reserved_cents == 0
    assert audit.verify_ledger(runtime.uow(), centre.funder).ok


def test_a_job_launched_by_a_controller_that_died_before_recording_it_is_adopted(
    runtime: Runtime,
) -> None:
    from datetime import timedelta

    from aisc.backends.base import ExecutionHandle, LaunchSpec
    from aisc.services.metering import reserve_job
    from aisc.store.tables import Allocation

    centre, allocation_id = setup(runtime)
    job_id = submit(runtime, centre, allocation_id, ["true"], gpus=1, limit=600)
    long_ago = jobs.get_job(runtime.uow(), SYSTEM, job_id).submitted_at - timedelta(minutes=5)
    with runtime.uow() as uow:  # what a controller had done when it died after launching
        uow.ledger.lock()
        job = uow.session.get(Job, job_id)
        allocation = uow.session.get(Allocation, allocation_id)
        assert job is not None and allocation is not None
        reserve_job(uow, job, allocation, job.submitted_at)
        job.state, job.started_at, job.node, job.gpu_indices = "starting", long_ago, "node1", [0]
        uow.commit()
    argv = (PY, "-c", "import time; time.sleep(1)")
    launched = runtime.backend.start(LaunchSpec(job_id, argv, None, {}, "node1", (0,)))

    runtime.controller.cycle()
    job = jobs.get_job(runtime.uow(), SYSTEM, job_id)
    assert job.state == "running", "the run the backend knows of is adopted, not failed"
    assert job.backend_ref is not None
    assert ExecutionHandle.from_json(job.backend_ref).pid == launched.pid
    drive(runtime, lambda: state_of(runtime, job_id) == "completed")
    with runtime.uow() as uow:
        charges = uow.session.scalar(
            select(func.count()).select_from(JobCharge).where(JobCharge.job_id == job_id)
        )
    assert charges == 1
    assert audit.verify_ledger(runtime.uow(), centre.funder).ok


class RefusingBackend:
    """Fault injection: a backend whose launches always fail."""

    name = "refusing"

    def start(self, spec):  # type: ignore[no-untyped-def]
        from aisc.backends.base import LaunchError

        raise LaunchError("node unreachable")

    def poll(self, handle):  # type: ignore[no-untyped-def]
        raise AssertionError("nothing was launched")

    def kill(self, handle):  # type: ignore[no-untyped-def]
        raise AssertionError("nothing was launched")

    def find(self, job_id):  # type: ignore[no-untyped-def]
        return None

    def log_path(self, job_id, stream):  # type: ignore[no-untyped-def]
        return Path("/nonexistent")


def test_a_launch_failure_fails_the_job_with_its_reason_and_releases_the_hold(
    runtime: Runtime,
) -> None:
    centre, allocation_id = setup(runtime)
    job_id = submit(runtime, centre, allocation_id, ["true"], gpus=4)
    factory = runtime.session_factory
    controller = Controller(lambda: UnitOfWork(factory), RefusingBackend())
    report = controller.cycle()
    assert report.finished == [job_id] and report.started == []
    job = jobs.get_job(runtime.uow(), SYSTEM, job_id)
    assert job.state == "failed" and job.reason == "cannot start: node unreachable"
    balance = allocations.get_allocation(runtime.uow(), SYSTEM, allocation_id)
    assert balance.reserved_gpu_seconds == 0 and balance.available_gpu_seconds == 10 * 3600
    assert audit.verify_ledger(runtime.uow(), centre.funder).ok


def test_a_job_whose_poll_fails_does_not_stop_the_others_being_settled(runtime: Runtime) -> None:
    from aisc.backends.local import LocalBackend

    centre, allocation_id = setup(runtime)
    stuck = submit(runtime, centre, allocation_id, [PY, "-c", "import time; time.sleep(0.5)"])
    fine = submit(runtime, centre, allocation_id, [PY, "-c", "import time; time.sleep(0.5)"])

    class FlakyBackend(LocalBackend):
        def poll(self, handle):  # type: ignore[no-untyped-def]
            if handle.job_id == stuck:
                raise OSError("node agent timed out")
            return super().poll(handle)

    factory = runtime.session_factory
    flaky = Controller(
        lambda: UnitOfWork(factory),
        FlakyBackend(runtime.settings.home.resolve()),
    )
    cycle_until(flaky, lambda: state_of(runtime, fine) == "completed")
    assert state_of(runtime, stuck) == "running"  # retried every cycle, not given up on
    drive(runtime, lambda: state_of(runtime, stuck) == "completed")  # the healthy controller
    assert audit.verify_ledger(runtime.uow(), centre.funder).ok
