"""Retrieval: text embedders and the vector index backends that serve candidate items."""
