"""The `ope-obd` suite kind: off-policy estimators against the Open Bandit Dataset's ground truth.

The experiment of the Open Bandit Pipeline's `examples/obd` (Saito et al., NeurIPS 2021 Datasets
and Benchmarks): estimate the value (click rate) of the production Bernoulli Thompson sampling
policy from the uniform-random policy's log of a campaign, and compare each estimate with BTS's
observed click rate in its own log of the same campaign. Each bootstrap run resamples the random
log with replacement and re-fits the reward model; a row reports, per estimator, the mean and
standard deviation over the runs of the relative error |estimate - truth| / truth.

Suite fields: each dataset is an OBD folder (holding random/, bts/ and prior_bts.yaml) with
`params: {campaign: all|men|women}`; each system is an estimator, `type` one of ipw, snipw, dm,
dr, sndr, switch-dr (param `tau`), dr-os (param `lambda`) — a list of values is tuned per run by
SLOPE, as obp's *Tuning estimators; `params` are `OBDParams`.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from sklearn.linear_model import LogisticRegression

from evals.base import (
    DatasetSpec,
    Plot,
    Row,
    RunContext,
    SuiteError,
    SuiteResult,
    SystemSpec,
    register,
)
from evals.obd import (
    OBDFormatError,
    OBDLog,
    Random,
    bts_action_dist,
    load_obd,
    read_bts_prior,
)
from evals.ope import (
    DM,
    DR,
    IPS,
    SNDR,
    SNIPS,
    DRos,
    Estimator,
    OPEData,
    RewardModel,
    Slope,
    SwitchDR,
)

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
# obp's example tunes Switch-DR and DRos by SLOPE over this grid.
OBP_GRID = [10.0, 50.0, 100.0, 500.0, 1000.0, 5000.0, 10000.0, math.inf]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class RewardModelParams(_Strict):
    """The reward model of DM and the DR family; the defaults are obp's example."""

    type: Literal["logistic_regression"] = "logistic_regression"
    C: float = Field(100.0, gt=0)
    max_iter: int = Field(10_000, ge=1)
    folds: int = Field(3, ge=1, description="cross-fitting folds; 1 fits and predicts on all")
    context: list[Literal["user", "affinity"]] = Field(["user"], min_length=1)
    action_features: Literal["item_context", "one_hot"] = "item_context"
    per_position: bool = True


class BestOf(_Strict):
    """An extra row: the lowest mean relative error among `systems` (a gate on 'A or B')."""

    name: str = Field(min_length=1)
    systems: list[str] = Field(min_length=1)


class OBDParams(_Strict):
    n_bootstrap: int = Field(30, ge=1)
    n_sim: int = Field(1_000_000, ge=1, description="Monte Carlo draws for BTS's distribution")
    behavior_policy: Literal["random", "bts"] = "random"
    evaluation_policy: Literal["bts", "random"] = "bts"
    prior: str = Field("prior_bts.yaml", description="BTS prior, relative to the dataset path")
    rng: Literal["numpy", "obp"] = Field(
        "numpy",
        description="numpy: Generator streams spawned from the suite's seed. obp: the legacy "
        "streams of obp's example, run b resampling with RandomState(b) and BTS simulated with "
        "RandomState(seed), so that seed 12345 replays the published experiment's draws.",
    )
    reward_model: RewardModelParams = Field(
        default_factory=lambda: RewardModelParams.model_validate({})
    )
    best_of: BestOf | None = None


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


@register("ope-obd")
def ope_obd(ctx: RunContext) -> SuiteResult:
    """Relative error of off-policy estimates of BTS's click rate on the Open Bandit Dataset."""
    try:
        params = OBDParams.model_validate(ctx.suite.params)
    except ValidationError as error:
        problems = (
            f"params.{'.'.join(str(part) for part in problem['loc'])}: {problem['msg']}"
            for problem in error.errors()
        )
        raise SuiteError("; ".join(problems)) from None
    systems = ctx.suite.systems or default_systems()
    estimators = {}
    for index, system in enumerate(systems):
        try:
            estimators[system.name] = build_estimator(system)
        except ValueError as error:
            raise SuiteError(f"systems[{index}]: {error}") from None
    if params.best_of is not None and set(params.best_of.systems) - set(estimators):
        missing = sorted(set(params.best_of.systems) - set(estimators))
        raise SuiteError(f"params.best_of.systems: {missing} are not systems of the suite")
    ctx.set_total(len(ctx.suite.datasets) * params.n_bootstrap)
    results = [
        run_campaign(
            dataset.name,
            ctx.dataset_path(dataset),
            _campaign(dataset),
            estimators,
            params,
            seed=ctx.suite.seed,
            progress=ctx.progress,
        )
        for dataset in ctx.suite.datasets
    ]
    types = {system.name: system.type for system in systems}
    return SuiteResult(
        rows=[row for result in results for row in _rows(result, params.best_of)],
        plots=[_plot(result, types) for result in results],
        notes=_notes(results, params),
        tables=_published_table(results, types, params),
        details={
            result.dataset: {
                "campaign": result.campaign,
                "ground_truth": result.ground_truth,
                "estimates": result.estimates,
                "relative_errors": {
                    name: result.relative_errors(name).tolist() for name in result.estimates
                },
                "slope_choices": result.choices,
            }
            for result in results
        },
    )


def default_systems() -> list[SystemSpec]:
    """The estimators of obp's example, Switch-DR and DRos tuned by SLOPE over its grid."""
    tuned = {"switch-dr": {"tau": OBP_GRID}, "dr-os": {"lambda": OBP_GRID}}
    return [SystemSpec(name=name, type=name, params=tuned.get(name, {})) for name in PUBLISHED_ALL]


