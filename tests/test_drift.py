"""The loop's monitors on one small world: drift (PSI on a known case; a shifted population raises
the input monitor and an unshifted one does not; with retraining on, a crossing trains a model
whose version later decisions record), the predictions stored as features (churn risk, next
purchase: read with the features, selected by segment rules, erased with the person), and the
fairness suite over the same decision log."""

from __future__ import annotations

import math
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import yaml
from fastapi.testclient import TestClient
from small_world import write_small_world
from sqlalchemy import select

from agents.copy.segments import Member, SegmentRule
from agents.decide.run import DecideRequest, decide
from agents.drift import check_drift, psi, psi_of_shares
from agents.factory import build_services
from agents.predictions import train_predictions
from agents.retrain import check
from agents.seed import seed
from agents.services import Services, itemitem_folder
from agents.settings import Settings
from api.app import create_app
from evals.fairness import Shown, exposure
from evals.runner import run_suite
from retrieval.sequence import ItemItemModel
from store.cohort import features_for, user_id_page
from store.erasure import erase_person, export_person, find_person
from store.events import Features, ingest_events
from store.models import CatalogItem, DecisionRow, PredictionRow
from store.predictions import prediction_for, predictions_for
from store.schemas import Channel, Event
from tools.profile import lifecycle_segment

WINDOW = 20
T0 = datetime(2026, 11, 20, 9, 0, tzinfo=UTC)


def test_psi_of_a_known_case() -> None:
    # (0.9 - 0.5) ln(0.9 / 0.5) + (0.1 - 0.5) ln(0.1 / 0.5), by hand: 0.878890
    assert psi_of_shares([0.5, 0.5], [0.9, 0.1]) == pytest.approx(0.878890, abs=1e-6)
    assert psi(["a"] * 5 + ["b"] * 5, ["a"] * 9 + ["b"], numeric=False) == pytest.approx(
        0.878890, abs=1e-6
    )
    # 1..10 fall one per reference decile; ten 10s all in the last bin, the nine others empty
    # (counted as 0.0001): 9 (0.0001 - 0.1) ln(0.0001 / 0.1) + (1 - 0.1) ln(1 / 0.1).
    expected = 9 * (1e-4 - 0.1) * math.log(1e-4 / 0.1) + 0.9 * math.log(10)
    assert psi(list(range(1, 11)), [10] * 10, numeric=True) == pytest.approx(expected)
    assert psi(list(range(1, 11)), list(range(1, 11)), numeric=True) == 0.0
    # A missing value has a bin of its own: half missing against none is a shift.
    assert psi([None] * 5 + [1.0] * 5, [1.0] * 10, numeric=True) > 0.2


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Services]:
    home = tmp_path_factory.mktemp("drift-home")
    settings = Settings(home=home, seed=11, drift_window=WINDOW, drift_check_seconds=0)
    services = build_services(settings)
    seed(services, write_small_world(tmp_path_factory.mktemp("drift-world")))
    yield services
    services.close()


def _decide_all(services: Services, requests: list[DecideRequest], start: datetime) -> list[str]:
    return [
        decide(services, r, now=start + timedelta(seconds=i)).decision_id
        for i, r in enumerate(requests)
    ]


def _record(services: Services, decision_id: str) -> dict:
    with services.db.session() as session:
        row = session.get(DecisionRow, decision_id)
        assert row is not None
        return row.record


