"""An autoscaled test job: the fake queue's depth is a file the test writes."""

from __future__ import annotations

import json
import os
import time

from support.jobs import RecordingJob


class QueueDepthJob(RecordingJob):
    """Wants as many workers as the number in ``options['depth_file']``; every call of
    ``desired_workers()`` appends the calling pid and time to ``options['calls_file']``."""

    def desired_workers(self) -> int:
        line = json.dumps({"pid": os.getpid(), "t": time.time()}) + "\n"
        fd = os.open(self.options["calls_file"], os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            os.write(fd, line.encode())
        finally:
            os.close(fd)
        with open(self.options["depth_file"]) as f:
            return int(f.read().strip())
