"""Minimal settings for benchmarking django-pq: its app and the benchmark's tasks, a dedicated
database.

``DATABASE_URL`` (default ``postgresql://postgres@127.0.0.1:5432/bench_djpq``) names it.
"""

import json
import os
from urllib.parse import urlsplit

_url = urlsplit(os.environ.get("DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/bench_djpq"))

SECRET_KEY = "django-pq-benchmark-not-secret"
DEBUG = False
USE_TZ = True
TIME_ZONE = "UTC"
INSTALLED_APPS = ["django_pq", "projects.djpq"]
DATABASES = {
    "default": {
        "ENGINE": "django.db.backends.postgresql",
        "NAME": _url.path.lstrip("/"),
        "USER": _url.username or "",
        "PASSWORD": _url.password or "",
        "HOST": _url.hostname or "",
        "PORT": str(_url.port or ""),
        "CONN_MAX_AGE": None,
    }
}
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "handlers": {"console": {"class": "logging.StreamHandler"}},
    "loggers": {"django_pq": {"handlers": ["console"], "level": "WARNING"}},
}

# Flow limits for the flow benchmark (benchmarks/flow.py), as JSON.
PQ_LIMITS = json.loads(os.environ.get("BENCH_DJPQ_LIMITS", "null"))
