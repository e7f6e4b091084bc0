"""Messy catalog cells made into item values: prices with symbols and ranges, stock as text.

Ingest passes every text value of `price` and `stock` through here before validation. What is
not recognised is returned unchanged, so validation rejects it with the cell's own text.
"""

from __future__ import annotations

import re
from typing import Any

# An optional currency symbol or code, then a number whose commas (if any) group thousands.
# "3,99" is refused rather than guessed: it could be 3.99 or 399.
_PRICE = re.compile(r"^\s*(?:[£$€¥]|[A-Z]{3}\s*)?\s*(\d{1,3}(?:,\d{3})+|\d+)(\.\d+)?(?![.,\d])")
_STOCK_COUNT = re.compile(r"^\s*(\d+)(?![.,\d])")
_STOCK_WORDS: dict[str, int | None] = {
    "in stock": None,
    "available": None,
    "out of stock": 0,
    "sold out": 0,
    "unavailable": 0,
}


def clean_price(value: Any) -> Any:
    """ "£3.99" → 3.99, "£3.99 - £5.99" → 3.99 (the lower bound), "1,299.00" → 1299.0."""
    if not isinstance(value, str):
        return value
    match = _PRICE.match(value)
    if match is None:
        return value
    return float(match.group(1).replace(",", "") + (match.group(2) or ""))


def clean_stock(value: Any) -> Any:
    """ "5 new" → 5, "in stock" → None (unknown, so available), "sold out" → 0."""
    if not isinstance(value, str):
        return value
    text = " ".join(value.lower().split())  # also folds the no-break space of "5\xa0new"
    if text in _STOCK_WORDS:
        return _STOCK_WORDS[text]
    match = _STOCK_COUNT.match(text)
    return int(match.group(1)) if match else value


CLEANERS = {"price": clean_price, "stock": clean_stock}


def clean(record: dict[str, Any]) -> dict[str, Any]:
    """The record with its `price` and `stock` cleaned, when it has them."""
    for name, cleaner in CLEANERS.items():
        if name in record:
            record[name] = cleaner(record[name])
    return record
