"""The system prompts, one Markdown file per version (`chat-1.md`, `decide-copy-1.md`). The
version is logged with each decision; a changed prompt gets a new file and a new version."""

from pathlib import Path

PROMPTS = Path(__file__).parent
