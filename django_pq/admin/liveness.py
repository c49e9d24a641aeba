"""The "no live worker" banner shown on the task and schedule pages."""

from __future__ import annotations

from typing import Any

from django_pq.conf import pq_settings
from django_pq.models import Worker


def is_any_worker_alive() -> bool:
    """Whether any worker's lease is current (one EXISTS on the small workers table)."""
    return Worker.objects.using(pq_settings.DATABASE).alive().exists()


def with_worker_banner(extra_context: dict[str, Any] | None) -> dict[str, Any]:
    """``extra_context`` plus ``pq_no_live_worker`` for the banner template.

    Without a worker nothing pending ever runs and no schedule fires; staff looking at
    the task and schedule pages are the ones who need to know.
    """
    return {**(extra_context or {}), "pq_no_live_worker": not is_any_worker_alive()}
