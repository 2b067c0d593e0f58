"""Slurm's own commands, run and parsed: sacctmgr for accounts, users and QOS; sbatch, squeue,
sacct and scancel for jobs. Nothing here knows about aisc's database; the services decide what
to ask. Every call either returns parsed rows or raises:

- `SlurmUnavailable` when slurmctld or slurmdbd cannot be reached (an outage: retry later);
- `SlurmError` when Slurm answered and refused (a bad request: report it).

`run` is the one place a process starts, so tests can inject faults next to the real cluster.
"""

from __future__ import annotations

import os
import shlex
import subprocess
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from aisc.backends.inventory import Node as InventoryNode

# what Slurm's commands print when a daemon is down or unreachable
UNAVAILABLE_MARKERS = (
    "unable to contact slurm controller",
    "slurm_persist_conn_open",
    "connection refused",
    "socket timed out",
    "unable to connect to database",
    "problem talking to the database",
    "slurmdbd",
    "zero bytes were transmitted",
    "communications connection failure",
)
# sacct's states of a job that will not change again
FINAL_STATES = frozenset(
    {
        "BOOT_FAIL",
        "CANCELLED",
        "COMPLETED",
        "DEADLINE",
        "FAILED",
        "NODE_FAIL",
        "OUT_OF_MEMORY",
        "PREEMPTED",
        "TIMEOUT",
    }
)

Runner = Callable[[Sequence[str], Mapping[str, str], float], subprocess.CompletedProcess[str]]


class SlurmError(Exception):
    """Slurm answered and refused; str() is its message."""


class SlurmUnavailable(SlurmError):
    """slurmctld or slurmdbd could not be reached; the same call may work later."""


def run_process(
    argv: Sequence[str], env: Mapping[str, str], timeout: float
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        list(argv), env=dict(env), capture_output=True, text=True, timeout=timeout, check=False
    )


@dataclass(frozen=True)
class Association:
    account: str
    user: str  # "" for the account's own association
    parent: str  # "" for a user association (its account is the parent)
    fairshare: str  # as sacctmgr prints it ("1", "parent", ...)
    qos: tuple[str, ...]
    default_qos: str


@dataclass(frozen=True)
class Account:
    name: str
    description: str
    organization: str


@dataclass(frozen=True)
class Qos:
    name: str
    flags: tuple[str, ...]
    grp_tres_mins: dict[str, int]
    grp_tres_run_mins: dict[str, int]
    grp_submit_jobs: int | None


@dataclass(frozen=True)
class QueuedJob:
    """A job as squeue shows it: still pending or running."""

    job_id: int
    name: str
    state: str  # PENDING, RUNNING, COMPLETING, ...
    reason: str  # why it waits (None when it does not)
    account: str
    qos: str


@dataclass(frozen=True)
class AccountedJob:
    """A job as sacct shows it (the allocation line, -X)."""

    job_id: int
    name: str
    account: str
    qos: str
    state: str  # the first word: "CANCELLED by 0" -> CANCELLED
    exit_code: int | None  # the script's status; None when it was killed by a signal
    signal: int
    elapsed_s: int
    gpus: int  # gres/gpu of AllocTRES (0 before the job is allocated)
    submit: datetime | None
    start: datetime | None
    end: datetime | None
    reason: str

    @property
    def final(self) -> bool:
        return self.state in FINAL_STATES

    @property
    def gpu_seconds(self) -> int:
        return self.gpus * self.elapsed_s


@dataclass(frozen=True)
class Submission:
    """What sbatch is asked to run: argv, run without a shell, under an account and QOS."""

    name: str
    argv: Sequence[str]
    account: str
    qos: str
    gpus: int
    gpus_per_node: int
    time_limit_s: int
    workdir: Path
    stdout: Path
    stderr: Path
    env: Mapping[str, str]
    partition: str | None = None


