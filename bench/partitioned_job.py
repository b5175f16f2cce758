"""The job ``bench/resize.py`` runs: slot ``i`` of ``N`` handles the tenants ``t % N == i``,
each for ``record_time`` seconds, and appends (tenant, slot, count, generation, start, end)
to ``options['tenant_log']``."""

from __future__ import annotations

import json
import os
import time

import process_balancer


class TenantJob(process_balancer.Base):
    def lock_records(self) -> list[int]:
        count = self.worker_count or 1
        return [t for t in range(int(self.options["tenants"])) if t % count == self.worker_index]

    def process_record(self, tenant: int) -> None:
        started = time.time()
        time.sleep(float(self.options["record_time"]))
        entry = [
            tenant,
            self.worker_index,
            self.worker_count,
            self.generation,
            started,
            time.time(),
        ]
        fd = os.open(self.options["tenant_log"], os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            os.write(fd, (json.dumps(entry) + "\n").encode())
        finally:
            os.close(fd)

    def unlock_records(self) -> None:
        pass
