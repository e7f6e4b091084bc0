"""The entity types the PII guard detects, and which of them are redacted by default.

Kept apart from the guard so that the policy file can be validated without loading spaCy.
"""

from __future__ import annotations

# The types the guard gives the subject's own values and the recognizers' common types.
FIRST_NAME = "FIRST_NAME"
PERSON = "PERSON"
EMAIL_ADDRESS = "EMAIL_ADDRESS"
PHONE_NUMBER = "PHONE_NUMBER"
PERSONAL_DETAIL = "PERSONAL_DETAIL"

# Every type the guard can report, in the order the eval report lists them.
ENTITY_TYPES = (
    "PERSON",
    "LOCATION",
    "ORGANIZATION",
    "DATE_TIME",
    "STREET_ADDRESS",
    "NRP",  # a nationality, religious or political group
    "AGE",
    "ZIP_CODE",
    "URL",
    "DRIVER_LICENSE",
    "EMAIL_ADDRESS",
    "PHONE_NUMBER",
    "CREDIT_CARD",
    "IBAN_CODE",
    "IP_ADDRESS",
    "US_SSN",
    "UK_NHS",
)

# Types that no policy may leave in clear: direct identifiers and payment details. The subject's
# own values (FIRST_NAME, PERSONAL_DETAIL) are always redacted too; they are not policy settings.
ALWAYS_REDACTED = frozenset(
    {"PERSON", "EMAIL_ADDRESS", "PHONE_NUMBER", "CREDIT_CARD", "IBAN_CODE", "US_SSN", "UK_NHS"}
)

# Redacted unless the policy says otherwise: everything but organisations and dates. A shopper's
# message is about brands, sellers, couriers and delivery dates; masking those would leave the
# model unable to answer, while neither names a person on its own (a birth date in the subject's
# profile is caught as a known value whatever this setting says).
DEFAULT_REDACTED = tuple(t for t in ENTITY_TYPES if t not in ("ORGANIZATION", "DATE_TIME"))

# Regions whose national phone formats (no "+CC" or "00CC") are recognised. A number written
# with its country code is recognised for every region the `phonenumbers` library knows.
DEFAULT_PHONE_REGIONS = ("GB", "US", "DE", "FR", "IN", "BR", "AU", "ES", "IT", "NL", "IE", "PL")
