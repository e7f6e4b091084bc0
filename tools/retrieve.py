"""Candidate retrieval: the request's text, the person's recent taste and their collaborative
factor, fused in one Qdrant query (`retrieval.hybrid`), policy filters pushed into Qdrant; with
text, the items the text matches come from that query and are re-ordered by the person's
signals from its answer (`_reordered`).

A new visitor with no text gets popularity (favourite categories first when known). Each
candidate's score parts are the shares of the fused score its sources carried, and its reasons
name only the sources that carried a large share.

With the item-item model (`retrieval.sequence`: EASE^R and next-item transitions; fitted when
the service seeds or starts, and by `attune train`), a known person with history and no request
text gets Qdrant's candidates re-ranked by it, exactly as the MovieLens suite's hybrid:
`ItemItemModel.rerank` over a pool of `params.pool` (the settings' `itemitem_pool`). The
candidate's `ease` and `sequence` parts are then the terms that ordered it.
A request with text keeps Qdrant's order: its words decide and order what matches.

Without text, Qdrant's ranking (up to `itemitem_pool` candidates) is read as ids and scores only
(`with_payload=False`): the re-ranking needs nothing else, and only the items to be shown have
their payloads and vectors read (`VectorIndex.hits`, one call). The item rules go to Qdrant as
filters and are checked again on what is shown (`_shown`): the next `k` ranked items are
checked, one a rule removes is replaced by the next, and `rules_fired` lists a `removed` firing
for each item removed that way. Before, every candidate of the pool was checked, so a rule also
named a leaked item that ranked too low to be shown; such an item also stays in the pool the
re-ranking scales its terms over. Both only matter for an index that ignores a filter.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Literal, cast

import numpy as np

from policies.engine import Firing, Verdict
from retrieval.hybrid import (
    HybridWeights,
    hybrid_search,
    hybrid_sources,
    match_sources,
    refined_match,
    taste_vector,
)
from retrieval.index import (
    RRF_K,
    VECTOR_NAME,
    FusedSearch,
    Hit,
    IndexUnavailable,
    ItemFilter,
    Match,
    Source,
    VectorIndex,
)
from retrieval.sequence import History, Inputs, ItemItemModel
from store.catalog import get_items
from store.schemas import Item
from tools.context import RunContext
from tools.profile import lookup_profile, rules_fired, subject_facts, subject_features
from tools.reads import decision_history
from tools.schemas import Candidate, Candidates, RetrieveInput, RuleFired, ScoreParts

log = logging.getLogger("attune.retrieval")
WEIGHTS = HybridWeights(query=2.0, taste=1.0, collab=2.0, recent=1.0, prefetch=100)
EMPTY_INDEX = "the vector index is empty (run 'attune reindex')"
_TASTE_ITEMS = 10  # recent items that make up the taste vector
Strategy = Literal["hybrid", "query", "taste", "collab", "recent", "popular"]
_REASON_SHARE = 0.25  # a source that carries at least this share of the score is named as a reason
# A re-ranking term is named when it carried this share of the item's item-item score: less than
# `_REASON_SHARE`, as transitions weigh less than EASE's 1 (`itemitem_transition_weight`) and
# would seldom reach a quarter.
_RERANK_REASON_SHARE = 0.1
Terms = dict[str, dict[str, float]]  # each input's RRF term of each item, by the input's name


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

    query_vec = _query_vector(ctx, args.query, degraded) if args.query else None
    taste_vec: np.ndarray | None = None
    recent: Recent | None = None
    collab_vec = recent_collab = None
    affinity = features.category_affinity if profile.personalized else {}
    matched: list[Hit] = []
    match_terms: Terms | None = None  # each input's RRF terms over the matched items
    history: History = []
    if profile.personalized and not args.query and ctx.deps.itemitem is not None:
        history = decision_history(ctx)
    try:
        if profile.personalized and features.recent_item_ids:
            taste_vec, recent = _taste(ctx, list(features.recent_item_ids[:_TASTE_ITEMS]))
        if profile.personalized and ctx.deps.collab is not None:
            collab_vec = ctx.deps.collab.user_vector(ctx.subject.key)
            recent_ids = list(features.recent_item_ids[:_TASTE_ITEMS])
            factors = ctx.deps.collab.item_vectors(recent_ids)
            if factors:
                stacked = np.array([factors[i] for i in recent_ids if i in factors])
                recent_collab = taste_vector(stacked, normalize=False)
        sources = hybrid_sources(WEIGHTS, taste=taste_vec, collab=collab_vec, recent=recent_collab)
        match = (
            refined_match(ctx.deps.index, WEIGHTS, args.query, query_vec, flt)
            if args.query
            else None
        )
        k = max(3 * args.k, 30, _pool(ctx) if history else 0)
        hits: list[Hit] = []
        if match is not None:
            matched, hits, match_terms = _match_search(
                ctx.deps.index, match, match_sources(WEIGHTS, sources), k, flt
            )
            if not matched and ctx.deps.index.count() == 0:
                raise IndexUnavailable(EMPTY_INDEX)
            if not matched:
                degraded.append("query: no item matches the request's words; ranked without them")
                match, match_terms = None, None
        if match is None and not sources:
            return _popular(ctx, args.k, flt, affinity, fired, degraded)
        if match is None:
            hits = hybrid_search(
                ctx.deps.index,
                sources,
                k=k,
                flt=flt,
                prefetch=WEIGHTS.prefetch,
                with_payload=False,
            )
        if not hits and ctx.deps.index.count() == 0:
            # An empty index answers nothing, silently: say so, and rank from the store.
            raise IndexUnavailable(EMPTY_INDEX)
        reranked = None
        if history and not matched and ctx.deps.itemitem is not None:
            hits, reranked = _rerank(ctx.deps.itemitem, hits, history)
        # A ranking without text carried only ids and scores: the payloads and vectors of the
        # items to show are read now, for them alone.
        shown, removed = _shown(ctx, hits, args.k, read=match is None)
    except IndexUnavailable as error:
        degraded.append(f"vectors: {error}; fell back to popularity")
        return _popular(ctx, args.k, flt, affinity, fired, degraded)

    names = (["query"] if matched else []) + list(sources)
    strategy = "hybrid" if len(names) > 1 else cast(Strategy, names[0])
    return _remember(
        ctx,
        Candidates(
            strategy=strategy,
            items=_rank(ctx, shown, args.k, sources, recent, args.query, match_terms, reranked),
            rules_fired=fired + rules_fired(removed),
            degraded=degraded,
        ),
    )


def _shown(
    ctx: RunContext, hits: list[Hit], k: int, *, read: bool
) -> tuple[list[Hit], list[Firing]]:
    """The first `k` of the ranked hits that every item rule allows, and the firings of the
    rules that removed any hit that would have been shown in their place.

    The rules already went to Qdrant as filters; this re-check is what keeps an index that
    ignored one from leaking an item, so it covers what is shown: the next `k` hits are checked,
    and each one removed is replaced by the next until `k` are kept. With `read`, the hits
    carry only ids and scores (`with_payload=False`), and the payloads and vectors of those
    checked are read from the index in one call per round."""
    facts = subject_facts(ctx)
    shown: list[Hit] = []
    removed: dict[str, list[Firing]] = {}
    start = 0
    while len(shown) < k and start < len(hits):
        batch = hits[start : start + k - len(shown)]
        start += len(batch)
        if read:
            batch = _with_payloads(ctx.deps.index, batch)
        verdict = ctx.deps.policy.check_items([_payload_item(h.payload) for h in batch], facts)
        allowed = {item.item_id for item in verdict.kept}
        shown += [hit for hit in batch if hit.item_id in allowed]
        removed.update(verdict.removed)
    return shown, Verdict[Item](kept=[], removed=removed).firings


def _with_payloads(index: VectorIndex, hits: list[Hit]) -> list[Hit]:
    """The hits with their whole payloads and vectors, scores kept; one no longer stored (deleted
    since the ranking) is left out."""
    stored = {hit.item_id: hit for hit in index.hits([hit.item_id for hit in hits])}
    return [
        Hit(hit.item_id, hit.score, stored[hit.item_id].payload, stored[hit.item_id].vectors)
        for hit in hits
        if hit.item_id in stored
    ]


def _pool(ctx: RunContext) -> int:
    """How many of Qdrant's candidates the item-item model re-ranks (`itemitem_pool`)."""
    return ctx.deps.itemitem.params.pool if ctx.deps.itemitem is not None else 0


