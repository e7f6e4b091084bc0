"""Drift monitors: is today's traffic, outcome or catalog still what the models were trained on?

Windows are counts of decisions from the decision log. The **reference window** is the first
`drift_window` decisions made after the latest training (`attune train`, or a retraining the
monitors triggered); the **current window** is the latest `drift_window` decisions. Until there
are twice `drift_window` decisions since the training, the windows would overlap and the
monitors say `collecting`.

- **input**: the population stability index (PSI) of each feature the decision recorded
  (`record.features`, and the channel) between the windows. Numbers are binned at the reference
  window's deciles, a missing value (never bought, unknown age) in a bin of its own; categories
  bin by value. PSI = sum over bins of (current share - reference share) x ln(current share /
  reference share), an empty bin counted as 0.0001. Above `drift_psi_threshold` (0.2 by default,
  the usual "significant shift") it has drifted.
- **outcome**: the reward rate (sum of rewards over decisions that showed an offer; a decision
  not rewarded yet counts 0) per channel and, where decisions record one, per experiment arm.
  A change above `drift_reward_delta` (absolute) between the windows, with at least
  `drift_min_samples` such decisions in both, has drifted.
- **catalog**: the share of items added or removed since the training's catalog snapshot, and
  the PSI of the category mix, against `drift_catalog_change`.

A check updates the `attune_drift_*` gauges, logs one line per crossed threshold (feature,
channel and arm names only: no person), keeps its report for `/healthz`, and with
`drift_retrain` (`ATTUNE_DRIFT_RETRAIN=1`) retrains (`agents.retrain`): an incremental `attune train` of the
collaborative model and the predictions, in this process, after which decisions record the new
versions (`versions.collab`, `versions.predictions`) and the windows start again.
"""

from __future__ import annotations

import json
import logging
import math
import threading
from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
from sqlalchemy import select

from agents.settings import Settings
from store.db import Database
from store.models import CatalogItem, DecisionRow, RewardRow

log = logging.getLogger("attune.drift")

NUMERIC = (
    "event_count",
    "recency_days",
    "frequency_30d",
    "monetary_total",
    "purchase_count",
    "days_since_last_purchase",
    "age",
    "churn_risk",
)
CATEGORICAL = ("segment", "price_band", "known", "top_category", "channel")
EPSILON = 1e-4  # the share an empty bin counts as, so that a new value does not divide by zero
BINS = 10
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


# --- The statistic ------------------------------------------------------------------------------


def psi_of_shares(reference: Sequence[float], current: Sequence[float]) -> float:
    """PSI between two distributions over the same bins (shares summing to 1)."""
    total = 0.0
    for r, c in zip(reference, current, strict=True):
        r, c = max(r, EPSILON), max(c, EPSILON)
        total += (c - r) * math.log(c / r)
    return total


def psi(reference: Sequence[Any], current: Sequence[Any], *, numeric: bool) -> float:
    """PSI of a feature's values in two windows (see the module for the bins)."""
    ref_bins, cur_bins = _bins(reference, current, numeric=numeric)
    keys = sorted(set(ref_bins) | set(cur_bins), key=str)
    return psi_of_shares(_shares(ref_bins, keys), _shares(cur_bins, keys))


def _bins(
    reference: Sequence[Any], current: Sequence[Any], *, numeric: bool
) -> tuple[Counter[Any], Counter[Any]]:
    if not numeric:
        return Counter(map(str, reference)), Counter(map(str, current))
    known = np.asarray([float(v) for v in reference if v is not None])
    edges: Any = (
        np.unique(np.quantile(known, np.linspace(0, 1, BINS + 1)[1:-1])) if known.size else []
    )

    def label(value: Any) -> Any:
        return "missing" if value is None else int(np.searchsorted(edges, float(value), "right"))

    return Counter(map(label, reference)), Counter(map(label, current))


def _shares(counts: Counter[Any], keys: Sequence[Any]) -> list[float]:
    total = sum(counts.values()) or 1
    return [counts.get(key, 0) / total for key in keys]


# --- Windows, monitors and the report ---------------------------------------------------------


@dataclass(frozen=True)
class Window:
    decisions: int
    first: str | None  # created_at of its oldest and newest decision
    last: str | None


@dataclass(frozen=True)
class Monitor:
    monitor: str  # input | outcome | catalog
    name: str  # the feature, `channel:web`, `arm:challenger`, `items_changed`, `category_mix`
    statistic: float | None  # None: not enough data in a window
    threshold: float
    breached: bool
    reference: dict[str, Any]
    current: dict[str, Any]


