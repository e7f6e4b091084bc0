"""Off-policy estimators, the OBD loader, BTS's action distribution and the `ope-obd` kind."""

from __future__ import annotations

import csv
import math
import os
import re
from pathlib import Path

import numpy as np
import pytest
import yaml
from sklearn.linear_model import LogisticRegression

from evals.base import RunContext, Suite
from evals.ope.data import OPEData, OPEInputError
from evals.ope.estimators import DM, DR, IPS, SNDR, SNIPS, DRos, Slope, SwitchDR, bootstrap
from evals.ope.obd import (
    OBDFormatError,
    bts_action_dist,
    load_obd,
    read_bts_prior,
    sample_bts_slates,
)
from evals.ope.reward_model import RewardModel

REPO = Path(__file__).resolve().parents[1]

# A small world with a known value: two contexts, three actions, two positions.
P_CONTEXT = np.array([0.3, 0.7])
Q_TRUE = np.array(  # P(click | context, action, position)
    [
        [[0.10, 0.05], [0.30, 0.20], [0.50, 0.40]],
        [[0.60, 0.50], [0.20, 0.10], [0.05, 0.02]],
    ]
)
PI_B = np.array([[0.5, 0.3, 0.2], [0.2, 0.2, 0.6]])  # logging policy, per context
PI_E = np.array([[0.1, 0.2, 0.7], [0.8, 0.1, 0.1]])  # target policy, per context
P_POSITION = np.array([0.6, 0.4])
TRUE_VALUE = float(
    sum(
        P_CONTEXT[x] * P_POSITION[k] * PI_E[x, a] * Q_TRUE[x, a, k]
        for x in range(2)
        for a in range(3)
        for k in range(2)
    )
)


def simulate(n: int, seed: int, model: np.ndarray | None = None) -> tuple[OPEData, np.ndarray]:
    """Logged rounds of the small world; `model` (context, action, position) is the reward model."""
    rng = np.random.default_rng(seed)
    x = rng.choice(2, size=n, p=P_CONTEXT)
    k = rng.choice(2, size=n, p=P_POSITION)
    a = (rng.random(n)[:, None] > np.cumsum(PI_B[x], axis=1)).sum(axis=1)
    r = (rng.random(n) < Q_TRUE[x, a, k]).astype(float)
    action_dist = np.repeat(PI_E[x][:, :, None], 2, axis=2)
    estimated = None if model is None else model[x]
    data = OPEData(a, r, PI_B[x, a], action_dist, k, estimated)
    return data, x


@pytest.fixture(scope="module")
def world() -> tuple[OPEData, np.ndarray]:
    return simulate(200_000, seed=1, model=np.full((2, 3, 2), 0.3))


@pytest.mark.parametrize("estimator", [IPS(), SNIPS(), DR(), SNDR(), SwitchDR(tau=5.0)])
def test_estimators_recover_the_true_value(world, estimator) -> None:
    # The reward model is wrong (0.3 everywhere): the importance-weighted ones must not care.
    data, _ = world
    assert estimator.estimate(data) == pytest.approx(TRUE_VALUE, abs=0.006)


def test_ips_is_unbiased_over_many_logs() -> None:
    estimates = [IPS().estimate(simulate(2_000, seed=s)[0]) for s in range(200)]
    standard_error = np.std(estimates) / math.sqrt(len(estimates))
    assert abs(np.mean(estimates) - TRUE_VALUE) < 4 * standard_error


def test_dm_is_exact_with_the_true_reward_model() -> None:
    data, x = simulate(5_000, seed=2, model=Q_TRUE)
    k = data.slots
    expected = np.mean([PI_E[x[i]] @ Q_TRUE[x[i], :, k[i]] for i in range(data.n_rounds)])
    assert DM().estimate(data) == pytest.approx(expected, rel=1e-12)


