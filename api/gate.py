"""A first-come, first-served admission gate for work that holds the CPU (a decision, a rank).

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

`POST /v1/rank` is the same kind of work (a few milliseconds of Python and SQL, bounded by its
body's limits, nothing to wait for) and takes its turns through the same gate, on the loop. In a
worker thread, as it ran before, it competed for the GIL with the decision running on the loop,
each preempting the other every switch interval: measured side by side (`bench/mixed_load.py`,
4 x 10 s, against the threaded checkout), ranks alone at 8 connections 1.40x the requests per
second with 0.49x the p99 and 0.60x the server's CPU per rank; decisions and ranks at 4
connections each 1.26x / 1.31x the requests per second with 0.76x / 0.72x the p99.
"""

from __future__ import annotations

import asyncio
from collections import deque
from types import TracebackType


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
