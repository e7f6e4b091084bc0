"""Collaborative vectors: ALS learns the structure of interactions, trains incrementally from the
event store, and the service's hybrid retrieval uses it (with explicit cold starts)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from agents.decide.run import DecideRequest, decide
from agents.factory import build_services
from agents.services import Services, collab_folder
from agents.settings import Settings
from api.cli import app
from retrieval.catalog import ingest_items
from retrieval.collab import ALSParams, CollabModel, Interactions, fit, train
from retrieval.index import COLLAB_VECTOR
from retrieval.sequence import ItemItemModel
from store.events import ingest_events
from store.schemas import Channel, Event, Item, UserRecord
from store.users import upsert_user

GROUPS = {
    "kitchen": ["pan", "knife", "kettle", "board"],
    "garden": ["hose", "rake", "spade", "seeds"],
}
PARAMS = ALSParams(factors=8, iterations=15, regularization=0.01, seed=3)


def _clustered() -> Interactions:
    """Ten users per group, each interacting with three of their group's four items."""
    triples = []
    for group, items in GROUPS.items():
        for u in range(10):
            for item in items[u % 4 :] + items[: u % 4][:-1] if u % 4 else items[:3]:
                triples.append((f"{group}-{u}", item, 1.0))
    return Interactions.from_triples(triples)


def test_als_factors_rank_a_users_own_group_first() -> None:
    model = fit(_clustered(), PARAMS)
    items = model.item_vectors()
    for user in ("kitchen-1", "garden-2"):
        group = user.split("-")[0]
        scores = {item: float(model.user_vector(user) @ vector) for item, vector in items.items()}
        top = sorted(scores, key=lambda i: -scores[i])[:4]
        assert set(top) == set(GROUPS[group])


def test_the_model_round_trips_through_its_folder(tmp_path: Path) -> None:
    model = fit(_clustered(), PARAMS)
    model.watermark = "2026-11-01T00:00:00+00:00"
    model.save(tmp_path)
    loaded = CollabModel.load(tmp_path)
    assert loaded is not None and loaded.user_ids == model.user_ids
    np.testing.assert_array_equal(loaded.item_factors, model.item_factors)
    assert loaded.watermark == model.watermark
    assert CollabModel.load(tmp_path / "nothing-here") is None


def _item(item_id: str, title: str, category: str) -> Item:
    return Item(item_id=item_id, title=title, category=category, price=10, margin=0.3, stock=5)


CATALOG = [
    _item("pan", "Cast iron frying pan", "kitchen"),
    _item("knife", "Chef knife", "kitchen"),
    _item("kettle", "Electric kettle", "kitchen"),
    _item("board", "Oak cutting board", "kitchen"),
    _item("hose", "Garden hose", "garden"),
    _item("rake", "Leaf rake", "garden"),
    _item("spade", "Steel spade", "garden"),
    _item("seeds", "Wildflower seeds", "garden"),
]


def _events(user: str, items: list[str], start: datetime, prefix: str) -> list[Event]:
    return [
        Event(
            event_id=f"{prefix}-{user}-{n}",
            type="purchase" if n % 2 else "view",
            ts=start + timedelta(minutes=n),
            user_id=user,
            item_id=item,
        )
        for n, item in enumerate(items)
    ]


@pytest.fixture
def small_world(tmp_path: Path) -> Services:
    services = build_services(Settings(home=tmp_path, seed=5, collab_dim=8))
    ingest_items(services.db, services.embedder, services.index, CATALOG)
    start = datetime(2026, 10, 1, tzinfo=UTC)
    events = []
    with services.db.session() as session:
        for group, items in GROUPS.items():
            for u in range(8):
                user = f"{group}{u}"
                upsert_user(
                    session,
                    UserRecord.model_validate(
                        {
                            "user_id": user,
                            "profile": {
                                "first_name": "Sam",
                                "last_name": "Lee",
                                "email": f"{user}@example.org",
                                "birth_date": "1980-01-01",
                            },
                            "consent": {"personalization": True, "profiling": True},
                        }
                    ),
                )
                events += _events(user, items[u % 2 :] + items[: u % 2][:1], start, "e")
    with services.db.session() as session:
        ingest_events(session, events)
    yield services
    services.close()


