"""The hybrid as served: the item-item model (fitted by seeding, by a start that finds none, by
`attune train`) re-ranks a known person's candidates as the MovieLens suite's hybrid does, with
the weights and pool of the settings; its terms are score parts, and only then is it named."""

from __future__ import annotations

from dataclasses import replace

import pytest

import tools.retrieve
from agents.decide.run import DecideRequest, decide
from agents.reindex import start
from agents.services import Services, itemitem_folder, itemitem_params, load_itemitem
from agents.settings import Settings
from retrieval.sequence import ItemItemModel, ItemItemParams, person_history
from store.catalog import get_items
from store.decisions import get_decision
from store.schemas import Channel

USER = "u_0007"
K = 34
POOL = 3 * K  # the re-ranking pool no larger than 3k: both decisions see the same Qdrant candidates


def _with_model(services: Services, model: ItemItemModel | None) -> Services:
    """The same services with or without an item-item model (the session's world is shared)."""
    return replace(services, tools=replace(services.tools, itemitem=model))


def test_the_strong_next_item_comes_first_only_with_the_model(demo_services: Services) -> None:
    without = decide(
        _with_model(demo_services, None), DecideRequest(channel=Channel.web, user_id=USER, k=K)
    )
    qdrant_order = [item.item_id for item in without.items]
    history = person_history(demo_services.db, USER, None)
    latest = history[-1][0]
    seen = {item for item, _ in history}
    # An item Qdrant ranks last that everyone chose right after the person's latest item.
    target = next(i for i in reversed(qdrant_order) if i not in seen)
    assert qdrant_order[0] != target
    model = ItemItemModel.fit(
        {f"p{n}": [(latest, 1.0), (target, 1.0)] for n in range(20)}, ItemItemParams(pool=POOL)
    )

    served = _with_model(demo_services, model)
    decision = decide(served, DecideRequest(channel=Channel.web, user_id=USER, k=K))
    order = [item.item_id for item in decision.items]
    assert order[0] == target
    assert order == model.rerank(qdrant_order, history)  # exactly the suite's `rerank`
    first = decision.items[0]
    assert first.parts.sequence and first.parts.sequence > 0 and first.parts.ease
    with demo_services.db.session() as session:
        title = get_items(session, [latest])[latest].title
    assert first.reasons[:2] == [
        f"often chosen next after {title}, which you looked at recently",
        f"chosen by people who also chose {title}, which you looked at",
    ]
    assert "choose next" in decision.explanation.summary
    # Items the model knows nothing of carry no re-ranking part and no re-ranking reason.
    for item in decision.items[1:]:
        if item.item_id != latest:
            assert item.parts.sequence is None and item.parts.ease is None
            assert not any("chosen next" in r or "also chose" in r for r in item.reasons)
    with demo_services.db.session() as session:
        logged = get_decision(session, decision.decision_id).record["retrieval"]["candidates"][0]
        versions = get_decision(session, decision.decision_id).record["versions"]
    assert logged["parts"]["sequence"] == first.parts.sequence
    assert versions["itemitem"] == model.version

    # Without the model (a fresh home before `attune train`): Qdrant's order, nothing named.
    assert all(item.parts.sequence is None and item.parts.ease is None for item in without.items)
    assert not any("chosen next" in r for item in without.items for r in item.reasons)
    assert "choose next" not in without.explanation.summary
    assert not any("item-item" in d for d in without.degraded)


def test_a_text_request_keeps_qdrant_order_with_the_model(demo_services: Services) -> None:
    """The request's words come first: the re-ranking does not act on a request with text."""
    request = DecideRequest(channel=Channel.web, user_id="u_0001", query="coffee", k=5)
    plain = decide(_with_model(demo_services, None), request)
    history = person_history(demo_services.db, "u_0001", None)
    last = plain.items[-1].item_id
    model = ItemItemModel.fit(
        {f"p{n}": [(history[-1][0], 1.0), (last, 1.0)] for n in range(20)}, ItemItemParams()
    )
    served = decide(_with_model(demo_services, model), request)
    assert [i.item_id for i in served.items] == [i.item_id for i in plain.items]
    assert all(i.parts.sequence is None and i.parts.ease is None for i in served.items)


def test_a_seeded_service_serves_the_rerank_without_attune_train(
    demo_services: Services,
) -> None:
    """Seeding fitted the model (nobody ran `attune train`): a known person without text gets the
    re-ranking, its parts on the items, its version in the record, its params the settings'."""
    model = demo_services.tools.itemitem
    assert model is not None and model.item_ids
    assert model.params == itemitem_params(demo_services.settings) == ItemItemParams()
    assert ItemItemModel.load(itemitem_folder(demo_services.settings)) is not None
    decision = decide(demo_services, DecideRequest(channel=Channel.web, user_id=USER, k=10))
    assert any(item.parts.ease for item in decision.items)
    scores = [item.score for item in decision.items]
    assert scores == sorted(scores, reverse=True)  # ordered by the re-ranking's fused score
    with demo_services.db.session() as session:
        versions = get_decision(session, decision.decision_id).record["versions"]
    assert versions["itemitem"] == model.version != "itemitem@unsaved"


def test_a_start_fits_the_model_when_none_is_saved(demo_services: Services) -> None:
    """A home with events but no saved model (from before seeding fitted it) gets one at start."""
    bare = replace(demo_services, tools=replace(demo_services.tools, itemitem=None))
    start(bare, None)
    assert bare.tools.itemitem is not None and bare.tools.itemitem.item_ids
    decision = decide(bare, DecideRequest(channel=Channel.web, user_id=USER, k=10))
    assert any(item.parts.ease for item in decision.items)


def test_the_weights_and_pool_come_from_the_settings(
    demo_services: Services, monkeypatch: pytest.MonkeyPatch
) -> None:
    home = demo_services.settings.home
    monkeypatch.setenv("ATTUNE_ITEMITEM_TRANSITION_WEIGHT", "1.0")
    monkeypatch.setenv("ATTUNE_ITEMITEM_QDRANT_WEIGHT", "0")
    monkeypatch.setenv("ATTUNE_ITEMITEM_POOL", "150")
    loud = load_itemitem(Settings(home=home))
    quiet = load_itemitem(Settings(home=home, itemitem_transition_weight=0.5))
    assert loud is not None and quiet is not None
    assert (loud.params.transition_weight, loud.params.qdrant_weight, loud.params.pool) == (
        1.0,
        0.0,
        150,
    )
    fitted = demo_services.tools.itemitem
    assert fitted is not None and loud.params.regularization == fitted.params.regularization

    asked: list[int] = []
    search = tools.retrieve.hybrid_search

    def counting(*args, **kwargs):  # type: ignore[no-untyped-def]
        asked.append(kwargs["k"])
        return search(*args, **kwargs)

    monkeypatch.setattr(tools.retrieve, "hybrid_search", counting)
    request = DecideRequest(channel=Channel.web, user_id=USER, k=10)
    twice = decide(_with_model(demo_services, loud), request)
    once = decide(_with_model(demo_services, quiet), request)
    assert asked == [150, 150]  # the settings' pool, not a constant of the code
    # The transition term is the settings' weight times the same scaled score: double the weight,
    # double the term, for every item both decisions show.
    halves = {item.item_id: item.parts.sequence for item in once.items if item.parts.sequence}
    doubled = [
        (item.parts.sequence, halves[item.item_id])
        for item in twice.items
        if item.parts.sequence and item.item_id in halves
    ]
    assert doubled
    for loud_term, quiet_term in doubled:
        assert loud_term == pytest.approx(2 * quiet_term, abs=2e-4)
