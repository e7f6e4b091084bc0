"""Schemas of the OpenAI-compatible chat (`POST /v1/chat/completions`): what the `openai` SDK and
chat UIs send and read. Fields Attune has no use for (temperature, top_p, ...) are accepted and
ignored, so that an existing client works unchanged; Attune's own answer (items, offer,
explanation, decision id) travels in an extra `attune` field."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from api.schemas import ChatOut
from store.schemas import Channel, Identifier

MODEL = "attune"  # the model name Attune answers as, whatever the request names
MAX_MESSAGE = 2000  # characters of the last user message, as POST /v1/chat allows


class TextPart(BaseModel):
    model_config = ConfigDict(extra="ignore")

    type: str
    text: str | None = None


class Message(BaseModel):
    model_config = ConfigDict(extra="ignore")

    role: Literal["system", "developer", "user", "assistant", "tool", "function"]
    content: str | list[TextPart] | None = None

    @property
    def text(self) -> str:
        if isinstance(self.content, list):
            return "".join(part.text or "" for part in self.content if part.type == "text")
        return self.content or ""


class AttuneMetadata(BaseModel):
    """`metadata` of a request: where the turn happens and whose anonymous session it is."""

    model_config = ConfigDict(extra="ignore")

    anonymous_id: Identifier | None = None
    thread_id: str | None = Field(
        None,
        pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$",
        description="The conversation to continue; omitted: a new one.",
    )
    channel: Channel = Channel.web


class ChatCompletionIn(BaseModel):
    model_config = ConfigDict(extra="ignore")

    model: str = Field(MODEL, max_length=200, description="Any name; Attune answers as 'attune'.")
    messages: list[Message] = Field(
        min_length=1, max_length=200, description="The last user message is this turn's."
    )
    stream: bool = False
    user: Identifier | None = Field(
        None,
        description="The person (a user id). A key bound to a person speaks for that person "
        "only: leave it out, or send that person's id.",
    )
    metadata: AttuneMetadata = Field(default_factory=AttuneMetadata)


class AssistantMessage(BaseModel):
    role: Literal["assistant"] = "assistant"
    content: str


class Choice(BaseModel):
    index: int = 0
    message: AssistantMessage
    finish_reason: Literal["stop"] = "stop"


class CompletionUsage(BaseModel):
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int


class ChatCompletionOut(BaseModel):
    id: str = Field(description="chatcmpl-<decision id>.")
    object: Literal["chat.completion"] = "chat.completion"
    created: int
    model: str
    choices: list[Choice]
    usage: CompletionUsage = Field(description="Tokens the LLM spent; zeros for the offline plan.")
    attune: ChatOut = Field(description="Attune's answer: items, offer, explanation, decision id.")


def chunk(
    completion_id: str,
    created: int,
    delta: dict[str, Any],
    *,
    finish_reason: str | None = None,
    extra: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """One `chat.completion.chunk` of a streamed answer."""
    return {
        "id": completion_id,
        "object": "chat.completion.chunk",
        "created": created,
        "model": MODEL,
        "choices": [{"index": 0, "delta": delta, "finish_reason": finish_reason}],
        **(extra or {}),
    }
