"""A person's data across every store: export and erasure, audited without their identifiers.

The database rows go through `store.erasure`; the collaborative model's user factors are removed
from the model file; chat checkpoints are erased by every registered `eraser` (the chat graph
registers its own). Audit entries name the person by a keyed hash (HMAC-SHA-256 with a secret
kept in the home folder), so the audit log can confirm that a given id was erased without
holding the id itself.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets
from dataclasses import asdict
from typing import Any

from agents.factory import Services, collab_folder
from retrieval.collab import CollabModel
from store.access import audit
from store.erasure import erase_person, export_person, find_person
from store.jobs import erase_from_jobs


def subject_ref(services: Services, user_id: str) -> str:
    """A stable pseudonym of a user for the audit log: `user#<16 hex>`."""
    path = services.settings.home / "audit.key"
    if not path.is_file():
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as handle:
            handle.write(secrets.token_hex(32))
    key = bytes.fromhex(path.read_text().strip())
    return "user#" + hmac.new(key, user_id.encode(), hashlib.sha256).hexdigest()[:16]


def export_user(services: Services, user_id: str, *, actor: str) -> dict[str, Any]:
    with services.db.session() as session:
        person = find_person(session, user_id)
        data = export_person(session, person)
        audit(session, actor=actor, action="user.export", target=subject_ref(services, user_id))
    model = services.tools.collab
    data["collaborative_factors"] = {
        key: vector.tolist()
        for key in person.subject_keys
        if model is not None and (vector := model.user_vector(key)) is not None
    }
    return data


def erase_user(services: Services, user_id: str, *, actor: str) -> dict[str, Any]:
    """Erase the person from every store; returns what was removed, by store."""
    with services.db.session() as session:
        person = find_person(session, user_id)
        erased = erase_person(session, person)
        jobs = erase_from_jobs(session, user_id)  # copy audiences that named them by id
        audit(
            session,
            actor=actor,
            action="user.erase",
            target=subject_ref(services, user_id),
            **asdict(erased),
            job_requests=jobs,
        )
    services.db.compact()
    factors = _erase_factors(services, person.subject_keys)
    checkpoints = sum(eraser(person.subject_keys) for eraser in services.erasers)
    return {
        **asdict(erased),
        "job_requests": jobs,
        "collaborative_factors": factors,
        "checkpoints": checkpoints,
    }


def _erase_factors(services: Services, keys: list[str]) -> int:
    folder = collab_folder(services.settings)
    model = CollabModel.load(folder)
    if model is None:
        return 0
    trimmed, removed = model.without(keys)
    if removed:
        trimmed.save(folder)
        services.reload_collab()
    return removed
