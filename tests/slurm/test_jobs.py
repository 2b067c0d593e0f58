"""Jobs through the real Slurm cluster: submitted with sbatch, held or run by Slurm, metered from
sacct into the ledger exactly once, across cancels, restarts, crashes and a slurmctld outage.

Each test makes its own Slurm account, QOS and user association under its unique prefix (the
allocation sync is tested on its own). sacct is read here with Slurm's own command, not through
aisc's parser, so the charge is checked against what Slurm says independently.
"""

from __future__ import annotations

import getpass
import os
import subprocess
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import select

from aisc.backends.local import LocalBackend
from aisc.backends.slurm import SlurmCli, run_process
from aisc.services import allocations, audit, jobs
from aisc.services.context import SYSTEM, utcnow
from aisc.services.slurm_controller import SlurmController, SlurmRef
from aisc.services.slurm_names import SlurmNames
from aisc.store.tables import Job, JobCharge
from tests.builders import Centre, award, build_centre
from tests.conftest import UowFactory
from tests.driving import cycle_until
from tests.slurm.conftest import CLUSTER, SCRIPT

SHORT = ["sh", "-c", 'echo "hi $AISC_JOB_ID gpus=$CUDA_VISIBLE_DEVICES"; sleep 2']
SACCT_LAG_S = 40  # a job's run plus sacct's lag, with room for a busy shared cluster


@dataclass
class Site:
    centre: Centre
    allocation: int
    names: SlurmNames
    cli: SlurmCli
    env: dict[str, str]
    home: Path

    def controller(
        self, cli: SlurmCli | None = None, clock: Callable[[], datetime] | None = None
    ) -> SlurmController:
        cli = cli or self.cli
        return SlurmController(self.centre.uow, cli, self.names, self.home, clock=clock or utcnow)

    def submit(self, argv: list[str], gpus: int = 2, limit: int = 60) -> int:
        actor = self.centre.applicants["Harbour University"]
        request = jobs.JobRequest(self.allocation, argv, gpus, limit)
        return jobs.submit_job(self.centre.uow(), actor, request).id

    def job(self, job_id: int) -> Job:
        return jobs.get_job(self.centre.uow(), SYSTEM, job_id)

    def state(self, job_id: int) -> str:
        return self.job(job_id).state

    def charges(self) -> list[JobCharge]:
        with self.centre.uow() as uow:
            return list(uow.session.scalars(select(JobCharge)))

    def sacct(self, job_id: int) -> list[dict[str, str]]:
        """Slurm's own accounting rows for the job's name, read with sacct itself."""
        fields = ["JobID", "JobName", "Account", "QOS", "State", "ElapsedRaw", "AllocTRES"]
        out = subprocess.run(
            ["sacct", "-X", "-n", "-P", "-a", f"--name={self.names.job_name(job_id)}",
             "--starttime=now-1hour", "-o", ",".join(fields)],
            env={**os.environ, **self.env}, capture_output=True, text=True, check=True,
        ).stdout  # fmt: skip
        return [dict(zip(fields, line.split("|"), strict=True)) for line in out.splitlines()]

    def squeue_ids(self, job_id: int) -> list[str]:
        out = subprocess.run(
            ["squeue", "-h", "-o", "%i", f"--name={self.names.job_name(job_id)}"],
            env={**os.environ, **self.env}, capture_output=True, text=True, check=True,
        ).stdout  # fmt: skip
        return out.split()

    def assert_charged_as_sacct_says(self, job_id: int) -> JobCharge:
        (row,) = self.sacct(job_id)
        assert (row["Account"], row["QOS"]) == (
            self.names.allocation_account(self.allocation),
            self.names.allocation_qos(self.allocation),
        )
        gpus = int(dict(t.split("=") for t in row["AllocTRES"].split(","))["gres/gpu"])
        elapsed = int(row["ElapsedRaw"])
        (charge,) = [c for c in self.charges() if c.job_id == job_id]
        assert charge.gpu_seconds == gpus * elapsed
        assert charge.charge_cents == charge.gpu_seconds  # PRICE_CENTS: a cent a GPU-second
        assert charge.subsidy_cents + charge.copay_cents == charge.charge_cents
        job = self.job(job_id)
        assert job.started_at is not None and job.ended_at is not None
        assert (job.ended_at - job.started_at).total_seconds() == elapsed
        balance = allocations.get_allocation(self.centre.uow(), SYSTEM, self.allocation)
        assert balance.reserved_gpu_seconds == 0 and balance.subsidy_reserved_cents == 0
        assert audit.verify_ledger(self.centre.uow(), self.centre.funder).ok
        return charge


