"""The copy graph: scan the audience → one branch per segment (a LangGraph `Send` map step):
retrieve the product focus's items → choose an eligible offer → write n variants, each checked
by the output guard (one retry with the reason, then the offline writer, flagged) and explained.

The audience is scanned once for all segments (a page of people at a time, a few queries per
page); each segment's branch then sees only its summary (size, youngest age, locales, consent
everyone granted), never a member. No personal data reaches the writer, so the copy brief may go
to a model whatever the members' `llm_processing` consent: it holds the marketer's brief, the
segment's name and rule, and catalog data.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import cache
from typing import Any, cast

from langgraph.graph import END, START, StateGraph
from langgraph.graph.state import CompiledStateGraph
from langgraph.runtime import Runtime
from langgraph.types import Send
from sqlalchemy import select

from agents.copy.audience import SegmentAudience, scan_audience
from agents.copy.explain import explain_variant
from agents.copy.persona import ORDER, Objective, Persona, objective_of, persona_of
from agents.copy.segments import Segment
from agents.copy.state import (
    CHECKS,
    CopyContext,
    CopyProgress,
    CopyRequest,
    CopyResult,
    CopyState,
    NoProgress,
    SegmentOut,
    SegmentTask,
    VariantOut,
)
from agents.copy.writer import OfflineCopyWriter, copy_brief, write_checked
from agents.services import Services
from agents.writing.writer import BriefItem, BriefOffer, Draft, OfflineWriter
from policies.copy import CHANNELS, check_variant, non_gsm7
from policies.output import CopyVerdict
from store.models import CatalogItem
from tools.segment import SegmentItems, SegmentOffer, segment_items, segment_offer

ROOM = 20  # characters a body needs besides its must-say phrases


@dataclass(frozen=True)
class FieldProblem:
    loc: tuple[str | int, ...]  # where in the request, as pydantic names it
    problem: str

    @property
    def field(self) -> str:
        return "".join(f"[{k}]" if isinstance(k, int) else f".{k}" for k in self.loc).lstrip(".")


class CopyRequestError(ValueError):
    """The request is well-formed but does not fit the catalog, the policy or the channel."""

    def __init__(self, problems: list[FieldProblem]) -> None:
        super().__init__("; ".join(f"{p.field}: {p.problem}" for p in problems))
        self.problems = problems


def new_campaign_id() -> str:
    # 16 hex characters: `copy:<id>` must fit the bandit's 32-character policy name.
    return secrets.token_hex(8)


def validate_request(services: Services, request: CopyRequest) -> None:
    """What the schema cannot know: categories and items exist, must-say phrases fit the channel
    and break no policy rule.

    Raises:
        CopyRequestError: naming each field that is wrong.
    """
    problems: list[FieldProblem] = []
    brief = request.brief
    spec = CHANNELS[request.channel]
    with services.db.session() as session:
        known = set(session.scalars(select(CatalogItem.category).distinct()))
        found = set(
            session.scalars(
                select(CatalogItem.item_id).where(CatalogItem.item_id.in_(brief.item_ids))
            )
        )
    hint = f"known categories: {', '.join(sorted(known))}"
    for i, category in enumerate(brief.categories):
        if category not in known:
            problems.append(
                FieldProblem(("brief", "categories", i), f"unknown category {category!r}; {hint}")
            )
    for i, item_id in enumerate(brief.item_ids):
        if item_id not in found:
            problems.append(FieldProblem(("brief", "item_ids", i), f"unknown item {item_id!r}"))
    for s, segment in enumerate(request.audience.segments or ()):
        if segment.rule is None:
            continue
        for key in ("top_category", "categories_any"):
            for i, category in enumerate(getattr(segment.rule, key) or ()):
                if category not in known:
                    problems.append(
                        FieldProblem(
                            ("audience", "segments", s, "rule", key, i),
                            f"unknown category {category!r}; {hint}",
                        )
                    )
    banned = services.policy.policy.content.banned_phrases
    for i, phrase in enumerate(brief.must_say):
        clash = [b for b in banned if b.lower() in phrase.lower()]
        if clash:
            problems.append(
                FieldProblem(
                    ("brief", "must_say", i), f"contains the policy's banned phrase {clash[0]!r}"
                )
            )
        if spec.gsm7 and (outside := non_gsm7(phrase)):
            problems.append(
                FieldProblem(
                    ("brief", "must_say", i),
                    f"characters outside GSM-7 in an SMS: {''.join(outside)!r}",
                )
            )
    # The policy's disclaimers for the channel take room too (with an offer, the most of them).
    disclaimers = services.policy.policy.content.disclaimers(spec.offer_channel, with_offer=True)
    needed = sum(spec.measure(p) + 2 for p in [*brief.must_say, *disclaimers])
    if brief.must_say and needed + ROOM > spec.body_max:
        problems.append(
            FieldProblem(
                ("brief", "must_say"),
                f"with the policy's disclaimers the phrases take {needed} of the "
                f"{spec.body_max} a {request.channel.value} body allows, leaving under {ROOM} "
                "for the copy; shorten them",
            )
        )
    if problems:
        raise CopyRequestError(problems)


def generate_copy(
    services: Services,
    request: CopyRequest,
    *,
    campaign_id: str,
    now: datetime | None = None,
    progress: CopyProgress | None = None,
) -> CopyResult:
    """Run the copy graph for a validated request."""
    fallback = OfflineCopyWriter(services.offline_writer)
    writer = services.writer
    if isinstance(writer, OfflineWriter) or writer.name == services.offline_writer.name:
        writer = fallback
    context = CopyContext(
        services=services,
        request=request,
        segments=request.audience.resolved(),
        spec=CHANNELS[request.channel],
        campaign_id=campaign_id,
        now=now or datetime.now(UTC),
        writer=writer,
        fallback=fallback,
        progress=progress or NoProgress(),
    )
    state = cast(CopyState, build_copy_graph().invoke({}, context=context))
    segments = [out for _, out in sorted(state.get("results", []), key=lambda r: r[0])]
    degraded = list(dict.fromkeys([*services.degraded, *(d for s in segments for d in s.degraded)]))
    return CopyResult(
        campaign_id=campaign_id,
        channel=request.channel,
        segments=segments,
        members_scanned=state.get("scanned", 0),
        policy_version=services.policy.version,
        writer=writer.name,
        degraded=degraded,
    )


# -- nodes ----------------------------------------------------------------------------------


def scan(state: CopyState, runtime: Runtime[CopyContext]) -> dict[str, Any]:
    """Find every segment's members in one pass over the people, consent first."""
    ctx = runtime.context
    scanned = 0

    def counted(n: int) -> None:
        nonlocal scanned
        scanned += n
        ctx.progress.scanned(n)

    audiences = scan_audience(
        ctx.services.db,
        ctx.services.policy,
        ctx.segments,
        ctx.spec,
        now=ctx.now,
        on_scanned=counted,
    )
    return {"audiences": audiences, "scanned": scanned}


