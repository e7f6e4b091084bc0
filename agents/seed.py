"""Loading the demo world (or any folder in its format) into the store and the vector index.

Seeding is idempotent: a marker in the home folder records the hash of the files loaded, and a
second run with the same files and a complete index does nothing, so changes made through the API
since (consent, new items) survive a restart.
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

from agents.factory import Services, collab_folder
from retrieval.catalog import ingest_items
from retrieval.collab import train
from store.catalog import count_items, refresh_popularity, upsert_offers
from store.events import ingest_events
from store.schemas import Event, Item, Offer, UserRecord
from store.users import upsert_user

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
    if not force and marker.is_file():
        previous = json.loads(marker.read_text())
        with services.db.session() as session:
            stored = count_items(session)
        # Items added since (through the API) are kept; a store and index that disagree are not.
        complete = stored >= previous["items"] and services.index.count() == stored
        if previous.get("fingerprint") == stamp and complete:
            log.info("demo world already loaded (%s); nothing to do", stamp)
            return SeedReport(**{**previous, "skipped": True})

    items = ingest_items(
        services.db, services.embedder, services.index, read_jsonl(folder / "items.jsonl", Item)
    )
    with services.db.session() as session:
        offers = upsert_offers(session, read_jsonl(folder / "offers.jsonl", Offer))
        users = 0
        for record in read_jsonl(folder / "users.jsonl", UserRecord):
            upsert_user(session, record)
            users += 1
    with services.db.session() as session:
        events = ingest_events(session, list(read_jsonl(folder / "events.jsonl", Event)))
        refresh_popularity(session)
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
    optimize = getattr(services.index, "optimize", None)
    if optimize is not None:
        optimize()
    report = SeedReport(False, items, offers, users, len(events), stamp)
    marker.write_text(json.dumps(asdict(report)))
    log.info("loaded %s", asdict(report))
    return report
