"""Create the virtualenvs the side-by-side benchmark compares against (idempotent).

    python benchmarks/setup_peers.py --pq-venv /tmp/pq-venv --peers-venv /tmp/peers-venv

- pq 0.9.1 (PyPI ``python-pq``) needs Python 3.13; the interpreter is found on PATH as
  ``python3.13`` or under pyenv (``--python313`` overrides).
- procrastinate and django-tasks-db (with the ``django-tasks`` backport on Django 5.2)
  share one virtualenv on the running Python.

A virtualenv that already imports its packages is left alone.
"""

from __future__ import annotations

import argparse
import glob
import shutil
import subprocess
import sys
from pathlib import Path

PQ_PACKAGES = ["python-pq==0.9.1"]
PEER_PACKAGES = [
    "procrastinate>=3,<4",
    "django-tasks-db>=0.13",
    "django-tasks>=0.12",
    "Django>=5.2,<5.3",
    "psycopg[binary]>=3.1",
]


def find_python313() -> str | None:
    found = shutil.which("python3.13")
    if found:
        return found
    candidates = sorted(glob.glob(str(Path.home() / ".pyenv/versions/3.13*/bin/python3")))
    return candidates[-1] if candidates else None


def ensure(venv: Path, python: str, packages: list[str], probe: str) -> None:
    interpreter = venv / "bin" / "python"
    if interpreter.exists():
        check = subprocess.run([str(interpreter), "-c", probe], capture_output=True)
        if check.returncode == 0:
            print(f"{venv}: ready")
            return
    print(f"{venv}: creating with {python}")
    subprocess.run([python, "-m", "venv", str(venv)], check=True)
    subprocess.run([str(interpreter), "-m", "pip", "install", "-q", *packages], check=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--pq-venv", type=Path, default=Path("/tmp/pq-venv"))
    parser.add_argument("--peers-venv", type=Path, default=Path("/tmp/peers-venv"))
    parser.add_argument("--python313", default=None)
    args = parser.parse_args()
    python313 = args.python313 or find_python313()
    if python313 is None:
        print("No Python 3.13 found: pq 0.9.1 will be skipped.", file=sys.stderr)
    else:
        ensure(args.pq_venv, python313, PQ_PACKAGES, "import pq")
    ensure(args.peers_venv, sys.executable, PEER_PACKAGES, "import procrastinate, django_tasks_db")


if __name__ == "__main__":
    main()
