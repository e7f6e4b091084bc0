"""How every bench script hands over its figures (JSON on stdout and in the file it was given),
and the settings a bench's service runs on: the product's, with its default embedder ready."""

from __future__ import annotations

import json
import os
import sys
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

from agents.settings import Settings

if TYPE_CHECKING:
    from agents.services import Services

ROOT = Path(__file__).resolve().parents[1]
# Where the benches keep the embedding model's ONNX export, made once and reused by every run
# (the export is checked against the pinned weights' sha256 each time it is opened).
EXPORTS = ROOT / "bench" / "results" / "models"


def product_settings(**fields: Any) -> Settings:
    """Settings as `make run` would serve them: the embedding model's ONNX export is made before
    the service starts (`attune export-onnx`), so a bench's service embeds on ONNX Runtime, the
    default backend, rather than falling back to torch for want of an export in its fresh home.
    ATTUNE_EMBEDDING_EXPORT_DIR, when set, is used instead of the benches' shared folder."""
    from agents.factory import export_embedder

    if "embedding_export_dir" not in fields and not os.environ.get("ATTUNE_EMBEDDING_EXPORT_DIR"):
        fields["embedding_export_dir"] = EXPORTS
    settings = Settings(**fields)
    export_embedder(settings)
    return settings


def emit(results: dict[str, Any], out: Path) -> None:
    """Writes `results` as indented JSON to `out` (creating its folder) and to stdout."""
    text = json.dumps(results, indent=2)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text + "\n")
    sys.stdout.write(text + "\n")


def demo_service(
    home: Path | None = None, prefix: str = "attune-bench-"
) -> tuple[Services, list[str]]:
    """The service as `make run` starts it on the demo world, in `home` (a new temporary folder
    named after `prefix` by default), and the demo's user ids in file order."""
    from agents.factory import build_services
    from agents.reindex import start

    settings = product_settings(home=home or Path(tempfile.mkdtemp(prefix=prefix)), seed=1)
    services = build_services(settings)
    start(services, settings.demo_dir)
    lines = (settings.demo_dir / "users.jsonl").read_text().splitlines()
    return services, [json.loads(line)["user_id"] for line in lines if line.strip()]
