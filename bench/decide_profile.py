"""Where a decision's time goes: cProfile over `--n` decisions on the demo world.

Prints JSON: the share of the profiled time spent under each part of a decision (the graph's
nodes, LangGraph's own machinery, SQL, the PII guard, the embedder) and the top functions by
internal time; writes the full `pstats` dump beside the JSON for `python -m pstats`.

    .venv/bin/python bench/decide_profile.py [--n 300] [--query-share 0.5] [--out FILE]
"""

from __future__ import annotations

import argparse
import cProfile
import json
import pstats
import sys
import tempfile
from pathlib import Path

import numpy as np

from agents.decide.run import DecideRequest, decide
from agents.factory import build_services, settle
from agents.reindex import start as start_service
from bench.report import product_settings
from store.schemas import Channel

ROOT = Path(__file__).resolve().parents[1]
QUERIES = ["something for the kitchen", "strong coffee beans", "running shoes", "cat toys"]
# Functions whose cumulative time is a part of the decision, by (file fragment, function).
PARTS = {
    "node guard_input": ("agents/decide/graph.py", "guard_input"),
    "node profile": ("agents/decide/graph.py", "profile"),
    "node retrieve": ("agents/decide/graph.py", "retrieve"),
    "node policy": ("agents/decide/graph.py", "policy"),
    "node select_offer": ("agents/decide/graph.py", "choose_offer"),
    "node generate": ("agents/decide/graph.py", "generate"),
    "node guard_output": ("agents/decide/graph.py", "guard_output"),
    "node explain": ("agents/decide/graph.py", "explain_decision"),
    "node log": ("agents/decide/graph.py", "log"),
    "resolve subject": ("store/users.py", "resolve_subject"),
    "SQL execute (all)": ("sqlalchemy/engine/base.py", "_execute_context"),
    "commit (all)": ("sqlalchemy/orm/session.py", "commit"),
    "Presidio analyze (all)": ("presidio_analyzer/analyzer_engine.py", "analyze"),
    "embed query (all)": ("retrieval/embedder.py", "_embed_one"),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=300)
    parser.add_argument("--query-share", type=float, default=0.5)
    parser.add_argument("--home", type=Path, default=None)
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "profile.json")
    args = parser.parse_args()
    home = args.home or Path(tempfile.mkdtemp(prefix="attune-bench-profile-"))
    settings = product_settings(home=home, seed=1)
    services = build_services(settings)
    if args.home is None:
        start_service(services, settings.demo_dir)
    # The demo world's own users: made-up ids (u_0241 on) are people without a row of features,
    # whose first decision folds their (empty) history and stores one, a path steady traffic
    # does not take.
    lines = (settings.demo_dir / "users.jsonl").read_text().splitlines()
    users = [json.loads(line)["user_id"] for line in lines if line.strip()]
    rng = np.random.default_rng(1)

    def request(i: int) -> DecideRequest:
        with_query = rng.random() < args.query_share
        return DecideRequest(
            channel=Channel.web,
            user_id=str(rng.choice(users)),
            query=QUERIES[i % len(QUERIES)] if with_query else None,
        )

    settle()
    for i in range(20):
        decide(services, request(i))
    profiler = cProfile.Profile()
    profiler.enable()
    for i in range(args.n):
        decide(services, request(i))
    profiler.disable()
    services.close()

    stats = pstats.Stats(profiler)
    entries = stats.stats  # type: ignore[attr-defined]
    total = max(ct for (_, _, _), (_, _, _, ct, _) in entries.items())
    parts = {}
    for name, (fragment, function) in PARTS.items():
        cumulative = sum(
            ct
            for (file, _, func), (_, _, _, ct, _) in entries.items()
            if func == function and file.endswith(fragment)
        )
        parts[name] = {
            "ms_per_decision": round(cumulative / args.n * 1000, 3),
            "share": round(cumulative / total, 3),
        }
    top = sorted(entries.items(), key=lambda kv: -kv[1][2])[:25]
    result = {
        "decisions": args.n,
        "profiled_ms_per_decision": round(total / args.n * 1000, 3),
        "parts": parts,
        "top_internal_time": [
            {
                "function": f"{Path(file).name}:{line}:{func}",
                "calls_per_decision": round(nc / args.n, 1),
                "ms_per_decision": round(tt / args.n * 1000, 3),
            }
            for (file, line, func), (_, nc, tt, _, _) in top
        ],
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    stats.dump_stats(str(args.out.with_suffix(".pstats")))
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    json.dump(result, sys.stdout, indent=2)
    print()


if __name__ == "__main__":
    main()
