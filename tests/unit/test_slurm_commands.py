"""Parsing and error classification of Slurm's commands, with a scripted runner standing in for
the processes (the real cluster's tests are in tests/slurm/test_commands.py)."""

from __future__ import annotations

import subprocess
from collections.abc import Mapping, Sequence
from datetime import datetime
from pathlib import Path

import pytest

from aisc.backends.slurm import SlurmCli, SlurmError, SlurmUnavailable, Submission, parse_tres


class Scripted:
    """Answers each command with the next (returncode, stdout, stderr) and records the calls."""

    def __init__(self, *answers: tuple[int, str, str]) -> None:
        self.answers = list(answers)
        self.calls: list[list[str]] = []
        self.envs: list[dict[str, str]] = []

    def __call__(
        self, argv: Sequence[str], env: Mapping[str, str], timeout: float
    ) -> subprocess.CompletedProcess[str]:
        self.calls.append(list(argv))
        self.envs.append(dict(env))
        code, out, err = self.answers.pop(0)
        return subprocess.CompletedProcess(list(argv), code, out, err)


def test_tres_strings_become_counts() -> None:
    assert parse_tres("billing=1,cpu=1,gres/gpu=2,node=1") == {
        "billing": 1,
        "cpu": 1,
        "gres/gpu": 2,
        "node": 1,
    }
    assert parse_tres("") == {}
    assert parse_tres("gres/gpu=,cpu=x") == {}


def test_sacct_rows_are_parsed_with_gpus_seconds_and_states() -> None:
    runner = Scripted(
        (
            0,
            "14|aisc_job3|aisc_a1|aisc_a1|COMPLETED|0:0|12|billing=1,cpu=1,gres/gpu=2,node=1|"
            "2026-11-25T01:57:06|2026-11-25T01:57:07|2026-11-25T01:57:19|None\n"
            "15|aisc_job4|aisc_a1|aisc_a1|CANCELLED by 0|0:15|3|gres/gpu=1|"
            "2026-11-25T01:57:06|2026-11-25T01:57:07|2026-11-25T01:57:10|None\n"
            "16|aisc_job5|aisc_a1|aisc_a1|PENDING|0:0|0||2026-11-25T01:57:32|Unknown|Unknown|"
            "QOSGrpGRESMinutes\n"
            "16.batch|batch|aisc_a1||COMPLETED|0:0|12|cpu=1|Unknown|Unknown|Unknown|None\n",
            "",
        )
    )
    done, cancelled, pending = SlurmCli("aisc", runner=runner).accounting(job_ids=[14, 15, 16])
    assert "--jobs=14,15,16" in runner.calls[0]
    assert (done.job_id, done.state, done.exit_code, done.gpus, done.elapsed_s) == (
        14,
        "COMPLETED",
        0,
        2,
        12,
    )
    assert done.final and done.gpu_seconds == 24
    assert done.start is not None and done.end is not None
    assert (done.end - done.start).total_seconds() == 12
    assert (cancelled.state, cancelled.signal, cancelled.final) == ("CANCELLED", 15, True)
    assert (pending.final, pending.start, pending.gpus, pending.reason) == (
        False,
        None,
        0,
        "QOSGrpGRESMinutes",
    )


def test_an_unreachable_controller_is_an_outage_and_a_refusal_is_an_error() -> None:
    down = Scripted(
        (1, "", "sbatch: error: Batch job submission failed: Unable to contact slurm controller")
    )
    with pytest.raises(SlurmUnavailable, match="Unable to contact slurm controller"):
        SlurmCli("aisc", runner=down).run("sbatch", "x")
    refused = Scripted(
        (1, "", "sbatch: error: Batch job submission failed: Invalid account or account/partition")
    )
    with pytest.raises(SlurmError, match="Invalid account") as caught:
        SlurmCli("aisc", runner=refused).run("sbatch", "x")
    assert not isinstance(caught.value, SlurmUnavailable)


def test_sacctmgr_saying_the_database_is_down_on_stdout_is_an_outage() -> None:
    runner = Scripted((0, " Problem talking to the database: Connection refused\n", ""))
    with pytest.raises(SlurmUnavailable):
        SlurmCli("aisc", runner=runner).associations()


