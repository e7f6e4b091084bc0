"""The embedding model's ONNX export: same vectors as torch, and torch when the export is unusable."""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

import numpy as np
import pytest

from retrieval.embedder import (
    MINILM,
    HashingEmbedder,
    SentenceTransformerEmbedder,
    file_sha256,
    load_embedder,
)
from retrieval.onnx_embedder import (
    MANIFEST_FILE,
    ONNX_FILE,
    OnnxEmbedder,
    OnnxExportError,
    export_folder,
    export_model,
    export_onnx,
)

TEXTS = ["a red wool scarf for winter", "trail running shoes", "a cast iron pan", "kids puzzle"]
_NOUNS = ("coffee", "wine", "train set", "puzzle", "doll", "kite", "lego", "scarf", "board game")
_ASKS = ("a gift for my dad who loves {}", "cheap {}", "{} for a 5 year old", "best {}", "{}")
_ITEMS = [
    "LEGO Star Wars Millennium Falcon building set with 7 minifigures, for ages 9 and up",
    "Melissa & Doug wooden farm animal jigsaw puzzle, 12 chunky pieces for toddlers",
    "Hornby OO gauge electric train set with oval track, controller and two carriages",
    "Ravensburger 1000 piece jigsaw puzzle of a night sky over a mountain lake. " * 3,
    "",
    "ÄÖÜ émoji 🎁 and mixed-script 玩具 text",
]
MANY_TEXTS = [ask.format(noun) for noun in _NOUNS for ask in _ASKS] + _ITEMS


@pytest.fixture(scope="module")
def tiny_sha(tiny_model_dir: Path) -> str:
    return file_sha256(tiny_model_dir / "model.safetensors")


@pytest.fixture(scope="module")
def tiny_export_root(
    tiny_model_dir: Path, tiny_sha: str, tmp_path_factory: pytest.TempPathFactory
) -> Path:
    root = tmp_path_factory.mktemp("onnx-exports")
    export_model(str(tiny_model_dir), root, "onnx", tiny_sha)
    return root


def _tiny_export(root: Path, tiny_model_dir: Path) -> Path:
    return export_folder(root, str(tiny_model_dir), "onnx")


def _cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.sum(a * b, axis=1)


def test_the_export_gives_torchs_vectors_on_a_tiny_model(
    tiny_model_dir: Path, tiny_sha: str, tiny_export_root: Path
):
    onnx = OnnxEmbedder(
        _tiny_export(tiny_export_root, tiny_model_dir), tiny_model_dir, tiny_sha, name="tiny"
    )
    torch = SentenceTransformerEmbedder(str(tiny_model_dir))

    vectors = onnx.embed(MANY_TEXTS)

    assert vectors.shape == (len(MANY_TEXTS), torch.dim) and vectors.dtype == np.float32
    np.testing.assert_allclose(vectors, torch.embed(MANY_TEXTS), atol=1e-4)
    # A query alone embeds as inside a padded batch.
    np.testing.assert_allclose(onnx.embed_query(MANY_TEXTS[1]), vectors[1], atol=1e-5)
    assert onnx.embed([]).shape == (0, torch.dim)


def test_a_query_embeds_to_the_bit_as_a_batch_of_one(
    tiny_model_dir: Path, tiny_sha: str, tiny_export_root: Path
):
    """`embed_query` tokenizes one text itself: the same ids, so the same vector, bit for bit,
    also for a text longer than the model reads (truncated alike) and for no text at all."""
    onnx = OnnxEmbedder(
        _tiny_export(tiny_export_root, tiny_model_dir), tiny_model_dir, tiny_sha, name="tiny"
    )
    too_long = " ".join(MANY_TEXTS * 20)

    for text in [*MANY_TEXTS, too_long, " ", "  padded  "]:
        alone, batch = onnx.embed_query(text), onnx.embed([text])[0]
        assert alone.dtype == np.float32 and np.array_equal(alone, batch), text[:40]
    # The batch path's tokenizer call does not change what a query is cut to afterwards.
    onnx.embed(MANY_TEXTS)
    assert np.array_equal(onnx.embed_query(too_long), onnx.embed([too_long])[0])


