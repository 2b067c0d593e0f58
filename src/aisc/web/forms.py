"""Reading HTML forms: every value arrives as text, and each bad one is named by its field."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import date
from typing import Any

from starlette.datastructures import FormData


def text(form: FormData | Mapping[str, Any], name: str) -> str:
    value = form.get(name, "")
    return value.strip() if isinstance(value, str) else ""


def whole_number(
    form: FormData | Mapping[str, Any], name: str, errors: dict[str, str], label: str
) -> int:
    raw = text(form, name)
    try:
        return int(raw.replace(",", ""))
    except ValueError:
        errors[name] = f"{label} must be a whole number" if raw else f"{label} is required"
        return 0


def day(form: FormData | Mapping[str, Any], name: str, errors: dict[str, str], label: str) -> date:
    raw = text(form, name)
    try:
        return date.fromisoformat(raw)
    except ValueError:
        errors[name] = f"{label} must be a date (YYYY-MM-DD)" if raw else f"{label} is required"
        return date.min


def checked(form: FormData | Mapping[str, Any], name: str) -> bool:
    return text(form, name) in ("on", "true", "1", "yes")
