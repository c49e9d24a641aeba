"""A tiny shop: products, and orders whose receipts are sent in the background."""

from django.db import models


class Product(models.Model):
    name = models.CharField(max_length=100)
    sku = models.CharField(max_length=32, unique=True)
    price = models.DecimalField(max_digits=8, decimal_places=2)
    stock = models.PositiveIntegerField(default=0)

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return f"{self.name} ({self.sku})"


class Order(models.Model):
    product = models.ForeignKey(Product, on_delete=models.PROTECT, related_name="orders")
    quantity = models.PositiveIntegerField(default=1)
    email = models.EmailField()
    created_at = models.DateTimeField(auto_now_add=True)
    # Set by the send_receipt task, in the worker, after the order has committed.
    receipt_sent_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return f"Order #{self.pk}: {self.quantity} x {self.product.name}"

    @property
    def receipt_client_id(self) -> str:
        """The client id of this order's receipt task: one receipt per order, findable by name."""
        return f"receipt-order-{self.pk}"
