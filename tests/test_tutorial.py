"""The tutorial's commands, run as written against a fresh database, with their outputs.

Setup steps that a test environment already did (venv, pip install, createdb, export) and
long-running ones (runserver, a worker without --burst, the demo) are skipped; every other
command runs, must succeed, and must print what the tutorial shows ("…" stands for any text).
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from tests.conftest import connect_like_django
from tests.worker.conftest import REPO, test_database_url

TUTORIAL = REPO / "docs" / "tutorial" / "index.md"
SKIPPED = (
    "python -m venv",
    "pip install",
    "createdb",
    "export ",
    "createsuperuser",
    "runserver",
    "manage.py demo",
)


def console_steps(text: str) -> list[tuple[str, list[str]]]:
    """(command, expected output lines) for every `$ ` command in ```console blocks."""
    steps: list[tuple[str, list[str]]] = []
    for block in re.findall(r"```console\n(.*?)```", text, flags=re.S):
        command: list[str] = []
        for line in block.splitlines():
            if command and command_open(command):
                command.append(line)
            elif line.startswith("$ "):
                command = [line[2:]]
                steps.append(("", []))
            elif steps:
                steps[-1][1].append(line)
            if command and not command_open(command):
                steps[-1] = ("\n".join(command), steps[-1][1])
    return steps


def command_open(lines: list[str]) -> bool:
    """A command continues while a double quote is left open."""
    return "\n".join(lines).count('"') % 2 == 1


def should_run(command: str) -> bool:
    if any(marker in command for marker in SKIPPED):
        return False
    return "pq_worker" not in command or "--burst" in command


def printed(expected: str, output: str) -> bool:
    pattern = ".*".join(re.escape(part) for part in expected.strip().split("…"))
    return re.search(pattern, output) is not None


@pytest.fixture
def tutorial_database(transactional_db: None):
    name = f"tutorial_{uuid.uuid4().hex[:8]}"
    with connect_like_django() as admin:
        admin.execute(f"CREATE DATABASE {name}")
    url = test_database_url().rsplit("/", 1)[0] + f"/{name}"
    yield url
    with connect_like_django() as admin:
        admin.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


def test_the_tutorial_runs_as_written(tutorial_database: str) -> None:
    steps = [(c, out) for c, out in console_steps(TUTORIAL.read_text()) if should_run(c)]
    assert len(steps) >= 8, "the tutorial lost its commands"
    # `python` in the tutorial is the one running these tests (a venv's, or tox's).
    path = f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"
    env = {**os.environ, "DATABASE_URL": tutorial_database, "PATH": path}
    env.pop("DJANGO_SETTINGS_MODULE", None)
    for command, expected in steps:
        result = subprocess.run(
            ["bash", "-c", command], cwd=REPO, env=env, capture_output=True, text=True, timeout=120
        )
        output = result.stdout + result.stderr
        assert result.returncode == 0, f"{command}\n{output}"
        for line in filter(str.strip, expected):
            assert printed(line, output), f"{command}\nexpected: {line}\ngot:\n{output}"


def test_steps_are_parsed_with_their_outputs() -> None:
    text = '```console\n$ echo "a\nb"\na\n$ ls\n```\n'
    assert console_steps(text) == [('echo "a\nb"', ["a"]), ("ls", [])]
