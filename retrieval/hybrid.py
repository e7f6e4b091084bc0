"""How a person's taste becomes one fused Qdrant query — shared by the service and the evals, so
what is evaluated is what is served.

A request's text decides *which* items come back: its BM25 keywords (lexical vector) and its
embedding (content vector, above a minimum similarity) are fused into the match (`Match`), and
only matched items are returned. The person's signals then *order* those items, each a re-scoring
of the match inside the same Qdrant query, fused with the match order by weighted reciprocal rank
fusion, at weights that let them break the match's near-ties but not overrule it
(`HybridWeights.in_match`):

- `taste`: the recency-weighted mean of the content vectors of what the person interacted with
  lately (content vector) — it also finds new items nobody has interacted with yet;
- `collab`: the person's collaborative factor (collab vector), when the model knows them;
- `recent`: the recency-weighted mean of the collab vectors of what they interacted with lately
  (collab vector) — the drift of their taste, which a factor fitted on all their history lags.

Without text the same signals each prefetch their own nearest items. With no source at all (a
new visitor, no text) the caller falls back to popularity.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass, replace

import numpy as np

from retrieval.index import (
    COLLAB_VECTOR,
    VECTOR_NAME,
    FusedSearch,
    Hit,
    ItemFilter,
    Match,
    Source,
    VectorIndex,
)


@dataclass(frozen=True)
class HybridWeights:
    query: float = 2.0
    taste: float = 1.0
    collab: float = 2.0
    recent: float = 1.0
    prefetch: int = 100
    fusion: str = "dbsf"
    """How the match fuses the text's keywords and embedding (`retrieval.index.FUSIONS`). DBSF
    (their scores, each normalised over its prefetch) beat weighted RRF (their ranks) on the
    tuning half of the product-search suite: NDCG@10 0.94 against 0.89 at best."""
    lexical: float = 1.0
    """Weight of the BM25 keywords against the text's embedding inside the match (RRF only:
    DBSF is unweighted)."""
    dense: float = 1.0
    min_similarity: float = 0.3
    """Cosine below which an item does not match the text by meaning (it may still by words)."""
    match_limit: int = 50
    """How many of the best-matching items the person's signals may re-order."""
    feedback: float = 1.0
    """Pseudo-relevance feedback (Rocchio): the text's embedding is moved towards the mean of its
    `feedback_items` best matches by this much before the match is run again (0: no feedback).
    On the tuning half of the product-search suite it lifted NDCG@10 from 0.942 to 0.962."""
    feedback_items: int = 5
    in_match: float = 128.0
    """What the person's sources' weights are multiplied by when they re-order a text's match
    (`match_sources`): they break the match's near-ties instead of overruling it. Qdrant's
    weighted RRF counts position p of a source of weight w as position p / w, so over one list
    that every source orders (the matched items) a heavier source's terms are flatter and move
    the fused order less. At their own weights (x1) the three sources carried about four fifths
    of a match's order: on the search suite's catalog, people whose history was ten random
    products saw 78% of each top 10 replaced and NDCG@10 fall from 0.962 to 0.650 (tuning half).
    Chosen on that half only (`python -m evals.search_personal`, session 20): the grid point
    with the best NDCG@10 for people whose history is relevant to the query, among those that
    keep 97.5% of the anonymous NDCG@10 for people with random histories. Held out (three
    query sets): random histories 0.845 / 0.839 / 0.838 against anonymous 0.847 / 0.842 / 0.841
    (x1: 0.654 / 0.552 / 0.424); the price is the gain for relevant histories, 0.850 / 0.843 /
    0.843 where x1 gave 0.926 / 0.875 / 0.909."""


def match_sources(weights: HybridWeights, sources: dict[str, Source]) -> dict[str, Source]:
    """The person's sources as they re-order a text's match: weights times `weights.in_match`."""
    return {
        name: replace(source, weight=source.weight * weights.in_match)
        for name, source in sources.items()
    }


def text_match(weights: HybridWeights, text: str, vector: np.ndarray | None) -> Match:
    """The items the request's text matches: its keywords, and its meaning above a threshold."""
    weighted = weights.fusion == "rrf"
    sources = [Source.lexical(text, weights.lexical if weighted else 1.0)]
    if vector is not None and np.any(vector):
        dense = weights.dense if weighted else 1.0
        sources.append(Source(VECTOR_NAME, vector, dense, threshold=weights.min_similarity))
    return Match(
        tuple(sources), limit=weights.match_limit, weight=weights.query, fusion=weights.fusion
    )


def feedback_vector(
    weights: HybridWeights, vector: np.ndarray, neighbours: list[np.ndarray]
) -> np.ndarray:
    """Rocchio's pseudo-relevance feedback on the text's embedding: the unit query vector plus
    `weights.feedback` times the unit mean of its best matches' content vectors, normalized."""
    if not neighbours or weights.feedback <= 0:
        return vector
    centroid = unit(np.mean(np.stack(neighbours), axis=0))
    return unit(unit(np.asarray(vector, dtype=np.float32)) + weights.feedback * centroid)


