"""Real pq 0.9.1 from PyPI, in a virtualenv of its own, cached between runs.

pq 0.9.1 requires Python >=3.13,<3.15, so the virtualenv needs such an interpreter: the
one in ``DJANGO_PQ_REALPQ_PYTHON``, else ``python3.13``/``python3.14`` on PATH, else
pyenv's. The virtualenv lives in ``DJANGO_PQ_REALPQ_CACHE`` (default ``.tox/realpq`` in the
checkout) and is made again only when it cannot import pq 0.9.1. Without such a Python the
tests skip, saying why; with ``DJANGO_PQ_REALPQ_REQUIRED`` set (CI) they fail instead.
"""

from __future__ import annotations

import fcntl
import glob
import os
import shutil
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

PQ_REQUIREMENT = "python-pq==0.9.1"
REPO = Path(__file__).resolve().parents[2]
#: The Python versions pq 0.9.1's Requires-Python allows.
PQ_PYTHONS = ("3.13", "3.14")


def cache_dir() -> Path:
    return Path(os.environ.get("DJANGO_PQ_REALPQ_CACHE") or REPO / ".tox" / "realpq")


def _version(python: str) -> str | None:
    try:
        out = subprocess.run(
            [python, "-c", "import sys; print('%d.%d' % sys.version_info[:2])"],
            capture_output=True,
            text=True,
            timeout=60,
        )
    except OSError:
        return None
    return out.stdout.strip() if out.returncode == 0 else None


def find_python() -> tuple[str | None, str]:
    """An interpreter pq 0.9.1 installs on, or None and where it was looked for."""
    candidates = [os.environ.get("DJANGO_PQ_REALPQ_PYTHON", "")]
    candidates += [shutil.which(f"python{version}") or "" for version in PQ_PYTHONS]
    for version in PQ_PYTHONS:
        candidates += sorted(
            glob.glob(str(Path.home() / f".pyenv/versions/{version}*/bin/python3"))
        )
    for candidate in filter(None, candidates):
        if _version(candidate) in PQ_PYTHONS:
            return candidate, ""
    return None, (
        f"pq 0.9.1 needs Python {' or '.join(PQ_PYTHONS)} and none was found "
        "(DJANGO_PQ_REALPQ_PYTHON, python3.13/python3.14 on PATH, ~/.pyenv/versions)"
    )


@contextmanager
def _locked(directory: Path) -> Iterator[None]:
    """One process at a time builds the cache (parallel test runs share it)."""
    directory.mkdir(parents=True, exist_ok=True)
    with open(directory / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


def _run(command: list[str]) -> None:
    done = subprocess.run(command, capture_output=True, text=True, timeout=900)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} failed:\n{done.stdout}\n{done.stderr}")


def pq_python(python: str) -> Path:
    """The Python of a virtualenv with pq 0.9.1 installed from PyPI by pip."""
    venv = cache_dir() / "venv"
    interpreter = venv / "bin" / "python"
    probe = "import pq; assert pq.__version__ == '0.9.1', pq.__version__"
    with _locked(cache_dir()):
        if interpreter.exists() and subprocess.run([interpreter, "-c", probe]).returncode == 0:
            return interpreter
        shutil.rmtree(venv, ignore_errors=True)
        _run([python, "-m", "venv", str(venv)])
        _run([str(interpreter), "-m", "pip", "install", "-q", PQ_REQUIREMENT])
    return interpreter


def dill_path(interpreter: Path) -> Path:
    """A directory holding the dill pq pickled with, for django-pq's side of the import.

    ``--decode-pickles`` needs dill where the command runs; the test puts this directory on
    that command's PYTHONPATH, as an operator would ``pip install dill``.
    """
    target = cache_dir() / "dill"
    version = subprocess.run(
        [interpreter, "-c", "import dill; print(dill.__version__)"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    with _locked(cache_dir()):
        if not (target / f"dill-{version}.dist-info").exists():
            shutil.rmtree(target, ignore_errors=True)
            _run([str(interpreter), "-m", "pip", "install", "-q", "--target", str(target),
                  f"dill=={version}"])  # fmt: skip
    return target
