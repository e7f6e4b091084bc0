"""The reward sweep: decisions whose attribution window has closed get their reward, without
anyone asking. The API process runs it (with its copy jobs) and so does `attune worker`; reads of
the experiment report settle first too. Several sweepers at once reward each decision once
(`tools.rewards`)."""

from __future__ import annotations

import logging
import threading
from datetime import UTC, datetime

from agents.services import Services
from tools.rewards import Rewarder, Settled

log = logging.getLogger("attune.rewards")


def rewarder(services: Services, *, observe: bool = True) -> Rewarder:
    """The rewarder of these services' live policy and its challenger; `observe`: count each
    reward in the `attune_bandit_rewards` metric (the feedback route counts its own)."""
    metric = services.metrics.rewards
    return Rewarder(
        services.policy,
        services.tools.challenger_policy,
        observe=(lambda policy, reward: metric.labels(policy=policy).observe(reward))
        if observe
        else (lambda policy, reward: None),
    )


def settle(services: Services, now: datetime | None = None) -> int:
    """Reward every decision whose window closed by `now` (default: this instant); how many."""
    now = now or datetime.now(UTC)
    total = 0
    while True:
        done = _settle_batch(services, now)
        total += done.rewarded
        if done.closed == 0:
            return total


def _settle_batch(services: Services, now: datetime) -> Settled:
    """One batch in one transaction. On SQLite two sweepers that both read before writing make
    one of them fail with 'database is locked' at once (busy_timeout cannot help a read lock
    that must become a write lock); its transaction rolled back whole, so it runs again
    (`Database.transaction`)."""
    return services.db.transaction(lambda session: rewarder(services).settle_due(session, now))


class RewardSweeper:
    """A thread that settles closed windows every `interval_s` seconds until closed."""

    def __init__(self, services: Services, interval_s: float) -> None:
        self._services = services
        self._interval = interval_s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="reward-sweep", daemon=True)
        self._thread.start()

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=10)

    def _run(self) -> None:
        while not self._stop.wait(self._interval):
            try:
                rewarded = settle(self._services)
            except Exception:  # the sweep must outlive a busy or briefly missing database
                log.exception("reward sweep failed; retrying in %.0f s", self._interval)
                continue
            if rewarded:
                log.info("reward sweep: %d decisions rewarded as their windows closed", rewarded)