def build_estimator(system: SystemSpec) -> Estimator:
    """The estimator a suite's system names: ipw, snipw, dm, dr, sndr, switch-dr, dr-os."""
    plain: dict[str, Callable[[], Estimator]] = {
        "ipw": IPS,
        "snipw": SNIPS,
        "dm": DM,
        "dr": DR,
        "sndr": SNDR,
    }
    tuned: dict[str, tuple[str, Callable[[float], Estimator]]] = {
        "switch-dr": ("tau", lambda value: SwitchDR(tau=value)),
        "dr-os": ("lambda", lambda value: DRos(lambda_=value)),
    }
    if system.type in plain:
        if system.params:
            raise ValueError(f"system {system.name!r} ({system.type}) takes no params")
        return plain[system.type]()
    if system.type in tuned:
        key, make = tuned[system.type]
        if set(system.params) != {key}:
            raise ValueError(
                f"system {system.name!r} ({system.type}) needs exactly the param {key!r}: a number"
                f" or a list tuned by SLOPE (obp's grid is {OBP_GRID})"
            )
        value = system.params[key]
        if isinstance(value, list):
            return Slope(tuple(make(float(v)) for v in value))
        return make(float(value))
    known = sorted([*plain, *tuned])
    raise ValueError(f"system {system.name!r} has unknown type {system.type!r}; known: {known}")


def run_campaign(
    dataset: str,
    root: Path,
    campaign: str,
    estimators: dict[str, Estimator],
    params: OBDParams,
    seed: int = 0,
    progress: Callable[[int], None] = lambda n: None,
) -> CampaignResult:
    """Estimate the evaluation policy's value from the behaviour log, `n_bootstrap` times."""
    logged = load_obd(root, params.behavior_policy, campaign)
    truth_log = load_obd(root, params.evaluation_policy, campaign)
    ground_truth = float(truth_log.rewards.mean())
    if ground_truth <= 0:
        raise OBDFormatError(f"the {params.evaluation_policy} log of {campaign!r} has no clicks")
    n = logged.n_rounds
    if params.rng == "obp":
        table_rng: Random = np.random.RandomState(seed)
        resamples = (
            np.random.RandomState(run).choice(n, size=n, replace=True)
            for run in range(params.n_bootstrap)
        )
    else:
        streams = np.random.SeedSequence(seed).spawn(params.n_bootstrap + 1)
        table_rng = np.random.default_rng(streams[0])
        resamples = (np.random.default_rng(stream).integers(0, n, n) for stream in streams[1:])
    table = _evaluation_table(root, campaign, logged, params, table_rng)
    context = logged.context(params.reward_model.context)
    model = _reward_model(logged, params.reward_model)
    action_dist = np.broadcast_to(table[None], (n, *table.shape))
    estimates: dict[str, list[float]] = {name: [] for name in estimators}
    choices: dict[str, list[str]] = {
        name: [] for name, estimator in estimators.items() if isinstance(estimator, Slope)
    }
    for rows in resamples:
        estimated_rewards = model.fit_predict(
            context[rows],
            logged.actions[rows],
            logged.rewards[rows],
            logged.positions[rows],
            folds=params.reward_model.folds,
            seed=seed,
        )
        data = OPEData(
            actions=logged.actions[rows],
            rewards=logged.rewards[rows],
            pscore=logged.pscore[rows],
            action_dist=action_dist,
            positions=logged.positions[rows],
            estimated_rewards=estimated_rewards,
        )
        for name, estimator in estimators.items():
            if isinstance(estimator, Slope):
                chosen = estimator.select(data)
                choices[name].append(repr(chosen))
                estimates[name].append(chosen.estimate(data))
            else:
                estimates[name].append(estimator.estimate(data))
        progress(1)
    return CampaignResult(dataset, campaign, ground_truth, estimates, choices)


def _campaign(dataset: DatasetSpec) -> str:
    campaign = dataset.params.get("campaign")
    if not isinstance(campaign, str):
        raise SuiteError(f"datasets: {dataset.name!r} needs params: {{campaign: all|men|women}}")
    return campaign


def _evaluation_table(
    root: Path, campaign: str, logged: OBDLog, params: OBDParams, rng: Random
) -> np.ndarray:
    """The evaluation policy's (n_actions, n_positions) distribution; it ignores the context."""
    if params.evaluation_policy == "random":
        return np.full((logged.n_actions, logged.n_positions), 1.0 / logged.n_actions)
    alpha, beta = read_bts_prior(root / params.prior, campaign)
    if alpha.shape[0] != logged.n_actions:
        raise OBDFormatError(
            f"the BTS prior of {campaign!r} has {alpha.shape[0]} items, the log {logged.n_actions}"
        )
    return bts_action_dist(alpha, beta, logged.n_positions, params.n_sim, rng=rng)


def _reward_model(logged: OBDLog, params: RewardModelParams) -> RewardModel:
    base = LogisticRegression(C=params.C, max_iter=params.max_iter)
    features = logged.item_features if params.action_features == "item_context" else None
    return RewardModel(base, logged.n_actions, logged.n_positions, features, params.per_position)


def _rows(result: CampaignResult, best_of: BestOf | None) -> list[Row]:
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


def _published_table(
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


def _plot(result: CampaignResult, types: dict[str, str]) -> Plot:
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


def _notes(results: list[CampaignResult], params: OBDParams) -> list[str]:
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