def refined_match(
    index: VectorIndex,
    weights: HybridWeights,
    text: str,
    vector: np.ndarray | None,
    flt: ItemFilter | None,
) -> Match:
    """The text's match after one round of feedback: the match is run for its best
    `weights.feedback_items` items (filters pushed down), and its embedding moved towards theirs
    (`feedback_vector`). Keywords are left as they are; without an embedding, or when nothing
    matches, the first match is returned unchanged.

    The feedback round reads what the text means in the catalog, not what one person may be
    shown: the filter's `exclude_ids` (a person's recent purchases) are left out of it, so that
    everyone who asks a text under the same other constraints gets the same round, which the
    index may answer from a kept answer (`retrieval.edge.MATCHES_KEPT`). The match the round
    gives is then searched under the whole filter."""
    first = text_match(weights, text, vector)
    if vector is None or not np.any(vector) or weights.feedback <= 0:
        return first
    if flt is not None and flt.exclude_ids:
        flt = replace(flt, exclude_ids=())
    # Only the vectors are wanted: asked in a batch of one, an index may read them from what it
    # keeps (`EdgeIndex.fused_searches`) rather than with the query's answer.
    [top] = index.fused_searches(
        [
            FusedSearch(
                (),
                weights.feedback_items,
                flt,
                weights.prefetch,
                with_vectors=True,
                match=first,
                with_payload=False,
            )
        ]
    )
    neighbours = [hit.vector for hit in top if hit.vector is not None]
    if not neighbours:
        return first
    return text_match(weights, text, feedback_vector(weights, vector, neighbours))


def unit(vector: np.ndarray) -> np.ndarray:
    norm = float(np.linalg.norm(vector))
    return vector / norm if norm > 0 else vector


def taste_vector(
    vectors: np.ndarray, *, half_life: float = 5.0, normalize: bool = True
) -> np.ndarray | None:
    """The weighted mean of item vectors, newest first: the i-th newest weighs 2^(-i/half_life).
    Content vectors are compared by cosine (normalized); collab ones by dot product (not)."""
    if len(vectors) == 0:
        return None
    # np.average's own arithmetic (float64 products summed down the rows, over the summed
    # weights), without its checks and dispatch, which cost as much again.
    weights, total = _recency_weights(len(vectors), half_life)
    products = np.multiply(np.asarray(vectors, dtype=np.float32), weights, dtype=np.float64)
    mean = products.sum(axis=0) / total
    if not normalize:
        return mean
    # `unit`'s arithmetic: np.linalg.norm of a real vector is the square root of its dot with
    # itself, and math.sqrt rounds as np.sqrt does (IEEE), without the norm's dispatch.
    norm = math.sqrt(mean.dot(mean))
    return mean / norm if norm > 0 else mean


@functools.lru_cache(maxsize=64)
def _recency_weights(n: int, half_life: float) -> tuple[np.ndarray, np.ndarray]:
    """`taste_vector`'s weights of `n` items, newest first, as a column, and their sum (shape
    (1,), as `sum(axis=0)` gives it); computed once per length, read-only as they are shared."""
    weights = (0.5 ** (np.arange(n) / half_life)).reshape(n, 1)
    total = weights.sum(axis=0)
    weights.flags.writeable = False
    total.flags.writeable = False
    return weights, total


def hybrid_sources(
    weights: HybridWeights,
    *,
    query: np.ndarray | None = None,
    taste: np.ndarray | None = None,
    collab: np.ndarray | None = None,
    recent: np.ndarray | None = None,
) -> dict[str, Source]:
    """The sources a request has, by name ("query", "taste", "collab", "recent")."""
    sources: dict[str, Source] = {}
    if query is not None and np.any(query):
        sources["query"] = Source(VECTOR_NAME, query, weights.query)
    if taste is not None and np.any(taste):
        sources["taste"] = Source(VECTOR_NAME, taste, weights.taste)
    if collab is not None and np.any(collab):
        sources["collab"] = Source(COLLAB_VECTOR, collab, weights.collab)
    if recent is not None and np.any(recent):
        sources["recent"] = Source(COLLAB_VECTOR, recent, weights.recent)
    return sources


def hybrid_search(
    index: VectorIndex,
    sources: dict[str, Source],
    *,
    k: int,
    flt: ItemFilter | None,
    prefetch: int,
    with_vectors: bool = False,
    match: Match | None = None,
    with_payload: bool = True,
) -> list[Hit]:
    """One fused query for all sources (a plain search for one), filters pushed into Qdrant;
    with a `match`, only matched items, ordered by the match and the sources together.
    `with_payload=False`: each hit's payload holds only its id (`VectorIndex.search`)."""
    if match is None:
        if not sources:
            raise ValueError("no sources: fall back to popularity instead")
        if len(sources) == 1 and (source := next(iter(sources.values()))).vector is not None:
            return index.search(
                source.vector,
                k=k,
                flt=flt,
                with_vectors=with_vectors,
                using=source.using,
                with_payload=with_payload,
            )
    return index.fused_search(
        list(sources.values()),
        k=k,
        flt=flt,
        prefetch=prefetch,
        with_vectors=with_vectors,
        match=match,
        with_payload=with_payload,
    )
