"""App configuration: registers the system checks."""

from django.apps import AppConfig


class DjangoPQConfig(AppConfig):
    name = "django_pq"
    verbose_name = "Background tasks"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from django_pq import checks  # noqa: F401  (registers the checks)