def test_load_embedder_runs_the_export_when_it_matches_the_pinned_weights(
    tiny_model_dir: Path, tiny_sha: str, tiny_export_root: Path
):
    embedder = load_embedder(
        str(tiny_model_dir), sha256=tiny_sha, backend="onnx", export_root=tiny_export_root
    )

    assert isinstance(embedder, OnnxEmbedder)
    assert embedder.degraded is None and embedder.name == str(tiny_model_dir)


def test_exporting_again_keeps_an_intact_export(
    tiny_model_dir: Path, tiny_sha: str, tiny_export_root: Path
):
    folder = _tiny_export(tiny_export_root, tiny_model_dir)
    before = (folder / ONNX_FILE).stat().st_mtime_ns

    assert export_model(str(tiny_model_dir), tiny_export_root, "onnx", tiny_sha) == folder
    assert (folder / ONNX_FILE).stat().st_mtime_ns == before


def _corrupt_onnx(folder: Path) -> None:
    data = bytearray((folder / ONNX_FILE).read_bytes())
    data[len(data) // 2] ^= 0xFF
    (folder / ONNX_FILE).write_bytes(bytes(data))


def _other_weights(folder: Path) -> None:
    manifest = json.loads((folder / MANIFEST_FILE).read_text())
    manifest["weights_sha256"] = "0" * 64
    (folder / MANIFEST_FILE).write_text(json.dumps(manifest))


@pytest.mark.parametrize(
    "damage, reason",
    [
        (lambda folder: shutil.rmtree(folder), "holds no ONNX export"),
        (_corrupt_onnx, "has sha256"),
        (lambda folder: (folder / MANIFEST_FILE).write_text("{"), "is not JSON"),
        (_other_weights, "exported from weights with sha256"),
    ],
    ids=["missing", "corrupt model", "corrupt manifest", "other weights"],
)
def test_an_unusable_export_runs_the_model_on_torch_not_degraded_and_logged(
    damage,
    reason: str,
    tiny_model_dir: Path,
    tiny_sha: str,
    tiny_export_root: Path,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
):
    root = tmp_path / "exports"
    shutil.copytree(tiny_export_root, root)
    damage(_tiny_export(root, tiny_model_dir))
    caplog.set_level(logging.INFO, logger="attune.retrieval")

    embedder = load_embedder(str(tiny_model_dir), sha256=tiny_sha, backend="onnx", export_root=root)

    assert isinstance(embedder, SentenceTransformerEmbedder)
    assert embedder.degraded is None
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1
    assert "running it on torch" in warnings[0] and reason in warnings[0]


def test_the_weights_hash_is_checked_before_the_export_is_used(
    tiny_model_dir: Path, tiny_export_root: Path
):
    embedder = load_embedder(
        str(tiny_model_dir), sha256="0" * 64, backend="onnx", export_root=tiny_export_root
    )

    assert isinstance(embedder, HashingEmbedder)
    assert embedder.degraded is not None and "ModelIntegrityError" in embedder.degraded


def test_only_pinned_weights_are_exported(tiny_model_dir: Path, tmp_path: Path):
    with pytest.raises(OnnxExportError, match="pinned by sha256"):
        export_model(str(tiny_model_dir), tmp_path, "onnx")
    with pytest.raises(ValueError, match="sha256"):
        export_onnx(tiny_model_dir, "0" * 64, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_an_unknown_backend_is_refused(tiny_model_dir: Path):
    with pytest.raises(ValueError, match="backend must be one of"):
        load_embedder(str(tiny_model_dir), backend="tensorrt")


@pytest.mark.slow
def test_the_minilm_export_gives_torchs_vectors(tmp_path_factory: pytest.TempPathFactory):
    """The service's default: the packaged all-MiniLM-L6-v2 exported, on many kinds of text."""
    root = tmp_path_factory.mktemp("minilm-onnx")
    export_model(MINILM.name, root, "onnx")
    onnx = load_embedder(MINILM.name, backend="onnx", export_root=root)
    torch = load_embedder(MINILM.name)
    assert isinstance(onnx, OnnxEmbedder) and isinstance(torch, SentenceTransformerEmbedder)

    cosines = _cosines(onnx.embed(MANY_TEXTS), torch.embed(MANY_TEXTS))

    assert cosines.min() >= 0.99, sorted(zip(cosines, MANY_TEXTS, strict=True))[:3]
    queries = [onnx.embed_query(text) for text in MANY_TEXTS[:5]]
    assert _cosines(np.array(queries), torch.embed(MANY_TEXTS[:5])).min() >= 0.99
