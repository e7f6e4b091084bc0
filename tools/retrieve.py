"""Candidate retrieval: the request's text blended with the person's taste, policy filters pushed into Qdrant.

Each candidate's score is a weighted sum of parts that are all kept (query similarity, taste
similarity, category affinity), and its reasons are derived from the parts that actually carried
the score, so an explanation never cites a signal that did not rank the item.
"""

from __future__ import annotations

import numpy as np

from retrieval.index import Hit, IndexUnavailable, ItemFilter
from store.catalog import get_items, popular_items
from tools.context import RunContext
from tools.profile import lookup_profile, rules_fired, subject_facts, subject_features
from tools.schemas import Candidate, Candidates, RetrieveInput, ScoreParts

# Weights of the score parts, renormalised over the parts a request has.
_WEIGHTS = {"query": 0.6, "taste": 0.3, "affinity": 0.1}
_TASTE_ITEMS = 10  # recent items that make up the taste vector
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
    taste_vec, recent = None, {}
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

    candidates = [_score(hit, query_vec, taste_vec, recent, affinity, args.query) for hit in hits]
    candidates.sort(key=lambda c: (-c.score, c.item_id))
    strategy = (
        "hybrid"
        if query_vec is not None and taste_vec is not None
        else ("query" if query_vec is not None else "taste")
    )
    return _checked(ctx, strategy, candidates, args.k, fired, degraded)


def _taste(
    ctx: RunContext, recent_ids: list[str]
) -> tuple[np.ndarray | None, dict[str, tuple[str, np.ndarray]]]:
    """The recency-weighted mean of recently seen items' vectors, and those items by id."""
    vectors = ctx.deps.index.vectors(recent_ids)
    if not vectors:
        return None, {}
    with ctx.deps.db.session() as session:
        titles = {
            item_id: item.title for item_id, item in get_items(session, list(vectors)).items()
        }
    weights = [1.0 / (1 + rank) for rank, item_id in enumerate(recent_ids) if item_id in vectors]
    stacked = np.stack([vectors[item_id] for item_id in recent_ids if item_id in vectors])
    taste = _unit(np.average(stacked, axis=0, weights=weights))
    recent = {item_id: (titles.get(item_id, item_id), vectors[item_id]) for item_id in vectors}
    return taste, recent


def _score(
    hit: Hit,
    query_vec: np.ndarray | None,
    taste_vec: np.ndarray | None,
    recent: dict[str, tuple[str, np.ndarray]],
    affinity: dict[str, float],
    query: str | None,
) -> Candidate:
    payload = hit.payload
    vec = hit.vector if hit.vector is not None else np.zeros(1)
    parts = ScoreParts(
        query=_cos(vec, query_vec) if query_vec is not None else None,
        taste=_cos(vec, taste_vec) if taste_vec is not None else None,
        affinity=round(affinity.get(payload["category"], 0.0), 4) if affinity else None,
    )
    present = {name: value for name, value in parts.model_dump().items() if value is not None}
    total_weight = sum(_WEIGHTS[name] for name in present)
    contributions = {
        name: _WEIGHTS[name] / total_weight * max(value, 0.0) for name, value in present.items()
    }
    score = sum(contributions.values())
    reasons: list[str] = []
    for name, share in sorted(contributions.items(), key=lambda kv: -kv[1]):
        if score > 0 and (share / score >= _REASON_SHARE or not reasons):
            reasons.append(_reason(name, payload, vec, recent, query))
    return Candidate(
        item_id=payload["item_id"],
        title=payload["title"],
        category=payload["category"],
        price=payload["price"],
        currency=payload["currency"],
        score=round(score, 4),
        parts=parts,
        reasons=reasons,
    )


def _reason(
    part: str,
    payload: dict,
    vec: np.ndarray,
    recent: dict[str, tuple[str, np.ndarray]],
    query: str | None,
) -> str:
    if part == "query":
        return f"matches your request “{query}”"
    if part == "taste" and recent:
        title = max(recent.values(), key=lambda tv: float(vec @ tv[1]))[0]
        return f"similar to {title}, which you looked at recently"
    return f"you often browse {payload['category'].replace('_', ' ')}"


def _popular(
    ctx: RunContext,
    k: int,
    flt: ItemFilter,
    affinity: dict[str, float],
    fired: list,
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
    return _checked(ctx, "popular", candidates, k, fired, degraded)


def _checked(ctx, strategy, candidates, k, fired, degraded) -> Candidates:
    """Re-check what came back against every item rule; anything the index leaked is removed."""
    with ctx.deps.db.session() as session:
        items = get_items(session, [c.item_id for c in candidates])
    verdict = ctx.deps.policy.check_items(
        [items[c.item_id] for c in candidates if c.item_id in items], subject_facts(ctx)
    )
    allowed = {item.item_id for item in verdict.kept}
    kept = [c for c in candidates if c.item_id in allowed][:k]
    return Candidates(
        strategy=strategy,
        items=kept,
        rules_fired=fired + rules_fired(verdict.firings),
        degraded=degraded,
    )


def _cos(a: np.ndarray, b: np.ndarray) -> float:
    return round(float(a @ b), 4)


def _unit(vector: np.ndarray) -> np.ndarray:
    norm = float(np.linalg.norm(vector))
    return (vector / norm).astype(np.float32) if norm else vector.astype(np.float32)
