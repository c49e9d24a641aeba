"""A database for our tests, the example project and the benchmarks: ``DATABASE_URL``, or a
throwaway PostgreSQL of our own.

This module is development tooling of the repository, not part of django-pq: it sits
outside ``django_pq/`` so the wheel does not ship it (``tests/test_wheel.py`` checks).
Projects that want the same for their own test suites have well-kept tools for it
(pytest-postgresql, pgserver, testing.postgresql); see docs/how-to/testing.md.

``database_url()`` returns ``DATABASE_URL`` when it is set. Otherwise it starts a private
cluster in a temporary directory (from the PostgreSQL binaries on the machine, or the
``pgserver`` package where there are none), exports its URL as ``DATABASE_URL`` so child
processes (workers started by tests, the demo's worker) use the same one, and stops and
removes it when the process that started it exits.

PostgreSQL refuses to run as root, so under root the cluster runs as the ``postgres`` user.
"""

from __future__ import annotations

import atexit
import glob
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

__all__ = ["ThrowawayPostgres", "database_settings", "database_url"]

_NO_POSTGRES = (
    "django-pq needs PostgreSQL and found none. Either set DATABASE_URL "
    "(e.g. postgresql://user@127.0.0.1:5432/dbname), install the PostgreSQL server "
    "binaries (Debian/Ubuntu: apt install postgresql), or pip install pgserver."
)


