"""Copy channels for marketers, their limits, and the checks every copy variant must pass.

The copy channels are not the decision channels: an email has a subject line and a body, an SMS
is one GSM-7 segment, a web banner is a single short line. Their limits are defined here and
nowhere else. `check_variant` runs the output guard (`policies.output.check_copy`: approved ids,
grounded prices, discounts and dates, banned phrases, the policy's required disclaimers, PII) on
each part and adds what marketer copy needs on top: every must-say phrase present, every part within its channel's limit, the subject
line an email needs, and only GSM-7 characters in an SMS.

Check ids, besides those of `check_copy`: `copy-must-say`, `copy-format`, `content-length`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum

from policies.output import CopyVerdict, Problem, check_copy
from policies.pii import KnownValues, PIIGuard
from policies.rules import ContentRules
from store.schemas import Channel, Purpose


class CopyChannel(StrEnum):
    """Where marketer copy is sent."""

    email = "email"
    push = "push"
    sms = "sms"
    web_banner = "web_banner"


@dataclass(frozen=True)
class ChannelSpec:
    """One copy channel: its limits, the offer channel it maps to, and the consent it needs."""

    channel: CopyChannel
    body_max: int  # characters; GSM-7 septets for an SMS
    offer_channel: Channel  # offers must be allowed on this decision channel
    consent: Purpose | None  # every recipient must have granted this purpose
    max_items: int  # how many items the copy features at most
    subject_max: int | None = None  # an email's subject line
    gsm7: bool = False  # an SMS: GSM-7 characters only, extension characters count twice

    def measure(self, text: str) -> int:
        """The length that counts against the limit: septets for an SMS, characters otherwise."""
        if self.gsm7:
            septets = gsm7_septets(text)
            return len(text) if septets is None else septets
        return len(text)


CHANNELS: dict[CopyChannel, ChannelSpec] = {
    CopyChannel.email: ChannelSpec(
        CopyChannel.email,
        body_max=1500,
        subject_max=78,
        offer_channel=Channel.email,
        consent=Purpose.email,
        max_items=4,
    ),
    CopyChannel.push: ChannelSpec(
        CopyChannel.push,
        body_max=180,
        offer_channel=Channel.push,
        consent=Purpose.push,
        max_items=2,
    ),
    # One GSM-7 segment. The store has no SMS consent purpose yet: see agents/copy/audience.py.
    CopyChannel.sms: ChannelSpec(
        CopyChannel.sms,
        body_max=160,
        offer_channel=Channel.web,
        consent=None,
        max_items=1,
        gsm7=True,
    ),
    CopyChannel.web_banner: ChannelSpec(
        CopyChannel.web_banner,
        body_max=90,
        offer_channel=Channel.web,
        consent=None,
        max_items=1,
    ),
}

# GSM 03.38: the basic character set (one septet each) and its extension table (two septets:
# an escape and the character). Anything else forces UCS-2, which allows 70 characters only.
_GSM7_BASIC = set(
    "@£$¥èéùìòÇ\nØø\rÅåΔ_ΦΓΛΩΠΨΣΘΞÆæßÉ !\"#¤%&'()*+,-./0123456789:;<=>?¡"
    "ABCDEFGHIJKLMNOPQRSTUVWXYZÄÖÑÜ§¿abcdefghijklmnopqrstuvwxyzäöñüà"
)
_GSM7_EXTENSION = set("^{}\\[~]|€\f")


def gsm7_septets(text: str) -> int | None:
    """How many GSM-7 septets `text` takes, or None when a character is not in GSM-7."""
    septets = 0
    for character in text:
        if character in _GSM7_BASIC:
            septets += 1
        elif character in _GSM7_EXTENSION:
            septets += 2
        else:
            return None
    return septets


def non_gsm7(text: str) -> list[str]:
    return sorted({c for c in text if c not in _GSM7_BASIC and c not in _GSM7_EXTENSION})


def check_variant(
    *,
    subject: str | None,
    body: str,
    spec: ChannelSpec,
    mentioned_item_ids: Sequence[str],
    mentioned_offer_id: str | None,
    approved_prices: Mapping[str, float],
    offer_id: str | None,
    discount_percent: float | None,
    approved_text: str,
    banned_phrases: Sequence[str],
    must_say: Sequence[str],
    guard: PIIGuard,
    known: KnownValues | None = None,
    disclaimers: Sequence[str] = (),
    item_titles: Sequence[str] = (),
    catalog_offers: Mapping[str, str] | None = None,
) -> CopyVerdict:
    """Every check a copy variant must pass, on every part of it.

    `approved_text` is text whose amounts, percentages and dates may be quoted (the offer's
    title, terms and end date, the brief's must-say phrases); `banned_phrases` are the policy's
    and the brief's must-not-say phrases together; `disclaimers` (the policy's, for the channel)
    must be in the body word for word.
    """
    known = known or KnownValues.empty()
    # Lengths are checked here, per part, so the guard gets no length limit of its own.
    rules = ContentRules(banned_phrases=tuple(banned_phrases))
    shared = {
        "approved_prices": approved_prices,
        "offer_id": offer_id,
        "discount_percent": discount_percent,
        "offer_text": approved_text,
        "channel": spec.offer_channel,
        "rules": rules,
        "guard": guard,
        "known": known,
        "approved_text": item_titles,
        "catalog_offers": catalog_offers,
    }
    problems = list(
        check_copy(
            body,
            mentioned_item_ids=mentioned_item_ids,
            mentioned_offer_id=mentioned_offer_id,
            disclaimers=disclaimers,
            **shared,  # type: ignore[arg-type]
        ).problems
    )
    if not body.strip():
        problems.append(Problem("copy-format", "the body is empty"))
    problems += _length("body", body, spec.body_max, spec)
    if spec.gsm7 and (outside := non_gsm7(body)):
        problems.append(
            Problem("copy-format", f"characters outside GSM-7 in an SMS: {''.join(outside)!r}")
        )
    if spec.subject_max is not None:
        if not subject or not subject.strip():
            problems.append(Problem("copy-format", f"{spec.channel.value} needs a subject line"))
        else:
            if "\n" in subject:
                problems.append(Problem("copy-format", "the subject line has a line break"))
            problems += _length("subject", subject, spec.subject_max, spec)
            verdict = check_copy(
                subject,
                mentioned_item_ids=(),
                mentioned_offer_id=None,
                **shared,  # type: ignore[arg-type]
            )
            problems += [Problem(p.check, f"subject: {p.detail}") for p in verdict.problems]
    elif subject:
        problems.append(Problem("copy-format", f"{spec.channel.value} has no subject line"))
    whole = f"{subject or ''}\n{body}".lower()
    for phrase in must_say:
        if phrase.lower() not in whole:
            problems.append(Problem("copy-must-say", f"missing {phrase!r}"))
    return CopyVerdict(tuple(dict.fromkeys(problems)))


def _length(part: str, text: str, limit: int, spec: ChannelSpec) -> list[Problem]:
    size = spec.measure(text)
    if size <= limit:
        return []
    unit = "GSM-7 septets" if spec.gsm7 else "characters"
    return [
        Problem("content-length", f"{part}: {size} {unit}, {spec.channel.value} allows {limit}")
    ]


GROUNDING_CHECKS = frozenset(
    {"grounding-ids", "grounding-prices", "grounding-discounts", "grounding-dates"}
)
COMPLIANCE_CHECKS = frozenset(
    {"content-banned-phrase", "content-disclaimer", "copy-must-say", "pii-leak"}
)
FORMAT_CHECKS = frozenset({"content-length", "copy-format"})