def test_dr_equals_dm_when_the_model_predicts_every_reward() -> None:
    data, _ = simulate(3_000, seed=3)
    predicted = np.repeat(data.rewards[:, None, None], 3, axis=1).repeat(2, axis=2)
    exact = OPEData(
        data.actions, data.rewards, data.pscore, data.action_dist, data.positions, predicted
    )
    dm = DM().estimate(exact)
    for estimator in (DR(), SNDR(), SwitchDR(tau=1.0), DRos(lambda_=10.0)):
        assert estimator.estimate(exact) == pytest.approx(dm, rel=1e-12)


def test_importance_weighting_on_policy_is_the_mean_reward() -> None:
    data, x = simulate(3_000, seed=4)
    on_policy = OPEData(
        data.actions,
        data.rewards,
        data.pscore,
        np.repeat(PI_B[x][:, :, None], 2, 2),
        data.positions,
    )
    assert IPS().estimate(on_policy) == pytest.approx(data.rewards.mean(), rel=1e-12)
    assert SNIPS().estimate(on_policy) == pytest.approx(data.rewards.mean(), rel=1e-12)


def test_switch_and_shrinkage_span_dm_to_dr(world) -> None:
    data, _ = world
    dm, dr = DM().estimate(data), DR().estimate(data)
    assert SwitchDR(tau=math.inf).estimate(data) == pytest.approx(dr, rel=1e-12)
    assert SwitchDR(tau=0.0).estimate(data) == pytest.approx(dm, rel=1e-12)
    assert DRos(lambda_=math.inf).estimate(data) == pytest.approx(dr, rel=1e-12)
    assert DRos(lambda_=0.0).estimate(data) == pytest.approx(dm, rel=1e-12)


def test_slope_picks_one_candidate_of_one_family(world) -> None:
    data, _ = world
    candidates = tuple(DRos(lambda_=v) for v in (0.1, 1.0, 10.0, math.inf))
    tuned = Slope(candidates)
    assert tuned.select(data) in candidates
    assert tuned.name == "dr-os"
    assert tuned.estimate(data) == tuned.select(data).estimate(data)
    with pytest.raises(OPEInputError, match="one estimator family"):
        Slope((DRos(lambda_=1.0), SwitchDR(tau=1.0)))


def test_bootstrap_is_seeded_and_matches_the_standard_error() -> None:
    data, _ = simulate(20_000, seed=5)
    first = bootstrap(IPS(), data, n=400, seed=7)
    assert first == bootstrap(IPS(), data, n=400, seed=7)
    terms = IPS().terms(data).correction
    assert first.std == pytest.approx(terms.std() / math.sqrt(data.n_rounds), rel=0.15)
    assert first.ci_low < first.estimate < first.ci_high
    snips = bootstrap(SNIPS(), data, n=200, seed=7)
    assert snips.ci_low < snips.estimate < snips.ci_high
    # Resampling the data itself agrees with resampling the terms.
    rows = np.random.default_rng(3).integers(0, data.n_rounds, data.n_rounds)
    assert SNIPS().estimate(data.take(rows)) == pytest.approx(
        SNIPS().terms(data).take(rows).value(), rel=1e-12
    )


def _valid() -> dict:
    return {
        "actions": np.array([0, 1, 2]),
        "rewards": np.array([1.0, 0.0, 1.0]),
        "pscore": np.array([0.5, 0.25, 0.25]),
        "action_dist": np.full((3, 3, 2), 1 / 3),
        "positions": np.array([0, 1, 0]),
    }


@pytest.mark.parametrize(
    "change, message",
    [
        ({"pscore": np.array([0.5, 0.0, 0.25])}, r"pscore must lie in \(0, 1\]"),
        ({"pscore": np.array([0.5, 1.5, 0.25])}, r"pscore must lie in \(0, 1\]"),
        ({"rewards": np.array([1.0, np.nan, 0.0])}, "rewards holds NaN"),
        ({"rewards": np.array([1.0, 0.0])}, r"rewards must have shape \(3,\)"),
        ({"actions": np.array([0, 1, 3])}, r"actions must lie in \[0, 3\)"),
        ({"actions": np.array([0.0, 1.0, 2.0])}, "integer indices"),
        ({"action_dist": np.full((3, 3), 1 / 3)}, "action_dist must have shape"),
        ({"action_dist": np.full((3, 3, 2), 0.5)}, "must sum to 1 over actions"),
        ({"positions": np.array([0, 2, 0])}, r"positions must lie in \[0, 2\)"),
        ({"positions": None}, "pass positions"),
        ({"estimated_rewards": np.zeros((3, 3, 1))}, "estimated_rewards must have shape"),
    ],
)
def test_invalid_inputs_are_rejected_with_the_fix(change: dict, message: str) -> None:
    with pytest.raises(OPEInputError, match=message):
        OPEData(**{**_valid(), **change})


