"""End to end in headless Chromium: an operator pauses, resumes and runs a schedule, watches
the run appear, and retries a failed task. Each page is saved as a screenshot artifact."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from django.contrib.auth.models import User
from django.urls import reverse

import django_pq as pq
from django_pq.models import Periodic, Status, Task, Worker
from django_pq.schedules import schedule
from tests.admin.browser import screenshot, submit_and_read_message, wait_for
from tests.admin.conftest import make_task
from tests.testapp import tasks
from tests.worker.conftest import WorkerProcess, run_burst, wait_until

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

# These pages are not about liveness: a default-length lease keeps a loaded CI machine
# (browser, live server and worker on two cores) from turning a late heartbeat into a
# lost task.
PATIENT = {"PQ_LEASE": 30.0, "PQ_HEARTBEAT_INTERVAL": 5.0}


@pytest.fixture
def site(static_root: Path, live_server: Any, browser: Any) -> Callable[[str], None]:
    """Logs the browser in as a superuser; returns a function that opens an admin path."""
    from selenium.webdriver.common.by import By

    User.objects.create_superuser("operator", password="correct horse")
    browser.get(live_server.url + reverse("admin:login"))
    browser.find_element(By.NAME, "username").send_keys("operator")
    browser.find_element(By.NAME, "password").send_keys("correct horse")
    browser.find_element(By.CSS_SELECTOR, "input[type=submit]").click()
    wait_for(browser, lambda d: "Site administration" in d.title)

    def open_page(path: str) -> None:
        browser.get(live_server.url + path)

    return open_page


def run_action(browser: Any, action: str, row_text: str) -> str:
    """Tick the row that shows ``row_text``, choose ``action``, press Go; return the message."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select

    rows = browser.find_elements(By.CSS_SELECTOR, "#result_list tbody tr")
    (row,) = [row for row in rows if row_text in row.text]
    row.find_element(By.CSS_SELECTOR, "input.action-select").click()
    Select(browser.find_element(By.NAME, "action")).select_by_value(action)
    return submit_and_read_message(
        browser, browser.find_element(By.CSS_SELECTOR, "button[name=index]")
    )


def test_pause_resume_and_run_a_schedule_and_watch_the_run(
    site: Callable[[str], None], browser: Any, start_worker: Callable[..., WorkerProcess]
) -> None:
    from selenium.webdriver.common.by import By

    periodic = schedule(tasks.log_run, "from the admin", run_every=dt.timedelta(hours=1))
    schedule(tasks.noop, cron="0 9 * * 1", timezone="Europe/Berlin")
    site(reverse("admin:django_pq_periodic_changelist"))
    assert "No live worker" in browser.page_source
    screenshot(browser, "schedules")

    assert run_action(browser, "pause_schedules", "log_run") == "Paused 1 schedule."
    assert not Periodic.objects.get(pk=periodic.pk).active
    assert run_action(browser, "resume_schedules", "log_run") == "Resumed 1 schedule."
    assert Periodic.objects.get(pk=periodic.pk).active
    assert run_action(browser, "run_schedules_now", "log_run") == "Started 1 run."
    run = Task.objects.get(periodic=periodic)

    rows = browser.find_elements(By.CSS_SELECTOR, "#result_list tbody tr")
    (row,) = [row for row in rows if "log_run" in row.text]
    row.find_element(By.LINK_TEXT, "runs").click()
    wait_for(browser, lambda d: "pending" in d.find_element(By.ID, "result_list").text)

    run_burst(start_worker, settings=PATIENT)
    assert Task.objects.get(pk=run.pk).status == Status.COMPLETED

    def shows_completed(driver: Any) -> bool:
        driver.refresh()
        return "completed" in driver.find_element(By.ID, "result_list").text

    wait_for(browser, shows_completed)
    screenshot(browser, "schedule_runs")

    site(reverse("admin:django_pq_periodic_change", args=[periodic.pk]))
    wait_for(browser, lambda d: len(d.find_elements(By.CSS_SELECTOR, "#pq-preview li")) == 5)
    screenshot(browser, "schedule_form")


def test_retry_a_failed_task(
    site: Callable[[str], None], browser: Any, start_worker: Callable[..., WorkerProcess]
) -> None:
    from selenium.webdriver.common.by import By

    failing = pq.enqueue(tasks.raise_error)
    pq.enqueue(tasks.add, 2, 3)
    run_burst(start_worker, settings=PATIENT)
    failed = Task.objects.get(pk=failing.pk)
    assert failed.status == Status.FAILED
    assert "ValueError: this task always fails" in failed.error, (failed.error_code, failed.error)

    site(reverse("admin:django_pq_task_changelist"))
    screenshot(browser, "tasks")
    site(reverse("admin:django_pq_task_change", args=[failing.pk]))
    error = browser.find_element(By.CSS_SELECTOR, ".field-error_text pre").get_attribute(
        "textContent"
    )
    assert "ValueError: this task always fails" in error, browser.page_source
    screenshot(browser, "task_failed")

    retry = browser.find_element(By.CSS_SELECTOR, "form.pq-object-action button")
    assert submit_and_read_message(browser, retry) == "Retried 1 task."
    assert Task.objects.get(pk=failing.pk).status == Status.PENDING

    run_burst(start_worker, settings=PATIENT)
    retried = Task.objects.get(pk=failing.pk)
    assert (retried.status, retried.attempts) == (Status.FAILED, 2)


