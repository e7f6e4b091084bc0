"""Embedders: the sentence-transformers wrapper on a tiny real model, the hashing fallback."""

from __future__ import annotations

import logging
import time
from pathlib import Path

import numpy as np
import pytest
from tiny_model import HIDDEN_SIZE

from retrieval.embedder import (
    Embedder,
    HashingEmbedder,
    SentenceTransformerEmbedder,
    load_embedder,
)

TEXTS = ["a red wool scarf for winter", "trail running shoes", "a cast iron pan"]


def _cosine(a: np.ndarray, b: np.ndarray) -> float:
    return float(a @ b)


def _assert_unit_rows(vectors: np.ndarray, n: int, dim: int) -> None:
    assert vectors.shape == (n, dim)
    assert vectors.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)


@pytest.fixture(scope="module")
def st_embedder(tiny_model_dir: Path) -> SentenceTransformerEmbedder:
    return SentenceTransformerEmbedder(str(tiny_model_dir))


def test_sentence_transformer_embeds_normalised_rows(st_embedder: SentenceTransformerEmbedder):
    vectors = st_embedder.embed(TEXTS)

    _assert_unit_rows(vectors, len(TEXTS), HIDDEN_SIZE)
    assert st_embedder.dim == HIDDEN_SIZE
    assert st_embedder.degraded is None
    assert isinstance(st_embedder, Embedder)


def test_sentence_transformer_is_deterministic(
    st_embedder: SentenceTransformerEmbedder, tiny_model_dir: Path
):
    again = SentenceTransformerEmbedder(str(tiny_model_dir))

    np.testing.assert_allclose(st_embedder.embed(TEXTS), st_embedder.embed(TEXTS))
    np.testing.assert_allclose(st_embedder.embed(TEXTS), again.embed(TEXTS), atol=1e-6)
    # One query on its own embeds as it does inside a batch.
    np.testing.assert_allclose(
        st_embedder.embed(TEXTS[:1])[0], st_embedder.embed(TEXTS)[0], atol=1e-5
    )


def test_sentence_transformer_embeds_nothing_to_an_empty_array(
    st_embedder: SentenceTransformerEmbedder,
):
    assert st_embedder.embed([]).shape == (0, HIDDEN_SIZE)


def test_sentence_transformer_rejects_an_empty_name():
    with pytest.raises(ValueError, match="empty"):
        SentenceTransformerEmbedder("  ")


@pytest.mark.parametrize("dim", [384, 64])
def test_hashing_embeds_normalised_rows(dim: int):
    embedder = HashingEmbedder(dim)

    _assert_unit_rows(embedder.embed(TEXTS), len(TEXTS), dim)
    assert embedder.degraded is None
    assert isinstance(embedder, Embedder)


def test_hashing_is_deterministic_across_instances():
    np.testing.assert_array_equal(HashingEmbedder().embed(TEXTS), HashingEmbedder().embed(TEXTS))


@pytest.mark.parametrize(
    "text, similar, unrelated",
    [
        ("red wool scarf", "a warm red scarf in wool", "cast iron frying pan"),
        ("trail running shoes", "running shoes for trails", "single malt whisky"),
        ("wooden train set", "a wooden toy train", "waterproof rain jacket"),
        ("scarves", "scarf", "kettle"),
    ],
)
def test_hashing_puts_similar_texts_closer_than_unrelated(text: str, similar: str, unrelated: str):
    query, near, far = HashingEmbedder().embed([text, similar, unrelated])

    assert _cosine(query, near) > _cosine(query, far)


def test_hashing_embeds_nothing_to_an_empty_array():
    assert HashingEmbedder(32).embed([]).shape == (0, 32)


def test_hashing_rejects_a_tiny_dimension():
    with pytest.raises(ValueError, match="dim"):
        HashingEmbedder(1)


def test_load_embedder_returns_the_model_when_it_loads(tiny_model_dir: Path):
    embedder = load_embedder(str(tiny_model_dir))

    assert isinstance(embedder, SentenceTransformerEmbedder)
    assert embedder.degraded is None


@pytest.mark.parametrize("kind", ["uncached hub name", "missing folder", "folder without a model"])
def test_load_embedder_falls_back_to_hashing_fast_and_says_why(
    kind: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
):
    import sentence_transformers  # noqa: F401  (imported first so the timing excludes it)

    name = {
        "uncached hub name": "no-such-org/no-such-model",
        "missing folder": str(tmp_path / "missing"),
        "folder without a model": str(tmp_path),
    }[kind]
    caplog.set_level(logging.WARNING, logger="attune.retrieval")

    started = time.perf_counter()
    embedder = load_embedder(name, fallback_dim=128)
    elapsed = time.perf_counter() - started

    assert isinstance(embedder, HashingEmbedder)
    assert embedder.dim == 128
    assert embedder.degraded is not None
    assert f"sentence-transformers model {name!r} could not be loaded" in embedder.degraded
    assert embedder.degraded.endswith("using the offline hashing embedder")
    assert elapsed < 2.0, (
        f"falling back took {elapsed:.2f}s; HF_HUB_OFFLINE should make it fail fast"
    )
    warnings = [r for r in caplog.records if r.name == "attune.retrieval"]
    assert [r.levelno for r in warnings] == [logging.WARNING]
    assert name in warnings[0].getMessage()
