"""Attune's Python client: `from attune.client import Attune, AsyncAttune`."""
