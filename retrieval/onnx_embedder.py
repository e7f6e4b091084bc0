"""The embedding model run by ONNX Runtime: exported once, offline, from hash-verified weights.

A query of a few words costs a model forward pass, and on a small CPU torch spends most of that
in per-operator overhead. The same network exported to ONNX, with ONNX Runtime's transformer
fusions (attention, GELU, layer norm), gives the same vectors (cosine 1.0 to six digits) in a
fraction of the time: measured in `bench/embed.py`.

`export_onnx` builds the export from a model folder whose `model.safetensors` hashes to the
pinned sha256, into a folder of its own (`attune export-onnx`, run by `make run`). The export
holds a manifest naming the weights' sha256 and the sha256 of the ONNX file; `OnnxEmbedder`
refuses an export whose manifest or file does not match, and the loader then runs the same
model on torch (not a degraded path: same weights, same vectors), saying so in a log line.

The `onnx-int8` variant also quantizes the weights to int8 (dynamic, per channel). It is about
1.5x faster again but moves vectors by a cosine of up to 0.03, so it is not the default.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np

from retrieval.embedder import file_sha256, verify_weights

OnnxVariant = Literal["onnx", "onnx-int8"]
ONNX_FILE = "model.onnx"
MANIFEST_FILE = "export.json"
FORMAT = 1
"""Bumped when the export's layout changes, so an older export is rebuilt, not misread."""


class OnnxExportError(ValueError):
    """An ONNX export is missing, incomplete, or does not match the pinned weights."""


def export_folder(root: Path, model_name: str, variant: OnnxVariant) -> Path:
    """Where the export of `model_name` in `variant` lives under `root`."""
    slug = hashlib.sha256(model_name.encode()).hexdigest()[:8]
    tail = Path(model_name).name or "model"
    return root / f"{tail}-{slug}-{variant}"


def read_manifest(folder: Path) -> dict[str, Any]:
    manifest = folder / MANIFEST_FILE
    if not manifest.is_file():
        raise OnnxExportError(f"{folder} holds no ONNX export; run `attune export-onnx`")
    try:
        data = json.loads(manifest.read_text())
    except json.JSONDecodeError as err:
        raise OnnxExportError(f"{manifest} is not JSON ({err}); run `attune export-onnx`") from err
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise OnnxExportError(f"{manifest} is of an older format; run `attune export-onnx`")
    return data


def check_export(folder: Path, weights_sha256: str, variant: OnnxVariant) -> dict[str, Any]:
    """The export's manifest, after checking it was made from these weights and is intact."""
    manifest = read_manifest(folder)
    if manifest.get("weights_sha256") != weights_sha256:
        raise OnnxExportError(
            f"{folder} was exported from weights with sha256 {manifest.get('weights_sha256')}, "
            f"not {weights_sha256}; run `attune export-onnx`"
        )
    if manifest.get("variant") != variant:
        raise OnnxExportError(f"{folder} holds variant {manifest.get('variant')}, not {variant}")
    onnx_file = folder / ONNX_FILE
    if not onnx_file.is_file():
        raise OnnxExportError(f"{onnx_file} is missing; run `attune export-onnx`")
    found = file_sha256(onnx_file)
    if found != manifest.get("onnx_sha256"):
        raise OnnxExportError(
            f"{onnx_file} has sha256 {found}, not the {manifest.get('onnx_sha256')} it was "
            "exported with; run `attune export-onnx` to rebuild it"
        )
    return manifest


