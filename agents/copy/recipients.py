"""Who gets which variant of a campaign: the send list a marketer exports.

The stored request's segments are scanned again (consent as of now, so people who withdrew it
or were erased since the copy was written are not on the list), every member is given to the
first segment of the request they are in, and within it to one of the segment's variants that
passed its checks, by a hash of the campaign and the person: a stable, even A/B split that the
same export repeats.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

from agents.copy.audience import scan_audience
from agents.copy.state import CopyRequest
from agents.services import Services
from policies.copy import CHANNELS
from store.copy import get_variants


def recipients(
    services: Services, campaign_id: str, request: CopyRequest
) -> Iterator[dict[str, Any]]:
    """One row per person: user id, segment, variant id (and its subject line, if any)."""
    with services.db.session() as session:
        variants = get_variants(session, campaign_id)
    by_segment: dict[str, list[dict[str, Any]]] = {}
    for variant in variants:
        if variant.get("checks_passed"):
            by_segment.setdefault(variant["segment"], []).append(variant)
    segments = request.audience.resolved()
    found = scan_audience(
        services.db,
        services.policy,
        segments,
        CHANNELS[request.channel],
        now=datetime.now(UTC),
        keep_members=None,
    )
    placed: set[str] = set()
    for segment in segments:
        options = by_segment.get(segment.name, [])
        if not options:
            continue
        for user_id in found[segment.name].members:
            if user_id in placed:
                continue
            placed.add(user_id)
            variant = options[_bucket(campaign_id, user_id, len(options))]
            yield {
                "user_id": user_id,
                "segment": segment.name,
                "variant_id": variant["variant_id"],
                "subject": variant.get("subject"),
            }


def _bucket(campaign_id: str, user_id: str, n: int) -> int:
    digest = hashlib.sha256(f"{campaign_id}:{user_id}".encode()).digest()
    return int.from_bytes(digest[:8], "big") % n
