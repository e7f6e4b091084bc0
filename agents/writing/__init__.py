"""The writers the graphs share: the grounded brief, the draft, the offline and LLM writers."""
