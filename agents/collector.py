"""The garbage collector, set for a process that makes decisions one after another.

CPython collects when the count of container objects allocated (less those freed) since its
last collection passes a threshold (700 by default), wherever the program is: in the server
about once a decision, in the middle of one. Such a collection finds the running decision's
objects, and the requests waiting behind it, alive and moves them to an older generation; once
enough have been moved there, a full collection walks every object not frozen at start-up.
Measured in the server at 8 connections (`bench/http_load.py`'s load, 3,000 decisions): a full
collection every 150-200 decisions, 10-23 ms each (the walk's cost is the 130k references
of the ~29k objects made after start-up, caches mostly, not garbage: it found none), every
request in line waiting through it; collections took 0.26 ms a decision in all.

So collections come between decisions: `collect_young` at the end of
`agents.decide.run.decide` collects the two younger generations (0.07 ms), and `settle` raises
the threshold of the collections triggered by allocations (`YOUNG_THRESHOLD`) well above what a
decision allocates, so that they no longer come in the middle of one. A collection asked for
never starts a full one, so `collect_young` runs a full collection itself every `FULL_EVERY`
young ones: garbage that reached the oldest generation is still freed, and the pause it takes
comes once every few seconds of load rather than several times a second. Work that is not a
decision (events, ranking, chat) is collected by allocations, as before, past the higher
threshold.
"""

from __future__ import annotations

import gc

# New container objects that trigger a collection of the youngest generation. CPython's default
# of 700 was reached about 0.8 times a decision in the server (so a decision's net allocations
# are some hundreds); the older generations keep CPython's thresholds.
YOUNG_THRESHOLD = 10_000
# Young collections (decisions) between two full ones.
FULL_EVERY = 2_000


def settle() -> None:
    """Move everything built at start-up out of the garbage collector's sight, and collect as a
    process making decisions should (the module docstring).

    The services hold hundreds of thousands of long-lived objects (models, recognizers, the
    graph); without the freeze every full collection on the request path walks them all again.
    """
    gc.collect()
    gc.freeze()
    tune()


def tune() -> None:
    """Collections triggered by allocations only past `YOUNG_THRESHOLD` new objects."""
    _, older, oldest = gc.get_threshold()
    gc.set_threshold(YOUNG_THRESHOLD, older, oldest)


def collect_young() -> None:
    """Collect the two younger generations (after a decision), and all three every
    `FULL_EVERY` times. Nothing when the collector is off (a profiler, a test turned it off)."""
    if not gc.isenabled():
        return
    # CPython counts the collections of the younger generations since the last full one.
    gc.collect(2 if gc.get_count()[2] >= FULL_EVERY else 1)
