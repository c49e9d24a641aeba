from django.urls import path

from shop import views

app_name = "shop"
urlpatterns = [
    path("", views.index, name="index"),
    path("orders/<int:order_id>/", views.order_detail, name="order"),
]
