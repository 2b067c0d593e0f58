"""What every use case receives: who is asking, a unit of work, and the clock."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

from aisc.domain.errors import PermissionDenied
from aisc.domain.model import Role
from aisc.store.types import utcnow

Clock = Callable[[], datetime]


@dataclass(frozen=True)
class Actor:
    user_id: int
    role: Role
    org_id: int | None
    name: str

    def require(self, *roles: Role) -> None:
        if self.role not in roles:
            allowed = " or ".join(r.value for r in roles)
            raise PermissionDenied(f"this needs the {allowed} role; you are {self.role.value}")

    def can_see_org(self, org_id: int) -> bool:
        """Staff and the funder see every organisation; applicants only their own."""
        return self.role != Role.APPLICANT or self.org_id == org_id

    def require_org(self, org_id: int) -> None:
        if not self.can_see_org(org_id):
            raise PermissionDenied("that belongs to another organisation")


# Internal work (the controller, migrations, the demo's seeding) acts as this operator.
SYSTEM = Actor(user_id=0, role=Role.OPERATOR, org_id=None, name="system")

__all__ = ["SYSTEM", "Actor", "Clock", "utcnow"]
