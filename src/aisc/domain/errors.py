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

    def __init__(self, detail: str, fields: dict[str, str] | None = None) -> None:
        super().__init__(detail)
        # the form field each problem belongs to, so a page can show it beside that field
        self.fields = dict(fields or {})


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


class Unavailable(DomainError):
    """The server cannot take the request now (it is shutting down); trying again may work."""

    title = "Service unavailable"