def export_onnx(
    source: Path, weights_sha256: str, dest: Path, variant: OnnxVariant = "onnx"
) -> Path:
    """Exports the sentence-transformers model in `source` to ONNX in `dest`; returns `dest`.

    The weights are checked against `weights_sha256` first. An intact export of the same
    weights already in `dest` is kept as it is. The export is written beside `dest` and moved
    into place in one rename, so a reader never sees half an export.
    """
    try:
        check_export(dest, weights_sha256, variant)
        return dest
    except OnnxExportError:
        pass
    verify_weights(source, weights_sha256)
    dest.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=f".{dest.name}-", dir=dest.parent))
    work.chmod(0o755)  # mkdtemp makes it private; the service may run as another user.
    try:
        traced = export_traced(source, work / "fp32.onnx")
        _fuse(work / "fp32.onnx", work / ONNX_FILE, traced["heads"], traced["hidden"])
        if variant == "onnx-int8":
            _quantize(work / ONNX_FILE, work / "int8.onnx")
            os.replace(work / "int8.onnx", work / ONNX_FILE)
        (work / "fp32.onnx").unlink()
        manifest = {
            "format": FORMAT,
            "variant": variant,
            "weights_sha256": weights_sha256,
            "onnx_sha256": file_sha256(work / ONNX_FILE),
            "inputs": traced["inputs"],
            "max_seq_length": traced["max_seq_length"],
        }
        (work / MANIFEST_FILE).write_text(json.dumps(manifest, indent=2))
        if dest.exists():
            shutil.rmtree(dest)
        os.replace(work, dest)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return dest


