"""Warnings after an ingest when the stored catalog would hide most of itself from decisions."""

from __future__ import annotations

from collections import Counter

MOST = 0.5
"""A warning fires when more than this share of the catalog (or of a file's records) is hit."""


def coverage_warnings(
    coverage: dict[str, int], *, records: int, rejected: int, reasons: Counter[str]
) -> list[str]:
    """What would surprise someone who just ingested a file and then asks for decisions.

    `coverage` is `store.catalog.catalog_coverage` of the whole stored catalog; `records` and
    `rejected` count the file's records, `reasons` the rejections by reason.
    """
    warnings = []
    if records and rejected / records > MOST:
        common, times = reasons.most_common(1)[0] if reasons else ("", 0)
        most = f"; the most common reason ({times}): {common}" if common else ""
        warnings.append(
            f"{rejected} of {records} records ({rejected / records:.0%}) were rejected{most}"
        )
    items = coverage["items"]
    if not items:
        return warnings
    share = coverage["out_of_stock"] / items
    if share > MOST:
        warnings.append(
            f"{coverage['out_of_stock']} of {items} stored items ({share:.0%}) have stock 0 and "
            "are never recommended; map a stock column, or leave it out (unknown stock counts "
            "as available)"
        )
    share = coverage["age_restricted"] / items
    if share > MOST:
        warnings.append(
            f"{coverage['age_restricted']} of {items} stored items ({share:.0%}) have a minimum "
            "age above 0 and are hidden from people whose age is unknown when the policy's "
            "age rule denies unknown ages"
        )
    if items > 1 and coverage["categories"] == 1:
        warnings.append(
            f"all {items} stored items are in one category: taste, segments and offers cannot "
            "tell them apart; map a category column"
        )
    return warnings
