"""A small HTTP work queue for the async poller example: items to claim, fetch and mark done.

Standard library only; run it beside the runners:

    python examples/async_poller/server.py --items 3000 [--port 8765] [--work-time 0.02]

Every claim carries the claiming slot's fencing token, and the queue refuses one older than a
token it has seen for that slot, as a real API guarding its work should: a runner that lost
its slot (paused, cut off) cannot claim or finish items after a newer holder has claimed.

    POST /claim           {"worker": i, "fence": f, "limit": n} -> {"items": [ids]}, 409 if stale
    GET  /items/<id>      the item (answered after --work-time seconds, like a slow API)
    POST /items/<id>/done {"worker": i, "fence": f, "value": v}, 409 unless claimed so
    POST /release         {"worker": i, "fence": f}: unfinished claims go back to the queue
    GET  /stats           counts: queued, claimed, done, per runner, refused, duplicates
"""

from __future__ import annotations

import argparse
import json
import threading
import time
from collections import deque
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


class WorkQueue:
    """The queue's state; every method takes the lock, so concurrent requests are safe."""

    def __init__(self, items: int) -> None:
        self._lock = threading.Lock()
        self.total = items
        self.queued: deque[int] = deque(range(items))
        self.claimed: dict[int, tuple[int, int]] = {}  # item -> (worker, fence)
        self.done: dict[int, str] = {}  # item -> runner that finished it
        self.fences: dict[int, int] = {}  # worker slot -> highest fence seen
        self.refused = 0
        self.duplicates = 0

    def claim(self, worker: int, fence: int, limit: int) -> list[int] | None:
        with self._lock:
            if fence < self.fences.get(worker, -1):
                self.refused += 1
                return None
            if fence > self.fences.get(worker, -1):
                # A new holder of the slot: what an older one left claimed is queued again.
                stale = [i for i, (w, f) in self.claimed.items() if w == worker and f < fence]
                for item in stale:
                    del self.claimed[item]
                    self.queued.appendleft(item)
                self.fences[worker] = fence
            taken = [self.queued.popleft() for _ in range(min(limit, len(self.queued)))]
            for item in taken:
                self.claimed[item] = (worker, fence)
            return taken

    def finish(self, item: int, worker: int, fence: int, runner: str) -> bool:
        with self._lock:
            if self.claimed.get(item) != (worker, fence):
                self.refused += 1
                return False
            del self.claimed[item]
            if item in self.done:
                self.duplicates += 1
            self.done[item] = runner
            return True

    def release(self, worker: int, fence: int) -> int:
        with self._lock:
            mine = [i for i, held in self.claimed.items() if held == (worker, fence)]
            for item in mine:
                del self.claimed[item]
                self.queued.appendleft(item)
            return len(mine)

    def stats(self) -> dict[str, Any]:
        with self._lock:
            by_runner: dict[str, int] = {}
            for runner in self.done.values():
                by_runner[runner] = by_runner.get(runner, 0) + 1
            return {
                "total": self.total,
                "queued": len(self.queued),
                "claimed": len(self.claimed),
                "done": len(self.done),
                "by_runner": by_runner,
                "refused": self.refused,
                "duplicates": self.duplicates,
            }


def make_server(queue: WorkQueue, host: str, port: int, work_time: float) -> ThreadingHTTPServer:
    """An HTTP server for ``queue`` (port 0 picks a free one); call ``serve_forever``."""

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: Any) -> None:
            pass  # one line per request would drown the progress lines

        def _reply(self, status: int, body: Any) -> None:
            data = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def _body(self) -> dict[str, Any]:
            length = int(self.headers.get("Content-Length") or 0)
            data: dict[str, Any] = json.loads(self.rfile.read(length) or b"{}")
            return data

        def do_GET(self) -> None:
            parts = self.path.strip("/").split("/")
            if parts == ["stats"]:
                self._reply(200, queue.stats())
            elif len(parts) == 2 and parts[0] == "items" and parts[1].isdigit():
                time.sleep(work_time)
                item = int(parts[1])
                self._reply(200, {"id": item, "value": item * item % 997})
            else:
                self._reply(404, {"error": "not found"})

        def do_POST(self) -> None:
            parts = self.path.strip("/").split("/")
            body = self._body()
            worker, fence = int(body.get("worker", -1)), int(body.get("fence", -1))
            if parts == ["claim"]:
                items = queue.claim(worker, fence, int(body.get("limit", 10)))
                if items is None:
                    self._reply(409, {"error": "a newer fencing token holds this slot"})
                else:
                    self._reply(200, {"items": items})
            elif parts == ["release"]:
                self._reply(200, {"released": queue.release(worker, fence)})
            elif len(parts) == 3 and parts[0] == "items" and parts[2] == "done":
                runner = self.headers.get("X-Runner", "?")
                if queue.finish(int(parts[1]), worker, fence, runner):
                    self._reply(200, {"ok": True})
                else:
                    self._reply(409, {"error": "not claimed by this worker with this token"})
            else:
                self._reply(404, {"error": "not found"})

    server = ThreadingHTTPServer((host, port), Handler)
    server.daemon_threads = True
    return server


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8765)
    parser.add_argument("--items", type=int, default=3000, help="items queued at start")
    parser.add_argument("--work-time", type=float, default=0.02, help="seconds per item fetch")
    parser.add_argument(
        "--exit-when-done", action="store_true", help="exit once every item is done"
    )
    args = parser.parse_args()
    queue = WorkQueue(args.items)
    server = make_server(queue, args.host, args.port, args.work_time)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    print(f"work queue of {args.items:,} items on http://{args.host}:{server.server_port}")
    reported = None
    try:
        while True:
            time.sleep(2)
            stats = queue.stats()
            line = (
                f"queued {stats['queued']:,} | claimed {stats['claimed']:,} | done "
                f"{stats['done']:,} {stats['by_runner']} | refused {stats['refused']} | "
                f"duplicates {stats['duplicates']}"
            )
            if line == reported:
                continue
            reported = line
            print(line, flush=True)
            if stats["done"] == stats["total"]:
                twice = stats["duplicates"]
                print(f"all {stats['total']:,} items done, {twice} of them twice", flush=True)
                if args.exit_when_done:
                    break
    except KeyboardInterrupt:
        pass
    server.shutdown()


if __name__ == "__main__":
    main()
