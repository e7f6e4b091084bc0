"""The experiment report, from the service's own decision log: each arm's conversion, reward and
revenue per decision, uplift over the control with confidence intervals, a sample-ratio-mismatch
check, and the challenger's off-policy estimate from the live arm's logs beside its measured
value. `attune eval run evals/suites/experiment.yaml` writes it; `GET /v1/experiments/report`
answers it as JSON.

Assignment is per person, so every interval is a bootstrap over people (all of a person's
decisions are resampled together), not over decisions, which would be too narrow.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from scipy import stats
from sqlalchemy import select
from sqlalchemy.orm import Session

from evals.base import Row, RunContext, SuiteError, SuiteResult, register
from evals.ope.data import OPEData
from evals.ope.estimators import DR, IPS, SNIPS, bootstrap
from policies.rules import Experiment
from store.models import Attribution, DecisionRow, RewardRow

METRICS = ("conversion", "reward", "revenue")
SRM_ALPHA = 0.001  # a split this unlikely under the configured shares is a mismatch
RESAMPLES = 1000


@dataclass
class _Arm:
    people: dict[str, list[int]] = field(default_factory=lambda: defaultdict(list))
    conversion: list[float] = field(default_factory=list)
    revenue: list[float] = field(default_factory=list)
    reward: list[float | None] = field(default_factory=list)


@dataclass(frozen=True)
class _Logged:
    """A live-arm decision as off-policy evaluation reads it."""

    offer_id: str
    propensity: float
    reward: float
    challenger: dict[str, float]


def experiment_report(
    session: Session, experiment: Experiment | None, *, seed: int = 0
) -> dict[str, Any]:
    """The report of the experiment the decision log holds (the configured one if it has any
    decisions, else the latest experiment logged)."""
    rows = session.execute(
        select(
            DecisionRow.decision_id, DecisionRow.subject_key, DecisionRow.record, RewardRow.reward
        )
        .outerjoin(RewardRow, RewardRow.decision_id == DecisionRow.decision_id)
        .order_by(DecisionRow.created_at)
    ).all()
    logged = [r for r in rows if (r.record.get("experiment") or {}).get("arm")]
    if not logged:
        return {"experiment": None, "decisions": 0, "note": "no decision in the log has an arm"}
    ids = {r.record["experiment"]["id"] for r in logged}
    wanted = experiment.id if experiment is not None and experiment.id in ids else None
    wanted = wanted or logged[-1].record["experiment"]["id"]
    logged = [r for r in logged if r.record["experiment"]["id"] == wanted]
    purchases = _purchases(session, [r.decision_id for r in logged])
    arms: dict[str, _Arm] = defaultdict(_Arm)
    ope: list[_Logged] = []
    for row in logged:
        arm = arms[row.record["experiment"]["arm"]]
        values = purchases.get(row.decision_id, [])
        arm.people[row.subject_key].append(len(arm.conversion))
        arm.conversion.append(1.0 if values else 0.0)
        arm.revenue.append(float(sum(values)))
        arm.reward.append(row.reward)
        seen = row.record["experiment"].get("challenger")
        choice = row.record.get("choice")
        if seen is not None and choice is not None and row.reward is not None:
            ope.append(
                _Logged(choice["offer_id"], choice["propensity"], row.reward, seen["probabilities"])
            )
    rng = np.random.default_rng(seed)
    per_arm = {name: _arm_summary(arm, rng) for name, arm in sorted(arms.items())}
    report: dict[str, Any] = {
        "experiment": wanted,
        "decisions": len(logged),
        "arms": per_arm,
        "uplift": _uplifts(arms, rng),
        "srm": _srm(arms, experiment if wanted == getattr(experiment, "id", None) else None),
        "off_policy": _off_policy(ope, per_arm.get("challenger"), seed),
        "notes": [
            "Per decision: conversion is the share of decisions with an attributed purchase, "
            "revenue the attributed purchases' value, reward the bandit reward (decisions not "
            "rewarded yet, or without an offer, are left out of reward).",
            "Intervals are 95% percentile bootstraps over people "
            f"({RESAMPLES} resamples, seed {seed}).",
        ],
    }
    return report


def _purchases(session: Session, decision_ids: list[str]) -> dict[str, list[float]]:
    found: dict[str, list[float]] = defaultdict(list)
    for start in range(0, len(decision_ids), 500):
        chunk = decision_ids[start : start + 500]
        for decision_id, value in session.execute(
            select(Attribution.decision_id, Attribution.value).where(
                Attribution.decision_id.in_(chunk), Attribution.type == "purchase"
            )
        ):
            found[decision_id].append(value or 0.0)
    return found


def _values(arm: _Arm, metric: str) -> tuple[np.ndarray, np.ndarray]:
    """Per person: the sum of the metric and the count of decisions it is over."""
    data = getattr(arm, metric)
    sums, counts = [], []
    for rows in arm.people.values():
        kept = [data[i] for i in rows if data[i] is not None]
        sums.append(float(sum(kept)))
        counts.append(len(kept))
    return np.array(sums), np.array(counts, dtype=float)


def _boot(arm: _Arm, metric: str, rng: np.random.Generator) -> tuple[float, np.ndarray]:
    """The metric per decision, and its bootstrap replicates over people."""
    sums, counts = _values(arm, metric)
    if counts.sum() == 0:
        return float("nan"), np.full(RESAMPLES, np.nan)
    picks = rng.integers(0, len(sums), (RESAMPLES, len(sums)))
    with np.errstate(invalid="ignore", divide="ignore"):
        replicates = sums[picks].sum(axis=1) / counts[picks].sum(axis=1)
    return float(sums.sum() / counts.sum()), replicates


def _interval(replicates: np.ndarray) -> list[float] | None:
    kept = replicates[np.isfinite(replicates)]
    if kept.size < 2:
        return None
    low, high = np.quantile(kept, [0.025, 0.975])
    return [round(float(low), 6), round(float(high), 6)]


def _arm_summary(arm: _Arm, rng: np.random.Generator) -> dict[str, Any]:
    out: dict[str, Any] = {
        "people": len(arm.people),
        "decisions": len(arm.conversion),
        "rewarded": sum(r is not None for r in arm.reward),
    }
    for metric in METRICS:
        value, replicates = _boot(arm, metric, rng)
        out[metric] = {"value": _round(value), "ci95": _interval(replicates)}
    return out


def _uplifts(arms: dict[str, _Arm], rng: np.random.Generator) -> dict[str, Any]:
    """Each arm against the control: the difference per decision, and relative (arm / control -
    1), with bootstrap intervals (arms resampled independently)."""
    if "control" not in arms:
        return {}
    out: dict[str, Any] = {}
    for name, arm in sorted(arms.items()):
        if name == "control":
            continue
        out[name] = {}
        for metric in METRICS:
            base, base_boot = _boot(arms["control"], metric, rng)
            value, boot = _boot(arm, metric, rng)
            with np.errstate(invalid="ignore", divide="ignore"):
                relative = boot / base_boot - 1
            out[name][metric] = {
                "difference": _round(value - base),
                "ci95": _interval(boot - base_boot),
                "relative": _round(value / base - 1) if base else None,
                "relative_ci95": _interval(relative) if base else None,
            }
    return out


def sample_ratio_mismatch(counts: dict[str, int], shares: dict[str, float]) -> dict[str, Any]:
    """Pearson's chi-square test of the people per arm against the configured shares."""
    names = [name for name in sorted(shares) if shares[name] > 0]
    observed = np.array([counts.get(name, 0) for name in names], dtype=float)
    total = observed.sum()
    expected = np.array([shares[name] for name in names]) / sum(shares[n] for n in names) * total
    if total == 0 or len(names) < 2:
        return {"chi2": None, "p_value": None, "mismatch": False, "observed": counts}
    chi2, p_value = stats.chisquare(observed, expected)
    return {
        "chi2": _round(float(chi2)),
        "p_value": float(p_value),
        "alpha": SRM_ALPHA,
        "mismatch": bool(p_value < SRM_ALPHA),
        "observed": dict(zip(names, observed.astype(int).tolist(), strict=True)),
        "expected": dict(zip(names, [round(float(e), 1) for e in expected], strict=True)),
    }


