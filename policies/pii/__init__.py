"""The PII guard: free text is pseudonymized before it reaches an LLM, a log line or the decision log.

Attune promises that no raw PII leaves the process. Every free text bound for a model, a log or
the decision log goes through `PIIGuard.pseudonymize`, which swaps each piece of PII for a stable
per-request placeholder (`<PERSON_1>`, `<EMAIL_ADDRESS_1>`, `<PHONE_NUMBER_1>` ...). The mapping
back to the raw values lives in a `Vault` that is created per request, cannot be pickled and never
prints its values; `Vault.reveal` re-identifies only the entity types a caller allows, which is why
the subject's own first name has its own type (`FIRST_NAME`): a greeting may show it while the
last name, the email and everything else stay masked.

Where things are:
  * `guard` - `PIIGuard`: the Presidio registry, finding, overlaps and pseudonymizing;
  * `vault` - `Vault`: one request's placeholders and the raw values behind them;
  * `known` - `KnownValues`: the subject's own values and their recognizer;
  * `names`, `name_lists` - the person-name recognizer and its word lists (`data/names/`);
  * `patterns`, `stock` - pattern recognizers: the guard's own, and Presidio's adjusted;
  * `ner` - which spaCy pipeline runs, and which of its entities the guard keeps;
  * `entities` - the entity types and which are redacted by default;
  * `phones`, `folding` - how phone numbers and words are compared.

This package's names are loaded on first use, so that `policies.pii.entities` (which the policy
file's validation reads) can be imported without loading Presidio and spaCy.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from policies.pii.guard import Finding, PIIGuard, Redacted, resolve_overlaps
    from policies.pii.known import KnownValues
    from policies.pii.vault import Vault

__all__ = ["Finding", "KnownValues", "PIIGuard", "Redacted", "Vault", "resolve_overlaps"]

_HOMES = {
    "Finding": "guard",
    "PIIGuard": "guard",
    "Redacted": "guard",
    "resolve_overlaps": "guard",
    "KnownValues": "known",
    "Vault": "vault",
}


def __getattr__(name: str) -> Any:
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module 'policies.pii' has no attribute {name!r}")
    return getattr(importlib.import_module(f"policies.pii.{home}"), name)
