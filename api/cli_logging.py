"""How the `attune` commands configure logging: the settings' level and format (text or JSON),
Presidio's chatter muted."""

from __future__ import annotations

import logging

from pythonjsonlogger.core import RESERVED_ATTRS
from pythonjsonlogger.json import JsonFormatter

from agents.settings import Settings

__all__ = ["configure_logging", "json_formatter"]


def configure_logging(settings: Settings) -> None:
    """Text lines, or with `ATTUNE_LOG_FORMAT=json` one JSON object a line: timestamp, level,
    logger, message, and the fields a line carries (the access lines: method, route template,
    status, duration_ms)."""
    if settings.log_format == "json":
        handler = logging.StreamHandler()
        handler.setFormatter(json_formatter())
        logging.basicConfig(level=settings.log_level.upper(), handlers=[handler], force=True)
    else:
        logging.basicConfig(
            level=settings.log_level.upper(),
            format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        )
    # Presidio logs every analysis at INFO; its warnings are what matter here.
    logging.getLogger("presidio-analyzer").setLevel(logging.WARNING)
    logging.getLogger("presidio-anonymizer").setLevel(logging.WARNING)


def json_formatter() -> logging.Formatter:
    return JsonFormatter(
        "{asctime}{levelname}{name}{message}",
        style="{",
        rename_fields={"asctime": "timestamp", "levelname": "level", "name": "logger"},
        datefmt="%Y-%m-%dT%H:%M:%S%z",
        # uvicorn repeats its message with terminal colours; one message is enough.
        reserved_attrs=[*RESERVED_ATTRS, "color_message"],
    )
