"""The chaos soak (``python -m tests.faults.soak``) in a short run: every invariant holds."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from tests.faults.conftest import FIGURES, _django_env
from tests.worker.conftest import REPO


@pytest.mark.slow
def test_a_short_soak_loses_duplicates_and_strands_nothing(tmp_path):
    output = tmp_path / "soak.json"
    env = _django_env("")
    del env["DATABASE_URL"]  # the soak starts its own throwaway PostgreSQL and restarts it
    run = subprocess.run(
        [sys.executable, "-m", "tests.faults.soak", "--minutes", "0.75", "--workers", "3",
         "--rate", "5", "--fault-interval", "1.5", "--output", str(output)],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )  # fmt: skip
    assert output.exists(), run.stderr[-4000:]
    figures = json.loads(output.read_text())
    FIGURES["soak: tasks enqueued"] += figures["tasks enqueued (API)"]
    faults = figures["faults injected"]
    # The invariants first, so a failure names its cause; then that the run did what it
    # says: every kind of fault was injected, and work flowed.
    assert figures["worker exits not caused by our kill -9"] == 0, figures["worker exit causes"]
    assert sum(count for kind, count in faults.items() if "postgres restart" in kind) >= 1
    assert faults.get("worker kill -9", 0) >= 1 and faults.get("hostile row", 0) >= 1, faults
    assert (figures["lost"], figures["duplicated"], figures["stuck running past the lease"]) == (
        0,
        0,
        0,
    ), figures
    assert figures["violations"] == [] and figures["drained"], figures
    assert figures["tasks by status"].get("completed", 0) > 0, figures
    assert run.returncode == 0, run.stderr[-4000:]
