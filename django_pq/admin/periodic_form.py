"""The schedule form: a task from the allowed list, an interval or a cron, JSON arguments.

Everything a worker would later refuse is refused here, with the reason: an unknown task,
a cron the parser rejects, an unknown time zone, arguments that are not JSON or that the
codec cannot decode.
"""

from __future__ import annotations

import datetime as dt
import json
import zoneinfo
from functools import cache
from typing import Any

from croniter import CroniterBadDateError
from django import forms
from django.conf import settings
from django.core import validators
from django.utils import timezone

from django_pq.admin.bases import PeriodicModelForm
from django_pq.admin.display import stored_json
from django_pq.codec import decode_value, encode_payload
from django_pq.conf import pq_settings
from django_pq.declared_tasks import declared_paths
from django_pq.exceptions import InvalidSchedule, PayloadError, UnserializableArgument
from django_pq.models import Periodic, Priority
from django_pq.task_paths import discover_task_functions, is_allowed_module
from django_pq.timing import next_runs, validate_cron, validate_interval, validate_timezone

INTERVAL = "interval"
CRON = "cron"

#: Interval units, largest first, in seconds.
UNITS = {"days": 86400, "hours": 3600, "minutes": 60, "seconds": 1}

#: The longest interval the form takes: a hundred years, far inside a timestamp's range.
MAX_INTERVAL = dt.timedelta(days=36525)

#: Runs computed to prove that a timing fires (the preview shows as many).
PROOF_RUNS = 5


def task_choices() -> list[tuple[str, str]]:
    """The task functions a schedule may name: those discovered in the allowed apps, those
    declared with ``@pq.task`` wherever they live, and any an existing schedule already
    names (so editing it never loses its task)."""
    named = Periodic.objects.order_by("name").values_list("name", flat=True).distinct()
    declared = [path for path in declared_paths() if is_allowed_module(path.partition(":")[0])]
    return discover_task_functions(also=[*declared, *named])


@cache
def timezone_choices() -> list[tuple[str, str]]:
    """Every IANA time zone this Python knows, sorted, as form choices."""
    return [(name, name) for name in sorted(zoneinfo.available_timezones())]


def split_interval(run_every: dt.timedelta) -> tuple[int, str]:
    """``timedelta(minutes=90)`` → ``(90, "minutes")``: the largest unit that divides it."""
    seconds = int(run_every.total_seconds())
    for unit, size in UNITS.items():
        if seconds % size == 0:
            return seconds // size, unit
    raise AssertionError("seconds always divide")


def parse_json(text: str, kind: type, label: str) -> Any:
    """Parse ``text`` as JSON of ``kind`` and decode the codec's tags, or raise a form error."""
    try:
        data = json.loads(text or ("[]" if kind is list else "{}"))
    except json.JSONDecodeError as error:
        raise forms.ValidationError(f"{label} is not valid JSON: {error}.") from None
    except RecursionError:
        raise forms.ValidationError(f"{label} is nested too deeply to read.") from None
    if not isinstance(data, kind):
        expected = 'an array, like [1, "two"]' if kind is list else 'an object, like {"a": 1}'
        raise forms.ValidationError(f"{label} must be a JSON {expected}.")
    try:
        return decode_value(data)
    except RecursionError:
        raise forms.ValidationError(f"{label} is nested too deeply to read.") from None
    except PayloadError as error:
        raise forms.ValidationError(f"{label} cannot be decoded: {error}.") from None


def interval_from(every: Any, unit: Any) -> dt.timedelta:
    """``every`` ``unit`` as a timedelta; raises InvalidSchedule when it is not positive."""
    try:
        count = int(every)
    except (TypeError, ValueError):
        count = 0
    if count < 1 or unit not in UNITS:
        raise InvalidSchedule(
            "The interval must be a whole number, at least 1, of seconds, minutes, hours or days."
        )
    if count * UNITS[unit] > MAX_INTERVAL.total_seconds():
        raise InvalidSchedule(
            f"The interval is too long: at most {MAX_INTERVAL.days} days, so that its runs "
            "fall within the dates a timestamp can hold."
        )
    return dt.timedelta(seconds=count * UNITS[unit])


