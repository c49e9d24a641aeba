"""Minimal settings for benchmarking django-pq: its app only, a dedicated database.

``DATABASE_URL`` (default ``postgresql://postgres@127.0.0.1:5432/bench_djpq``) names it.
"""

import os
from urllib.parse import urlsplit

_url = urlsplit(os.environ.get("DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/bench_djpq"))

SECRET_KEY = "django-pq-benchmark-not-secret"
DEBUG = False
USE_TZ = True
TIME_ZONE = "UTC"
INSTALLED_APPS = ["django_pq"]
# The benchmark's tasks are django-pq's own (django_pq.bench:noop, record_start), which run
# only when named: an explicit, deliberate opt-in, so its warning is silenced too.
PQ_ALLOWED_MODULES = ["django_pq.bench"]
SILENCED_SYSTEM_CHECKS = ["django_pq.W002"]
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
