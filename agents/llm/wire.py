"""The shape of an OpenAI-compatible reply, as far as Attune reads it, checked before use.

The `openai` SDK builds its response objects without validating them: a server that sends a
string where a list belongs, or `"prompt_tokens": "many"`, yields objects whose fields hold
whatever came over the wire. Every reply and every streamed chunk is therefore validated here
against the few fields Attune uses (everything else is ignored, so servers that omit or add
fields still work); a mismatch is a `pydantic.ValidationError`, which the client turns into
`MalformedReply` and counts against the server.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field


class _Wire(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)


class WireUsage(_Wire):
    prompt_tokens: int | None = Field(default=None, ge=0)
    completion_tokens: int | None = Field(default=None, ge=0)
    total_tokens: int | None = Field(default=None, ge=0)


class WireFunction(_Wire):
    name: str | None = None
    arguments: str | None = None


class WireToolCall(_Wire):
    index: int = Field(default=0, ge=0, le=127)
    id: str | None = None
    type: str | None = None
    function: WireFunction | None = None


class WireMessage(_Wire):
    """A whole message (`message`) or a streamed piece of one (`delta`)."""

    content: str | None = None
    tool_calls: list[WireToolCall] | None = None


class WireChoice(_Wire):
    message: WireMessage | None = None
    delta: WireMessage | None = None
    finish_reason: str | None = None


class WireReply(_Wire):
    """A `chat.completion` or one `chat.completion.chunk`."""

    choices: list[WireChoice] | None = None  # None in some servers' last (usage) chunk
    usage: WireUsage | None = None


def parse_reply(response: Any) -> WireReply:
    """The SDK's response object (or chunk), validated; raises `pydantic.ValidationError`, or
    `TypeError` when the body was not a JSON object at all."""
    if not isinstance(response, BaseModel):
        raise TypeError(f"the reply is a {type(response).__name__}, not a JSON object")
    # `warnings=False`: fields of the wrong type are dumped as they came, and judged below.
    return WireReply.model_validate(response.model_dump(warnings=False))
