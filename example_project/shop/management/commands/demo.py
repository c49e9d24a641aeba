"""``manage.py demo``: the whole shop on one command: database, admin user, worker, web server.

With ``--check`` it does the same, proves it end to end (the admin answers, an order placed
through the shop page gets its receipt from the worker) and exits: this is how CI runs it.
"""

from __future__ import annotations

import contextlib
import http.cookiejar
import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from types import FrameType
from typing import Any

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.management import call_command, get_commands
from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.db import connections

from django_pq.models import Periodic, Status, Task
from shop.models import Order, Product

DEMO_USERNAME = "admin"
DEMO_PASSWORD = "admin"
PRODUCTS = [
    ("Espresso beans 1 kg", "BEAN-1KG", "24.90", 40),
    ("Hand grinder", "GRIND-01", "69.00", 12),
    ("Milk jug", "JUG-350", "14.50", 3),
]
WORKER_DRAIN_SECONDS = 10
WORKER_STOP_SECONDS = WORKER_DRAIN_SECONDS + 10
SERVER_START_SECONDS = 30


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _safe_url(url: str) -> str:
    """The URL without its password, fit to print."""
    parts = urllib.parse.urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@", 1)
    return urllib.parse.urlunsplit(parts._replace(netloc=netloc))


def _raise_keyboard_interrupt(signum: int, frame: FrameType | None) -> None:
    # SIGTERM takes the same way out as Ctrl-C: stop the children, then exit.
    raise KeyboardInterrupt


@contextlib.contextmanager
def own_terminal() -> Iterator[None]:
    """Be the terminal's foreground process group while the demo runs.

    Under a wrapper such as tox, the demo shares the wrapper's process group, so Ctrl-C
    reaches both: tox then forwards more interrupts (cutting the worker's drain short and
    the throwaway PostgreSQL's removal) and reports the run as interrupted. In a group of
    its own that holds the terminal, Ctrl-C reaches only the demo, which stops everything
    and exits 0; the terminal goes back to the wrapper when the demo is done. Run straight
    from a shell, the demo already leads its own group and nothing changes.
    """
    try:
        terminal = sys.stdin.fileno()
        foreground = os.tcgetpgrp(terminal) if os.isatty(terminal) else -1
    except (OSError, ValueError):
        foreground = -1
    if foreground != os.getpgrp() or os.getpgrp() == os.getpid():
        yield
        return
    # A group that is not in the foreground gets SIGTTOU for taking the terminal.
    previous = signal.signal(signal.SIGTTOU, signal.SIG_IGN)
    try:
        os.setpgid(0, 0)
        os.tcsetpgrp(terminal, os.getpgrp())
        yield
    finally:
        with contextlib.suppress(OSError):
            os.tcsetpgrp(terminal, foreground)
        signal.signal(signal.SIGTTOU, previous)


