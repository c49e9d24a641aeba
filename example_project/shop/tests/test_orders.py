"""The shop's own tests, written the way a django-pq user writes theirs.

Run from the repository root::

    python -m pytest example_project/shop/tests --ds=example_project.settings
"""

from __future__ import annotations

from decimal import Decimal

import pytest
from django.db import transaction

import django_pq as pq
from django_pq.testing import CapturedTasks, run_pending_tasks
from shop.models import Order, Product
from shop.orders import place_order
from shop.tasks import pack_unit, sales_report, send_receipt, sync_inventory

pytestmark = pytest.mark.django_db


@pytest.fixture
def lamp() -> Product:
    return Product.objects.create(name="Lamp", sku="LAMP-1", price=Decimal("19.90"), stock=3)


def test_placing_an_order_enqueues_its_receipt(lamp: Product, pq_capture: CapturedTasks) -> None:
    order = place_order(lamp, 1, "ada@example.com")
    pq_capture.assert_enqueued(
        send_receipt,
        order_id=order.pk,
        priority=pq.Priority.HIGH,
        client_id=f"receipt-order-{order.pk}",
    )
    pq_capture.assert_enqueued(pack_unit, order.pk, 1)
    pq_capture.assert_not_enqueued(sync_inventory)


def test_the_units_are_packed_then_the_receipt_marks_the_order(lamp: Product) -> None:
    order = place_order(lamp, 2, "grace@example.com")
    receipt = pq.Task.objects.get(client_id=order.receipt_client_id)
    assert receipt.status == "blocked"  # until every unit is packed
    *packed, outcome = run_pending_tasks()
    assert [o.result for o in packed] == [
        f"order {order.pk}: unit 1 packed",
        f"order {order.pk}: unit 2 packed",
    ]
    assert (outcome.id, outcome.status) == (receipt.pk, "completed")
    assert outcome.result == "receipt sent to grace@example.com"
    order.refresh_from_db()
    assert order.receipt_sent_at is not None


def test_no_receipt_when_a_unit_cannot_be_packed(lamp: Product) -> None:
    order = place_order(lamp, 2, "ada@example.com")
    first_unit = pq.Task.objects.filter(name__endswith=":pack_unit").order_by("id").first()
    assert first_unit is not None
    pq.cancel(first_unit)  # say, the warehouse ran out
    run_pending_tasks()
    receipt = pq.Task.objects.get(client_id=order.receipt_client_id)
    assert (receipt.status, receipt.error_code) == ("cancelled", "dependency_failed")
    order.refresh_from_db()
    assert order.receipt_sent_at is None


def test_no_receipt_for_an_order_that_rolled_back(lamp: Product, pq_capture: CapturedTasks) -> None:
    with pytest.raises(RuntimeError), transaction.atomic():
        place_order(lamp, 1, "ada@example.com")
        raise RuntimeError("payment declined")
    assert not Order.objects.exists()
    pq_capture.assert_nothing_enqueued()


@pytest.mark.django_db(transaction=True)
def test_inventory_sync_in_a_forked_child_like_the_worker(lamp: Product) -> None:
    pq.enqueue(sync_inventory)
    [outcome] = run_pending_tasks(isolation="fork")
    assert (outcome.status, outcome.result) == ("completed", 1)
    lamp.refresh_from_db()
    assert lamp.stock == 20


def test_the_sales_report_counts_units_and_reports_its_progress(lamp: Product) -> None:
    place_order(lamp, 2, "ada@example.com")
    report = sales_report.enqueue(seconds_per_product=0)
    outcomes = run_pending_tasks()
    assert [o.status for o in outcomes] == ["completed"] * 4  # 2 units, receipt, report
    report.refresh_from_db()
    assert report.decoded_result() == {"Lamp": 2}
    assert report.progress == {"done": 1, "total": 1, "message": "counted Lamp"}


def test_a_failed_receipt_is_retried_by_its_policy(lamp: Product) -> None:
    order = place_order(lamp, 1, "ada@example.com")
    Order.objects.filter(pk=order.pk).delete()  # the receipt task now raises DoesNotExist
    _packed, outcome = run_pending_tasks()
    assert outcome.status == "pending"  # back in the queue, due after the policy's delay
    task = pq.Task.objects.get(pk=outcome.id)
    assert task.retry_decision["rule"] == "retry"
    assert task.max_attempts == 5


def test_receipts_are_rate_limited_by_their_flow_key(lamp: Product) -> None:
    lamp.stock = 10
    lamp.save()
    pq.sync_limits()  # PQ_LIMITS of settings.py, as every worker does on start
    orders = [place_order(lamp, 1, f"buyer{n}@example.com") for n in range(7)]
    assert {pq.Task.objects.get(client_id=o.receipt_client_id).limit_key for o in orders} == {
        "email"
    }
    # The bucket holds 5 sends, and the next comes back 2 s later (30 a minute): the other
    # two receipts wait for theirs (the seven units are packed without a limit).
    outcomes = run_pending_tasks()
    assert sum(o.name.endswith(":send_receipt") for o in outcomes) == 5
    assert pq.Task.objects.filter(status="pending", limit_key="email").count() == 2
