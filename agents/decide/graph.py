"""The decision graph: guard input → profile → retrieve → policy → select offer → generate →
guard output → explain → log. Steps are thin: each calls a tool, a writer or a guard and merges
the result into the state.

Only the copy is control flow (a draft, the output guard, a retry or the offline writer), so only
`generate` and `guard_output` are nodes of their own. The steps before the copy always run in
order and are one node, `prepare`, and so are the two after it, `finish`: LangGraph's cost is per
node visited (a superstep: tasks prepared, writes applied, channels read), about a quarter of a
decision with one node per step (issue 14). Each step still runs in its own span
(`agents.tracing`), so a trace lists the nine steps as before.

The two copy nodes route themselves: each returns its update with the node to go to next
(`Command(goto=...)`, chosen by `_after_generate` and `_after_guard`), and declares where it may
go, so the drawn graph keeps its edges. A conditional edge would cost LangGraph a second read of
the whole state after the node and a callback run for the router, on every visit.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, cast

from langchain_core.runnables import RunnableConfig
from langgraph.graph import END, START, StateGraph
from langgraph.graph.state import CompiledStateGraph
from langgraph.runtime import Runtime
from langgraph.types import Command

from agents.decide.explain import explain
from agents.decide.record import decision_record, log_record
from agents.decide.state import DecideContext, DecideInput, DecideOutput, DecideState
from agents.llm.completion import Usage
from agents.llm.errors import WriterError
from agents.tracing import Node, traced
from agents.writing.llm_writer import MeteredDraft
from agents.writing.writer import Brief, BriefItem, BriefOffer, Draft
from policies.output import check_copy
from tools.context import RunContext
from tools.offers import BANDIT_POLICY, eligible_offers, select_offer
from tools.profile import lookup_profile, subject_blocked, subject_record
from tools.retrieve import retrieve_candidates
from tools.rewards import CHALLENGER
from tools.schemas import EligibleOffersInput, RetrieveInput, SelectOfferInput

BRIEF_ITEMS = 3  # how many of the ranked items the copy mentions at most
NO_COPY = "none"  # the writer named when consent allows no copy at all
# A model draft, its one retry with the guard's reason, then the offline writer: at most three
# drafts per decision, whatever the writers answer.
MAX_DRAFTS = 3
# Supersteps of one decision at most: `prepare`, a generate and a guard per draft, `finish`, and
# the superstep LangGraph counts for the input. The graph is invoked with this limit, so a
# routing mistake ends in an error after a few steps instead of spinning until LangGraph's
# default of 25 (tests/test_decide_bounds.py runs the longest path, MAX_DRAFTS failing drafts).
RECURSION_LIMIT = 1 + 2 * MAX_DRAFTS + 1 + 1


def run_config() -> RunnableConfig:
    """The config the service invokes the graph with (`agents.decide.run`), a new one each time.

    Besides the recursion limit, `max_concurrency`: each superstep of this graph runs one node,
    which LangGraph runs inline, never on a thread of its own; but it builds a thread pool for
    every invoke all the same, and a pool given no size asks the OS how many CPUs it has (a read
    of `/sys`, about 1% of a decision). The graph has no step that runs two nodes, so a pool of
    one changes nothing it runs."""
    return {"recursion_limit": RECURSION_LIMIT, "max_concurrency": 1}


def guard_input(state: DecideState, runtime: Runtime[DecideContext]) -> dict[str, Any]:
    """Pseudonymize the request's free text before anything else reads it."""
    ctx = runtime.context
    guard = ctx.services.pii

    def redact(text: str) -> str:
        return guard.pseudonymize(text, known=ctx.known, vault=ctx.vault).text

    query = state.get("query")
    redacted = redact(query) if query else None
    # The vector begun on the text as sent is the redacted text's only if nothing was found.
    if ctx.query_ahead is not None and redacted == query:
        ctx.query_ahead.keep()
    elif ctx.query_ahead is not None:
        ctx.query_ahead.drop()
    return {
        "query_redacted": redacted,
        "context_redacted": {key: redact(value) for key, value in state["context"].items()},
    }


def profile(state: DecideState, runtime: Runtime[DecideContext]) -> dict[str, Any]:
    return {"profile": lookup_profile(runtime.context.run)}


