"""Persistence: SQLAlchemy models and repositories for users, identities, events, decisions and bandit state."""
