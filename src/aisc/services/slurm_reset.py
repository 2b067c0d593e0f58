"""Remove everything aisc manages under one name prefix from Slurm: its jobs, user associations,
accounts and QOS. For the demo, which starts from a clean slate each run (a QOS keeps its
NoDecay usage otherwise), and for tests. Names without the prefix are never touched."""

from __future__ import annotations

from aisc.backends.slurm import SlurmCli
from aisc.services.slurm_names import SlurmNames
from aisc.services.slurm_sync import Wanted, current_state, plan_sync


def remove_managed(cli: SlurmCli, names: SlurmNames) -> None:
    for job in cli.queue():
        if names.owns(job.name):
            cli.cancel(job.job_id)
    # the sync's own removals, as if no award were left: users, then children, then parents
    for step in plan_sync(Wanted((), (), ()), current_state(cli, names)):
        step.command.apply(cli)
