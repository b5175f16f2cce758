-- Shared state of process-balancer groups in one SQLite file (see backends/sqlite.py).
-- Every table is keyed by namespace, so several groups can share a file. Times are wall-clock
-- seconds since the epoch (time.time()), the clock every process on the host shares.
-- Idempotent: run on every connection.

-- One row per group: the state version, the version the stored assignment was computed from,
-- the slots that assignment could not place. Written with the assignment, a column added by
-- connection._ADDED_COLUMNS (so that a file of an earlier version gets it too): partitions,
-- JSON {job: [count, generation]}, NULL until an assignment stores it.
CREATE TABLE IF NOT EXISTS pb_groups (
    namespace TEXT PRIMARY KEY,
    version INTEGER NOT NULL DEFAULT 0,
    assignment_version INTEGER NOT NULL DEFAULT 0,
    unplaced TEXT NOT NULL DEFAULT '{}'
);

-- Live members (and expired ones not pruned yet): heartbeat deadline, traits, volatile info.
CREATE TABLE IF NOT EXISTS pb_members (
    namespace TEXT NOT NULL,
    identity TEXT NOT NULL,
    deadline REAL NOT NULL,
    traits TEXT NOT NULL,
    info TEXT NOT NULL,
    PRIMARY KEY (namespace, identity)
);
CREATE INDEX IF NOT EXISTS pb_members_by_deadline ON pb_members (namespace, deadline);

-- The stored assignment: identity -> JSON {job: [indexes]}.
CREATE TABLE IF NOT EXISTS pb_assignment (
    namespace TEXT NOT NULL,
    identity TEXT NOT NULL,
    slots TEXT NOT NULL,
    PRIMARY KEY (namespace, identity)
);

-- Worker counts set at runtime, and the counts paused jobs resume to. Kept as whatever was
-- written: a value that is not an integer is reported, never overwritten silently.
CREATE TABLE IF NOT EXISTS pb_counts (
    namespace TEXT NOT NULL,
    job_id TEXT NOT NULL,
    count NOT NULL,
    PRIMARY KEY (namespace, job_id)
);
CREATE TABLE IF NOT EXISTS pb_paused (
    namespace TEXT NOT NULL,
    job_id TEXT NOT NULL,
    count NOT NULL,
    PRIMARY KEY (namespace, job_id)
);

-- Remote commands waiting for a member, dropped unread after expires_at.
CREATE TABLE IF NOT EXISTS pb_commands (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    namespace TEXT NOT NULL,
    identity TEXT NOT NULL,
    body TEXT NOT NULL,
    expires_at REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS pb_commands_by_identity ON pb_commands (namespace, identity);
CREATE INDEX IF NOT EXISTS pb_commands_by_expiry ON pb_commands (expires_at);

-- Acknowledgements of remote commands, kept a few minutes for the sender to read.
CREATE TABLE IF NOT EXISTS pb_acks (
    namespace TEXT NOT NULL,
    command_id TEXT NOT NULL,
    identity TEXT NOT NULL,
    at REAL NOT NULL,
    expires_at REAL NOT NULL,
    PRIMARY KEY (namespace, command_id, identity)
);
CREATE INDEX IF NOT EXISTS pb_acks_by_expiry ON pb_acks (expires_at);

-- Worker locks. The row outlives a release (token NULL) so that the fencing counter keeps
-- increasing with every acquisition of the slot. The incarnation the lock was taken in is a
-- column added by connection._ADDED_COLUMNS.
CREATE TABLE IF NOT EXISTS pb_locks (
    namespace TEXT NOT NULL,
    name TEXT NOT NULL,
    token TEXT,
    fence INTEGER NOT NULL,
    holder TEXT,
    expires_at REAL NOT NULL,
    PRIMARY KEY (namespace, name)
);

-- The generation gate of each partitioned job: the generation its worker locks are taken
-- under and the names (a JSON array) of every lock taken under it. Generation 0 grants nothing
-- before blocked_until: the record replaced an unreadable one, whose holders cannot renew and
-- have stopped by then. Lock state: repair never touches it.
CREATE TABLE IF NOT EXISTS pb_gates (
    namespace TEXT NOT NULL,
    job_id TEXT NOT NULL,
    generation INTEGER NOT NULL,
    blocked_until REAL NOT NULL DEFAULT 0,
    names TEXT NOT NULL DEFAULT '[]',
    PRIMARY KEY (namespace, job_id)
);

-- The incarnation of each group: a new one begins when the file no longer has the group's
-- state while a process knew it, or holds an older state than a process has seen (a restored
-- copy). No worker lock is granted before grants_at.
CREATE TABLE IF NOT EXISTS pb_incarnations (
    namespace TEXT PRIMARY KEY,
    id TEXT NOT NULL,
    grants_at REAL NOT NULL
);

-- Members pruned in the last hour with their deadlines: their worker locks are taken over
-- only takeover_grace after that deadline.
CREATE TABLE IF NOT EXISTS pb_departed (
    namespace TEXT NOT NULL,
    identity TEXT NOT NULL,
    deadline REAL NOT NULL,
    PRIMARY KEY (namespace, identity)
);

-- Wake-ups (SQLite has no notifications): listeners poll for rows past the last seq they saw.
-- Only the most recent rows are kept.
CREATE TABLE IF NOT EXISTS pb_events (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    namespace TEXT NOT NULL,
    message TEXT NOT NULL
);
