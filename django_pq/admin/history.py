"""Staff actions in the admin's history: who retried, cancelled, paused or ran what, when.

Django writes a LogEntry for the edits it performs itself; the actions here change rows
through the queue's own statements, so they record their entries explicitly, one bulk
insert per action. The entries show on each object's "History" page and in "Recent actions".
"""

from __future__ import annotations

from collections.abc import Iterable

from django.contrib.admin.models import CHANGE, DELETION, LogEntry
from django.db.models import Model
from django.http import HttpRequest


def record(request: HttpRequest, objects: Iterable[Model], message: str) -> None:
    """Log ``message`` as a change of each of ``objects`` by the requesting staff user."""
    _log(request, list(objects), CHANGE, message)


def record_deletion(request: HttpRequest, objects: Iterable[Model]) -> None:
    """Log the deletion of ``objects`` (call before deleting them: the entry keeps their name)."""
    _log(request, list(objects), DELETION, "")


def _log(request: HttpRequest, objects: list[Model], flag: int, message: str) -> None:
    if objects and request.user.is_authenticated:
        LogEntry.objects.log_actions(request.user.pk, objects, flag, message)
