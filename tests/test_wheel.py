"""The wheel ships the product: django_pq and its metadata, nothing only our tests or
benchmarks need. The benchmark lives in benchmarks/, the throwaway PostgreSQL
in devdb.py at the repository root; neither may creep back into the package.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import zipfile
from pathlib import Path, PurePosixPath

import pytest

REPO = Path(__file__).resolve().parents[1]

#: What only the repository's tests and benchmarks use; none of it belongs in the wheel.
NOT_SHIPPED = ("bench", "devdb", "conftest", "profile_worker", "compare", "example_project")


def build_wheel(source: Path, into: Path) -> list[str]:
    """Build the wheel of ``source`` (copied, so the tree gets no build/ litter); its files."""
    tree = into / "source"
    shutil.copytree(
        source,
        tree,
        ignore=shutil.ignore_patterns(
            ".git", ".tox", "__pycache__", "build", "dist", "*.egg-info", "site"
        ),
    )
    done = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(into), str(tree)],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr
    [wheel] = into.glob("*.whl")
    with zipfile.ZipFile(wheel) as archive:
        return archive.namelist()


def unshipped(names: list[str]) -> list[str]:
    """The files in ``names`` that are not the product."""
    wrong = []
    for name in names:
        path = PurePosixPath(name)
        top = path.parts[0]
        if top.endswith(".dist-info"):
            continue
        if (
            top != "django_pq"
            or any(word in part for part in path.parts for word in NOT_SHIPPED)
            or path.name.startswith("test_")
            or "tests" in path.parts
        ):
            wrong.append(name)
    return wrong


@pytest.mark.slow
def test_the_wheel_holds_only_the_product(tmp_path: Path) -> None:
    names = build_wheel(REPO, tmp_path)
    assert unshipped(names) == []
    # ... and all of the product: code, types marker, migrations, templates, commands.
    for needed in (
        "django_pq/__init__.py",
        "django_pq/py.typed",
        "django_pq/migrations/0001_initial.py",
        "django_pq/testing.py",
        "django_pq/management/commands/pq_worker.py",
    ):
        assert needed in names
    assert any(name.startswith("django_pq/templates/") for name in names)


def test_the_check_names_what_only_tests_and_benchmarks_use() -> None:
    # The files the wheel shipped before the benchmark and the dev database moved out.
    assert unshipped(
        [
            "django_pq/bench.py",
            "django_pq/devdb.py",
            "django_pq/management/commands/pq_bench.py",
            "django_pq/testing.py",
            "benchmarks/compare.py",
            "tests/settings.py",
            "django_pq_tasks-0.1.0.dist-info/RECORD",
        ]
    ) == [
        "django_pq/bench.py",
        "django_pq/devdb.py",
        "django_pq/management/commands/pq_bench.py",
        "benchmarks/compare.py",
        "tests/settings.py",
    ]
