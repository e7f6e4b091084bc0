"""Text embedders: a sentence-transformers model, and a hashing fallback that needs no model."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import TYPE_CHECKING, Protocol, runtime_checkable

import numpy as np
from sklearn.feature_extraction.text import HashingVectorizer
from sklearn.preprocessing import normalize

if TYPE_CHECKING:
    from sentence_transformers import SentenceTransformer

logger = logging.getLogger("attune.retrieval")


@runtime_checkable
class Embedder(Protocol):
    """Turns texts into L2-normalised float32 vectors of a fixed dimension."""

    name: str
    dim: int
    degraded: str | None
    """A human reason when this embedder stands in for the configured one, else None."""

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        """Returns a float32 array of shape (len(texts), dim) with L2-normalised rows."""
        ...


class SentenceTransformerEmbedder:
    """A sentence-transformers model, loaded once and kept for the life of the process."""

    BATCH_SIZE = 64

    def __init__(
        self, model_name_or_path: str, device: str = "cpu", *, local_files_only: bool = False
    ) -> None:
        if not model_name_or_path.strip():
            raise ValueError("model_name_or_path is empty: give a model name or a folder")
        # Imported here so that the hashing fallback works without paying for torch.
        from sentence_transformers import SentenceTransformer

        self._model: SentenceTransformer = SentenceTransformer(
            model_name_or_path, device=device, local_files_only=local_files_only
        )
        dim = self._model.get_embedding_dimension()
        if dim is None:
            raise ValueError(
                f"sentence-transformers model {model_name_or_path!r} does not report an "
                "embedding dimension; use a model that ends in a pooling layer"
            )
        self.name = model_name_or_path
        self.dim = dim
        self.degraded: str | None = None

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        if not texts:
            return np.empty((0, self.dim), dtype=np.float32)
        vectors = self._model.encode(
            list(texts),
            batch_size=self.BATCH_SIZE,
            convert_to_numpy=True,
            normalize_embeddings=True,
            show_progress_bar=False,
        )
        return np.asarray(vectors, dtype=np.float32)


class HashingEmbedder:
    """The offline fallback: hashed word and character n-grams, no model, fully deterministic.

    It combines word unigrams and bigrams with character 3-4-grams inside word boundaries, so
    texts that share words or word stems ("scarf", "scarves") land close together. It knows
    nothing about meaning: synonyms ("sofa", "couch") and paraphrases without shared words
    are as far apart as unrelated texts. A text with no tokens embeds to the zero vector.
    """

    def __init__(self, dim: int = 384) -> None:
        if dim < 2:
            raise ValueError(f"dim must be at least 2, got {dim}")
        self.name = f"hashing-{dim}"
        self.dim = dim
        self.degraded: str | None = None
        common = {"n_features": dim, "alternate_sign": False, "norm": "l2", "lowercase": True}
        self._words = HashingVectorizer(analyzer="word", ngram_range=(1, 2), **common)
        self._chars = HashingVectorizer(analyzer="char_wb", ngram_range=(3, 4), **common)

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        if not texts:
            return np.empty((0, self.dim), dtype=np.float32)
        texts = list(texts)
        # Each channel is normalised before the sum, so words and characters weigh the same.
        combined = self._words.transform(texts) + self._chars.transform(texts)
        return normalize(combined, norm="l2").toarray().astype(np.float32)


def _describe(err: BaseException) -> str:
    """The error's type and the first line of its message, short enough for a log line."""
    lines = str(err).strip().splitlines()
    return f"{type(err).__name__}: {lines[0]}" if lines else type(err).__name__


def load_embedder(
    model_name: str, *, fallback_dim: int = 384, allow_download: bool = False
) -> Embedder:
    """Loads the sentence-transformers model, or falls back to the hashing embedder, labelled.

    Without `allow_download` only a folder or the local Hugging Face cache is read, so a model
    that is not there fails at once (rather than after the hub client's retries on a machine
    with no network) and the fallback is returned; its `degraded` says why.
    """
    try:
        return SentenceTransformerEmbedder(model_name, local_files_only=not allow_download)
    # The hub's errors are OSError subclasses (missing repo, no network, not cached) or
    # ValueError subclasses (invalid repo id); a folder that is not a model raises ValueError.
    except (OSError, ValueError) as err:
        reason = _describe(err)
        logger.warning(
            "sentence-transformers model %r could not be loaded (%s); "
            "using the offline hashing embedder",
            model_name,
            reason,
        )
        fallback = HashingEmbedder(fallback_dim)
        fallback.degraded = (
            f"embedder: sentence-transformers model {model_name!r} could not be loaded "
            f"({reason}); using the offline hashing embedder"
        )
        return fallback
