"""The whole server in Slurm mode (AISC_BACKEND=slurm): the inventory comes from sinfo, awards
become accounts through the runtime's sync, a job submitted over the API runs in Slurm and is
charged from sacct, and the health endpoint tells when Slurm is away."""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import Engine, select

from aisc.api.app import create_app
from aisc.backends.slurm import SlurmCli
from aisc.config import Settings
from aisc.runtime import Runtime
from aisc.services import accounts, audit
from aisc.services.context import SYSTEM
from aisc.services.slurm_names import SlurmNames
from aisc.store.tables import Job, JobCharge, Node
from tests.builders import award, build_centre
from tests.conftest import reset_database
from tests.driving import cycle_until


@pytest.fixture
def slurm_runtime(
    slurm: SlurmCli,
    slurm_env: dict[str, str],
    slurm_names: SlurmNames,
    database_url: str,
    engine: Engine,
    tmp_path: Path,
) -> Iterator[Runtime]:
    reset_database(engine)
    settings = Settings(
        home=tmp_path / "home",
        database_url=database_url,
        backend="slurm",
        slurm_conf=slurm_env["SLURM_CONF"],
        slurm_prefix=slurm_names.prefix,
        controller_interval_s=0.2,
    )
    runtime = Runtime.build(settings, migrate=False)
    yield runtime
    runtime.close()


def test_a_job_goes_through_the_api_into_slurm_and_is_charged_from_sacct(
    slurm_runtime: Runtime, slurm_env: dict[str, str]
) -> None:
    runtime = slurm_runtime
    with runtime.uow() as uow:
        nodes = [(n.name, n.gpus, n.backend) for n in uow.session.scalars(select(Node))]
    assert nodes == [("localhost", 8, "slurm")]  # from sinfo, not AISC_INVENTORY

    centre = build_centre(runtime.uow, nodes="1x8xH800")  # (replaces the inventory row)
    allocation = award(centre, "Harbour University", gpu_hours=100)
    runtime.sync_slurm()
    applicant = centre.applicants["Harbour University"]
    token = accounts.issue_token(runtime.uow(), SYSTEM, applicant.user_id, "test")
    headers = {"Authorization": f"Bearer {token}"}
    with TestClient(create_app(runtime, run_controller=False)) as client:
        health = client.get("/api/v1/health").json()
        assert (health["backend"], health["status"]) == ("slurm", "ok")
        created = client.post(
            "/api/v1/jobs",
            headers=headers,
            json={
                "allocation_id": allocation,
                "command": ["sh", "-c", "echo from-slurm; sleep 2"],
                "gpus": 2,
                "time_limit_s": 120,
            },
        )
        assert created.status_code == 201, created.text
        job_id = created.json()["id"]

        def state() -> str:
            return str(client.get(f"/api/v1/jobs/{job_id}", headers=headers).json()["state"])

        cycle_until(runtime.controller, lambda: state() == "completed", timeout=90)
        log = client.get(f"/api/v1/jobs/{job_id}/logs", headers=headers)
        assert "from-slurm" in log.text
    with runtime.uow() as uow:
        charge = uow.session.scalars(select(JobCharge).where(JobCharge.job_id == job_id)).one()
        job = uow.session.get(Job, job_id)
        assert job is not None and job.backend_ref is not None
        slurm_id = json.loads(job.backend_ref)["slurm_job_id"]
    line = subprocess.run(  # Slurm's own account of the job, read independently
        ["sacct", "-n", "-P", "-X", "-j", str(slurm_id), "-o", "AllocTRES,ElapsedRaw"],
        env={**os.environ, **slurm_env},
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    tres, elapsed = line.split("|")
    assert "gres/gpu=2" in tres
    assert charge.gpu_seconds == 2 * int(elapsed)
    assert audit.verify_ledger(runtime.uow(), centre.funder).ok


def test_health_reports_the_backend_degraded_while_slurm_is_away(
    slurm_runtime: Runtime,
) -> None:
    runtime = slurm_runtime
    centre = build_centre(runtime.uow, nodes="1x8xH800")
    award(centre, "Harbour University")
    assert runtime.slurm is not None

    def refused(
        argv: Sequence[str], env: Mapping[str, str], timeout: float
    ) -> subprocess.CompletedProcess[str]:
        message = f"{argv[0]}: error: Unable to contact slurm controller (connect failure)"
        return subprocess.CompletedProcess(list(argv), 1, "", message)

    runtime.slurm.runner = refused  # the fault, injected where a process would start
    runtime.controller.cycle()
    with TestClient(create_app(runtime, run_controller=False)) as client:
        health = client.get("/api/v1/health")
    assert health.status_code == 200  # the API still takes work
    body = health.json()
    assert body["status"] == "degraded"
    assert body["backend_status"].startswith("degraded: slurmctld is unavailable")
