"""How the PII guard compares words and values: accents stripped, case folded, spaces collapsed."""

from __future__ import annotations

import unicodedata

__all__ = ["fold", "normalise_text", "strip_accents"]


def fold(value: str) -> str:
    # ASCII has no decompositions and no combining marks: stripping accents leaves it as it is.
    if value.isascii():
        return value.casefold()
    return strip_accents(value).casefold()


def normalise_text(value: str) -> str:
    return " ".join(value.casefold().split())


def strip_accents(value: str) -> str:
    decomposed = unicodedata.normalize("NFKD", value)
    return "".join(char for char in decomposed if not unicodedata.combining(char))
