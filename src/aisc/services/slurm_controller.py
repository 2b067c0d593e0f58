"""The controller in Slurm mode: Slurm schedules and enforces; aisc governs and accounts.

Each cycle (1) asks Slurm to cancel the jobs users cancelled; (2) polls squeue for every job
handed to Slurm, keeping its state and Slurm's reason in plain words, and meters each one that
left the queue from its final sacct row, charging exactly sacct's `AllocTRES gres/gpu x
ElapsedRaw`; (3) finds again, by name, jobs a crash left between the reservation and sbatch;
(4) reserves and submits queued jobs, oldest first.

Exactly once: a job is reserved and marked STARTING (with its Slurm job name) in one
transaction before sbatch runs, and settled in one transaction with a unique charge row. A job
whose sbatch outcome is unknown is looked up by name in squeue and sacct and submitted again
only when both answer without it and the attempt is older than a grace period longer than
sacct's lag. While slurmctld or slurmdbd is away the cycle does what the other allows and
reports `status = "degraded: ..."`; nothing is lost or charged twice.
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import select, update

from aisc.backends.slurm import (
    AccountedJob,
    QueuedJob,
    SlurmCli,
    SlurmError,
    SlurmUnavailable,
    Submission,
)
from aisc.domain.errors import Conflict
from aisc.domain.model import JobState
from aisc.scheduler.interface import Explanation
from aisc.services.allocations import check_open
from aisc.services.context import Clock, utcnow
from aisc.services.controller import ACTIVE, CycleReport, Outcome, waits_for_quota
from aisc.services.metering import release_job, reserve_job, settle_job
from aisc.services.metrics import cycle_histogram
from aisc.services.slurm_names import SlurmNames
from aisc.store.tables import Allocation, Job
from aisc.store.uow import UnitOfWork

log = logging.getLogger(__name__)

# longer than sacct's lag (a few seconds), so a job sbatch made is never missed and submitted again
LAUNCH_GRACE_S = 60
# an old sacct row with the same name (a reinstalled centre) is older than the aisc job itself
CLOCK_SKEW_S = 60
MAX_SUBMITS_PER_CYCLE = 100  # keeps a cycle short, so metering never waits behind a deep queue
SETUP_RETRY_S = 30  # how long an allocation Slurm does not know yet is left before trying again
PING_EVERY_S = 30  # an idle controller still notices Slurm going away

# squeue's reasons a job waits, in words a grantee understands
PENDING_REASONS = {
    "None": "pending in Slurm: waiting for its scheduler to look at the job",
    "Priority": "pending in Slurm: higher-priority jobs go first (Priority)",
    "Resources": "pending in Slurm: waiting for enough GPUs to be free (Resources)",
    "QOSGrpGRESMinutes": "held by Slurm: the allocation's GPU-minute budget cannot cover this "
    "job's GPUs x time limit (QOSGrpGRESMinutes)",
    "QOSGrpGRESRunMinutes": "held by Slurm: the allocation's running jobs already hold as many "
    "GPU-minutes as it may have running at once (QOSGrpGRESRunMinutes)",
    "AssocGrpGRESMinutes": "held by Slurm: the account's GPU-minute limit is used up "
    "(AssocGrpGRESMinutes)",
    "QOSGrpSubmitJobsLimit": "held by Slurm: the allocation takes no more jobs "
    "(QOSGrpSubmitJobsLimit)",
    "ReqNodeNotAvail": "pending in Slurm: the nodes it needs are down, drained or reserved "
    "(ReqNodeNotAvail)",
    "BeginTime": "pending in Slurm: its start time has not come yet (BeginTime)",
    "Dependency": "pending in Slurm: waiting for the jobs it depends on (Dependency)",
    "JobHeldAdmin": "held by Slurm: an administrator holds it (JobHeldAdmin)",
    "JobHeldUser": "held by Slurm: it is on hold (JobHeldUser)",
}
RUNNING_STATES = frozenset({"RUNNING", "COMPLETING", "CONFIGURING", "SUSPENDED", "STOPPED"})
FAILURES = {
    "NODE_FAIL": "its node failed (NODE_FAIL)",
    "BOOT_FAIL": "its node failed to boot (BOOT_FAIL)",
    "OUT_OF_MEMORY": "it ran out of memory (OUT_OF_MEMORY)",
}


@dataclass(frozen=True)
class SlurmRef:
    """A job's handle in Slurm, stored as JSON in `jobs.backend_ref`."""

    name: str
    slurm_job_id: int | None
    attempted_at: datetime  # when it was reserved for sbatch (or last handed to it)
    cancel_sent: bool = False

    def to_json(self) -> str:
        return json.dumps(
            {
                "slurm_job_id": self.slurm_job_id,
                "name": self.name,
                "attempted_at": self.attempted_at.isoformat(),
                "cancel_sent": self.cancel_sent,
            },
            sort_keys=True,
        )

    @classmethod
    def from_json(cls, text: str) -> SlurmRef:
        data: Any = json.loads(text)
        slurm_id = data.get("slurm_job_id")
        return cls(
            name=str(data["name"]),
            slurm_job_id=int(slurm_id) if slurm_id is not None else None,
            attempted_at=datetime.fromisoformat(data["attempted_at"]),
            cancel_sent=bool(data.get("cancel_sent", False)),
        )


