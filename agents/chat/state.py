"""State and runtime context of the chat graph.

The state holds the conversation and is checkpointed per thread (`agents.chat.memory`),
pseudonymized and minimized. The raw message, the vault and this turn's tool results live in the
runtime context, never in a checkpoint.
"""

from __future__ import annotations

import operator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Annotated, Any, Literal

from typing_extensions import TypedDict

from agents.chat.tools import CatalogNames, Turn
from agents.decide.explain import Explanation
from agents.llm.client import LLMClient
from agents.privacy.minimize import Minimizer
from tools.context import RunContext
from tools.profile import lookup_profile

if TYPE_CHECKING:
    from agents.services import Services
    from policies.pii import KnownValues, Vault

# Placeholders that may be turned back into the person's own value in what they are shown.
REVEALABLE = {"FIRST_NAME"}

Route = Literal["agent", "tools", "guard_output", "plan", "finish"]


class ChatInput(TypedDict):
    """What a caller gives the graph; the message, subject and deadline travel in the context."""

    k: int


class ChatState(ChatInput, total=False):
    messages: Annotated[list[dict[str, Any]], operator.add]  # the conversation, pseudonymized
    route: Route
    pending: list[dict[str, Any]]  # tool calls of the model's last message
    model_calls: int
    draft: str | None  # the model's reply, before the output guard
    reply: str  # the reply as shown, pseudonymized
    memory: dict[str, Any]  # the last turn's search and items, for follow-ups (`followup.py`)


@dataclass
class ChatContext:
    """One turn's runtime context: services, the bound subject, the raw message and its vault,
    the deadline, and what the tools returned."""

    services: Services
    run: RunContext
    vault: Vault
    known: KnownValues
    decision_id: str
    thread_id: str
    message: str  # raw: pseudonymized by guard_input, never written into the state
    llm: LLMClient | None
    llm_deadline: float  # monotonic; the model's last moment, leaving time for the plan
    catalog: CatalogNames
    turn: Turn
    degraded: list[str] = field(default_factory=list)
    writer: str = "offline"
    prompt_version: str | None = None
    shown_items: list[str] = field(default_factory=list)
    shown_offer: str | None = None
    streamed: bool = False
    record: dict[str, Any] = field(default_factory=dict)
    minimizer: Minimizer = field(default_factory=Minimizer)  # of this turn's message
    reply: str = ""  # as shown (pseudonymized); the checkpoint keeps it minimized
    explanation: Explanation | None = None  # as shown; the record keeps it compact
    searched: str | None = None  # the query this turn's items answer (a follow-up: the last one)

    @property
    def revealable(self) -> set[str]:
        return REVEALABLE if lookup_profile(self.run).personalized else set()