def test_overview_and_workers_pages(
    site: Callable[[str], None], browser: Any, start_worker: Callable[..., WorkerProcess]
) -> None:
    from selenium.webdriver.common.by import By

    for number in range(6):
        pq.enqueue(tasks.add, number, 1, queue="mail" if number % 2 else "default")
    pq.enqueue(tasks.raise_error)
    pq.enqueue(tasks.noop, run_at=dt.timedelta(hours=1))
    run_burst(start_worker, "--queue", "default", "--queue", "mail", settings=PATIENT)
    worker = start_worker("--queue", "default")
    wait_until(lambda: Worker.objects.alive().exists(), 30, "the worker to heartbeat")

    site(reverse("admin:django_pq_overview"))
    assert browser.find_element(By.CSS_SELECTOR, "svg.pq-chart")
    assert "No live worker" not in browser.page_source
    screenshot(browser, "overview")

    site(reverse("admin:django_pq_worker_changelist"))
    wait_for(browser, lambda d: str(worker.pid) in d.find_element(By.ID, "result_list").text)
    screenshot(browser, "workers")


#: The width of the window the lists must fit (a laptop with the sidebar open).
LIST_WIDTH = 1400


def long_rows() -> None:
    """Rows with the long values real projects have: deep module paths, long hostnames."""
    long_name = "shop.integrations.warehouse.tasks:synchronise_inventory_levels_for_all_regions"
    worker = Worker.objects.create(
        hostname="ip-10-123-45-67.eu-central-1.compute.internal.example-company.net",
        pid=4194303,
        concurrency=64,
        queues=["default", "mail-transactional", "reports-nightly", "inventory-sync", "billing"],
        priorities=[100, 75, 50, 25, 0],
        version="1.0.0rc1.dev123+g0123456",
        lease_expires_at=dt.datetime.now(dt.UTC) + dt.timedelta(minutes=5),
    )
    for status in Status.values:
        make_task(
            status,
            name=long_name,
            queue="mail-transactional-high-volume-eu-central",
            client_id=f"order-confirmation-2026-12-02-customer-000123456789-{status}",
            worker_id=worker.pk,
            attempts=12,
            max_attempts=20,
        )
    for index, timing in enumerate(
        [
            {
                "cron": "*/15 6-22 1-7,15-21 1,3,5,7,9,11 mon-fri",
                "timezone": "America/Argentina/Buenos_Aires",
            },
            {"run_every": dt.timedelta(days=13, hours=7, minutes=59, seconds=1)},
        ]
    ):
        schedule(
            tasks.echo,
            run_every=timing.get("run_every"),
            cron=timing.get("cron"),
            timezone=timing.get("timezone"),
            key=f"regional-warehouse-inventory-synchronisation-europe-middle-east-{index}",
            queue="inventory-synchronisation-low-priority-batch",
        )


def test_the_lists_fit_a_1400_pixel_window(site: Callable[[str], None], browser: Any) -> None:
    long_rows()
    overflowing = {}
    for model in ("task", "periodic", "worker"):
        browser.set_window_size(LIST_WIDTH, 900)
        site(reverse(f"admin:django_pq_{model}_changelist"))
        wait_for(browser, lambda d: d.find_elements("css selector", "#result_list tbody tr"))
        # The page must not scroll sideways, nor the list inside it (Django's admin puts the
        # table in a box that scrolls horizontally rather than widening the page).
        page, window, table, box = browser.execute_script(
            "const box = document.querySelector('#changelist .results');"
            "return [document.documentElement.scrollWidth, window.innerWidth,"
            " box.scrollWidth, box.clientWidth]"
        )
        if page > window or table > box:
            overflowing[model] = {"page": (page, window), "list": (table, box)}
            screenshot(browser, f"overflow-{model}")
    assert not overflowing, f"lists wider than a {LIST_WIDTH} px window: {overflowing}"


def test_a_running_task_s_progress_is_shown_live(
    site: Callable[[str], None],
    browser: Any,
    start_worker: Callable[..., WorkerProcess],
    tmp_path: Path,
) -> None:
    from tests.testapp import policy_tasks

    running = pq.enqueue(policy_tasks.progress_in_steps, str(tmp_path), 3)
    worker = start_worker("--concurrency", "1", settings=PATIENT)
    wait_until(lambda: Task.objects.get(pk=running.pk).progress, 30, worker.output)
    site(reverse("admin:django_pq_task_changelist"))
    wait_for(browser, lambda d: "1/3 (33%)" in d.page_source)
    site(reverse("admin:django_pq_task_change", args=[running.pk]))
    wait_for(browser, lambda d: "step 1 of 3" in d.page_source)
    screenshot(browser, "task-progress")
    # The page follows the task by itself: no reload from the test from here on.
    (tmp_path / "1").touch()
    wait_for(browser, lambda d: "step 2 of 3" in d.page_source, timeout=30)
    (tmp_path / "2").touch()
    (tmp_path / "3").touch()
    wait_for(
        browser,
        lambda d: "completed" in d.page_source and "step 3 of 3" in d.page_source,
        timeout=30,
    )
