"""Flow control in the admin: each key's limit, running, waiting and rate spent, with
pause and resume; and the limits themselves, editable (a change applies on the next
claim of every worker)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from django import forms
from django.contrib import admin, messages
from django.contrib.admin.views.main import ChangeList
from django.db.models import Count, OuterRef, QuerySet, Subquery
from django.db.models.functions import Coalesce
from django.http import HttpRequest, HttpResponse

from django_pq.admin import history
from django_pq.admin.params import refuse_nul_characters
from django_pq.admin.permissions import PAUSE_FLOWKEY, has_pq_perm
from django_pq.flow_limits import InvalidLimit, parse_limit
from django_pq.limits import describe_limit, key_numbers, pause_key, resume_key
from django_pq.models import FlowKey, Limit, Status, Task

if TYPE_CHECKING:
    FlowKeyModelAdmin = admin.ModelAdmin[FlowKey]
    LimitModelAdmin = admin.ModelAdmin[Limit]
    LimitModelForm = forms.ModelForm[Limit]
else:
    FlowKeyModelAdmin = LimitModelAdmin = admin.ModelAdmin
    LimitModelForm = forms.ModelForm


def _count(status: str) -> Coalesce:
    tasks = (
        Task.objects.filter(limit_key=OuterRef("key"), status=status)
        .order_by()
        .values("limit_key")
        .annotate(n=Count("id"))
        .values("n")
    )
    return Coalesce(Subquery(tasks), 0)


def _keys(count: int) -> str:
    return f"{count} flow key{'' if count == 1 else 's'}"


@admin.action(description="Pause selected keys (their tasks wait)", permissions=["pause"])
def pause_keys(
    modeladmin: admin.ModelAdmin[Any], request: HttpRequest, queryset: QuerySet[FlowKey]
) -> None:
    changing = [key for key in queryset if not key.is_paused]
    if changing:
        pause_key(*(key.key for key in changing))
    history.record(request, changing, "Paused from the admin.")
    modeladmin.message_user(request, f"Paused {_keys(len(changing))}.", messages.SUCCESS)


@admin.action(description="Resume or release selected keys", permissions=["pause"])
def resume_keys(
    modeladmin: admin.ModelAdmin[Any], request: HttpRequest, queryset: QuerySet[FlowKey]
) -> None:
    changing = [key for key in queryset if key.is_paused or key.is_held]
    if changing:
        resume_key(*(key.key for key in changing))
    history.record(request, changing, "Resumed from the admin.")
    modeladmin.message_user(request, f"Resumed {_keys(len(changing))}.", messages.SUCCESS)


#: A key's numbers, on its list and its page.
_NUMBERS = ("key", "limit", "running", "waiting", "rate_spent")


class _RefusesNul:
    """Changelists whose filters and search reach PostgreSQL text: NUL is a 400."""

    def changelist_view(
        self, request: HttpRequest, extra_context: dict[str, Any] | None = None
    ) -> HttpResponse:
        refuse_nul_characters(request)
        response: HttpResponse = super().changelist_view(  # type: ignore[misc]
            request, extra_context
        )
        return response


class _NumberedChangeList(ChangeList):
    """The flow key list, with every shown key's numbers read in one statement (not one
    per row and column)."""

    def get_results(self, request: HttpRequest) -> None:
        super().get_results(request)
        keys = list(self.result_list)
        found = {numbers.key: numbers for numbers in key_numbers([key.key for key in keys])}
        for key in keys:
            key._numbers = found.get(key.key)


@admin.register(FlowKey)
class FlowKeyAdmin(_RefusesNul, FlowKeyModelAdmin):
    """Read-only numbers: rows are written by the claim; staff pause and resume them."""

    list_display = [*_NUMBERS, "is_paused", "is_held"]
    list_filter = ["is_paused", "is_held"]
    search_fields = ["key"]
    actions = [pause_keys, resume_keys]
    fields = (*_NUMBERS, "is_paused", "paused_at", "is_held", "released_at", "blocked_until")
    readonly_fields = fields

    def get_queryset(self, request: HttpRequest) -> QuerySet[FlowKey]:
        return (
            super()
            .get_queryset(request)
            .annotate(running_count=_count(Status.RUNNING), waiting_count=_count(Status.PENDING))
        )

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: FlowKey | None = None) -> bool:
        return False

    def has_pause_permission(self, request: HttpRequest) -> bool:
        return has_pq_perm(request, PAUSE_FLOWKEY)

    def get_changelist(self, request: HttpRequest, **kwargs: Any) -> type[ChangeList]:
        return _NumberedChangeList

    def _numbers(self, key: FlowKey) -> Any:
        if not hasattr(key, "_numbers"):  # a single key's page: read its own
            found = key_numbers([key.key])
            key._numbers = found[0] if found else None  # type: ignore[attr-defined]
        return key._numbers  # type: ignore[attr-defined]

    @admin.display(description="limit")
    def limit(self, key: FlowKey) -> str:
        numbers = self._numbers(key)
        return "unlimited" if numbers is None else describe_limit(numbers)

    @admin.display(description="running", ordering="running_count")
    def running(self, key: FlowKey) -> int:
        return int(getattr(key, "running_count", 0))

    @admin.display(description="waiting", ordering="waiting_count")
    def waiting(self, key: FlowKey) -> int:
        return int(getattr(key, "waiting_count", 0))

    @admin.display(description="rate spent")
    def rate_spent(self, key: FlowKey) -> str:
        numbers = self._numbers(key)
        if numbers is None or numbers.rate_spent is None:
            return "-"
        return f"{numbers.rate_spent:.1f} of its burst"


class LimitForm(LimitModelForm):
    class Meta:
        model = Limit
        fields = ["pattern", "concurrency", "rate", "burst", "ordered", "on_failure"]

    def clean(self) -> dict[str, Any]:
        cleaned = super().clean() or {}
        options = {
            name: cleaned[name]
            for name in ("concurrency", "rate", "ordered")
            if cleaned.get(name) not in (None, "", False)
        }
        if cleaned.get("rate") and cleaned.get("burst") not in (None, 1, 1.0):
            options["burst"] = cleaned["burst"]
        if options.get("ordered") and cleaned.get("on_failure") != "hold":
            options["on_failure"] = cleaned["on_failure"]
        try:
            self.flow_limit = parse_limit(cleaned.get("pattern") or "", options)
        except InvalidLimit as error:
            raise forms.ValidationError(str(error).replace("PQ_LIMITS", "limit")) from None
        return cleaned


@admin.register(Limit)
class LimitAdmin(_RefusesNul, LimitModelAdmin):
    """Limits staff add here stay until deleted; a pattern PQ_LIMITS names is rewritten
    from the setting when a worker starts."""

    form = LimitForm
    list_display = ["pattern", "concurrency", "rate", "burst", "ordered", "on_failure", "source"]
    list_filter = ["source", "ordered"]
    search_fields = ["pattern"]
    readonly_fields = ["source", "updated_at"]

    def save_model(self, request: HttpRequest, obj: Limit, form: Any, change: bool) -> None:
        limit = form.flow_limit
        obj.concurrency, obj.per_second, obj.burst = (
            limit.concurrency,
            limit.per_second,
            limit.burst,
        )
        obj.source = "admin"
        super().save_model(request, obj, form, change)


__all__ = ["FlowKeyAdmin", "LimitAdmin"]