def _binary_dir() -> Path | None:
    """The directory of ``initdb``/``pg_ctl``: newest major version wins."""
    candidates = sorted(
        glob.glob("/usr/lib/postgresql/*/bin"), key=lambda path: int(Path(path).parent.name)
    )
    for directory in reversed(candidates):
        if Path(directory, "pg_ctl").exists():
            return Path(directory)
    found = shutil.which("pg_ctl")
    return Path(found).parent if found else None


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class ThrowawayPostgres:
    """A private PostgreSQL cluster in a temporary directory, started and stopped on demand.

    Tests that restart or stop Postgres use their own instance, so they never touch a
    server someone else relies on.
    """

    def __init__(self, *, bin_dir: Path | None = None, fast: bool = True) -> None:
        self.bin_dir = bin_dir or _binary_dir()
        if self.bin_dir is None:
            raise RuntimeError(_NO_POSTGRES)
        self.fast = fast
        self.port = _free_port()
        self.root = Path(tempfile.mkdtemp(prefix="django-pq-postgres-"))
        self.data_dir = self.root / "data"
        self.log_file = self.root / "postgres.log"
        self._as_user: list[str] = []
        if os.geteuid() == 0:
            # initdb and postgres refuse root; Debian's packages create this user.
            self._as_user = ["runuser", "-u", "postgres", "--"]
            shutil.chown(self.root, "postgres", "postgres")
        self._initdb()

    @property
    def url(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def _run(self, *command: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        assert self.bin_dir is not None
        return subprocess.run(
            [*self._as_user, str(self.bin_dir / command[0]), *command[1:]],
            check=check,
            capture_output=True,
            text=True,
        )

    def _initdb(self) -> None:
        self._run(
            "initdb",
            "-D",
            str(self.data_dir),
            "-U",
            "postgres",
            "--auth=trust",
            "-E",
            "UTF8",
            "--locale=C",
            "--no-sync",
        )

    def start(self) -> ThrowawayPostgres:
        options = [
            f"-p {self.port}",
            f"-k {self.root}",
            "-c listen_addresses=127.0.0.1",
            "-c max_connections=200",
        ]
        if self.fast:
            # Throwaway data: surviving a machine crash only costs time here. Commits stay
            # synchronous: an immediate restart (the fault suite's) is a crash of the
            # server's processes, and a commit it acknowledged from WAL buffers not yet
            # written would vanish, though the kernel keeps what fsync=off did not flush.
            options += ["-c fsync=off", "-c full_page_writes=off"]
        self._run(
            "pg_ctl",
            "-D",
            str(self.data_dir),
            "-l",
            str(self.log_file),
            "-o",
            " ".join(options),
            "-w",
            "-t",
            "60",
            "start",
        )
        return self

    def stop(self, mode: str = "fast") -> None:
        self._run("pg_ctl", "-D", str(self.data_dir), "-m", mode, "-w", "stop", check=False)

    def restart(self, mode: str = "fast") -> None:
        self.stop(mode)
        self.start()

    def is_running(self) -> bool:
        result = self._run("pg_ctl", "-D", str(self.data_dir), "status", check=False)
        return result.returncode == 0

    def destroy(self) -> None:
        self.stop("immediate")
        shutil.rmtree(self.root, ignore_errors=True)

    def destroy_when_gone(self, owner_pid: int) -> None:
        """Destroy the cluster once ``owner_pid`` exits, however it exits.

        ``atexit`` does not run when a process is killed; a small watcher process does.
        """
        watcher = (
            "import os, sys, time\n"
            "from pathlib import Path\n"
            "from devdb import ThrowawayPostgres\n"
            "owner = int(sys.argv[1])\n"
            "while Path(f'/proc/{owner}').exists():\n"
            "    time.sleep(1)\n"
            "cluster = ThrowawayPostgres.__new__(ThrowawayPostgres)\n"
            "cluster.bin_dir, cluster.root = Path(sys.argv[2]), Path(sys.argv[3])\n"
            "cluster.data_dir = cluster.root / 'data'\n"
            "cluster._as_user = sys.argv[4:]\n"
            "cluster.destroy()\n"
        )
        subprocess.Popen(
            [
                sys.executable,
                "-c",
                watcher,
                str(owner_pid),
                str(self.bin_dir),
                str(self.root),
                *self._as_user,
            ],
            start_new_session=True,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            env={
                # Not measured by coverage: it outlives the test run and would write its
                # data file while (or after) the run's data is combined.
                **{k: v for k, v in os.environ.items() if not k.startswith("COVERAGE_PROCESS_")},
                "PYTHONPATH": str(Path(__file__).resolve().parent),
            },
        )


def _start_embedded() -> tuple[str, Any]:
    try:
        import pgserver  # type: ignore[import-not-found]
    except ImportError:
        raise RuntimeError(_NO_POSTGRES) from None
    server = pgserver.get_server(
        tempfile.mkdtemp(prefix="django-pq-pgserver-"), cleanup_mode="delete"
    )
    return server.get_uri(), server


def database_url() -> str:
    """``DATABASE_URL``, or the URL of a throwaway cluster started now for this process tree."""
    url = os.environ.get("DATABASE_URL")
    if url:
        return url
    if _binary_dir() is not None:
        cluster = ThrowawayPostgres().start()
        atexit.register(cluster.destroy)
        cluster.destroy_when_gone(os.getpid())
        url = cluster.url
    else:
        url, server = _start_embedded()
        atexit.register(server.cleanup)
    os.environ["DATABASE_URL"] = url
    os.environ["DJANGO_PQ_THROWAWAY_DB"] = "1"
    # Wait until it answers TCP, so the first connection does not race the startup.
    parts = urlsplit(url)
    deadline = time.monotonic() + 30
    while parts.port and time.monotonic() < deadline:
        try:
            socket.create_connection((parts.hostname or "127.0.0.1", parts.port), 1).close()
            break
        except OSError:
            time.sleep(0.05)
    return url


def database_settings(url: str | None = None, **extra: Any) -> dict[str, Any]:
    """A ``DATABASES`` entry for a ``postgresql://`` URL (``database_url()`` by default)."""
    parts = urlsplit(url or database_url())
    if parts.scheme not in {"postgres", "postgresql", "pgsql"}:
        raise ValueError(f"DATABASE_URL must be a postgresql:// URL, not {parts.scheme}://")
    settings: dict[str, Any] = {
        "ENGINE": "django.db.backends.postgresql",
        "NAME": unquote(parts.path.lstrip("/")) or "postgres",
        "USER": unquote(parts.username or ""),
        "PASSWORD": unquote(parts.password or ""),
        "HOST": parts.hostname or "",
        "PORT": str(parts.port or ""),
    }
    settings.update(extra)
    return settings
