from django import forms

from shop.models import Product


class OrderForm(forms.Form):
    product = forms.ModelChoiceField(queryset=Product.objects.all(), empty_label=None)
    quantity = forms.IntegerField(min_value=1, max_value=100, initial=1)
    email = forms.EmailField(initial="customer@example.com")

    def clean(self) -> dict[str, object]:
        cleaned = super().clean() or {}
        product = cleaned.get("product")
        quantity = cleaned.get("quantity")
        if isinstance(product, Product) and isinstance(quantity, int) and quantity > product.stock:
            raise forms.ValidationError(f"Only {product.stock} of {product.name} left in stock.")
        return cleaned
