"""Marketer copy through the writer seam: the copy brief, the offline copy writer, and the loop
that checks every draft (one retry with the reason, then the offline writer, flagged).

`CopyBrief` is a `Brief`, so any `Writer` takes it: an LLM writer sends it as JSON, extra fields
included (goal, tone, angle, must-say, must-not-say, format instructions). An email's draft holds
its subject line as the first line of the text (`Subject: ...`), since a `Draft` has one text.
The offline copy writer is deterministic per variant: the variant index picks the opening line,
the angle and which item leads, so variants differ and the same request gives the same copy.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from enum import StrEnum

from pydantic import Field

from agents.copy.persona import OPENERS, SUBJECTS, Objective, Persona, lines
from agents.llm.errors import WriterError
from agents.writing.writer import Brief, BriefItem, BriefOffer, Draft, OfflineWriter, Writer, money
from policies.copy import CHANNELS, ChannelSpec, CopyChannel, non_gsm7
from policies.output import CopyVerdict

SUBJECT_PREFIX = "Subject:"


class Tone(StrEnum):
    friendly = "friendly"
    playful = "playful"
    premium = "premium"
    calm = "calm"
    direct = "direct"


PERSONA_WORDS = {
    Persona.everyone: "everyone on the list, whatever their history",
    Persona.new: "new customers who have not bought yet: reassure, start with bestsellers",
    Persona.active: "active customers: build on what they like",
    Persona.lapsing: "customers who have not visited for a month: invite them back warmly",
    Persona.lapsed: "customers gone for two months or more: welcome them back",
    Persona.big_spender: "our best customers, who spend the most: premium, no hard sell",
    Persona.bargain: "price-conscious customers: lead with value",
}
OBJECTIVE_WORDS = {
    Objective.promote: "to promote the picks",
    Objective.winback: "to win the customer back",
    Objective.upsell: "to move them up to a better product",
    Objective.launch: "to announce new products",
    Objective.cross_sell: "to sell what goes with what they have",
    Objective.loyalty: "to thank them",
}
ANGLES = ("our picks", "the offer first", "one item in the spotlight")

_OPENERS = {
    Tone.friendly: ("Hello! Picked for you:", "Good news:", "We think you will like these:"),
    Tone.playful: ("Treat time!", "Psst, look what we found:", "Ready for something fun?"),
    Tone.premium: ("Our finest selection:", "Chosen with care:", "A refined pick:"),
    Tone.calm: ("Take a moment for this:", "Whenever you are ready:", "A quiet suggestion:"),
    Tone.direct: ("Top picks:", "Just in:", "Our pick:"),
}
_CLOSERS = {
    Tone.friendly: "See you soon!",
    Tone.playful: "Go on, have a look!",
    Tone.premium: "With our compliments.",
    Tone.calm: "Enjoy.",
    Tone.direct: "Shop now.",
}
_SUBJECTS = {
    Tone.friendly: ("Picked for you", "Good news from us", "Something you might like"),
    Tone.playful: ("Treat time!", "Look what we found", "Your next favourite"),
    Tone.premium: ("Our finest selection", "Chosen with care", "A refined pick"),
    Tone.calm: ("A moment for you", "Whenever you are ready", "A quiet suggestion"),
    Tone.direct: ("Top picks", "Just in", "Our pick"),
}


class CopyBrief(Brief):
    """A brief for segment copy: the `Brief` fields plus the marketer's instructions.

    `max_length` is the body's limit; `channel` is the offer channel the copy channel maps to.
    No person appears in it: the segment is its name and its rule in words.
    """

    copy_channel: CopyChannel
    goal: str
    tone: Tone
    variant: int = Field(ge=0, description="Which variant this is (0-based): vary the angle.")
    angle: str
    segment: str = Field(description="The segment's name and rule, in words; no person.")
    must_say: list[str] = Field(default_factory=list)
    must_not_say: list[str] = Field(default_factory=list)
    subject_max_length: int | None = None
    instructions: str
    persona: str = Field("everyone", description="Who the segment is: new, lapsing, big_spender…")
    objective: str = Field("promote", description="What the brief wants: winback, upsell, launch…")


def copy_brief(
    *,
    spec: ChannelSpec,
    goal: str,
    tone: Tone,
    variant: int,
    segment: str,
    items: list[BriefItem],
    offer: BriefOffer | None,
    must_say: list[str],
    must_not_say: list[str],
    banned_phrases: list[str],
    disclaimers: Sequence[str] = (),
    persona: Persona = Persona.everyone,
    objective: Objective = Objective.promote,
) -> CopyBrief:
    angle = ANGLES[variant % len(ANGLES)]
    limit = f"at most {spec.body_max} " + ("GSM-7 septets" if spec.gsm7 else "characters")
    instructions = (
        f"Write {spec.channel.value.replace('_', ' ')} copy in a {tone.value} tone, angle: {angle}. "
        f"The text is {limit}. Include every must_say phrase and every disclaimer word for word; "
        "never use a must_not_say or banned phrase. "
        f"Write for this audience: {PERSONA_WORDS[persona]}; the campaign's objective is "
        f"{OBJECTIVE_WORDS[objective]}."
    )
    if spec.subject_max is not None:
        instructions += (
            f" Start the text with one line '{SUBJECT_PREFIX} <subject line of at most "
            f"{spec.subject_max} characters>', then a blank line, then the body."
        )
    if spec.gsm7:
        instructions += " Use only GSM-7 characters (no curly quotes, dashes or emoji)."
    return CopyBrief(
        channel=spec.offer_channel,
        items=items,
        offer=offer,
        max_length=spec.body_max,
        banned_phrases=[*banned_phrases, *must_not_say],
        disclaimers=list(disclaimers),
        copy_channel=spec.channel,
        goal=goal,
        tone=tone,
        variant=variant,
        angle=angle,
        segment=segment,
        must_say=must_say,
        must_not_say=must_not_say,
        subject_max_length=spec.subject_max,
        instructions=instructions,
        persona=persona.value,
        objective=objective.value,
    )


def split_subject(text: str) -> tuple[str | None, str]:
    """(subject, body) of a draft's text: the subject is a first line `Subject: ...`."""
    first, _, rest = text.partition("\n")
    if first.strip().lower().startswith(SUBJECT_PREFIX.lower()):
        return first.strip()[len(SUBJECT_PREFIX) :].strip(), rest.strip("\n")
    return None, text


