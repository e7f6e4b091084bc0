"""The `generation` suite kind: marketer copy through the writer path, scored per variant.

Dataset: a briefs file (JSONL, e.g. `evals/data/generation_briefs.jsonl`), one brief per line::

    {"id": "email-lapsed-coffee", "channel": "email",
     "segment": {"name": "lapsed-coffee", "rule": {"lifecycle": "lapsed", ...}},
     "goal": "...", "tone": "friendly", "item_ids": ["itm_00015", ...], "offer_id": "off_005",
     "must_say": ["Free delivery over €50"], "must_not_say": ["cheap"], "variants": 3}

Items and offers are read from the catalog folder in the dataset's `params.catalog`
(`items.jsonl`, `offers.jsonl`) and the content rules (banned phrases, required disclaimers)
from `params.policy`. Each variant runs
the service's writer path (`agents.copy.writer.write_checked`: draft, output guard, one retry
with the reason, offline fallback) and the shipped copy is checked again and scored:

- `groundedness`: share of variants whose every mentioned id is approved and every price and
  discount is the catalog's (checks `grounding-*`);
- `compliance`: no banned or must-not-say phrase, every must-say phrase and required
  disclaimer, no PII;
- `format`: every part within its channel's limit, the email's subject line, GSM-7 for SMS;
- `shipped`: share of variants not withheld; `fallback_rate`: share the offline writer wrote
  after the system's own writer failed or was rejected; `first_pass`: share of first drafts
  that passed every check;
- `tone` (optional, `params.judge: true`): an LLM judge's 1–5 rating of how well the copy
  matches the brief's tone, scaled to [0, 1]; only when a model is configured.

Systems: `type: offline` (the offline copy writer, always) and `type: model` (the model set by
`ATTUNE_OPENAI_BASE_URL` and `ATTUNE_OPENAI_MODEL`, read through `Settings`; skipped with a note
when none is configured). Rows: one per system and dataset; a table breaks them down by channel.
"""

from __future__ import annotations

import json
import statistics
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import openai
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from agents.copy.segments import SegmentRule
from agents.copy.writer import OfflineCopyWriter, Tone, Written, copy_brief, write_checked
from agents.factory import build_writer
from agents.settings import Settings
from agents.writing.writer import BriefItem, BriefOffer, Draft, Writer
from evals.base import Row, RunContext, SuiteError, SuiteResult, register
from policies.copy import (
    CHANNELS,
    COMPLIANCE_CHECKS,
    FORMAT_CHECKS,
    GROUNDING_CHECKS,
    CopyChannel,
    check_variant,
)
from policies.output import CopyVerdict
from policies.pii import PIIGuard
from policies.rules import ContentRules, load_policy
from store.schemas import Item, Offer

METRICS = ("groundedness", "compliance", "format", "shipped", "fallback_rate", "first_pass")
SYSTEM_TYPES = ("offline", "model")
JUDGE_PROMPT = (
    "You rate marketing copy. Given the intended tone and the copy, reply with JSON only: "
    '{"score": n} where n is 1 (does not match the tone at all) to 5 (matches it perfectly).'
)


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class BriefSegment(_Strict):
    name: str
    rule: SegmentRule


class BriefCase(_Strict):
    """One line of the briefs file."""

    id: str
    channel: CopyChannel
    segment: BriefSegment
    goal: str
    tone: Tone
    item_ids: list[str] = Field(min_length=1)
    offer_id: str | None = None
    must_say: list[str] = Field(default_factory=list)
    must_not_say: list[str] = Field(default_factory=list)
    variants: int = Field(2, ge=1, le=5)


@dataclass
class Scored:
    case: BriefCase
    variant: int
    written: Written
    final: CopyVerdict
    first_pass: bool
    tone: float | None = None


