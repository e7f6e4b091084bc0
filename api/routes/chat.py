"""POST /v1/chat: one turn of a conversation, streamed as server-sent events or answered as JSON.

Events, in order: `tool` (`{"name", "arguments", "status"}`, arguments redacted) and `token`
(`{"text"}`) as they happen, `reset` (`{"reason"}`) when tokens already sent are withdrawn
because the model's reply was replaced, then one `final` (the `ChatOut` object) or one `error`.
"""

from __future__ import annotations

import asyncio
import json
import logging
import threading
from collections.abc import AsyncIterator
from typing import Any

from fastapi import APIRouter
from fastapi.responses import StreamingResponse
from starlette.concurrency import run_in_threadpool

from agents.chat.turn import ChatReply, ChatRequest, chat_turn
from agents.privacy.rights import refuse_erased
from agents.services import Services
from api.auth import ChatCaller
from api.deps import ServicesDep
from api.schemas import ChatIn, ChatOut, ItemOut, OfferOut
from store.errors import Conflict

router = APIRouter(prefix="/v1", tags=["chat"])
log = logging.getLogger("attune.api")

_END = None


@router.post(
    "/chat",
    response_model=ChatOut,
    responses={200: {"content": {"text/event-stream": {}}, "description": "SSE when stream"}},
)
async def post_chat(
    body: ChatIn, services: ServicesDep, caller: ChatCaller
) -> ChatOut | StreamingResponse:
    """Talk with the agent: grounded items and an offer, streamed token by token."""
    caller.act_for(
        body.user_id,
        what="a chat with " + ("an anonymous visitor" if body.user_id is None else "this user"),
    )
    await run_in_threadpool(caller.act_for_anonymous, services, body.user_id, body.anonymous_id)
    request = ChatRequest(
        message=body.message,
        channel=body.channel,
        user_id=body.user_id,
        anonymous_id=body.anonymous_id,
        thread_id=body.thread_id,
        k=body.k,
        deadline_s=body.deadline_ms / 1000 if body.deadline_ms else None,
    )
    if not body.stream:
        return chat_out(await run_in_threadpool(chat_turn, services, request))
    await run_in_threadpool(refuse_before_stream, services, request)
    return StreamingResponse(
        _events(services, request),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )


def refuse_before_stream(services: Services, request: ChatRequest) -> None:
    """A stream is answered 200 before its turn runs, and `chat_turn`'s refusal of an erased
    person would reach the client as the stream's `error` event: it is made here first, as a
    409."""
    with services.db.reading() as connection:
        refuse_erased(services, connection, request.user_id, request.anonymous_id)


async def _events(services: Services, request: ChatRequest) -> AsyncIterator[bytes]:
    async for event, raw in relay(services, request):
        data = chat_out(raw).model_dump(mode="json") if event == "final" else raw
        yield f"event: {event}\ndata: {json.dumps(data, ensure_ascii=False)}\n\n".encode()


async def relay(services: Services, request: ChatRequest) -> AsyncIterator[tuple[str, Any]]:
    """Run the turn on its own thread and relay its events as they come: `tool`, `token` and
    `reset` as they happen, then `final` (the `ChatReply`) or `error`."""
    loop = asyncio.get_running_loop()
    events: asyncio.Queue[tuple[str, Any] | None] = asyncio.Queue()

    def emit(event: str, data: Any) -> None:
        loop.call_soon_threadsafe(events.put_nowait, (event, data))

    def work() -> None:
        try:
            emit("final", chat_turn(services, request, emit=emit))
        except Conflict as error:  # the request's fault, not ours: as the 409 it would be
            emit("error", {"title": "Conflict", "status": 409, "detail": str(error)})
        except Exception:  # reported to the client as an `error` event, and logged
            log.exception("chat turn failed")
            emit("error", {"title": "Internal error", "detail": "the chat turn failed; logged"})
        finally:
            loop.call_soon_threadsafe(events.put_nowait, _END)

    # A thread of its own: the turn runs to its end (and is logged) even if the client leaves.
    threading.Thread(target=work, name="chat-turn", daemon=True).start()
    while (item := await events.get()) is not _END:
        event, data = item
        yield event, data


def chat_out(reply: ChatReply) -> ChatOut:
    return ChatOut(
        decision_id=reply.decision_id,
        thread_id=reply.thread_id,
        items=[ItemOut.of(c) for c in reply.items],
        offer=OfferOut.of(reply.offer, reply.choice),
        explanation=reply.explanation,
        reply=reply.reply,
        degraded=reply.degraded,
    )
