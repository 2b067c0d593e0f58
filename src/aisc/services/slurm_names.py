"""The names aisc gives what it manages in Slurm. Every name starts with the configured prefix,
so aisc never touches accounts, QOS or jobs a centre made by hand."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class SlurmNames:
    prefix: str = "aisc_"

    def __post_init__(self) -> None:
        if not self.prefix or not all(c.isalnum() or c in "_-" for c in self.prefix):
            raise ValueError("the Slurm prefix must be letters, digits, '_' or '-'")
        if self.prefix.lower() != self.prefix:
            raise ValueError("the Slurm prefix must be lower case (Slurm lowers account names)")

    def org_account(self, org_id: int) -> str:
        return f"{self.prefix}o{org_id}"

    def allocation_account(self, allocation_id: int) -> str:
        return f"{self.prefix}a{allocation_id}"

    def allocation_qos(self, allocation_id: int) -> str:
        return f"{self.prefix}a{allocation_id}"

    def job_name(self, job_id: int) -> str:
        return f"{self.prefix}job{job_id}"

    def job_id_of(self, name: str) -> int | None:
        """The aisc job id in a Slurm job name this prefix made, else None."""
        head = f"{self.prefix}job"
        rest = name[len(head) :] if name.startswith(head) else ""
        return int(rest) if rest.isdigit() else None

    def owns(self, name: str) -> bool:
        return name.startswith(self.prefix)
