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

The report's tables, plot and notes are in `evals.ope.report`.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path

import numpy as np
from pydantic import ValidationError
from sklearn.linear_model import LogisticRegression

from evals.base import (
    DatasetSpec,
    RunContext,
    SuiteError,
    SuiteResult,
    SystemSpec,
    register,
)
from evals.ope.data import OPEData
from evals.ope.estimators import DM, DR, IPS, SNDR, SNIPS, DRos, Estimator, Slope, SwitchDR
from evals.ope.obd import (
    OBDFormatError,
    OBDLog,
    Random,
    bts_action_dist,
    load_obd,
    read_bts_prior,
)
from evals.ope.params import OBDParams, RewardModelParams
from evals.ope.report import (
    PUBLISHED_ALL,
    CampaignResult,
    published_table,
    report_notes,
    report_plot,
    report_rows,
)
from evals.ope.reward_model import RewardModel

# obp's example tunes Switch-DR and DRos by SLOPE over this grid.
OBP_GRID = [10.0, 50.0, 100.0, 500.0, 1000.0, 5000.0, 10000.0, math.inf]


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
        rows=[row for result in results for row in report_rows(result, params.best_of)],
        plots=[report_plot(result, types) for result in results],
        notes=report_notes(results, params),
        tables=published_table(results, types, params),
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