def test_a_shifted_population_raises_input_drift_and_retraining_is_recorded(
    world: Services,
) -> None:
    with world.db.session() as session:
        people = user_id_page(session, size=WINDOW)
    regulars = [DecideRequest(channel=Channel.web, user_id=u) for u in people]
    assert len(regulars) == WINDOW
    _decide_all(world, regulars, T0)
    assert check_drift(world.settings, world.db).status == "collecting"  # one window so far

    # The same population a moment later: nothing drifts. (Recency grows with the clock: with
    # windows of 20 the deciles sit on the values themselves, so even an hour would move a few.)
    _decide_all(world, regulars, T0 + timedelta(seconds=WINDOW))
    unshifted = check_drift(world.settings, world.db)
    assert unshifted.status == "ok", [m for m in unshifted.breached]
    inputs = {m.name: m for m in unshifted.monitors if m.monitor == "input"}
    assert max(m.statistic or 0.0 for m in inputs.values()) < world.settings.drift_psi_threshold

    # A shifted population: first-time visitors who browse a little.
    visitors = [f"anon-drift-{i}" for i in range(WINDOW)]
    shifted = [DecideRequest(channel=Channel.web, anonymous_id=a) for a in visitors]
    _decide_all(world, shifted, T0 + timedelta(hours=2))
    report = check(world, retrain=False)
    assert report.status == "drift" and report.retrained is None
    crossed = {m.name for m in report.breached if m.monitor == "input"}
    assert {"event_count", "segment", "known"} <= crossed
    assert report.reference.decisions == report.current.decisions == WINDOW
    # Crossings are a gauge, a /healthz entry, and the drift report of the API.
    scrape = world.metrics.scrape().decode()
    assert 'attune_drift_breached{monitor="input"} 1.0' in scrape
    with TestClient(create_app(services=lambda: world)) as client:
        health = client.get("/healthz").json()
        assert health["status"] == "degraded"
        entry = next(d for d in health["degraded"] if d.startswith("drift: input above 0.2"))
        assert "segment (" in entry and "channel (" not in entry
        api = client.get("/v1/drift").json()
        assert api["status"] == "drift"
        segment = next(m for m in api["monitors"] if m["name"] == "segment")
        assert segment["breached"] and segment["threshold"] == 0.2
        assert segment["current"]["shares"] == {"new": 1.0}

    # The visitors' browsing arrives; with retraining on, the crossing trains.
    with world.db.session() as session:
        ingest_events(
            session,
            [
                Event.model_validate(
                    {
                        "event_id": f"drift-{i}",
                        "type": "view",
                        "ts": (T0 + timedelta(hours=2)).isoformat(),
                        "anonymous_id": anonymous,
                        "item_id": "itm_00001",
                    }
                )
                for i, anonymous in enumerate(visitors)
            ],
        )
    before = world.tools.collab.version if world.tools.collab else None
    seeded = world.tools.itemitem
    assert seeded is not None  # seeding fitted the item-item model
    retrained = check(world, retrain=True)  # as ATTUNE_DRIFT_RETRAIN=1 has it
    assert retrained.retrained is not None
    # The retrain refits the hybrid's item-item model, as `attune train` does, and serves it.
    assert world.tools.itemitem is not None and world.tools.itemitem is not seeded
    assert retrained.retrained["itemitem_items"] == len(world.tools.itemitem.item_ids) > 0
    saved = ItemItemModel.load(itemitem_folder(world.settings))
    assert saved is not None and saved.version == world.tools.itemitem.version
    new_version = retrained.retrained["collab_version"]
    assert new_version != before and retrained.retrained["collab"]["mode"] == "incremental"
    predictions = retrained.retrained["predictions"]["version"]
    # Later decisions record the new versions; the windows start again from the training.
    later = _decide_all(world, regulars[:1], datetime.now(UTC))
    versions = _record(world, later[0])["versions"]
    assert versions["collab"] == new_version and versions["predictions"] == predictions
    assert versions["itemitem"] == world.tools.itemitem.version != "itemitem@unsaved"
    assert check_drift(world.settings, world.db).status == "collecting"


def test_the_fairness_suite_gates_on_the_service_log(world: Services, tmp_path: Path) -> None:
    suite = yaml.safe_load(
        (Path(__file__).parents[1] / "evals" / "suites" / "fairness.yaml").read_text()
    )
    suite["datasets"] = [{"name": "service", "path": str(world.settings.home)}]
    # New visitors saw popular items as returning people saw theirs: a gate at 0.5 holds, and
    # one asking for more exposure than anyone can have (2x the average) fails.
    suite["thresholds"] = [
        {"metric": "min_exposure_ratio", "system": "service", "min": 0.5},
        {"metric": "min_exposure_ratio", "system": "service", "min": 2.0},
    ]
    path = tmp_path / "fairness.yaml"
    path.write_text(yaml.safe_dump(suite))
    report = run_suite(path, tmp_path / "out", show_progress=False)
    rows = {row.system: row.metrics for row in report.rows}
    assert {"tenure:new", "tenure:returning", "age_band:unknown"} <= set(rows)
    assert rows["tenure:new"]["decisions"] >= WINDOW
    assert 0 < rows["service"]["item_coverage"] <= 1
    assert [t.passed for t in report.thresholds] == [True, False]
    assert not report.passed


