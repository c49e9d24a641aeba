"""Smoke tests of the benchmark tools: they run on tiny sizes and report sane figures.

No speed is asserted here: figures depend on the machine. What is asserted is that every
workload runs with real workers, reports the figures the docs name, and leaves no rows.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import subprocess
import sys
from io import StringIO
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from django.core.management import CommandError, call_command
from django.db import connection

from django_pq.bench import QUEUE, noop, record_start
from django_pq.models import Task, Worker
from tests.worker.conftest import test_database_url

REPO = Path(__file__).resolve().parents[1]

TINY = [
    "--tasks=12",
    "--concurrency=2",
    "--enqueue-count=5",
    "--bulk-count=20",
    "--latency-samples=2",
    "--idle-seconds=0.5",
    "--forks=5",
]


#: The benchmark's tasks are django-pq's own: allowed by name, as pq_bench asks users to.
BENCH_ALLOWED = ["tests.testapp", "django_pq.bench"]


@pytest.fixture
def bench_env(transactional_db: None, monkeypatch: pytest.MonkeyPatch, settings: Any) -> None:
    """Workers started by pq_bench use the test database and the test settings."""
    monkeypatch.setenv("DATABASE_URL", test_database_url())
    monkeypatch.setenv("DJANGO_SETTINGS_MODULE", "tests.settings")
    monkeypatch.setenv("PYTHONPATH", str(REPO))
    settings.PQ_ALLOWED_MODULES = BENCH_ALLOWED
    monkeypatch.setenv("DJANGO_PQ_TEST_SETTINGS", json.dumps({"PQ_ALLOWED_MODULES": BENCH_ALLOWED}))


def run_bench(*args: str) -> str:
    out = StringIO()
    call_command("pq_bench", *TINY, *args, stdout=out, stderr=StringIO())
    return out.getvalue()


@pytest.mark.slow
def test_pq_bench_reports_every_workload_and_cleans_up(bench_env: None) -> None:
    report = json.loads(run_bench("--json"))
    results = report["results"]
    assert set(results) == {"fork", "enqueue", "drain", "latency", "idle"}
    assert results["fork"]["ms_per_fork"] > 0
    assert results["fork"]["parallel_per_second"] > 0
    assert results["enqueue"]["single_per_second"] > 0
    assert results["enqueue"]["bulk_per_second"] > 0
    assert results["drain"]["tasks"] == 12
    assert results["drain"]["per_second"] > 0
    assert results["drain"]["cpu_ms_per_task"] > 0
    latency = results["latency"]
    assert latency["samples"] == 2
    assert 0 < latency["p50_ms"] <= latency["p95_ms"] <= latency["p99_ms"] <= latency["max_ms"]
    assert results["idle"]["per_second"] >= 0
    assert report["machine"]["postgres"]
    assert report["machine"]["cpus"] >= 1
    # Nothing of the benchmark is left behind.
    assert not Task.objects.filter(queue=QUEUE).exists()
    assert not Worker.objects.filter(queues=[QUEUE]).exists()


@pytest.mark.slow
def test_pq_bench_prints_a_table_for_chosen_workloads(bench_env: None) -> None:
    table = run_bench("--only=drain", "--only=fork")
    assert "drain throughput, no-op tasks (/s)" in table
    assert "drain / fork floor at concurrency" in table
    assert "pickup latency" not in table


def test_pq_bench_leaves_the_projects_own_tasks_alone(bench_env: None) -> None:
    from django_pq.enqueueing import enqueue

    mine = enqueue(noop)
    run_bench("--only=enqueue")
    assert Task.objects.filter(pk=mine.pk).exists()
    assert not Task.objects.filter(queue=QUEUE).exists()


@pytest.mark.parametrize(
    ("flag", "message"),
    [("--tasks=0", "tasks must be at least 1"), ("--idle-seconds=0", "idle-seconds")],
)
def test_pq_bench_refuses_bad_sizes(flag: str, message: str) -> None:
    with pytest.raises(CommandError, match=message):
        call_command("pq_bench", flag, stdout=StringIO(), stderr=StringIO())


def test_pq_bench_asks_for_its_module_to_be_allowed(transactional_db: None) -> None:
    with pytest.raises(CommandError, match=r"add 'django_pq\.bench' to PQ_ALLOWED_MODULES"):
        run_bench()


def test_record_start_appends_a_sample_line(tmp_path: Path) -> None:
    path = tmp_path / "starts"
    path.touch()
    record_start(str(path), 3)
    record_start(str(path), 4)
    lines = path.read_text().splitlines()
    assert [line.split()[0] for line in lines] == ["3", "4"]
    assert all(float(line.split()[1]) > 0 for line in lines)
    assert noop() is None


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


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("psql") is None, reason="compare.py drives psql")
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
