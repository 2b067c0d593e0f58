"""The Slurm controller against an in-memory Slurm (a fake runner behind the real SlurmCli), to
inject what the real cluster does rarely: refusals, outages of either daemon, lost replies,
crashes mid-submission, sacct's lag. The same flows on the real cluster: tests/slurm/test_jobs.py.
"""

from __future__ import annotations

import subprocess
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import func, select

from aisc.backends.slurm import AccountedJob, SlurmCli
from aisc.domain.model import JobState
from aisc.services import allocations, audit, jobs
from aisc.services.context import SYSTEM
from aisc.services.slurm_controller import (
    FAILURES,
    SlurmController,
    SlurmRef,
    outcome_of,
    pending_reason,
)
from aisc.services.slurm_names import SlurmNames
from aisc.store.tables import Job, JobCharge, LedgerTransaction
from tests.builders import Centre, award, build_centre
from tests.conftest import UowFactory

NAMES = SlurmNames("aisc_")
CTLD_DOWN = "Unable to contact slurm controller (connect failure)"


@dataclass
class FakeJob:
    job_id: int
    name: str
    account: str
    qos: str
    gpus: int
    minutes: int
    submit: datetime
    state: str = "PENDING"
    reason: str = "None"
    start: datetime | None = None
    elapsed: int = 0
    exit_code: str = "0:0"
    recorded: bool = True  # False: sacct's lagging row (no name yet), as the real one shows


class FakeSlurm:
    """squeue, sacct, sbatch, scancel and scontrol over a dict of jobs, with faults to order."""

    def __init__(self) -> None:
        self.jobs: dict[int, FakeJob] = {}
        self.next_id = 500
        self.down: set[str] = set()  # "slurmctld", "slurmdbd"
        self.refuse_sbatch = ""  # sbatch's error message, once
        self.lose_reply = False  # sbatch makes the job, then its reply is lost (once)
        self.crash_sbatch = False  # the controller dies before sbatch runs (once)
        self.calls: list[str] = []

    def __call__(
        self, argv: Sequence[str], env: Mapping[str, str], timeout: float
    ) -> subprocess.CompletedProcess[str]:
        command, args = Path(argv[0]).name, list(argv[1:])
        self.calls.append(command)
        if command == "scontrol" and "slurmctld" in self.down:
            return _done(1, "Slurmctld(primary) at localhost is DOWN\n", "")
        if command in ("sbatch", "squeue", "scancel") and "slurmctld" in self.down:
            return _done(1, "", f"{command}: error: {CTLD_DOWN}")
        if command == "sacct" and "slurmdbd" in self.down:
            return _done(1, "", "sacct: error: Problem talking to the database: Connection refused")
        if command == "sbatch":
            return self.sbatch(args)
        if command == "squeue":
            return _done(0, self.squeue(args), "")
        if command == "sacct":
            return _done(0, self.sacct(args), "")
        if command == "scancel":
            self.cancel(int(args[0]))
            return _done(0, "", "")
        return _done(0, "Slurmctld(primary) at localhost is UP\n", "")

    def sbatch(self, args: list[str]) -> subprocess.CompletedProcess[str]:
        if self.crash_sbatch:
            self.crash_sbatch = False
            raise RuntimeError("the controller died before sbatch ran")
        if self.refuse_sbatch:
            message, self.refuse_sbatch = self.refuse_sbatch, ""
            return _done(1, "", f"sbatch: error: Batch job submission failed: {message}")
        opts = dict(a[2:].split("=", 1) for a in args if a.startswith("--") and "=" in a)
        job = FakeJob(
            self.next_id,
            opts["job-name"],
            opts["account"],
            opts["qos"],
            int(opts["gres"].split(":")[-1]),
            int(opts["time"]),
            datetime.now(UTC),
        )
        self.jobs[job.job_id] = job
        self.next_id += 1
        if self.lose_reply:
            self.lose_reply = False
            return _done(1, "", "sbatch: error: Socket timed out on send/recv operation")
        return _done(0, f"{job.job_id}\n", "")

    def squeue(self, args: list[str]) -> str:
        wanted = _option(args, "--name")
        return "".join(
            f"{j.job_id}|{j.name}|{j.state}|{j.reason}|{j.account}|{j.qos}\n"
            for j in self.jobs.values()
            if j.state in ("PENDING", "RUNNING") and (wanted is None or j.name in wanted)
        )

    def sacct(self, args: list[str]) -> str:
        ids, wanted = _option(args, "--jobs"), _option(args, "--name")
        lines = []
        for j in self.jobs.values():
            if (ids is not None and str(j.job_id) not in ids) or (
                wanted is not None and (j.name not in wanted or not j.recorded)
            ):
                continue
            end = (
                j.start + timedelta(seconds=j.elapsed) if j.start and j.state != "RUNNING" else None
            )
            tres = f"billing=1,cpu=1,gres/gpu={j.gpus},node=1" if j.start else ""
            lines.append(
                "|".join(
                    [
                        str(j.job_id),
                        j.name if j.recorded else "allocation",
                        j.account,
                        j.qos if j.recorded else "Unknown",
                        j.state,
                        j.exit_code,
                        str(j.elapsed),
                        tres,
                        _local(j.submit),
                        _local(j.start),
                        _local(end),
                        j.reason,
                    ]
                )
            )
        return "".join(line + "\n" for line in lines)

    def cancel(self, job_id: int) -> None:
        job = self.jobs[job_id]
        job.state, job.exit_code = "CANCELLED", "0:15"

    # what the cluster does on its own
    def run(self, job_id: int, start: datetime) -> None:
        job = self.jobs[job_id]
        job.state, job.reason, job.start = "RUNNING", "None", start

    def end(
        self, job_id: int, state: str, elapsed: int, exit_code: str = "0:0", recorded: bool = True
    ) -> None:
        job = self.jobs[job_id]
        job.state, job.elapsed, job.exit_code, job.recorded = state, elapsed, exit_code, recorded


