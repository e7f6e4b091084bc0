"""Candidate retrieval: the request's text, the person's recent taste and their collaborative
factor, fused in one Qdrant query (`retrieval.hybrid`), policy filters pushed into Qdrant.

A new visitor with no text gets popularity (favourite categories first when known). Each
candidate's score parts are the shares of the fused score its sources carried, and its reasons
name only the sources that carried a large share.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, cast

import numpy as np

from retrieval.hybrid import HybridWeights, hybrid_search, hybrid_sources, taste_vector
from retrieval.index import RRF_K, VECTOR_NAME, Hit, IndexUnavailable, ItemFilter, Source
from store.catalog import get_items, popular_items
from store.schemas import Item
from tools.context import RunContext
from tools.profile import lookup_profile, rules_fired, subject_facts, subject_features
from tools.schemas import Candidate, Candidates, RetrieveInput, RuleFired, ScoreParts

WEIGHTS = HybridWeights(query=2.0, taste=1.0, collab=2.0, recent=1.0, prefetch=100)
_TASTE_ITEMS = 10  # recent items that make up the taste vector
Strategy = Literal["hybrid", "query", "taste", "collab", "recent", "popular"]
_REASON_SHARE = 0.25  # a source that carries at least this share of the score is named as a reason


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

    query_vec = ctx.deps.embedder.embed_query(args.query) if args.query else None
    taste_vec: np.ndarray | None = None
    recent: Recent | None = None
    collab_vec = recent_collab = None
    affinity = features.category_affinity if profile.personalized else {}
    try:
        if profile.personalized and features.recent_item_ids:
            taste_vec, recent = _taste(ctx, list(features.recent_item_ids[:_TASTE_ITEMS]))
        if profile.personalized and ctx.deps.collab is not None:
            collab_vec = ctx.deps.collab.user_vector(ctx.subject.key)
            recent_ids = list(features.recent_item_ids[:_TASTE_ITEMS])
            factors = ctx.deps.collab.item_vectors(recent_ids)
            if factors:
                stacked = np.stack([factors[i] for i in recent_ids if i in factors])
                recent_collab = taste_vector(stacked, normalize=False)
        sources = hybrid_sources(
            WEIGHTS, query=query_vec, taste=taste_vec, collab=collab_vec, recent=recent_collab
        )
        if not sources:
            return _popular(ctx, args.k, flt, affinity, fired, degraded)
        hits = hybrid_search(
            ctx.deps.index,
            sources,
            k=max(3 * args.k, 30),
            flt=flt,
            prefetch=WEIGHTS.prefetch,
            with_vectors=True,
        )
    except IndexUnavailable as error:
        degraded.append(f"vectors: {error}; fell back to popularity")
        return _popular(ctx, args.k, flt, affinity, fired, degraded)

    verdict = ctx.deps.policy.check_items(
        [_payload_item(hit.payload) for hit in hits], subject_facts(ctx)
    )
    allowed = {item.item_id for item in verdict.kept}
    hits = [hit for hit in hits if hit.item_id in allowed]
    strategy = "hybrid" if len(sources) > 1 else cast(Strategy, next(iter(sources)))
    return _remember(
        ctx,
        Candidates(
            strategy=strategy,
            items=_rank(hits, args.k, sources, recent, args.query),
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
    titles = [items[i].title if i in items else i for i in present]
    return taste_vector(stacked), Recent(titles, stacked)


@dataclass(frozen=True)
class Recent:
    """Recently seen items: their titles and vectors, row by row."""

    titles: list[str]
    vectors: np.ndarray


def _rank(
    hits: list[Hit],
    k: int,
    sources: dict[str, Source],
    recent: Recent | None,
    query: str | None,
) -> list[Candidate]:
    """Keep Qdrant's fused order and split each item's score into its sources' shares.

    Qdrant returns only the fused score, so each source's share is recomputed with Qdrant's own
    RRF formula from the item's position, within the returned hits, when they are ordered by
    that source's similarity. That position can be better than the item's position in the
    source's full prefetch, so a share is an upper bound of the source's true contribution; a
    source is named as a reason only when its share is large (at least a quarter).
    """
    hits = hits[:k]
    if not hits:
        return []
    shares: dict[str, np.ndarray] = {}
    for name, source in sources.items():
        present = [i for i, hit in enumerate(hits) if source.using in hit.vectors]
        if not present:
            continue
        matrix = np.stack([hits[i].vectors[source.using] for i in present])
        similarity = matrix @ source.vector
        contribution = np.zeros(len(hits))
        for position, row in enumerate(np.argsort(-similarity, kind="stable")):
            contribution[present[row]] = 1 / ((position + 1) / source.weight + RRF_K - 1)
        shares[name] = contribution
    total = np.sum(list(shares.values()), axis=0) if shares else np.zeros(len(hits))
    closest = None
    if recent is not None:
        matrix = np.stack([hit.vectors[VECTOR_NAME] for hit in hits])
        closest = (matrix @ recent.vectors.T).argmax(axis=1)
    ranked = []
    for i, hit in enumerate(hits):
        payload = hit.payload
        reasons: list[str] = []
        for name in sorted(shares, key=lambda n: -shares[n][i]):
            if total[i] > 0 and (shares[name][i] / total[i] >= _REASON_SHARE or not reasons):
                if name == "query":
                    reasons.append(f"matches your request “{query}”")
                elif name == "taste" and recent is not None and closest is not None:
                    title = recent.titles[int(closest[i])]
                    reasons.append(f"similar to {title}, which you looked at recently")
                elif name == "collab":
                    reasons.append("liked by people whose shopping resembles yours")
                elif name == "recent":
                    reasons.append("often chosen together with what you looked at lately")
        ranked.append(
            Candidate(
                item_id=payload["item_id"],
                title=payload["title"],
                category=payload["category"],
                price=payload["price"],
                currency=payload["currency"],
                score=round(hit.score, 5),
                parts=ScoreParts(
                    **{
                        name: round(float(values[i] / total[i]), 4) if total[i] else 0.0
                        for name, values in shares.items()
                    }
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
