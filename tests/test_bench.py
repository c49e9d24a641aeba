"""Smoke tests of the benchmark tools in ``benchmarks/``: they run on tiny sizes and report.

No speed is asserted here: figures depend on the machine. What is asserted is that every
workload of django-pq's driver runs with real workers, reports the figures the
performance page names, and leaves no rows; that the side-by-side script renders its page;
and that the worker profile times every target it names.
"""

from __future__ import annotations

import ast
import importlib.util
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from django.db import connection

from django_pq.models import Task
from tests.worker.conftest import test_database_url

REPO = Path(__file__).resolve().parents[1]
DRIVER = REPO / "benchmarks" / "drivers" / "djpq_driver.py"
needs_psql = pytest.mark.skipif(shutil.which("psql") is None, reason="the benchmark drives psql")


def run_driver(tmp_path: Path, *args: str, **env: str) -> dict[str, Any]:
    """One workload of django-pq's driver against the test database; its JSON."""
    server = test_database_url().rsplit("/", 1)[0]
    done = subprocess.run(
        [sys.executable, str(DRIVER), *args, "--log", str(tmp_path / "worker.log")],
        capture_output=True,
        text=True,
        timeout=300,
        env={
            **os.environ,
            "DATABASE_URL": f"{server}/{connection.settings_dict['NAME']}",
            "BENCH_ADMIN_URL": f"{server}/postgres",
            "DJANGO_SETTINGS_MODULE": "projects.djpq.settings",
            "PYTHONPATH": str(REPO),
            **env,
        },
    )
    log = tmp_path / "worker.log"
    assert done.returncode == 0, done.stderr + (log.read_text() if log.exists() else "")
    return dict(json.loads(done.stdout.strip().splitlines()[-1]))


def assert_no_benchmark_rows() -> None:
    assert not Task.objects.filter(queue="bench").exists()


@pytest.mark.slow
def test_driver_drains_with_real_workers(tmp_path: Path, transactional_db: None) -> None:
    drain = run_driver(tmp_path, "drain", "--tasks", "6", "--concurrency", "2")
    assert drain["tasks"] == 6
    assert drain["per_second"] > 0
    assert drain["cpu_ms_per_task"] > 0
    two = run_driver(tmp_path, "drain", "--tasks", "4", "--concurrency", "1", "--workers", "2")
    assert two["workers"] == 2
    assert two["per_second"] > 0
    assert_no_benchmark_rows()


@pytest.mark.slow
def test_driver_passes_worker_flags(tmp_path: Path, transactional_db: None) -> None:
    reuse = run_driver(
        tmp_path, "drain", "--tasks", "6", BENCH_DJPQ_WORKER_ARGS="--tasks-per-child=3"
    )
    assert reuse["per_second"] > 0
    # Six tasks in children of three: two forks, not six.
    log = (tmp_path / "worker.log").read_text()
    assert len({line.rsplit(" ", 1)[-1] for line in log.splitlines() if "in pid" in line}) <= 4
    assert_no_benchmark_rows()


@pytest.mark.slow
def test_driver_measures_latency_enqueue_and_fork(tmp_path: Path, transactional_db: None) -> None:
    latency = run_driver(tmp_path, "latency", "--samples", "2")
    assert latency["samples"] == 2
    assert 0 < latency["p50_ms"] <= latency["p95_ms"] <= latency["p99_ms"] <= latency["max_ms"]
    enqueue = run_driver(tmp_path, "enqueue", "--count", "3", "--bulk", "5")
    assert enqueue["single_per_second"] > 0
    assert enqueue["bulk_per_second"] > 0
    fork = run_driver(tmp_path, "fork", "--forks", "5", "--concurrency", "2")
    assert fork["forks"] == 5
    assert fork["ms_per_fork"] > 0
    assert fork["parallel_per_second"] > 0
    assert_no_benchmark_rows()


