"""Every default the runner uses, in one place."""

from __future__ import annotations

#: Key prefix for everything the runner writes to a backend.
NAMESPACE = "process_balancer"
#: Backend used when neither the config nor ``configure()`` names one and REDIS_URL is unset:
#: a SQLite file in the working directory, so trying the runner needs no server. It serves
#: the processes of one host; groups spanning hosts name a Redis or PostgreSQL backend.
BACKEND_URL = "sqlite:///process_balancer.sqlite3"

#: Worker capacity of one process: at most this many slots run in it at once.
MAX_THREADS = 10
#: Seconds a stopping process waits for its running iterations before it exits anyway.
SHUTDOWN_TIMEOUT = 30.0
#: Seconds between two heartbeats of a process.
HEARTBEAT_INTERVAL = 1.0
#: Seconds after its last heartbeat at which a silent process is considered dead, its slots
#: move to peers and the worker locks it held may be taken over.
PROCESS_EXPIRY = 3.0

#: Address the ``/metrics``, ``/healthz`` and ``/readyz`` server binds to when ``metrics_port`` is
#: set; loopback, so exposing it is a deliberate choice.
METRICS_HOST = "127.0.0.1"

#: Built-in worker lock used by jobs that do not choose one.
LOCK_DRIVER = "simple_redis"
#: Seconds a worker lock lives without renewal (job option ``runtime_lock_timeout``).
RUNTIME_LOCK_TIMEOUT = 30.0
#: Seconds a worker waits for its lock before it skips the iteration.
LOCK_ACQUIRE_TIMEOUT = 10.0
#: Seconds a peer waits past the deadline of a slot's holder (its membership or its lock)
#: before taking the slot over (job option ``takeover_grace``). A holder cut off from the
#: backend stops at its next record boundary; records shorter than this grace (plus the 0.2 s
#: the runner cuts holders off early) never overlap a takeover, even without fencing.
TAKEOVER_GRACE = 1.0
#: Most worker slots one job may have (global or per-job ``max_workers`` lowers or raises it);
#: larger counts are refused before anything is written, by clients and by the backend.
MAX_WORKERS = 10_000
#: The backend refuses any count above this, whatever a client's ``max_workers`` says.
MAX_WORKERS_HARD_LIMIT = 1_000_000
#: The worker lock is renewed in the background when this fraction of its TTL has passed.
LOCK_RENEW_FRACTION = 1 / 3

#: Seconds between two calls of an autoscaled job's ``desired_workers()`` (``autoscale.interval``).
AUTOSCALE_INTERVAL = 15.0
#: Seconds the autoscaler waits after its last change (or after it began evaluating) before it
#: lowers a job's count (``autoscale.cooldown``); raising it never waits.
AUTOSCALE_COOLDOWN = 60.0
#: Shortest life of the lock that chooses a job's one evaluating process; it lives three
#: intervals when that is longer, and its holder renews it at every evaluation.
AUTOSCALE_LOCK_TTL = 10.0

#: Restart backoff for a worker whose job raised: first delay, growth factor and cap.
RESTART_BACKOFF_BASE = 1.0
RESTART_BACKOFF_FACTOR = 2.0
RESTART_BACKOFF_MAX = 60.0
#: Delay before a worker that called ``status_abort()`` is started again.
ABORT_RESTART_DELAY = 1.0

#: Config files looked for, in order, when ``-c`` is not given.
CONFIG_PATHS = ("process_balancer.yml", "config/process_balancer.yml")
#: Environment used when neither ``-e`` nor APP_ENV names one.
ENVIRONMENT = "development"
#: What one slot of a job costs compared with other jobs' slots when none is set (``weight:``).
WEIGHT = 1.0
#: How a slot's iterations run unless the job's ``worker:`` says otherwise (an AsyncBase job
#: runs on the ``asyncio`` kind).
WORKER_KIND = "thread"
#: Seconds the asyncio workers' event loop may be late before the runner reports it as
#: blocked (a job made a blocking call) and names the slot that blocked it.
EVENT_LOOP_LAG_WARNING = 0.25