def fan_out(state: CopyState) -> list[Send]:
    """The map step: one branch per segment."""
    return [
        Send("segment", SegmentTask(position=position, audience=audience))
        for position, audience in enumerate(state["audiences"].values())
    ]


def segment(state: SegmentTask, runtime: Runtime[CopyContext]) -> dict[str, Any]:
    """One branch of the map step: a segment's items, offer and checked variants."""
    ctx = runtime.context
    out = write_segment(ctx, ctx.segments[state["position"]], state["audience"])
    ctx.progress.segment_done()
    return {"results": [(state["position"], out)]}


@cache
def build_copy_graph() -> CompiledStateGraph[CopyState, CopyContext, CopyState, CopyState]:
    graph = StateGraph(CopyState, context_schema=CopyContext)
    graph.add_node("scan", scan)
    graph.add_node("segment", segment, input_schema=SegmentTask)
    graph.add_edge(START, "scan")
    graph.add_conditional_edges("scan", fan_out, ["segment"])
    graph.add_edge("segment", END)
    return graph.compile(name="copy")


# -- one segment ----------------------------------------------------------------------------


def write_segment(ctx: CopyContext, seg: Segment, audience: SegmentAudience) -> SegmentOut:
    """Items, offer and n checked, explained variants for one segment."""
    request, spec, deps = ctx.request, ctx.spec, ctx.services.tools
    excluded = dict(sorted(audience.excluded.items()))
    base = SegmentOut(
        name=seg.name,
        rule=seg.describe(),
        size=audience.size,
        excluded=excluded,
        unknown_user_ids=audience.unknown_ids,
        item_ids=[],
        offer_id=None,
        variants=[],
    )
    if audience.size == 0:
        return base.model_copy(update={"note": "no one qualifies for this segment: no copy"})
    facts = audience.facts(spec, ctx.now)
    persona = persona_of(seg)
    objective = objective_of(request.brief.goal, request.brief.objective)
    base = base.model_copy(update={"persona": persona.value, "objective": objective.value})
    items = segment_items(
        deps,
        goal=request.brief.goal,
        categories=request.brief.categories,
        item_ids=request.brief.item_ids,
        facts=facts[0],
        k=spec.max_items,
        prefer=sorted(seg.rule.categories()) if seg.rule is not None else (),
        order=ORDER[persona],
    )
    if not items.items:
        fired = ", ".join(r.rule_id for r in items.rules_fired) or "none"
        return base.model_copy(
            update={
                "note": f"no item of the product focus is allowed for this segment (rules: {fired})",
                "degraded": items.degraded,
            }
        )
    offer = segment_offer(deps, item_categories={i.item.category for i in items.items}, facts=facts)
    variants = [
        _variant(ctx, seg, audience, items, offer, index, persona, objective)
        for index in range(request.variants)
    ]
    degraded = list(dict.fromkeys([*items.degraded, *(d for v in variants for d in v.degraded)]))
    return base.model_copy(
        update={
            "item_ids": [i.item.item_id for i in items.items],
            "offer_id": offer.offer.offer_id if offer.offer else None,
            "variants": variants,
            "degraded": degraded,
        }
    )


