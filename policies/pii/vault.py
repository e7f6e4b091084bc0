"""The per-request vault: placeholders for PII and the raw values behind them, never pickled."""

from __future__ import annotations

import re
from typing import NoReturn

import phonenumbers

from policies.pii.entities import PHONE_NUMBER
from policies.pii.folding import normalise_text
from policies.pii.phones import parse_phone

__all__ = ["Vault"]

_ENTITY_TYPE = re.compile(r"[A-Z][A-Z0-9_]*")
_PLACEHOLDER = re.compile(r"<[A-Z][A-Z0-9_]*_[0-9]+>")


class Vault:
    """One request's placeholders and the raw values behind them; it never leaves the process.

    The same value (case-folded, whitespace collapsed; a phone number by its digits) always gets
    the same placeholder within a vault, numbered per entity type from 1 in order of first sight.
    """

    __slots__ = ("_counts", "_originals", "_placeholders")

    def __init__(self) -> None:
        self._placeholders: dict[tuple[str, str], str] = {}
        self._originals: dict[str, tuple[str, str]] = {}
        self._counts: dict[str, int] = {}

    def placeholder(self, entity_type: str, value: str) -> str:
        """The placeholder for `value`, allocating the next number of its type on first sight."""
        if not _ENTITY_TYPE.fullmatch(entity_type):
            raise ValueError(
                f"entity type {entity_type!r} must be upper-case letters, digits and underscores, "
                "starting with a letter, e.g. PHONE_NUMBER"
            )
        key = (entity_type, _normalise(entity_type, value))
        placeholder = self._placeholders.get(key)
        if placeholder is None:
            number = self._counts.get(entity_type, 0) + 1
            self._counts[entity_type] = number
            placeholder = f"<{entity_type}_{number}>"
            self._placeholders[key] = placeholder
            self._originals[placeholder] = (entity_type, value)
        return placeholder

    def reveal(self, text: str, allowed: set[str]) -> str:
        """`text` with the placeholders of the `allowed` entity types put back to their values."""

        def swap(match: re.Match[str]) -> str:
            entry = self._originals.get(match.group(0))
            if entry is not None and entry[0] in allowed:
                return entry[1]
            return match.group(0)

        return _PLACEHOLDER.sub(swap, text)

    def __repr__(self) -> str:
        counts = ", ".join(f"{kind}={count}" for kind, count in sorted(self._counts.items()))
        return f"Vault({counts})"

    def __reduce__(self) -> NoReturn:
        # Pickling is how objects reach checkpoints, caches and other processes.
        raise TypeError(
            "a Vault holds raw PII and never leaves the process: keep it in the request's run "
            "context, not in graph state, a checkpoint or a cache"
        )


def _normalise(entity_type: str, value: str) -> str:
    if entity_type == PHONE_NUMBER:
        number = parse_phone(value)
        if number is not None:
            return f"+{number.country_code}{phonenumbers.national_significant_number(number)}"
        return re.sub(r"\D", "", value)
    return normalise_text(value)