def test_predictions_are_features_select_segments_and_are_erased_with_the_person(
    world: Services,
) -> None:
    now = datetime.now(UTC)
    report = train_predictions(world.db, consent=world.policy.purpose_for("profiling"), now=now)
    assert report is not None and report.evaluation.churn_test > 0
    with world.db.session() as session:
        users = user_id_page(session, size=100)
        stored = predictions_for(session, users)
        features = features_for(session, users, as_of=now)
        categories = set(session.scalars(select(CatalogItem.category).distinct()))
    risks = {u: p.churn_risk for u, p in stored.items() if p.churn_risk is not None}
    assert len(risks) >= 4 and all(0 <= r <= 1 for r in risks.values())
    assert all(p.model_version == report.version for p in stored.values())
    buyer = max(risks)  # the last user id with a churn risk
    assert set(stored[buyer].next_purchase) == categories
    assert features[buyer].churn_risk == risks[buyer]
    assert features[buyer].next_purchase == stored[buyer].next_purchase

    # An "at risk" segment: exactly the people whose stored risk reaches the bound.
    bound = sorted(risks.values())[len(risks) // 2]
    at_risk = SegmentRule(min_churn_risk=bound)
    assert at_risk.uses_features
    chosen = {u for u, f in features.items() if at_risk.matches(_member(f))}
    assert chosen == {u for u, r in risks.items() if r >= bound}
    assert 0 < len(chosen) < len(users)
    category = sorted(categories)[0]
    odds = sorted(p.next_purchase[category] for p in stored.values() if p.next_purchase)
    likely = SegmentRule(likely_to_buy=[category], min_next_purchase=odds[len(odds) // 2])
    assert {u for u, f in features.items() if likely.matches(_member(f))} == {
        u
        for u, p in stored.items()
        if p.next_purchase.get(category, 0.0) >= likely.min_next_purchase
    }

    # A decision sees them, and the person's export holds them until erasure removes them.
    decision = decide(world, DecideRequest(channel=Channel.web, user_id=buyer), now=now)
    assert _record(world, decision.decision_id)["features"]["churn_risk"] == risks[buyer]
    with world.db.session() as session:
        exported = export_person(session, find_person(session, buyer))
        assert exported["predictions"]["churn_risk"] == risks[buyer]
        erase_person(session, find_person(session, buyer))
    with world.db.session() as session:
        assert prediction_for(session, buyer) is None
        assert session.get(PredictionRow, buyer) is None


def _member(features: Features) -> Member:
    return Member(features=features, lifecycle=lifecycle_segment(features), age=None, locale=None)


def test_a_starved_group_is_flagged() -> None:
    def shown(locale: str, items: int, offer: str | None) -> Shown:
        groups = {"tenure": "returning", "age_band": "25-34", "locale": locale}
        return Shown(groups, [f"itm_{i}" for i in range(items)], offer, 0.0 if offer else None)

    log = [shown("en-GB", 5, "off_1")] * 30 + [shown("de-DE", 1, None)] * 30
    report = exposure(log, catalog_items=50, catalog_offers=4, min_decisions=20, starved_below=0.5)
    by_group = {f"{g.dimension}:{g.group}": g.metrics for g in report.groups}
    # de-DE: 30 of 210 impressions for half the decisions: (30 / 210) / 0.5.
    assert by_group["locale:de-DE"]["exposure_ratio"] == pytest.approx(round(30 / 210 / 0.5, 4))
    assert by_group["locale:de-DE"]["offer_rate"] == 0.0
    assert report.starved == ["locale:de-DE"]
    assert report.min_exposure_ratio == by_group["locale:de-DE"]["exposure_ratio"]
    assert report.item_coverage == 5 / 50 and report.offer_coverage == 1 / 4
    # Everyone shown alike: nobody starved.
    even = exposure(
        [shown("en-GB", 5, None)] * 30 + [shown("de-DE", 5, None)] * 30,
        catalog_items=50, catalog_offers=4, min_decisions=20, starved_below=0.5,
    )  # fmt: skip
    assert even.starved == [] and even.min_exposure_ratio == 1.0
