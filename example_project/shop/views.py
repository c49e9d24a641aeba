"""The storefront: one page to place an order, one to watch its receipt being sent."""

from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.views.decorators.http import require_http_methods

from django_pq.models import Task
from shop.forms import OrderForm
from shop.models import Order
from shop.orders import place_order


@require_http_methods(["GET", "POST"])
def index(request: HttpRequest) -> HttpResponse:
    form = OrderForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        order = place_order(
            form.cleaned_data["product"], form.cleaned_data["quantity"], form.cleaned_data["email"]
        )
        return redirect("shop:order", order_id=order.pk)
    orders = Order.objects.select_related("product")[:10]
    return render(request, "shop/index.html", {"form": form, "orders": orders})


def order_detail(request: HttpRequest, order_id: int) -> HttpResponse:
    order = get_object_or_404(Order.objects.select_related("product"), pk=order_id)
    task = Task.objects.filter(client_id=order.receipt_client_id).first()
    return render(request, "shop/order.html", {"order": order, "task": task})
