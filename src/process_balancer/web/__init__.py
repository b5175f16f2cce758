"""A web dashboard for a group: processes, slots, jobs, throughput, and the operator's actions.

Needs the ``web`` extra (``pip install 'process-balancer[web]'``). Run it with
``process-balancer web``, or mount :func:`create_app` inside an existing ASGI app::

    from starlette.routing import Mount
    import process_balancer
    from process_balancer.web import create_app

    client = process_balancer.configure("process_balancer.yml")
    routes = [..., Mount("/balancer", app=create_app(client, token=os.environ["PB_TOKEN"]))]
"""

from __future__ import annotations

from .app import create_app
from .server import BackgroundServer, bind, serve

__all__ = ["BackgroundServer", "bind", "create_app", "serve"]
