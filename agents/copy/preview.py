"""What the console's copy studio shows before and after a copy run: each segment's live size
with a sample of its members, and the export of who gets which variant.

Both read the audience with the same scan as the copy graph (`agents.copy.audience`), consent
first, so a preview counts exactly the people a copy run would write for now. Members are named
by user id only; nothing else of a person leaves the scan.

A recipient gets one of their segment's variants that passed its checks, chosen by a stable
hash of the campaign and the user id: the same person gets the same variant at every export,
and the variants split a segment about evenly. Withheld variants (failed checks) get no one.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from agents.copy.audience import SegmentAudience, scan_audience
from agents.copy.segments import Audience
from agents.services import Services
from policies.copy import CHANNELS, CopyChannel


@dataclass(frozen=True)
class Recipient:
    segment: str
    variant_id: str
    user_id: str


def preview_audience(
    services: Services, channel: CopyChannel, audience: Audience, *, sample: int
) -> list[SegmentAudience]:
    """Every segment's members for copy on `channel` now: sizes, exclusions, `sample` user ids."""
    segments = audience.resolved()
    found = scan_audience(
        services.db,
        services.policy,
        segments,
        CHANNELS[channel],
        now=datetime.now(UTC),
        keep_members=sample,
    )
    return [found[s.name] for s in segments]


def recipients(
    services: Services,
    campaign_id: str,
    request: dict[str, Any],
    variants: Sequence[dict[str, Any]],
) -> list[Recipient]:
    """Who gets which variant of a done copy job: each member of each segment, scanned now, with
    one of the segment's variants that passed its checks."""
    channel = CopyChannel(request["channel"])
    audience = Audience.model_validate(request["audience"])
    passed: dict[str, list[str]] = {}
    for variant in variants:
        if variant["checks_passed"]:
            passed.setdefault(variant["segment"], []).append(variant["variant_id"])
    segments = [s for s in audience.resolved() if s.name in passed]
    found = scan_audience(
        services.db,
        services.policy,
        segments,
        CHANNELS[channel],
        now=datetime.now(UTC),
        keep_members=None,
    )
    return [
        Recipient(segment=s.name, variant_id=_pick(campaign_id, uid, passed[s.name]), user_id=uid)
        for s in segments
        for uid in found[s.name].members
    ]


def _pick(campaign_id: str, user_id: str, variant_ids: list[str]) -> str:
    digest = hashlib.sha256(f"{campaign_id}\x00{user_id}".encode()).digest()
    return variant_ids[int.from_bytes(digest[:8], "big") % len(variant_ids)]