def test_model_based_estimators_ask_for_a_reward_model() -> None:
    data = OPEData(**_valid())
    with pytest.raises(OPEInputError, match="dr needs estimated_rewards"):
        DR().estimate(data)


def test_self_normalized_estimators_need_a_logged_action_the_target_takes() -> None:
    elsewhere = np.zeros((3, 3, 2))
    elsewhere[:, 1, :] = 1.0  # the target always takes action 1, never logged below
    data = OPEData(**{**_valid(), "actions": np.array([0, 2, 2]), "action_dist": elsewhere})
    assert IPS().estimate(data) == 0.0
    with pytest.raises(OPEInputError, match="self-normalized estimate is undefined"):
        SNIPS().estimate(data)


@pytest.mark.parametrize("bad", [SwitchDR, DRos])
def test_negative_hyperparameters_are_rejected(bad) -> None:
    with pytest.raises(OPEInputError, match=">= 0"):
        bad(-1.0)


@pytest.mark.parametrize("per_position", [True, False])
def test_reward_model_cross_fits_every_action_and_position(per_position: bool) -> None:
    # Clicks from a logistic model additive in context, action and position, which both
    # layouts of the features can express.
    rng = np.random.default_rng(0)
    n = 6_000
    context = rng.normal(size=(n, 1))
    actions = rng.integers(0, 3, size=n)
    positions = rng.integers(0, 2, size=n)

    def truth(x: np.ndarray, a: np.ndarray, k: np.ndarray) -> np.ndarray:
        return 1 / (1 + np.exp(-(-1.0 + 0.8 * x + np.array([0.0, 1.0, -1.0])[a] - 0.5 * k)))

    rewards = (rng.random(n) < truth(context[:, 0], actions, positions)).astype(float)
    model = RewardModel(LogisticRegression(C=100, max_iter=1000), 3, 2, per_position=per_position)
    predicted = model.fit_predict(context, actions, rewards, positions, folds=3, seed=0)
    assert predicted.shape == (n, 3, 2)
    grid = truth(
        context[:, 0, None, None], np.arange(3)[None, :, None], np.arange(2)[None, None, :]
    )
    assert np.abs(predicted - grid).max() < 0.1
    again = model.fit_predict(context, actions, rewards, positions, folds=3, seed=0)
    np.testing.assert_array_equal(predicted, again)


def test_reward_model_without_clicks_predicts_zero() -> None:
    model = RewardModel(LogisticRegression(), n_actions=2)
    predicted = model.fit_predict(np.ones((10, 1)), np.arange(10) % 2, np.zeros(10), folds=2)
    np.testing.assert_array_equal(predicted, np.zeros((10, 2, 1)))


def test_bts_slates_hold_each_item_once_and_the_distribution_sums_to_one() -> None:
    alpha, beta = np.arange(1.0, 9.0), np.full(8, 20.0)
    slates = sample_bts_slates(alpha, beta, 3, 5_000, np.random.default_rng(0))
    assert all(len(set(slate)) == 3 for slate in slates.tolist())
    dist = bts_action_dist(alpha, beta, 3, 20_000, rng=np.random.default_rng(0), chunk=3_000)
    np.testing.assert_allclose(dist.sum(axis=0), 1.0)
    assert np.all(dist.sum(axis=1) <= 1.0 + 1e-12)  # an item is in at most one slot per slate
    assert dist[:, 0].argmax() == 7  # the highest prior mean leads most often
    again = bts_action_dist(alpha, beta, 3, 20_000, rng=np.random.default_rng(0), chunk=3_000)
    np.testing.assert_array_equal(dist, again)