def _done(code: int, out: str, err: str) -> subprocess.CompletedProcess[str]:
    return subprocess.CompletedProcess([], code, out, err)


def _option(args: list[str], name: str) -> set[str] | None:
    for a in args:
        if a.startswith(name + "="):
            return set(a.split("=", 1)[1].split(","))
    return None


def _local(moment: datetime | None) -> str:
    """sacct prints local wall-clock time without a zone."""
    return "Unknown" if moment is None else moment.astimezone().strftime("%Y-%m-%dT%H:%M:%S")


def soon() -> datetime:
    """A start in sacct's whole seconds, after the rate card's first price took effect."""
    return datetime.now(UTC).replace(microsecond=0) + timedelta(seconds=1)


class Clock:
    def __init__(self) -> None:
        self.shift = timedelta()

    def __call__(self) -> datetime:
        return datetime.now(UTC) + self.shift


@dataclass
class World:
    centre: Centre
    allocation: int
    fake: FakeSlurm
    clock: Clock
    controller: SlurmController

    def submit(self, gpus: int = 2, limit: int = 60) -> int:
        actor = self.centre.applicants["Harbour University"]
        request = jobs.JobRequest(self.allocation, ["python", "train.py"], gpus, limit)
        return jobs.submit_job(self.centre.uow(), actor, request).id

    def job(self, job_id: int) -> Job:
        return jobs.get_job(self.centre.uow(), SYSTEM, job_id)

    def slurm_id(self, job_id: int) -> int | None:
        ref = self.job(job_id).backend_ref
        return None if ref is None else SlurmRef.from_json(ref).slurm_job_id

    def charges(self) -> list[JobCharge]:
        with self.centre.uow() as uow:
            return list(uow.session.scalars(select(JobCharge)))

    def ledger_size(self) -> int:
        with self.centre.uow() as uow:
            return uow.session.scalar(select(func.count()).select_from(LedgerTransaction)) or 0

    def balance(self) -> allocations.AllocationBalance:
        return allocations.get_allocation(self.centre.uow(), SYSTEM, self.allocation)

    def new_controller(self, fake: FakeSlurm | None = None) -> SlurmController:
        cli = SlurmCli("aisc", runner=fake or self.fake)
        home = self.controller.home
        return SlurmController(self.centre.uow, cli, NAMES, home, clock=self.clock)


