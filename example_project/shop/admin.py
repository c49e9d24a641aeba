from django.contrib import admin, messages
from django.db.models import QuerySet
from django.http import HttpRequest

from shop.models import Order, Product
from shop.orders import place_order


@admin.register(Product)
class ProductAdmin(admin.ModelAdmin):
    list_display = ["name", "sku", "price", "stock"]
    search_fields = ["name", "sku"]
    actions = ["order_one"]

    @admin.action(description="Place a test order for one of each selected product")
    def order_one(self, request: HttpRequest, queryset: QuerySet[Product]) -> None:
        email = getattr(request.user, "email", "") or "admin@example.com"
        orders = [place_order(product, 1, email) for product in queryset.filter(stock__gte=1)]
        self.message_user(
            request,
            f"Placed {len(orders)} order(s); their receipts are queued for the worker.",
            messages.SUCCESS,
        )


@admin.register(Order)
class OrderAdmin(admin.ModelAdmin):
    list_display = ["id", "product", "quantity", "email", "created_at", "receipt_sent_at"]
    list_filter = [("receipt_sent_at", admin.EmptyFieldListFilter)]
    list_select_related = ["product"]
    readonly_fields = ["created_at", "receipt_sent_at"]
