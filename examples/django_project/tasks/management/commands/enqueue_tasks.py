"""``python manage.py enqueue_tasks N``: queue N tasks with made-up payloads."""

from __future__ import annotations

import secrets
from typing import Any

from django.core.management.base import BaseCommand, CommandParser

from tasks.models import Task


class Command(BaseCommand):
    help = "Queue N tasks for the process_tasks job."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("count", type=int, help="how many tasks to queue")

    def handle(self, *_: Any, count: int, **__: Any) -> None:
        Task.objects.bulk_create(
            (Task(payload=f"order {secrets.token_hex(8)}") for _ in range(count)),
            batch_size=1000,
        )
        queued = Task.objects.filter(status=Task.Status.QUEUED).count()
        self.stdout.write(f"queued {count} tasks; {queued} are waiting")