class Command(BaseCommand):
    help = (
        "Run the example shop: migrate, create the admin/admin superuser, start a pq_worker "
        "(when available) and the development server. Ctrl-C stops everything."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--port",
            type=int,
            default=None,
            help="Port of the web server on 127.0.0.1 (default: 8000; with --check, a free one).",
        )
        parser.add_argument(
            "--check",
            action="store_true",
            help="Start everything, place one order, wait for its receipt, print a summary, exit.",
        )
        parser.add_argument(
            "--timeout",
            type=float,
            default=60.0,
            help="With --check: seconds to wait for the receipt task (default: 60).",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        self.manage_py = str(Path(settings.BASE_DIR) / "manage.py")
        port = options["port"] or (_free_port() if options["check"] else 8000)
        self.base_url = f"http://127.0.0.1:{port}"
        self.worker: subprocess.Popen[bytes] | None = None
        self.server: subprocess.Popen[bytes] | None = None

        self.prepare_database()
        previous_handler = signal.signal(signal.SIGTERM, _raise_keyboard_interrupt)
        try:
            with own_terminal():
                self.run(port, options)
        finally:
            signal.signal(signal.SIGTERM, previous_handler)
            # Stopped: what is left (removing the throwaway PostgreSQL at exit) must not be
            # cut short by another interrupt into a traceback.
            signal.signal(signal.SIGINT, signal.SIG_IGN)

    def run(self, port: int, options: dict[str, Any]) -> None:
        """Start the worker and the server; check or serve until Ctrl-C; stop them."""
        try:
            self.start_worker()
            self.start_server(port)
            if options["check"]:
                self.run_check(options["timeout"])
            else:
                self.serve()
        except KeyboardInterrupt:
            self.stdout.write("\nStopping.")
        finally:
            self.stop_children()

    def say(self, message: str) -> None:
        self.stdout.write(self.style.MIGRATE_HEADING("demo: ") + message)

    def prepare_database(self) -> None:
        url = _safe_url(os.environ.get("DATABASE_URL", ""))
        if os.environ.get("DJANGO_PQ_THROWAWAY_DB"):
            self.say(f"throwaway PostgreSQL at {url} (deleted when the demo exits)")
        else:
            self.say(f"PostgreSQL from DATABASE_URL: {url}")
        call_command("migrate", interactive=False, verbosity=0)
        self.say("database migrated")

        user_model = get_user_model()
        if user_model.objects.filter(username=DEMO_USERNAME).exists():
            self.say(f"superuser {DEMO_USERNAME!r} already exists (password unchanged)")
        else:
            user_model.objects.create_superuser(DEMO_USERNAME, "admin@example.com", DEMO_PASSWORD)
            self.say(f"superuser created: {DEMO_USERNAME} / {DEMO_PASSWORD}")

        for name, sku, price, stock in PRODUCTS:
            Product.objects.get_or_create(
                sku=sku, defaults={"name": name, "price": price, "stock": stock}
            )
        self.say(f"{Product.objects.count()} products in the shop")

        # shop.tasks declares sync_inventory with @pq.periodic; this writes the schedule.
        call_command("pq_sync_schedules", verbosity=0)
        schedule = Periodic.objects.get(name="shop.tasks:sync_inventory", key="")
        self.say(f"periodic schedule {schedule}: {schedule.description}")
        # The parent only waits from here on; its connection would sit idle for hours.
        connections.close_all()

    def start_worker(self) -> None:
        if "pq_worker" not in get_commands():
            self.say(
                "no pq_worker command in this version of django-pq: "
                "orders will be queued but no receipts sent"
            )
            return
        # The demo's tasks take milliseconds; a short drain keeps Ctrl-C snappy.
        command = [
            sys.executable, self.manage_py, "pq_worker", "--concurrency", "2",
            "--drain-timeout", str(WORKER_DRAIN_SECONDS),
        ]  # fmt: skip
        # Own process group: Ctrl-C reaches only the demo, which then stops the worker once,
        # letting it drain instead of a second signal killing its tasks.
        self.worker = subprocess.Popen(command, process_group=0)
        self.say(f"worker started (pid {self.worker.pid}): manage.py {' '.join(command[2:])}")

    def start_server(self, port: int) -> None:
        # --noreload: the autoreloader would import the settings in a second process.
        command = [
            sys.executable, self.manage_py, "runserver", f"127.0.0.1:{port}", "--noreload",
        ]  # fmt: skip
        self.server = subprocess.Popen(command, process_group=0)
        status = self.wait_for_server()
        self.say(f"web server answers: GET /admin/login/ -> {status}")

    def wait_for_server(self) -> int:
        assert self.server is not None
        deadline = time.monotonic() + SERVER_START_SECONDS
        while True:
            if self.server.poll() is not None:
                raise CommandError(
                    f"The web server exited with code {self.server.returncode} (see above). "
                    "If the port is in use, pick another with --port."
                )
            try:
                with urllib.request.urlopen(f"{self.base_url}/admin/login/", timeout=2) as reply:
                    return int(reply.status)
            except OSError:
                if time.monotonic() > deadline:
                    raise CommandError(
                        f"The web server did not answer at {self.base_url} "
                        f"within {SERVER_START_SECONDS}s."
                    ) from None
                time.sleep(0.2)

    def serve(self) -> None:
        self.stdout.write("")
        self.say(self.style.SUCCESS(f"shop:  {self.base_url}/"))
        self.say(
            self.style.SUCCESS(f"admin: {self.base_url}/admin/")
            + f"  (log in as {DEMO_USERNAME} / {DEMO_PASSWORD})"
        )
        self.say("press Ctrl-C to stop")
        while True:
            self.ensure_children_alive()
            time.sleep(0.5)

    def ensure_children_alive(self) -> None:
        if self.server is not None and self.server.poll() is not None:
            raise CommandError(f"The web server exited with code {self.server.returncode}.")
        if self.worker is not None and self.worker.poll() is not None:
            raise CommandError(
                f"The worker exited with code {self.worker.returncode}; see its output above."
            )

    def run_check(self, timeout: float) -> None:
        order_id = self.place_order_through_the_page()
        self.say(f"order #{order_id} placed through the shop page")
        order = Order.objects.get(pk=order_id)
        task = Task.objects.get(client_id=order.receipt_client_id)
        self.say(f"receipt task #{task.pk} {task.name} is {task.status}")
        if self.worker is None:
            self.say("no worker running, so the receipt stays queued")
        else:
            task = self.wait_for_task(task, timeout)
            order.refresh_from_db()
            if task.status != Status.COMPLETED or order.receipt_sent_at is None:
                raise CommandError(
                    f"Receipt task #{task.pk} ended {task.status} "
                    f"({task.error_code or 'no error code'}): {task.error or 'no error'}"
                )
            self.say(f"receipt task #{task.pk} completed; receipt sent at {order.receipt_sent_at}")
        connections.close_all()
        self.say(self.style.SUCCESS("check passed"))

    def place_order_through_the_page(self) -> int:
        """POST the order form like a browser (CSRF cookie and token), return the order id."""
        cookies = http.cookiejar.CookieJar()
        opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(cookies))
        with opener.open(f"{self.base_url}/", timeout=10) as reply:
            page = reply.read().decode()
        token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', page)
        product = Product.objects.filter(stock__gte=1).first()
        if token is None or product is None:
            raise CommandError("The shop page has no order form, or no product is in stock.")
        form = urllib.parse.urlencode(
            {
                "csrfmiddlewaretoken": token.group(1),
                "product": product.pk,
                "quantity": 1,
                "email": "demo@example.com",
            }
        ).encode()
        with opener.open(f"{self.base_url}/", data=form, timeout=10) as reply:
            final_url = reply.geturl()
        placed = re.search(r"/orders/(\d+)/$", final_url)
        if placed is None:
            raise CommandError(f"Placing the order did not lead to an order page ({final_url}).")
        return int(placed.group(1))

    def wait_for_task(self, task: Task, timeout: float) -> Task:
        deadline = time.monotonic() + timeout
        while not task.is_finished:
            self.ensure_children_alive()
            if time.monotonic() > deadline:
                raise CommandError(
                    f"Receipt task #{task.pk} still {task.status} after {timeout:g}s."
                )
            time.sleep(0.2)
            task.refresh_from_db()
        return task

    def stop_children(self) -> None:
        """Let the worker drain, then stop the server. A second Ctrl-C kills both at once."""
        try:
            if self.worker is not None and self.worker.poll() is None:
                self.say("stopping the worker (Ctrl-C again to kill it)")
                self.worker.send_signal(signal.SIGTERM)
                self.worker.wait(WORKER_STOP_SECONDS)
            if self.server is not None and self.server.poll() is None:
                self.server.terminate()
                self.server.wait(5)
        except (KeyboardInterrupt, subprocess.TimeoutExpired):
            self.say("killing what is left")
        for child in (self.worker, self.server):
            if child is not None and child.poll() is None:
                child.kill()
                child.wait()
        self.say("stopped")
