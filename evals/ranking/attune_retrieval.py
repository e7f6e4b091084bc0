"""Attune's own retrieval as the ranking suite runs it: items on Qdrant Edge with their content and
collaborative vectors, queried through `retrieval.hybrid` with the person's training items
excluded inside Qdrant.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from evals.movielens import Split
from retrieval.collab import ALSParams, Interactions, fit
from retrieval.edge import EdgeIndex
from retrieval.embedder import Embedder
from retrieval.hybrid import HybridWeights, hybrid_search, hybrid_sources, taste_vector
from retrieval.index import COLLAB_VECTOR, ItemFilter
from store.schemas import Item

ATTUNE_TYPES = {"content", "collab", "hybrid"}
SOURCES = {
    "content": ("taste",),
    "collab": ("collab",),
    "hybrid": ("taste", "collab", "recent"),
}  # a system's `params.sources` may choose others


class AttuneRetrieval:
    """The movies indexed on Qdrant Edge with content and collab vectors, queried as the service
    queries them."""

    def __init__(
        self,
        split: Split,
        folder: Path,
        embedder: Embedder,
        content: dict[str, np.ndarray],
        als: ALSParams,
        weights: HybridWeights,
        *,
        taste_items: int,
        liked_min: float,
    ) -> None:
        self.split, self.weights = split, weights
        self.taste_items, self.liked_min = taste_items, liked_min
        movies = list(split.movies.values())
        self.content = content
        self.model = fit(
            Interactions.from_triples(
                (user, movie, 1.0) for user, movie, _ in split.train_triples()
            ),
            als,
        )
        self.index = EdgeIndex(folder, dim=embedder.dim, collab_dim=als.factors)
        items = [
            Item(
                item_id=m.movie_id,
                title=m.title[:300] or m.movie_id,
                description=", ".join(m.genres),
                category=(m.genres[0] if m.genres else "unknown").lower()[:64],
                tags=list(m.genres),
                price=1.0,
                margin=0.0,
                stock=1,
            )
            for m in movies
        ]
        self.index.upsert(items, np.stack([self.content[m.movie_id] for m in movies]))
        self.index.set_vectors(COLLAB_VECTOR, self.model.item_vectors())
        self.index.optimize()

    def recommend(
        self, kind: str, user: str, seen: set[str], k: int, use: frozenset[str]
    ) -> list[str]:
        history = self.split.train[user]
        liked = [r for r in history if r.rating >= self.liked_min] or history
        recent = [r.movie for r in reversed(liked)][: self.taste_items]
        taste = recent_collab = None
        if recent and "taste" in use:
            taste = taste_vector(np.stack([self.content[m] for m in recent]))
        factors = self.model.item_vectors(recent)
        if "recent" in use and factors:
            recent_collab = taste_vector(
                np.stack([factors[m] for m in recent if m in factors]), normalize=False
            )
        sources = hybrid_sources(
            self.weights,
            taste=taste,
            collab=self.model.user_vector(user) if "collab" in use else None,
            recent=recent_collab,
        )
        flt = ItemFilter(exclude_ids=tuple(seen))
        hits = hybrid_search(self.index, sources, k=k, flt=flt, prefetch=self.weights.prefetch)
        return [hit.item_id for hit in hits]

    def close(self) -> None:
        self.index.close()
