"""How a person's taste becomes one fused Qdrant query — shared by the service and the evals, so
what is evaluated is what is served.

Sources, each a prefetch inside Qdrant, fused by weighted reciprocal rank fusion:

- `query`: the request's text, embedded (content vector);
- `taste`: the recency-weighted mean of the content vectors of what the person interacted with
  lately (content vector) — it also finds new items nobody has interacted with yet;
- `collab`: the person's collaborative factor (collab vector), when the model knows them;
- `recent`: the recency-weighted mean of the collab vectors of what they interacted with lately
  (collab vector) — the drift of their taste, which a factor fitted on all their history lags.

With no source at all (a new visitor, no text) the caller falls back to popularity.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from retrieval.index import COLLAB_VECTOR, VECTOR_NAME, Hit, ItemFilter, Source, VectorIndex


@dataclass(frozen=True)
class HybridWeights:
    query: float = 2.0
    taste: float = 1.0
    collab: float = 2.0
    recent: float = 1.0
    prefetch: int = 100


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
    weights = 0.5 ** (np.arange(len(vectors)) / half_life)
    mean = np.average(np.asarray(vectors, dtype=np.float32), axis=0, weights=weights)
    return unit(mean) if normalize else mean


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
) -> list[Hit]:
    """One fused query for all sources (a plain search for one), filters pushed into Qdrant."""
    if not sources:
        raise ValueError("no sources: fall back to popularity instead")
    if len(sources) == 1 and (source := next(iter(sources.values()))).vector is not None:
        return index.search(
            source.vector, k=k, flt=flt, with_vectors=with_vectors, using=source.using
        )
    return index.fused_search(
        list(sources.values()), k=k, flt=flt, prefetch=prefetch, with_vectors=with_vectors
    )
