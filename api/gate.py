"""A first-come, first-served gate for work that holds the CPU: decisions, ranks, similar items.

A decision made on the event loop (the offline writer: a few milliseconds of Python that never
waits on the network) blocks the loop while it runs. Left to itself, the loop runs every request
it read in one poll back to back before it polls its sockets again: a request that arrives during
such a batch is not even read until the batch is done, new connections are not accepted, and a
request's wait depends on which batch it fell into rather than on when it came. Measured at 32
connections (machine load ~10), some requests waited seconds while the median waited a third of a
second, and connections opened at once had their first request answered after up to 13 s.

Through a gate of width one, decisions run one at a time in the order their requests reached it,
and the slot passes to the next request only on the loop's next turn, after it has polled its
sockets: every request is read, and takes its place in the queue, within one decision of its
arrival. A wider gate bounds how many holders run at once, in the same order (for work in worker
threads); decisions with an LLM writer, which run in worker threads, do not go through one yet.

`POST /v1/rank` and `GET /v1/catalog/items/{id}/similar` are the same kind of work (a few
milliseconds of Python, SQL and a vector search, bounded by their requests' limits, nothing to
wait for) and take their turns through the same gate, on the loop (`in_turn`). In worker threads,
as they ran before, they competed for the GIL with the decision running on the loop, each
preempting the other every switch interval. Measured side by side against the threaded
checkout (`bench/mixed_load.py`, 3 x 10 s, keys on): alone at 8 connections, ranks 1.58x the
requests per second with 0.44x the p99 and 0.53x the server's CPU per request, similar items
1.74x, 0.37x and 0.50x; at 4 connections each beside decisions, the server's CPU per request
0.89x (with ranks) and 0.85x (with similar items), decisions 1.01x / 1.22x the requests per
second with 1.04x / 0.77x the p99.

Event batches (`POST /v1/events`) take their turns too: a batch of up to 16 events on the loop,
a longer one (up to 1,000 events, a quarter of a second), or any on PostgreSQL (where storing
can wait for another process's lock on a person's feature row), in a worker thread (`in_thread`)
that holds the slot until it is done, so that no decision or other batch runs beside it while the
loop goes on reading requests. In worker threads side by side, batches contended for SQLite's
one write lock. Measured as above (5 x 10 s, batches of 1 to 5 events): alone at 8 connections,
1.72x the requests per second with 0.06x the p99 (38.9 against 654.9 ms) and 0.53x the CPU per
request; at 4 connections each beside decisions, decisions 1.08x the requests per second with
0.90x the p99, events 1.36x with 0.72x, the server's CPU per request 0.81x. Rewards
(`POST /v1/feedback`) likewise, always in a worker thread (on PostgreSQL a reward can wait for
another process's lock on its arm's row): alone, 1.13x the requests per second with 0.06x the
p99 (31.9 against 559.4 ms) and 0.83x the CPU per request; rank rewards and activations too
(rank rewards alone: 1.01x, p99 0.05x, CPU 0.89x).
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable
from types import TracebackType
from typing import TypeVar

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request

T = TypeVar("T")


class Gate:
    """At most `width` holders at once; the others wait in arrival order (FIFO), and a freed
    slot goes to the longest waiter, never to a request that arrives meanwhile."""

    def __init__(self, width: int = 1) -> None:
        if width < 1:
            raise ValueError(f"a gate needs a width of at least 1, not {width}")
        self.width = width
        self._free = width
        self._waiting: deque[asyncio.Future[None]] = deque()

    @property
    def waiting(self) -> int:
        """How many requests wait for a slot."""
        return sum(not future.done() for future in self._waiting)

    async def __aenter__(self) -> None:
        if self._free and not self._waiting:
            self._free -= 1
            return
        future = asyncio.get_running_loop().create_future()
        self._waiting.append(future)
        try:
            await future
        except asyncio.CancelledError:
            if future.done() and not future.cancelled():
                self._hand_on()  # the slot was handed over as the request was cancelled
            else:
                self._waiting.remove(future)
            raise

    async def __aexit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        trace: TracebackType | None,
    ) -> None:
        # Not at once: the slot is handed on at the loop's next turn, after it has polled its
        # sockets, so that requests read meanwhile queue behind the ones already waiting.
        asyncio.get_running_loop().call_soon(self._hand_on)

    def _hand_on(self) -> None:
        while self._waiting:
            future = self._waiting.popleft()
            if not future.done():
                future.set_result(None)
                return
        self._free += 1


async def in_turn(
    request: Request, work: Callable[..., T], *args: object, in_thread: bool = False
) -> T:
    """`work(*args)` run once its turn comes through the app's CPU gate (`app.state.cpu_gate`):
    on the event loop, for a route's synchronous work that holds the CPU for a few milliseconds
    and never waits on the network; `in_thread`, in a worker thread, for work too long to hold
    the loop that must still not run beside the others (the loop stays free to read and accept
    meanwhile; the slot is held until the thread is done, even if the request is cancelled)."""
    gate: Gate = request.app.state.cpu_gate
    async with gate:
        if in_thread:
            return await run_in_threadpool(work, *args)
        return work(*args)
