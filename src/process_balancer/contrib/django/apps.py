"""The app Django loads from ``INSTALLED_APPS``: it only provides the management command."""

from __future__ import annotations

from django.apps import AppConfig


class ProcessBalancerConfig(AppConfig):  # type: ignore[misc]
    name = "process_balancer.contrib.django"
    label = "process_balancer"
    verbose_name = "process-balancer"
