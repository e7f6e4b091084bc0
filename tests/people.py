"""A person whose profile the PII tests share: every kind of value the guard matches anew."""

from __future__ import annotations

from datetime import date

from store.schemas import Address, Profile

JANE = Profile(
    first_name="Jane",
    last_name="Smith",
    email="jane.smith@example.com",
    phone="07911 123456",
    birth_date=date(1990, 3, 14),
    address=Address(street="221B Baker Street", city="London", postcode="NW1 6XE", country="GB"),
)
