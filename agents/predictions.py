"""Predictions as features: each person's churn risk and next-purchase probability per category.

Both are logistic regressions (scikit-learn) over what a person's events say at a cutoff, labelled
by what they did after it:

- **churn risk**: the chance of no purchase within the person's expected inter-purchase interval
  (the median gap between their purchases; the population's median for one purchase), clipped
  to [7, 28] days. Only people who bought at least once have an interval to miss.
- **next purchase**, per catalog category: the chance of a purchase in that category within the
  next 28 days, one pooled model over (person, category) pairs.

Time split: the test cutoff is 28 days before the newest event, so its labels are the last 28
days; training examples are cut at four weekly cutoffs whose labels end before the test cutoff,
so nothing after the test cutoff is learnt from. The offline metric is the ROC AUC on the test
cutoff. The served models are then refitted with the test cutoff's examples too and score every
person as of the newest event; the scores are stored (`store.predictions`), read with the
features, erased with the person.
"""

from __future__ import annotations

import itertools
import logging
import math
import statistics
import time
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

import numpy as np
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score
from sklearn.pipeline import Pipeline, make_pipeline
from sklearn.preprocessing import StandardScaler
from sqlalchemy import select

from store.db import Database
from store.models import CatalogItem, EventRow
from store.predictions import Prediction, replace_predictions
from store.users import anonymous_owners, consenting_users

log = logging.getLogger("attune.predictions")

HORIZON = timedelta(days=28)  # the longest label window, and the test window
MIN_INTERVAL_DAYS = 7.0
TRAIN_CUTOFFS = 4  # weekly cutoffs of training examples, the latest one HORIZON before the test


@dataclass(frozen=True)
class Activity:
    """One event of a person, as the predictions read it."""

    person: str
    kind: str
    ts: datetime
    category: str | None
    value: float | None = None


History = Sequence[Activity]  # one person's events, oldest first


@dataclass(frozen=True)
class Evaluation:
    """The offline metric of both models on a time split, with what it was measured on."""

    churn_auc: float | None
    churn_baseline_auc: float | None  # days since the last purchase over the interval, alone
    churn_test: int  # people scored at the test cutoff
    churn_positive_rate: float | None
    next_purchase_auc: float | None
    next_purchase_baseline_auc: float | None  # the category's share of the person's affinity
    next_purchase_test: int  # (person, category) pairs scored at the test cutoff
    next_purchase_positive_rate: float | None
    test_cutoff: str


@dataclass(frozen=True)
class PredictionReport:
    version: str
    people: int
    evaluation: Evaluation
    seconds: float


def by_person(activity: Iterable[Activity]) -> dict[str, list[Activity]]:
    histories: dict[str, list[Activity]] = defaultdict(list)
    for event in activity:
        histories[event.person].append(event)
    for events in histories.values():
        events.sort(key=lambda e: e.ts)
    return dict(histories)


def _days(delta: timedelta) -> float:
    return delta.total_seconds() / 86400


def _purchases(history: History, cutoff: datetime) -> list[Activity]:
    return [e for e in history if e.kind == "purchase" and e.ts <= cutoff]


def population_interval(histories: Mapping[str, History], cutoff: datetime) -> float:
    """The median gap between consecutive purchases of anyone, in days, up to `cutoff`."""
    gaps = [
        _days(b.ts - a.ts)
        for history in histories.values()
        for a, b in _pairs(_purchases(history, cutoff))
    ]
    return statistics.median(gaps) if gaps else _days(HORIZON)


def _pairs(events: Sequence[Activity]) -> Iterable[tuple[Activity, Activity]]:
    return itertools.pairwise(events)


def expected_interval(history: History, cutoff: datetime, default: float) -> float:
    gaps = [_days(b.ts - a.ts) for a, b in _pairs(_purchases(history, cutoff))]
    interval = statistics.median(gaps) if gaps else default
    return min(max(interval, MIN_INTERVAL_DAYS), _days(HORIZON))


def churn_features(
    history: History, cutoff: datetime, default_interval: float
) -> tuple[list[float], float] | None:
    """(x, expected interval in days) at `cutoff`, or None for someone who never bought."""
    purchases = _purchases(history, cutoff)
    if not purchases:
        return None
    interval = expected_interval(history, cutoff, default_interval)
    before = [e for e in history if e.ts <= cutoff]
    since_purchase = _days(cutoff - purchases[-1].ts)
    since_event = _days(cutoff - before[-1].ts)
    recent = sum(1 for e in before if _days(cutoff - e.ts) <= 14)
    month = sum(1 for e in before if _days(cutoff - e.ts) <= 30)
    spent = sum(e.value or 0.0 for e in purchases)
    x = [
        since_purchase / interval,
        min(since_event, 90.0) / 30.0,
        math.log1p(len(purchases)),
        math.log1p(recent),
        math.log1p(month),
        math.log1p(spent),
    ]
    return x, interval