def pending_reason(squeue_reason: str) -> str:
    """squeue's reason ("ReqNodeNotAvail, UnavailableNodes:gpu1" too) in plain words."""
    key = squeue_reason.split(",")[0].strip() or "None"
    return PENDING_REASONS.get(key, f"pending in Slurm: {squeue_reason}")


def outcome_of(row: AccountedJob, job: Job, now: datetime) -> Outcome:
    """How a job ended, from its final sacct row. `ran` when Slurm allocated GPUs for some time."""
    start = _utc(row.start)
    ended = start + timedelta(seconds=row.elapsed_s) if start else _utc(row.end) or now
    ran = start is not None and row.elapsed_s > 0 and min(row.gpus, job.gpus) > 0
    signalled = row.exit_code is None or (row.exit_code == 0 and row.signal > 0)
    code = -row.signal if signalled else row.exit_code  # as the local executor: -N for signal N
    if row.state == "COMPLETED":
        return Outcome(JobState.COMPLETED, "", ended, code, ran)
    if row.state == "FAILED":
        why = f"killed by signal {row.signal}" if signalled else f"exited with status {code}"
        return Outcome(JobState.FAILED, why, ended, code, ran)
    if row.state in FAILURES:
        return Outcome(JobState.FAILED, FAILURES[row.state], ended, None, ran)
    if row.state in ("TIMEOUT", "DEADLINE"):
        why = f"stopped by Slurm at its time limit of {job.time_limit_s} s"
        return Outcome(JobState.TIMEOUT, why, ended, None, ran)
    if row.state == "PREEMPTED":
        return Outcome(JobState.CANCELLED, "preempted by Slurm", ended, None, ran)
    why = job.reason if job.cancel_requested else "cancelled in Slurm, outside aisc"
    return Outcome(JobState.CANCELLED, why, ended, None, ran)