def _query_vector(ctx: RunContext, text: str, degraded: list[str]) -> np.ndarray | None:
    """The query's embedding, or None when the model fails: the request's words still match
    (`retrieval.hybrid.text_match` without a vector), and the answer says it is degraded. Only
    the error's type is told, in the log and the answer: a message may quote the text."""
    try:
        return ctx.deps.embedder.embed_query(text)
    except Exception as error:
        reason = f"the embedding model failed ({type(error).__name__})"
        log.warning("retrieval: %s on a query; matching its words only", reason)
        degraded.append(f"query: {reason}; matched the request's words only")
        return None


def _match_search(
    index: VectorIndex,
    match: Match,
    sources: dict[str, Source],
    k: int,
    flt: ItemFilter,
) -> tuple[list[Hit], list[Hit], Terms]:
    """The text's matched items in the match's own order, with the vectors of every one so that
    each score part can be computed exactly; the matched items ordered by the match and the
    sources together (`_reordered`); and the terms that order is fused from (`_match_terms`),
    which are the items' score parts: one query, the rest from its answer."""
    [matched] = index.fused_searches(
        [
            FusedSearch(
                (), WEIGHTS.match_limit, flt, WEIGHTS.prefetch, with_vectors=True, match=match
            )
        ]
    )
    terms = _match_terms(matched, match, sources)
    if not sources:
        return matched, matched, terms
    return matched, _reordered(matched, terms, min(k, match.limit)), terms


