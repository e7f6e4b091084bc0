"""The decision record: what the decision log keeps to replay a decision offline, and no PII.

Free text appears only pseudonymized (as the guard left it); the profile appears only as
features and consent; versions of the policy, embedder, writer and prompt are pinned.
"""

from __future__ import annotations

from typing import Any

from agents.state import DecideContext, DecideState

RECORD_SCHEMA = 1


def decision_record(state: DecideState, ctx: DecideContext) -> dict[str, Any]:
    services = ctx.services
    profile = state["profile"]
    candidates = state["candidates"]
    offers = state.get("offers")
    choice = state.get("choice")
    draft = state["draft"]
    return {
        "schema": RECORD_SCHEMA,
        "decision_id": ctx.decision_id,
        "created_at": ctx.run.now.isoformat(),
        "subject_key": ctx.run.subject.key,
        "channel": ctx.run.channel.value,
        "request": {
            "query": state.get("query_redacted"),
            "k": state["k"],
            "context": state.get("context_redacted", {}),
        },
        "features": profile.model_dump(mode="json", exclude={"rules_fired"}),
        "retrieval": {
            "strategy": candidates.strategy,
            "candidates": [c.model_dump(mode="json") for c in candidates.items],
        },
        "offers": offers.model_dump(mode="json") if offers else None,
        "choice": choice.model_dump(mode="json") if choice else None,
        "content": {
            "text": draft.text,
            "item_ids": draft.item_ids,
            "offer_id": draft.offer_id,
            "writer": state.get("writer"),
            "attempts": state.get("attempts", 0),
            "guard_problems": state.get("guard_problems", []),
        },
        "explanation": state["explanation"].model_dump(mode="json"),
        "versions": {
            "policy": services.policy.version,
            "embedder": services.embedder.name,
            "writer": state.get("writer"),
            "prompt": state.get("prompt_version"),
            "vector_backend": services.index.backend,
        },
        "degraded": list(dict.fromkeys(services.degraded + state.get("degraded", []))),
    }