@dataclass
class DriftReport:
    checked_at: str
    status: str  # ok | drift | collecting
    reference: Window
    current: Window
    monitors: list[Monitor]
    retrained: dict[str, Any] | None = None

    @property
    def breached(self) -> list[Monitor]:
        return [m for m in self.monitors if m.breached]

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class _Decision:
    decision_id: str
    created_at: datetime
    channel: str
    offer_id: str | None
    record: dict[str, Any]


def _state_file(settings: Settings) -> Path:
    return settings.home / "drift" / "reference.json"


def load_reference(settings: Settings) -> dict[str, Any]:
    """The training's mark: since when the reference window counts, and its catalog snapshot."""
    path = _state_file(settings)
    if not path.is_file():
        return {"since": EPOCH.isoformat(), "catalog": None}
    data: dict[str, Any] = json.loads(path.read_text())
    return data


def mark_reference(settings: Settings, db: Database, now: datetime) -> None:
    """Start the windows again from `now` with a snapshot of the catalog (after a training)."""
    with db.session() as session:
        catalog = dict(session.execute(select(CatalogItem.item_id, CatalogItem.category)).all())
    path = _state_file(settings)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps({"since": now.isoformat(), "catalog": catalog}))
    tmp.replace(path)


def _windows(
    db: Database, since: datetime, size: int
) -> tuple[list[_Decision], list[_Decision], dict[str, float]]:
    def rows(order: Any) -> list[_Decision]:
        with db.session() as session:
            found = session.execute(
                select(
                    DecisionRow.decision_id,
                    DecisionRow.created_at,
                    DecisionRow.channel,
                    DecisionRow.offer_id,
                    DecisionRow.record,
                )
                .where(DecisionRow.created_at >= since)
                .order_by(order)
                .limit(size)
            ).all()
        return [_Decision(*row) for row in found]

    reference = rows(DecisionRow.created_at.asc())
    current = rows(DecisionRow.created_at.desc())[::-1]
    ids = [d.decision_id for d in reference + current]
    with db.session() as session:
        rewards = dict(
            session.execute(
                select(RewardRow.decision_id, RewardRow.reward).where(
                    RewardRow.decision_id.in_(ids)
                )
            ).all()
        )
    return reference, current, rewards


def _window(decisions: Sequence[_Decision]) -> Window:
    if not decisions:
        return Window(0, None, None)
    return Window(
        len(decisions), decisions[0].created_at.isoformat(), decisions[-1].created_at.isoformat()
    )


def feature_value(decision: _Decision, name: str) -> Any:
    features = decision.record.get("features") or {}
    if name == "channel":
        return decision.channel
    if name == "top_category":
        affinity = features.get("category_affinity") or {}
        return min(affinity.items(), key=lambda kv: (-kv[1], kv[0]))[0] if affinity else None
    return features.get(name)


def input_monitors(
    reference: Sequence[_Decision], current: Sequence[_Decision], threshold: float
) -> list[Monitor]:
    out = []
    for name in (*NUMERIC, *CATEGORICAL):
        ref = [feature_value(d, name) for d in reference]
        cur = [feature_value(d, name) for d in current]
        value = round(psi(ref, cur, numeric=name in NUMERIC), 4)
        out.append(
            Monitor(
                "input",
                name,
                value,
                threshold,
                value > threshold,
                _summary(ref, name in NUMERIC),
                _summary(cur, name in NUMERIC),
            )
        )
    return out


def _summary(values: Sequence[Any], numeric: bool) -> dict[str, Any]:
    """A window's values in brief: mean and share missing, or the share of each category."""
    if numeric:
        known = [float(v) for v in values if v is not None]
        return {
            "n": len(values),
            "mean": round(sum(known) / len(known), 4) if known else None,
            "missing": round(1 - len(known) / len(values), 4) if values else None,
        }
    counts = Counter(map(str, values))
    return {"n": len(values), "shares": {k: round(v / len(values), 4) for k, v in counts.items()}}


def _arm(decision: _Decision) -> str | None:
    """The experiment arm a decision records, wherever a version of the record keeps it."""
    record = decision.record
    arm = record.get("arm")
    if arm is None and isinstance(record.get("experiment"), dict):
        arm = record["experiment"].get("arm")
    return str(arm) if arm else None