def test_bts_with_flat_priors_is_uniform() -> None:
    dist = bts_action_dist(np.ones(5), np.ones(5), 2, 50_000, rng=np.random.default_rng(1))
    np.testing.assert_allclose(dist, 0.2, atol=0.01)


def _write_obd(root: Path, policy: str = "random", campaign: str = "men") -> None:
    folder = root / policy / campaign
    folder.mkdir(parents=True)
    header = ["", "timestamp", "item_id", "position", "click", "propensity_score"]
    header += ["user_feature_0", "user_feature_1", "user-item_affinity_0", "user-item_affinity_1"]
    rows = [
        [0, "2019-11-24 00:00:03+00:00", 1, 2, 0, 0.5, "b", "x", 0.0, 1.0],
        [1, "2019-11-24 00:00:01+00:00", 0, 1, 1, 0.5, "a", "x", 2.0, 0.0],
        [2, "2019-11-24 00:00:02+00:00", 1, 3, 0, 0.5, "c", "x", 0.0, 3.0],
    ]
    with (folder / f"{campaign}.csv").open("w", newline="") as handle:
        csv.writer(handle).writerows([header, *rows])
    items = [
        ["", "item_id", "item_feature_0", "item_feature_1"],
        [0, 0, -0.5, "f00d"],
        [1, 1, 0.25, "beef"],
    ]
    with (folder / "item_context.csv").open("w", newline="") as handle:
        csv.writer(handle).writerows(items)
    (root / "prior_bts.yaml").write_text(
        yaml.safe_dump({campaign: {"alpha": [1.0, 2.0], "beta": [3.0, 4.0]}})
    )


def test_obd_loader_reads_the_format(tmp_path: Path) -> None:
    _write_obd(tmp_path)
    log = load_obd(tmp_path, "random", "men")
    # Rows in time order; positions 1..3 become 0..2; clicks and propensities as numbers.
    np.testing.assert_array_equal(log.actions, [0, 1, 1])
    np.testing.assert_array_equal(log.positions, [0, 2, 1])
    np.testing.assert_array_equal(log.rewards, [1.0, 0.0, 0.0])
    # One-hot user features without each column's first category (a; x is the only category).
    np.testing.assert_array_equal(log.user_features, [[0, 0], [0, 1], [1, 0]])
    np.testing.assert_array_equal(log.affinity, [[2.0, 0.0], [0.0, 3.0], [0.0, 1.0]])
    np.testing.assert_array_equal(log.context(["user", "affinity"])[:, 2:], log.affinity)
    # Item features: numeric kept, hashed categories label-encoded in sorted order, no item id.
    np.testing.assert_array_equal(log.item_features, [[-0.5, 1], [0.25, 0]])
    assert (log.n_actions, log.n_positions, log.n_rounds) == (2, 3, 3)
    alpha, beta = read_bts_prior(tmp_path / "prior_bts.yaml", "men")
    np.testing.assert_array_equal(np.stack([alpha, beta]), [[1.0, 2.0], [3.0, 4.0]])


def test_obd_loader_says_what_is_missing(tmp_path: Path) -> None:
    with pytest.raises(OBDFormatError, match=r"no file .*random/all/all.csv"):
        load_obd(tmp_path, "random", "all")
    with pytest.raises(OBDFormatError, match="campaign must be one of"):
        load_obd(tmp_path, "random", "kids")
    _write_obd(tmp_path)
    with pytest.raises(OBDFormatError, match="no alpha/beta lists for campaign 'all'"):
        read_bts_prior(tmp_path / "prior_bts.yaml", "all")