@pytest.fixture
def world(uow_factory: UowFactory, tmp_path: Path) -> World:
    centre = build_centre(uow_factory)
    allocation = award(centre, "Harbour University", gpu_hours=100)
    fake, clock = FakeSlurm(), Clock()
    cli = SlurmCli("aisc", runner=fake)
    controller = SlurmController(uow_factory, cli, NAMES, tmp_path / "home", clock=clock)
    return World(centre, allocation, fake, clock, controller)


def test_a_job_is_reserved_submitted_held_run_and_charged_what_sacct_metered(
    world: World,
) -> None:
    job_id = world.submit(gpus=2, limit=90)
    report = world.controller.cycle()
    assert report.started == [job_id]
    slurm_id = world.slurm_id(job_id)
    assert slurm_id is not None
    sent = world.fake.jobs[slurm_id]
    assert (sent.name, sent.account, sent.qos, sent.gpus) == (
        f"aisc_job{job_id}",
        f"aisc_a{world.allocation}",
        f"aisc_a{world.allocation}",
        2,
    )
    # Slurm enforces whole minutes, so the hold covers what it may run: 2 GPUs x 2 minutes
    assert sent.minutes == 2 and world.job(job_id).time_limit_s == 120
    assert world.balance().reserved_gpu_seconds == 2 * 120
    assert world.job(job_id).state == "starting"

    sent.reason = "QOSGrpGRESMinutes"
    world.controller.cycle()
    assert world.job(job_id).reason.startswith("held by Slurm: the allocation's GPU-minute budget")

    start = soon()
    world.fake.run(slurm_id, start)
    world.controller.cycle()
    running = world.job(job_id)
    assert running.state == "running" and running.started_at == start

    world.fake.end(slurm_id, "COMPLETED", 37, recorded=False)  # sacct has not caught up
    world.controller.cycle()
    assert world.job(job_id).state == "running" and world.charges() == []

    world.fake.jobs[slurm_id].recorded = True
    assert world.controller.cycle().finished == [job_id]
    done = world.job(job_id)
    assert (done.state, done.exit_code, done.reason) == ("completed", 0, "")
    assert done.started_at == start and done.ended_at == start + timedelta(seconds=37)
    (charge,) = world.charges()
    assert charge.gpu_seconds == 2 * 37 and charge.charge_cents == 2 * 37  # 1 cent a GPU-second
    balance = world.balance()
    assert balance.reserved_gpu_seconds == 0 and balance.used_gpu_seconds == 74
    assert audit.verify_ledger(world.centre.uow(), SYSTEM).ok

    world.controller.cycle()
    world.new_controller().cycle()
    assert len(world.charges()) == 1
    assert world.controller.status == "ok" and world.controller.last_contact is not None


def test_a_refusal_by_sbatch_fails_the_job_and_releases_its_hold(world: World) -> None:
    job_id = world.submit()
    world.fake.refuse_sbatch = "Job violates accounting/QOS policy (job submit limit)"
    report = world.controller.cycle()
    job = world.job(job_id)
    assert report.refused == [job_id]
    assert job.state == "failed"
    assert job.reason == (
        "refused by Slurm: sbatch: sbatch: error: Batch job submission failed: "
        "Job violates accounting/QOS policy (job submit limit)"
    )
    assert world.balance().reserved_gpu_seconds == 0
    assert world.balance().available_gpu_seconds == 100 * 3600
    assert world.charges() == [] and world.controller.status == "ok"
    assert audit.verify_ledger(world.centre.uow(), SYSTEM).ok


