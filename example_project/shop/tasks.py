"""The shop's background tasks: functions declared with ``@pq.task`` (still plain functions
you can call), each run by a ``pq_worker`` in a child process of its own."""

import logging
import time
from datetime import timedelta

from django.db.models import F
from django.utils import timezone

import django_pq as pq
from shop.models import Order, Product

logger = logging.getLogger(__name__)

RESTOCK_BELOW = 5
RESTOCK_TO = 20


# Sending a receipt twice is harmless (it is recorded once, see below), so a run that
# failed on an exception, or lost its worker, is retried: up to five runs, 2 s, 4 s, 8 s ...
# apart. A receipt that crashes its process twice is not retried again (the default limit).
# The mail provider takes at most 2 sends at once and 30 a minute: the flow key "email"
# carries the limits of PQ_LIMITS (settings.py) across every worker.
@pq.task(
    priority=pq.Priority.HIGH,
    max_runtime=timedelta(minutes=1),
    retry=pq.Retry(5, on=["exception", "timeout", "worker_lost", "shutdown"], delay=2),
    limit_key="email",
)
def send_receipt(order_id: int) -> str:
    """Send the receipt for an order (here: record it and log; no real email leaves)."""
    order = Order.objects.select_related("product").get(pk=order_id)
    if order.receipt_sent_at is None:
        order.receipt_sent_at = timezone.now()
        order.save(update_fields=["receipt_sent_at"])
    logger.info(
        "Receipt for order %s sent to %s",
        order.pk,
        order.email,
        extra={"order_id": order.pk},
    )
    return f"receipt sent to {order.email}"


# One unit of an order, packed: place_order() writes one per unit in a batch whose
# on_success callback is the receipt, so the receipt goes out once, after the last unit.
@pq.task(queue="default")
def pack_unit(order_id: int, unit: int) -> str:
    batch = pq.current_task().batch if pq.current_task() else None
    logger.info("Order %s: unit %s packed (batch %s)", order_id, unit, getattr(batch, "id", None))
    return f"order {order_id}: unit {unit} packed"


# A slow task that reports how far it got: watch its progress in the admin's task list and
# on its page (which refreshes while it runs). Run it from the admin ("Run now" on its
# schedule) or with `sales_report.enqueue()`.
@pq.periodic(run_every=timedelta(hours=1))
@pq.task(queue="reports", max_runtime=timedelta(minutes=10), soft_runtime=timedelta(minutes=9))
def sales_report(seconds_per_product: float = 0.5) -> dict[str, int]:
    """Units sold per product, one product at a time (slowly, as a real report would)."""
    products = list(Product.objects.order_by("name"))
    sold: dict[str, int] = {}
    for done, product in enumerate(products, 1):
        units = sum(Order.objects.filter(product=product).values_list("quantity", flat=True))
        sold[product.name] = units
        pq.set_progress(done, len(products), f"counted {product.name}")
        time.sleep(seconds_per_product)
    return sold


# Declared in code: `manage.py pq_sync_schedules` (and every worker on start) creates or
# updates the schedule; a pause made by staff in the admin is kept.
@pq.periodic(run_every=timedelta(minutes=5))
def sync_inventory() -> int:
    """Periodic: top up every product running low, as a supplier feed would. Returns the count."""
    restocked = Product.objects.filter(stock__lt=RESTOCK_BELOW).update(
        stock=F("stock") + (RESTOCK_TO - F("stock"))
    )
    logger.info("Inventory synced: %s product(s) restocked", restocked)
    return restocked
