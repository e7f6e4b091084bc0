"""POST /v1/chat/completions: the chat of POST /v1/chat as OpenAI's Chat Completions API, so
that the `openai` SDK and existing chat UIs talk to Attune unchanged.

The same chat graph answers, with the same guards: the last user message is this turn's message
(earlier ones are the client's copy of the conversation; the thread in `metadata.thread_id`
holds Attune's own, pseudonymized). The person is the key's, for a key bound to one; otherwise
`user` (a user id) or `metadata.anonymous_id` names them. A bound key cannot name anyone else.

Streaming sends `chat.completion.chunk`s and `data: [DONE]`. OpenAI's protocol cannot withdraw
text already sent, and Attune withdraws a model's reply that its output guard rejects, so while
a model may be answering the tokens are held until the reply passed the guard; the offline plan's
tokens, which nothing withdraws, go out as they are written.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

from fastapi import APIRouter, HTTPException
from fastapi.exceptions import RequestValidationError
from fastapi.responses import StreamingResponse
from starlette.concurrency import run_in_threadpool

from agents.chat.turn import ChatReply, ChatRequest, chat_turn
from agents.services import Services
from api.auth import Caller, ChatCaller
from api.deps import ServicesDep
from api.openai_schemas import (
    MAX_MESSAGE,
    MODEL,
    AssistantMessage,
    ChatCompletionIn,
    ChatCompletionOut,
    Choice,
    CompletionUsage,
    chunk,
)
from api.routes.chat import chat_out, refuse_before_stream, relay

router = APIRouter(prefix="/v1", tags=["openai"])


@router.post(
    "/chat/completions",
    response_model=ChatCompletionOut,
    responses={200: {"content": {"text/event-stream": {}}, "description": "SSE when stream"}},
)
async def chat_completions(
    body: ChatCompletionIn, services: ServicesDep, caller: ChatCaller
) -> ChatCompletionOut | StreamingResponse:
    """OpenAI-compatible chat: the agent's grounded answer, streamed as chunks or whole."""
    request = await run_in_threadpool(turn_request, body, services, caller)
    created = int(time.time())
    if not body.stream:
        reply = await run_in_threadpool(chat_turn, services, request)
        return completion(reply, created)
    await run_in_threadpool(refuse_before_stream, services, request)
    return StreamingResponse(
        _chunks(services, request, created),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )


def turn_request(body: ChatCompletionIn, services: Services, caller: Caller) -> ChatRequest:
    """The chat turn a request asks for, with its person bound; 403/422 naming the field."""
    bound = caller.bound_user
    if bound is not None and body.user not in (None, bound):
        raise HTTPException(
            403, f"user: this API key acts for user {bound!r} only; leave `user` out or send it"
        )
    user_id = bound or body.user
    anonymous_id = body.metadata.anonymous_id
    if user_id is None and anonymous_id is None:
        _invalid(
            ("user",),
            "name the person: `user` (a user id) or `metadata.anonymous_id`, or use an API key "
            "bound to them",
        )
    caller.act_for_anonymous(services, user_id, anonymous_id)
    last = len(body.messages) - 1
    if body.messages[last].role != "user":
        _invalid(("messages", last, "role"), "the last message must be the user's")
    message = body.messages[last].text.strip()
    if not message or len(message) > MAX_MESSAGE:
        _invalid(
            ("messages", last, "content"), f"the user's message must be 1 to {MAX_MESSAGE} chars"
        )
    return ChatRequest(
        message=message,
        channel=body.metadata.channel,
        user_id=user_id,
        anonymous_id=anonymous_id,
        thread_id=body.metadata.thread_id,
    )


def _invalid(loc: tuple[str | int, ...], problem: str) -> None:
    raise RequestValidationError([{"loc": ("body", *loc), "msg": problem, "type": "value_error"}])


def completion(reply: ChatReply, created: int) -> ChatCompletionOut:
    return ChatCompletionOut(
        id=f"chatcmpl-{reply.decision_id}",
        created=created,
        model=MODEL,
        choices=[Choice(message=AssistantMessage(content=reply.reply))],
        usage=CompletionUsage(
            prompt_tokens=reply.usage.prompt_tokens,
            completion_tokens=reply.usage.completion_tokens,
            total_tokens=reply.usage.total_tokens,
        ),
        attune=chat_out(reply),
    )


async def _chunks(services: Services, request: ChatRequest, created: int) -> AsyncIterator[bytes]:
    # The decision's id is known only at the end: the last chunk carries it in `attune`.
    completion_id = f"chatcmpl-{uuid.uuid4().hex}"
    yield _sse(chunk(completion_id, created, {"role": "assistant", "content": ""}))
    held: list[str] | None = [] if services.llm is not None else None
    async for event, data in relay(services, request):
        if event == "token":
            if held is None:
                yield _sse(chunk(completion_id, created, {"content": data["text"]}))
            else:
                held.append(data["text"])
        elif event == "reset":
            held = None  # the model's words are withdrawn; the offline plan's follow
        elif event == "final":
            if held:
                yield _sse(chunk(completion_id, created, {"content": "".join(held)}))
            extra = {"attune": chat_out(data).model_dump(mode="json")}
            yield _sse(chunk(completion_id, created, {}, finish_reason="stop", extra=extra))
        elif event == "error":
            kind = "invalid_request_error" if data.get("status") == 409 else "server_error"
            yield _sse({"error": {"message": data["detail"], "type": kind}})
    yield b"data: [DONE]\n\n"


def _sse(data: dict[str, Any]) -> bytes:
    return f"data: {json.dumps(data, ensure_ascii=False)}\n\n".encode()