def retrieve(state: DecideState, runtime: Runtime[DecideContext]) -> dict[str, Any]:
    found = retrieve_candidates(
        runtime.context.run, RetrieveInput(query=state.get("query_redacted"), k=state["k"])
    )
    return {"candidates": found, "degraded": found.degraded}


def policy(state: DecideState, runtime: Runtime[DecideContext]) -> dict[str, Any]:
    # Offers must fit the items the copy features, not an item far down the list.
    item_ids = [c.item_id for c in state["candidates"].items[:BRIEF_ITEMS]]
    return {"offers": eligible_offers(runtime.context.run, EligibleOffersInput(item_ids=item_ids))}


def choose_offer(state: DecideState, runtime: Runtime[DecideContext]) -> dict[str, Any]:
    run = runtime.context.run
    arm = experiment_arm(run, state)
    if arm is not None and arm["arm"] == "challenger":
        return arm.pop("under_challenger") | {"arm": arm}
    offer_ids = [o.offer_id for o in state["offers"].offers]
    choice = select_offer(run, SelectOfferInput(offer_ids=offer_ids)) if offer_ids else None
    shadow = run.deps.shadow_policy
    if shadow is None:
        return {"choice": choice} | ({"arm": arm} if arm is not None else {})
    # Shadow mode: what the candidate policy would have chosen, logged and never shown.
    item_ids = [c.item_id for c in state["candidates"].items[:BRIEF_ITEMS]]
    would = eligible_offers(run, EligibleOffersInput(item_ids=item_ids), policy=shadow)
    ids = [o.offer_id for o in would.offers]
    picked = select_offer(run, SelectOfferInput(offer_ids=ids), policy=shadow) if ids else None
    return {
        "choice": choice,
        "shadow": {
            "policy_version": shadow.version,
            "eligible": ids,
            "removed": would.removed,
            "chosen": picked.offer_id if picked else None,
            "propensity": picked.propensity if picked else None,
            "agrees": (picked.offer_id if picked else None)
            == (choice.offer_id if choice else None),
        },
    } | ({"arm": arm} if arm is not None else {})


def experiment_arm(run: RunContext, state: DecideState) -> dict[str, Any] | None:
    """The person's arm of the policy's experiment. The challenger arm's offer is chosen under
    the challenger's policy file, from its own bandit state (`under_challenger`); on the live
    arm, the challenger's probabilities on the same request are kept for off-policy evaluation."""
    experiment = run.deps.policy.policy.experiment
    arm = run.deps.policy.arm(run.subject.key, run.channel)
    if experiment is None or arm is None:
        return None
    found: dict[str, Any] = {"id": experiment.id, "arm": arm}
    challenger = run.deps.challenger_policy
    if challenger is None or arm == "control":
        return found
    item_ids = [c.item_id for c in state["candidates"].items[:BRIEF_ITEMS]]
    offers = eligible_offers(run, EligibleOffersInput(item_ids=item_ids), policy=challenger)
    ids = [o.offer_id for o in offers.offers]
    picked = (
        select_offer(
            run,
            SelectOfferInput(offer_ids=ids),
            policy=challenger,
            bandit=f"{BANDIT_POLICY}:{CHALLENGER}",
        )
        if ids
        else None
    )
    if arm == "challenger":
        found["under_challenger"] = {"offers": offers, "choice": picked}
    else:
        found["challenger"] = {
            "policy_version": challenger.version,
            "probabilities": picked.probabilities if picked else {},
        }
    return found


