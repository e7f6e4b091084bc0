"""Copy writers: the grounded brief they receive, the draft they return, and the offline writer.

The offline writer is deterministic and template-based: it only ever states titles, prices and
discounts copied from the brief, and drops items rather than exceed the channel's length.
"""

from __future__ import annotations

from typing import Protocol

from pydantic import BaseModel, ConfigDict, Field

from store.schemas import Channel
from tools.schemas import Candidate, OfferSummary

_SYMBOLS = {"EUR": "€", "USD": "$", "GBP": "£"}


class BriefItem(BaseModel):
    model_config = ConfigDict(frozen=True)

    item_id: str
    title: str
    category: str
    price: float
    currency: str

    @classmethod
    def of(cls, item: Candidate) -> BriefItem:
        return cls(
            item_id=item.item_id,
            title=item.title,
            category=item.category,
            price=item.price,
            currency=item.currency,
        )


class BriefOffer(BaseModel):
    model_config = ConfigDict(frozen=True)

    offer_id: str
    title: str
    terms: str
    discount_percent: float
    valid_until: str

    @classmethod
    def of(cls, offer: OfferSummary | None) -> BriefOffer | None:
        if offer is None:
            return None
        return cls(
            offer_id=offer.offer_id,
            title=offer.title,
            terms=offer.terms,
            discount_percent=offer.discount_percent,
            valid_until=offer.valid_until,
        )


class Brief(BaseModel):
    """Everything a writer may use. Pseudonymized: names appear as placeholders only."""

    model_config = ConfigDict(frozen=True)

    channel: Channel
    greeting_name: str | None = Field(None, description="A placeholder such as <FIRST_NAME_1>.")
    request: str | None = Field(None, description="The person's request, pseudonymized.")
    items: list[BriefItem]
    offer: BriefOffer | None
    max_length: int
    banned_phrases: list[str] = Field(default_factory=list)
    disclaimers: list[str] = Field(
        default_factory=list, description="Sentences the copy must carry word for word."
    )
    opening: str | None = Field(
        None, description="The reply's first words (a chat's later turns), instead of a greeting."
    )


class Draft(BaseModel):
    """A writer's output: the copy and the ids it mentions, for the output guard to check."""

    text: str
    item_ids: list[str]
    offer_id: str | None = None


class Writer(Protocol):
    name: str
    prompt_version: str

    def write(self, brief: Brief, *, feedback: str | None = None) -> Draft:
        """Write copy for the brief; `feedback` says why the previous draft was rejected."""
        ...


def money(amount: float, currency: str) -> str:
    symbol = _SYMBOLS.get(currency)
    return f"{symbol}{amount:.2f}" if symbol else f"{amount:.2f} {currency}"


class OfflineWriter:
    """Deterministic template copy, grounded in the brief; the default without an LLM."""

    name = "offline"
    prompt_version = "offline-template-1"

    def write(self, brief: Brief, *, feedback: str | None = None) -> Draft:
        del feedback  # Templates are correct by construction; there is nothing to revise.
        if brief.opening is not None:
            opening = brief.opening
        else:
            opening = f"Hi {brief.greeting_name}, " if brief.greeting_name else "Hello, "
            opening += "here is what we found for you: " if brief.request else "picked for you: "
        closing = ""
        if brief.offer is not None:
            # Offer titles and terms are approved text: quoted as they are, never paraphrased.
            closing = f" {brief.offer.title}: {brief.offer.terms}"
        for disclaimer in brief.disclaimers:
            closing += f" {disclaimer}"
        mentioned: list[BriefItem] = []
        text = opening.rstrip(": ") + "." + closing
        for item in brief.items:
            candidate = [*mentioned, item]
            body = "; ".join(f"{i.title} ({money(i.price, i.currency)})" for i in candidate)
            attempt = f"{opening}{body}.{closing}"
            if len(attempt) > brief.max_length:
                break
            mentioned, text = candidate, attempt
        if len(text) > brief.max_length:  # Even the offer alone does not fit: say less.
            text = (opening + "; ".join(f"{i.title}" for i in mentioned))[: brief.max_length]
        return Draft(
            text=text,
            item_ids=[i.item_id for i in mentioned],
            offer_id=brief.offer.offer_id
            if brief.offer and brief.offer.title in text and closing in text
            else None,
        )
