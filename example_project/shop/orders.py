"""Placing an order: the one code path used by the shop page and by ``demo --check``."""

from django.db import transaction
from django.db.models import F

from shop.models import Order, Product
from shop.tasks import send_receipt


def place_order(product: Product, quantity: int, email: str) -> Order:
    """Create the order and enqueue its receipt in one transaction.

    The task row commits with the order or not at all: if anything below raises, there is
    neither an order nor a receipt task, and a worker never sees an order id that does not exist.
    """
    with transaction.atomic():
        Product.objects.filter(pk=product.pk).update(stock=F("stock") - quantity)
        order = Order.objects.create(product=product, quantity=quantity, email=email)
        # Its priority and retry policy come from @pq.task on send_receipt.
        send_receipt.enqueue(order_id=order.pk, client_id=order.receipt_client_id)
    return order
