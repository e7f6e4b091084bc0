"""Retrieval old against new in one process: `retrieve_candidates` of a base commit (its retrieval
modules loaded under another package name, sharing this checkout's services and shard) and of
this checkout, on the same people and texts.

    PYTHONPATH=. .venv/bin/python bench/retrieve_ab.py --home HOME [--base COMMIT] [--n 200] \
        [--query-share 0.5] [--reps 6]

`HOME` must hold a seeded demo world (`bench/retrieve.py --home HOME` makes one). Prints whether
every answer is equal (items, scores, score parts, reasons, rules, degraded notes), Python calls
per call (cProfile: load-independent), and CPU per call of the ranked (not popularity) cases,
the two arms alternating call by call. Qdrant Edge orders tied fused scores differently from
one query to the next, so for the equality check both arms get the first answer to each
identical query.
"""

from __future__ import annotations

import argparse
import cProfile
import importlib
import pstats
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from agents.factory import build_services, settle
from bench.report import product_settings
from store.schemas import Channel
from store.users import resolve_subject
from tools.context import RunContext
from tools.profile import subject_record
from tools.retrieve import retrieve_candidates
from tools.schemas import RetrieveInput

MODULES = {
    "index": "retrieval/index.py",
    "edge": "retrieval/edge.py",
    "hybrid": "retrieval/hybrid.py",
    "retrieve": "tools/retrieve.py",
}
QUERIES = ["trail running shoes", "a good red wine", "strong coffee beans", "cat toys", "zqxv"]


def load_base(commit: str) -> dict[str, Any]:
    """The base commit's retrieval modules, as package `retrieval_base`."""
    folder = Path(tempfile.mkdtemp(prefix="retrieve-ab-")) / "retrieval_base"
    folder.mkdir()
    (folder / "__init__.py").write_text("")
    for name, path in MODULES.items():
        text = subprocess.run(
            ["git", "show", f"{commit}:{path}"], check=True, capture_output=True, text=True
        ).stdout
        for module in ("index", "edge", "hybrid"):
            text = text.replace(
                f"from retrieval.{module} import", f"from retrieval_base.{module} import"
            )
        (folder / f"{name}.py").write_text(text)
    sys.path.insert(0, str(folder.parent))
    return {name: importlib.import_module(f"retrieval_base.{name}") for name in MODULES}


class Memo:
    """A shard answering each identical query as it first did (see the module docstring)."""

    def __init__(self, shard: Any) -> None:
        self._shard, self._memo = shard, {}  # type: ignore[var-annotated]

    def __getattr__(self, name: str) -> Any:
        attribute = getattr(self._shard, name)
        if name not in ("query", "query_batch"):
            return attribute

        def memo(*args: Any) -> Any:
            key = (name, repr(args))
            if key not in self._memo:
                self._memo[key] = attribute(*args)
            return self._memo[key]

        return memo


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--home", type=Path, required=True)
    parser.add_argument("--base", default="HEAD")
    parser.add_argument("--n", type=int, default=200)
    parser.add_argument("--query-share", type=float, default=0.5)
    parser.add_argument("--reps", type=int, default=6)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    base = load_base(args.base)
    services = build_services(product_settings(home=args.home, seed=1))
    settle()
    index = services.tools.index
    old_index = base["edge"].EdgeIndex.__new__(base["edge"].EdgeIndex)
    old_index.__dict__.update(index.__dict__)
    old_index._item_ids = {}
    tools = {"old": replace(services.tools, index=old_index), "new": services.tools}
    retrieve = {"old": base["retrieve"].retrieve_candidates, "new": retrieve_candidates}
    rng = np.random.default_rng(args.seed)
    users = [f"u_{i:04d}" for i in range(1, 401)]
    with services.db.session() as session:
        cases = []
        for n in range(args.n):
            user = str(rng.choice(users)) if rng.random() < 0.9 else None
            subject = resolve_subject(session, user, None if user else f"anon-ab-{n}")
            query = str(rng.choice(QUERIES)) if rng.random() < args.query_share else None
            cases.append((subject, query))
    now = datetime.now(UTC)

    def context(arm: str, case: tuple[Any, str | None]) -> tuple[RunContext, RetrieveInput]:
        run = RunContext(deps=tools[arm], subject=case[0], channel=Channel.web, now=now)
        subject_record(run)  # the profile, loaded before retrieval as the graph does
        return run, RetrieveInput(query=case[1], k=10)

    shard = index._shard  # type: ignore[attr-defined]
    index._shard = old_index._shard = Memo(shard)  # type: ignore[attr-defined]
    answers = {arm: [retrieve[arm](*context(arm, c)).model_dump() for c in cases] for arm in tools}
    index._shard = old_index._shard = shard  # type: ignore[attr-defined]
    differ = sum(a != b for a, b in zip(answers["old"], answers["new"], strict=True))
    print(f"{len(cases)} cases (query share {args.query_share}): {differ} answers differ")
    for arm in tools:
        profiler = cProfile.Profile()
        for case in cases:
            run, request = context(arm, case)
            profiler.enable()
            retrieve[arm](run, request)
            profiler.disable()
        stats = pstats.Stats(profiler).stats  # type: ignore[attr-defined]
        calls = sum(entry[1] for entry in stats.values()) / len(cases)
        print(f"{arm}: {calls:.0f} Python calls per retrieve_candidates")
    ranked = [c for c, a in zip(cases, answers["new"], strict=True) if a["strategy"] != "popular"]
    spent = {"old": 0.0, "new": 0.0}
    ratios = []
    for rep in range(args.reps):
        for i, case in enumerate(ranked):
            took = {}
            for arm in ("old", "new") if (i + rep) % 2 == 0 else ("new", "old"):
                run, request = context(arm, case)
                start = time.process_time()
                retrieve[arm](run, request)
                took[arm] = time.process_time() - start
            spent["old"] += took["old"]
            spent["new"] += took["new"]
            ratios.append(took["new"] / took["old"])
    calls = args.reps * len(ranked)
    print(
        f"ranked cases {len(ranked)} x {args.reps}: CPU ms per call old "
        f"{spent['old'] / calls * 1000:.3f}, new {spent['new'] / calls * 1000:.3f}; new/old "
        f"{spent['new'] / spent['old']:.3f} (median per call {statistics.median(ratios):.3f})"
    )
    services.close()


if __name__ == "__main__":
    main()