def export_traced(source: Path, raw: Path) -> dict[str, Any]:
    """Traces the transformer, mean pooling and normalisation into one plain ONNX graph.

    Returns the graph's input names, the length sentence-transformers truncates texts to, and
    the model's attention heads and hidden size.
    """
    import torch
    from sentence_transformers import SentenceTransformer

    model = SentenceTransformer(str(source), device="cpu", local_files_only=True)
    backbone: Any = model[0].auto_model  # a transformers PreTrainedModel
    # The fusions recognise the eager attention graph, not scaled_dot_product_attention.
    backbone.set_attn_implementation("eager")
    sample = model.tokenizer(["a gift for my dad", "coffee"], padding=True, return_tensors="pt")
    names = [n for n in ("input_ids", "attention_mask", "token_type_ids") if n in sample]

    class Pooled(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.backbone = backbone

        def forward(self, *tensors: torch.Tensor) -> torch.Tensor:
            feed = dict(zip(names, tensors, strict=True))
            if "token_type_ids" not in feed:
                # Else BERT expands a buffer to the traced sample's shape, fixed in the graph.
                feed["token_type_ids"] = torch.zeros_like(feed["input_ids"])
            hidden = self.backbone(**feed).last_hidden_state
            mask = feed["attention_mask"].unsqueeze(-1).to(hidden.dtype)
            pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
            return torch.nn.functional.normalize(pooled, p=2, dim=1)

    axes: dict[str, dict[int, str]] = {n: {0: "batch", 1: "tokens"} for n in names}
    with warnings.catch_warnings(), torch.no_grad():
        # The TorchScript exporter warns that it is deprecated; it needs no onnxscript and
        # handles this graph, where the dynamo exporter would pull another dependency.
        warnings.simplefilter("ignore")
        torch.onnx.export(
            Pooled().eval(),
            tuple(sample[n] for n in names),
            str(raw),
            input_names=names,
            output_names=["embedding"],
            dynamic_axes={**axes, "embedding": {0: "batch"}},
            opset_version=17,
            dynamo=False,
        )
    config = backbone.config
    return {
        "inputs": names,
        "max_seq_length": int(model.max_seq_length or 512),
        "heads": int(config.num_attention_heads),
        "hidden": int(config.hidden_size),
    }


def _fuse(raw: Path, fused: Path, heads: int, hidden: int) -> None:
    """Fuses the graph's attention, GELU and layer norms (ONNX Runtime's transformer optimizer)."""
    from onnxruntime.transformers.optimizer import optimize_model

    optimized = optimize_model(str(raw), model_type="bert", num_heads=heads, hidden_size=hidden)
    optimized.save_model_to_file(str(fused))


def _quantize(fp32: Path, int8: Path) -> None:
    from onnx import TensorProto
    from onnxruntime.quantization import QuantType, quantize_dynamic

    quantize_dynamic(
        str(fp32),
        str(int8),
        weight_type=QuantType.QInt8,
        per_channel=True,
        # The fused operators carry no type information for the quantizer; they are float.
        extra_options={"DefaultTensorType": TensorProto.FLOAT},
    )


class OnnxEmbedder:
    """An exported sentence-transformers model run by ONNX Runtime; vectors as torch's.

    A query of a few words costs the forward pass itself: in ONNX Runtime's per-node profile of
    all-MiniLM-L6-v2 on 11 tokens, MatMul is 70% of it, the fused attention 20%, layer norms 6%;
    about 2.2 ms CPU at one token and 0.2 ms more per token here, the weights (42 MB of float32)
    read from memory on every call. The session's options (memory arena and pattern, spinning,
    optimization level, IO binding with a preallocated output) measured within noise of the
    defaults (session 9), so the defaults are kept.
    """

    BATCH_SIZE = 64

    def __init__(
        self,
        folder: Path,
        tokenizer_folder: Path,
        weights_sha256: str,
        variant: OnnxVariant = "onnx",
        *,
        name: str,
        threads: int = 1,
    ) -> None:
        import onnxruntime as ort
        from tokenizers import Tokenizer
        from transformers import AutoTokenizer

        manifest = check_export(folder, weights_sha256, variant)
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        self._session = ort.InferenceSession(
            str(folder / ONNX_FILE), options, providers=["CPUExecutionProvider"]
        )
        self._inputs: list[str] = list(manifest["inputs"])
        self._max_length = int(manifest["max_seq_length"])
        self._tokenizer = AutoTokenizer.from_pretrained(str(tokenizer_folder))
        # A query is one text: it needs no padding, and the fast tokenizer's own `encode` gives
        # the ids `__call__` would, without the call's per-text setup of truncation, padding and
        # tensors (about a tenth of a short query's cost). A copy, so that `__call__`, which
        # resets the shared tokenizer's truncation and padding per call, cannot change it.
        self._single = Tokenizer.from_str(self._tokenizer.backend_tokenizer.to_str())
        self._single.no_padding()
        self._single.enable_truncation(self._max_length)
        self.dim = int(self._session.get_outputs()[0].shape[1])
        self.name = name
        self.variant = variant
        self.degraded: str | None = None

    def embed_query(self, text: str) -> np.ndarray:
        """`embed([text])[0]`, to the bit, for less: the batch's sorting, padding and tensor
        conversions are left out (`tests/test_onnx_embedder.py` holds them equal)."""
        encoding = self._single.encode(text)
        columns = {
            "input_ids": encoding.ids,
            "attention_mask": encoding.attention_mask,
            "token_type_ids": encoding.type_ids,
        }
        feed = {name: np.array([columns[name]], dtype=np.int64) for name in self._inputs}
        vectors: np.ndarray = self._session.run(None, feed)[0]
        return vectors[0]

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        if not texts:
            return np.empty((0, self.dim), dtype=np.float32)
        texts = list(texts)
        # Sorted by length, as sentence-transformers does, so a batch pads to similar lengths.
        order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
        out = np.empty((len(texts), self.dim), dtype=np.float32)
        for start in range(0, len(order), self.BATCH_SIZE):
            chunk = order[start : start + self.BATCH_SIZE]
            encoded = self._tokenizer(
                [texts[i] for i in chunk],
                padding=True,
                truncation=True,
                max_length=self._max_length,
                return_tensors="np",
            )
            feed = {n: np.asarray(encoded[n], dtype=np.int64) for n in self._inputs}
            out[chunk] = self._session.run(None, feed)[0]
        return out


def export_model(
    model_name: str, export_root: Path, variant: OnnxVariant = "onnx", sha256: str | None = None
) -> Path:
    """Exports a packaged model (or a model folder pinned by `sha256`) into `export_root`."""
    from retrieval.embedder import PACKAGED_MODELS

    packaged = PACKAGED_MODELS.get(model_name)
    folder = packaged.path() if packaged is not None else None
    if packaged is not None and folder is not None:
        source, pinned = folder, packaged.sha256
    elif sha256 is not None:
        source, pinned = Path(model_name), sha256
    else:
        raise OnnxExportError(
            f"{model_name!r} is neither an installed model package nor a folder pinned by "
            "sha256 (ATTUNE_EMBEDDING_SHA256): only pinned weights are exported"
        )
    return export_onnx(source, pinned, export_folder(export_root, model_name, variant), variant)
