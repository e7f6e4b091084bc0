"""The decision graph's shape, A/B in one process: the service's graph (`NODES`: the steps
grouped into a few nodes) against the same steps as nine nodes (one per step, the shape before
issue 14) and as six, on the demo world; and the service's four nodes as main ran them before
the copy nodes routed themselves (`four_conditional`: conditional edges, and LangGraph's v1
output, which streams every node's update beside the values).

Decisions run in alternating blocks, so the machine's load moves all shapes alike, and each
block starts with the next shape in turn: the same requests run through every shape, and the
first to run one pays for what the process then remembers (the output guard's findings for new
copy), so a shape that always went first would look slower than it is. Prints JSON
with each shape's p50 and its ratio to the nine-node shape, and, from a cProfile pass over the
same requests, what cannot be noise: Python function calls per decision and LangGraph's
per-superstep calls (`apply_writes`, `prepare_single_task`) and pydantic validations per
decision, with LangGraph's own share of the profiled time (the graph's invoke less its steps).

    .venv/bin/python bench/decide_shape.py [--n 300] [--out FILE]
"""

from __future__ import annotations

import argparse
import cProfile
import itertools
import pstats
import statistics
import time
from collections.abc import Hashable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
from langgraph.graph import END, START, StateGraph
from langgraph.types import GraphOutput

from agents.decide.graph import (
    MAX_DRAFTS,
    NODES,
    RECURSION_LIMIT,
    _after_generate,
    _after_guard,
    build_decide_graph,
    steps,
)
from agents.decide.run import DecideRequest, decide
from agents.decide.state import DecideContext, DecideInput, DecideState
from agents.factory import settle
from agents.tracing import traced
from bench.report import demo_service, emit
from store.schemas import Channel

BLOCK = 10  # decisions per block; the shapes' blocks alternate
STEP_FUNCTIONS = {name: step for named in NODES.values() for name, step in named}


@dataclass
class Limited:
    """A graph invoked with its own recursion limit (the service passes its shape's), and with
    LangGraph's v1 output when `v1` (the decision asks for v2; v1 is what main asked for)."""

    graph: Any
    limit: int
    v1: bool = False

    def invoke(self, graph_input: Any, config: Any = None, **kwargs: Any) -> Any:
        config = {**config, "recursion_limit": self.limit}
        if self.v1:
            kwargs.pop("version", None)
            return GraphOutput(value=self.graph.invoke(graph_input, config, **kwargs))
        return self.graph.invoke(graph_input, config, **kwargs)


def shaped(groups: dict[str, list[str]], limit: int, v1: bool = False) -> Limited:
    """The decision's steps grouped into the nodes `groups` names, in order; the copy's loop is
    `generate` ⇄ `guard_output` as in the service's graph."""
    graph = StateGraph(DecideState, context_schema=DecideContext, input_schema=DecideInput)
    names = list(groups)
    for name, members in groups.items():
        named = [(member, STEP_FUNCTIONS[member]) for member in members]
        graph.add_node(name, steps(*named) if len(named) > 1 else traced(*named[0]))
    graph.add_edge(START, names[0])
    before_copy = names[: names.index("generate") + 1]
    for before, after in itertools.pairwise(before_copy):
        graph.add_edge(before, after)
    after_copy = names[names.index("guard_output") + 1 :]
    ends: dict[Hashable, str] = {"finish": after_copy[0]}
    graph.add_conditional_edges(
        "generate", _after_generate, {"guard_output": "guard_output", **ends}
    )
    graph.add_conditional_edges("guard_output", _after_guard, {"generate": "generate", **ends})
    for before, after in itertools.pairwise(after_copy):
        graph.add_edge(before, after)
    graph.add_edge(after_copy[-1], END)
    return Limited(graph.compile(name="decide"), limit, v1)


