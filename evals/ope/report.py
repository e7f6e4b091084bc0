"""The `ope-obd` report: rows per estimator, the published example beside ours, the plot and notes."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from evals.base import (
    Plot,
    Row,
)
from evals.ope.params import BestOf, OBDParams

# The pipeline's example on this small sample (zr-obp examples/obd/README.md, 2022): BTS estimated
# from the random log of the ALL campaign, logistic regression, 30 bootstrap runs, (mean, std).
PUBLISHED_ALL: dict[str, tuple[float, float]] = {
    "dm": (0.157, 0.110),
    "ipw": (0.311, 0.311),
    "snipw": (0.312, 0.335),
    "dr": (0.293, 0.316),
    "sndr": (0.302, 0.328),
    "switch-dr": (0.258, 0.161),
    "dr-os": (0.160, 0.110),
}


@dataclass
class CampaignResult:
    """Every run's estimate per system on one dataset, and the truth they are compared with."""

    dataset: str
    campaign: str
    ground_truth: float
    estimates: dict[str, list[float]]  # system -> one estimate per bootstrap run
    choices: dict[str, list[str]]  # SLOPE-tuned system -> the candidate chosen per run

    def relative_errors(self, system: str) -> np.ndarray:
        return np.abs(np.array(self.estimates[system]) - self.ground_truth) / self.ground_truth


def report_rows(result: CampaignResult, best_of: BestOf | None) -> list[Row]:
    rows = []
    for name, estimates in result.estimates.items():
        errors = result.relative_errors(name)
        rows.append(
            Row(
                dataset=result.dataset,
                system=name,
                metrics={
                    "relative_error": float(errors.mean()),
                    "estimate": float(np.mean(estimates)),
                },
                spread={"relative_error": _std(errors), "estimate": _std(estimates)},
            )
        )
    if best_of is not None:
        best = min(best_of.systems, key=lambda name: result.relative_errors(name).mean())
        source = next(row for row in rows if row.system == best)
        rows.append(Row(result.dataset, best_of.name, dict(source.metrics), dict(source.spread)))
    return rows


def _std(values: Any) -> float:
    # The sample standard deviation (ddof = 1), as the published table (pandas' describe).
    return float(np.std(values, ddof=1)) if len(values) > 1 else 0.0


def _published_applies(result: CampaignResult, params: OBDParams) -> bool:
    return (
        result.campaign == "all"
        and params.behavior_policy == "random"
        and params.evaluation_policy == "bts"
    )


def published_table(
    results: list[CampaignResult], types: dict[str, str], params: OBDParams
) -> dict[str, list[dict[str, Any]]]:
    table = []
    for result in results:
        if not _published_applies(result, params):
            continue
        for name in result.estimates:
            if types[name] not in PUBLISHED_ALL:
                continue
            published_mean, published_std = PUBLISHED_ALL[types[name]]
            errors = result.relative_errors(name)
            table.append(
                {
                    "dataset": result.dataset,
                    "estimator": name,
                    "attune_mean": round(float(errors.mean()), 3),
                    "attune_std": round(_std(errors), 3),
                    "published_mean": published_mean,
                    "published_std": published_std,
                    "difference": round(float(errors.mean()) - published_mean, 3),
                    "within_published_mean_plus_std": bool(
                        errors.mean() <= published_mean + published_std
                    ),
                }
            )
    return {"published": table} if table else {}


def report_plot(result: CampaignResult, types: dict[str, str]) -> Plot:
    names = list(result.estimates)
    means = [float(result.relative_errors(name).mean()) for name in names]
    stds = [_std(result.relative_errors(name)) for name in names]
    published = [PUBLISHED_ALL.get(types[name]) for name in names]
    show_published = result.campaign == "all" and any(p is not None for p in published)

    def draw(ax: Any) -> None:
        x = np.arange(len(names))
        width = 0.4 if show_published else 0.6
        offset = width / 2 if show_published else 0.0
        ax.bar(x - offset, means, width, yerr=stds, capsize=3, label="Attune")
        if show_published:
            ax.bar(
                x + offset,
                [p[0] if p else np.nan for p in published],
                width,
                yerr=[p[1] if p else 0.0 for p in published],
                capsize=3,
                label="obp example (published)",
            )
        ax.set_xticks(x)
        ax.set_xticklabels(names, rotation=30, ha="right")
        ax.set_ylabel("relative error (mean ± std over runs)")
        ax.legend()

    return Plot(
        name=f"relative-error-{result.dataset}",
        title=f"Relative error estimating BTS's click rate from random logs ({result.campaign})",
        draw=draw,
    )


def report_notes(results: list[CampaignResult], params: OBDParams) -> list[str]:
    model = params.reward_model
    notes = [
        f"Protocol of the Open Bandit Pipeline's OBD example (Saito, Aihara, Matsutani, Narita, "
        f"NeurIPS 2021 Datasets and Benchmarks): the {params.evaluation_policy} policy's click "
        f"rate is estimated from the {params.behavior_policy} log, {params.n_bootstrap} "
        f"bootstrap resamples of the log, the reward model re-fitted on each "
        f"({model.type}, C={model.C:g}, {model.folds}-fold cross-fitting, context: "
        f"{' + '.join(model.context)}, action features: {model.action_features}, "
        f"{'one model per position' if model.per_position else 'position as a feature'}); "
        f"BTS's action distribution from its production prior by {params.n_sim:,} Monte Carlo "
        "draws. Ground truth: the evaluation policy's mean click in its own log of the campaign.",
    ]
    for result in results:
        line = f"{result.dataset} ({result.campaign}): ground truth {result.ground_truth:.4%}."
        for name, chosen in result.choices.items():
            counts: dict[str, int] = {}
            for choice in chosen:
                counts[choice] = counts.get(choice, 0) + 1
            picks = ", ".join(f"{choice} ×{count}" for choice, count in counts.items())
            line += f" SLOPE picked for {name}: {picks}."
        notes.append(line)
    if not any(_published_applies(r, params) for r in results):
        notes.append("Published figures exist only for the ALL campaign (random → BTS).")
    return notes
