"""Settings of the example project: one app (``tasks``), PostgreSQL from ``$DATABASE_URL``.

Connections are persistent (``CONN_MAX_AGE``, 60 s unless the environment says otherwise) and
health-checked: DjangoJob closes stale ones around every iteration, and the health check
replaces one the server dropped while the job was idle.
"""

from __future__ import annotations

import os
from pathlib import Path
from urllib.parse import unquote, urlsplit

BASE_DIR = Path(__file__).resolve().parent.parent

SECRET_KEY = os.environ.get("DJANGO_SECRET_KEY", "example-project-only-not-a-secret")
DEBUG = False
ALLOWED_HOSTS: list[str] = []

INSTALLED_APPS = [
    "process_balancer.contrib.django",
    "tasks",
]

DATABASE_URL = os.environ.get("DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/django_example")


def _database(url: str) -> dict[str, object]:
    parts = urlsplit(url)
    return {
        "ENGINE": "django.db.backends.postgresql",
        "NAME": unquote(parts.path.lstrip("/")),
        "USER": unquote(parts.username or ""),
        "PASSWORD": unquote(parts.password or ""),
        "HOST": parts.hostname or "",
        "PORT": str(parts.port or ""),
        "CONN_MAX_AGE": int(os.environ.get("CONN_MAX_AGE", "60")),
        "CONN_HEALTH_CHECKS": True,
        # Lets an operator (and the example's test) find the job's connections in
        # pg_stat_activity.
        "OPTIONS": {"application_name": "process_balancer django example"},
    }


DATABASES = {"default": _database(DATABASE_URL)}
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"
USE_TZ = True
TIME_ZONE = "UTC"

#: The config `manage.py process_balancer ...` reads unless -c names another.
PROCESS_BALANCER_CONFIG = BASE_DIR / "process_balancer.yml"