def _srm(arms: dict[str, _Arm], experiment: Experiment | None) -> dict[str, Any]:
    counts = {name: len(arm.people) for name, arm in arms.items()}
    if experiment is None:
        return {
            "chi2": None,
            "p_value": None,
            "mismatch": False,
            "observed": counts,
            "note": "the experiment is no longer in the policy file: its shares are unknown",
        }
    return sample_ratio_mismatch(
        counts, {str(arm): share for arm, share in experiment.arms.items()}
    )


def _off_policy(
    logged: list[_Logged], measured: dict[str, Any] | None, seed: int
) -> dict[str, Any] | None:
    """IPS, SNIPS and DR estimates of the challenger's reward per decision from the live arm's
    rewarded decisions, where the challenger's probabilities on the same requests were logged.
    DR's reward model is each offer's mean reward in those logs."""
    if not logged:
        return None
    offers = sorted({e.offer_id for e in logged} | {o for e in logged for o in e.challenger})
    index = {offer: i for i, offer in enumerate(offers)}
    actions = np.array([index[e.offer_id] for e in logged], dtype=np.int64)
    rewards = np.array([e.reward for e in logged])
    dist = np.zeros((len(logged), len(offers), 1))
    for i, e in enumerate(logged):
        for offer, p in e.challenger.items():
            dist[i, index[offer], 0] = p
    totals = dist.sum(axis=1, keepdims=True)
    usable = totals[:, 0, 0] > 0  # the challenger had an eligible offer for the request
    dist = np.where(totals > 0, dist / np.where(totals > 0, totals, 1), 0)
    means = np.array(
        [
            rewards[actions == a].mean() if np.any(actions == a) else rewards.mean()
            for a in range(len(offers))
        ]
    )
    q = np.broadcast_to(means[None, :, None], dist.shape).copy()
    data = OPEData(
        actions=actions[usable],
        rewards=rewards[usable],
        pscore=np.array([e.propensity for e in logged])[usable],
        action_dist=dist[usable],
        estimated_rewards=q[usable],
    )
    estimates = {}
    for estimator in (IPS(), SNIPS(), DR()):
        result = bootstrap(estimator, data, n=RESAMPLES, seed=seed)
        estimates[estimator.name] = {
            "value": _round(result.estimate),
            "ci95": [_round(result.ci_low), _round(result.ci_high)],
        }
    return {
        "target": "challenger",
        "logged_by": "live",
        "rounds": int(usable.sum()),
        "estimates": estimates,
        "measured": measured["reward"] if measured is not None else None,
        "logged_policy_value": _round(float(rewards.mean())),
    }


