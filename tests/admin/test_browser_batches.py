"""End to end in headless Chromium: an operator follows a batch a real worker ran, from the
batch list to its page and a member's page and back, retries its failed member and
cancels a batch that has not ended. The pages are saved as screenshot artifacts."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from typing import Any

import pytest
from django.urls import reverse

import django_pq as pq
from django_pq.models import Status, Task
from tests.admin.browser import screenshot, submit_and_read_message, wait_for
from tests.admin.test_browser import PATIENT, site  # noqa: F401 - the logged-in browser
from tests.testapp import tasks
from tests.worker.conftest import WorkerProcess, run_burst

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


def test_follow_a_batch_and_retry_its_failed_member(
    site: Callable[[str], None],  # noqa: F811
    browser: Any,
    start_worker: Callable[..., WorkerProcess],
) -> None:
    from selenium.webdriver.common.by import By

    made = pq.batch(
        [pq.prepare(tasks.add, n, 1) for n in range(3)] + [pq.prepare(tasks.raise_error)],
        on_success=pq.prepare(tasks.noop),
        on_failure=pq.prepare(tasks.echo, "a member failed"),
        on_finish=pq.prepare(tasks.log_run, "the batch ended"),
    )
    failing = made.tasks[-1]
    run_burst(start_worker, settings=PATIENT)
    assert Task.objects.get(pk=failing.pk).status == Status.FAILED
    assert made.on_failure is not None and made.on_success is not None
    assert Task.objects.get(pk=made.on_failure.pk).status == Status.COMPLETED

    site(reverse("admin:django_pq_batch_changelist"))
    (row,) = browser.find_elements(By.CSS_SELECTOR, "#result_list tbody tr")
    assert "4 of 4 ended" in row.text and "3 completed" in row.text and "1 failed" in row.text
    screenshot(browser, "batches")
    row.find_element(By.LINK_TEXT, str(made.id)).click()
    wait_for(browser, lambda d: "4 of 4 ended" in d.find_element(By.ID, "content").text)
    members = browser.find_element(By.CSS_SELECTOR, "table.pq-batch-members")
    assert len(members.find_elements(By.CSS_SELECTOR, "tbody tr")) == 4
    callbacks = browser.find_element(By.CSS_SELECTOR, ".field-on_failure_link").text
    assert "completed" in callbacks, callbacks
    assert "cancelled" in browser.find_element(By.CSS_SELECTOR, ".field-on_success_link").text
    screenshot(browser, "batch")

    # A member's page links back to its batch and names the callbacks waiting for it.
    members.find_element(By.PARTIAL_LINK_TEXT, f"#{failing.pk}").click()
    waited = wait_for(browser, lambda d: d.find_elements(By.CSS_SELECTOR, ".field-waited_for_by"))
    assert f"#{made.on_finish.pk if made.on_finish else 0}" in waited[0].text
    screenshot(browser, "task_in_batch")
    browser.find_element(By.LINK_TEXT, f"batch #{made.id}").click()
    wait_for(browser, lambda d: d.find_elements(By.CSS_SELECTOR, "table.pq-batch-members"))

    (retry,) = [
        button
        for button in browser.find_elements(By.CSS_SELECTOR, "form.pq-object-action button")
        if button.text.lower() == "retry failed members"
    ]
    assert submit_and_read_message(browser, retry) == f"Retried 1 task of batch #{made.id}."
    assert browser.current_url.endswith(reverse("admin:django_pq_batch_change", args=[made.id]))
    assert Task.objects.get(pk=failing.pk).status == Status.PENDING
    assert "3 of 4 ended" in browser.find_element(By.ID, "content").text


def test_cancel_a_batch_from_its_page(site: Callable[[str], None], browser: Any) -> None:  # noqa: F811
    from selenium.webdriver.common.by import By

    later = dt.timedelta(hours=1)
    made = pq.batch(
        [pq.prepare(tasks.noop, run_at=later) for _ in range(2)],
        on_finish=pq.prepare(tasks.noop),
    )
    site(reverse("admin:django_pq_batch_change", args=[made.id]))
    (cancel,) = [
        button
        for button in browser.find_elements(By.CSS_SELECTOR, "form.pq-object-action button")
        if button.text.lower() == "cancel batch"
    ]
    assert submit_and_read_message(browser, cancel) == f"Cancelled 2 tasks of batch #{made.id}."
    assert {task.status for task in Task.objects.filter(pk__in=[t.pk for t in made.tasks])} == {
        Status.CANCELLED
    }
    assert "2 of 2 ended" in browser.find_element(By.ID, "content").text
    # Nothing left to cancel or to retry but the cancelled members: only Retry is offered.
    labels = [
        button.text.lower()
        for button in browser.find_elements(By.CSS_SELECTOR, "form.pq-object-action button")
    ]
    assert labels == ["retry failed members"]