def _match_terms(matched: list[Hit], match: Match, sources: dict[str, Source]) -> Terms:
    """The RRF terms over the `matched` items (the match's answer, in its order, with their
    vectors) of the match order (`query`) and of each source's order of the same items."""
    return {
        "query": _rrf_terms([hit.item_id for hit in matched], match.weight),
        **_source_terms(matched, sources),
    }


def _reordered(matched: list[Hit], terms: Terms, limit: int) -> list[Hit]:
    """The first `limit` of the `matched` items re-ordered by the match and the sources
    together: Qdrant's weighted RRF of the match order and each source's order of the same
    items (`_match_terms`), scored as Qdrant scores them (`RRF_K`), ties kept in the match's
    order.

    This is the answer of the index's search re-ordering the match by the sources
    (`FusedSearch` with both), computed here: Qdrant would run the match a second time for its
    order and re-score the matched items under each source, a query that cost a twelfth of a
    decision with text; the sources re-score fifty vectors that are already at hand. An item
    without a source's named vector is left out of that source's order, as Qdrant leaves it
    out (`tests/test_index_contract.py` checks the two answers agree). One difference: that
    search ran the match's own sources with a prefetch of `max(prefetch, k)`, so from a request
    of 34 items on (`k` is three times the request's) its match could differ a little from the
    match answered alone; here the order is always that of the match answered alone, the one
    `_rank` splits each score over."""
    fused = [sum(term.get(hit.item_id, 0.0) for term in terms.values()) for hit in matched]
    order = sorted(range(len(matched)), key=lambda n: -fused[n])[:limit]
    return [
        Hit(matched[n].item_id, fused[n], matched[n].payload, matched[n].vectors) for n in order
    ]


def _remember(ctx: RunContext, found: Candidates) -> Candidates:
    """Keep the categories of what was retrieved, so later tools in the request need no lookup."""
    ctx.memo.setdefault("categories", {}).update({c.item_id: c.category for c in found.items})
    return found


def _taste(ctx: RunContext, recent_ids: list[str]) -> tuple[np.ndarray | None, Recent | None]:
    """The recency-weighted mean of recently seen items' vectors, and those items' titles."""
    # Their titles come with their vectors: the index holds every indexed item's payload.
    points = ctx.deps.index.points(recent_ids)
    if not points:
        return None, None
    # Rows of one named vector have one length: np.array stacks them as np.stack does, without
    # np.stack's per-row Python steps.
    stacked = np.array([point.vectors[VECTOR_NAME] for point in points])
    ids = [point.item_id for point in points]
    titles = [point.payload["title"] for point in points]
    return taste_vector(stacked), Recent(ids, titles, stacked)


@dataclass(frozen=True)
class Recent:
    """Recently seen items: their ids, titles and vectors, row by row."""

    ids: list[str]
    titles: list[str]
    vectors: np.ndarray

    def closest_other(self, item_id: str, vector: np.ndarray) -> str | None:
        """The title of the recent item most like `vector`, other than the item itself."""
        similarity = self.vectors @ vector
        for i in np.argsort(-similarity, kind="stable").tolist():
            if self.ids[i] != item_id:
                return self.titles[i]
        return None


