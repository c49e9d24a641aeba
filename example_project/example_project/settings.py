"""Settings for the django-pq example shop. For local demos only: not a production config.

Database: PostgreSQL only, resolved the same way as django-pq's own tests.

* With ``DATABASE_URL`` set, that database is used, e.g.::

      DATABASE_URL=postgresql://postgres@127.0.0.1:5432/shop python example_project/manage.py demo

  (create the database first: ``createdb shop``). The demo creates an ``admin``/``admin``
  superuser in it, so point it at a database of its own.
* Without ``DATABASE_URL``, importing these settings starts a private throwaway PostgreSQL
  (from the server binaries on this machine, or ``pip install pgserver``), exports its URL
  as ``DATABASE_URL`` for child processes (the worker, the web server) and deletes it when
  the process that started it exits. Nothing is kept between runs.
"""

from pathlib import Path

from devdb import database_settings

BASE_DIR = Path(__file__).resolve().parent.parent

SECRET_KEY = "django-pq-example-project-not-secret"
DEBUG = True
ALLOWED_HOSTS = ["127.0.0.1", "localhost"]

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "django_pq",
    "shop",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]

ROOT_URLCONF = "example_project.urls"
WSGI_APPLICATION = "example_project.wsgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ]
        },
    }
]

# DATABASE_URL, or a throwaway PostgreSQL started right here (see the module docstring).
DATABASES = {"default": database_settings()}

DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"plain": {"format": "%(asctime)s %(name)s %(levelname)s %(message)s"}},
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "plain"}},
    "loggers": {
        "django_pq": {"handlers": ["console"], "level": "INFO"},
        "shop": {"handlers": ["console"], "level": "INFO"},
    },
}

# Flow limits, enforced by the claim across every worker: receipts go through the mail
# provider at most 2 at once and 30 a minute (shop.tasks.send_receipt carries the key).
PQ_LIMITS = {"email": {"concurrency": 2, "rate": "30/m", "burst": 5}}