@register("generation")
def generation(context: RunContext) -> SuiteResult:
    suite = context.suite
    for i, system in enumerate(suite.systems):
        if system.type not in SYSTEM_TYPES:
            raise SuiteError(
                f"systems[{i}].type: unknown type {system.type!r}; use one of {SYSTEM_TYPES}"
            )
    settings = Settings()
    judge = bool(suite.params.get("judge", False))
    notes: list[str] = []
    rows: list[Row] = []
    by_channel: list[dict[str, Any]] = []
    examples: list[dict[str, Any]] = []
    details: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="generation-eval-"):
        guard = PIIGuard(spacy_model=settings.spacy_model)
        datasets = [(d, *_load(context, d)) for d in suite.datasets]
        context.set_total(
            sum(c.variants for _, cases, *_ in datasets for c in cases) * len(suite.systems)
        )
        for system in suite.systems:
            writer: Writer | None
            if system.type == "offline":
                writer = None
            elif settings.llm_configured:
                writer = build_writer(settings)
            else:
                notes.append(
                    f"System **{system.name}** (the configured model) was skipped: "
                    "ATTUNE_OPENAI_BASE_URL and ATTUNE_OPENAI_MODEL are not set."
                )
                context.progress(sum(c.variants for _, cases, *_ in datasets for c in cases))
                continue
            rate = _judge(settings) if judge and settings.llm_configured else None
            for dataset, cases, items, offers, content in datasets:
                scored = [
                    s
                    for case in cases
                    for s in _run_case(case, writer, items, offers, content, guard, rate, context)
                ]
                rows.append(Row(dataset.name, system.name, _metrics(scored)))
                for channel in CopyChannel:
                    part = [s for s in scored if s.case.channel is channel]
                    if part:
                        by_channel.append(
                            {
                                "dataset": dataset.name,
                                "system": system.name,
                                "channel": channel.value,
                            }
                            | {k: round(v, 4) for k, v in _metrics(part).items()}
                        )
                failures = [
                    {
                        "brief": s.case.id,
                        "variant": s.variant + 1,
                        "problems": "; ".join(f"{p.check}: {p.detail}" for p in s.final.problems),
                    }
                    for s in scored
                    if not s.final.ok
                ]
                details[f"{dataset.name}/{system.name}"] = {
                    "variants": len(scored),
                    "failures": failures,
                }
                if rate is not None:
                    judged = sum(1 for s in scored if s.tone is not None)
                    shipped = sum(1 for s in scored if s.written.passed)
                    notes.append(
                        f"The LLM judge rated the tone of {judged} of {shipped} shipped variants "
                        f"of **{system.name}** on {dataset.name}"
                        + ("." if judged == shipped else "; the judge failed on the others.")
                    )
                examples += [
                    {
                        "system": system.name,
                        "brief": s.case.id,
                        "variant": s.variant + 1,
                        "subject": s.written.subject or "",
                        "text": s.written.body,
                    }
                    for s in scored
                    if s.variant == 0
                ][:6]
    if judge and not settings.llm_configured:
        notes.append("The LLM-as-judge tone score was skipped: no model is configured.")
    elif not judge:
        notes.append("The LLM-as-judge tone score is off (`params.judge: false`).")
    notes.append(
        "Scores are shares of variants. Copy is checked again after the writer path, so "
        "`groundedness`, `compliance` and `format` measure what would ship; `first_pass` and "
        "`fallback_rate` show how often the system's own writer got it right the first time."
    )
    return SuiteResult(
        rows=rows,
        notes=notes,
        tables={"By channel": by_channel, "Examples (first variant)": examples},
        details=details,
    )


def _load(
    context: RunContext, dataset: Any
) -> tuple[list[BriefCase], dict[str, Item], dict[str, Offer], ContentRules]:
    path = context.dataset_path(dataset)
    catalog = dataset.params.get("catalog")
    policy = dataset.params.get("policy")
    if not catalog or not policy:
        raise SuiteError(
            f"datasets ({dataset.name}).params: give `catalog` (a folder with items.jsonl and "
            "offers.jsonl) and `policy` (a policy file), relative to the suite file"
        )
    folder = (context.suite_dir / catalog).resolve()
    items = {i.item_id: i for i in _jsonl(folder / "items.jsonl", Item)}
    offers = {o.offer_id: o for o in _jsonl(folder / "offers.jsonl", Offer)}
    content = load_policy((context.suite_dir / policy).resolve()).content
    cases = list(_jsonl(path, BriefCase))
    for case in cases:
        unknown = [i for i in case.item_ids if i not in items]
        if case.offer_id is not None and case.offer_id not in offers:
            unknown.append(case.offer_id)
        if unknown:
            raise SuiteError(f"{path}: brief {case.id!r} names unknown ids: {', '.join(unknown)}")
    return cases, items, offers, content


def _jsonl(path: Path, model: type[Any]) -> list[Any]:
    out = []
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except OSError as error:
        raise SuiteError(f"cannot read {path}: {error.strerror}") from error
    for number, line in enumerate(lines, start=1):
        if line.strip():
            try:
                out.append(model.model_validate_json(line))
            except ValidationError as error:
                raise SuiteError(f"{path}:{number}: {error}") from error
    return out


