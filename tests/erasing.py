"""A person's erasure held open while another request writes about them: what the tests of
concurrent writers (`test_erasure_race.py`, copy serving in `test_copy.py`) share."""

from __future__ import annotations

import threading

from agents.privacy.rights import anonymous_ref, subject_ref
from agents.services import Services
from store.erasure import erase_person, find_person
from store.tombstones import add_tombstones


def while_erasing(
    services: Services, user_id: str, anonymous: list[str], writer: threading.Thread
) -> None:
    """Run `writer` while the person's erasure is under way: their rows deleted and their
    tombstones added in a transaction not yet committed. The writer must still be waiting
    3 s later (for the erasure's lock); then the erasure commits, and the writer is let finish."""
    with services.db.session() as session:
        erase_person(session, find_person(session, user_id))
        add_tombstones(
            session,
            [subject_ref(services, user_id), *(anonymous_ref(services, a) for a in anonymous)],
        )
        session.flush()
        writer.start()
        writer.join(timeout=3)
        assert writer.is_alive(), "the write did not wait for the erasure in progress"
    writer.join(timeout=30)
