"""The linear contextual bandit, its shared state, cold-start priors and the bandit simulator."""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from datetime import datetime, timedelta
from pathlib import Path

import numpy as np
import pytest
import yaml
from pydantic import ValidationError

from evals.bandits.learners import LinearLearner, LinearParams, RandomLearner
from evals.bandits.regret import random_regret, score, simulate
from evals.bandits.world import load_offers, make_world
from evals.base import SuiteError
from evals.runner import run_suite
from store.bandit import ArmState
from store.db import Database
from store.errors import Conflict
from store.linear import (
    LinearPrior,
    LinearState,
    ObservationCache,
    add_observation,
    load_state,
)
from store.models import LinearObservation, utcnow
from tools.bandit import ThompsonSampling
from tools.bandit_priors import bandit_priors, margin_reward
from tools.linear import LinearConfig, LinearThompson, LinearUCB, linear_bandit
from tools.offer_features import OfferFeatures, offer_features

DEMO = Path(__file__).resolve().parents[1] / "data" / "demo"
OFFERS = [
    {"offer_id": "books-10", "discount_percent": 10.0, "categories": ["books"]},
    {"offer_id": "wine-30", "discount_percent": 30.0, "categories": ["wine", "spirits"]},
    {"offer_id": "shoes-20", "discount_percent": 20.0, "categories": ["running_shoes"]},
]
PERSON = {
    "channel": "email",
    "recency_days": 3.5,
    "frequency_30d": 12,
    "price_band": "low",
    "category_affinity": {"wine": 0.7, "books": 0.3},
}


@pytest.fixture
def space() -> OfferFeatures:
    return OfferFeatures(o["offer_id"] for o in OFFERS)


def test_offer_features_layout(space: OfferFeatures) -> None:
    assert space.offer_ids == ("books-10", "shoes-20", "wine-30")  # sorted: order-free
    assert space.dim == 3 + 36 == len(space.names)
    assert OfferFeatures(reversed(space.offer_ids)).version == space.version
    x = dict(zip(space.names, space.vector(PERSON, OFFERS[1]), strict=True))
    assert x["offer:wine-30"] == 1.0 and x["offer:books-10"] == 0.0
    assert x["match"] == pytest.approx(0.7) and x["top_match"] == 1.0
    assert x["recency:recent"] == x["frequency:heavy"] == x["price:low"] == x["channel:email"] == 1
    assert x["discount*match"] == pytest.approx(0.7 * 30 / 50)
    assert x["discount*channel:email"] == pytest.approx(30 / 50)
    assert sum(x.values()) == pytest.approx(1 + 0.7 + 1 + 4 + (0.7 + 1 + 4) * 0.6)
    matrix = space.matrix(PERSON, OFFERS)
    assert np.array_equal(matrix[1], offer_features(PERSON, OFFERS[1], space.offer_ids))
    cold = dict(zip(space.names, space.vector({"channel": "web"}, OFFERS[0]), strict=True))
    assert cold["recency:dormant"] == cold["price:unknown"] == cold["frequency:light"] == 1.0
    assert cold["match"] == cold["top_match"] == 0.0


@pytest.mark.parametrize("kind", ["ts", "ucb"])
@pytest.mark.parametrize("epsilon", [0.0, 0.05, 0.3])
def test_probabilities_sum_to_one_and_keep_the_floor(
    space: OfferFeatures, kind: str, epsilon: float
) -> None:
    state = LinearState.empty(space.dim, 1.0)
    rng = np.random.default_rng(0)
    for _ in range(200):  # a state that knows something, so probabilities are uneven
        x = space.vector(PERSON, OFFERS[int(rng.integers(3))])
        state = state.updated(x, float(x[space.index("wine-30")]))
    contexts = space.contexts(PERSON, OFFERS)
    config = LinearConfig(kind=kind, epsilon=epsilon)
    choice = linear_bandit(np.random.default_rng(7), config).choose(contexts, state)
    again = linear_bandit(np.random.default_rng(7), config).choose(contexts, state)
    assert choice == again
    assert set(choice.probabilities) == set(contexts)
    assert sum(choice.probabilities.values()) == pytest.approx(1.0, abs=1e-9)
    floor = epsilon / 3 if epsilon else 1 / (2 * config.draws) / 1.01
    assert min(choice.probabilities.values()) >= floor - 1e-12
    assert choice.propensity == choice.probabilities[choice.offer_id]
    assert choice.probabilities["wine-30"] > 0.6
    assert np.array_equal(choice.features, contexts[choice.offer_id])
    assert choice.observations == 200