@pytest.mark.slow
@needs_psql
def test_driver_counts_an_idle_workers_commits(tmp_path: Path, transactional_db: None) -> None:
    idle = run_driver(tmp_path, "idle", "--seconds", "0.5")
    assert idle["seconds"] >= 0.5
    assert idle["commits"] >= 0
    assert_no_benchmark_rows()


# -- the side-by-side script ---------------------------------------------------------------


def load_compare() -> ModuleType:
    spec = importlib.util.spec_from_file_location("bench_compare", REPO / "benchmarks/compare.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def figure(median: float) -> dict[str, float]:
    return {"median": median, "min": median * 0.9, "max": median * 1.1}


def fake_results() -> dict[str, Any]:
    summary = {
        "pq": {
            "drain": {"per_second": figure(30), "cpu_ms_per_task": figure(19)},
            "latency": {"p50_ms": figure(500), "p95_ms": figure(900), "p99_ms": figure(990)},
            "enqueue": {"single_per_second": figure(200)},
            "idle": {"per_second": figure(3.8)},
        },
        "django-pq": {
            "fork": {
                "ms_per_fork": figure(5),
                "serial_per_second": figure(200),
                "parallel_per_second": figure(300),
            },
            "drain": {"per_second": figure(240), "cpu_ms_per_task": figure(4)},
            "latency": {"p50_ms": figure(6), "p95_ms": figure(9), "p99_ms": figure(12)},
            "enqueue": {"single_per_second": figure(400), "bulk_per_second": figure(12000)},
            "idle": {"per_second": figure(0.1)},
        },
    }
    return {
        "generated": "2026-01-01 00:00 UTC",
        "machine": {
            "cpus": 2,
            "cpu_model": "Test CPU",
            "memory_gb": 24,
            "kernel": "6",
            "os": "Debian",
            "postgres": "15.0",
        },
        "versions": {"pq": "0.9.1 (Python 3.13)", "django-pq": "0.1.0 (Python 3.11)"},
        "sizes": {"rounds": 3},
        "skipped": {"procrastinate": "no interpreter at /nowhere"},
        "duration_seconds": 1,
        "summary": summary,
        "history": {"finished_rows": 1000000, "per_second": 230.0},
        "raw": {},
    }


def test_compare_renders_ratios_and_targets() -> None:
    page = load_compare().render(fake_results())
    assert "| CPUs | 2 x Test CPU |" in page
    assert "procrastinate | skipped: no interpreter at /nowhere" in page
    drain_row = next(line for line in page.splitlines() if line.startswith("| Drain, 2,000"))
    assert "240 (216-264)" in drain_row
    assert "8.00x" in drain_row  # 240 / 30
    latency_row = next(line for line in page.splitlines() if "p50 (ms)" in line)
    assert "83.33x" in latency_row  # lower is better: 500 / 6
    assert "| Drain >= 5x pq | 8.00x | met |" in page.replace("≥", ">=")
    assert "| Idle worker ≤ 0.2 commits/s | 0.10/s | met |" in page
    assert "finished rows within 10% of empty | 230.0/s (-4%) | met |" in page


def test_before_and_after_report_orients_ratios_so_above_one_is_better(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.syspath_prepend(str(REPO / "benchmarks"))  # as when run as a script
    spec = importlib.util.spec_from_file_location("bench_ab", REPO / "benchmarks/ab.py")
    assert spec is not None and spec.loader is not None
    ab = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(ab)

    def side(drain: float, cpu: float, p50: float) -> dict[str, list[dict[str, float]]]:
        return {
            "drain": [{"per_second": drain, "cpu_ms_per_task": cpu}] * 3,
            "latency": [{"p50_ms": p50, "p95_ms": p50 * 2}] * 3,
            "enqueue": [{"single_per_second": 100.0, "bulk_per_second": 1000.0}] * 3,
        }

    page = ab.report(
        {"before": side(100, 10, 8), "after": side(110, 8, 4)},
        {"before": "abc1234", "after": "work tree"},
    )
    rows = {line.split(" | ")[0].strip("| "): line for line in page.splitlines()}
    assert rows["Drain, 2,000 no-op tasks, concurrency 2 (tasks/s)"].endswith("| 1.10x |")
    assert rows["worker CPU per task, incl. start-up (ms)"].endswith("| 1.25x |")  # 10 / 8
    assert rows["Pickup latency at idle, p50 (ms)"].endswith("| 2.00x |")  # 8 / 4
    assert "before (abc1234)" in page


@pytest.mark.slow
@needs_psql
def test_compare_quick_run_of_django_pq(tmp_path: Path, transactional_db: None) -> None:
    params = connection.settings_dict
    admin = test_database_url().rsplit("/", 1)[0] + "/" + params["NAME"]
    output = tmp_path / "results.json"
    done = subprocess.run(
        [
            sys.executable,
            str(REPO / "benchmarks/compare.py"),
            "--quick",
            "--systems",
            "django-pq",
            "--admin-url",
            admin,
            "--db-prefix",
            "test_bench_",
            "--json",
            str(output),
        ],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )
    compare = load_compare()
    compare.psql(admin, "DROP DATABASE IF EXISTS test_bench_djpq WITH (FORCE)")
    assert done.returncode == 0, done.stderr
    data = json.loads(output.read_text())
    drain = data["summary"]["django-pq"]["drain"]["per_second"]
    assert drain["min"] <= drain["median"] <= drain["max"]
    assert "## Targets" in done.stdout


# -- the worker profile --------------------------------------------------------------------

PROFILE = REPO / "benchmarks" / "profile_worker.py"


def profile_targets() -> list[tuple[str, str]]:
    """The script's TARGETS list, read from its source (importing it sets Django up)."""
    tree = ast.parse(PROFILE.read_text())
    node = next(
        node.value
        for node in tree.body
        if isinstance(node, ast.Assign) and getattr(node.targets[0], "id", "") == "TARGETS"
    )
    return list(ast.literal_eval(node))


def run_profile(*prelude: str) -> subprocess.CompletedProcess[str]:
    """The profile on four tasks, against the test database, after ``prelude`` statements."""
    server = test_database_url().rsplit("/", 1)[0]
    code = "\n".join(
        [
            "import runpy, sys",
            *prelude,
            f"sys.argv = [{str(PROFILE)!r}, '--tasks', '4']",
            f"runpy.run_path({str(PROFILE)!r}, run_name='__main__')",
        ]
    )
    return subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        timeout=300,
        env={
            **os.environ,
            "DATABASE_URL": f"{server}/{connection.settings_dict['NAME']}",
            "DJANGO_SETTINGS_MODULE": "projects.djpq.settings",
            "PYTHONPATH": os.pathsep.join(
                [str(REPO / "benchmarks"), str(REPO / "benchmarks" / "drivers"), str(REPO)]
            ),
        },
    )


@pytest.mark.slow
def test_profile_reports_every_target(transactional_db: None) -> None:
    done = run_profile()
    assert done.returncode == 0, done.stderr
    assert "4 tasks, concurrency 2" in done.stdout
    rows = {line[:52].strip(): line[52:].split() for line in done.stdout.splitlines()[2:]}
    for target, label in profile_targets():
        assert label in rows, f"{target} ({label}) not reported:\n{done.stdout}"
        assert int(rows[label][0]) > 0
    # Claims and finishes are told apart.
    assert any(label.startswith("parent: SQL") and "claim" in label for label in rows)
    assert any(label.startswith("parent: SQL") and "finish" in label for label in rows)
    assert_no_benchmark_rows()


def test_profile_fails_naming_a_target_the_worker_lost(transactional_db: None) -> None:
    # What a rename in the worker looks like to the script: the method is gone.
    done = run_profile(
        "import django; django.setup()",
        "from django_pq.worker.loop import WorkerLoop",
        "del WorkerLoop._write_and_claim",
    )
    assert done.returncode != 0
    assert "target django_pq.worker.loop:WorkerLoop._write_and_claim is missing" in done.stderr
    assert "update TARGETS" in done.stderr
    assert_no_benchmark_rows()
