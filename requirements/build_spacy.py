"""Build spaCy 3.8.18 from its PyPI sdist without Cython 3's GIL round trips, and install it.

spaCy's PyPI wheels are compiled by Cython 3, where a `cdef` function not declared `noexcept`
may raise, so that its caller checks for a Python exception after every call; called inside a
`nogil` block, each check takes the GIL and gives it back. The NER's greedy parse
(`Parser._parseC`, spacy/pipeline/transition_parser.pyx) does that once per transition step
for `predict_states`, declared without `noexcept` in spacy/ml/parser_model.pxd, and once more
for the `with gil: assert` that opens `c_transition_batch`. And on Python < 3.12 the wheels are
compiled with Cython's `profile` directive, which adds a tracing check to each function call.

This build changes the compiler directives (`legacy_implicit_noexcept`, Cython 0.29's
semantics, which spaCy up to 3.6 was compiled with; `profile` off) and takes the GIL in
`c_transition_batch` only when the assert is to fail. The entities are the same; only the
cost changes (policies/pii/ner.py's docstring has the figures).

    .venv/bin/python requirements/build_spacy.py [--wheels DIR]

Run by `make install` after the project's own install. A no-op when the installed spaCy is this
build; the wheel is built once into `--wheels` (default: `wheels` beside the interpreter's
environment, `.venv/wheels`), in a folder named by a digest of the build's inputs (the sdist's
hash, Cython's pin and the edits), and reinstalled from there: change an edit and the next run
builds afresh instead of reinstalling a stale wheel. The installed package carries the digest
too (`BUILD_MARK`), so the check that skips a rebuild is as exact. The sdist's sha256 is checked
(requirements/spacy-source.txt); Cython is pinned here. Needs a C++ compiler and Python's
headers; when the build fails, the PyPI wheel stays installed and NER is only slower.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
PINNED = HERE / "spacy-source.txt"
VERSION = "3.8.18"
CYTHON = "cython==3.3.1"
PARSER = "spacy/pipeline/transition_parser.pyx"
# Each edit is an exact text of the pinned sdist and what replaces it; a text that is not there
# once stops the build (the sdist is pinned by its sha256, so it is always there).
EDITS = {
    "setup.py": (
        '    "profile": sys.version_info < (3, 12),\n}',
        '    "profile": False,\n    "legacy_implicit_noexcept": True,\n}',
    ),
    PARSER: (
        "        with gil:\n"
        "            assert self.moves.n_moves > 0, Errors.E924.format(name=self.name)\n",
        "        if self.moves.n_moves <= 0:\n"
        "            with gil:\n"
        "                assert self.moves.n_moves > 0, Errors.E924.format(name=self.name)\n",
    ),
}
# A file written into the installed package, holding `build_digest()`.
BUILD_MARK = "attune-build.txt"


def build_digest() -> str:
    """What the built wheel depends on: the pinned sdist (its hash line), Cython and the edits."""
    inputs = json.dumps([VERSION, CYTHON, PINNED.read_text(), EDITS], sort_keys=True)
    return hashlib.sha256(inputs.encode()).hexdigest()[:16]


def installed_is_built() -> bool:
    """Whether the environment's spaCy is this version built by this script from the same
    inputs: the parser's .pyx (installed with it) has the edit, and the package holds the
    digest this script wrote at install."""
    probe = (
        "import importlib.util, pathlib, sys\n"
        "spec = importlib.util.find_spec('spacy')\n"
        "root = pathlib.Path(spec.origin).parent if spec and spec.origin else None\n"
        "about = root / 'about.py' if root else None\n"
        "parser = root / sys.argv[1] if root else None\n"
        "mark = root / sys.argv[4] if root else None\n"
        "ok = bool(root) and f'__version__ = \"{sys.argv[2]}\"' in about.read_text() and "
        "sys.argv[3] in parser.read_text() and mark.is_file() and "
        "mark.read_text().strip() == sys.argv[5]\n"
        "print(int(ok))\n"
    )
    relative = PARSER.removeprefix("spacy/")
    out = subprocess.run(
        [
            sys.executable,
            "-c",
            probe,
            relative,
            VERSION,
            EDITS[PARSER][1],
            BUILD_MARK,
            build_digest(),
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    return out.stdout.strip() == "1"


def pip(*args: str, **kwargs: object) -> None:
    subprocess.run([sys.executable, "-m", "pip", *args], check=True, **kwargs)  # type: ignore[call-overload]


def patch(source: Path) -> None:
    for name, (old, new) in EDITS.items():
        path = source / name
        text = path.read_text()
        if text.count(old) != 1:
            raise SystemExit(f"{name}: the text to replace is not there once; not spaCy {VERSION}?")
        path.write_text(text.replace(old, new))


def extract(archive: tarfile.TarFile, into: Path) -> None:
    """Unpack the (sha256-pinned) sdist with tarfile's `data` filter where this Python has
    extraction filters (3.11.4 and later; Debian 12's python3.11 is 3.11.2), else after the same
    checks by hand: regular files and folders only, every path inside `into`."""
    if hasattr(tarfile, "data_filter"):
        archive.extractall(into, filter="data")
        return
    root = into.resolve()
    for member in archive.getmembers():
        target = (into / member.name).resolve()
        if not (member.isfile() or member.isdir()) or not target.is_relative_to(root):
            raise SystemExit(f"refusing the sdist's member {member.name!r}")
    archive.extractall(into)


def build(wheels: Path) -> Path:
    """Download the pinned sdist, apply the edits and build the wheel into `wheels`."""
    started = time.perf_counter()
    cpu = os.times()
    # Built against the environment's own numpy and thinc (spaCy's build needs their headers).
    pip("install", "-q", CYTHON)
    with tempfile.TemporaryDirectory(prefix="spacy-build-") as tmp:
        work = Path(tmp)
        pip(
            "download",
            "-q",
            "--no-deps",
            "--no-binary",
            "spacy",
            "--no-build-isolation",
            "--require-hashes",
            "-r",
            str(PINNED),
            "-d",
            str(work),
        )
        with tarfile.open(work / f"spacy-{VERSION}.tar.gz") as archive:
            extract(archive, work)
        source = work / f"spacy-{VERSION}"
        patch(source)
        env = {**os.environ, "SPACY_NUM_BUILD_JOBS": str(os.cpu_count() or 1)}
        wheels.mkdir(parents=True, exist_ok=True)
        pip(
            "wheel",
            "-q",
            "--no-deps",
            "--no-build-isolation",
            "-w",
            str(wheels),
            str(source),
            env=env,
        )
    done = os.times()
    print(
        f"spaCy {VERSION} built in {time.perf_counter() - started:.0f} s "
        f"({done.children_user - cpu.children_user + done.children_system - cpu.children_system:.0f} s CPU)"
    )
    return wheel_in(wheels)  # type: ignore[return-value]


def wheel_in(wheels: Path) -> Path | None:
    tag = f"cp{sys.version_info.major}{sys.version_info.minor}"
    found = sorted(wheels.glob(f"spacy-{VERSION}-{tag}-*.whl"))
    return found[-1] if found else None


def mark_installed() -> None:
    """Write the build's digest into the installed package (pip leaves it when it replaces the
    package, so the parser check above still tells a PyPI wheel from this build)."""
    probe = "import importlib.util, pathlib; print(pathlib.Path(importlib.util.find_spec('spacy').origin).parent)"
    root = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True
    ).stdout.strip()
    (Path(root) / BUILD_MARK).write_text(build_digest() + "\n")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--wheels", type=Path, default=Path(sys.prefix) / "wheels" / "spacy-nogil")
    args = parser.parse_args()
    if installed_is_built():
        print(f"spaCy {VERSION} built from source is installed")
        return 0
    wheels = args.wheels / build_digest()
    wheel = wheel_in(wheels) or build(wheels)
    pip("install", "-q", "--no-deps", "--force-reinstall", str(wheel))
    mark_installed()
    if not installed_is_built():
        raise SystemExit(f"{wheel} is installed but is not the build this script makes")
    print(f"installed {wheel.name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
