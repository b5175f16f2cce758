"""A minimal Django project whose work queue is drained by process-balancer."""