class OfflineCopyWriter:
    """Deterministic template copy for a `CopyBrief`; any other brief goes to `OfflineWriter`.

    It quotes only titles, prices and offer text from the brief, every must-say phrase and
    disclaimer word for word, and leaves out an item or the offer rather than say a banned phrase or break a limit.
    """

    name = "offline"
    prompt_version = "offline-copy-template-1"

    def __init__(self, base: OfflineWriter | None = None) -> None:
        self._base = base or OfflineWriter()

    def write(self, brief: Brief, *, feedback: str | None = None) -> Draft:
        if not isinstance(brief, CopyBrief):
            return self._base.write(brief, feedback=feedback)
        spec = CHANNELS[brief.copy_channel]
        banned = [p.lower() for p in brief.banned_phrases]

        def allowed(text: str) -> bool:
            lowered = text.lower()
            return not any(p in lowered for p in banned) and not (spec.gsm7 and non_gsm7(text))

        v = brief.variant
        # The segment and the objective choose the opening line; the tone, the closing one.
        own = lines(OPENERS, Objective(brief.objective), Persona(brief.persona))
        tone = _rotate(list(_OPENERS[brief.tone]), v)
        openers = [o for o in [*_rotate(list(own), v), *tone] if allowed(o)]
        opener = openers[0] if openers else ""
        closer = _CLOSERS[brief.tone] if allowed(_CLOSERS[brief.tone]) else ""
        items = [i for i in _rotate(list(brief.items), v) if allowed(_item_words(i))]
        offers: list[str] = []  # the offer in fewer and more words, each quoted as approved
        if brief.offer is not None:
            short = f"{brief.offer.title}."
            offers = [w for w in (short, f"{brief.offer.title}. {brief.offer.terms}") if allowed(w)]
        angle = v % len(ANGLES)
        if angle == 2:  # one item in the spotlight
            items = items[:1]
        must = [p if p.endswith((".", "!", "?")) else f"{p}." for p in brief.must_say]
        must += brief.disclaimers  # the policy's, quoted as they are
        separator = "\n\n" if spec.channel is CopyChannel.email else " "
        # In a short format, the first of the variant's openers that fits beside the lead item.
        lead_lines = _item_lines(items[:1], spec, spotlight=angle == 2)
        opener = next(
            (
                o
                for o in openers
                if spec.measure(separator.join([o, *lead_lines, *must])) <= brief.max_length
            ),
            opener,
        )

        def body(layout: _Layout) -> str:
            lines = _item_lines(layout.items, spec, spotlight=angle == 2)
            said = offers[layout.offer - 1] if layout.offer else ""
            opening = opener if layout.opener else ""
            parts = [opening, said, *lines] if angle == 1 else [opening, *lines, said]
            parts += [*must, closer if layout.closer else ""]
            return separator.join(p for p in parts if p)

        def fits(layout: _Layout) -> bool:
            return spec.measure(body(layout)) <= brief.max_length

        # Must-say phrases always go in. The rest is added in the angle's order of priority
        # while it fits: the lead item (without the opener if it must), the offer in few words,
        # the other items, the offer's full terms, the closer.
        layout = _Layout(items=[], offer=0, opener=bool(opener), closer=False)
        steps = (
            ["offer", "item", "items", "terms"]
            if angle == 1
            else ["item", "offer", "items", "terms"]
        )
        for step in [*steps, "closer"]:
            tries: list[_Layout] = []
            if step == "item" and items:
                lead = replace(layout, items=items[:1])
                tries = [lead, replace(lead, opener=False)]
            elif step == "items":
                for item in items[len(layout.items) :]:
                    if fits(wider := replace(layout, items=[*layout.items, item])):
                        layout = wider
            elif step in ("offer", "terms") and offers:
                level = min(len(offers), 1 if step == "offer" else 2)
                tries = [replace(layout, offer=max(layout.offer, level))]
            elif step == "closer" and closer:
                tries = [replace(layout, closer=True)]
            layout = next((t for t in tries if fits(t)), layout)
        text = body(layout)
        chosen = layout.items
        subject = None
        if spec.subject_max is not None:
            subject = _subject(brief, chosen, allowed, spec.subject_max, offer=layout.offer > 0)
            text = f"{SUBJECT_PREFIX} {subject}\n\n{text}"
        return Draft(
            text=text,
            item_ids=[i.item_id for i in chosen],
            offer_id=brief.offer.offer_id if brief.offer and layout.offer else None,
        )