def make_site(
    uow_factory: UowFactory,
    slurm: SlurmCli,
    slurm_names: SlurmNames,
    slurm_env: dict[str, str],
    tmp_path: Path,
    gpu_minutes: int = 100_000,
) -> Site:
    centre = build_centre(uow_factory)
    allocation = award(centre, "Harbour University", gpu_hours=100)
    org = centre.orgs["Harbour University"]
    account = slurm_names.allocation_account(allocation)
    qos = slurm_names.allocation_qos(allocation)
    slurm.add_account(slurm_names.org_account(org), "root", 1, "test org", "aisc tests")
    slurm.add_account(account, slurm_names.org_account(org), 100, "test award", "aisc tests")
    slurm.add_qos(qos, flags="NoDecay", grptresmins=f"gres/gpu={gpu_minutes}")
    slurm.add_user(getpass.getuser(), account, qos)
    return Site(centre, allocation, slurm_names, slurm, slurm_env, tmp_path / "home")


def crashing(before: bool) -> Callable[..., subprocess.CompletedProcess[str]]:
    """A runner whose sbatch dies before running, or after Slurm took the job (the id is lost)."""

    def run(
        argv: Sequence[str], env: Mapping[str, str], timeout: float
    ) -> subprocess.CompletedProcess[str]:
        if Path(argv[0]).name == "sbatch":
            if before:
                raise RuntimeError("the controller died before sbatch ran")
            run_process(argv, env, timeout)
            raise RuntimeError("the controller died before it stored the Slurm job id")
        return run_process(argv, env, timeout)

    return run


SiteFactory = Callable[..., Site]


@pytest.fixture
def new_site(
    uow_factory: UowFactory,
    slurm: SlurmCli,
    slurm_names: SlurmNames,
    slurm_env: dict[str, str],
    tmp_path: Path,
) -> SiteFactory:
    """A centre with one award, set up in Slurm under this test's prefix."""

    def make(gpu_minutes: int = 100_000) -> Site:
        return make_site(uow_factory, slurm, slurm_names, slurm_env, tmp_path, gpu_minutes)

    return make


def test_a_job_runs_in_slurm_and_is_charged_exactly_what_sacct_metered(
    new_site: SiteFactory,
) -> None:
    site = new_site()
    controller = site.controller()
    job_id = site.submit(SHORT, gpus=2)
    cycle_until(controller, lambda: site.state(job_id) == "completed", SACCT_LAG_S)

    job = site.job(job_id)
    assert job.exit_code == 0 and job.backend == "slurm"
    assert job.backend_ref is not None
    assert SlurmRef.from_json(job.backend_ref).slurm_job_id == int(site.sacct(job_id)[0]["JobID"])
    charge = site.assert_charged_as_sacct_says(job_id)
    assert charge.gpu_seconds >= 2 * 2
    # Slurm wrote the output where `aisc logs` reads it, with the 2 GPUs it gave the job
    log = jobs.job_log(
        site.centre.uow(), SYSTEM, job_id, "stdout", LocalBackend(site.home).log_path
    )
    words = log.split()
    assert words[:2] == ["hi", str(job_id)] and len(words[2].split(",")) == 2
    assert controller.status == "ok" and controller.last_contact is not None


def test_cancelling_a_running_job_stops_it_in_slurm_and_charges_what_ran(
    new_site: SiteFactory,
) -> None:
    site = new_site()
    controller = site.controller()
    job_id = site.submit(["sleep", "120"], gpus=1, limit=300)
    cycle_until(controller, lambda: site.state(job_id) == "running", SACCT_LAG_S)
    time.sleep(2)  # sacct counts whole seconds: a job cancelled in its first one ran 0 s
    jobs.cancel_job(site.centre.uow(), site.centre.operator, job_id)
    cycle_until(controller, lambda: site.state(job_id) == "cancelled", SACCT_LAG_S)

    job = site.job(job_id)
    assert job.reason == "cancel requested by Olive Operator"
    assert site.sacct(job_id)[0]["State"].startswith("CANCELLED")
    charge = site.assert_charged_as_sacct_says(job_id)
    assert 2 <= charge.gpu_seconds < 60, "charged for what ran, not for the time limit"