def churned(history: History, cutoff: datetime, interval_days: float) -> bool:
    """No purchase in (cutoff, cutoff + interval]."""
    end = cutoff + timedelta(days=interval_days)
    return not any(e.kind == "purchase" and cutoff < e.ts <= end for e in history)


def next_purchase_features(
    history: History, cutoff: datetime, categories: Sequence[str], base_rates: Mapping[str, float]
) -> dict[str, list[float]] | None:
    """x per category at `cutoff`, or None for someone with no events before it."""
    before = [e for e in history if e.ts <= cutoff]
    if not before:
        return None
    weights = {"view": 1.0, "click": 2.0, "add_to_cart": 4.0, "purchase": 8.0}
    affinity: dict[str, float] = defaultdict(float)
    bought: dict[str, int] = defaultdict(int)
    touched: dict[str, int] = defaultdict(int)
    last_seen: dict[str, float] = {}
    for e in before:
        if e.category is None:
            continue
        age = _days(cutoff - e.ts)
        affinity[e.category] += weights.get(e.kind, 1.0) * 0.5 ** (age / 30.0)
        last_seen[e.category] = age
        if e.kind == "purchase":
            bought[e.category] += 1
        if age <= 30:
            touched[e.category] += 1
    total = sum(affinity.values()) or 1.0
    purchases = sum(bought.values())
    month = sum(1 for e in before if _days(cutoff - e.ts) <= 30)
    return {
        category: [
            affinity[category] / total,
            math.log1p(bought[category]),
            math.log1p(touched[category]),
            min(last_seen.get(category, 120.0), 120.0) / 30.0,
            math.log1p(purchases),
            math.log1p(month),
            base_rates.get(category, 0.0),
        ]
        for category in categories
    }


def bought_in(history: History, cutoff: datetime, category: str) -> bool:
    end = cutoff + HORIZON
    return any(
        e.kind == "purchase" and e.category == category and cutoff < e.ts <= end for e in history
    )


def _base_rates(histories: Mapping[str, History], cutoff: datetime) -> dict[str, float]:
    counts: dict[str, int] = defaultdict(int)
    for history in histories.values():
        for e in _purchases(history, cutoff):
            if e.category is not None:
                counts[e.category] += 1
    total = sum(counts.values()) or 1
    return {category: n / total for category, n in counts.items()}


Examples = tuple[list[list[float]], list[int]]


def churn_examples(histories: Mapping[str, History], cutoff: datetime) -> Examples:
    default = population_interval(histories, cutoff)
    xs, ys = [], []
    for history in histories.values():
        found = churn_features(history, cutoff, default)
        if found is not None:
            xs.append(found[0])
            ys.append(int(churned(history, cutoff, found[1])))
    return xs, ys


def next_purchase_examples(
    histories: Mapping[str, History], cutoff: datetime, categories: Sequence[str]
) -> Examples:
    rates = _base_rates(histories, cutoff)
    xs, ys = [], []
    for history in histories.values():
        found = next_purchase_features(history, cutoff, categories, rates)
        if found is None:
            continue
        for category, x in found.items():
            xs.append(x)
            ys.append(int(bought_in(history, cutoff, category)))
    return xs, ys


def _cutoffs(newest: datetime) -> tuple[datetime, list[datetime]]:
    """The test cutoff and the training cutoffs, whose label windows end before it."""
    test = newest - HORIZON
    latest = test - HORIZON
    return test, [latest - timedelta(weeks=week) for week in range(TRAIN_CUTOFFS)]


def _stack(parts: Iterable[Examples]) -> Examples:
    xs: list[list[float]] = []
    ys: list[int] = []
    for x, y in parts:
        xs += x
        ys += y
    return xs, ys


def _fit(examples: Examples) -> Pipeline | None:
    xs, ys = examples
    if len(set(ys)) < 2:
        return None  # one class only: nothing to tell apart
    model = make_pipeline(StandardScaler(), LogisticRegression(max_iter=1000))
    model.fit(np.asarray(xs), np.asarray(ys))
    return model


def _auc(ys: Sequence[int], scores: Sequence[float]) -> float | None:
    if len(set(ys)) < 2:
        return None
    return round(float(roc_auc_score(ys, scores)), 4)


