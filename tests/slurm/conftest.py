"""Tests against the real single-node Slurm cluster that `scripts/slurm-dev-cluster start`
brings up. Without it these tests skip, unless AISC_TEST_SLURM=1 says the cluster must be there
(scripts/test sets it after starting the cluster, so in CI a missing cluster is a failure).

Each test gets its own name prefix, so its accounts, QOS and jobs never meet another test's
(test databases restart their ids), and everything under the prefix is removed afterwards.
"""

from __future__ import annotations

import contextlib
import os
import shlex
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from aisc.backends.slurm import SlurmCli, SlurmError
from aisc.services.slurm_names import SlurmNames
from aisc.services.slurm_reset import remove_managed

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "scripts" / "slurm-dev-cluster"
CLUSTER = "aisc"


def _cluster_env() -> dict[str, str] | None:
    """The variables `slurm-dev-cluster env` exports, if the cluster is up."""
    try:
        status = subprocess.run([str(SCRIPT), "status"], capture_output=True, timeout=60)
        if status.returncode != 0:
            return None
        out = subprocess.run(
            [str(SCRIPT), "env"], capture_output=True, text=True, timeout=30, check=True
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    env: dict[str, str] = {}
    for line in out.splitlines():
        words = shlex.split(line)
        if len(words) == 2 and words[0] == "export" and "=" in words[1]:
            key, _, value = words[1].partition("=")
            env[key] = value
    return env


@pytest.fixture(scope="session")
def slurm_env() -> dict[str, str]:
    env = _cluster_env()
    for _ in range(10):  # a daemon restarting (an earlier outage test) takes a few seconds
        if env is not None:
            break
        time.sleep(2)
        env = _cluster_env()
    if env is None:
        if os.environ.get("AISC_TEST_SLURM") == "1":
            pytest.fail("AISC_TEST_SLURM=1 but the Slurm dev cluster is not up")
        pytest.skip("no Slurm dev cluster here: run scripts/slurm-dev-cluster start")
    return env


@pytest.fixture
def slurm_names() -> SlurmNames:
    return SlurmNames(f"t{uuid.uuid4().hex[:6]}_")


@pytest.fixture
def slurm(slurm_env: dict[str, str], slurm_names: SlurmNames) -> Iterator[SlurmCli]:
    """Slurm's commands on the dev cluster; this test's names are cleaned up after it."""
    cli = SlurmCli(CLUSTER, conf=slurm_env.get("SLURM_CONF"))
    yield cli
    cleanup(cli, slurm_names)


def cleanup(cli: SlurmCli, names: SlurmNames) -> None:
    # a test that stopped a daemon may leave names behind; they are unique anyway
    with contextlib.suppress(SlurmError):
        remove_managed(cli, names)
