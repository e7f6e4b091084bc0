"""Files the service reads at run time that are not Python (the prompts) are in the wheel too:
each is in a package (a folder with `__init__.py`) and matched by its `package-data` globs."""

from __future__ import annotations

import tomllib
from fnmatch import fnmatch
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_every_data_file_of_agents_is_package_data() -> None:
    config = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    package_data: dict[str, list[str]] = config["tool"]["setuptools"].get("package-data", {})
    data = [
        path
        for path in sorted((ROOT / "agents").rglob("*"))
        if path.is_file() and path.suffix not in (".py", ".pyc") and "__pycache__" not in path.parts
    ]
    assert any(path.suffix == ".md" for path in data), "the prompts were not found"
    left_out = [
        str(path.relative_to(ROOT))
        for path in data
        if not (path.parent / "__init__.py").exists()
        or not any(
            fnmatch(path.name, glob)
            for glob in package_data.get(".".join(path.parent.relative_to(ROOT).parts), [])
        )
    ]
    assert not left_out, f"not in the wheel: {left_out}"


def test_the_console_files_are_package_data() -> None:
    config = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    globs = config["tool"]["setuptools"]["package-data"].get("api.console", [])
    folder = ROOT / "api" / "console"
    files = [p for p in sorted(folder.iterdir()) if p.is_file() and p.suffix != ".py"]
    assert {p.name for p in files} >= {"index.html", "console.js", "console.css"}
    assert (folder / "__init__.py").exists()
    left_out = [p.name for p in files if not any(fnmatch(p.name, glob) for glob in globs)]
    assert not left_out, f"not in the wheel: {left_out}"