@dataclass(frozen=True)
class Reranked:
    """How the item-item model ordered the candidates: each one's EASE and transition terms and
    fused score, and what it needs to name the history items behind them."""

    model: ItemItemModel
    history: Inputs  # what the model reads of the person's history, computed once
    terms: dict[str, tuple[float, float, float]]  # item -> (ease, transitions, fused score)
    # item -> the history items behind its two terms, read for the shown items in one go
    sources: dict[str, tuple[str | None, str | None]] = field(default_factory=dict)

    def reasons(self, item_id: str, titles: dict[str, str]) -> list[str]:
        """The terms that carried at least `_RERANK_REASON_SHARE` of the item's positive item-item
        score, each naming the history item that gave it the most."""
        ease, transitions, _ = self.terms[item_id]
        positive = max(ease, 0.0) + max(transitions, 0.0)
        ease_from, next_after = self.sources.get(item_id) or self.model.sources(
            item_id, self.history
        )
        reasons = []
        if next_after and transitions > 0 and transitions >= _RERANK_REASON_SHARE * positive:
            title = titles.get(next_after, next_after)
            reasons.append(f"often chosen next after {title}, which you looked at recently")
        if ease_from and ease > 0 and ease >= _RERANK_REASON_SHARE * positive:
            title = titles.get(ease_from, ease_from)
            reasons.append(f"chosen by people who also chose {title}, which you looked at")
        return reasons

    def named(self, item_ids: list[str]) -> set[str]:
        """The history items the reasons of `item_ids` may name."""
        self.sources.update(self.model.sources_of(item_ids, self.history))
        return {
            source for item_id in item_ids for source in self.sources[item_id] if source is not None
        }


def _rerank(model: ItemItemModel, hits: list[Hit], history: History) -> tuple[list[Hit], Reranked]:
    """The hits in `ItemItemModel.rerank`'s order, and the terms each was ordered by."""
    inputs = model.inputs(history)  # read once for the terms and the reasons' sources
    ids = [hit.item_id for hit in hits]
    ease, transitions, qdrant = model.terms(ids, inputs)
    fused = ease + transitions + qdrant
    order = np.argsort(-fused, kind="stable")
    terms = dict(
        zip(ids, zip(ease.tolist(), transitions.tolist(), fused.tolist(), strict=True), strict=True)
    )
    return [hits[i] for i in order.tolist()], Reranked(model, inputs, terms)


def _source_terms(pool: list[Hit], sources: dict[str, Source]) -> Terms:
    """Each source's RRF terms over the items of `pool`, by its order of them (`_similarity_order`).
    Sources on the same named vector (collab and recent) order the same stacked vectors."""
    stacked = {using: _stacked(pool, using) for using in {s.using for s in sources.values()}}
    return {
        name: _rrf_terms(_similarity_order(stacked[source.using], source), source.weight)
        for name, source in sources.items()
    }


def _rrf_terms(order: list[str], weight: float) -> dict[str, float]:
    """Qdrant's RRF term of each item of one source's order: 1 / ((p + 1) / w + k - 1)."""
    return {item_id: 1 / ((p + 1) / weight + RRF_K - 1) for p, item_id in enumerate(order)}


def _stacked(hits: list[Hit], using: str) -> tuple[list[str], np.ndarray | None]:
    """The ids of the hits holding the named vector `using`, and those vectors row by row."""
    present = [hit for hit in hits if using in hit.vectors]
    if not present:
        return [], None
    return [hit.item_id for hit in present], np.array([hit.vectors[using] for hit in present])


def _similarity_order(stacked: tuple[list[str], np.ndarray | None], source: Source) -> list[str]:
    """The items of `stacked` (`_stacked` of the source's named vector), most similar to the
    source first."""
    ids, vectors = stacked
    if vectors is None:
        return []
    return [ids[i] for i in np.argsort(-(vectors @ source.dense), kind="stable")]