def test_an_allocation_slurm_does_not_know_yet_leaves_its_jobs_queued(world: World) -> None:
    job_id = world.submit()
    world.fake.refuse_sbatch = "Invalid account or account/partition combination specified"
    world.controller.cycle()
    job = world.job(job_id)
    assert job.state == "queued"
    assert job.reason.startswith(f"waiting: allocation {world.allocation} is not set up in Slurm")
    assert world.balance().reserved_gpu_seconds == 0
    world.controller.cycle()
    assert world.fake.calls.count("sbatch") == 1, "the allocation is left alone for a while"
    world.clock.shift = timedelta(seconds=31)
    world.controller.cycle()
    assert world.job(job_id).state == "starting" and world.slurm_id(job_id) is not None


def test_slurmctld_down_keeps_the_job_queued_without_churning_the_ledger(world: World) -> None:
    job_id = world.submit()
    world.fake.down.add("slurmctld")
    world.controller.cycle()
    job = world.job(job_id)
    assert job.state == "queued" and job.backend_ref is None
    assert job.reason.startswith("waiting: Slurm is unavailable (")
    assert job.reason.endswith("it will be submitted when Slurm returns")
    assert world.controller.status.startswith("degraded: slurmctld is unavailable")
    assert world.balance().reserved_gpu_seconds == 0
    size = world.ledger_size()
    world.controller.cycle()
    assert world.ledger_size() == size, "no reserve and release while slurmctld stays away"
    assert world.fake.calls.count("sbatch") == 1 and world.fake.calls[-1] == "scontrol"
    assert "slurmctld is unavailable" in world.job(job_id).reason
    assert world.controller.status.startswith("degraded: slurmctld is unavailable")

    world.fake.down.clear()
    world.controller.cycle()
    assert world.job(job_id).state == "starting" and world.slurm_id(job_id) is not None
    assert world.controller.status == "ok"


def test_a_lost_sbatch_reply_is_found_by_name_and_never_submitted_twice(world: World) -> None:
    job_id = world.submit()
    world.fake.lose_reply = True
    world.controller.cycle()
    job = world.job(job_id)
    assert job.state == "starting" and world.slurm_id(job_id) is None
    assert job.reason.startswith("waiting: Slurm did not answer")
    assert world.balance().reserved_gpu_seconds == 2 * 60, "the hold stays while it may run"
    assert world.controller.status.startswith("degraded")

    world.clock.shift = timedelta(seconds=120)  # well past the grace period
    world.controller.cycle()
    (only,) = world.fake.jobs
    assert world.slurm_id(job_id) == only
    assert world.fake.calls.count("sbatch") == 1
    assert world.job(job_id).reason.endswith("(found again by its name)")


def test_a_crash_before_sbatch_is_submitted_again_only_when_slurm_surely_has_no_such_job(
    world: World,
) -> None:
    job_id = world.submit()
    world.fake.crash_sbatch = True
    world.controller.cycle()
    assert world.job(job_id).state == "starting" and world.fake.jobs == {}

    restarted = world.new_controller()
    world.clock.shift = timedelta(seconds=10)
    restarted.cycle()
    assert world.fake.calls.count("sbatch") == 1, "within the grace period sacct may still lag"

    world.clock.shift = timedelta(seconds=120)
    world.fake.down.add("slurmdbd")
    restarted.cycle()
    assert world.fake.calls.count("sbatch") == 1, "without sacct it may have run already"
    assert world.slurm_id(job_id) is None

    world.fake.down.clear()
    restarted.cycle()
    assert world.fake.calls.count("sbatch") == 2 and len(world.fake.jobs) == 1
    assert world.slurm_id(job_id) == next(iter(world.fake.jobs))
    assert world.balance().reserved_gpu_seconds == 2 * 60, "reserved once, not twice"


