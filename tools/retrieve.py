"""Candidate retrieval: the request's text blended with the person's taste, policy filters pushed into Qdrant.

Each candidate's score is a weighted sum of parts that are all kept (query similarity, taste
similarity, category affinity), and its reasons are derived from the parts that actually carried
the score, so an explanation never cites a signal that did not rank the item.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np

from retrieval.index import Hit, IndexUnavailable, ItemFilter
from store.catalog import get_items, popular_items
from store.schemas import Item
from tools.context import RunContext
from tools.profile import lookup_profile, rules_fired, subject_facts, subject_features
from tools.schemas import Candidate, Candidates, RetrieveInput, RuleFired, ScoreParts

# Weights of the score parts, renormalised over the parts a request has.
_WEIGHTS = {"query": 0.6, "taste": 0.3, "affinity": 0.1}
_TASTE_ITEMS = 10  # recent items that make up the taste vector
Strategy = Literal["hybrid", "query", "taste", "popular"]
_REASON_SHARE = 0.25  # a part that carries at least this share of the score is named as a reason


def retrieve_candidates(ctx: RunContext, args: RetrieveInput) -> Candidates:
    """Find in-stock, allowed catalog items for this person, matching their request and their taste."""
    profile = lookup_profile(ctx)
    features = subject_features(ctx)
    constraints = ctx.deps.policy.item_constraints(subject_facts(ctx))
    flt = ItemFilter(
        exclude_ids=constraints.exclude_ids,
        max_min_age=constraints.max_min_age,
        in_stock_only=constraints.in_stock_only,
    )
    fired = rules_fired(constraints.firings) + profile.rules_fired
    degraded = [ctx.deps.embedder.degraded] if args.query and ctx.deps.embedder.degraded else []

    query_vec = ctx.deps.embedder.embed([args.query])[0] if args.query else None
    taste_vec: np.ndarray | None = None
    recent: Recent | None = None
    affinity = features.category_affinity if profile.personalized else {}
    try:
        if profile.personalized and features.recent_item_ids:
            taste_vec, recent = _taste(ctx, list(features.recent_item_ids[:_TASTE_ITEMS]))
        if query_vec is None and taste_vec is None:
            return _popular(ctx, args.k, flt, affinity, fired, degraded)
        parts = [(w, v) for w, v in ((0.6, query_vec), (0.4, taste_vec)) if v is not None]
        blended = _unit(sum(w * v for w, v in parts))
        hits = ctx.deps.index.search(blended, k=max(3 * args.k, 30), flt=flt, with_vectors=True)
    except IndexUnavailable as error:
        degraded.append(f"vectors: {error}; fell back to popularity")
        return _popular(ctx, args.k, flt, affinity, fired, degraded)

    verdict = ctx.deps.policy.check_items(
        [_payload_item(hit.payload) for hit in hits], subject_facts(ctx)
    )
    allowed = {item.item_id for item in verdict.kept}
    hits = [hit for hit in hits if hit.item_id in allowed]
    strategy: Strategy = (
        "hybrid"
        if query_vec is not None and taste_vec is not None
        else ("query" if query_vec is not None else "taste")
    )
    return _remember(
        ctx,
        Candidates(
            strategy=strategy,
            items=_rank(hits, args.k, query_vec, taste_vec, recent, affinity, args.query),
            rules_fired=fired + rules_fired(verdict.firings),
            degraded=degraded,
        ),
    )


def _remember(ctx: RunContext, found: Candidates) -> Candidates:
    """Keep the categories of what was retrieved, so later tools in the request need no lookup."""
    ctx.memo.setdefault("categories", {}).update({c.item_id: c.category for c in found.items})
    return found


def _taste(ctx: RunContext, recent_ids: list[str]) -> tuple[np.ndarray | None, Recent | None]:
    """The recency-weighted mean of recently seen items' vectors, and those items' titles."""
    vectors = ctx.deps.index.vectors(recent_ids)
    present = [item_id for item_id in recent_ids if item_id in vectors]
    if not present:
        return None, None
    with ctx.deps.db.session() as session:
        items = get_items(session, present)
    stacked = np.stack([vectors[item_id] for item_id in present])
    weights = [1.0 / (1 + recent_ids.index(item_id)) for item_id in present]
    titles = [items[i].title if i in items else i for i in present]
    return _unit(np.average(stacked, axis=0, weights=weights)), Recent(titles, stacked)


@dataclass(frozen=True)
class Recent:
    """Recently seen items: their titles and vectors, row by row."""

    titles: list[str]
    vectors: np.ndarray


def _rank(
    hits: list[Hit],
    k: int,
    query_vec: np.ndarray | None,
    taste_vec: np.ndarray | None,
    recent: Recent | None,
    affinity: dict[str, float],
    query: str | None,
) -> list[Candidate]:
    """Score every hit from its parts, keep the top k, and name the parts that carried each score."""
    if not hits:
        return []
    matrix = np.stack([hit.vector for hit in hits if hit.vector is not None])
    parts: dict[str, np.ndarray] = {}
    if query_vec is not None:
        parts["query"] = matrix @ query_vec
    if taste_vec is not None:
        parts["taste"] = matrix @ taste_vec
    if affinity:
        parts["affinity"] = np.array([affinity.get(h.payload["category"], 0.0) for h in hits])
    total_weight = sum(_WEIGHTS[name] for name in parts)
    shares = {
        name: _WEIGHTS[name] / total_weight * np.maximum(values, 0.0)
        for name, values in parts.items()
    }
    scores = np.sum(list(shares.values()), axis=0)
    ids = [hit.item_id for hit in hits]
    top = sorted(range(len(hits)), key=lambda i: (-scores[i], ids[i]))[:k]
    closest = (matrix[top] @ recent.vectors.T).argmax(axis=1) if recent is not None else None
    ranked = []
    for rank, i in enumerate(top):
        payload, score = hits[i].payload, float(scores[i])
        reasons = []
        for name in sorted(shares, key=lambda n: -shares[n][i]):
            if score > 0 and (shares[name][i] / score >= _REASON_SHARE or not reasons):
                if name == "query":
                    reasons.append(f"matches your request “{query}”")
                elif name == "taste" and recent is not None and closest is not None:
                    title = recent.titles[int(closest[rank])]
                    reasons.append(f"similar to {title}, which you looked at recently")
                else:
                    reasons.append(f"you often browse {payload['category'].replace('_', ' ')}")
        ranked.append(
            Candidate(
                item_id=payload["item_id"],
                title=payload["title"],
                category=payload["category"],
                price=payload["price"],
                currency=payload["currency"],
                score=round(score, 4),
                parts=ScoreParts(
                    **{name: round(float(values[i]), 4) for name, values in parts.items()}
                ),
                reasons=reasons,
            )
        )
    return ranked


def _popular(
    ctx: RunContext,
    k: int,
    flt: ItemFilter,
    affinity: dict[str, float],
    fired: list[RuleFired],
    degraded: list[str],
) -> Candidates:
    """Cold start and fallback: the most popular allowed items, favourite categories first."""
    favourites = sorted(affinity, key=lambda c: -affinity[c])[:3]
    with ctx.deps.db.session() as session:
        ranked = []
        if favourites:
            ranked += popular_items(
                session,
                limit=k,
                categories=favourites,
                exclude_ids=flt.exclude_ids,
                max_min_age=flt.max_min_age,
                in_stock_only=flt.in_stock_only,
            )
        seen = [item.item_id for item, _ in ranked]
        ranked += popular_items(
            session,
            limit=k,
            exclude_ids=(*flt.exclude_ids, *seen),
            max_min_age=flt.max_min_age,
            in_stock_only=flt.in_stock_only,
        )
    top = max((pop for _, pop in ranked), default=1.0) or 1.0
    candidates = []
    for item, popularity in ranked:
        favourite = item.category in favourites
        reasons = (
            [f"popular in {item.category.replace('_', ' ')}, which you often browse"]
            if favourite
            else ["popular with shoppers right now"]
        )
        candidates.append(
            Candidate(
                item_id=item.item_id,
                title=item.title,
                category=item.category,
                price=item.price,
                currency=item.currency,
                score=round(popularity / top, 4),
                parts=ScoreParts(
                    popularity=round(popularity / top, 4),
                    affinity=affinity.get(item.category) if favourite else None,
                ),
                reasons=reasons,
            )
        )
    items = {item.item_id: item for item, _ in ranked}
    return _checked(ctx, "popular", candidates, k, fired, degraded, items)


def _checked(
    ctx: RunContext,
    strategy: Strategy,
    candidates: list[Candidate],
    k: int,
    fired: list[RuleFired],
    degraded: list[str],
    items: dict[str, Item],
) -> Candidates:
    """Re-check what came back against every item rule; anything the index leaked is removed."""
    verdict = ctx.deps.policy.check_items(
        [items[c.item_id] for c in candidates if c.item_id in items], subject_facts(ctx)
    )
    allowed = {item.item_id for item in verdict.kept}
    kept = [c for c in candidates if c.item_id in allowed][:k]
    return _remember(
        ctx,
        Candidates(
            strategy=strategy,
            items=kept,
            rules_fired=fired + rules_fired(verdict.firings),
            degraded=degraded,
        ),
    )


def _payload_item(payload: dict) -> Item:
    """The item as the index stores it: every field the item rules read, without the description."""
    return Item.model_validate({k: v for k, v in payload.items() if k != "in_stock"})


def _unit(vector: np.ndarray) -> np.ndarray:
    norm = float(np.linalg.norm(vector))
    return (vector / norm).astype(np.float32) if norm else vector.astype(np.float32)