def _params(services: Services) -> ALSParams:
    return ALSParams(factors=services.index.collab_dim, iterations=10, seed=1)


def test_train_indexes_collab_vectors_then_updates_incrementally(small_world: Services) -> None:
    folder = collab_folder(small_world.settings)
    first = train(small_world.db, small_world.index, folder, params=_params(small_world))
    assert first.mode == "full" and first.vectors_indexed == len(CATALOG)
    assert set(small_world.index.vectors(["pan", "seeds"], using=COLLAB_VECTOR)) == {"pan", "seeds"}
    before = CollabModel.load(folder)

    assert train(small_world.db, small_world.index, folder).mode == "unchanged"

    later = datetime(2026, 10, 20, tzinfo=UTC)
    with small_world.db.session() as session:
        ingest_events(session, _events("newcomer", ["hose", "rake"], later, "n"))
    update = train(small_world.db, small_world.index, folder)
    assert update.mode == "incremental"
    assert update.users_updated == 1 and update.items_updated == 2
    after = CollabModel.load(folder)
    assert after is not None and before is not None
    assert after.user_vector("user:newcomer") is not None
    # Users without new events keep their factors exactly.
    np.testing.assert_array_equal(
        after.user_vector("user:kitchen3"), before.user_vector("user:kitchen3")
    )
    garden = np.mean([after.item_vectors([i])[i] for i in GROUPS["garden"]], axis=0)
    kitchen = np.mean([after.item_vectors([i])[i] for i in GROUPS["kitchen"]], axis=0)
    newcomer = after.user_vector("user:newcomer")
    assert newcomer @ garden > newcomer @ kitchen


def test_training_needs_the_index_dimension(small_world: Services) -> None:
    folder = collab_folder(small_world.settings)
    with pytest.raises(ValueError, match="factors=8"):
        train(small_world.db, small_world.index, folder, params=ALSParams(factors=16))


def test_decisions_use_the_collaborative_source(small_world: Services) -> None:
    train(
        small_world.db,
        small_world.index,
        collab_folder(small_world.settings),
        params=_params(small_world),
    )
    small_world.reload_collab()
    decision = decide(small_world, DecideRequest(channel=Channel.web, user_id="garden3", k=4))
    assert decision.items, "a known user gets recommendations"
    parts = [c.parts for c in decision.items]
    assert any(p.collab for p in parts) and any(p.recent for p in parts)
    assert all(c.reasons for c in decision.items)
    # Nobody has interacted with a brand-new item, yet its text finds it.
    ingest_items(
        small_world.db,
        small_world.embedder,
        small_world.index,
        [_item("mower", "Robot lawn mower", "garden")],
    )
    found = decide(
        small_world,
        DecideRequest(channel=Channel.web, anonymous_id="anon-9", query="robot lawn mower", k=4),
    )
    assert found.items[0].item_id == "mower"
    assert "robot lawn mower" in found.items[0].reasons[0]


def test_a_new_visitor_without_text_gets_popularity(small_world: Services) -> None:
    decision = decide(small_world, DecideRequest(channel=Channel.web, anonymous_id="anon-new", k=3))
    assert decision.items
    assert all(c.parts.popularity is not None for c in decision.items)


def test_attune_train_command(small_world: Services, monkeypatch: pytest.MonkeyPatch) -> None:
    home = small_world.settings.home
    small_world.close()  # the command opens the embedded index itself
    monkeypatch.setenv("ATTUNE_HOME", str(home))
    monkeypatch.setenv("ATTUNE_COLLAB_DIM", "8")
    result = CliRunner().invoke(app, ["train", "--full"])
    assert result.exit_code == 0, result.output
    assert '"mode": "full"' in result.output
    # The item-item re-ranking model is refitted beside it, from the same consented events.
    item_item = ItemItemModel.load(home / "itemitem")
    assert item_item is not None and item_item.item_ids
    assert f'"itemitem_items": {len(item_item.item_ids)}' in result.output
    again = CliRunner().invoke(app, ["train"])
    assert '"mode": "unchanged"' in again.output