def shapes() -> dict[str, Any]:
    one = {name: [name] for name in STEP_FUNCTIONS}
    six = {
        "prepare": ["guard_input", "profile"],
        "retrieve": ["retrieve"],
        "offer": ["policy", "select_offer"],
        "generate": ["generate"],
        "guard_output": ["guard_output"],
        "finish": ["explain", "log"],
    }
    return {
        "nine": shaped(one, 5 + 2 * MAX_DRAFTS + 2 + 1),
        "six": shaped(six, 3 + 2 * MAX_DRAFTS + 1 + 1),
        "four_conditional": shaped(
            {name: [step for step, _ in named] for name, named in NODES.items()},
            RECURSION_LIMIT,
            v1=True,
        ),
        "service": build_decide_graph(),
    }


def profile(entries: dict[Any, Any], n: int) -> dict[str, Any]:
    """What a cProfile of `n` decisions (`entries`, pstats' table) says per decision."""

    def cumulative(fragment: str, function: str) -> float:
        found = (
            ct
            for (f, _, fn), (_, _, _, ct, _) in entries.items()
            if fn == function and f.endswith(fragment)
        )
        return sum(found)

    def calls(name: str) -> float:
        return sum(nc for (_, _, fn), (_, nc, _, _, _) in entries.items() if name in fn) / n

    total = cumulative("agents/decide/run.py", "decide")
    invoke = cumulative("langgraph/pregel/main.py", "invoke")
    in_steps = sum(
        cumulative("agents/decide/graph.py", getattr(step, "__name__", name))
        for name, step in STEP_FUNCTIONS.items()
    )
    return {
        "function_calls_per_decision": round(sum(nc for (_, nc, _, _, _) in entries.values()) / n),
        "apply_writes_per_decision": calls("apply_writes"),
        "prepare_single_task_per_decision": calls("prepare_single_task"),
        "validate_python_per_decision": calls("validate_python"),
        "profiled_ms_per_decision": round(total / n * 1000, 2),
        "langgraph_own_ms_per_decision": round((invoke - in_steps) / n * 1000, 2),
        "langgraph_own_share": round((invoke - in_steps) / total, 3),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=300, help="decisions per shape")
    parser.add_argument("--profile-n", type=int, default=100, help="profiled decisions per shape")
    parser.add_argument("--out", type=Path, default=Path("bench/results/decide_shape.json"))
    args = parser.parse_args()

    services, users = demo_service(prefix="attune-bench-shape-")
    rng = np.random.default_rng(1)
    requests = [
        DecideRequest(channel=Channel.web, user_id=str(rng.choice(users)))
        for _ in range(max(args.n, args.profile_n))
    ]
    variants = {name: replace(services, graph=graph) for name, graph in shapes().items()}
    settle()
    for request in requests[:20]:  # warm-up
        for variant in variants.values():
            decide(variant, request)

    names = list(variants)

    def in_turn(block: int) -> list[str]:
        """The shapes, the `block`-th first: each starts as many blocks as the others."""
        first = block % len(names)
        return names[first:] + names[:first]

    samples: dict[str, list[float]] = {name: [] for name in variants}
    for block, first in enumerate(range(0, args.n, BLOCK)):
        for name in in_turn(block):
            for request in requests[first : first + BLOCK]:
                start = time.perf_counter()
                decide(variants[name], request)
                samples[name].append((time.perf_counter() - start) * 1000)
    profilers = {name: cProfile.Profile() for name in variants}
    for block, first in enumerate(range(0, args.profile_n, BLOCK)):
        for name in in_turn(block):
            profilers[name].enable()
            for request in requests[first : first + BLOCK]:
                decide(variants[name], request)
            profilers[name].disable()
    nine = statistics.median(samples["nine"])
    results: dict[str, Any] = {"decisions_per_shape": args.n, "service_nodes": list(NODES)}
    for name in variants:
        p50 = statistics.median(samples[name])
        results[name] = {"p50_ms": round(p50, 3), "ratio_to_nine": round(p50 / nine, 3)}
        entries = pstats.Stats(profilers[name]).stats  # type: ignore[attr-defined]
        results[name] |= profile(entries, args.profile_n)
    services.close()

    emit(results, args.out)


if __name__ == "__main__":
    main()
