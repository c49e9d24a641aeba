"""The errors django-pq raises. Every runtime error derives from :class:`PQError`."""

from __future__ import annotations

from django.db import IntegrityError


class PQError(Exception):
    """Base class of every error django-pq raises at run time."""


class TaskRefused(PQError, ValueError):
    """A call was refused before anything was written: bad function, option or argument.

    The message names what is wrong and how to fix it.
    """


class NotATaskFunction(TaskRefused):
    """The callable cannot run as a task (lambda, closure, bound method, outside the
    allowed modules, or not importable under its own name)."""


class UnserializableArgument(TaskRefused, TypeError):
    """An argument (or a result) cannot be encoded by the codec.

    It is also a :class:`TypeError`, the error ``django.tasks`` raises for an argument it
    cannot store, so code written against Django's contract catches it unchanged.
    """


class InvalidSchedule(TaskRefused):
    """A periodic schedule's interval, cron expression or time zone is not valid."""


class DuplicateClientId(PQError, IntegrityError):
    """``enqueue`` was given a ``client_id`` that a task already has.

    It subclasses :class:`django.db.IntegrityError` so code that already handles
    integrity errors keeps working. django-pq raises it without a failed statement,
    so the caller's transaction stays usable.
    """

    def __init__(self, client_ids: list[str]) -> None:
        self.client_ids = client_ids
        shown = ", ".join(repr(client_id) for client_id in client_ids[:5])
        more = f" and {len(client_ids) - 5} more" if len(client_ids) > 5 else ""
        super().__init__(
            f"A task with client_id {shown}{more} already exists. Use pq.upsert() to replace "
            "it, choose another client_id, or look it up with Task.objects.by_client_id()."
        )


class TimeLimitExceeded(PQError):
    """Raised inside a running task when its ``soft_runtime`` has passed.

    Catch it to clean up and return (or re-raise); left uncaught, the run fails with error
    code ``soft_timeout``. A task still running at ``max_runtime`` is killed (``timeout``).
    """


class PayloadError(PQError):
    """A stored payload cannot be decoded (malformed, or a pickle with a bad signature)."""
