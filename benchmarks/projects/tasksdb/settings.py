"""Settings for django-tasks-db in the side-by-side benchmark: persistent connections."""

import os
from urllib.parse import urlsplit

_url = urlsplit(
    os.environ.get("BENCH_TASKSDB_URL", "postgresql://postgres@127.0.0.1:5432/bench_tasksdb")
)

SECRET_KEY = "django-tasks-db-benchmark-not-secret"
USE_TZ = True
INSTALLED_APPS = ["django_tasks", "django_tasks_db", "projects.tasksdb"]
DATABASES = {
    "default": {
        "ENGINE": "django.db.backends.postgresql",
        "NAME": _url.path.lstrip("/"),
        "USER": _url.username or "",
        "HOST": _url.hostname or "",
        "PORT": str(_url.port or ""),
        "CONN_MAX_AGE": None,
    }
}
TASKS = {"default": {"BACKEND": "django_tasks_db.DatabaseBackend"}}
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"
