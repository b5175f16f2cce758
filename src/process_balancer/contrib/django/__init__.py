"""The Django integration: add ``"process_balancer.contrib.django"`` to ``INSTALLED_APPS``.

- ``python manage.py process_balancer run [options]`` runs ``process-balancer run`` after
  Django has loaded its settings and apps (``status``, ``scale`` and the other commands pass
  through the same way); the config file is ``-c``, else the ``PROCESS_BALANCER_CONFIG``
  setting, else the CLI's default locations.
- :class:`DjangoJob` (and :class:`AsyncDjangoJob`) close stale database connections before
  and after every iteration, as Django does around every request.

Needs the ``django`` extra (``pip install 'process-balancer[django]'``).
"""

from __future__ import annotations

from .jobs import AsyncDjangoJob, DjangoJob, fresh_connections, fresh_connections_async

__all__ = ["AsyncDjangoJob", "DjangoJob", "fresh_connections", "fresh_connections_async"]
