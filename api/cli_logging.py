"""How the `attune` commands configure logging: the settings' level, Presidio's chatter muted."""

from __future__ import annotations

import logging

from agents.settings import Settings

__all__ = ["configure_logging"]


def configure_logging(settings: Settings) -> None:
    logging.basicConfig(
        level=settings.log_level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    # Presidio logs every analysis at INFO; its warnings are what matter here.
    logging.getLogger("presidio-analyzer").setLevel(logging.WARNING)
    logging.getLogger("presidio-anonymizer").setLevel(logging.WARNING)
