"""The decide journey: one decision (profile, retrieval, offer, copy, explanation) for one person."""