def test_with_sacct_away_nothing_is_settled_until_it_returns(world: World) -> None:
    job_id = world.submit()
    world.controller.cycle()
    slurm_id = world.slurm_id(job_id)
    assert slurm_id is not None
    world.fake.run(slurm_id, soon())
    world.fake.end(slurm_id, "FAILED", 12, exit_code="3:0")
    world.fake.down.add("slurmdbd")
    world.controller.cycle()
    assert world.job(job_id).state in ("starting", "running") and world.charges() == []
    assert world.controller.status.startswith("degraded: slurmdbd is unavailable")

    world.fake.down.clear()
    world.controller.cycle()
    job = world.job(job_id)
    assert (job.state, job.exit_code, job.reason) == ("failed", 3, "exited with status 3")
    assert [c.gpu_seconds for c in world.charges()] == [2 * 12]
    assert world.controller.status == "ok"


def test_with_slurmctld_away_sacct_still_meters_finished_jobs(world: World) -> None:
    job_id = world.submit()
    world.controller.cycle()
    slurm_id = world.slurm_id(job_id)
    assert slurm_id is not None
    world.fake.run(slurm_id, soon())
    world.fake.end(slurm_id, "TIMEOUT", 61, exit_code="0:15")
    world.fake.down.add("slurmctld")
    world.controller.cycle()
    job = world.job(job_id)
    assert job.state == "timeout" and job.reason == "stopped by Slurm at its time limit of 60 s"
    assert [c.gpu_seconds for c in world.charges()] == [2 * 60], "never beyond the time limit"
    assert world.controller.status.startswith("degraded: slurmctld is unavailable")


def test_cancelling_a_running_job_asks_slurm_once_and_charges_what_ran(world: World) -> None:
    job_id = world.submit()
    world.controller.cycle()
    slurm_id = world.slurm_id(job_id)
    assert slurm_id is not None
    world.fake.run(slurm_id, soon())
    world.controller.cycle()
    jobs.cancel_job(world.centre.uow(), world.centre.operator, job_id)
    world.fake.cancel = lambda i: None  # type: ignore[method-assign]  # Slurm takes a while
    world.controller.cycle()
    world.controller.cycle()
    assert world.fake.calls.count("scancel") == 1
    assert world.job(job_id).reason == "cancel requested by Olive Operator"

    world.fake.end(slurm_id, "CANCELLED", 9, exit_code="0:15")
    world.controller.cycle()
    job = world.job(job_id)
    assert (job.state, job.reason) == ("cancelled", "cancel requested by Olive Operator")
    assert [c.gpu_seconds for c in world.charges()] == [2 * 9]


def test_a_job_cancelled_while_pending_in_slurm_is_not_charged(world: World) -> None:
    job_id = world.submit()
    world.controller.cycle()
    jobs.cancel_job(world.centre.uow(), world.centre.operator, job_id)
    world.controller.cycle()  # scancel; the fake ends it at once
    world.controller.cycle()
    assert world.job(job_id).state == "cancelled"
    assert world.charges() == [] and world.balance().reserved_gpu_seconds == 0
    assert audit.verify_ledger(world.centre.uow(), SYSTEM).ok


def test_fewer_gpus_in_sacct_than_asked_are_what_is_charged(world: World) -> None:
    job_id = world.submit(gpus=2)
    world.controller.cycle()
    slurm_id = world.slurm_id(job_id)
    assert slurm_id is not None
    world.fake.jobs[slurm_id].gpus = 1
    world.fake.run(slurm_id, soon())
    world.fake.end(slurm_id, "COMPLETED", 20)
    world.controller.cycle()
    assert [c.gpu_seconds for c in world.charges()] == [20]
    assert world.job(job_id).reason == "Slurm allocated 1 GPUs for the 2 asked"


def test_queued_jobs_wait_for_quota_or_are_refused_by_a_closed_allocation(
    world: World,
) -> None:
    uow = world.centre.uow
    small = award(world.centre, "Kowloon Institute", gpu_hours=1)
    actor = world.centre.applicants["Kowloon Institute"]
    first, second = (
        jobs.submit_job(uow(), actor, jobs.JobRequest(small, ["x"], 1, 3000)).id for _ in "ab"
    )
    world.controller.cycle()
    assert world.job(first).state == "starting"
    waiting = world.job(second)
    assert waiting.state == "queued"
    assert waiting.reason.startswith("waiting for running jobs to return quota")

    queued = world.submit()
    allocations.close_allocation(uow(), world.centre.operator, world.allocation)
    world.controller.cycle()
    refused = world.job(queued)
    assert (refused.state, refused.reason) == (
        "failed",
        f"refused: allocation {world.allocation} is closed",
    )