def test_a_job_over_the_slurm_budget_is_held_and_says_why(new_site: SiteFactory) -> None:
    # aisc's award has 100 GPU-hours; Slurm's QOS only 1 GPU-minute, and the job needs 2
    site = new_site(gpu_minutes=1)
    controller = site.controller()
    job_id = site.submit(SHORT, gpus=2, limit=60)
    cycle_until(controller, lambda: "QOSGrpGRESMinutes" in site.job(job_id).reason, SACCT_LAG_S)

    job = site.job(job_id)
    assert job.state == "starting"
    assert job.reason == (
        "held by Slurm: the allocation's GPU-minute budget cannot cover this job's GPUs x time "
        "limit (QOSGrpGRESMinutes)"
    )
    why = controller.explain(job_id)
    assert (why.state, why.reason) == ("pending", job.reason)

    jobs.cancel_job(site.centre.uow(), site.centre.operator, job_id)
    cycle_until(controller, lambda: site.state(job_id) == "cancelled", SACCT_LAG_S)
    assert site.charges() == []
    balance = allocations.get_allocation(site.centre.uow(), SYSTEM, site.allocation)
    assert balance.reserved_gpu_seconds == 0 and balance.available_gpu_seconds == 100 * 3600
    assert audit.verify_ledger(site.centre.uow(), site.centre.funder).ok


def test_a_controller_restarted_mid_job_charges_it_exactly_once(new_site: SiteFactory) -> None:
    site = new_site()
    first = site.controller()
    job_id = site.submit(SHORT, gpus=1)
    cycle_until(first, lambda: site.state(job_id) == "running", SACCT_LAG_S)

    second = site.controller()  # a new process on the same database
    cycle_until(second, lambda: site.state(job_id) == "completed", SACCT_LAG_S)
    first.cycle()  # the old one, had it lived on, finds the job done
    second.cycle()
    assert len(site.charges()) == 1
    site.assert_charged_as_sacct_says(job_id)


def test_a_crash_after_sbatch_adopts_the_slurm_job_by_name_without_a_duplicate(
    new_site: SiteFactory,
) -> None:
    site = new_site()
    dying = site.controller(SlurmCli(CLUSTER, conf=site.cli.conf, runner=crashing(before=False)))
    job_id = site.submit(SHORT, gpus=1)
    dying.cycle()
    job = site.job(job_id)
    assert job.state == "starting" and job.backend_ref is not None
    assert SlurmRef.from_json(job.backend_ref).slurm_job_id is None
    assert len(site.squeue_ids(job_id)) == 1, "Slurm took the job; aisc lost its id"

    restarted = site.controller()
    cycle_until(restarted, lambda: site.state(job_id) == "completed", SACCT_LAG_S)
    assert len(site.sacct(job_id)) == 1, "adopted, not submitted again"
    site.assert_charged_as_sacct_says(job_id)


def test_a_crash_before_sbatch_submits_the_job_once_after_the_grace_period(
    new_site: SiteFactory,
) -> None:
    site = new_site()
    dying = site.controller(SlurmCli(CLUSTER, conf=site.cli.conf, runner=crashing(before=True)))
    job_id = site.submit(SHORT, gpus=1)
    dying.cycle()
    assert site.state(job_id) == "starting" and site.squeue_ids(job_id) == []

    soon = site.controller()
    for _ in range(3):
        soon.cycle()
    assert site.squeue_ids(job_id) == [] and site.sacct(job_id) == [], (
        "within the grace period Slurm may know the job without sacct showing it yet"
    )

    later = site.controller(clock=lambda: datetime.now(UTC) + timedelta(seconds=61))
    cycle_until(later, lambda: site.state(job_id) == "completed", SACCT_LAG_S)
    assert len(site.sacct(job_id)) == 1
    site.assert_charged_as_sacct_says(job_id)


# last in the file: it takes slurmctld away from everyone using the cluster for a while
def test_with_slurmctld_down_a_job_waits_queued_and_runs_when_it_returns(
    new_site: SiteFactory,
) -> None:
    site = new_site()
    controller = site.controller()
    env = {**os.environ, **site.env}
    job_id = site.submit(SHORT, gpus=1)
    try:
        subprocess.run([str(SCRIPT), "stop-ctld"], env=env, check=True, capture_output=True)
        controller.cycle()
        job = site.job(job_id)
        assert job.state == "queued"
        assert job.reason.startswith("waiting: Slurm is unavailable (sbatch: ")
        assert job.reason.endswith("; it will be submitted when Slurm returns")
        assert controller.status.startswith("degraded: slurmctld is unavailable")
        balance = allocations.get_allocation(site.centre.uow(), SYSTEM, site.allocation)
        assert balance.reserved_gpu_seconds == 0
    finally:
        subprocess.run([str(SCRIPT), "start-ctld"], env=env, check=True, capture_output=True)
    cycle_until(controller, lambda: site.state(job_id) == "completed", 60)
    assert controller.status == "ok"
    site.assert_charged_as_sacct_says(job_id)