@dataclass(frozen=True)
class _Layout:
    """What a body holds: which items, the offer in none, few (1) or all (2) of its words,
    and whether the opener and closer lines are in."""

    items: list[BriefItem]
    offer: int
    opener: bool
    closer: bool


def _rotate(values: list, by: int) -> list:
    if not values:
        return values
    by %= len(values)
    return values[by:] + values[:by]


def _item_words(item: BriefItem) -> str:
    return f"{item.title} ({money(item.price, item.currency)})"


def _item_lines(items: list[BriefItem], spec: ChannelSpec, *, spotlight: bool) -> list[str]:
    if not items:
        return []
    if spotlight:
        return [f"Meet the {_item_words(items[0])}."]
    if spec.channel is CopyChannel.email:
        return ["\n".join(f"- {_item_words(i)}" for i in items)]
    return ["; ".join(_item_words(i) for i in items) + "."]


def _subject(
    brief: CopyBrief,
    items: list[BriefItem],
    allowed: Callable[[str], bool],
    limit: int,
    *,
    offer: bool,
) -> str:
    own = lines(SUBJECTS, Objective(brief.objective), Persona(brief.persona))
    generic = _rotate(list(own), brief.variant) + list(_SUBJECTS[brief.tone])
    candidates = []
    if offer and brief.offer is not None and brief.variant % len(ANGLES) == 1:
        candidates.append(brief.offer.title)
    if items:
        joint = " " if generic[0].endswith(("!", "?")) else ": "
        candidates.append(f"{generic[0]}{joint}{items[0].title}")
    candidates += generic
    return next((c for c in candidates if len(c) <= limit and allowed(c)), "News")


@dataclass
class Written:
    """A checked variant: what was written, by whom, after how many attempts, and what failed."""

    subject: str | None
    body: str
    item_ids: list[str]
    offer_id: str | None
    writer: str
    prompt_version: str
    attempts: int
    problems: list[str]
    degraded: list[str] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return not self.problems


Check = Callable[[str | None, str, Draft], CopyVerdict]


def write_checked(brief: CopyBrief, *, writer: Writer, fallback: Writer, check: Check) -> Written:
    """Write and check; a model gets one retry with the reason, then the offline writer writes.

    Copy the offline writer cannot make pass is withheld (empty text, problems listed): no copy
    is returned unchecked.
    """
    attempts = 0
    degraded: list[str] = []
    if writer is not fallback:
        feedback: str | None = None
        for _ in range(2):
            attempts += 1
            try:
                draft = writer.write(brief, feedback=feedback)
            except WriterError as error:
                degraded.append(f"writer: {writer.name} failed ({error}); used the offline writer")
                break
            subject, body = split_subject(draft.text)
            verdict = check(subject, body, draft)
            if verdict.ok:
                return _written(subject, body, draft, writer, attempts, [], degraded)
            feedback = verdict.summary()
        else:
            degraded.append(
                f"writer: output guard rejected the model's copy twice ({feedback}); "
                "used the offline writer"
            )
    attempts += 1
    draft = fallback.write(brief)
    subject, body = split_subject(draft.text)
    verdict = check(subject, body, draft)
    if verdict.ok:
        return _written(subject, body, draft, fallback, attempts, [], degraded)
    problems = [f"{p.check}: {p.detail}" for p in verdict.problems]
    degraded.append(
        f"content: withheld, offline copy failed the output guard ({verdict.summary()})"
    )
    empty = Draft(text="", item_ids=[], offer_id=None)
    return _written(None, "", empty, fallback, attempts, problems, degraded)


def _written(
    subject: str | None,
    body: str,
    draft: Draft,
    writer: Writer,
    attempts: int,
    problems: list[str],
    degraded: list[str],
) -> Written:
    return Written(
        subject=subject,
        body=body,
        item_ids=list(draft.item_ids),
        offer_id=draft.offer_id,
        writer=writer.name,
        prompt_version=writer.prompt_version,
        attempts=attempts,
        problems=problems,
        degraded=degraded,
    )
