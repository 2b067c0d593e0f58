"""Domain errors. Entry points map each kind to one HTTP status / CLI exit in one place."""

from __future__ import annotations


class DomainError(Exception):
    """A rule of the domain refused the request; nothing was changed."""

    title = "Request refused"

    def __init__(self, detail: str) -> None:
        super().__init__(detail)
        self.detail = detail


class ValidationError(DomainError):
    title = "Invalid input"


class NotFound(DomainError):
    title = "Not found"


class PermissionDenied(DomainError):
    title = "Forbidden"


class AuthenticationFailed(DomainError):
    title = "Not authenticated"


class Conflict(DomainError):
    """The request is well formed but clashes with the current state."""

    title = "Conflict"


class InsufficientFunds(Conflict):
    title = "Insufficient funds"


class OverQuota(Conflict):
    title = "Over quota"


class ConflictOfInterest(PermissionDenied):
    title = "Conflict of interest"
