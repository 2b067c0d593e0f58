"""The live controller on the policy core: whole-node jobs, borrowing and preemption, `why`."""

from __future__ import annotations

from sqlalchemy import select
from typer.testing import CliRunner

from aisc.cli.main import app
from aisc.runtime import Runtime
from aisc.scheduler.config import PolicyConfig
from aisc.services import accounts, allocations, audit, jobs, nodes
from aisc.services.context import SYSTEM
from aisc.services.controller import Controller
from aisc.store.tables import JobCharge
from aisc.store.uow import UnitOfWork
from tests.builders import Centre, award, build_centre
from tests.driving import cycle_until
from tests.servers import serve_in_thread


def state(runtime: Runtime, job_id: int) -> str:
    return jobs.get_job(runtime.uow(), SYSTEM, job_id).state


def submit(
    runtime: Runtime, centre: Centre, org: str, allocation: int, argv: list[str], gpus: int
) -> int:
    actor = centre.applicants[org]
    return jobs.submit_job(runtime.uow(), actor, jobs.JobRequest(allocation, argv, gpus, 600)).id


def test_a_16_gpu_job_runs_on_two_whole_nodes(runtime: Runtime, tmp_path) -> None:  # type: ignore[no-untyped-def]
    centre = build_centre(runtime.uow)
    allocation = award(centre, "Harbour University", gpu_hours=100)
    out = tmp_path / "env.txt"
    job_id = submit(
        runtime,
        centre,
        "Harbour University",
        allocation,
        ["sh", "-c", f'echo "$AISC_NODES" > {out}; sleep 1'],
        16,
    )
    cycle_until(runtime.controller, lambda: state(runtime, job_id) == "running")
    job = jobs.get_job(runtime.uow(), SYSTEM, job_id)
    assert [p["node"] for p in job.placement or []] == ["node1", "node2"]
    assert all(len(p["gpus"]) == 8 for p in job.placement or [])
    busy = {n.name: n.free_gpus for n in nodes.list_nodes(runtime.uow(), SYSTEM)}
    assert busy == {"node1": 0, "node2": 0}
    cycle_until(runtime.controller, lambda: state(runtime, job_id) == "completed")
    assert out.read_text().strip() == "node1:0,1,2,3,4,5,6,7;node2:0,1,2,3,4,5,6,7"
    with runtime.uow() as uow:
        charge = uow.session.scalar(select(JobCharge).where(JobCharge.job_id == job_id))
    assert charge is not None and charge.gpu_seconds % 16 == 0


def test_a_borrowed_job_is_preempted_for_the_owner_then_requeued_and_charged_once(
    runtime: Runtime,
) -> None:
    centre = build_centre(runtime.uow)
    lab_a = award(centre, "Lab A", gpu_hours=100)  # equal awards: 8 guaranteed GPUs each
    lab_b = award(centre, "Lab B", gpu_hours=100)
    factory = runtime.session_factory
    controller = Controller(
        lambda: UnitOfWork(factory), runtime.backend, PolicyConfig(min_runtime_s=0)
    )
    own = submit(runtime, centre, "Lab B", lab_b, ["sleep", "3"], 8)
    extra = submit(runtime, centre, "Lab B", lab_b, ["sleep", "3"], 8)
    cycle_until(controller, lambda: state(runtime, own) == state(runtime, extra) == "running")
    assert jobs.get_job(runtime.uow(), SYSTEM, extra).borrowed
    assert not jobs.get_job(runtime.uow(), SYSTEM, own).borrowed

    owner = submit(runtime, centre, "Lab A", lab_a, ["sleep", "0.5"], 8)
    report = controller.cycle()
    assert report.preempted == [extra]
    assert owner in report.started
    requeued = jobs.get_job(runtime.uow(), SYSTEM, extra)
    assert requeued.state == "queued" and requeued.preemptions == 1
    assert "preempted" in requeued.reason
    assert state(runtime, own) == "running"  # within its guarantee: never preempted
    held = allocations.get_allocation(runtime.uow(), SYSTEM, lab_b)
    assert held.reserved_gpu_seconds == 8 * 600  # only `own` holds quota now

    cycle_until(controller, lambda: state(runtime, extra) == "completed")
    with runtime.uow() as uow:
        charges = list(uow.session.scalars(select(JobCharge).where(JobCharge.job_id == extra)))
    assert len(charges) == 1 and charges[0].gpu_seconds >= 8 * 3
    assert audit.verify_ledger(runtime.uow(), centre.funder).ok


def test_why_explains_a_waiting_job_over_http_and_the_cli(runtime: Runtime) -> None:
    centre = build_centre(runtime.uow, nodes="1x8xH800")
    allocation = award(centre, "Harbour University", gpu_hours=100)
    big = submit(runtime, centre, "Harbour University", allocation, ["sleep", "5"], 8)
    runtime.controller.cycle()
    waiting = submit(runtime, centre, "Harbour University", allocation, ["true"], 4)
    runtime.controller.cycle()
    assert state(runtime, big) == "running" and state(runtime, waiting) == "queued"
    token = accounts.issue_token(
        runtime.uow(), SYSTEM, centre.applicants["Harbour University"].user_id
    )
    with serve_in_thread(runtime, run_controller=False) as url:
        import httpx

        e = httpx.get(
            f"{url}/api/v1/jobs/{waiting}/why", headers={"Authorization": f"Bearer {token}"}
        ).json()
        assert e["state"] == "queued" and e["position"] == 1
        assert e["reserved_start"] is not None and e["reserved_nodes"] == ["node1"]
        assert 0 <= e["factors"]["fairshare"] <= 1
        result = CliRunner().invoke(
            app, ["queue", "--why", str(waiting)], env={"AISC_URL": url, "AISC_TOKEN": token}
        )
        assert result.exit_code == 0, result.output
        assert "Reserved start" in result.stdout and "node1" in result.stdout
        running = httpx.get(
            f"{url}/api/v1/jobs/{big}/why", headers={"Authorization": f"Bearer {token}"}
        ).json()
        assert running["state"] == "running" and "node1" in running["reason"]


def test_why_names_the_quota_a_queued_job_waits_for_though_gpus_are_free(
    runtime: Runtime,
) -> None:
    centre = build_centre(runtime.uow, nodes="1x8xH800")
    allocation = award(centre, "Harbour University", gpu_hours=1)  # 3,600 GPU-seconds
    # 5 GPUs x a 600 s limit hold 3,000 of them; 2 GPUs x 600 s then need 1,200 of the 600
    # left. Both are accepted (nothing is held at submission); the controller starts one
    holder = submit(runtime, centre, "Harbour University", allocation, ["sleep", "30"], 5)
    waiting = submit(runtime, centre, "Harbour University", allocation, ["true"], 2)
    runtime.controller.cycle()
    assert state(runtime, holder) == "running"
    assert state(runtime, waiting) == "queued", "3 GPUs are free; only quota is missing"
    actor = centre.applicants["Harbour University"]
    _, explanation = jobs.explain_job(runtime.uow(), actor, waiting, runtime.controller.explain)
    assert explanation.reason.startswith("waiting for quota: its time limit needs 0.33 GPU-hours")
    assert "has 0.17 left" in explanation.reason
    _, running = jobs.explain_job(runtime.uow(), actor, holder, runtime.controller.explain)
    assert "quota" not in running.reason
    jobs.cancel_job(runtime.uow(), actor, holder)
