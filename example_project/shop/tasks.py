"""The shop's background tasks: plain functions that a ``pq_worker`` runs in a child process."""

import logging
from datetime import timedelta

from django.db.models import F
from django.utils import timezone

import django_pq as pq
from shop.models import Order, Product

logger = logging.getLogger(__name__)

RESTOCK_BELOW = 5
RESTOCK_TO = 20


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
