"""Reading HTML forms: every value arrives as text, and each bad one is named by its field."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
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


def field_of(detail: str, keywords: Sequence[tuple[tuple[str, ...], str]], default: str) -> str:
    """The form field a service's refusal is about, found by the words it uses; `default` when
    none matches. For refusals that carry no field of their own."""
    text = detail.lower()
    for words, name in keywords:
        if any(w in text for w in words):
            return name
    return default