class SlurmCli:
    """Slurm's commands for one cluster. `conf` is SLURM_CONF (None: Slurm's default)."""

    def __init__(
        self,
        cluster: str,
        conf: str | None = None,
        bin_dir: str | None = None,
        timeout_s: float = 30.0,
        runner: Runner = run_process,
    ) -> None:
        self.cluster = cluster
        self.conf = conf
        self.bin_dir = bin_dir
        self.timeout_s = timeout_s
        self.runner = runner

    # -- running a command -------------------------------------------------------------------

    def run(self, command: str, *args: str) -> str:
        """Run one Slurm command; its stdout, or SlurmUnavailable / SlurmError."""
        program = str(Path(self.bin_dir) / command) if self.bin_dir else command
        env = dict(os.environ)
        if self.conf:
            env["SLURM_CONF"] = self.conf
        try:
            done = self.runner([program, *args], env, self.timeout_s)
        except FileNotFoundError as exc:
            raise SlurmUnavailable(f"{command} is not installed here ({exc.filename})") from exc
        except subprocess.TimeoutExpired as exc:
            raise SlurmUnavailable(f"{command} did not answer within {exc.timeout:.0f} s") from exc
        message = " ".join((done.stderr or "").split()) or " ".join((done.stdout or "").split())
        if done.returncode != 0:
            if any(marker in message.lower() for marker in UNAVAILABLE_MARKERS):
                raise SlurmUnavailable(f"{command}: {message}")
            raise SlurmError(f"{command}: {message or f'exit status {done.returncode}'}")
        return done.stdout

    def sacctmgr(self, *args: str) -> str:
        out = self.run("sacctmgr", "-i", "-n", "-P", *args)
        # sacctmgr exits 0 even when the database is down, saying so on stdout
        if any(marker in out.lower() for marker in UNAVAILABLE_MARKERS[4:6]):
            raise SlurmUnavailable(f"sacctmgr: {' '.join(out.split())}")
        return out

    # -- accounts, users and QOS -------------------------------------------------------------

    def associations(self) -> list[Association]:
        out = self.sacctmgr(
            "show",
            "assoc",
            f"cluster={self.cluster}",
            "format=Account,User,ParentName,Fairshare,QOS,DefaultQOS",
        )
        rows = []
        for fields in _rows(out, 6):
            account, user, parent, fairshare, qos, default_qos = fields
            rows.append(
                Association(
                    account=account,
                    user=user,
                    parent=parent,
                    fairshare=fairshare,
                    qos=tuple(sorted(q for q in qos.split(",") if q)),
                    default_qos=default_qos,
                )
            )
        return rows

    def accounts(self) -> list[Account]:
        out = self.sacctmgr("show", "account", "format=Account,Descr,Org")
        return [Account(name, descr, org) for name, descr, org in _rows(out, 3)]

    def qos(self) -> list[Qos]:
        out = self.sacctmgr(
            "show", "qos", "format=Name,Flags,GrpTRESMins,GrpTRESRunMins,GrpSubmitJobs"
        )
        return [
            Qos(
                name=name,
                flags=tuple(sorted(f for f in flags.split(",") if f)),
                grp_tres_mins=parse_tres(mins),
                grp_tres_run_mins=parse_tres(run_mins),
                grp_submit_jobs=int(submit) if submit.isdigit() else None,
            )
            for name, flags, mins, run_mins, submit in _rows(out, 5)
        ]

    def add_account(
        self, name: str, parent: str, fairshare: int, description: str, organization: str
    ) -> None:
        self.sacctmgr(
            "add",
            "account",
            name,
            f"cluster={self.cluster}",
            f"parent={parent}",
            f"fairshare={fairshare}",
            f"description={sacctmgr_value(description)}",
            f"organization={sacctmgr_value(organization)}",
        )

    def modify_account(self, name: str, **fields: str | int) -> None:
        settings = [f"{key}={sacctmgr_value(str(value))}" for key, value in fields.items()]
        where = ["where", f"name={name}", f"cluster={self.cluster}"]
        self.sacctmgr("modify", "account", *where, "set", *settings)

    def delete_account(self, name: str) -> None:
        # the account itself, not only its association on this cluster (which would leave the
        # account record behind)
        self._delete("account", "where", f"name={name}")

    def add_user(self, user: str, account: str, qos: str) -> None:
        self.sacctmgr(
            "add",
            "user",
            user,
            f"account={account}",
            f"cluster={self.cluster}",
            f"qos={qos}",
            f"defaultqos={qos}",
        )

    def modify_user(self, user: str, account: str, **fields: str) -> None:
        settings = [f"{key}={value}" for key, value in fields.items()]
        self.sacctmgr(
            "modify",
            "user",
            "where",
            f"name={user}",
            f"account={account}",
            f"cluster={self.cluster}",
            "set",
            *settings,
        )

    def remove_user(self, user: str, account: str) -> None:
        self._delete(
            "user", "where", f"name={user}", f"account={account}", f"cluster={self.cluster}"
        )

    def add_qos(self, name: str, **limits: str) -> None:
        self.sacctmgr("add", "qos", name, *(f"{k}={v}" for k, v in limits.items()))

    def modify_qos(self, name: str, **limits: str) -> None:
        settings = [f"{k}={v}" for k, v in limits.items()]
        self.sacctmgr("modify", "qos", "where", f"name={name}", "set", *settings)

    def delete_qos(self, name: str) -> None:
        self._delete("qos", "where", f"name={name}")

    def _delete(self, *args: str) -> None:
        """Delete what matches; nothing matching is not an error (deletes are idempotent)."""
        try:
            self.sacctmgr("delete", *args)
        except SlurmUnavailable:
            raise
        except SlurmError as exc:
            if "nothing deleted" not in str(exc).lower():
                raise

    # -- jobs --------------------------------------------------------------------------------

    def submit(self, job: Submission) -> int:
        """sbatch the job; returns Slurm's job id."""
        nodes = max(1, -(-job.gpus // job.gpus_per_node))
        per_node = job.gpus if nodes == 1 else job.gpus_per_node
        script = "#!/bin/sh\n" + "exec " + " ".join(shlex.quote(a) for a in job.argv) + "\n"
        args = [
            "--parsable",
            f"--job-name={job.name}",
            f"--account={job.account}",
            f"--qos={job.qos}",
            f"--nodes={nodes}",
            f"--time={max(1, -(-job.time_limit_s // 60))}",
            f"--chdir={job.workdir}",
            f"--output={job.stdout}",
            f"--error={job.stderr}",
            _export(job.env),
        ]
        if per_node:
            args.append(f"--gres=gpu:{per_node}")
        if job.partition:
            args.append(f"--partition={job.partition}")
        job.workdir.mkdir(parents=True, exist_ok=True)
        path = job.workdir / "job.sh"
        path.write_text(script, encoding="utf-8")
        out = self.run("sbatch", *args, str(path))
        first = out.strip().split(";")[0]
        if not first.isdigit():
            raise SlurmError(f"sbatch printed no job id: {out.strip()!r}")
        return int(first)

    def queue(self, names: Iterable[str] | None = None) -> list[QueuedJob]:
        """Jobs still pending or running (those named, or all of them)."""
        args = ["-h", "-o", "%i|%j|%T|%r|%a|%q"]
        wanted = list(names or ())
        if names is not None:
            if not wanted:
                return []
            args.append(f"--name={','.join(wanted)}")
        out = self.run("squeue", *args)
        jobs = []
        for job_id, name, state, reason, account, qos in _rows(out, 6):
            if job_id.isdigit():
                jobs.append(QueuedJob(int(job_id), name, state, reason, account, qos))
        return jobs

    def accounting(
        self, job_ids: Iterable[int] = (), names: Iterable[str] = (), since: str | None = None
    ) -> list[AccountedJob]:
        """sacct's allocation lines for these jobs (by id or name), of every user."""
        args = [
            "-P",
            "-X",
            "-n",
            "-a",
            "-o",
            "JobID,JobName,Account,QOS,State,ExitCode,ElapsedRaw,AllocTRES,Submit,Start,End,Reason",
        ]
        ids = [str(i) for i in job_ids]
        wanted = list(names)
        if ids:
            args.append(f"--jobs={','.join(ids)}")
        if wanted:
            args.append(f"--name={','.join(wanted)}")
        if since is not None or (not ids and wanted):
            args.append(f"--starttime={since or 'now-365days'}")
        if not ids and not wanted and since is None:
            return []
        out = self.run("sacct", *args)
        jobs = []
        for fields in _rows(out, 12):
            job_id, name, account, qos, state, exit_code, elapsed, tres = fields[:8]
            submit, start, end, reason = fields[8:]
            if not job_id.isdigit():
                continue  # array or heterogeneous parts: aisc submits neither
            status, _, signal = exit_code.partition(":")
            jobs.append(
                AccountedJob(
                    job_id=int(job_id),
                    name=name,
                    account=account,
                    qos=qos,
                    state=state.split()[0] if state else "",
                    exit_code=int(status) if status.isdigit() else None,
                    signal=int(signal) if signal.isdigit() else 0,
                    elapsed_s=int(elapsed) if elapsed.isdigit() else 0,
                    gpus=parse_tres(tres).get("gres/gpu", 0),
                    submit=parse_time(submit),
                    start=parse_time(start),
                    end=parse_time(end),
                    reason=reason,
                )
            )
        return jobs

    def nodes(self, default_model: str) -> list[InventoryNode]:
        """The cluster's nodes and their GPUs (gres), for aisc's inventory. A gres without a
        type (`gpu:8`) is taken to be `default_model`; `gpu:h100:8` is an H100."""
        out = self.run("sinfo", "-h", "-N", "-o", "%N|%G")
        found: dict[str, InventoryNode] = {}
        for name, gres in _rows(out, 2):
            gpus, model = 0, default_model
            for item in gres.split(","):
                parts = item.split("(")[0].split(":")
                if parts[0] != "gpu" or not parts[-1].isdigit():
                    continue
                gpus += int(parts[-1])
                if len(parts) == 3:
                    model = parts[1].upper()
            found.setdefault(name, InventoryNode(name, model, gpus))  # one line per partition
        return list(found.values())

    def cancel(self, job_id: int) -> None:
        self.run("scancel", str(job_id))

    def ping(self) -> None:
        """Raise SlurmUnavailable unless slurmctld answers."""
        out = self.run("scontrol", "ping")
        if "DOWN" in out and "UP" not in out:
            raise SlurmUnavailable(f"scontrol ping: {' '.join(out.split())}")


def _export(job_env: Mapping[str, str]) -> str:
    """Only a plain environment and the job's own variables go into the job: never the aisc
    server's (its database URL and tokens). sbatch splits the list at commas, so a value with
    one cannot be passed and is refused."""
    plain = {k: os.environ[k] for k in ("PATH", "HOME", "LANG") if k in os.environ}
    plain.setdefault("PATH", "/usr/local/bin:/usr/bin:/bin")
    chosen = {**plain, **job_env}
    for key, value in chosen.items():
        if "," in value or "=" in key:
            raise SlurmError(f"cannot pass {key} to Slurm: a comma in its value")
    return "--export=NIL," + ",".join(f"{k}={v}" for k, v in sorted(chosen.items()))


def parse_tres(text: str) -> dict[str, int]:
    """`billing=1,cpu=1,gres/gpu=2,node=1` -> {"billing": 1, ..., "gres/gpu": 2}."""
    tres: dict[str, int] = {}
    for part in text.split(","):
        key, _, value = part.partition("=")
        if key and value.isdigit():
            tres[key] = int(value)
    return tres


def parse_time(text: str) -> datetime | None:
    """sacct prints local times without a zone; `Unknown` and `None` mean not yet."""
    if not text or text in ("Unknown", "None", "N/A"):
        return None
    try:
        return datetime.fromisoformat(text).astimezone()
    except ValueError:
        return None


def _rows(out: str, width: int) -> list[list[str]]:
    rows = []
    for line in out.splitlines():
        if not line.strip():
            continue
        fields = line.split("|")
        if len(fields) < width:
            continue
        rows.append(fields[:width])
    return rows


def sacctmgr_value(text: str) -> str:
    """A sacctmgr value: no quotes, separators or newlines (they would split the command)."""
    cleaned = "".join(c if c.isalnum() or c in " -_.@" else "_" for c in text).strip()
    return cleaned[:60] or "-"
