"""The person's history in a decision, old vs new: same candidates, and what the history read and
the re-ranking cost. One process, the demo world (data/demo).

1. Equality: `--n` decisions for known people without text run with `tools.retrieve` as it is
   now (the history from the maintained row, `store.sequences`); inside each, the retrieve step
   also runs the base revision's `tools/retrieve.py` and `retrieval/sequence.py` (`--base`,
   loaded from git as their own modules, the item-item model rebuilt from the same matrices;
   the history its latest 1,000 events). The two `Candidates` (items, scores, parts, reasons,
   rules, degraded) must be equal field by field.
2. Cost, interleaved: the history read (the base's `person_history` vs today's: rows, SQLite VM
   steps, CPU time) and the re-ranking's Python work (`_rerank`, then `Reranked.named` and
   `reasons` for the shown items; old code on the old history vs new code on the new), in
   alternating blocks; medians of per-block CPU time (`time.process_time`).

    .venv/bin/python bench/history_cost.py [--n 200] [--base b4f4f10] [--out FILE]
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import fields, replace
from pathlib import Path
from typing import Any

import numpy as np

import agents.decide.graph
import tools.retrieve as retrieve_new
from agents.decide.run import DecideRequest, decide
from agents.factory import build_services, settle
from agents.reindex import start
from bench.report import product_settings
from retrieval.sequence import person_history
from store.schemas import Channel

BLOCK = 20


def _module(name: str, source: str) -> Any:
    folder = Path(tempfile.mkdtemp(prefix="history-cost-"))
    path = folder / f"{name}.py"
    path.write_text(source)
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def _git(base: str, path: str) -> str:
    root = Path(__file__).resolve().parents[1]
    return subprocess.run(
        ["git", "show", f"{base}:{path}"], cwd=root, check=True, capture_output=True, text=True
    ).stdout


class VMSteps:
    """SQLite virtual-machine steps of everything run on the database's connections."""

    def __init__(self, db: Any) -> None:
        self.steps = 0
        with db.engine.connect() as connection:
            raw = connection.connection.driver_connection
            raw.set_progress_handler(self._step, 1)
        self.raw = raw

    def _step(self) -> int:
        self.steps += 1
        return 0


