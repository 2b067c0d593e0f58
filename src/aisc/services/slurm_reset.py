"""Remove everything aisc manages under one name prefix from Slurm: its jobs, user associations,
accounts and QOS. For the demo, which starts from a clean slate each run (a QOS keeps its
NoDecay usage otherwise), and for tests. Names without the prefix are never touched."""

from __future__ import annotations

from aisc.backends.slurm import SlurmCli
from aisc.services.slurm_names import SlurmNames


def remove_managed(cli: SlurmCli, names: SlurmNames) -> None:
    for job in cli.queue():
        if names.owns(job.name):
            cli.cancel(job.job_id)
    associations = cli.associations()
    for assoc in associations:
        if assoc.user and names.owns(assoc.account):
            cli.remove_user(assoc.user, assoc.account)
    accounts = [a for a in associations if not a.user and names.owns(a.account)]
    # children (whose parent is managed too) before their parents
    for assoc in sorted(accounts, key=lambda a: names.owns(a.parent), reverse=True):
        cli.delete_account(assoc.account)
    for qos in cli.qos():
        if names.owns(qos.name):
            cli.delete_qos(qos.name)