def test_ucb_probabilities_are_exact(space: OfferFeatures) -> None:
    state = LinearState.empty(space.dim, 1.0)
    for offer in OFFERS * 30:  # every offer seen equally often; shoes always convert
        state = state.updated(space.vector(PERSON, offer), float(offer is OFFERS[2]))
    choice = LinearUCB(np.random.default_rng(0), LinearConfig(epsilon=0.1)).choose(
        space.contexts(PERSON, OFFERS), state
    )
    assert choice.probabilities == pytest.approx(
        {"books-10": 0.1 / 3, "wine-30": 0.1 / 3, "shoes-20": 0.9 + 0.1 / 3}, abs=1e-12
    )


@pytest.mark.parametrize("kind", ["ts", "ucb"])
def test_margin_weights_steer_the_choice_as_for_thompson(space: OfferFeatures, kind: str) -> None:
    state = LinearState.empty(space.dim, 1.0)
    for i, offer in enumerate(OFFERS * 200):  # every offer converts 10% of the time
        state = state.updated(space.vector(PERSON, offer), float(i % 30 < 3))
    contexts = space.contexts(PERSON, OFFERS)
    bandit = linear_bandit(np.random.default_rng(0), LinearConfig(kind=kind))
    assert bandit.choose(contexts, state).probabilities["books-10"] < 0.6
    weighted = bandit.choose(contexts, state, weights={"books-10": 3.0})
    assert weighted.probabilities["books-10"] > 0.9
    with pytest.raises(ValueError, match="weights must be positive"):
        bandit.choose(contexts, state, weights={"books-10": 0.0})
    assert 0.0 <= bandit.uniform() < 1.0


def test_lints_learns_on_the_simulator() -> None:
    world = make_world(load_offers(DEMO), 3000, np.random.default_rng(11))
    prior = LinearParams.model_validate({"prior": {"alpha": 1, "beta": 19}})
    lints = score(
        world, simulate(world, LinearLearner(world, np.random.default_rng(1), "ts", prior))
    )
    random = score(world, simulate(world, RandomLearner(world, np.random.default_rng(1))))
    assert random.metrics["regret_ratio_vs_random"] == pytest.approx(1.0, abs=0.1)
    assert lints.metrics["regret"] < 0.7 * random_regret(world)
    assert lints.metrics["ctr"] > 1.4 * random.metrics["ctr"]


def test_sherman_morrison_updates_match_the_exact_posterior(space: OfferFeatures) -> None:
    rng = np.random.default_rng(3)
    xs = rng.random((1500, space.dim))  # crosses one exact resync at 1,000
    rewards = rng.random(1500)
    state = LinearState.empty(space.dim, 2.0)
    for x, r in zip(xs, rewards, strict=True):
        state = state.updated(x, r)
    exact = LinearState.from_sums(2.0 * np.eye(space.dim) + xs.T @ xs, xs.T @ rewards)
    assert state.observations == 1500
    np.testing.assert_allclose(state.covariance, exact.covariance, rtol=1e-7, atol=1e-12)
    np.testing.assert_allclose(state.theta, exact.theta, rtol=1e-7, atol=1e-10)
    # The exact state's covariance (from the Cholesky factor's inverse) is A⁻¹, and symmetric.
    np.testing.assert_allclose(exact.covariance @ exact.A, np.eye(space.dim), atol=1e-9)
    np.testing.assert_allclose(exact.covariance, exact.covariance.T, rtol=1e-12, atol=0)
    with pytest.raises(ValueError, match="read-only"):
        state.A[0, 0] = 1.0


