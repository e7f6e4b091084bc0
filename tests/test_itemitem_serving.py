"""The hybrid as served: `attune train`'s item-item model re-ranks a known person's candidates
(as the MovieLens suite's hybrid does), its terms are score parts, and only then is it named."""

from __future__ import annotations

from dataclasses import replace

from agents.decide.run import DecideRequest, decide
from agents.services import Services
from retrieval.sequence import ItemItemModel, ItemItemParams, person_history
from store.catalog import get_items
from store.decisions import get_decision
from store.schemas import Channel

USER = "u_0007"
K = 34  # 3k >= the re-ranking pool: both decisions see the same Qdrant candidates


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
        {f"p{n}": [(latest, 1.0), (target, 1.0)] for n in range(20)}, ItemItemParams()
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