def test_missing_commands_and_timeouts_are_outages() -> None:
    def missing(argv: Sequence[str], env: Mapping[str, str], timeout: float) -> None:
        raise FileNotFoundError(2, "No such file", argv[0])

    def slow(argv: Sequence[str], env: Mapping[str, str], timeout: float) -> None:
        raise subprocess.TimeoutExpired(list(argv), timeout)

    with pytest.raises(SlurmUnavailable, match="not installed"):
        SlurmCli("aisc", runner=missing).queue()  # type: ignore[arg-type]
    with pytest.raises(SlurmUnavailable, match="did not answer"):
        SlurmCli("aisc", runner=slow).queue()  # type: ignore[arg-type]


def test_the_configured_slurm_conf_reaches_every_command() -> None:
    runner = Scripted((0, "", ""))
    SlurmCli("aisc", conf="/srv/slurm/slurm.conf", runner=runner).queue()
    assert runner.envs[0]["SLURM_CONF"] == "/srv/slurm/slurm.conf"


def test_deleting_what_is_not_there_is_not_an_error() -> None:
    runner = Scripted((1, "", " Nothing deleted\n"), (1, "", "sacctmgr: error: bad field\n"))
    cli = SlurmCli("aisc", runner=runner)
    cli.delete_qos("aisc_a9")
    with pytest.raises(SlurmError, match="bad field"):
        cli.delete_qos("aisc_a9")


def test_nodes_read_gres_with_and_without_a_type() -> None:
    runner = Scripted((0, "n1|gpu:8\nn2|gpu:h100:4(S:0-1)\nn1|gpu:8\nlogin|(null)\n", ""))
    nodes = SlurmCli("aisc", runner=runner).nodes("H800")
    assert [(n.name, n.gpu_model, n.gpus) for n in nodes] == [
        ("n1", "H800", 8),
        ("n2", "H100", 4),
        ("login", "H800", 0),
    ]


def test_sacct_times_are_local_wall_clock() -> None:
    runner = Scripted(
        (
            0,
            "3|x|a|q|RUNNING|0:0|6|gres/gpu=1|2026-11-25T01:57:31|2026-11-25T01:57:32|Unknown|None\n",
            "",
        )
    )
    (job,) = SlurmCli("aisc", runner=runner).accounting(job_ids=[3])
    assert job.start == datetime(2026, 11, 25, 1, 57, 32).astimezone()
    assert job.end is None and not job.final


def test_jobs_get_a_plain_environment_and_their_own_variables_only(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("AISC_DATABASE_URL", "postgresql+psycopg://aisc:s3cret@db/aisc")
    monkeypatch.setenv("PATH", "/opt/bin:/usr/bin")
    runner = Scripted((0, "41\n", ""))
    job = Submission(
        name="aisc_job7",
        argv=["python", "train.py", "--lr", "3e-4"],
        account="aisc_a1",
        qos="aisc_a1",
        gpus=16,
        gpus_per_node=8,
        time_limit_s=61,
        workdir=tmp_path,
        stdout=tmp_path / "o",
        stderr=tmp_path / "e",
        env={"AISC_JOB_ID": "7"},
    )
    assert SlurmCli("aisc", runner=runner).submit(job) == 41
    args = runner.calls[0]
    export = next(a for a in args if a.startswith("--export="))
    assert export.startswith("--export=NIL,")
    assert "AISC_JOB_ID=7" in export and "PATH=/opt/bin:/usr/bin" in export
    assert "s3cret" not in " ".join(args)
    # 16 GPUs on 8-GPU nodes: two whole nodes; 61 s rounds up to 2 minutes
    assert {"--nodes=2", "--gres=gpu:8", "--time=2"} <= set(args)
    assert (tmp_path / "job.sh").read_text().endswith("exec python train.py --lr 3e-4\n")
    with pytest.raises(SlurmError, match="comma"):
        SlurmCli("aisc", runner=runner).submit(
            Submission(**{**job.__dict__, "env": {"AISC_TAGS": "a,b"}})
        )
