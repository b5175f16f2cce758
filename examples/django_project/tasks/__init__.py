"""The work queue: a ``Task`` table drained by the ``ProcessTasks`` job."""
