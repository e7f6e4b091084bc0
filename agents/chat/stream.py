"""What a chat turn streams through LangGraph's custom stream: `token` events, re-identified as
far as consent allows, and a `tool` event per tool call (its arguments redacted)."""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

from langgraph.runtime import Runtime

from agents.chat.state import ChatContext
from agents.chat.tools import Outcome, run_tool

if TYPE_CHECKING:
    from policies.pii import Vault


class Reidentifier:
    """Puts the allowed placeholders back into streamed text. A piece that ends inside what may
    still become a placeholder ("<FIRST_NA") is held back until the next piece completes it."""

    _OPEN = re.compile(r"<[A-Z0-9_]{0,40}$")

    def __init__(self, vault: Vault, allowed: set[str]) -> None:
        self._vault = vault
        self._allowed = allowed
        self._held = ""

    def feed(self, text: str) -> str:
        text = self._held + text
        held = self._OPEN.search(text)
        self._held = held.group(0) if held else ""
        return self._vault.reveal(text[: held.start()] if held else text, self._allowed)

    def flush(self) -> str:
        text, self._held = self._held, ""
        return text


def call_tool(
    runtime: Runtime[ChatContext], ctx: ChatContext, name: str, arguments: str
) -> Outcome:
    def redact(text: str) -> str:
        return ctx.services.pii.pseudonymize(text, known=ctx.known, vault=ctx.vault).text

    outcome = run_tool(ctx.turn, name, arguments, redact=redact)
    ctx.turn.calls.append(outcome.event())
    runtime.stream_writer({"event": "tool", "data": outcome.event()})
    return outcome


def send_token(runtime: Runtime[ChatContext], ctx: ChatContext, text: str) -> None:
    if text:
        ctx.streamed = True
        runtime.stream_writer({"event": "token", "data": {"text": text}})