def _run_case(
    case: BriefCase,
    writer: Writer | None,
    items: dict[str, Item],
    offers: dict[str, Offer],
    content: ContentRules,
    guard: PIIGuard,
    rate: Callable[[str, str], float | None] | None,
    context: RunContext,
) -> list[Scored]:
    spec = CHANNELS[case.channel]
    fallback = OfflineCopyWriter()
    brief_items = [
        BriefItem(
            item_id=i.item_id,
            title=i.title,
            category=i.category,
            price=i.price,
            currency=i.currency,
        )
        for i in (items[item_id] for item_id in case.item_ids)
    ]
    offer = offers.get(case.offer_id) if case.offer_id else None
    brief_offer = (
        BriefOffer(
            offer_id=offer.offer_id,
            title=offer.title,
            terms=offer.terms,
            discount_percent=offer.discount_percent,
            valid_until=offer.valid_until.date().isoformat(),
        )
        if offer
        else None
    )
    end = offer.valid_until.date().isoformat() if offer else ""
    approved_text = " ".join([*([offer.title, offer.terms, end] if offer else []), *case.must_say])
    disclaimers = content.disclaimers(spec.offer_channel, with_offer=offer is not None)

    def check(subject: str | None, body: str, draft: Draft) -> CopyVerdict:
        return check_variant(
            subject=subject,
            body=body,
            spec=spec,
            mentioned_item_ids=draft.item_ids,
            mentioned_offer_id=draft.offer_id,
            approved_prices={i.item_id: i.price for i in brief_items},
            offer_id=offer.offer_id if offer else None,
            discount_percent=offer.discount_percent if offer else None,
            approved_text=approved_text,
            banned_phrases=[*content.banned_phrases, *case.must_not_say],
            must_say=case.must_say,
            guard=guard,
            disclaimers=disclaimers,
        )

    scored = []
    for index in range(case.variants):
        brief = copy_brief(
            spec=spec,
            goal=case.goal,
            tone=case.tone,
            variant=index,
            segment=f"{case.segment.name}: {case.segment.rule.describe()}",
            items=brief_items,
            offer=brief_offer,
            must_say=case.must_say,
            must_not_say=case.must_not_say,
            banned_phrases=list(content.banned_phrases),
            disclaimers=disclaimers,
        )
        written = write_checked(brief, writer=writer or fallback, fallback=fallback, check=check)
        final = check(
            written.subject,
            written.body,
            Draft(text=written.body, item_ids=written.item_ids, offer_id=written.offer_id),
        )
        tone = None
        if rate is not None and written.passed:
            tone = rate(case.tone.value, f"{written.subject or ''}\n{written.body}".strip())
        scored.append(
            Scored(
                case=case,
                variant=index,
                written=written,
                final=final,
                first_pass=written.passed and written.attempts == 1,
                tone=tone,
            )
        )
        context.progress(1)
    return scored


def _metrics(scored: list[Scored]) -> dict[str, float]:
    def share(predicate: Callable[[Scored], bool]) -> float:
        return sum(1 for s in scored if predicate(s)) / len(scored) if scored else 0.0

    def clean(s: Scored, checks: frozenset[str]) -> bool:
        return not any(p.check in checks for p in s.final.problems)

    metrics = {
        "groundedness": share(lambda s: clean(s, GROUNDING_CHECKS)),
        "compliance": share(lambda s: clean(s, COMPLIANCE_CHECKS)),
        "format": share(lambda s: clean(s, FORMAT_CHECKS)),
        "shipped": share(lambda s: s.written.passed),
        "fallback_rate": share(lambda s: any(d.startswith("writer:") for d in s.written.degraded)),
        "first_pass": share(lambda s: s.first_pass),
    }
    tones = [s.tone for s in scored if s.tone is not None]
    if tones:
        metrics["tone"] = statistics.fmean(tones)
    return metrics


def _judge(settings: Settings) -> Callable[[str, str], float | None]:
    """An LLM-as-judge tone rating in [0, 1], on the configured model; None when it fails."""
    assert settings.openai_base_url and settings.openai_model
    key = settings.openai_api_key.get_secret_value() if settings.openai_api_key else None
    client = openai.OpenAI(
        base_url=settings.openai_base_url,
        api_key=key or "not-needed",
        timeout=settings.openai_timeout_s,
        max_retries=1,
    )

    def rate(tone: str, copy: str) -> float | None:
        try:
            reply = client.chat.completions.create(
                model=settings.openai_model or "",
                messages=[
                    {"role": "system", "content": JUDGE_PROMPT},
                    {"role": "user", "content": json.dumps({"tone": tone, "copy": copy})},
                ],
            )
            score = float(json.loads(reply.choices[0].message.content or "")["score"])
        except (openai.OpenAIError, ValueError, KeyError, TypeError, IndexError):
            return None
        return min(max((score - 1) / 4, 0.0), 1.0)

    return rate
