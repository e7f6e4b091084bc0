"""bench.report.product_settings: a bench's service embeds as `make run`'s does, on the model's
ONNX export, never on the torch fallback for want of an export in a fresh home."""

from __future__ import annotations

from pathlib import Path

import pytest

from bench.report import EXPORTS, product_settings
from retrieval.embedder import file_sha256, load_embedder
from retrieval.onnx_embedder import OnnxEmbedder, export_folder


def test_a_bench_home_gets_the_models_export_and_runs_it(
    tiny_model_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("ATTUNE_EMBEDDING_BACKEND", raising=False)
    monkeypatch.delenv("ATTUNE_EMBEDDING_EXPORT_DIR", raising=False)
    sha = file_sha256(tiny_model_dir / "model.safetensors")
    exports = tmp_path / "exports"
    settings = product_settings(
        home=tmp_path / "home",
        embedding_model=str(tiny_model_dir),
        embedding_sha256=sha,
        embedding_export_dir=exports,
    )

    assert settings.embedding_backend == "onnx"
    assert settings.resolved_embedding_export_dir == exports
    assert export_folder(exports, str(tiny_model_dir), "onnx").is_dir()
    embedder = load_embedder(
        settings.embedding_model, sha256=sha, backend="onnx", export_root=exports
    )
    assert isinstance(embedder, OnnxEmbedder)


def test_the_benches_share_one_export_folder_unless_told_otherwise(
    tiny_model_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The torch backend exports nothing, so the folder the settings name can be read safely.
    monkeypatch.setenv("ATTUNE_EMBEDDING_BACKEND", "torch")
    monkeypatch.delenv("ATTUNE_EMBEDDING_EXPORT_DIR", raising=False)
    assert product_settings(home=tmp_path).resolved_embedding_export_dir == EXPORTS
    monkeypatch.setenv("ATTUNE_EMBEDDING_EXPORT_DIR", str(tmp_path / "mine"))
    assert product_settings(home=tmp_path).resolved_embedding_export_dir == tmp_path / "mine"
    assert not (tmp_path / "mine").exists()  # torch: nothing exported
