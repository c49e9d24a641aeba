"""Before and after: django-pq at two revisions, side by side, on the same workloads.

For a change that must not make things slower (a refactor, a fix on the hot path): each
revision gets its own database and runs this repository's django-pq driver
(``drivers/djpq_driver.py``, the timing rules of ``drivers/common.py``), the two taking
turns round after round, so that whatever else the machine does falls on both. It prints
medians, spreads (min-max) and the after/before ratio of each figure, oriented so that
above 1x is better, as a Markdown table.

    python benchmarks/ab.py --before d8c0bca                 # before: a revision
    python benchmarks/ab.py --before d8c0bca --after HEAD    # default after: the work tree

Run it on a quiet machine: nothing else may use the CPUs or the Postgres server.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from compare import psql  # the side-by-side benchmark's, beside this script

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
DRIVER = HERE / "drivers" / "djpq_driver.py"

#: (label, workload, result key, higher is better)
FIGURES = [
    ("Drain, 2,000 no-op tasks, concurrency 2 (tasks/s)", "drain", "per_second", True),
    ("  worker CPU per task, incl. start-up (ms)", "drain", "cpu_ms_per_task", False),
    ("Pickup latency at idle, p50 (ms)", "latency", "p50_ms", False),
    ("Pickup latency at idle, p95 (ms)", "latency", "p95_ms", False),
    ("Enqueue, one transaction each (tasks/s)", "enqueue", "single_per_second", True),
    ("Enqueue, one bulk call (tasks/s)", "enqueue", "bulk_per_second", True),
]
WORKLOADS = {
    "drain": ["drain", "--tasks", "2000", "--concurrency", "2"],
    "latency": ["latency", "--samples", "20"],
    "enqueue": ["enqueue", "--count", "1000", "--bulk", "2000"],
}


def checkout(revision: str, into: Path) -> Path:
    """A detached work tree of ``revision`` (the caller removes it)."""
    subprocess.run(
        ["git", "-C", str(REPO), "worktree", "add", "--detach", "--force", str(into), revision],
        check=True,
        capture_output=True,
    )
    return into


def driver(tree: Path, url: str, *args: str) -> dict[str, Any]:
    """Run one workload of the driver with ``tree``'s django-pq; its JSON result."""
    env = {**os.environ, "DATABASE_URL": url, "PYTHONPATH": str(tree)}
    # In the tree: its workers run ``python -m django``, which puts the working directory
    # first on the path, and it must not be another checkout.
    done = subprocess.run(
        [sys.executable, str(DRIVER), *args],
        env=env,
        cwd=tree,
        capture_output=True,
        text=True,
        timeout=900,
    )
    if done.returncode != 0:
        raise SystemExit(f"{tree}: {' '.join(args)} failed:\n{done.stderr[-3000:]}")
    return dict(json.loads(done.stdout.strip().splitlines()[-1]))


def imported_from(tree: Path) -> Path:
    """Where the driver's django-pq comes from with ``tree`` first on the path."""
    done = subprocess.run(
        [sys.executable, "-c", "import django_pq; print(django_pq.__file__)"],
        env={**os.environ, "PYTHONPATH": str(tree)},
        cwd=tree,
        capture_output=True,
        text=True,
        check=True,
    )
    return Path(done.stdout.strip()).resolve().parent


def report(results: dict[str, dict[str, list[dict[str, Any]]]], names: dict[str, str]) -> str:
    lines = [
        f"| Figure | before ({names['before']}) | after ({names['after']}) | after vs before |",
        "|---|---|---|---|",
    ]
    for label, workload, key, higher_is_better in FIGURES:
        cells, medians = [], {}
        for side in ("before", "after"):
            values = [run[key] for run in results[side][workload] if run.get(key) is not None]
            medians[side] = statistics.median(values)
            cells.append(f"{medians[side]:.3g} ({min(values):.3g}-{max(values):.3g})")
        ratio = medians["after"] / medians["before"]
        ratio = ratio if higher_is_better else 1 / ratio
        lines.append(f"| {label} | {cells[0]} | {cells[1]} | {ratio:.2f}x |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--before", required=True, help="a git revision")
    parser.add_argument("--after", help="a git revision (default: this work tree)")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--admin-url", default="postgresql://postgres@127.0.0.1:5432/postgres")
    parser.add_argument("--json", type=Path, help="also write every run's figures here")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="pq-ab-") as scratch:
        trees = {"before": checkout(args.before, Path(scratch) / "before")}
        trees["after"] = checkout(args.after, Path(scratch) / "after") if args.after else REPO
        try:
            results = run_rounds(args, trees)
        finally:
            for side in ("before", "after"):
                if trees[side] != REPO:
                    subprocess.run(
                        ["git", "-C", str(REPO), "worktree", "remove", "--force", str(trees[side])],
                        check=False,
                    )
    if args.json:
        args.json.write_text(json.dumps(results, indent=1))
    print(report(results, {"before": args.before, "after": args.after or "work tree"}))


def run_rounds(
    args: argparse.Namespace, trees: dict[str, Path]
) -> dict[str, dict[str, list[dict[str, Any]]]]:
    urls = {}
    for side, tree in trees.items():
        # An installed django-pq must not stand in for the revision under test.
        if imported_from(tree) != (tree / "django_pq").resolve():
            raise SystemExit(f"{side}: django_pq is not imported from {tree}")
        database = f"bench_ab_{side}"
        psql(args.admin_url, f"DROP DATABASE IF EXISTS {database} WITH (FORCE)")
        psql(args.admin_url, f"CREATE DATABASE {database}")
        urls[side] = args.admin_url.rsplit("/", 1)[0] + "/" + database
        driver(tree, urls[side], "setup")
    results: dict[str, dict[str, list[dict[str, Any]]]] = {
        side: {workload: [] for workload in WORKLOADS} for side in trees
    }
    for round_number in range(args.rounds):
        # Alternate which side goes first, so neither always runs on a warmer machine.
        order = ("before", "after") if round_number % 2 == 0 else ("after", "before")
        for workload, workload_args in WORKLOADS.items():
            for side in order:
                results[side][workload].append(driver(trees[side], urls[side], *workload_args))
        print(f"round {round_number + 1}/{args.rounds} done", file=sys.stderr)
    return results


if __name__ == "__main__":
    main()
