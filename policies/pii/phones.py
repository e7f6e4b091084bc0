"""Phone numbers compared by their digits: parsed in the regions tried, and matched to known ones."""

from __future__ import annotations

import re
from functools import lru_cache

import phonenumbers
from phonenumbers import NumberParseException, PhoneNumber

__all__ = ["PHONE_CANDIDATE", "PHONE_REGIONS", "national_digits", "parse_phone", "phone_matches"]

# Regions tried, in order, for phone numbers written without a "+CC" prefix.
PHONE_REGIONS = ("GB", "US", "DE", "FR")  # tried in order for a profile's own number

# A run of digits with the separators people put in phone numbers, optionally after + or (,
# and an extension ("x2011", "ext. 12"), which the span covers but the comparison leaves out.
PHONE_CANDIDATE = re.compile(
    r"(?<![\w+])(?P<number>(?:\+|\()?\d(?:[\s\-./()]{0,3}\d){5,})"
    r"(?:\s*(?:x|ext\.?|extension)\s*\d{1,6})?(?!\w)",
    re.IGNORECASE,
)


def national_digits(phone: str) -> str | None:
    """The national significant number of a phone, or its digits when it cannot be parsed."""
    number = parse_phone(phone)
    digits = (
        phonenumbers.national_significant_number(number) if number else re.sub(r"\D", "", phone)
    )
    return digits if len(digits) >= 6 else None


def phone_matches(candidate: str, nationals: list[str]) -> bool:
    """Whether a phone-like span is one of the known numbers, written with any prefix.

    The span's digits must end with the national number, and what precedes it may only be a
    trunk prefix (0), an international prefix (+CC, 00CC) or both ("+44 (0)").
    """
    digits = re.sub(r"\D", "", candidate)
    for national in nationals:
        if digits.endswith(national) and len(digits) - len(national) <= 5:
            prefix = digits[: len(digits) - len(national)]
            international = candidate.lstrip("( ").startswith(("+", "00"))
            if prefix in ("", "0") or international:
                return True
    return False


@lru_cache(maxsize=4096)
def parse_phone(value: str, regions: tuple[str, ...] = PHONE_REGIONS) -> PhoneNumber | None:
    candidate = value.strip()
    if candidate.startswith("00"):
        candidate = "+" + candidate[2:]
    if candidate.startswith("+"):
        try:
            number = phonenumbers.parse(candidate, None)
        except NumberParseException:
            return None
        return number if phonenumbers.is_possible_number(number) else None
    fallback = None
    for region in regions:
        try:
            number = phonenumbers.parse(candidate, region)
        except NumberParseException:
            continue
        if phonenumbers.is_valid_number(number):
            return number
        if fallback is None and phonenumbers.is_possible_number(number):
            fallback = number
    return fallback
