"""The `fairness` suite kind: exposure and reward by group over the service's own decision log,
and item coverage, so that no group is starved.

Groups, each a dimension of the decision as it was made: **tenure** (`new`: no events yet when
the decision was made; `returning`), **age band** (from the age the decision recorded; `unknown`
for visitors and people without a birth date) and **locale** (the person's, `unknown` for
anonymous visitors). Per group:

- `share_of_impressions`: its share of everything shown (items, and the offer when there was
  one), next to `share_of_decisions`;
- `exposure_ratio` = share of impressions / share of decisions: 1 means as much shown per
  decision as anyone; a group far below 1 gets fewer items or offers than the rest;
- `offer_ratio`: its offer rate over the overall offer rate (an age gate makes this low for
  minors on purpose: set the gate where the policy allows);
- `reward_rate`: rewards per decision that showed an offer.

A group with fewer than `min_decisions` decisions (a suite param) is shown but not gated. The
`service` row holds the gated figures: `min_exposure_ratio`, `min_offer_ratio` over the gated
groups, `item_coverage` (distinct items shown / catalog items) and `offer_coverage`.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from sqlalchemy import func, select

from agents.settings import Settings
from evals.base import Row, RunContext, SuiteError, SuiteResult, register
from store.cohort import people
from store.db import Database
from store.models import CatalogItem, CatalogOffer, DecisionRow, RewardRow

AGE_BANDS = ((18, "<18"), (25, "18-24"), (35, "25-34"), (45, "35-44"), (55, "45-54"), (65, "55-64"))
DIMENSIONS = ("tenure", "age_band", "locale")


def age_band(age: int | None) -> str:
    if age is None:
        return "unknown"
    return next((band for ceiling, band in AGE_BANDS if age < ceiling), "65+")


@dataclass
class Shown:
    """One decision as exposure counts it."""

    groups: dict[str, str]  # dimension → group
    items: list[str]
    offer_id: str | None
    reward: float | None


@dataclass
class GroupExposure:
    dimension: str
    group: str
    decisions: int = 0
    impressions: int = 0
    offers: int = 0
    reward: float = 0.0
    metrics: dict[str, float] = field(default_factory=dict)


@dataclass(frozen=True)
class FairnessReport:
    decisions: int
    groups: list[GroupExposure]
    item_coverage: float
    offer_coverage: float
    min_exposure_ratio: float | None
    min_offer_ratio: float | None
    starved: list[str]  # "dimension:group" of gated groups below the limit


def decisions_shown(db: Database, *, since: datetime | None = None) -> list[Shown]:
    """Every logged decision (since `since`), with its groups, what it showed and its reward."""
    with db.session() as session:
        query = select(
            DecisionRow.decision_id,
            DecisionRow.user_id,
            DecisionRow.offer_id,
            DecisionRow.record,
            RewardRow.reward,
        ).join(RewardRow, RewardRow.decision_id == DecisionRow.decision_id, isouter=True)
        if since is not None:
            query = query.where(DecisionRow.created_at >= since)
        rows = session.execute(query).all()
        facts = people(session, sorted({r.user_id for r in rows if r.user_id}))
    out = []
    for _, user_id, offer_id, record, reward in rows:
        features = record.get("features") or {}
        person = facts.get(user_id) if user_id else None
        candidates = (record.get("retrieval") or {}).get("candidates") or []
        out.append(
            Shown(
                groups={
                    "tenure": "new" if not features.get("event_count") else "returning",
                    "age_band": age_band(features.get("age")),
                    "locale": (person.locale if person else None) or "unknown",
                },
                items=[c["item_id"] for c in candidates if "item_id" in c],
                offer_id=offer_id,
                reward=reward,
            )
        )
    return out


def exposure(
    shown: Iterable[Shown],
    *,
    catalog_items: int,
    catalog_offers: int,
    min_decisions: int,
    starved_below: float,
) -> FairnessReport:
    shown = list(shown)
    groups: dict[tuple[str, str], GroupExposure] = {}
    items: set[str] = set()
    offers: set[str] = set()
    for s in shown:
        items.update(s.items)
        if s.offer_id:
            offers.add(s.offer_id)
        for dimension, group in s.groups.items():
            g = groups.setdefault((dimension, group), GroupExposure(dimension, group))
            g.decisions += 1
            g.impressions += len(s.items) + (1 if s.offer_id else 0)
            if s.offer_id:
                g.offers += 1
                g.reward += s.reward or 0.0
    total = len(shown)
    impressions = sum(len(s.items) + (1 if s.offer_id else 0) for s in shown)
    offer_rate = sum(1 for s in shown if s.offer_id) / total if total else 0.0
    gated: list[GroupExposure] = []
    for g in groups.values():
        share_decisions = g.decisions / total
        share_impressions = g.impressions / impressions if impressions else 0.0
        g.metrics = {
            "decisions": float(g.decisions),
            "share_of_decisions": round(share_decisions, 4),
            "share_of_impressions": round(share_impressions, 4),
            "exposure_ratio": round(share_impressions / share_decisions, 4),
            "offer_rate": round(g.offers / g.decisions, 4),
            "offer_ratio": round(g.offers / g.decisions / offer_rate, 4) if offer_rate else 1.0,
        }
        if g.offers:
            g.metrics["reward_rate"] = round(g.reward / g.offers, 4)
        if g.decisions >= min_decisions:
            gated.append(g)
    ordered = sorted(groups.values(), key=lambda g: (DIMENSIONS.index(g.dimension), g.group))
    return FairnessReport(
        decisions=total,
        groups=ordered,
        item_coverage=round(len(items) / catalog_items, 4) if catalog_items else 0.0,
        offer_coverage=round(len(offers) / catalog_offers, 4) if catalog_offers else 0.0,
        min_exposure_ratio=min((g.metrics["exposure_ratio"] for g in gated), default=None),
        min_offer_ratio=min((g.metrics["offer_ratio"] for g in gated), default=None),
        starved=[
            f"{g.dimension}:{g.group}" for g in gated if g.metrics["exposure_ratio"] < starved_below
        ],
    )


def fairness_report(
    db: Database, *, min_decisions: int = 20, starved_below: float = 0.5
) -> FairnessReport:
    """The report over the whole decision log of `db`."""
    shown = decisions_shown(db)
    with db.session() as session:
        n_items = session.scalar(select(func.count()).select_from(CatalogItem)) or 0
        n_offers = session.scalar(select(func.count()).select_from(CatalogOffer)) or 0
    return exposure(
        shown,
        catalog_items=n_items,
        catalog_offers=n_offers,
        min_decisions=min_decisions,
        starved_below=starved_below,
    )


@register("fairness")
def run(context: RunContext) -> SuiteResult:
    params: dict[str, Any] = context.suite.params
    rows: list[Row] = []
    notes: list[str] = []
    details: dict[str, Any] = {}
    for dataset in context.suite.datasets:
        home = context.dataset_path(dataset)
        db = _database(home)
        try:
            report = fairness_report(
                db,
                min_decisions=int(params.get("min_decisions", 20)),
                starved_below=float(params.get("starved_below", 0.5)),
            )
        finally:
            db.dispose()
        if not report.decisions:
            raise SuiteError(f"datasets: {dataset.name}: the decision log at {home} is empty")
        service = {
            "decisions": float(report.decisions),
            "item_coverage": report.item_coverage,
            "offer_coverage": report.offer_coverage,
        }
        if report.min_exposure_ratio is not None:
            service["min_exposure_ratio"] = report.min_exposure_ratio
        if report.min_offer_ratio is not None:
            service["min_offer_ratio"] = report.min_offer_ratio
        rows.append(Row(dataset.name, "service", service))
        rows += [Row(dataset.name, f"{g.dimension}:{g.group}", g.metrics) for g in report.groups]
        details[dataset.name] = {"starved": report.starved}
        notes.append(
            f"{dataset.name}: starved groups (exposure ratio below "
            f"{params.get('starved_below', 0.5)}): {', '.join(report.starved) or 'none'}."
        )
        context.progress(1)
    return SuiteResult(rows=rows, notes=notes, details=details)


def _database(home: Path) -> Database:
    """The database of the service whose home is `home` (ATTUNE_DATABASE_URL wins, as in the
    service)."""
    settings = Settings(home=home)
    if settings.database_url is None and not (home / "attune.db").is_file():
        raise SuiteError(f"datasets: no attune.db in {home}; point the path at the service's home")
    return Database(settings.resolved_database_url)
