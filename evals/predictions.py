"""The `predictions` suite kind: churn risk and next-purchase probability, scored by ROC AUC on a
time split of a world's events (`agents.predictions`), each beside a one-feature baseline.

A dataset is a folder of the demo world's files (`events.jsonl`, `items.jsonl`, `users.jsonl`);
anonymous events count for the user an event of the same anonymous id names, as the service's
identity links would. Only users who granted profiling consent are learnt from.
"""

from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path

from agents.predictions import Activity, Evaluation, by_person, evaluate
from evals.base import Row, RunContext, SuiteResult, register


def world_activity(folder: Path) -> tuple[list[Activity], list[str]]:
    """The events of a demo-world folder as `Activity`, and the catalog's categories."""
    category = {}
    for line in (folder / "items.jsonl").read_text().splitlines():
        item = json.loads(line)
        category[item["item_id"]] = item["category"]
    profiling = set()
    for line in (folder / "users.jsonl").read_text().splitlines():
        user = json.loads(line)
        if user.get("consent", {}).get("profiling"):
            profiling.add(user["user_id"])
    events = [json.loads(line) for line in (folder / "events.jsonl").read_text().splitlines()]
    owner = {e["anonymous_id"]: e["user_id"] for e in events if e["user_id"] and e["anonymous_id"]}
    activity = []
    for e in events:
        person = e["user_id"] or owner.get(e["anonymous_id"])
        if person is None or person not in profiling:
            continue
        ts = datetime.fromisoformat(e["ts"].replace("Z", "+00:00"))
        activity.append(Activity(person, e["type"], ts, category.get(e["item_id"]), e["value"]))
    return activity, sorted(set(category.values()))


@register("predictions")
def run(context: RunContext) -> SuiteResult:
    rows: list[Row] = []
    details = {}
    for dataset in context.suite.datasets:
        activity, categories = world_activity(context.dataset_path(dataset))
        found = evaluate(by_person(activity), categories)
        details[dataset.name] = found.__dict__
        rows += _rows(dataset.name, found)
        context.progress(1)
    return SuiteResult(
        rows=rows,
        details=details,
        notes=[
            "Time split: the test cutoff is 28 days before the newest event; training examples "
            "come from four weekly cutoffs whose label windows end before it. Baselines: days "
            "since the last purchase over the expected interval (churn), the category's share of "
            "the person's affinity (next purchase)."
        ],
    )


def _rows(dataset: str, found: Evaluation) -> list[Row]:
    def metrics(auc: float | None, n: int, rate: float | None) -> dict[str, float]:
        out = {"test_examples": float(n)}
        if auc is not None:
            out["auc"] = auc
        if rate is not None:
            out["positive_rate"] = rate
        return out

    return [
        Row(
            dataset, "churn", metrics(found.churn_auc, found.churn_test, found.churn_positive_rate)
        ),
        Row(dataset, "churn-baseline", metrics(found.churn_baseline_auc, found.churn_test, None)),
        Row(
            dataset,
            "next-purchase",
            metrics(
                found.next_purchase_auc, found.next_purchase_test, found.next_purchase_positive_rate
            ),
        ),
        Row(
            dataset,
            "next-purchase-baseline",
            metrics(found.next_purchase_baseline_auc, found.next_purchase_test, None),
        ),
    ]
