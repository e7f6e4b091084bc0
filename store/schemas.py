"""Domain records shared by every layer: catalog items, offers, profiles, consent and events.

These are the validated shapes of what Attune stores. The API builds its request and response
schemas on top of them; the demo generator writes them; the store persists them.
"""

from __future__ import annotations

from datetime import UTC, date, datetime
from enum import StrEnum
from typing import Annotated, Any

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    EmailStr,
    Field,
    field_validator,
    model_validator,
)

Identifier = Annotated[
    str,
    Field(min_length=1, max_length=128, pattern=r"^[A-Za-z0-9][A-Za-z0-9_.:@-]*$"),
]
CurrencyCode = Annotated[str, Field(pattern=r"^[A-Z]{3}$")]
Label = Annotated[str, Field(min_length=1, max_length=64)]  # a tag, a category, a locale

# Every instant Attune stores lies in this window: far wider than any real event or offer, and
# narrow enough that converting it to UTC cannot overflow (`0001-01-01T00:00:00+14:00` would).
EARLIEST = datetime(1970, 1, 1, tzinfo=UTC)
LATEST = datetime(2100, 1, 1, tzinfo=UTC)
MAX_MIN_AGE = 21  # the highest minimum age an item or offer can carry


def _within_bounds(value: datetime) -> datetime:
    """An instant with a timezone, inside the window: a naive one would be compared with the
    service's aware clock (an offer's validity at every decision) and fail there, not here."""
    if value.tzinfo is None or value.utcoffset() is None:
        raise ValueError("must carry a timezone, e.g. 2026-11-23T09:00:00Z")
    problem = "must be between 1970-01-01T00:00:00Z and 2100-01-01T00:00:00Z"
    try:
        utc = value.astimezone(UTC)
    except OverflowError:
        raise ValueError(problem) from None
    if not EARLIEST <= utc < LATEST:
        raise ValueError(problem)
    return value


Instant = Annotated[datetime, AfterValidator(_within_bounds)]


def require_subject(user_id: str | None, anonymous_id: str | None) -> None:
    """A ValueError naming `user_id` unless one of the two ids is given: a decision, a chat turn
    and an event are each about someone (the API answers it as a 422 on that field)."""
    if user_id is None and anonymous_id is None:
        raise ValueError("user_id: one of user_id or anonymous_id is required")


class Purpose(StrEnum):
    """Purposes a person can consent to, checked before their data is used."""

    personalization = "personalization"
    profiling = "profiling"
    email = "email"
    push = "push"
    llm_processing = "llm_processing"


class Channel(StrEnum):
    """Surfaces a decision can be made for."""

    web = "web"
    app = "app"
    email = "email"
    push = "push"


class EventType(StrEnum):
    view = "view"
    click = "click"
    add_to_cart = "add_to_cart"
    purchase = "purchase"


class _Record(BaseModel):
    # Floats are finite: "Infinity" and "NaN" pass JSON parsers but no comparison or store.
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True, allow_inf_nan=False)


UNCATEGORISED = "uncategorised"
"""The category of an item whose source gave none."""


class Item(_Record):
    """A catalog item. Only `item_id`, `title` and `price` are required; the README's "Item
    fields" table gives every field's default and meaning."""

    item_id: Identifier = Field(description="Your id of the item; unique in the catalog.")
    title: str = Field(min_length=1, max_length=300, description="Shown to people and searched.")
    description: str = Field(
        default="", max_length=5000, description="Searched and embedded; empty if unknown."
    )
    category: str = Field(
        default=UNCATEGORISED,
        min_length=1,
        max_length=64,
        description="One category: offers, segments and taste are per category.",
    )
    tags: list[Label] = Field(
        default_factory=list, max_length=50, description="Searched and embedded; may be empty."
    )
    price: float = Field(gt=0, le=1_000_000, description="Unit price in `currency`.")
    currency: CurrencyCode = Field(
        default="EUR",
        description="ISO 4217 code. File ingest and the catalog API fill it in from the "
        "ATTUNE_CURRENCY setting when it is missing.",
    )
    margin: float | None = Field(
        default=None,
        ge=0,
        le=1,
        description="Gross margin as a fraction of the price; null when unknown.",
    )
    stock: int | None = Field(
        default=None,
        ge=0,
        le=1_000_000_000,
        description="Units in stock; 0 means out of stock and is never recommended; null means "
        "unknown and is treated as available.",
    )
    min_age: int = Field(
        default=0,
        ge=0,
        le=MAX_MIN_AGE,
        description="Minimum age of the buyer; 0 means no restriction.",
    )

    @property
    def available(self) -> bool:
        """Whether the stock rule lets the item be recommended: in stock, or stock unknown."""
        return self.stock is None or self.stock > 0

    def text(self) -> str:
        """The text that is embedded for retrieval."""
        return f"{self.title}. {self.description} {' '.join(self.tags)}".strip()


