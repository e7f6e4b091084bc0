"""Acting on drift in the service: check the monitors, record the result, and retrain.

The monitors themselves are `agents.drift`; this module runs them for a `Services` (gauges, a log
line per crossed threshold, the report `/healthz` reads) and trains when asked to.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import asdict
from datetime import UTC, datetime
from typing import Any

from sqlalchemy.exc import SQLAlchemyError

from agents.drift import DriftReport, check_drift, mark_reference
from agents.predictions import train_predictions
from agents.services import Services, collab_folder, itemitem_folder, itemitem_params
from retrieval.collab import train
from retrieval.sequence import ItemItemModel, fit_from_store

log = logging.getLogger("attune.drift")


def check(services: Services, *, retrain: bool | None = None) -> DriftReport:
    """Check every monitor, record the result (gauges, log, `/healthz`), and retrain when a
    threshold is crossed and `retrain` (by default `drift_retrain`) says so."""
    settings = services.settings
    retrain = settings.drift_retrain if retrain is None else retrain
    with services.drift.lock:
        report = check_drift(settings, services.db)
        for m in report.monitors:
            services.metrics.drift_statistic.labels(monitor=m.monitor, name=m.name).set(
                m.statistic if m.statistic is not None else float("nan")
            )
        for kind in ("input", "outcome", "catalog"):
            crossed = any(m.breached for m in report.monitors if m.monitor == kind)
            services.metrics.drift_breached.labels(monitor=kind).set(1 if crossed else 0)
        for m in report.breached:
            log.warning(
                "drift: %s monitor %s at %.4f is above its threshold %.4f",
                m.monitor, m.name, m.statistic, m.threshold,
            )  # fmt: skip
        if report.breached and retrain:
            report.retrained = retrain_services(services)
            services.metrics.drift_retrains.inc()
        services.drift.last = report
    return report


def retrain_services(services: Services, *, full: bool = False) -> dict[str, Any]:
    """`attune train` in this process: the collaborative model (incremental unless `full`), the
    item-item re-ranking model (`fit_itemitem`) and the predictions; the process then serves the new models, and
    the drift windows start again."""
    consent = services.policy.purpose_for("profiling")
    out: dict[str, Any] = {}
    try:
        collab = train(
            services.db, services.index, collab_folder(services.settings), full=full,
            consent=consent,
        )  # fmt: skip
        out["collab"] = asdict(collab)
    except ValueError as error:  # no interactions to learn from yet
        out["collab"] = {"mode": "skipped", "reason": str(error)}
    services.reload_collab()
    if services.tools.collab is not None:
        out["collab_version"] = services.tools.collab.version
    out["itemitem_items"] = len(fit_itemitem(services).item_ids)
    now = datetime.now(UTC)
    predictions = train_predictions(services.db, consent=consent, now=now)
    out["predictions"] = asdict(predictions) if predictions else None
    mark_reference(services.settings, services.db, now)
    log.info("retrained: collab %s, predictions %s", out.get("collab_version"),
             predictions.version if predictions else None)  # fmt: skip
    return out


def fit_itemitem(services: Services) -> ItemItemModel:
    """Fit the item-item re-ranking model from the event store (people who granted profiling)
    with the settings' parameters, save it, and serve it from now on in this process."""
    settings = services.settings
    model = fit_from_store(
        services.db,
        itemitem_folder(settings),
        itemitem_params(settings),
        consent=services.policy.purpose_for("profiling"),
    )
    services.reload_itemitem()
    log.info("item-item model fitted: %s items, %s", len(model.item_ids), model.version)
    return model


class DriftLoop:
    """Checks drift every `drift_check_seconds` in a daemon thread of the API process."""

    def __init__(self, services: Services) -> None:
        self._services = services
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="attune-drift", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(self._services.settings.drift_check_seconds):
            try:
                check(self._services)
            except (SQLAlchemyError, OSError, ValueError):  # the next check tries again
                log.exception("drift check failed")

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
