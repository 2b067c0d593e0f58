"""SlurmCli against the real dev cluster: what it writes, Slurm reads back the same way."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from aisc.backends.slurm import AccountedJob, SlurmCli, SlurmError, Submission
from aisc.services.slurm_names import SlurmNames
from aisc.services.slurm_reset import remove_managed


def make_project(cli: SlurmCli, names: SlurmNames, gpu_minutes: int) -> tuple[str, str]:
    org, account, qos = names.org_account(1), names.allocation_account(1), names.allocation_qos(1)
    cli.add_account(org, "root", 1, "Test Org", "Test Org")
    cli.add_account(account, org, 250, "Test project", "Test Org")
    cli.add_qos(qos, flags="NoDecay", grptresmins=f"gres/gpu={gpu_minutes}")
    cli.add_user("root", account, qos)
    return account, qos


def wait_for_final(cli: SlurmCli, job_id: int, name: str, timeout: float = 60) -> AccountedJob:
    """The job's final sacct row, once whole: sacct may first show a final state under the
    name `allocation` before slurmctld sends the full record."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        rows = cli.accounting(job_ids=[job_id])
        if rows and rows[0].final and rows[0].end is not None and rows[0].name == name:
            return rows[0]
        time.sleep(0.5)
    raise AssertionError(f"job {job_id} did not finish in {timeout} s")


def test_accounts_qos_and_users_read_back(slurm: SlurmCli, slurm_names: SlurmNames) -> None:
    account, qos = make_project(slurm, slurm_names, 600)
    mine = {(a.account, a.user): a for a in slurm.associations() if slurm_names.owns(a.account)}
    assert mine[(account, "")].parent == slurm_names.org_account(1)
    assert mine[(account, "")].fairshare == "250"
    assert mine[(account, "root")].qos == (qos,)
    assert mine[(account, "root")].default_qos == qos
    (limits,) = [q for q in slurm.qos() if q.name == qos]
    assert limits.flags == ("NoDecay",)
    assert limits.grp_tres_mins == {"gres/gpu": 600}
    assert limits.grp_submit_jobs is None
    slurm.modify_qos(qos, grpsubmitjobs="0", grptresrunmins="gres/gpu=30")
    (limits,) = [q for q in slurm.qos() if q.name == qos]
    assert (limits.grp_submit_jobs, limits.grp_tres_run_mins) == (0, {"gres/gpu": 30})
    descriptions = {a.name: a.description for a in slurm.accounts()}
    assert descriptions[account] == "test project"  # Slurm lowers descriptions


def test_a_job_runs_is_accounted_and_its_output_lands_where_asked(
    slurm: SlurmCli, slurm_names: SlurmNames, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # the server's own secrets must not reach users' jobs
    monkeypatch.setenv("AISC_DATABASE_URL", "postgresql+psycopg://aisc:s3cret@db/aisc")
    account, qos = make_project(slurm, slurm_names, 600)
    name = slurm_names.job_name(1)
    job_id = slurm.submit(
        Submission(
            name=name,
            argv=[
                "sh",
                "-c",
                'echo "gpus=$CUDA_VISIBLE_DEVICES job=$AISC_JOB_ID db=${AISC_DATABASE_URL:-unset}"'
                "; sleep 2",
            ],
            account=account,
            qos=qos,
            gpus=2,
            gpus_per_node=8,
            time_limit_s=90,
            workdir=tmp_path,
            stdout=tmp_path / "stdout.log",
            stderr=tmp_path / "stderr.log",
            env={"AISC_JOB_ID": "1"},
        )
    )
    assert [j.job_id for j in slurm.queue([name])] in ([job_id], [])  # it may be done already
    row = wait_for_final(slurm, job_id, name)
    assert (row.name, row.account, row.qos, row.state, row.exit_code) == (
        name,
        account,
        qos,
        "COMPLETED",
        0,
    )
    assert row.gpus == 2 and row.elapsed_s >= 2
    assert [r.job_id for r in slurm.accounting(names=[name])] == [job_id]
    output = (tmp_path / "stdout.log").read_text()
    assert "gpus=0,1 job=1 db=unset" in output


def test_a_cancelled_job_is_final_and_an_unknown_account_is_refused(
    slurm: SlurmCli, slurm_names: SlurmNames, tmp_path: Path
) -> None:
    account, qos = make_project(slurm, slurm_names, 600)

    def sleeper(name: str, account: str) -> Submission:
        return Submission(
            name=name,
            argv=["sleep", "60"],
            account=account,
            qos=qos,
            gpus=1,
            gpus_per_node=8,
            time_limit_s=120,
            workdir=tmp_path,
            stdout=tmp_path / "out",
            stderr=tmp_path / "err",
            env={},
        )

    job_id = slurm.submit(sleeper(slurm_names.job_name(2), account))
    slurm.cancel(job_id)
    assert wait_for_final(slurm, job_id, slurm_names.job_name(2)).state == "CANCELLED"
    with pytest.raises(SlurmError, match="account"):
        slurm.submit(sleeper(slurm_names.job_name(3), f"{slurm_names.prefix}nope"))


def test_the_node_inventory_comes_from_sinfo(slurm: SlurmCli) -> None:
    nodes = slurm.nodes("H800")
    assert [(n.name, n.gpus, n.gpu_model) for n in nodes] == [("localhost", 8, "H800")]


def test_removing_what_a_prefix_manages_leaves_nothing_of_it(
    slurm: SlurmCli, slurm_names: SlurmNames, tmp_path: Path
) -> None:
    account, qos = make_project(slurm, slurm_names, 600)
    name = slurm_names.job_name(9)
    job_id = slurm.submit(
        Submission(
            name,
            ["sleep", "60"],
            account,
            qos,
            1,
            8,
            120,
            tmp_path,
            tmp_path / "o",
            tmp_path / "e",
            {},
        )
    )
    remove_managed(slurm, slurm_names)
    assert not [a for a in slurm.associations() if slurm_names.owns(a.account)]
    assert not [a for a in slurm.accounts() if slurm_names.owns(a.name)]
    assert not [q for q in slurm.qos() if slurm_names.owns(q.name)]
    assert wait_for_final(slurm, job_id, name).state == "CANCELLED"
