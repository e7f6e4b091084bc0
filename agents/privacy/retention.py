"""How long the decision log keeps a decision, and the pruning that enforces it.

Decisions older than `Settings.decision_retention_days` are deleted with their rewards; bandit
state stays whole (`store.decisions.prune_decisions`). Frequency caps count the decisions of
their window, so the log always keeps at least the longest cap window of the policy, whatever
the setting says. A decision that is gone can no longer be rewarded (404), so the retention
should also outlast the reward window of the feedback loop.
"""

from __future__ import annotations

import math
from dataclasses import asdict
from datetime import UTC, datetime, timedelta
from typing import Any

from agents.settings import Settings
from policies.engine import PolicyEngine
from policies.rules import load_policy
from store.db import Database
from store.decisions import prune_decisions


def retention(settings: Settings, days: int | None = None) -> timedelta:
    """What the log keeps: `days` (default the setting), at least the longest cap window."""
    keep = timedelta(days=days if days is not None else settings.decision_retention_days)
    caps = PolicyEngine(load_policy(settings.policy_path)).caps
    longest = max((timedelta(hours=cap.window_hours) for cap in caps), default=timedelta(0))
    return max(keep, timedelta(days=math.ceil(longest / timedelta(days=1))))


def prune(
    settings: Settings,
    db: Database,
    *,
    days: int | None = None,
    now: datetime | None = None,
    batch: int = 5000,
) -> dict[str, Any]:
    """Delete the decisions older than the retention, in batches of `batch` (one transaction
    each); then reclaim the space (SQLite). Returns the cut-off and what was removed."""
    keep = retention(settings, days)
    before = (now or datetime.now(UTC)) - keep
    totals = {"decisions": 0, "rewards": 0, "observations_unlinked": 0}
    while True:
        with db.session() as session:
            pruned = prune_decisions(session, before, batch=batch)
        for key, value in asdict(pruned).items():
            totals[key] += value
        if pruned.decisions < batch:
            break
    if totals["decisions"]:
        db.compact()
    return {"retention_days": keep.days, "before": before.isoformat(), **totals}