def generate(state: DecideState, runtime: Runtime[DecideContext]) -> dict[str, Any]:
    ctx = runtime.context
    services = ctx.services
    brief = state.get("brief") or _brief(state, ctx)
    if subject_blocked(ctx.run, "content") is not None:
        # No consent for this channel's copy: none is written (the rule is in the explanation).
        return {
            "brief": brief,
            "draft": Draft(text="", item_ids=[], offer_id=None),
            "writer": NO_COPY,
            "prompt_version": None,
        }
    no_llm = subject_blocked(ctx.run, "llm") is not None
    offline = state.get("use_offline") or no_llm
    writer = services.offline_writer if offline else services.writer
    try:
        draft = writer.write(brief, feedback=state.get("feedback"))
        if isinstance(draft, MeteredDraft):
            # Summed per decision in the run's memo, which the decision record reads.
            ctx.run.memo["llm_usage"] = ctx.run.memo.get("llm_usage", Usage()) + draft.usage
    except WriterError as error:
        return {
            "brief": brief,
            "use_offline": True,
            "draft": services.offline_writer.write(brief),
            "writer": services.offline_writer.name,
            "prompt_version": services.offline_writer.prompt_version,
            "degraded": [f"writer: {writer.name} failed ({error}); used the offline writer"],
        }
    return {
        "brief": brief,
        "draft": draft,
        "writer": writer.name,
        "prompt_version": writer.prompt_version,
    }


def guard_output(state: DecideState, runtime: Runtime[DecideContext]) -> dict[str, Any]:
    """Check the draft; a model gets one retry with the reason, then the offline writer takes over.

    Every path ends after at most MAX_DRAFTS drafts: a failing draft is retried only while
    drafts remain, and the offline writer's failing copy is withheld, never retried.
    """
    ctx = runtime.context
    draft, brief = state["draft"], state["brief"]
    choice = state.get("choice")
    verdict = check_copy(
        draft.text,
        mentioned_item_ids=draft.item_ids,
        mentioned_offer_id=draft.offer_id,
        approved_prices={i.item_id: i.price for i in brief.items},
        offer_id=choice.offer_id if choice else None,
        discount_percent=brief.offer.discount_percent if brief.offer else None,
        offer_text=(
            f"{brief.offer.title}\n{brief.offer.terms}\n{brief.offer.valid_until}"
            if brief.offer
            else ""
        ),
        channel=brief.channel,
        rules=ctx.services.policy.policy.content,
        guard=ctx.services.pii,
        known=ctx.known,
        disclaimers=brief.disclaimers,
        approved_text=[i.title for i in brief.items],
        catalog_offers={o.offer_id: o.title for o in ctx.run.deps.offers.current()},
        trusted=state.get("writer") == ctx.services.offline_writer.name,
    )
    attempts = state.get("attempts", 0) + 1
    if verdict.ok:
        return {"attempts": attempts, "retry": False, "guard_problems": []}
    problems = [f"{p.check}: {p.detail}" for p in verdict.problems]
    offline = ctx.services.offline_writer.name
    if state.get("writer") != offline and attempts < MAX_DRAFTS:
        if attempts == 1:
            return {"attempts": attempts, "retry": True, "feedback": verdict.summary()}
        return {
            "attempts": attempts,
            "retry": True,
            "use_offline": True,
            "feedback": None,
            "degraded": [
                f"writer: output guard rejected the model's copy twice ({verdict.summary()}); used the offline writer"
            ],
        }
    # The offline writer's copy (or, after MAX_DRAFTS, anyone's) failed a check: ship no copy
    # rather than unchecked copy.
    return {
        "attempts": attempts,
        "retry": False,
        "guard_problems": problems,
        "draft": draft.model_copy(update={"text": "", "item_ids": [], "offer_id": None}),
        "degraded": [
            f"content: withheld, offline copy failed the output guard ({verdict.summary()})"
        ],
    }


def explain_decision(state: DecideState, runtime: Runtime[DecideContext]) -> dict[str, Any]:
    return {
        "explanation": explain(
            state["profile"], state["candidates"], state.get("offers"), state.get("choice")
        )
    }


def log(state: DecideState, runtime: Runtime[DecideContext]) -> dict[str, Any]:
    """Append the PII-free decision record to the decision log, in one transaction."""
    ctx = runtime.context
    record = decision_record(state, ctx)
    log_record(ctx.run, ctx.decision_id, state.get("choice"), record)
    return {"record": record}