def test_explain_and_positions_say_where_a_job_stands(world: World) -> None:
    first, second = world.submit(), world.submit()
    assert world.controller.positions() == {first: 1, second: 2}
    why = world.controller.explain(second)
    assert (why.state, why.position) == ("pending", 2)
    assert why.reason.startswith("waiting to be handed to Slurm")

    world.controller.cycle()
    assert world.controller.positions() == {}
    slurm_id = world.slurm_id(first)
    assert slurm_id is not None
    world.fake.jobs[slurm_id].reason = "Resources"
    world.controller.cycle()
    why = world.controller.explain(first)
    assert (why.state, why.reason) == (
        "pending",
        "pending in Slurm: waiting for enough GPUs to be free (Resources)",
    )
    world.fake.run(slurm_id, soon())
    world.controller.cycle()
    why = world.controller.explain(first)
    assert (why.state, why.reason) == ("running", f"running in Slurm as job {slurm_id}")
    assert world.controller.explain(99999).state == "unknown"


def _row(state: str, exit_code: int | None = 0, signal: int = 0, gpus: int = 1) -> AccountedJob:
    start = datetime(2026, 11, 25, 2, 0, tzinfo=UTC)
    return AccountedJob(
        7, "aisc_job1", "aisc_a1", "aisc_a1", state, exit_code, signal, 30, gpus,
        start, start, start + timedelta(seconds=30), "None",
    )  # fmt: skip


@pytest.mark.parametrize(
    ("row", "state", "reason", "code"),
    [
        (_row("COMPLETED"), JobState.COMPLETED, "", 0),
        (_row("FAILED", 3), JobState.FAILED, "exited with status 3", 3),
        (_row("FAILED", 0, 9), JobState.FAILED, "killed by signal 9", -9),
        (_row("OUT_OF_MEMORY", 0, 9), JobState.FAILED, FAILURES["OUT_OF_MEMORY"], None),
        (_row("NODE_FAIL"), JobState.FAILED, "its node failed (NODE_FAIL)", None),
        (_row("TIMEOUT", 0, 15), JobState.TIMEOUT, "stopped by Slurm at its time limit of 60 s",
         None),
        (_row("CANCELLED", 0, 15), JobState.CANCELLED, "cancelled in Slurm, outside aisc", None),
        (_row("PREEMPTED"), JobState.CANCELLED, "preempted by Slurm", None),
    ],
)  # fmt: skip
def test_sacct_states_become_aisc_outcomes(
    row: AccountedJob, state: JobState, reason: str, code: int | None
) -> None:
    job = Job(id=1, gpus=1, time_limit_s=60, reason="", cancel_requested=False)
    outcome = outcome_of(row, job, datetime.now(UTC))
    assert (outcome.state, outcome.reason, outcome.exit_code) == (state, reason, code)
    assert outcome.ran and outcome.ended_at == row.end


def test_a_job_slurm_never_gave_gpus_to_is_not_charged() -> None:
    job = Job(
        id=1, gpus=1, time_limit_s=60, reason="cancel requested by Ann", cancel_requested=True
    )
    outcome = outcome_of(_row("CANCELLED", gpus=0), job, datetime.now(UTC))
    assert not outcome.ran and outcome.reason == "cancel requested by Ann"


def test_squeue_reasons_read_as_plain_words() -> None:
    assert pending_reason("QOSGrpGRESMinutes") == (
        "held by Slurm: the allocation's GPU-minute budget cannot cover this job's GPUs x time "
        "limit (QOSGrpGRESMinutes)"
    )
    assert pending_reason("ReqNodeNotAvail, UnavailableNodes:gpu1").startswith(
        "pending in Slurm: the nodes it needs are down"
    )
    assert pending_reason("PartitionDown") == "pending in Slurm: PartitionDown"
