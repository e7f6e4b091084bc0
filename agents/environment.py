"""The services of a process that has no composition root of its own (LangGraph's dev server),
built from the environment (`ATTUNE_*`) on first use and then shared.

A module of its own, imported by name: the dev server loads each graph of `langgraph.json` from
its file as a separate module, so a cache kept in `agents/studio.py` would be one per graph, and
a second set of services would find the embedded index locked by the first.
"""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from agents.services import Services

_services: Services | None = None
_building = threading.Lock()


def services_from_environment() -> Services:
    """This process's services, built once from `ATTUNE_*` as `attune serve` builds them."""
    global _services
    with _building:
        if _services is None:
            from agents.factory import build_services
            from agents.settings import Settings

            _services = build_services(Settings())
        return _services
