"""Tools for testing process-balancer and the jobs built on it.

:mod:`process_balancer.testing.simulation` runs the real runtime (manager, supervisor, lease
keeper, workers, assignment) of several processes on a simulated clock with a seeded scheduler
and injected faults, and checks the group's promises after every step. It needs the
``greenlet`` package (``pip install 'process-balancer[simulation]'``).
"""