def _variant(
    ctx: CopyContext,
    seg: Segment,
    audience: SegmentAudience,
    items: SegmentItems,
    offer: SegmentOffer,
    index: int,
    persona: Persona = Persona.everyone,
    objective: Objective = Objective.promote,
) -> VariantOut:
    brief_in, spec = ctx.request.brief, ctx.spec
    content = ctx.services.policy.policy.content
    policy_banned = list(content.banned_phrases)
    chosen = offer.offer
    disclaimers = content.disclaimers(spec.offer_channel, with_offer=chosen is not None)
    brief = copy_brief(
        spec=spec,
        goal=brief_in.goal,
        tone=brief_in.tone,
        variant=index,
        segment=f"{seg.name}: {seg.describe()}",
        items=[
            BriefItem(
                item_id=i.item.item_id,
                title=i.item.title,
                category=i.item.category,
                price=i.item.price,
                currency=i.item.currency,
            )
            for i in items.items
        ],
        offer=BriefOffer(
            offer_id=chosen.offer_id,
            title=chosen.title,
            terms=chosen.terms,
            discount_percent=chosen.discount_percent,
            valid_until=chosen.valid_until,
        )
        if chosen
        else None,
        must_say=list(brief_in.must_say),
        must_not_say=list(brief_in.must_not_say),
        banned_phrases=policy_banned,
        disclaimers=disclaimers,
        persona=persona,
        objective=objective,
    )
    approved_text = " ".join(
        [*([chosen.title, chosen.terms, chosen.valid_until] if chosen else []), *brief_in.must_say]
    )

    def check(subject: str | None, body: str, draft: Draft) -> CopyVerdict:
        return check_variant(
            subject=subject,
            body=body,
            spec=spec,
            mentioned_item_ids=draft.item_ids,
            mentioned_offer_id=draft.offer_id,
            approved_prices={i.item_id: i.price for i in brief.items},
            offer_id=chosen.offer_id if chosen else None,
            discount_percent=chosen.discount_percent if chosen else None,
            approved_text=approved_text,
            banned_phrases=[*policy_banned, *brief_in.must_not_say],
            must_say=brief_in.must_say,
            guard=ctx.services.pii,
            disclaimers=disclaimers,
            item_titles=[i.title for i in brief.items],
            catalog_offers={o.offer_id: o.title for o in ctx.services.tools.offers.current()},
        )

    written = write_checked(brief, writer=ctx.writer, fallback=ctx.fallback, check=check)
    return VariantOut(
        variant_id=f"{seg.name}-v{index + 1}",
        segment=seg.name,
        index=index,
        channel=spec.channel,
        subject=written.subject if spec.subject_max is not None else None,
        text=written.body,
        item_ids=written.item_ids,
        offer_id=written.offer_id,
        checks_passed=written.passed,
        checks=list(CHECKS),
        problems=written.problems,
        writer=written.writer,
        prompt_version=written.prompt_version,
        attempts=written.attempts,
        explanation=explain_variant(seg, audience, items, offer, written, brief.angle, index, spec),
        degraded=written.degraded,
    )