class Offer(_Record):
    """An offer the bandit can choose: a discount on some categories, on some channels."""

    offer_id: Identifier
    title: str = Field(min_length=1, max_length=200)
    terms: str = Field(min_length=1, max_length=2000)
    discount_percent: float = Field(gt=0, le=90)
    categories: list[Label] = Field(
        min_length=1, max_length=100, description="Categories the offer applies to."
    )
    channels: list[Channel] = Field(min_length=1, max_length=len(Channel))
    min_age: int = Field(default=0, ge=0, le=MAX_MIN_AGE)
    valid_from: Instant
    valid_until: Instant
    margin_weight: float = Field(default=1.0, gt=0, le=1000)
    locales: list[Label] = Field(
        default_factory=list,
        max_length=100,
        description="Languages or locales it is for (en, en-GB); empty: all.",
    )

    @model_validator(mode="after")
    def _window_is_ordered(self) -> Offer:
        if self.valid_until <= self.valid_from:
            raise ValueError("valid_until: must be after valid_from")
        return self


class Address(_Record):
    street: str = Field(max_length=200)
    city: str = Field(max_length=100)
    postcode: str = Field(max_length=20)
    country: str = Field(pattern=r"^[A-Z]{2}$")


class Profile(_Record):
    """What a person told us about themselves. Every field here is PII."""

    first_name: str = Field(min_length=1, max_length=100)
    last_name: str = Field(min_length=1, max_length=100)
    email: EmailStr
    phone: str | None = Field(default=None, max_length=40)
    birth_date: date | None = None
    address: Address | None = None
    locale: str = Field(default="en-GB", pattern=r"^[a-z]{2}(-[A-Z]{2})?$")

    @field_validator("birth_date")
    @classmethod
    def _born_in_the_past(cls, value: date | None) -> date | None:
        if value is not None and (value > date.today() or value.year < 1900):
            raise ValueError("must be between 1900-01-01 and today")
        return value

    def age_on(self, day: date) -> int | None:
        if self.birth_date is None:
            return None
        born = self.birth_date
        return day.year - born.year - ((day.month, day.day) < (born.month, born.day))


class _StoredProfile(Profile):
    email: str


def stored_profile(data: dict[str, Any]) -> Profile:
    """A profile read back from the store, where only a validated `Profile` is ever written: every
    field is parsed as `Profile` parses it but the email, whose parse was most of reading a person
    on every decision. The result is a plain `Profile`, equal to `Profile.model_validate(data)`."""
    parsed = _StoredProfile.model_validate(data)
    return Profile.model_construct(parsed.model_fields_set, **dict(parsed))


class UserRecord(_Record):
    """One line of `users.jsonl`: a user, their profile and their consent per purpose."""

    user_id: Identifier
    profile: Profile
    consent: dict[Purpose, bool] = Field(default_factory=dict)


class Event(_Record):
    """A behavioural event. At least one of `user_id` and `anonymous_id` is required."""

    event_id: Identifier = Field(
        description="Your id of the event; a second event with the same id is a duplicate."
    )
    type: EventType = Field(description="What the person did with the item.")
    ts: Instant = Field(
        description="When it happened, with a timezone (e.g. 2026-11-23T09:00:00Z); "
        "between 1970 and 2100."
    )
    user_id: Identifier | None = Field(default=None, description="The known person, if any.")
    anonymous_id: Identifier | None = Field(
        default=None, description="A cookie or session id, for people not signed in."
    )
    device_id: Identifier | None = Field(default=None, description="The device, if known.")
    item_id: Identifier = Field(description="The catalog item the event is about.")
    value: float | None = Field(
        default=None,
        ge=0,
        le=1_000_000_000,
        description="Order value, on purchase events only.",
    )
    decision_id: Identifier | None = Field(
        default=None,
        description="The decision that showed what the person acted on, if known: the event "
        "is attributed to it (and rewards it at once) instead of to the latest decision that "
        "showed the item or offer within the policy's window.",
    )
    offer_id: Identifier | None = Field(
        default=None, description="The offer the person acted on, if any."
    )

    @model_validator(mode="after")
    def _has_subject(self) -> Event:
        require_subject(self.user_id, self.anonymous_id)
        if self.type is not EventType.purchase and self.value is not None:
            raise ValueError("value: only allowed on purchase events")
        return self