def _brief(state: DecideState, ctx: DecideContext) -> Brief:
    record = subject_record(ctx.run)
    greeting = None
    if record is not None and state["profile"].personalized:
        greeting = ctx.vault.placeholder("FIRST_NAME", record.profile.first_name)
    choice = state.get("choice")
    offer = next(
        (o for o in state["offers"].offers if choice and o.offer_id == choice.offer_id), None
    )
    content = ctx.services.policy.policy.content
    return Brief(
        channel=ctx.run.channel,
        greeting_name=greeting,
        request=state.get("query_redacted"),
        items=[BriefItem.of(c) for c in state["candidates"].items[:BRIEF_ITEMS]],
        offer=BriefOffer.of(offer),
        max_length=content.max_length.get(ctx.run.channel, 600),
        banned_phrases=list(content.banned_phrases),
        disclaimers=content.disclaimers(ctx.run.channel, with_offer=offer is not None),
    )


def steps(*named: tuple[str, Node]) -> Node:
    """One graph node that runs the `named` steps in order. Each runs in its own span, as a node
    would (`traced`), and reads the state as the steps before it left it; their updates are
    merged as the graph merges updates (`degraded`, the state's one reducer, adds up; any other
    key is replaced)."""
    spanned = [traced(name, step) for name, step in named]

    def node(state: DecideState, runtime: Runtime[DecideContext]) -> dict[str, Any]:
        seen: dict[str, Any] = dict(state)
        merged: dict[str, Any] = {}
        for step in spanned:
            for key, value in step(cast(DecideState, seen), runtime).items():
                if key == "degraded":
                    seen[key] = [*seen.get(key, []), *value]
                    merged[key] = [*merged.get(key, []), *value]
                else:
                    seen[key] = merged[key] = value
        return merged

    return node


# The graph's nodes and the steps each runs, in order: the step names are the spans' names.
NODES: dict[str, Sequence[tuple[str, Node]]] = {
    "prepare": (
        ("guard_input", guard_input),
        ("profile", profile),
        ("retrieve", retrieve),
        ("policy", policy),
        ("select_offer", choose_offer),
    ),
    "generate": (("generate", generate),),
    "guard_output": (("guard_output", guard_output),),
    "finish": (("explain", explain_decision), ("log", log)),
}
STEPS = [name for named in NODES.values() for name, _ in named]


def _after_generate(state: DecideState) -> str:
    # No copy may be written (consent): there is nothing to check, and nothing to retry.
    return "finish" if state.get("writer") == NO_COPY else "guard_output"


def _after_guard(state: DecideState) -> str:
    return "generate" if state.get("retry") and state.get("attempts", 0) < MAX_DRAFTS else "finish"


# Where each routed node may go next, and the function of the state (as the node leaves it)
# that chooses among them.
ROUTES: dict[str, tuple[Callable[[DecideState], str], tuple[str, ...]]] = {
    "generate": (_after_generate, ("guard_output", "finish")),
    "guard_output": (_after_guard, ("generate", "finish")),
}


def routed(node: Node, route: Callable[[DecideState], str]) -> Callable[..., Command[str]]:
    """`node`, its update sent on to the node `route` picks from the state as the update leaves
    it. The routes read only keys a node replaces (`writer`, `retry`, `attempts`), never the
    one that adds up (`degraded`), so the state merged here is the state the graph will hold."""

    def run(state: DecideState, runtime: Runtime[DecideContext]) -> Command[str]:
        update = node(state, runtime)
        return Command(update=update, goto=route(cast(DecideState, {**state, **update})))

    return run


def build_decide_graph(
    nodes: dict[str, Node] | None = None,
) -> CompiledStateGraph[Any, Any, Any, Any]:
    """The decision graph, its nodes running the steps of NODES; `nodes` replaces them by name
    (`bench/decide.py` measures the graph's own cost with nodes that do nothing; they are
    routed as the steps are)."""
    graph = StateGraph(
        DecideState,
        context_schema=DecideContext,
        input_schema=DecideInput,
        output_schema=DecideOutput,
    )
    for name, named in NODES.items():
        node = (nodes or {}).get(name) or (steps(*named) if len(named) > 1 else traced(*named[0]))
        if name in ROUTES:
            route, destinations = ROUTES[name]
            graph.add_node(name, routed(node, route), destinations=destinations)
        else:
            graph.add_node(name, node)
    graph.add_edge(START, "prepare")
    graph.add_edge("prepare", "generate")
    graph.add_edge("finish", END)
    return graph.compile(name="decide")
