"""Logging for the server process: every record carries the id of the request it belongs to, and
is written as one JSON object per line (or a readable line with `AISC_LOG_FORMAT=text`)."""

from __future__ import annotations

import logging
import logging.config
import sys
from contextvars import ContextVar
from typing import IO, Any

from pythonjsonlogger.core import RESERVED_ATTRS
from pythonjsonlogger.json import JsonFormatter

# set by the HTTP middleware for the request being handled; None outside a request (the
# controller's thread, start-up)
request_id: ContextVar[str | None] = ContextVar("aisc_request_id", default=None)

TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s [%(request_id)s] %(message)s"
# uvicorn puts an ANSI-coloured copy of its message on some records; a log collector wants one
IGNORED_ATTRS = [*RESERVED_ATTRS, "color_message"]


class RequestIdFilter(logging.Filter):
    """Stamps each record with the current request's id (None outside a request)."""

    def filter(self, record: logging.LogRecord) -> bool:
        if getattr(record, "request_id", None) is None:
            record.request_id = request_id.get()
        return True


class _TextFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        if getattr(record, "request_id", None) is None:
            record.request_id = "-"
        return super().format(record)


def json_formatter() -> logging.Formatter:
    """time, level, logger, message and request_id, then any `extra` fields of the record."""
    return JsonFormatter(
        "%(levelname)s %(name)s %(message)s %(request_id)s",
        rename_fields={"levelname": "level", "name": "logger"},
        timestamp="time",
        reserved_attrs=IGNORED_ATTRS,
    )


def build_handler(log_format: str = "json", stream: IO[str] | None = None) -> logging.Handler:
    """A stream handler (stderr by default) in the given format, stamping request ids."""
    handler = logging.StreamHandler(stream if stream is not None else sys.stderr)
    handler.addFilter(RequestIdFilter())
    handler.setFormatter(_TextFormatter(TEXT_FORMAT) if log_format == "text" else json_formatter())
    return handler


def logging_config(log_format: str, level: str) -> dict[str, Any]:
    """A `logging.config.dictConfig` for the whole process, uvicorn's loggers included (uvicorn
    takes it as its `log_config`), so every line has the same shape."""
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "handlers": {"default": {"()": build_handler, "log_format": log_format}},
        "root": {"handlers": ["default"], "level": level},
        "loggers": {
            # uvicorn's own handlers are replaced by the root's
            "uvicorn": {"handlers": [], "propagate": True, "level": level},
            "uvicorn.error": {"handlers": [], "propagate": True, "level": level},
            # the request middleware logs each request with its id instead
            "uvicorn.access": {"handlers": [], "propagate": False, "level": "WARNING"},
        },
    }


def configure_logging(log_format: str, level: str) -> dict[str, Any]:
    """Set up the process's logging; returns the config for uvicorn to apply again."""
    config = logging_config(log_format, level)
    logging.config.dictConfig(config)
    return config