def _difference(person: str | None, a: Any, b: Any) -> dict[str, Any]:
    """Where two `Candidates` first differ: the field, or the first item that differs."""
    x, y = a.model_dump(), b.model_dump()
    for name in x:
        if x[name] != y[name]:
            if name == "items":
                for n, (one, two) in enumerate(zip(x[name], y[name], strict=False)):
                    if one != two:
                        fields_ = [f for f in one if one[f] != two.get(f)]
                        return {"person": person, "item": n, "fields": fields_,
                                "a": {f: one[f] for f in fields_},
                                "b": {f: two.get(f) for f in fields_}}  # fmt: skip
            return {"person": person, "field": name}
    return {"person": person}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=200)
    parser.add_argument("--base", default="b4f4f10")
    parser.add_argument("--blocks", type=int, default=20)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()

    seq_old = _module("seq_old", _git(args.base, "retrieval/sequence.py"))
    retrieve_old = _module(
        "retrieve_old",
        _git(args.base, "tools/retrieve.py").replace(
            "from retrieval.sequence import", "from seq_old import"
        ),
    )

    settings = product_settings(home=Path(tempfile.mkdtemp(prefix="attune-history-cost-")), seed=1)
    services = build_services(settings)
    start(services, settings.demo_dir)
    model = services.tools.itemitem
    assert model is not None
    old_fields = {f.name for f in fields(seq_old.ItemItemParams)}
    old_model = seq_old.ItemItemModel(
        model.item_ids,
        model.ease,
        model.transitions,
        seq_old.ItemItemParams(**{n: getattr(model.params, n) for n in old_fields}),
        model.trained_at,
    )
    lines = (settings.demo_dir / "users.jsonl").read_text().splitlines()
    users = [json.loads(line)["user_id"] for line in lines if line.strip()]
    people = [str(u) for u in np.random.default_rng(1).choice(users, size=args.n)]

    new_fn = retrieve_new.retrieve_candidates
    captured: list[tuple[list[Any], Any, Any, str]] = []
    report: dict[str, Any] = {
        "base": args.base,
        "decisions": args.n,
        "differ": [],
        "differ_in_a_rerun": [],
    }

    def both(ctx: Any, found_args: Any) -> Any:
        old_ctx = replace(ctx, deps=replace(ctx.deps, itemitem=old_model), memo=dict(ctx.memo))
        old = retrieve_old.retrieve_candidates(old_ctx, found_args)
        new = new_fn(ctx, found_args)
        if old.model_dump() != new.model_dump():
            report["differ"].append(_difference(ctx.subject.user_id, old, new))
        # The control: the new code run again, to tell a change from what varies between runs.
        again = new_fn(replace(ctx, memo=dict(ctx.memo)), found_args)
        if again.model_dump() != new.model_dump():
            report["differ_in_a_rerun"].append(_difference(ctx.subject.user_id, new, again))
        return new

    hits_seen: list[Any] = []
    rerank_fn = retrieve_new._rerank

    def capture(model_: Any, hits: list[Any], history: Any) -> Any:
        hits_seen.append(list(hits))
        return rerank_fn(model_, hits, history)

    agents.decide.graph.retrieve_candidates = both  # type: ignore[assignment]
    retrieve_new._rerank = capture  # type: ignore[assignment]
    settle()
    db = services.db
    for person in people:
        hits_seen.clear()
        decide(services, DecideRequest(channel=Channel.web, user_id=person))
        if hits_seen:
            old_history = seq_old.person_history(db, person, None)
            captured.append((hits_seen[-1], old_history, person_history(db, person, None), person))
    agents.decide.graph.retrieve_candidates = new_fn
    retrieve_new._rerank = rerank_fn
    report["equal"] = not report["differ"]
    report["reranked_decisions"] = len(captured)
    # The re-ranking alone on the same Qdrant hits (a decision's pool can differ between two
    # runs, see `differ_in_a_rerun`): old code on the old history vs new code on the new one.
    unequal = []
    for hits, old_history, new_history, person in captured:
        old_order, old_ranked = retrieve_old._rerank(old_model, hits, old_history)
        new_order, new_ranked = retrieve_new._rerank(model, hits, new_history)
        ids = [h.item_id for h in hits]
        same = (
            [h.item_id for h in old_order] == [h.item_id for h in new_order]
            and old_ranked.terms == new_ranked.terms
            and old_ranked.named(ids) == new_ranked.named(ids)
            and old_ranked.sources == new_ranked.sources
            and all(old_ranked.reasons(i, {}) == new_ranked.reasons(i, {}) for i in ids)
        )
        if not same:
            unequal.append(person)
    report["rerank_same_hits_unequal"] = unequal

    # Cost of the history read: rows, VM steps, CPU, per decision.
    counter = VMSteps(db)
    reads: dict[str, dict[str, Any]] = {}
    for name, read in (("old", seq_old.person_history), ("new", person_history)):
        rows, steps = [], []
        for person in people:
            counter.steps = 0
            rows.append(len(read(db, person, None)))
            steps.append(counter.steps)
        reads[name] = {"rows": rows, "steps": steps}
    counter.raw.set_progress_handler(None, 1)
    cpu: dict[str, list[float]] = {"read_old": [], "read_new": [], "rerank_old": [],
                                   "rerank_new": []}  # fmt: skip
    k = 10

    def rerank_old(hits: list[Any], history: Any) -> None:
        ordered, reranked = retrieve_old._rerank(old_model, hits, history)
        shown = [h.item_id for h in ordered[:k]]
        reranked.named(shown)
        for item in shown:
            reranked.reasons(item, {})

    def rerank_new(hits: list[Any], history: Any) -> None:
        ordered, reranked = rerank_fn(model, hits, history)
        shown = [h.item_id for h in ordered[:k]]
        reranked.named(shown)
        for item in shown:
            reranked.reasons(item, {})

    arms = {
        "read_old": lambda c: seq_old.person_history(db, c[3], None),
        "read_new": lambda c: person_history(db, c[3], None),
        "rerank_old": lambda c: rerank_old(c[0], c[1]),
        "rerank_new": lambda c: rerank_new(c[0], c[2]),
    }
    for _ in range(args.blocks):
        for name, arm in arms.items():
            started = time.process_time()
            for case in captured:
                arm(case)
            cpu[name].append((time.process_time() - started) / len(captured) * 1000)
    report["history_read"] = {
        name: {
            "rows_mean": float(np.mean(got["rows"])),
            "rows_max": int(max(got["rows"])),
            "vm_steps_mean": float(np.mean(got["steps"])),
            "vm_steps_max": int(max(got["steps"])),
        }
        for name, got in reads.items()
    }
    report["cpu_ms_per_decision_median_of_blocks"] = {
        name: round(statistics.median(values), 4) for name, values in cpu.items()
    }
    report["cpu_ratio_new_over_old"] = {
        "read": round(statistics.median(cpu["read_new"]) / statistics.median(cpu["read_old"]), 3),
        "rerank": round(
            statistics.median(cpu["rerank_new"]) / statistics.median(cpu["rerank_old"]), 3
        ),
    }
    report["history_entries_per_decision"] = {
        name: {
            "mean": float(np.mean([len(c[i]) for c in captured])),
            "max": int(max(len(c[i]) for c in captured)),
        }
        for name, i in (("old", 1), ("new", 2))
    }
    report["load_average"] = [round(x, 2) for x in os.getloadavg()]
    services.close()
    text = json.dumps(report, indent=2)
    print(text)
    if args.out:
        args.out.write_text(text + "\n")


if __name__ == "__main__":
    main()
