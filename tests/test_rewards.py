"""Behaviour becomes reward, and experiments are measured: attribution, the reward policy, the
sweep's default reward, arms, the sample-ratio check and the experiment report, on a small demo
world served with the demo experiment policy (data/demo/experiment/)."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select

from agents.factory import build_services
from agents.rewards import settle
from agents.seed import read_jsonl, seed
from agents.services import Services
from agents.settings import PROJECT_ROOT, Settings
from api.app import create_app
from evals.experiment import experiment_report, sample_ratio_mismatch
from evals.simulate import simulate
from policies.engine import PolicyEngine
from policies.rules import load_policy
from store.attribution import reward_source
from store.bandit import ArmState, get_arms
from store.decisions import get_reward
from store.models import Attribution, RewardSource, RewardWindow
from store.schemas import Offer
from tests.small_world import write_small_world

POLICY = PROJECT_ROOT / "data" / "demo" / "experiment" / "policy.yaml"
WINDOW = timedelta(hours=24)


@pytest.fixture(scope="module")
def services(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Services]:
    world = write_small_world(tmp_path_factory.mktemp("rewards-world"))
    built = build_services(
        Settings(home=tmp_path_factory.mktemp("rewards-home"), seed=7, policy_path=POLICY)
    )
    seed(built, world)
    yield built
    built.close()


@pytest.fixture(scope="module")
def client(services: Services) -> Iterator[TestClient]:
    with TestClient(create_app(services=lambda: services)) as test_client:
        yield test_client


def decide_with_offer(client: TestClient, user_id: str) -> dict[str, Any]:
    response = client.post("/v1/decide", json={"user_id": user_id, "channel": "web", "k": 5})
    assert response.status_code == 200, response.text
    decision = response.json()
    assert decision["offer"] is not None, "the demo world offers something on the web"
    return decision


def posterior(services: Services, decision_id: str) -> ArmState:
    with services.db.session() as session:
        record = client_record(services, decision_id)
        choice = record["choice"]
        offer = choice["offer_id"]
        prior = services.policy.policy.prior(offer)
        return get_arms(session, choice["policy"], choice["segment"], [offer], lambda _: prior)[
            offer
        ]


def client_record(services: Services, decision_id: str) -> dict[str, Any]:
    from store.decisions import get_decision

    with services.db.session() as session:
        return get_decision(session, decision_id).record


def post_events(client: TestClient, *events: dict[str, Any]) -> list[dict[str, Any]]:
    response = client.post("/v1/events", json={"events": list(events)})
    assert response.status_code == 200, response.text
    return response.json()["results"]


def at(delta: timedelta) -> str:
    return (datetime.now(UTC) + delta).isoformat()


def test_a_click_naming_its_decision_changes_the_posterior_exactly_once(
    client: TestClient, services: Services
) -> None:
    decision = decide_with_offer(client, "u_0002")
    decision_id = decision["decision_id"]
    before = posterior(services, decision_id)
    click = {
        "event_id": "rw-click-1",
        "type": "click",
        "ts": at(timedelta(seconds=5)),
        "user_id": "u_0002",
        "item_id": decision["items"][0]["item_id"],
        "decision_id": decision_id,
    }
    assert post_events(client, click)[0]["attributed_to"] == decision_id
    assert post_events(client, click)[0]["status"] == "duplicate"  # the client's retry
    # More clicks on the same decision, at once, from several threads: still one reward.
    with ThreadPoolExecutor(4) as pool:
        list(
            pool.map(
                lambda n: post_events(client, {**click, "event_id": f"rw-click-{n}"}), range(2, 6)
            )
        )
    with ThreadPoolExecutor(2) as pool:  # two sweepers as the window closes
        list(pool.map(lambda _: settle(services, datetime.now(UTC) + WINDOW * 2), range(2)))
    after = posterior(services, decision_id)
    assert after.pulls == before.pulls + 1
    assert after.alpha == pytest.approx(before.alpha + 0.2)
    assert after.beta == pytest.approx(before.beta + 0.8)
    with services.db.session() as session:
        assert get_reward(session, decision_id) == pytest.approx(0.2)
        source = reward_source(session, decision_id)
        assert source is not None
        assert (source.source, source.event_ids) == ("event", ["rw-click-1"])
    # /v1/feedback still works, and still refuses a second reward.
    assert (
        client.post("/v1/feedback", json={"decision_id": decision_id, "reward": 1}).status_code
        == 409
    )


def test_an_unattributed_purchase_is_attributed_within_the_window_and_not_outside(
    client: TestClient, services: Services
) -> None:
    decision = decide_with_offer(client, "u_0003")
    item = decision["items"][1]["item_id"]
    purchase = {"type": "purchase", "user_id": "u_0003", "item_id": item, "value": 20.0}
    inside, outside = post_events(
        client,
        {**purchase, "event_id": "rw-buy-in", "ts": at(timedelta(hours=2))},
        {**purchase, "event_id": "rw-buy-out", "ts": at(WINDOW + timedelta(hours=2))},
    )
    assert inside["attributed_to"] == decision["decision_id"]
    assert outside["status"] == "accepted" and outside["attributed_to"] is None
    # Nothing is rewarded before the window closes; then the purchase is the reward.
    settle(services, datetime.now(UTC) + timedelta(hours=3))
    with services.db.session() as session:
        assert get_reward(session, decision["decision_id"]) is None
    settle(services, datetime.now(UTC) + WINDOW + timedelta(minutes=1))
    with services.db.session() as session:
        assert get_reward(session, decision["decision_id"]) == 1.0
        source = reward_source(session, decision["decision_id"])
        assert source is not None
        assert (source.source, source.event_ids) == ("window", ["rw-buy-in"])


def test_a_decision_nobody_acted_on_gets_the_default_when_its_window_closes(
    client: TestClient, services: Services
) -> None:
    decision = decide_with_offer(client, "u_0004")
    decision_id = decision["decision_id"]
    before = posterior(services, decision_id)
    settle(services, datetime.now(UTC) + WINDOW - timedelta(minutes=5))
    with services.db.session() as session:
        assert get_reward(session, decision_id) is None
    settle(services, datetime.now(UTC) + WINDOW + timedelta(minutes=1))
    after = posterior(services, decision_id)
    assert (after.pulls, after.alpha, after.beta) == (
        before.pulls + 1,
        before.alpha,
        pytest.approx(before.beta + 1),
    )
    with services.db.session() as session:
        assert get_reward(session, decision_id) == services.policy.policy.rewards.default == 0
        source = reward_source(session, decision_id)
        assert source is not None and (source.source, source.event_ids) == ("default", [])
        assert session.get(RewardWindow, decision_id) is None  # the window is closed


def test_arms_are_stable_across_restarts_proportional_and_recorded(
    client: TestClient, services: Services
) -> None:
    experiment = services.policy.policy.experiment
    assert experiment is not None
    keys = [f"user:sim-{n}" for n in range(6000)]
    reloaded = PolicyEngine(load_policy(POLICY))  # as a restarted process reads it
    arms = [
        services.policy.arm(key, services.tools.policy.policy.experiment.channels[0])
        for key in keys
    ]
    assert arms == [reloaded.arm(key, experiment.channels[0]) for key in keys]
    counts = Counter(arms)
    srm = sample_ratio_mismatch(dict(counts), dict(experiment.arms))
    assert not srm["mismatch"], srm
    for arm, share in experiment.arms.items():
        assert abs(counts[arm] / len(keys) - share) < 0.03, counts
    decision = client.post("/v1/decide", json={"user_id": "u_0005", "channel": "web"}).json()
    logged = client_record(services, decision["decision_id"])["experiment"]
    assert logged["arm"] == reloaded.arm("user:u_0005", experiment.channels[0])
    assert logged["id"] == experiment.id


def test_srm_flags_a_skewed_split() -> None:
    shares = {"control": 0.2, "live": 0.4, "challenger": 0.4}
    assert sample_ratio_mismatch({"control": 100, "live": 460, "challenger": 440}, shares)[
        "mismatch"
    ]
    assert not sample_ratio_mismatch({"control": 205, "live": 398, "challenger": 397}, shares)[
        "mismatch"
    ]


def test_the_report_of_a_small_simulation_has_uplift_with_a_ci_and_ope_beside_the_measured(
    client: TestClient, services: Services
) -> None:
    offers = {
        o.offer_id: o.model_dump(mode="json")
        for o in read_jsonl(Path(PROJECT_ROOT / "data" / "demo" / "offers.jsonl"), Offer)
    }
    people = [f"u_{n:04d}" for n in range(6, 25)]
    done = simulate(
        client,
        people,
        offers,
        decisions=80,
        settle=lambda now: settle(services, now),
        window_hours=24,
        seed=3,
        round_size=40,
    )
    assert sum(done.arms.values()) == 80 and done.attributed > 0
    with services.db.session() as session:
        report = experiment_report(session, services.policy.policy.experiment)
        sources = Counter(session.scalars(select(RewardSource.source)))
        attributed = session.scalar(select(func.count()).select_from(Attribution))
    assert set(report["arms"]) == {"control", "live", "challenger"}
    assert {"window", "default"} <= set(sources) and attributed
    for arm in ("live", "challenger"):
        uplift = report["uplift"][arm]["reward"]
        low, high = uplift["ci95"]
        assert low <= uplift["difference"] <= high
    ope = report["off_policy"]
    assert set(ope["estimates"]) == {"ipw", "snipw", "dr"}
    for estimate in ope["estimates"].values():
        low, high = estimate["ci95"]
        assert low <= estimate["value"] <= high
    assert ope["measured"] == report["arms"]["challenger"]["reward"]
    served = client.get("/v1/experiments/report")
    assert served.status_code == 200, served.text
    assert served.json()["arms"]["live"]["decisions"] == report["arms"]["live"]["decisions"]


def test_erasure_reaches_windows_attributions_and_reward_sources(
    client: TestClient, services: Services
) -> None:
    decision = decide_with_offer(client, "u_0101")
    post_events(
        client,
        {
            "event_id": "rw-erase-1",
            "type": "click",
            "ts": at(timedelta(seconds=3)),
            "user_id": "u_0101",
            "item_id": decision["items"][0]["item_id"],
            "decision_id": decision["decision_id"],
        },
    )
    # The export holds them first: what the click earned, where the reward came from, the
    # maintained features.
    exported = client.get("/v1/users/u_0101/export").json()
    (row,) = [d for d in exported["decisions"] if d["decision_id"] == decision["decision_id"]]
    assert row["reward_source"] == {"source": "event", "event_ids": ["rw-erase-1"]}
    assert [a["event_id"] for a in row["attributed_events"]] == ["rw-erase-1"]
    assert "user:u_0101" in exported["maintained_features"]
    assert client.delete("/v1/users/u_0101").status_code == 200
    with services.db.session() as session:
        for table in (RewardWindow, Attribution, RewardSource):
            left = session.scalar(
                select(func.count())
                .select_from(table)
                .where(table.decision_id == decision["decision_id"])
            )
            assert left == 0, table.__tablename__
