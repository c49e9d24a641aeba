"""App configuration: registers the system checks, and names the notify channel on the
connections of PQ_DATABASE when it is not the default (for the database's own
announcements, see django_pq.notify.CHANNEL_SETTING)."""

from typing import Any

from django.apps import AppConfig
from django.db.backends.signals import connection_created


def _name_the_channel(sender: Any, connection: Any, **kwargs: Any) -> None:
    from django_pq.conf import pq_settings
    from django_pq.notify import DEFAULT_CHANNEL, SET_CHANNEL

    channel = pq_settings.NOTIFY_CHANNEL
    if connection.alias == pq_settings.DATABASE and channel != DEFAULT_CHANNEL:
        with connection.cursor() as cursor:
            cursor.execute(SET_CHANNEL, [channel])


class DjangoPQConfig(AppConfig):
    name = "django_pq"
    verbose_name = "Background tasks"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from django_pq import checks  # noqa: F401  (registers the checks)

        connection_created.connect(_name_the_channel, dispatch_uid="django_pq.channel")
