"""State and runtime context of the decision graph."""

from __future__ import annotations

import operator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Annotated, Any

from typing_extensions import TypedDict  # pydantic reads these on 3.11 only from typing_extensions

from agents.decide.explain import Explanation
from agents.writing.writer import Brief, Draft
from tools.context import RunContext
from tools.schemas import Candidates, EligibleOffers, OfferChoice, ProfileView

if TYPE_CHECKING:
    from agents.services import Services
    from policies.pii import KnownValues, Vault
    from retrieval.embedder import Ahead


class DecideInput(TypedDict):
    """What a caller gives the graph; the subject and channel travel in the context."""

    query: str | None
    k: int
    context: dict[str, str]


class DecideState(DecideInput, total=False):
    query_redacted: str | None
    context_redacted: dict[str, str]
    profile: ProfileView
    candidates: Candidates
    offers: EligibleOffers
    choice: OfferChoice | None
    shadow: dict[str, Any]
    arm: dict[str, Any]  # the person's experiment arm, and the challenger's view on live ones
    brief: Brief
    draft: Draft
    writer: str
    prompt_version: str
    attempts: int
    feedback: str | None
    use_offline: bool
    retry: bool
    guard_problems: list[str]
    explanation: Explanation
    record: dict[str, Any]
    degraded: Annotated[list[str], operator.add]


class DecideOutput(TypedDict, total=False):
    """What the graph gives its caller (`agents.decide.run`): LangGraph reads only these channels
    to hand back the state, and emits the state only after a step that changed one of them."""

    profile: ProfileView
    candidates: Candidates
    offers: EligibleOffers
    choice: OfferChoice | None
    draft: Draft
    writer: str
    explanation: Explanation
    record: dict[str, Any]


@dataclass
class DecideContext:
    """Per-request runtime context: the services, the tool context and the request's PII vault."""

    services: Services
    run: RunContext
    vault: Vault
    known: KnownValues
    decision_id: str
    query_ahead: Ahead | None = None
    """The query's vector begun before the PII scan (`CachedEmbedder.embed_ahead`), if any."""
