"""What the console's copy studio shows before a copy run: each segment's live size with a
sample of its members. (The send list after it is `agents.copy.recipients`.)

It reads the audience with the same scan as the copy graph (`agents.copy.audience`), consent
first, so a preview counts exactly the people a copy run would write for now. Members are named
by user id only; nothing else of a person leaves the scan.
"""

from __future__ import annotations

from datetime import UTC, datetime

from agents.copy.audience import SegmentAudience, scan_audience
from agents.copy.segments import Audience
from agents.services import Services
from policies.copy import CHANNELS, CopyChannel


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