def _round(value: float) -> float | None:
    return None if not np.isfinite(value) else round(float(value), 6)


# -- the suite kind ---------------------------------------------------------------------------


@register("experiment")
def experiment_suite(ctx: RunContext) -> SuiteResult:
    """The experiment report over the decision log of the service the settings point at."""
    from agents.settings import Settings
    from policies.engine import PolicyEngine
    from policies.rules import PolicyError, load_policy
    from store.db import Database
    from tools.rewards import Rewarder

    settings = Settings()
    try:
        live = PolicyEngine(load_policy(settings.policy_path))
        challenger = live.policy.experiment and live.policy.experiment.challenger
        rewarder = Rewarder(live, PolicyEngine(load_policy(challenger)) if challenger else None)
    except PolicyError as error:
        raise SuiteError(f"ATTUNE_POLICY_PATH: {error}") from error
    db = Database(settings.resolved_database_url)
    try:
        from datetime import UTC, datetime

        with db.session() as session:  # windows that closed are rewarded before reading
            while rewarder.settle_due(session, datetime.now(UTC)).closed:
                pass
        with db.session() as session:
            report = experiment_report(session, live.policy.experiment, seed=ctx.suite.seed)
    finally:
        db.dispose()
    return SuiteResult(
        rows=_rows(report, ctx.suite.datasets[0].name),
        notes=_notes(report),
        details={"experiment": report},
    )


def _rows(report: dict[str, Any], dataset: str) -> list[Row]:
    rows = []
    for name, arm in report.get("arms", {}).items():
        metrics = {m: arm[m]["value"] for m in METRICS if arm[m]["value"] is not None}
        metrics |= {"decisions": arm["decisions"], "people": arm["people"]}
        for metric, uplift in report["uplift"].get(name, {}).items():
            if uplift["difference"] is not None:
                metrics[f"uplift_{metric}"] = uplift["difference"]
        rows.append(Row(dataset=dataset, system=name, metrics=metrics))
    srm = report.get("srm") or {}
    if srm.get("p_value") is not None:
        rows.append(Row(dataset=dataset, system="split", metrics={"srm_p": srm["p_value"]}))
    ope = report.get("off_policy")
    if ope is not None:
        for name, estimate in ope["estimates"].items():
            rows.append(
                Row(
                    dataset=dataset,
                    system=f"challenger-{name}",
                    metrics={"reward": estimate["value"]},
                )
            )
    return rows


def _notes(report: dict[str, Any]) -> list[str]:
    if not report.get("arms"):
        return [report.get("note", "no experiment in the decision log")]
    lines = [f"Experiment `{report['experiment']}`, {report['decisions']} decisions.", ""]
    lines += [
        "| arm | people | decisions | conversion [95% CI] | reward [95% CI] | revenue [95% CI] |",
        "|---|---|---|---|---|---|",
    ]
    for name, arm in report["arms"].items():
        cells = [_cell(arm[m]) for m in METRICS]
        lines.append(
            f"| {name} | {arm['people']} | {arm['decisions']} | " + " | ".join(cells) + " |"
        )
    lines += [
        "",
        "| uplift over control | conversion [95% CI] | reward [95% CI] | revenue [95% CI] |",
        "|---|---|---|---|",
    ]
    for name, uplift in report["uplift"].items():
        cells = [f"{uplift[m]['difference']} {uplift[m]['ci95']}" for m in METRICS]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    srm = report["srm"]
    lines += [
        "",
        f"Sample ratio: observed {srm.get('observed')}, expected {srm.get('expected')}, "
        f"chi-square p = {srm.get('p_value')}: "
        + ("**mismatch**" if srm.get("mismatch") else "no mismatch"),
    ]
    ope = report.get("off_policy")
    if ope is not None:
        lines += [
            "",
            f"Challenger, estimated from {ope['rounds']} live-arm decisions: "
            + ", ".join(f"{k} {v['value']} {v['ci95']}" for k, v in ope["estimates"].items())
            + f"; measured on its own arm: {_cell(ope['measured']) if ope['measured'] else 'none'}.",
        ]
    return ["\n".join(lines)]


def _cell(metric: dict[str, Any]) -> str:
    return f"{metric['value']} {metric['ci95']}"