def _rank(
    ctx: RunContext,
    hits: list[Hit],
    k: int,
    sources: dict[str, Source],
    recent: Recent | None,
    query: str | None,
    match_terms: Terms | None,
    reranked: Reranked | None = None,
) -> list[Candidate]:
    """Keep Qdrant's fused order and split each item's score into its sources' shares.

    Qdrant returns only the fused score, so each source's share is recomputed with Qdrant's own
    RRF formula from the item's position in that source's order. With a text match that is
    exact: the shares are the terms the re-ordering was fused from (`match_terms`, over every
    matched item). Without
    one, positions are taken within the returned hits, which can be better than in the source's
    full prefetch, so a share is an upper bound; a source is named as a reason only when its share
    is large (at least a quarter). The request's words are named for every item that matched them.

    After the item-item re-ranking (`reranked`) the order and the score are its own; the `ease`
    and `sequence` parts are its terms, named first when they carried the item's score.
    """
    hits = hits[:k]
    if not hits:
        return []
    shares = match_terms if match_terms is not None else _source_terms(hits, sources)
    lifted = _lifted(match_terms) if match_terms is not None else None
    titles: dict[str, str] = {}
    if reranked is not None:
        # Titles already at hand come from the index's payloads, the rest from the index too
        # (one call); only what it does not hold (a hidden item in the history, say) from the
        # store.
        titles = {hit.item_id: hit.payload["title"] for hit in hits}
        if recent is not None:
            titles.update(zip(recent.ids, recent.titles, strict=True))
        missing = sorted(reranked.named([hit.item_id for hit in hits]) - set(titles))
        if missing:
            titles.update({p.item_id: p.payload["title"] for p in ctx.deps.index.hits(missing)})
            missing = [item_id for item_id in missing if item_id not in titles]
        if missing:
            with ctx.deps.db.session() as session:
                named = get_items(session, missing)
            titles.update({item_id: item.title for item_id, item in named.items()})
    ranked = []
    for hit in hits:
        payload = hit.payload
        parts = {name: values.get(hit.item_id, 0.0) for name, values in shares.items()}
        total = sum(parts.values())
        reasons: list[str] = []
        score = hit.score
        extra: dict[str, float | None] = {}
        if reranked is not None:
            ease, transitions, score = reranked.terms[hit.item_id]
            extra = {"ease": round(ease, 4) or None, "sequence": round(transitions, 4) or None}
            reasons.extend(reranked.reasons(hit.item_id, titles))
        if parts.get("query"):
            reasons.append(f"matches your request “{query}”")
        for name in sorted(parts, key=lambda n: -parts[n]):
            if name == "query" or not parts[name]:
                continue
            moved_it = (
                hit.item_id in lifted[name]
                if lifted is not None
                else parts[name] / total >= _REASON_SHARE or not reasons
            )
            if moved_it:
                reasons.extend(_source_reason(name, hit, recent))
        ranked.append(
            Candidate(
                item_id=payload["item_id"],
                title=payload["title"],
                category=payload["category"],
                price=payload["price"],
                currency=payload["currency"],
                score=round(score, 5),
                parts=ScoreParts(
                    **{
                        name: round(part / total, 4) if total else 0.0
                        for name, part in parts.items()
                    },
                    **extra,
                ),
                reasons=reasons,
            )
        )
    return ranked


def _lifted(terms: Terms) -> dict[str, set[str]]:
    """For each source of a re-ordered match, the matched items it placed higher than they
    would rank without it (the fused order of the other terms).

    Each source's share of a matched item's score is about the same for every item (the sources
    re-order a match at flattened weights, `retrieval.hybrid.HybridWeights.in_match`), so a
    share says nothing of why the item is where it is; the counterfactual does. Items the
    sources did not move are explained by the request's words alone."""
    items = list(terms["query"])
    fused = {item: sum(term.get(item, 0.0) for term in terms.values()) for item in items}

    def positions(score: dict[str, float]) -> dict[str, int]:
        # Ties keep the match's order, as `_reordered` does.
        order = sorted(range(len(items)), key=lambda n: -score[items[n]])
        return {items[n]: place for place, n in enumerate(order)}

    placed = positions(fused)
    lifted = {}
    for name, term in terms.items():
        if name == "query":
            continue
        without = positions({item: fused[item] - term.get(item, 0.0) for item in items})
        lifted[name] = {item for item in items if placed[item] < without[item]}
    return lifted


def _source_reason(name: str, hit: Hit, recent: Recent | None) -> list[str]:
    if name == "taste" and recent is not None and VECTOR_NAME in hit.vectors:
        title = recent.closest_other(hit.item_id, hit.vectors[VECTOR_NAME])
        if title is None:
            return ["you looked at it recently"]
        return [f"similar to {title}, which you looked at recently"]
    if name == "collab":
        return ["liked by people whose shopping resembles yours"]
    if name == "recent":
        return ["often chosen together with what you looked at lately"]
    return []


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
            ranked += ctx.deps.popular.popular_items(
                session,
                limit=k,
                categories=favourites,
                exclude_ids=flt.exclude_ids,
                max_min_age=flt.max_min_age,
                in_stock_only=flt.in_stock_only,
                version=ctx.memo.get("catalog_version"),  # read by tools.reads.open_decision
            )
        seen = [item.item_id for item, _ in ranked]
        ranked += ctx.deps.popular.popular_items(
            session,
            limit=k,
            exclude_ids=(*flt.exclude_ids, *seen),
            max_min_age=flt.max_min_age,
            in_stock_only=flt.in_stock_only,
            version=ctx.memo.get("catalog_version"),
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
    item = dict(payload)  # copied in C, where a comprehension steps through every field
    item.pop("in_stock", None)
    return Item.model_validate(item)