@pytest.mark.parametrize(
    "system, message",
    [
        ({"type": "magic"}, "unknown type 'magic'"),
        ({"type": "dm", "params": {"tau": 1}}, "takes no params"),
        ({"type": "switch-dr"}, "needs exactly the param 'tau'"),
        ({"type": "dr-os", "params": {"lambda": -1}}, ">= 0"),
    ],
)
def test_suite_systems_name_known_estimators(system: dict, message: str) -> None:
    from evals.base import SystemSpec
    from evals.ope.suite import build_estimator

    with pytest.raises(ValueError, match=message):
        build_estimator(SystemSpec(name="x", **system))


def test_suite_systems_build_fixed_and_tuned_estimators() -> None:
    from evals.base import SystemSpec
    from evals.ope.suite import build_estimator

    assert build_estimator(SystemSpec(name="s", type="switch-dr", params={"tau": 5})) == SwitchDR(
        5.0
    )
    tuned = build_estimator(SystemSpec(name="d", type="dr-os", params={"lambda": [1, math.inf]}))
    assert tuned == Slope((DRos(1.0), DRos(math.inf)))


@pytest.mark.parametrize(
    "change, message",
    [
        ({"params": {"n_bootstrap": 0}}, "params.n_bootstrap: Input should be greater"),
        ({"params": {"best_of": {"name": "b", "systems": ["nope"]}}}, r"\['nope'\] are not"),
        ({"systems": [{"name": "x", "type": "magic"}]}, r"systems\[0\]: .*unknown type"),
        ({"datasets": [{"name": "obd", "path": "obd"}]}, "needs params: {campaign"),
    ],
)
def test_the_kind_reports_suite_mistakes(tmp_path: Path, change: dict, message: str) -> None:
    from evals.base import SuiteError
    from evals.ope.suite import ope_obd

    spec = {
        "name": "t",
        "kind": "ope-obd",
        "datasets": [{"name": "obd", "path": "obd", "params": {"campaign": "all"}}],
        **change,
    }
    with pytest.raises(SuiteError, match=message):
        ope_obd(RunContext(Suite.model_validate(spec), tmp_path, tmp_path))


def _data_dir() -> Path:
    configured = os.environ.get("ATTUNE_DATA_DIR")
    return Path(configured) if configured else REPO.parent / "shared" / "data"


def _expand(text: str) -> str:
    # The suite file's `${VAR:-default}`, as the runner expands it.
    return re.sub(r"\$\{(\w+)(?::-([^}]*))?\}", lambda m: os.environ.get(m[1], m[2] or ""), text)


@pytest.mark.skipif(
    not (_data_dir() / "obd" / "random" / "all" / "all.csv").is_file(),
    reason=f"the Open Bandit Dataset sample is not at {_data_dir() / 'obd'} "
    "(set ATTUNE_DATA_DIR to the folder holding obd/)",
)
def test_ope_obd_kind_end_to_end_on_the_sample(tmp_path: Path) -> None:
    from evals.base import KINDS
    from evals.ope.report import PUBLISHED_ALL

    suite_file = REPO / "evals" / "suites" / "obd.yaml"
    spec = yaml.safe_load(_expand(suite_file.read_text()))
    spec["datasets"] = [d for d in spec["datasets"] if d["params"]["campaign"] == "all"]
    spec["params"].update(n_bootstrap=2, n_sim=20_000)
    suite = Suite.model_validate(spec)
    steps: list[int] = []
    ctx = RunContext(suite, suite_file.parent, tmp_path, progress=steps.append)
    result = KINDS["ope-obd"](ctx)

    assert sum(steps) == 2
    systems = {row.system for row in result.rows}
    assert systems == set(PUBLISHED_ALL) | {"best-of-dm-dr-os"}
    for row in result.rows:
        assert 0 <= row.metrics["relative_error"] < 5
        assert 0 < row.metrics["estimate"] < 0.05
    assert {entry["estimator"] for entry in result.tables["published"]} == set(PUBLISHED_ALL)
    truth = result.details["obd-all"]["ground_truth"]
    assert truth == pytest.approx(0.0042, abs=1e-4)  # BTS's click rate in the ALL sample

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, ax = plt.subplots()
    result.plots[0].draw(ax)
    plt.close(figure)