def checked_runs(
    *, run_every: dt.timedelta | None, cron: str | None, tz: str, after: dt.datetime, count: int
) -> list[dt.datetime]:
    """The next ``count`` runs of a timing after ``after``, or InvalidSchedule saying why not.

    A cron the parser accepts can still never fire (``0 0 30 2 *``: February 30th), and an
    interval can carry its runs past the last date a timestamp holds: a worker could not
    fire either, so the form refuses them and the preview explains them.
    """
    try:
        return next_runs(run_every=run_every, cron=cron, timezone=tz, after=after, count=count)
    except CroniterBadDateError:
        raise InvalidSchedule(
            f"cron {cron!r} never fires: no date matches its day-of-month, month and "
            "day-of-week fields (such as February 30th). Correct those fields."
        ) from None
    except (OverflowError, ValueError, KeyError) as error:
        # OverflowError: a run past year 9999; ValueError and KeyError (ZoneInfoNotFoundError):
        # a cron or time zone stored without the form's validation.
        raise InvalidSchedule(f"This timing cannot be scheduled: {error}.") from None


def _bound(field: forms.Field, low: int, high: int | None = None) -> None:
    """Give an integer model field's form field a range, validated and shown in the widget."""
    field.validators.append(validators.MinValueValidator(low))
    field.widget.attrs["min"] = low
    if high is not None:
        field.validators.append(validators.MaxValueValidator(high))
        field.widget.attrs["max"] = high


#: How a schedule's runs are enqueued: the "Options" of the schedule form and page.
OPTION_FIELDS = ("priority", "queue", "max_concurrent", "max_runtime", "max_attempts", "client_id")