def _scores(model: Pipeline | None, xs: Sequence[Sequence[float]]) -> list[float]:
    if model is None or not xs:
        return [0.0] * len(xs)
    return [float(p) for p in model.predict_proba(np.asarray(xs))[:, 1]]


def evaluate(histories: Mapping[str, History], categories: Sequence[str]) -> Evaluation:
    """Both models' ROC AUC on the time split (see the module), next to a one-feature baseline."""
    newest = max(e.ts for history in histories.values() for e in history)
    test, train = _cutoffs(newest)
    churn = _fit(_stack(churn_examples(histories, c) for c in train))
    churn_x, churn_y = churn_examples(histories, test)
    nxt = _fit(_stack(next_purchase_examples(histories, c, categories) for c in train))
    next_x, next_y = next_purchase_examples(histories, test, categories)
    return Evaluation(
        churn_auc=_auc(churn_y, _scores(churn, churn_x)),
        churn_baseline_auc=_auc(churn_y, [x[0] for x in churn_x]),
        churn_test=len(churn_y),
        churn_positive_rate=round(sum(churn_y) / len(churn_y), 4) if churn_y else None,
        next_purchase_auc=_auc(next_y, _scores(nxt, next_x)),
        next_purchase_baseline_auc=_auc(next_y, [x[0] for x in next_x]),
        next_purchase_test=len(next_y),
        next_purchase_positive_rate=round(sum(next_y) / len(next_y), 4) if next_y else None,
        test_cutoff=test.isoformat(),
    )


def predict(
    histories: Mapping[str, History], categories: Sequence[str], *, version: str
) -> dict[str, Prediction]:
    """Every person's predictions as of the newest event, from models fitted on every cutoff
    whose labels are known (the test cutoff's too)."""
    newest = max(e.ts for history in histories.values() for e in history)
    test, train = _cutoffs(newest)
    cutoffs = [test, *train]
    churn = _fit(_stack(churn_examples(histories, c) for c in cutoffs))
    nxt = _fit(_stack(next_purchase_examples(histories, c, categories) for c in cutoffs))
    default = population_interval(histories, newest)
    rates = _base_rates(histories, newest)
    out: dict[str, Prediction] = {}
    for person, history in histories.items():
        found = churn_features(history, newest, default)
        risk = (
            round(_scores(churn, [found[0]])[0], 4)
            if found is not None and churn is not None
            else None
        )
        per_category = next_purchase_features(history, newest, categories, rates) or {}
        if nxt is None:
            per_category = {}
        probabilities = _scores(nxt, list(per_category.values()))
        out[person] = Prediction(
            churn_risk=risk,
            next_purchase={
                c: round(p, 4) for c, p in zip(per_category, probabilities, strict=True)
            },
            model_version=version,
        )
    return out


# --- From the event store, for `attune train` --------------------------------------------------


def store_activity(db: Database, *, consent: str | None) -> tuple[list[Activity], list[str]]:
    """Every known person's events (anonymous ones counted for their linked user), with the
    catalog's categories. With `consent`, only people who granted that purpose."""
    with db.session() as session:
        allowed = consenting_users(session, consent)
        links = anonymous_owners(session)
        rows = session.execute(
            select(
                EventRow.user_id,
                EventRow.anonymous_id,
                EventRow.type,
                EventRow.ts,
                EventRow.value,
                CatalogItem.category,
            ).join(CatalogItem, CatalogItem.item_id == EventRow.item_id, isouter=True)
        ).all()
        categories = sorted(set(session.scalars(select(CatalogItem.category).distinct())))
    activity = []
    for user_id, anonymous_id, kind, ts, value, category in rows:
        person = user_id or links.get(anonymous_id or "")
        if person is None or (allowed is not None and person not in allowed):
            continue
        activity.append(Activity(person, kind, ts, category, value))
    return activity, categories


def train_predictions(
    db: Database, *, consent: str | None, now: datetime
) -> PredictionReport | None:
    """Evaluate, refit and store every person's predictions; None when there are no events."""
    started = time.perf_counter()
    activity, categories = store_activity(db, consent=consent)
    if not activity:
        return None
    histories = by_person(activity)
    evaluation = evaluate(histories, categories)
    version = f"predictions@{now.isoformat()}"
    predictions = predict(histories, categories, version=version)
    with db.session() as session:
        people = replace_predictions(session, predictions, computed_at=now)
    report = PredictionReport(version, people, evaluation, round(time.perf_counter() - started, 3))
    log.info(
        "predictions trained: %d people, churn AUC %s, next-purchase AUC %s",
        people,
        evaluation.churn_auc,
        evaluation.next_purchase_auc,
    )
    return report
