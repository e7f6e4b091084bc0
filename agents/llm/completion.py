"""What a call to the model returns: a `Completion` with its token `Usage`, or, streamed, its
events (`TextDelta`, `ToolCallReady`, `StreamEnd`)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, ConfigDict

Message = dict[str, Any]


class Usage(BaseModel):
    """Tokens spent by one or more calls; `+` sums them (the model of the first call is kept)."""

    model_config = ConfigDict(frozen=True)

    prompt_tokens: int = 0
    completion_tokens: int = 0
    total_tokens: int = 0
    calls: int = 0
    model: str | None = None

    def __add__(self, other: Usage) -> Usage:
        return Usage(
            prompt_tokens=self.prompt_tokens + other.prompt_tokens,
            completion_tokens=self.completion_tokens + other.completion_tokens,
            total_tokens=self.total_tokens + other.total_tokens,
            calls=self.calls + other.calls,
            model=self.model or other.model,
        )


@dataclass(frozen=True)
class ToolCall:
    """A tool call as the model wrote it; `arguments` is its raw JSON text, unvalidated."""

    id: str
    name: str
    arguments: str

    def message(self) -> dict[str, Any]:
        """The call as it appears in an assistant message sent back to the model."""
        return {
            "id": self.id,
            "type": "function",
            "function": {"name": self.name, "arguments": self.arguments},
        }


@dataclass(frozen=True)
class Completion:
    text: str
    tool_calls: tuple[ToolCall, ...]
    usage: Usage
    finish_reason: str | None = None
    parsed: BaseModel | None = None  # the structured output, when a pydantic model was asked for


@dataclass(frozen=True)
class TextDelta:
    """A piece of the reply's text, as soon as it arrives."""

    text: str


@dataclass(frozen=True)
class ToolCallReady:
    """A tool call whose streamed pieces are all in."""

    call: ToolCall


@dataclass(frozen=True)
class StreamEnd:
    """The last event of a stream: the whole completion, with its usage."""

    completion: Completion


StreamEvent = TextDelta | ToolCallReady | StreamEnd
