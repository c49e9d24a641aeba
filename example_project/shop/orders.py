"""Placing an order: the one code path used by the shop page and by ``demo --check``."""

from django.db import transaction
from django.db.models import F

import django_pq as pq
from shop.models import Order, Product
from shop.tasks import pack_unit, send_receipt


def place_order(product: Product, quantity: int, email: str) -> Order:
    """Create the order, a batch that packs each unit, and the receipt that is sent once
    every unit is packed, in one transaction.

    The tasks commit with the order or not at all: if anything below raises, there is
    neither an order nor a task, and a worker never sees an order id that does not exist.
    The units are packed in parallel; the receipt (the batch's on_success callback) runs
    once, after the last one, and never if one of them fails for good.
    """
    with transaction.atomic():
        Product.objects.filter(pk=product.pk).update(stock=F("stock") - quantity)
        order = Order.objects.create(product=product, quantity=quantity, email=email)
        pq.batch(
            [pack_unit.prepare(order.pk, unit) for unit in range(1, quantity + 1)],
            # Its priority and retry policy come from @pq.task on send_receipt.
            on_success=send_receipt.prepare(order_id=order.pk, client_id=order.receipt_client_id),
        )
    return order
