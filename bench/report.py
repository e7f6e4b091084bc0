"""How every bench script hands over its figures: JSON on stdout and in the file it was given."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any


def emit(results: dict[str, Any], out: Path) -> None:
    """Writes `results` as indented JSON to `out` (creating its folder) and to stdout."""
    text = json.dumps(results, indent=2)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text + "\n")
    sys.stdout.write(text + "\n")