class PeriodicForm(PeriodicModelForm):
    """Create or edit a schedule. ``name`` and ``payload`` are built from the fields below."""

    task = forms.ChoiceField(
        help_text="The function to run, from the tasks modules of your allowed apps."
    )
    timing = forms.ChoiceField(
        choices=[(INTERVAL, "Every fixed interval"), (CRON, "On a cron schedule")],
        widget=forms.RadioSelect,
        initial=INTERVAL,
    )
    every = forms.IntegerField(min_value=1, required=False, initial=5, label="Every")
    unit = forms.ChoiceField(choices=[(unit, unit) for unit in UNITS], initial="minutes")
    cron = forms.CharField(
        required=False,
        max_length=255,
        help_text="Five fields: minute hour day-of-month month day-of-week, e.g. 0 9 * * mon.",
    )
    args = forms.CharField(
        required=False,
        initial="[]",
        widget=forms.Textarea(attrs={"rows": 2, "class": "vLargeTextField"}),
        label="Positional arguments",
        help_text='A JSON array, e.g. [42, "text"].',
    )
    kwargs = forms.CharField(
        required=False,
        initial="{}",
        widget=forms.Textarea(attrs={"rows": 3, "class": "vLargeTextField"}),
        label="Keyword arguments",
        help_text='A JSON object, e.g. {"user_id": 7}.',
    )

    class Meta:
        model = Periodic
        fields = ["key", "timezone", *OPTION_FIELDS, "active"]
        help_texts = {
            "priority": "0 (BATCH) to 100 (CRITICAL); LOW 25, NORMAL 50, HIGH 75.",
            "timezone": "The wall clock a cron runs on.",
        }

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        task = self.fields["task"]
        assert isinstance(task, forms.ChoiceField)
        task.choices = [("", "---------"), *task_choices()]
        # The admin leaves the model's fields out of a read-only page (a declared schedule,
        # or a user with only the view permission): set up only the fields it kept.
        fields = self.fields
        if "timezone" in fields:
            fields["timezone"] = forms.ChoiceField(
                choices=timezone_choices(),
                initial=settings.TIME_ZONE,
                help_text=fields["timezone"].help_text,
            )
        for name, low, high in (
            ("priority", Priority.BATCH, Priority.CRITICAL),
            ("max_concurrent", 1, None),
            ("max_attempts", 1, None),
        ):
            if name in fields:
                _bound(fields[name], low, high)
        if "queue" in fields:
            fields["queue"].initial = pq_settings.DEFAULT_QUEUE
        if "max_concurrent" in fields:
            fields[
                "max_concurrent"
            ].help_text = "Runs allowed at once; 1 means no overlap, empty means unlimited."
        instance = self.instance
        if instance.pk is not None:
            self.initial.update(self._initial_from(instance))

    @staticmethod
    def _initial_from(periodic: Periodic) -> dict[str, Any]:
        initial: dict[str, Any] = {"task": periodic.name}
        if periodic.cron is not None:
            initial.update(timing=CRON, cron=periodic.cron)
        elif periodic.run_every is not None:
            every, unit = split_interval(periodic.run_every)
            initial.update(timing=INTERVAL, every=every, unit=unit)
        try:
            payload = periodic.payload or {}
            initial["args"] = json.dumps(payload.get("args", []), ensure_ascii=False)
            initial["kwargs"] = json.dumps(payload.get("kwargs", {}), ensure_ascii=False)
        except (RecursionError, AttributeError):
            # Nested deeper than Python reads, or not an object: show what is stored, which
            # the form then refuses, so a save cannot silently replace the arguments.
            initial["args"] = stored_json(periodic, "payload", json.dumps)
            initial["kwargs"] = "{}"
        return initial

    def clean_timezone(self) -> str:
        try:
            return validate_timezone(self.cleaned_data.get("timezone"))
        except InvalidSchedule as error:
            raise forms.ValidationError(str(error)) from None

    def clean_args(self) -> list[Any]:
        value: list[Any] = parse_json(
            self.cleaned_data.get("args", ""), list, "Positional arguments"
        )
        return value

    def clean_kwargs(self) -> dict[str, Any]:
        value: dict[str, Any] = parse_json(
            self.cleaned_data.get("kwargs", ""), dict, "Keyword arguments"
        )
        return value

    def clean(self) -> dict[str, Any]:
        cleaned = super().clean() or {}
        try:
            if cleaned.get("timing") == CRON:
                cleaned.update(run_every=None, cron=validate_cron(cleaned.get("cron") or ""))
            else:
                every = validate_interval(interval_from(cleaned.get("every"), cleaned.get("unit")))
                cleaned.update(run_every=every, cron=None)
            if "timezone" in cleaned:
                checked_runs(
                    run_every=cleaned["run_every"],
                    cron=cleaned["cron"],
                    tz=cleaned["timezone"],
                    after=timezone.now(),
                    count=PROOF_RUNS,
                )
        except InvalidSchedule as error:
            self.add_error("cron" if cleaned.get("timing") == CRON else "every", str(error))
        if "args" in cleaned and "kwargs" in cleaned:
            try:
                cleaned["payload"] = encode_payload(tuple(cleaned["args"]), cleaned["kwargs"])
            except UnserializableArgument as error:
                self.add_error("kwargs", str(error))
        task = cleaned.get("task")
        if task is not None:
            clash = Periodic.objects.filter(name=task, key=cleaned.get("key", ""))
            if self.instance.pk is not None:
                clash = clash.exclude(pk=self.instance.pk)
            if clash.exists():
                self.add_error(
                    "key", "This task already has a schedule with this key; choose another key."
                )
        return cleaned

    def save(self, commit: bool = True) -> Periodic:
        periodic = super().save(commit=False)
        data = self.cleaned_data
        periodic.name = data["task"]
        periodic.payload = data["payload"]
        periodic.run_every = data["run_every"]
        periodic.cron = data["cron"]
        if commit:
            periodic.save()
        return periodic

    @property
    def is_retimed(self) -> bool:
        """Whether the save changes when the schedule fires (so ``next_run`` must move)."""
        timing = {"timing", "every", "unit", "cron", "timezone", "active"}
        return self.instance.pk is None or bool(timing & set(self.changed_data))
