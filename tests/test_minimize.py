"""Minimization of stored free text: which words are masked, and a vocabulary that follows the
catalog — a change committed by another process is respected by the next request, at the cost
of one single-row read while the catalog stands still."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from sqlalchemy import event

from agents.privacy.minimize import MASK, Minimizer
from agents.privacy.vocabulary import Vocabulary
from store.catalog import catalog_version, upsert_items, upsert_offers
from store.db import Database
from store.schemas import Item, Offer

ROOT = Path(__file__).resolve().parent.parent
KETTLE = Item(item_id="i1", title="Copper kettle", category="kitchen", price=30, tags=["whistling"])
BEANS = Item(item_id="i2", title="Espresso beans", category="coffee_tea", price=12)
OFFER = {
    "offer_id": "o1",
    "title": "Barista week",
    "terms": "Ten percent off grinders",
    "discount_percent": 10,
    "categories": ["coffee_tea"],
    "channels": ["web"],
    "valid_from": "2026-01-01T00:00:00Z",
    "valid_until": "2027-01-01T00:00:00Z",
}


@pytest.fixture
def db(database_url: str) -> Iterator[Database]:
    database = Database(database_url)
    with database.session() as session:
        upsert_items(session, [KETTLE, BEANS])
        upsert_offers(session, [Offer.model_validate(OFFER)])
    yield database
    database.engine.dispose()


@contextmanager
def _statements(db: Database) -> Iterator[list[str]]:
    """The SQL statements `db` executes inside the block."""
    seen: list[str] = []

    def count(_conn: object, _cursor: object, statement: str, *_args: object) -> None:
        seen.append(statement)

    event.listen(db.engine, "before_cursor_execute", count)
    try:
        yield seen
    finally:
        event.remove(db.engine, "before_cursor_execute", count)


def _in_another_process(url: str, code: str) -> None:
    """Runs `code` with `session` open on `url`'s database in a separate Python process."""
    script = textwrap.dedent(
        """
        import sys
        from store.catalog import delete_item, upsert_items, upsert_offers
        from store.db import Database
        from store.schemas import Item, Offer
        db = Database(sys.argv[1])
        with db.session() as session:
        """
    ) + textwrap.indent(textwrap.dedent(code), "    ")
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    subprocess.run([sys.executable, "-c", script, url], cwd=ROOT, check=True, env=env)


@pytest.mark.parametrize(
    "text, masked",
    [
        ("a whistling kettle for the kitchen", set()),
        ("espresso beans for Quillon Vardakis", {"Quillon", "Vardakis"}),
        # A phone number is masked whole and by its parts, but for a short number (890).
        ("call 0123 4567 890 about 12345", {"0123 4567 890", "0123", "4567", "12345"}),
        ("call zeb.quack@example.org, 3 beans", {"zeb.quack@example.org", "zeb", "quack"}),
        ("<PERSON_1> and Barista grinders", set()),  # placeholders and offer words stay
        ("", set()),
    ],
)
def test_a_request_masks_its_words_the_catalog_does_not_know(
    db: Database, text: str, masked: set[str]
) -> None:
    vocabulary = Vocabulary()
    vocabulary.refresh(db)
    minimizer = Minimizer.of([text], vocabulary)
    # "example" and "org" are English words the vocabulary may know; what matters is the rest.
    assert minimizer.tainted - {"example", "org"} == masked
    stored = minimizer.value({"query": text, "echo": [f"Dear {text}!"], "k": 3})
    for word in masked:
        assert word not in stored["query"] and word not in stored["echo"][0]
    assert stored["k"] == 3
    assert (MASK in stored["query"]) == bool(masked)


def test_minimizers_of_the_same_words_mask_alike_and_others_apart() -> None:
    first, again, other = Minimizer(["Vardakis"]), Minimizer(["Vardakis"]), Minimizer(["Quillon"])
    text = "Quillon Vardakis, vardakis@x or Vardakis-Quillon"
    assert first.text(text) == again.text(text) == f"Quillon {MASK}, vardakis@x or {MASK}-Quillon"
    assert other.text(text) == f"{MASK} Vardakis, vardakis@x or Vardakis-{MASK}"
    assert Minimizer().text(text) == text


def test_the_vocabulary_follows_catalog_changes_made_by_another_process(db: Database) -> None:
    vocabulary = Vocabulary()
    vocabulary.refresh(db)
    assert vocabulary.knows("kettle") and vocabulary.knows("grinders")
    assert not vocabulary.knows("samovar") and not vocabulary.knows("cafetiere")
    url = db.engine.url.render_as_string(hide_password=False)

    # The same number of items and offers as before, other words: first an offer's alone.
    _in_another_process(
        url,
        f"upsert_offers(session, [Offer.model_validate({OFFER!r} | "
        "{'terms': 'Ten percent off cafetieres'})])",
    )
    vocabulary.refresh(db)
    assert vocabulary.knows("cafetieres") and not vocabulary.knows("grinders")
    assert vocabulary.knows("kettle")
    _in_another_process(
        url,
        'upsert_items(session, [Item(item_id="i1", title="Brass samovar", price=30)])',
    )
    vocabulary.refresh(db)
    assert vocabulary.knows("samovar") and vocabulary.knows("cafetieres")
    assert not vocabulary.knows("kettle") and not vocabulary.knows("whistling")

    _in_another_process(url, 'delete_item(session, "i2")')
    vocabulary.refresh(db)
    assert not vocabulary.knows("espresso")
    assert Minimizer.of(["espresso for the samovar"], vocabulary).tainted == {"espresso"}


def test_a_standing_catalog_costs_one_single_row_read_or_none(db: Database) -> None:
    vocabulary = Vocabulary()
    vocabulary.refresh(db)
    with db.session() as session:
        version = catalog_version(session)
    assert vocabulary.version == version
    with _statements(db) as seen:
        vocabulary.refresh(db)
    assert len(seen) == 1 and "catalog_version" in seen[0]
    with _statements(db) as seen:
        vocabulary.refresh(db, version)  # the request already read the version
    assert seen == []

    with db.session() as session:
        upsert_items(session, [KETTLE.model_copy(update={"title": "Enamel kettle"})])
        moved = catalog_version(session)
    assert moved != version
    vocabulary.refresh(db, moved)
    assert vocabulary.version == moved and vocabulary.knows("enamel")