def test_concurrent_observations_lose_no_update(database_url: str) -> None:
    """Eight threads with their own connections each append 50 observations, while a worker's
    cache keeps refreshing; the stored and the cached state both hold all 400."""
    url = database_url
    Database(url)
    workers, per_worker, dim = 8, 50, 6

    def vector(worker: int, i: int) -> list[float]:
        return [1.0, worker / 8, i / 50, (worker * i) % 3, 0.5, float(i % 2)]

    def write(worker: int) -> None:
        db = Database(url)
        for i in range(per_worker):
            with db.session() as session:
                add_observation(session, "lints", "all", vector(worker, i), (i % 4) / 3)
        db.dispose()

    cache, done = ObservationCache(), threading.Event()

    def read() -> None:
        db = Database(url)
        while not done.is_set():
            with db.session() as session:
                load_state(session, "lints", "all", dim, 1.0, cache=cache)
        db.dispose()

    reader = threading.Thread(target=read)
    reader.start()
    threads = [threading.Thread(target=write, args=(w,)) for w in range(workers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    done.set()
    reader.join()

    xs = np.array([vector(w, i) for w in range(workers) for i in range(per_worker)])
    with Database(url).session() as session:
        assert session.query(LinearObservation).count() == workers * per_worker
        state = load_state(session, "lints", "all", dim, 1.0)
        cached = load_state(session, "lints", "all", dim, 1.0, cache=cache)
    assert state.observations == cached.observations == workers * per_worker
    assert np.trace(state.A) == pytest.approx(dim + (xs**2).sum())
    np.testing.assert_allclose(cached.A, state.A)
    np.testing.assert_allclose(cached.b, state.b)


def test_cache_folds_a_row_committed_after_a_larger_id(database_url: str) -> None:
    """On PostgreSQL a smaller id can become visible late; the cache must still count it."""
    db = Database(database_url)
    cache = ObservationCache(settle_seconds=60)
    old = utcnow() - timedelta(hours=2)

    def insert(row_id: int, reward: float, created_at: datetime | None = None) -> None:
        with db.session() as session:
            session.add(
                LinearObservation(
                    id=row_id,
                    policy="p",
                    segment="s",
                    x=[1.0, float(row_id)],
                    reward=reward,
                    created_at=created_at or utcnow(),
                )
            )

    insert(1, 1.0, old)
    insert(2, 0.0, old)
    with db.session() as session:
        assert load_state(session, "p", "s", 2, 1.0, cache=cache).observations == 2
    insert(4, 1.0)
    with db.session() as session:
        assert load_state(session, "p", "s", 2, 1.0, cache=cache).observations == 3
    insert(3, 0.5)  # allocated before 4, committed after it was read
    with db.session() as session:
        cached = load_state(session, "p", "s", 2, 1.0, cache=cache)
        full = load_state(session, "p", "s", 2, 1.0)
        assert load_state(session, "p", "s", 2, 1.0, cache=cache).last_id == 4
    assert cached.observations == full.observations == 4
    np.testing.assert_allclose(cached.A, full.A)
    np.testing.assert_allclose(cached.b, full.b)


def test_cache_derives_the_posterior_again_only_after_new_rows_or_another_prior(
    database_url: str,
) -> None:
    """Between two rewards every decision reads the same posterior: the cache derives it once,
    bit for bit what an uncached load derives, and again after a new row or for another prior."""
    db = Database(database_url)
    cache = ObservationCache()
    prior = LinearPrior({0: (10.0, 3.0)})
    with db.session() as session:
        add_observation(session, "p", "s", [1.0, 0.5], 1.0)
    with db.session() as session:
        first = load_state(session, "p", "s", 2, 1.0, prior=prior, cache=cache)
        again = load_state(
            session, "p", "s", 2, 1.0, prior=LinearPrior({0: (10.0, 3.0)}), cache=cache
        )
        assert again is first
        full = load_state(session, "p", "s", 2, 1.0, prior=prior)
        for name in ("A", "b", "covariance", "theta"):
            assert np.array_equal(getattr(first, name), getattr(full, name))
        other = load_state(
            session, "p", "s", 2, 1.0, prior=LinearPrior({1: (4.0, 1.0)}), cache=cache
        )
        assert other is not first and other.b[1] == 1.0 + 0.5
        assert load_state(session, "p", "s", 2, 2.0, prior=prior, cache=cache).A[1, 1] == 2.25
    with db.session() as session:
        add_observation(session, "p", "s", [0.0, 1.0], 0.0)
    with db.session() as session:
        later = load_state(session, "p", "s", 2, 1.0, prior=prior, cache=cache)
        assert later.observations == 2 and later is not first
        assert np.array_equal(later.A, load_state(session, "p", "s", 2, 1.0, prior=prior).A)


def test_cold_start_priors_steer_the_first_choices(space: OfferFeatures) -> None:
    priors = bandit_priors({"shoes-20": {"alpha": 30, "beta": 10}}, space, default=(1.0, 19.0))
    assert priors.beta == {"books-10": (1, 19), "wine-30": (1, 19), "shoes-20": (30, 10)}
    contexts = space.contexts(PERSON, OFFERS)  # the person likes wine, not shoes
    informed = LinearState.empty(space.dim, 1.0, priors.linear)
    uninformed = LinearState.empty(space.dim, 1.0, bandit_priors({}, space, default=(1, 19)).linear)
    lints = LinearThompson(np.random.default_rng(0))
    assert lints.choose(contexts, informed).probabilities["shoes-20"] > 0.9
    assert lints.choose(contexts, informed).estimate == pytest.approx(0.75)
    assert lints.choose(contexts, uninformed).probabilities["shoes-20"] < 0.6
    arms = {
        offer_id: ArmState(offer_id, *priors.beta_of(offer_id, (1, 19)), 0)
        for offer_id in space.offer_ids
    }
    assert ThompsonSampling(np.random.default_rng(0)).choose(arms).probabilities["shoes-20"] > 0.9


@pytest.mark.parametrize("weights", [None, {"a": 1.0, "b": 2.5, "c": 0.5, "d": 1.2}])
def test_thompson_propensities_are_those_of_one_broadcast_draw(
    weights: dict[str, float] | None,
) -> None:
    """`ThompsonSampling.choose` draws each offer's samples row by row; at the same seed, they are
    the numbers of one draw with broadcast parameters, and the generator ends in the same state."""
    arms = {
        offer_id: ArmState(offer_id, alpha, beta, 0)
        for offer_id, alpha, beta in (
            ("a", 1.0, 19.0),
            ("b", 4.0, 30.0),
            ("c", 0.5, 0.7),
            ("d", 12.0, 80.0),
        )
    }
    rng, reference = np.random.default_rng(11), np.random.default_rng(11)
    choice = ThompsonSampling(rng, draws=500).choose(arms, weights=weights)
    ids = sorted(arms)
    alpha = np.array([arms[i].alpha for i in ids])
    beta = np.array([arms[i].beta for i in ids])
    scale = np.array([(weights or {}).get(i, 1.0) for i in ids])
    first = reference.beta(alpha, beta) * scale
    samples = reference.beta(alpha[:, None], beta[:, None], size=(len(ids), 500)) * scale[:, None]
    wins = np.bincount(np.argmax(samples, axis=0), minlength=len(ids))
    assert choice.offer_id == ids[int(np.argmax(first))]
    assert choice.probabilities == {
        i: round(max(w / 500, 1 / 1000), 4) for i, w in zip(ids, wins.tolist(), strict=True)
    }
    assert rng.random() == reference.random()


@pytest.mark.parametrize(
    "call, message",
    [
        (lambda s, st: LinearThompson(np.random.default_rng(0)).choose({}, st), "no eligible"),
        (
            lambda s, st: LinearThompson(np.random.default_rng(0)).choose({"a": np.ones(3)}, st),
            "offer 'a': the feature vector has 3 values but the model has 39",
        ),
        (
            lambda s, st: LinearUCB(np.random.default_rng(0)).choose(
                {"a": np.full(s.dim, np.nan)}, st
            ),
            "NaN or infinite",
        ),
        (lambda s, st: st.updated(np.ones(s.dim), 1.5), r"reward must be in \[0, 1\]"),
        (lambda s, st: st.updated(np.ones(s.dim), float("nan")), r"reward must be in \[0, 1\]"),
        (lambda s, st: s.vector({"channel": "fax"}, OFFERS[0]), "channel'] must be one of"),
        (lambda s, st: s.vector({"channel": "web"}, {**OFFERS[0], "offer_id": "x"}), "not in this"),
        (lambda s, st: bandit_priors({"wine-30": {"alpha": 0, "beta": 1}}, s), "positive"),
        (lambda s, st: bandit_priors({"wine-30": {"alpha": 1}}, s), "exactly alpha and beta"),
        (lambda s, st: OfferFeatures([]), "at least one offer"),
        (lambda s, st: margin_reward(1.0, 1.5, 0.0), "max_margin_weight must be positive"),
        (lambda s, st: LinearConfig(epsilon=1.0), "less than 1"),
    ],
)
def test_clear_validation_errors(
    space: OfferFeatures, call: Callable[[OfferFeatures, LinearState], object], message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        call(space, LinearState.empty(space.dim, 1.0))


def test_stored_observations_are_validated_and_once_per_decision(database_url: str) -> None:
    db = Database(database_url)
    with db.session() as session:
        with pytest.raises(ValueError, match=r"reward must be in \[0, 1\]"):
            add_observation(session, "lints", "web", [1.0, 0.0], -0.1)
        with pytest.raises(ValueError, match="non-empty 1-D"):
            add_observation(session, "lints", "web", [], 1.0)
        add_observation(session, "lints", "web", [1.0, 0.0], 1.0, decision_id="d1")
        with pytest.raises(Conflict, match="already has an observation for decision 'd1'"):
            add_observation(session, "lints", "web", [1.0, 0.0], 1.0, decision_id="d1")
        add_observation(session, "linucb", "web", [1.0, 0.0], 1.0, decision_id="d1")
        add_observation(session, "lints", "web", [1.0, 0.0, 0.0], 1.0)
    with db.session() as session, pytest.raises(ValueError, match="feature layout changed"):
        load_state(session, "lints", "web", 2, 1.0)


def test_margin_reward_scales_into_the_unit_interval() -> None:
    assert margin_reward(1.0, 0.98, 1.96) == pytest.approx(0.5)
    assert margin_reward(0.0, 1.96, 1.96) == 0.0
    assert margin_reward(1.0, 3.0, 1.96) == 1.0  # clipped


def _suite(tmp_path: Path, **changes: object) -> Path:
    suite = {
        "name": "bandit sim smoke",
        "kind": "bandit-sim",
        "datasets": [{"name": "demo-offers", "path": str(DEMO)}],
        "systems": [
            {"name": "random", "type": "random"},
            {"name": "thompson", "type": "thompson", "params": {"prior": {"alpha": 1, "beta": 19}}},
            {"name": "lints", "type": "lints", "params": {"prior": {"alpha": 1, "beta": 19}}},
            {"name": "linucb", "type": "linucb"},
        ],
        "params": {"rounds": 1500},
        "thresholds": [{"metric": "regret_ratio_vs_random", "system": "lints", "max": 0.9}],
        **changes,
    }
    path = tmp_path / "bandits.yaml"
    path.write_text(yaml.safe_dump(suite))
    return path


def test_bandit_sim_suite_end_to_end(tmp_path: Path) -> None:
    report = run_suite(_suite(tmp_path), tmp_path / "report", show_progress=False)
    assert report.passed, report.summary
    assert [row.system for row in report.rows] == ["random", "thompson", "lints", "linucb"]
    for row in report.rows:
        assert set(row.metrics) == {
            "regret",
            "regret_vs_best_fixed",
            "ctr",
            "regret_ratio_vs_random",
            "fixed_regret_ratio_vs_random",
        }
        assert 0 < row.metrics["ctr"] < 0.2
    assert (tmp_path / "report" / "cumulative-regret.png").stat().st_size > 0
    metrics = json.loads((tmp_path / "report" / "metrics.json").read_text())
    assert "Reference policies (expected CTR)" in metrics["tables"]
    again = run_suite(_suite(tmp_path), tmp_path / "again", show_progress=False)
    assert [r.metrics for r in again.rows] == [r.metrics for r in report.rows]  # seeded


@pytest.mark.parametrize(
    "changes, message",
    [
        ({"systems": [{"name": "x", "type": "greedy"}]}, "systems[0].type: unknown system type"),
        (
            {"systems": [{"name": "t", "type": "thompson", "params": {"segment": "city"}}]},
            "systems[0].params.segment",
        ),
        ({"params": {"rounds": 1500, "round": 3}}, "params.round: Extra inputs"),
    ],
)
def test_bandit_sim_names_the_wrong_field(tmp_path: Path, changes: dict, message: str) -> None:
    with pytest.raises(SuiteError, match=message.replace("[", r"\[").replace("]", r"\]")):
        run_suite(_suite(tmp_path, **changes), tmp_path / "report", show_progress=False)


def test_linear_config_is_immutable() -> None:
    config = LinearConfig()
    with pytest.raises(ValidationError):
        config.epsilon = 0.5  # type: ignore[misc]