class SlurmController:
    def __init__(
        self,
        uow_factory: Callable[[], UnitOfWork],
        cli: SlurmCli,
        names: SlurmNames,
        home: Path,
        gpus_per_node: int = 8,
        partition: str | None = None,
        clock: Clock = utcnow,
    ) -> None:
        self.uow = uow_factory
        self.cli = cli
        self.names = names
        self.home = Path(home)
        self.gpus_per_node = gpus_per_node
        self.partition = partition
        self.clock = clock
        # one cycle at a time; explain() and positions() read the database and need no lock
        self.lock = threading.RLock()
        self.status = "ok"
        self.last_contact: datetime | None = None
        self._problems: dict[str, str] = {}  # this cycle's outages, by daemon
        self._called = False  # whether this cycle reached Slurm at all
        self._not_set_up: dict[int, datetime] = {}  # allocation -> when to try it again
        self.cycle_seconds = cycle_histogram()  # served at /metrics

    # -- the public surface the runtime and the API use ----------------------------------------

    def cycle(self) -> CycleReport:
        with self.lock, self.cycle_seconds.time():
            report = CycleReport()
            ctld_was_down = "slurmctld" in self._problems
            self._problems, self._called = {}, False
            if ctld_was_down:
                self._ping()  # one slow call tells whether to try the queue and sbatch at all
            active = self._active_jobs()
            self._cancel(active)
            submitted = [j for j in active if _ref(j).slurm_job_id is not None]
            self._poll(submitted, report)
            self._recover([j for j in active if _ref(j).slurm_job_id is None], report)
            self._submit(report)
            if not self._called and self._stale():
                self._ping()
            self._report_status()
            return report

    def explain(self, job_id: int) -> Explanation:
        with self.uow() as uow:
            job = uow.session.get(Job, job_id)
        if job is None or JobState(job.state).is_final:
            return Explanation(job_id, "unknown", None, None, "not pending or running here")
        if job.state == JobState.QUEUED.value:
            why = job.reason or (
                "waiting to be handed to Slurm: queued jobs are submitted oldest first, every cycle"
            )
            return Explanation(job_id, "pending", self.positions().get(job_id), None, why)
        state = "running" if job.state == JobState.RUNNING.value else "pending"
        return Explanation(job_id, state, None, None, job.reason or "being handed to Slurm")

    def positions(self) -> dict[int, int]:
        """Queued jobs in the order they will be handed to Slurm (then Slurm orders them)."""
        with self.uow() as uow:
            ids = uow.session.scalars(
                select(Job.id)
                .where(Job.state == JobState.QUEUED.value)
                .order_by(Job.submitted_at, Job.id)
            ).all()
        return {job_id: i for i, job_id in enumerate(ids, start=1)}

    # -- talking to Slurm: every call records contact or an outage ----------------------------

    def _outage(self, daemon: str, exc: SlurmError) -> None:
        self._called = True
        self._problems.setdefault(daemon, f"{daemon} is unavailable ({_short(exc)})")
        log.warning("%s is unavailable: %s", daemon, exc)

    def _contact(self) -> None:
        self._called = True
        self.last_contact = self.clock()

    @property
    def _ctld_down(self) -> bool:
        return "slurmctld" in self._problems

    def _ping(self) -> None:
        try:
            self.cli.ping()
        except SlurmError as exc:  # "is DOWN" with a failing exit status is a refusal in form only
            self._outage("slurmctld", exc)
        else:
            self._contact()

    def _stale(self) -> bool:
        since = self.last_contact
        return since is None or (self.clock() - since).total_seconds() >= PING_EVERY_S

    def _report_status(self) -> None:
        if self._problems:
            self.status = "degraded: " + "; ".join(self._problems.values())
        elif self._called:
            self.status = "ok"

    def _squeue(self, names: Sequence[str]) -> list[QueuedJob] | None:
        """squeue's rows for these job names; None while slurmctld cannot be asked."""
        if self._ctld_down:
            return None
        try:
            rows = self.cli.queue(names=names)
        except SlurmUnavailable as exc:
            self._outage("slurmctld", exc)
            return None
        self._contact()
        return rows

    def _sacct(
        self, job_ids: Sequence[int] = (), names: Sequence[str] = ()
    ) -> list[AccountedJob] | None:
        """sacct's rows; None while slurmdbd cannot be asked."""
        try:
            rows = self.cli.accounting(job_ids=job_ids, names=names)
        except SlurmUnavailable as exc:
            self._outage("slurmdbd", exc)
            return None
        self._contact()
        return rows

    # -- 1. cancel ---------------------------------------------------------------------------

    def _active_jobs(self) -> list[Job]:
        with self.uow() as uow:
            return list(
                uow.session.scalars(
                    select(Job)
                    .where(Job.state.in_(ACTIVE), Job.backend == "slurm")
                    .order_by(Job.id)
                )
            )

    def _cancel(self, active: list[Job]) -> None:
        """scancel what users cancelled; the poll then meters what ran, as for any job."""
        for job in active:
            ref = _ref(job)
            if not job.cancel_requested or ref.slurm_job_id is None or ref.cancel_sent:
                continue
            if self._ctld_down:
                return
            try:
                self.cli.cancel(ref.slurm_job_id)
            except SlurmUnavailable as exc:
                self._outage("slurmctld", exc)
                return
            except SlurmError as exc:  # it has already ended: sacct has the rest
                log.info("scancel of job %s: %s", job.id, exc)
            self._contact()
            self._store_ref(job.id, replace(ref, cancel_sent=True))

    # -- 2. poll and meter -------------------------------------------------------------------

    def _poll(self, jobs: list[Job], report: CycleReport) -> None:
        if not jobs:
            return
        by_id = {_slurm_id(j): j for j in jobs}
        queued = self._squeue([_ref(j).name for j in jobs])
        in_queue = {} if queued is None else {q.job_id: q for q in queued if q.job_id in by_id}
        self._note_queue_states([(by_id[i], q) for i, q in in_queue.items()])
        # with slurmctld away every job may have ended: sacct still says which did
        gone = [i for i in by_id if i not in in_queue]
        unstarted = [i for i, q in in_queue.items() if _runs(q) and by_id[i].started_at is None]
        rows = self._sacct(job_ids=gone + unstarted) if gone or unstarted else []
        if rows is None:
            return
        final = {r.job_id: r for r in rows if r.final}
        self._note_starts(
            {by_id[r.job_id].id: r.start for r in rows if r.job_id in unstarted and r.start}
        )
        for slurm_id in gone:
            row = final.get(slurm_id)
            job = by_id[slurm_id]
            # sacct lags: until it has the job's name its row is not the whole record yet
            if row is None or row.name != _ref(job).name:
                continue
            try:
                if self._finish(job.id, row):
                    report.finished.append(job.id)
            except Exception:  # one job's trouble must not stop the others being metered
                log.exception("could not meter job %s; will retry next cycle", job.id)

    def _note_queue_states(self, seen: list[tuple[Job, QueuedJob]]) -> None:
        """STARTING while Slurm holds a job pending (with its reason), RUNNING once it runs."""
        changes = [(job, *_queue_state(q)) for job, q in seen]
        changes = [c for c in changes if _differs(*c)]
        if not changes:
            return
        now = self.clock()
        with self.uow() as uow:
            for stale, state, reason in changes:
                job = uow.session.get(Job, stale.id)
                if job is None or job.state not in ACTIVE:
                    continue
                job.state = state.value
                if not job.cancel_requested:  # keep who asked for the cancel in view
                    job.reason = reason
                if state == JobState.RUNNING and job.started_at is None:
                    job.started_at = now  # until sacct has its start; settled from sacct anyway
            uow.commit()

    def _note_starts(self, starts: dict[int, datetime]) -> None:
        """Running jobs' start times from sacct (job id -> start)."""
        if not starts:
            return
        with self.uow() as uow:
            for job_id, start in starts.items():
                job = uow.session.get(Job, job_id)
                if job is not None and job.state in ACTIVE:
                    job.started_at = _utc(start)
            uow.commit()

    def _finish(self, job_id: int, row: AccountedJob) -> bool:
        """Charge sacct's GPUs x ElapsedRaw (or release) and record the end, in one transaction;
        False if it was done already."""
        now = self.clock()
        with self.uow() as uow:
            uow.ledger.lock()
            job = uow.session.get(Job, job_id)
            if job is None or JobState(job.state).is_final:
                return False  # another controller got there first
            allocation = uow.session.get(Allocation, job.allocation_id)
            assert allocation is not None
            outcome = outcome_of(row, job, now)
            reason = outcome.reason
            if outcome.ran:
                if row.gpus != job.gpus:
                    # charged for what Slurm allocated, never beyond what was asked and reserved
                    note = f"Slurm allocated {row.gpus} GPUs for the {job.gpus} asked"
                    reason = "; ".join(r for r in (reason, note) if r)
                    job.gpus = min(row.gpus, job.gpus)
                job.started_at = _utc(row.start)
                settle_job(uow, job, allocation, outcome.ended_at)
            else:
                release_job(uow, job, allocation, outcome.ended_at)
            job.state = outcome.state.value
            job.reason = reason
            job.exit_code = outcome.exit_code
            job.ended_at = outcome.ended_at
            uow.commit()
        log.info("job %s %s %s", job_id, outcome.state.value, reason)
        return True

    # -- 3. jobs a crash left between the reservation and sbatch --------------------------------

    def _recover(self, jobs: list[Job], report: CycleReport) -> None:
        """Adopt the Slurm job of the same name; submit again only when Slurm surely has none."""
        if not jobs:
            return
        names = [_ref(j).name for j in jobs]
        queued = self._squeue(names)
        found = {q.name: q.job_id for q in queued or []}
        missing = [j for j in jobs if _ref(j).name not in found]
        rows = self._sacct(names=[_ref(j).name for j in missing]) if missing else []
        for job in jobs:
            ref = _ref(job)
            slurm_id = found.get(ref.name) or _accounted_id(rows or [], job)
            if slurm_id is not None:
                why = f"submitted to Slurm as job {slurm_id} (found again by its name)"
                self._store_ref(job.id, replace(ref, slurm_job_id=slurm_id), why)
                log.warning("job %s: adopted Slurm job %s found by name", job.id, slurm_id)
            elif queued is None or rows is None:
                continue  # one of them could not be asked: it may still exist, so wait
            elif (self.clock() - ref.attempted_at).total_seconds() < LAUNCH_GRACE_S:
                continue  # too recent: sacct may not show it yet
            elif job.cancel_requested:
                self._end_unsubmitted(job.id, JobState.CANCELLED, job.reason)
                report.finished.append(job.id)
            elif not self._hand_over(job.id, report):
                return

    # -- 4. reserve and submit queued jobs ----------------------------------------------------

    def _submit(self, report: CycleReport) -> None:
        now = self.clock()
        self._not_set_up = {a: t for a, t in self._not_set_up.items() if t > now}
        with self.uow() as uow:
            queued = uow.session.execute(
                select(Job.id, Job.allocation_id)
                .where(Job.state == JobState.QUEUED.value)
                .order_by(Job.submitted_at, Job.id)
            ).all()
        if self._ctld_down:
            if queued:
                self._set_queued_reason(self._problems["slurmctld"])
            return
        handed = 0
        for job_id, allocation_id in queued:
            if handed >= MAX_SUBMITS_PER_CYCLE:
                return
            if allocation_id in self._not_set_up or not self._reserve(job_id, report):
                continue
            handed += 1
            if not self._hand_over(job_id, report):
                return

    def _reserve(self, job_id: int, report: CycleReport) -> bool:
        """Hold the job's quota and mark it STARTING with its Slurm name, in one transaction."""
        now = self.clock()
        with self.uow() as uow:
            uow.ledger.lock()
            job = uow.session.get(Job, job_id)
            if job is None or job.state != JobState.QUEUED.value:
                return False
            allocation = uow.session.get(Allocation, job.allocation_id)
            assert allocation is not None
            # Slurm enforces whole minutes: hold (and later allow) what it will let the job run
            job.time_limit_s = -(-job.time_limit_s // 60) * 60
            try:
                check_open(allocation, now)
                reserve_job(uow, job, allocation, now)
            except Conflict as exc:  # OverQuota is a Conflict too
                refusal = exc
            else:
                job.state = JobState.STARTING.value
                job.backend = "slurm"
                job.backend_ref = SlurmRef(self.names.job_name(job.id), None, now).to_json()
                job.reason = "being handed to Slurm"
                uow.commit()
                return True
        self._refuse_or_wait(job_id, refusal, report)
        return False

    def _refuse_or_wait(self, job_id: int, refusal: Conflict, report: CycleReport) -> None:
        if waits_for_quota(self.uow(), job_id, refusal):
            return
        with self.uow() as uow:
            job = uow.session.get(Job, job_id)
            assert job is not None
            job.state = JobState.FAILED.value
            job.reason = f"refused: {refusal.detail}"
            job.ended_at = self.clock()
            uow.commit()
        report.refused.append(job_id)

    def _hand_over(self, job_id: int, report: CycleReport) -> bool:
        """sbatch a reserved job and store its Slurm id. False: stop submitting this cycle."""
        with self.uow() as uow:
            job = uow.session.get(Job, job_id)
            assert job is not None
        ref = _ref(job)
        try:
            slurm_id = self.cli.submit(self._submission(job, ref.name))
        except SlurmUnavailable as exc:
            self._outage("slurmctld", exc)
            if _never_arrived(exc):
                self._requeue(
                    job_id,
                    f"waiting: Slurm is unavailable ({_short(exc)}); it will be "
                    "submitted when Slurm returns",
                )
            else:  # the reply may be what was lost: find the job by name before trying again
                reason = (
                    f"waiting: Slurm did not answer ({_short(exc)}); the job is looked up "
                    "by name before it is submitted again"
                )
                self._store_ref(job_id, replace(ref, attempted_at=self.clock()), reason)
            return False
        except SlurmError as exc:
            self._contact()
            if _not_set_up(exc):
                self._not_set_up[job.allocation_id] = self.clock() + timedelta(
                    seconds=SETUP_RETRY_S
                )
                self._requeue(
                    job_id,
                    f"waiting: allocation {job.allocation_id} is not set up "
                    f"in Slurm yet ({_short(exc)}); the account sync creates it",
                )
            else:
                self._end_unsubmitted(job_id, JobState.FAILED, f"refused by Slurm: {_short(exc)}")
                report.refused.append(job_id)
            return True
        except Exception:  # e.g. the process died mid-call: left STARTING, found by name later
            log.exception("submitting job %s failed; it will be looked up by name", job_id)
            return False
        self._contact()
        self._store_ref(
            job_id, replace(ref, slurm_job_id=slurm_id), f"submitted to Slurm as job {slurm_id}"
        )
        report.started.append(job_id)
        return True

    def _submission(self, job: Job, name: str) -> Submission:
        # the layout of the local executor, so `aisc logs` reads Slurm's output the same way
        workdir = self.home / "jobs" / str(job.id)
        return Submission(
            name=name,
            argv=list(job.argv),
            account=self.names.allocation_account(job.allocation_id),
            qos=self.names.allocation_qos(job.allocation_id),
            gpus=job.gpus,
            gpus_per_node=self.gpus_per_node,
            time_limit_s=job.time_limit_s,
            workdir=workdir,
            stdout=workdir / "stdout.log",
            stderr=workdir / "stderr.log",
            env={"AISC_JOB_ID": str(job.id), "AISC_ALLOCATION_ID": str(job.allocation_id)},
            partition=self.partition,
        )

    # -- small database writes ----------------------------------------------------------------

    def _store_ref(self, job_id: int, ref: SlurmRef, reason: str | None = None) -> None:
        with self.uow() as uow:
            job = uow.session.get(Job, job_id)
            if job is None or job.state not in ACTIVE:
                return
            job.backend_ref = ref.to_json()
            if reason is not None and not job.cancel_requested:
                job.reason = reason
            uow.commit()

    def _requeue(self, job_id: int, reason: str) -> None:
        """Back to the queue with its hold released: Slurm surely never got it."""
        with self.uow() as uow:
            uow.ledger.lock()
            job = uow.session.get(Job, job_id)
            if job is None or job.state not in ACTIVE:
                return
            allocation = uow.session.get(Allocation, job.allocation_id)
            assert allocation is not None
            release_job(uow, job, allocation, self.clock())
            job.state = JobState.QUEUED.value
            job.backend = job.backend_ref = job.started_at = None
            job.reason = reason
            uow.commit()

    def _end_unsubmitted(self, job_id: int, state: JobState, reason: str) -> None:
        """End a job Slurm never ran: its hold is released, nothing is charged."""
        now = self.clock()
        with self.uow() as uow:
            uow.ledger.lock()
            job = uow.session.get(Job, job_id)
            if job is None or job.state not in ACTIVE:
                return
            allocation = uow.session.get(Allocation, job.allocation_id)
            assert allocation is not None
            release_job(uow, job, allocation, now)
            job.state = state.value
            job.reason = reason
            job.ended_at = now
            uow.commit()

    def _set_queued_reason(self, problem: str) -> None:
        reason = f"waiting: {problem}; it will be submitted when Slurm returns"
        with self.uow() as uow:
            uow.session.execute(
                update(Job).where(Job.state == JobState.QUEUED.value).values(reason=reason)
            )
            uow.commit()


def _ref(job: Job) -> SlurmRef:
    assert job.backend_ref is not None
    return SlurmRef.from_json(job.backend_ref)


def _slurm_id(job: Job) -> int:
    slurm_id = _ref(job).slurm_job_id
    assert slurm_id is not None
    return slurm_id


def _differs(job: Job, state: JobState, reason: str) -> bool:
    # a cancelled job keeps its reason (who asked), so only its state can change
    return job.state != state.value or (not job.cancel_requested and job.reason != reason)


def _runs(q: QueuedJob) -> bool:
    return q.state in RUNNING_STATES


def _queue_state(q: QueuedJob) -> tuple[JobState, str]:
    if q.state == "SUSPENDED":
        return JobState.RUNNING, f"suspended by Slurm (job {q.job_id})"
    if _runs(q):
        return JobState.RUNNING, f"running in Slurm as job {q.job_id}"
    return JobState.STARTING, pending_reason(q.reason)


def _accounted_id(rows: list[AccountedJob], job: Job) -> int | None:
    """The Slurm job sacct knows under this job's name, submitted after the aisc job was."""
    name = _ref(job).name
    earliest = job.submitted_at - timedelta(seconds=CLOCK_SKEW_S)
    ids = [r.job_id for r in rows if r.name == name and (r.submit is None or r.submit >= earliest)]
    return min(ids) if ids else None


def _never_arrived(exc: SlurmUnavailable) -> bool:
    """sbatch could not connect at all (so no job was made), as opposed to a lost reply."""
    text = str(exc).lower()
    return any(m in text for m in ("connect failure", "connection refused", "is not installed"))


def _not_set_up(exc: SlurmError) -> bool:
    """Slurm does not know the allocation's account or QOS (yet): the sync has not run."""
    text = str(exc).lower()
    return "invalid account" in text or "invalid qos" in text


def _short(exc: Exception) -> str:
    text = " ".join(str(exc).split())
    return text if len(text) <= 200 else text[:197] + "..."


def _utc(moment: datetime | None) -> datetime | None:
    return None if moment is None else moment.astimezone(UTC)
