"""Loading the demo world (or any folder in its format) into the store and the vector index.

The demo world is loaded only into an empty store (no users, items or events): a store that
holds anything is left as it is, so changes made since through the API (consent, erasure, new
items) survive every restart. `force` loads the files into a non-empty store too, but only adds:
items and offers are upserted, people already stored keep their profile and consent, and
nobody erased comes back (their tombstones refuse their records and events). A missing or
empty vector index is rebuilt from the store (`agents.reindex`), never by seeding again.
Seeding trains what the service serves from the store: the collaborative vectors and the
item-item re-ranking model (`agents.retrain.fit_itemitem`).
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TypeVar

from pydantic import BaseModel
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from agents.privacy.rights import erased_among
from agents.retrain import fit_itemitem
from agents.services import Services, collab_folder
from retrieval.catalog import ingest_items
from retrieval.collab import train
from store.catalog import refresh_popularity, upsert_offers
from store.events import ingest_events
from store.models import CatalogItem, EventRow, User
from store.schemas import Event, Item, Offer, UserRecord
from store.users import upsert_user, user_exists

log = logging.getLogger("attune.seed")
FILES = ("items.jsonl", "offers.jsonl", "users.jsonl", "events.jsonl")
M = TypeVar("M", bound=BaseModel)


@dataclass(frozen=True)
class SeedReport:
    skipped: bool
    items: int
    offers: int
    users: int
    events: int
    fingerprint: str
    refused_users: int = 0  # erased people in the files, not loaded
    refused_events: int = 0  # their events, not loaded


def read_jsonl(path: Path, model: type[M]) -> Iterator[M]:
    with path.open(encoding="utf-8") as handle:
        for number, line in enumerate(handle, start=1):
            if line.strip():
                try:
                    yield model.model_validate_json(line)
                except ValueError as error:
                    raise ValueError(f"{path}:{number}: {error}") from error


def fingerprint(folder: Path) -> str:
    digest = hashlib.sha256()
    for name in FILES:
        digest.update(name.encode())
        digest.update((folder / name).read_bytes())
    return digest.hexdigest()[:16]


def seed(services: Services, folder: Path, *, force: bool = False) -> SeedReport:
    missing = [name for name in FILES if not (folder / name).is_file()]
    if missing:
        raise FileNotFoundError(f"{folder} lacks {', '.join(missing)}")
    marker = services.settings.home / "seeded.json"
    stamp = fingerprint(folder)
    with services.db.session() as session:
        stored = _stored(session)
    if any(stored.values()) and not force:
        log.info(
            "the store is not empty (%s); the demo world is loaded only into an empty store",
            ", ".join(f"{count} {name}" for name, count in stored.items()),
        )
        previous = json.loads(marker.read_text()) if marker.is_file() else {}
        counts = {name: previous.get(name, 0) for name in ("items", "offers", "users", "events")}
        return SeedReport(skipped=True, fingerprint=stamp, **counts)

    items = ingest_items(
        services.db, services.embedder, services.index, read_jsonl(folder / "items.jsonl", Item)
    )
    records = list(read_jsonl(folder / "users.jsonl", UserRecord))
    events_in = list(read_jsonl(folder / "events.jsonl", Event))
    with services.db.session() as session:
        erased = erased_among(
            services,
            session,
            [r.user_id for r in records] + [e.user_id for e in events_in],
            [e.anonymous_id for e in events_in],
        )
        offers = upsert_offers(session, read_jsonl(folder / "offers.jsonl", Offer))
        users = refused_users = 0
        for record in records:
            if erased.reason(record.user_id, None) is not None:
                refused_users += 1
            elif not user_exists(session, record.user_id):
                upsert_user(session, record)
                users += 1
    allowed = [e for e in events_in if erased.reason(e.user_id, e.anonymous_id) is None]
    with services.db.session() as session:
        events = ingest_events(session, allowed)
        refresh_popularity(session)
    if refused_users or len(allowed) < len(events_in):
        log.info(
            "refused %s erased people and %s of their events", refused_users,
            len(events_in) - len(allowed),
        )  # fmt: skip
    services.tools.offers.invalidate()
    trained = train(
        services.db,
        services.index,
        collab_folder(services.settings),
        full=True,
        consent=services.policy.purpose_for("profiling"),
    )
    services.reload_collab()
    log.info("collaborative vectors: %s users, %s items", trained.users, trained.items)
    fit_itemitem(services)  # the hybrid's re-ranking is served from the first request
    optimize = getattr(services.index, "optimize", None)
    if optimize is not None:
        optimize()
    report = SeedReport(
        False, items, offers, users, len(events), stamp, refused_users,
        len(events_in) - len(allowed),
    )  # fmt: skip
    marker.write_text(json.dumps(asdict(report)))
    log.info("loaded %s", asdict(report))
    return report


def _stored(session: Session) -> dict[str, int]:
    """How many users, items and events the store holds."""
    return {
        name: session.scalar(select(func.count()).select_from(table)) or 0
        for name, table in (("users", User), ("items", CatalogItem), ("events", EventRow))
    }