def outcome_monitors(
    reference: Sequence[_Decision],
    current: Sequence[_Decision],
    rewards: dict[str, float],
    threshold: float,
    min_samples: int,
) -> list[Monitor]:
    def groups(decisions: Sequence[_Decision]) -> dict[str, list[float]]:
        found: dict[str, list[float]] = {}
        for d in decisions:
            if d.offer_id is None:
                continue
            reward = rewards.get(d.decision_id, 0.0)
            found.setdefault(f"channel:{d.channel}", []).append(reward)
            if (arm := _arm(d)) is not None:
                found.setdefault(f"arm:{arm}", []).append(reward)
        return found

    ref, cur = groups(reference), groups(current)
    out = []
    for name in sorted(set(ref) | set(cur)):
        r, c = ref.get(name, []), cur.get(name, [])
        enough = len(r) >= min_samples and len(c) >= min_samples
        r_rate = round(sum(r) / len(r), 4) if r else None
        c_rate = round(sum(c) / len(c), 4) if c else None
        value = (
            round(abs(c_rate - r_rate), 4)
            if enough and r_rate is not None and c_rate is not None
            else None
        )
        out.append(
            Monitor(
                "outcome",
                name,
                value,
                threshold,
                value is not None and value > threshold,
                {"decisions": len(r), "reward_rate": r_rate},
                {"decisions": len(c), "reward_rate": c_rate},
            )
        )
    return out


def catalog_monitors(
    db: Database, snapshot: dict[str, str] | None, threshold: float
) -> list[Monitor]:
    with db.session() as session:
        now = dict(session.execute(select(CatalogItem.item_id, CatalogItem.category)).all())
    if snapshot is None:  # no training yet: nothing to compare with
        return []
    added, removed = set(now) - set(snapshot), set(snapshot) - set(now)
    changed = round((len(added) + len(removed)) / max(len(snapshot), 1), 4)
    mix = round(psi(list(snapshot.values()), list(now.values()), numeric=False) if now else 0.0, 4)
    reference = {"items": len(snapshot), "categories": len(set(snapshot.values()))}
    current = {
        "items": len(now),
        "categories": len(set(now.values())),
        "added": len(added),
        "removed": len(removed),
    }
    return [
        Monitor(
            "catalog", "items_changed", changed, threshold, changed > threshold, reference, current
        ),
        Monitor("catalog", "category_mix", mix, threshold, mix > threshold, reference, current),
    ]


def check_drift(settings: Settings, db: Database, *, now: datetime | None = None) -> DriftReport:
    """Every monitor, now (see the module)."""
    now = now or datetime.now(UTC)
    mark = load_reference(settings)
    since = datetime.fromisoformat(mark["since"])
    reference, current, rewards = _windows(db, since, settings.drift_window)
    overlap = {d.decision_id for d in reference} & {d.decision_id for d in current}
    full = len(reference) == len(current) == settings.drift_window and not overlap
    monitors = catalog_monitors(db, mark.get("catalog"), settings.drift_catalog_change)
    if full:
        monitors = [
            *input_monitors(reference, current, settings.drift_psi_threshold),
            *outcome_monitors(
                reference, current, rewards, settings.drift_reward_delta, settings.drift_min_samples
            ),
            *monitors,
        ]
    breached = any(m.breached for m in monitors)
    status = "drift" if breached else ("ok" if full else "collecting")
    return DriftReport(
        checked_at=now.isoformat(),
        status=status,
        reference=_window(reference),
        current=_window(current if full else []),
        monitors=monitors,
    )


# --- In the service ------------------------------------------------------------------------------


@dataclass
class DriftWatch:
    """The process's latest drift report (for `/healthz` and the metrics) and its retraining."""

    last: DriftReport | None = None
    lock: threading.Lock = field(default_factory=threading.Lock)

    def degraded(self) -> list[str]:
        """`/healthz` entries, one per kind of monitor the latest check found crossed."""
        if self.last is None:
            return []
        entries = []
        for kind in ("input", "outcome", "catalog"):
            crossed = [m for m in self.last.breached if m.monitor == kind]
            if crossed:
                entries.append(
                    f"drift: {kind} above {crossed[0].threshold:g} for "
                    + ", ".join(f"{m.name} ({m.statistic:.3g})" for m in crossed)
                    + ("; retrained" if self.last.retrained else "")
                )
        return entries
