-- The PostgreSQL backend's tables and functions, created by `process-balancer migrate` (or on
-- the first run) in one transaction, after the schema itself. Every statement is idempotent.
-- `{schema}` is replaced by the quoted schema name, `{version}` by the schema version. Several groups share these tables: every row carries its namespace.
--
-- Each operation of the backend is one function call, so it runs in one transaction and one
-- round trip, as each Redis operation is one Lua script. Row locks keep them atomic, and every
-- function takes them in one order, so the operations cannot deadlock:
--   1. the caller's own pb_members row (pb_heartbeat locks it before anything else);
--   2. other members' rows, only with SKIP LOCKED (pb_heartbeat's prune), so never waiting:
--      a member whose own heartbeat holds its row is not pruned by a peer, and two expired
--      members heartbeating at once cannot each wait for the row the other just deleted;
--   3. a pb_gates row (a gated pb_lock_acquire FOR UPDATE, a gated pb_lock_renew FOR
--      SHARE), then pb_locks rows (pb_lock_acquire, several only in name order), which no
--      holder of a group row waits for;
--   4. the group's pb_groups row (pb_bump, pb_lock_group, pb_write_assignment): nothing
--      holding it waits for a member or lock row;
--   5. pb_assignments, pb_commands and pb_acks rows, after everything else.

CREATE TABLE IF NOT EXISTS {schema}.pb_schema (
    singleton boolean PRIMARY KEY DEFAULT true CHECK (singleton),
    version   integer NOT NULL
);

-- One row per group: the state version and the assignment computed from it.
CREATE TABLE IF NOT EXISTS {schema}.pb_groups (
    namespace          text   PRIMARY KEY,
    version            bigint NOT NULL DEFAULT 0,
    assignment_version bigint NOT NULL DEFAULT 0,
    unplaced           jsonb  NOT NULL DEFAULT '{}'
);

CREATE TABLE IF NOT EXISTS {schema}.pb_members (
    namespace text        NOT NULL,
    identity  text        NOT NULL,
    deadline  timestamptz NOT NULL,  -- database clock; the member is dead after it
    traits    jsonb       NOT NULL,  -- capacity, active, jobs: inputs of the assignment
    info      jsonb       NOT NULL,  -- volatile: what runs now
    PRIMARY KEY (namespace, identity)
);
CREATE INDEX IF NOT EXISTS pb_members_deadline ON {schema}.pb_members (namespace, deadline);

CREATE TABLE IF NOT EXISTS {schema}.pb_assignments (
    namespace text  NOT NULL,
    identity  text  NOT NULL,
    slots     jsonb NOT NULL,  -- {"job": [indexes]}
    PRIMARY KEY (namespace, identity)
);

CREATE TABLE IF NOT EXISTS {schema}.pb_counts (
    namespace text   NOT NULL,
    job_id    text   NOT NULL,
    count     bigint CHECK (count >= 0),      -- set at runtime; NULL: the config's applies
    resume_to bigint CHECK (resume_to >= 0),  -- set while paused: the count resume restores
    PRIMARY KEY (namespace, job_id)
);

CREATE TABLE IF NOT EXISTS {schema}.pb_commands (
    id         bigserial   PRIMARY KEY,
    namespace  text        NOT NULL,
    identity   text        NOT NULL,
    command    jsonb       NOT NULL,
    expires_at timestamptz NOT NULL
);
CREATE INDEX IF NOT EXISTS pb_commands_identity ON {schema}.pb_commands (namespace, identity);

CREATE TABLE IF NOT EXISTS {schema}.pb_acks (
    namespace  text             NOT NULL,
    command_id text             NOT NULL,
    identity   text             NOT NULL,
    acked_at   double precision NOT NULL,  -- the acknowledging process's clock, epoch seconds
    expires_at timestamptz      NOT NULL,
    PRIMARY KEY (namespace, command_id, identity)
);

-- The group's incarnation (see pb_heartbeat): a new one begins when the server changed
-- (restart, failover), when the group's row is gone while a process knew it, or when the
-- stored version is older than one a process has seen (a restore). No worker lock is granted
-- before grants_at.
ALTER TABLE {schema}.pb_groups ADD COLUMN IF NOT EXISTS incarnation text;
ALTER TABLE {schema}.pb_groups ADD COLUMN IF NOT EXISTS incarnation_server text;
ALTER TABLE {schema}.pb_groups ADD COLUMN IF NOT EXISTS grants_at timestamptz;

-- Members pruned in the last hour with their deadlines: their worker locks are taken over
-- only takeover_grace after that deadline.
CREATE TABLE IF NOT EXISTS {schema}.pb_departed (
    namespace text        NOT NULL,
    identity  text        NOT NULL,
    deadline  timestamptz NOT NULL,
    PRIMARY KEY (namespace, identity)
);

-- Worker locks of the backend's own lease lock (lock driver simple_redis). A row outlives its
-- holders so that the fencing counter keeps growing; a free lock has a NULL token.
CREATE TABLE IF NOT EXISTS {schema}.pb_locks (
    namespace  text        NOT NULL,
    name       text        NOT NULL,  -- <job_id>:<worker_index>
    token      text,
    holder     text,                   -- identity of the holding process
    expires_at timestamptz,
    fence      bigint      NOT NULL DEFAULT 0,
    PRIMARY KEY (namespace, name),
    CHECK ((token IS NULL) = (holder IS NULL) AND (token IS NULL) = (expires_at IS NULL))
);

-- The incarnation a lock was taken in: a lock of an earlier one is free once it grants locks.
ALTER TABLE {schema}.pb_locks ADD COLUMN IF NOT EXISTS incarnation text;

-- Fencing counters of the advisory_lock driver, one per slot.
CREATE TABLE IF NOT EXISTS {schema}.pb_advisory_fences (
    namespace    text    NOT NULL,
    job_id       text    NOT NULL,
    worker_index integer NOT NULL,
    fence        bigint  NOT NULL,
    PRIMARY KEY (namespace, job_id, worker_index)
);

-- Partitioned jobs: each job's [count, generation] as the assignment spreads it, written
-- with the assignment (NULL: never written).
ALTER TABLE {schema}.pb_groups ADD COLUMN IF NOT EXISTS partitions jsonb;

-- The generation gate of a partitioned job: the generation its worker locks are taken under
-- and the names of every lock taken under it. Generation 0 grants nothing before
-- blocked_until (the record replaced an unreadable one); a generation that is NULL or
-- negative, or names that are not an array of lock names, is unreadable.
CREATE TABLE IF NOT EXISTS {schema}.pb_gates (
    namespace     text        NOT NULL,
    job_id        text        NOT NULL,
    generation    bigint      DEFAULT 0,
    names         jsonb       DEFAULT '[]',
    blocked_until timestamptz,
    PRIMARY KEY (namespace, job_id)
);

-- A stored integer as backends/codec.py reads one: an integral JSON number (at most 2^53
-- when written as a float) or a string of 1 to 19 decimal digits; else NULL.
CREATE OR REPLACE FUNCTION {schema}.pb_whole(p_value jsonb)
RETURNS numeric
LANGUAGE plpgsql IMMUTABLE AS $$
DECLARE
    v_number numeric;
BEGIN
    IF jsonb_typeof(p_value) = 'number' THEN
        v_number := (p_value #>> '{}')::numeric;
        IF v_number = trunc(v_number) AND abs(v_number) <= 9007199254740992 THEN
            RETURN v_number;
        END IF;
    ELSIF jsonb_typeof(p_value) = 'string' AND (p_value #>> '{}') ~ '^-?[0-9]{1,19}$' THEN
        RETURN (p_value #>> '{}')::numeric;
    END IF;
    RETURN NULL;
END $$;

-- The generation stored partitions give p_job: 0 when they name no such job (or none were
-- written), -1 when they are unreadable (as codec.parse_partitions decides).
CREATE OR REPLACE FUNCTION {schema}.pb_partition_generation(p_partitions jsonb, p_job text)
RETURNS bigint
LANGUAGE plpgsql IMMUTABLE AS $$
DECLARE
    v_job text;
    v_entry jsonb;
    v_count numeric;
    v_generation numeric;
    v_found bigint := 0;
BEGIN
    IF p_partitions IS NULL THEN
        RETURN 0;
    END IF;
    IF jsonb_typeof(p_partitions) <> 'object' THEN
        RETURN -1;
    END IF;
    FOR v_job, v_entry IN SELECT e.key, e.value FROM jsonb_each(p_partitions) e LOOP
        IF jsonb_typeof(v_entry) <> 'array' OR jsonb_array_length(v_entry) <> 2
           OR jsonb_typeof(v_entry -> 1) <> 'number' THEN
            RETURN -1;
        END IF;
        v_count := {schema}.pb_whole(v_entry -> 0);
        v_generation := {schema}.pb_whole(v_entry -> 1);
        IF v_count IS NULL OR v_count NOT BETWEEN 0 AND 1000000 OR v_generation IS NULL
           OR v_generation NOT BETWEEN 1 AND 9007199254740992 THEN
            RETURN -1;
        END IF;
        IF v_job = p_job THEN
            v_found := v_generation;
        END IF;
    END LOOP;
    RETURN v_found;
END $$;

-- Whether a pb_gates row is one this program wrote.
CREATE OR REPLACE FUNCTION {schema}.pb_gate_readable(p_generation bigint, p_names jsonb)
RETURNS boolean
LANGUAGE plpgsql IMMUTABLE AS $$
BEGIN
    IF p_generation IS NULL OR p_generation < 0 OR jsonb_typeof(p_names) IS DISTINCT FROM 'array'
    THEN
        RETURN false;
    END IF;
    RETURN NOT EXISTS (
        SELECT 1 FROM jsonb_array_elements(p_names) e WHERE jsonb_typeof(e) <> 'string');
END $$;

-- Bump a group's state version (creating its row on first use) and tell the group.
CREATE OR REPLACE FUNCTION {schema}.pb_bump(p_namespace text, p_channel text)
RETURNS TABLE (o_version bigint, o_assignment_version bigint)
LANGUAGE plpgsql AS $$
BEGIN
    RETURN QUERY
    INSERT INTO {schema}.pb_groups AS g (namespace, version) VALUES (p_namespace, 1)
    ON CONFLICT (namespace) DO UPDATE SET version = g.version + 1
    RETURNING g.version, g.assignment_version;
    PERFORM pg_notify(p_channel, 'state');
END $$;

-- Lock a group's row (creating it), so changes to its counts are serialized.
CREATE OR REPLACE FUNCTION {schema}.pb_lock_group(p_namespace text)
RETURNS void
LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO {schema}.pb_groups (namespace) VALUES (p_namespace)
    ON CONFLICT (namespace) DO NOTHING;
    PERFORM 1 FROM {schema}.pb_groups WHERE namespace = p_namespace FOR UPDATE;
END $$;

-- The server's identity: a restart or a failover (another server) changes it.
CREATE OR REPLACE FUNCTION {schema}.pb_server() RETURNS text
LANGUAGE sql STABLE AS $$
    SELECT extract(epoch FROM pg_postmaster_start_time())::text
$$;

-- Whether a group needs a new incarnation: o_reason is NULL when o_incarnation stands, '' for
-- a group that has none yet (it starts at once), else why (no lock is granted for a while).
CREATE OR REPLACE FUNCTION {schema}.pb_incarnation_check(
    p_namespace text, p_known_incarnation text, p_known_version bigint, p_hold_ms bigint,
    p_now timestamptz, OUT o_incarnation text, OUT o_reason text)
LANGUAGE plpgsql AS $$
DECLARE
    v_server text;
    v_version bigint;
BEGIN
    SELECT g.incarnation, g.incarnation_server, g.version
    INTO o_incarnation, v_server, v_version
    FROM {schema}.pb_groups g WHERE g.namespace = p_namespace;
    IF o_incarnation IS NULL THEN
        IF p_known_incarnation <> '' THEN
            o_reason := 'the backend no longer has the group state';
        ELSIF p_now - pg_postmaster_start_time() < p_hold_ms * interval '1 millisecond' THEN
            o_reason := 'the backend server has just started';
        ELSE
            o_reason := '';
        END IF;
    ELSIF v_server IS DISTINCT FROM {schema}.pb_server() THEN
        o_reason := 'the backend server changed (a restart or a failover)';
    ELSIF p_known_incarnation = o_incarnation AND v_version < p_known_version THEN
        o_reason := 'the backend state went back to an older version';
    END IF;
END $$;

-- Begin a new incarnation of a group (its row locked by the caller); returns its id.
CREATE OR REPLACE FUNCTION {schema}.pb_new_incarnation(
    p_namespace text, p_now timestamptz, p_grants_at timestamptz)
RETURNS text
LANGUAGE plpgsql AS $$
DECLARE
    v_id text := 'pg.' || (extract(epoch FROM p_now) * 1000000)::bigint::text || '.'
        || substr(md5(random()::text), 1, 4);
BEGIN
    UPDATE {schema}.pb_groups
    SET incarnation = v_id, incarnation_server = {schema}.pb_server(), grants_at = p_grants_at
    WHERE namespace = p_namespace;
    RETURN v_id;
END $$;

-- Refresh a member, prune up to p_prune expired members, return what changed. When nothing
-- changed it touches one member row and reads a few rows by primary key or index, whatever the
-- group's size. Lock order: the caller's own member row first, then the rows it prunes (SKIP
-- LOCKED, so two expired members pruning each other cannot deadlock), then the group's row.
DROP FUNCTION IF EXISTS {schema}.pb_heartbeat(text, text, jsonb, jsonb, bigint, bigint, text, integer);
-- Version 4 added o_partitions: a changed result type needs the old function dropped.
DROP FUNCTION IF EXISTS {schema}.pb_heartbeat(
    text, text, jsonb, jsonb, bigint, bigint, text, integer, bigint, text, bigint);
CREATE OR REPLACE FUNCTION {schema}.pb_heartbeat(
    p_namespace text, p_identity text, p_traits jsonb, p_info jsonb, p_expiry_ms bigint,
    p_seen_assignment_version bigint, p_channel text, p_prune integer, p_hold_ms bigint,
    p_known_incarnation text, p_known_version bigint,
    OUT o_joined boolean, OUT o_changed boolean, OUT o_version bigint,
    OUT o_assignment_version bigint, OUT o_slots text, OUT o_commands text,
    OUT o_next_expiry_ms bigint, OUT o_incarnation text, OUT o_server_time float8,
    OUT o_new_incarnation text, OUT o_partitions text)
LANGUAGE plpgsql AS $$
DECLARE
    v_now timestamptz := clock_timestamp();
    v_deadline timestamptz;
    v_traits jsonb;
    v_pruned integer;
    v_check record;
BEGIN
    o_server_time := extract(epoch FROM v_now);
    o_new_incarnation := '';

    -- The caller's own row first: a peer's prune skips it while this heartbeat runs.
    SELECT m.deadline, m.traits INTO v_deadline, v_traits
    FROM {schema}.pb_members m
    WHERE m.namespace = p_namespace AND m.identity = p_identity
    FOR UPDATE;
    -- A member whose deadline passed is treated as new: peers may already have its locks.
    o_joined := NOT FOUND OR v_deadline <= v_now;
    IF NOT FOUND THEN
        INSERT INTO {schema}.pb_members AS m (namespace, identity, deadline, traits, info)
        VALUES (p_namespace, p_identity, v_now + p_expiry_ms * interval '1 millisecond',
                p_traits, p_info)
        ON CONFLICT (namespace, identity) DO UPDATE
        SET deadline = EXCLUDED.deadline, traits = EXCLUDED.traits, info = EXCLUDED.info;
    ELSE
        UPDATE {schema}.pb_members m
        SET deadline = v_now + p_expiry_ms * interval '1 millisecond',
            traits = p_traits, info = p_info
        WHERE m.namespace = p_namespace AND m.identity = p_identity;
    END IF;
    o_changed := o_joined OR v_traits IS DISTINCT FROM p_traits;

    -- SKIP LOCKED: a member whose own heartbeat is running right now is not pruned by a peer.
    WITH expired AS (
        SELECT m.identity, m.deadline FROM {schema}.pb_members m
        WHERE m.namespace = p_namespace AND m.deadline <= v_now AND m.identity <> p_identity
        ORDER BY m.deadline LIMIT p_prune
        FOR UPDATE SKIP LOCKED
    ), gone AS (
        DELETE FROM {schema}.pb_members m USING expired e
        WHERE m.namespace = p_namespace AND m.identity = e.identity
        RETURNING m.identity, m.deadline
    ), remembered AS (
        -- Their worker locks are taken over only takeover_grace after these deadlines.
        INSERT INTO {schema}.pb_departed AS d (namespace, identity, deadline)
        SELECT p_namespace, g.identity, g.deadline FROM gone g
        ON CONFLICT (namespace, identity) DO UPDATE SET deadline = EXCLUDED.deadline
        RETURNING 1
    )
    SELECT count(*) INTO v_pruned FROM remembered;
    IF v_pruned > 0 THEN
        o_changed := true;
        DELETE FROM {schema}.pb_departed
        WHERE namespace = p_namespace AND deadline < v_now - interval '1 hour';
    END IF;

    -- The group's incarnation; its row is locked only to begin a new one.
    SELECT * INTO v_check FROM {schema}.pb_incarnation_check(
        p_namespace, p_known_incarnation, p_known_version, p_hold_ms, v_now);
    IF v_check.o_reason IS NOT NULL THEN
        PERFORM {schema}.pb_lock_group(p_namespace);
        SELECT * INTO v_check FROM {schema}.pb_incarnation_check(
            p_namespace, p_known_incarnation, p_known_version, p_hold_ms, v_now);
    END IF;
    IF v_check.o_reason IS NOT NULL THEN
        o_new_incarnation := v_check.o_reason;
        o_incarnation := {schema}.pb_new_incarnation(
            p_namespace, v_now,
            CASE WHEN v_check.o_reason <> '' THEN v_now + p_hold_ms * interval '1 millisecond'
            END);
        o_changed := true;
    ELSE
        o_incarnation := v_check.o_incarnation;
    END IF;

    IF o_changed THEN
        SELECT b.o_version, b.o_assignment_version INTO o_version, o_assignment_version
        FROM {schema}.pb_bump(p_namespace, p_channel) b;
    ELSE
        SELECT g.version, g.assignment_version INTO o_version, o_assignment_version
        FROM {schema}.pb_groups g WHERE g.namespace = p_namespace;
    END IF;

    IF o_assignment_version IS DISTINCT FROM p_seen_assignment_version THEN
        -- Every job's count and generation go with the slots (NULL: never written), read in
        -- one statement so that both are of the same assignment.
        SELECT a.slots::text, g.partitions::text INTO o_slots, o_partitions
        FROM {schema}.pb_groups g
        LEFT JOIN {schema}.pb_assignments a
            ON a.namespace = g.namespace AND a.identity = p_identity
        WHERE g.namespace = p_namespace;
        o_slots := coalesce(o_slots, '{}');
    END IF;

    WITH taken AS (
        DELETE FROM {schema}.pb_commands c
        WHERE c.namespace = p_namespace AND c.identity = p_identity
        RETURNING c.id, c.command, c.expires_at
    )
    SELECT coalesce(jsonb_agg(t.command ORDER BY t.id) FILTER (WHERE t.expires_at > v_now),
                    '[]')::text
    INTO o_commands FROM taken t;

    -- The soonest deadline of another member: the caller wakes then to prune it if it is dead.
    SELECT floor(extract(epoch FROM min(m.deadline) - v_now) * 1000)::bigint
    INTO o_next_expiry_ms
    FROM {schema}.pb_members m
    WHERE m.namespace = p_namespace AND m.identity <> p_identity;
    IF o_next_expiry_ms < 0 THEN  -- NULL (no other member) stays NULL
        o_next_expiry_ms := 0;
    END IF;
END $$;

-- Begin a new incarnation if the group is still in p_expected (a process saw the server's
-- clock jump); no worker lock is granted for p_hold_ms. Returns the current incarnation.
CREATE OR REPLACE FUNCTION {schema}.pb_reset_incarnation(
    p_namespace text, p_expected text, p_hold_ms bigint, p_channel text)
RETURNS text
LANGUAGE plpgsql AS $$
DECLARE
    v_now timestamptz := clock_timestamp();
    v_current text;
    v_new text;
BEGIN
    PERFORM {schema}.pb_lock_group(p_namespace);
    SELECT g.incarnation INTO v_current FROM {schema}.pb_groups g
    WHERE g.namespace = p_namespace;
    IF v_current IS DISTINCT FROM p_expected THEN
        RETURN coalesce(v_current, '');
    END IF;
    v_new := {schema}.pb_new_incarnation(
        p_namespace, v_now, v_now + p_hold_ms * interval '1 millisecond');
    PERFORM {schema}.pb_bump(p_namespace, p_channel);
    RETURN v_new;
END $$;

CREATE OR REPLACE FUNCTION {schema}.pb_leave(p_namespace text, p_identity text, p_channel text)
RETURNS boolean
LANGUAGE plpgsql AS $$
DECLARE
    v_removed boolean;
BEGIN
    DELETE FROM {schema}.pb_members WHERE namespace = p_namespace AND identity = p_identity;
    v_removed := FOUND;
    DELETE FROM {schema}.pb_commands WHERE namespace = p_namespace AND identity = p_identity;
    IF v_removed THEN
        PERFORM {schema}.pb_bump(p_namespace, p_channel);
    END IF;
    RETURN v_removed;
END $$;

-- Store an assignment only if the version it was computed from is still current and none was
-- stored for it yet: one assignment per version. Every job's count and generation
-- (p_partitions) are stored with it.
DROP FUNCTION IF EXISTS {schema}.pb_write_assignment(text, bigint, jsonb, jsonb, text);
CREATE OR REPLACE FUNCTION {schema}.pb_write_assignment(
    p_namespace text, p_version bigint, p_slots jsonb, p_unplaced jsonb, p_partitions jsonb,
    p_channel text)
RETURNS boolean
LANGUAGE plpgsql AS $$
DECLARE
    v_version bigint;
    v_assignment_version bigint;
BEGIN
    SELECT g.version, g.assignment_version INTO v_version, v_assignment_version
    FROM {schema}.pb_groups g WHERE g.namespace = p_namespace FOR UPDATE;
    IF coalesce(v_version, 0) <> p_version OR coalesce(v_assignment_version, 0) = p_version THEN
        RETURN false;
    END IF;
    DELETE FROM {schema}.pb_assignments WHERE namespace = p_namespace;
    INSERT INTO {schema}.pb_assignments (namespace, identity, slots)
    SELECT p_namespace, e.key, e.value FROM jsonb_each(p_slots) e;
    UPDATE {schema}.pb_groups
    SET assignment_version = p_version, unplaced = p_unplaced, partitions = p_partitions
    WHERE namespace = p_namespace;
    PERFORM pg_notify(p_channel, 'assignment');
    RETURN true;
END $$;

-- The functions below take counts as decimal strings and parse them here (as the Redis scripts
-- do), so a float or a 23-digit integer from any client is refused as written, never rounded.
-- Their earlier signatures took bigints without a ceiling: drop them so no client reaches them.
DROP FUNCTION IF EXISTS {schema}.pb_set_count(text, text, text, bigint, bigint, text);
DROP FUNCTION IF EXISTS {schema}.pb_pause(text, text, bigint, text);
DROP FUNCTION IF EXISTS {schema}.pb_resume(text, text, text);

-- p_text as a count if it is the decimal string of an integer from p_low to p_high, else NULL.
CREATE OR REPLACE FUNCTION {schema}.pb_parse_count(p_text text, p_low bigint, p_high bigint)
RETURNS bigint
LANGUAGE plpgsql IMMUTABLE AS $$
DECLARE
    v_count bigint;
BEGIN
    IF p_text IS NULL OR length(p_text) > 8 OR p_text !~ '^-?[0-9]+$' THEN
        RETURN NULL;
    END IF;
    v_count := p_text::bigint;
    RETURN CASE WHEN v_count BETWEEN p_low AND p_high THEN v_count END;
END $$;

-- The ceiling a count write enforces: the client's max_workers, never above the hard limit
-- (defaults.MAX_WORKERS_HARD_LIMIT).
CREATE OR REPLACE FUNCTION {schema}.pb_count_ceiling(p_max text)
RETURNS bigint
LANGUAGE sql IMMUTABLE AS $$
    SELECT coalesce({schema}.pb_parse_count(p_max, 0, 1000000), 1000000)
$$;

-- Set ('to') or change ('by') a job's count. Returns (status, value, ceiling), the statuses of
-- backends/counts.py: 1 stored (value: the new count); 0 would be negative (value: the
-- current count); -2 the given value is not an integer in range; -3 the default is not a
-- count; -4 the result would be above the ceiling. Only status 1 writes. Setting a count
-- ends a pause.
CREATE OR REPLACE FUNCTION {schema}.pb_set_count(
    p_namespace text, p_job_id text, p_mode text, p_value text, p_default text,
    p_channel text, p_max text, OUT o_status integer, OUT o_value text, OUT o_ceiling bigint)
LANGUAGE plpgsql AS $$
DECLARE
    v_current bigint;
    v_by bigint;
    v_new bigint;
BEGIN
    o_ceiling := {schema}.pb_count_ceiling(p_max);
    IF p_mode = 'to' THEN
        v_new := {schema}.pb_parse_count(p_value, 0, o_ceiling);
        IF v_new IS NULL THEN
            o_status := -2;
            o_value := p_value;
            RETURN;
        END IF;
        PERFORM {schema}.pb_lock_group(p_namespace);
    ELSE
        v_by := {schema}.pb_parse_count(p_value, -1000000, 1000000);
        IF v_by IS NULL THEN
            o_status := -2;
            o_value := p_value;
            RETURN;
        END IF;
        PERFORM {schema}.pb_lock_group(p_namespace);
        SELECT c.count INTO v_current FROM {schema}.pb_counts c
        WHERE c.namespace = p_namespace AND c.job_id = p_job_id;
        IF v_current IS NULL THEN
            v_current := {schema}.pb_parse_count(p_default, 0, o_ceiling);
            IF v_current IS NULL THEN
                o_status := -3;
                o_value := p_default;
                RETURN;
            END IF;
        END IF;
        v_new := v_current + v_by;
        IF v_new < 0 THEN
            o_status := 0;
            o_value := v_current;
            RETURN;
        END IF;
        IF v_new > o_ceiling THEN
            o_status := -4;
            o_value := v_new;
            RETURN;
        END IF;
    END IF;
    INSERT INTO {schema}.pb_counts AS c (namespace, job_id, count) VALUES (p_namespace, p_job_id, v_new)
    ON CONFLICT (namespace, job_id) DO UPDATE SET count = EXCLUDED.count, resume_to = NULL;
    PERFORM {schema}.pb_bump(p_namespace, p_channel);
    o_status := 1;
    o_value := v_new;
END $$;

CREATE OR REPLACE FUNCTION {schema}.pb_clear_count(
    p_namespace text, p_job_id text, p_channel text)
RETURNS void
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM {schema}.pb_lock_group(p_namespace);
    DELETE FROM {schema}.pb_counts WHERE namespace = p_namespace AND job_id = p_job_id;
    PERFORM {schema}.pb_bump(p_namespace, p_channel);
END $$;

-- Pause: remember the count (runtime, else p_default) and set it to 0 in one step. Returns
-- (1, remembered) paused, (0, remembered) already paused, or a refusal as pb_set_count's:
-- -3 the default is not a count, -4 the count is above the ceiling. Only status 1 writes.
CREATE OR REPLACE FUNCTION {schema}.pb_pause(
    p_namespace text, p_job_id text, p_default text, p_channel text, p_max text,
    OUT o_status integer, OUT o_value text, OUT o_ceiling bigint)
LANGUAGE plpgsql AS $$
DECLARE
    v_count bigint;
    v_resume_to bigint;
BEGIN
    o_ceiling := {schema}.pb_count_ceiling(p_max);
    PERFORM {schema}.pb_lock_group(p_namespace);
    SELECT c.count, c.resume_to INTO v_count, v_resume_to FROM {schema}.pb_counts c
    WHERE c.namespace = p_namespace AND c.job_id = p_job_id;
    IF v_resume_to IS NOT NULL THEN
        o_status := 0;
        o_value := v_resume_to;
        RETURN;
    END IF;
    IF v_count IS NULL THEN
        v_count := {schema}.pb_parse_count(p_default, 0, 1000000);
        IF v_count IS NULL THEN
            o_status := -3;
            o_value := p_default;
            RETURN;
        END IF;
    END IF;
    o_value := v_count;
    IF v_count > o_ceiling THEN
        o_status := -4;
        RETURN;
    END IF;
    INSERT INTO {schema}.pb_counts AS c (namespace, job_id, count, resume_to)
    VALUES (p_namespace, p_job_id, 0, v_count)
    ON CONFLICT (namespace, job_id) DO UPDATE SET count = 0, resume_to = EXCLUDED.resume_to;
    PERFORM {schema}.pb_bump(p_namespace, p_channel);
    o_status := 1;
END $$;

-- Resume: restore the remembered count and forget it. Returns (1, count), (0, NULL) when the
-- job is not paused, or (-4, remembered) when that is above the ceiling (nothing changed).
CREATE OR REPLACE FUNCTION {schema}.pb_resume(
    p_namespace text, p_job_id text, p_channel text, p_max text,
    OUT o_status integer, OUT o_value text, OUT o_ceiling bigint)
LANGUAGE plpgsql AS $$
DECLARE
    v_resume_to bigint;
BEGIN
    o_ceiling := {schema}.pb_count_ceiling(p_max);
    PERFORM {schema}.pb_lock_group(p_namespace);
    SELECT c.resume_to INTO v_resume_to FROM {schema}.pb_counts c
    WHERE c.namespace = p_namespace AND c.job_id = p_job_id;
    IF v_resume_to IS NULL THEN
        o_status := 0;
        RETURN;
    END IF;
    o_value := v_resume_to;
    IF v_resume_to > o_ceiling THEN
        o_status := -4;
        RETURN;
    END IF;
    UPDATE {schema}.pb_counts c SET count = c.resume_to, resume_to = NULL
    WHERE c.namespace = p_namespace AND c.job_id = p_job_id;
    PERFORM {schema}.pb_bump(p_namespace, p_channel);
    o_status := 1;
END $$;

-- Queue a command for a live member; drops expired commands of the group on the way.
CREATE OR REPLACE FUNCTION {schema}.pb_send_command(
    p_namespace text, p_identity text, p_command jsonb, p_ttl_ms bigint, p_channel text)
RETURNS boolean
LANGUAGE plpgsql AS $$
DECLARE
    v_now timestamptz := clock_timestamp();
BEGIN
    PERFORM 1 FROM {schema}.pb_members m
    WHERE m.namespace = p_namespace AND m.identity = p_identity AND m.deadline > v_now;
    IF NOT FOUND THEN
        RETURN false;
    END IF;
    DELETE FROM {schema}.pb_commands WHERE namespace = p_namespace AND expires_at <= v_now;
    INSERT INTO {schema}.pb_commands (namespace, identity, command, expires_at)
    VALUES (p_namespace, p_identity, p_command, v_now + p_ttl_ms * interval '1 millisecond');
    PERFORM pg_notify(p_channel, 'command ' || p_identity);
    RETURN true;
END $$;

CREATE OR REPLACE FUNCTION {schema}.pb_ack_command(
    p_namespace text, p_command_id text, p_identity text, p_at double precision,
    p_ttl_ms bigint)
RETURNS void
LANGUAGE plpgsql AS $$
DECLARE
    v_now timestamptz := clock_timestamp();
BEGIN
    DELETE FROM {schema}.pb_acks WHERE namespace = p_namespace AND expires_at <= v_now;
    INSERT INTO {schema}.pb_acks AS a (namespace, command_id, identity, acked_at, expires_at)
    VALUES (p_namespace, p_command_id, p_identity, p_at,
            v_now + p_ttl_ms * interval '1 millisecond')
    ON CONFLICT (namespace, command_id, identity) DO UPDATE SET acked_at = EXCLUDED.acked_at;
    UPDATE {schema}.pb_acks
    SET expires_at = v_now + p_ttl_ms * interval '1 millisecond'
    WHERE namespace = p_namespace AND command_id = p_command_id;
END $$;

-- Whether nobody may still run under the locks named in p_names (a gate's), each row locked
-- (in name order): every one is free, expired, of an earlier incarnation than p_incarnation,
-- or held by a member (the holder's text before any '#') whose membership ended at least
-- p_grace ago. A lock held by the caller itself counts as held.
CREATE OR REPLACE FUNCTION {schema}.pb_locks_free(
    p_namespace text, p_names jsonb, p_incarnation text, p_now timestamptz, p_grace interval)
RETURNS boolean
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM 1 FROM {schema}.pb_locks l
    WHERE l.namespace = p_namespace
      AND l.name IN (SELECT jsonb_array_elements_text(p_names))
    ORDER BY l.name
    FOR UPDATE;
    RETURN NOT EXISTS (
        SELECT 1 FROM {schema}.pb_locks l
        LEFT JOIN {schema}.pb_members m
            ON m.namespace = p_namespace AND m.identity = split_part(l.holder, '#', 1)
        LEFT JOIN {schema}.pb_departed d
            ON d.namespace = p_namespace AND d.identity = split_part(l.holder, '#', 1)
        WHERE l.namespace = p_namespace
          AND l.name IN (SELECT jsonb_array_elements_text(p_names))
          AND l.token IS NOT NULL AND l.expires_at > p_now
          AND coalesce(l.incarnation, p_incarnation) = p_incarnation
          AND coalesce(m.deadline, d.deadline) + p_grace > p_now);
END $$;

-- The generation gate of a gated pb_lock_acquire, its row locked: 1 when a lock of p_job may
-- be taken under p_generation now (the gate moved to it if every lock of the earlier
-- generation is free), 0 when not, 3 when the stored partitions are unreadable, 4 when the
-- gate record was unreadable: it is replaced by one that grants nothing for p_block.
-- o_found is what was unreadable, as stored.
CREATE OR REPLACE FUNCTION {schema}.pb_gate_admits(
    p_namespace text, p_job text, p_generation bigint, p_incarnation text,
    p_grace interval, p_block interval, OUT o_status integer, OUT o_found text)
LANGUAGE plpgsql AS $$
DECLARE
    v_now timestamptz;
    v_gate record;
    v_partitions jsonb;
    v_stored bigint;
BEGIN
    -- A missing gate and a blocked one whose time is up are the same: this row stands for it.
    INSERT INTO {schema}.pb_gates (namespace, job_id, generation, names)
    VALUES (p_namespace, p_job, 0, '[]')
    ON CONFLICT (namespace, job_id) DO NOTHING;
    SELECT gt.generation, gt.names, gt.blocked_until INTO v_gate
    FROM {schema}.pb_gates gt WHERE gt.namespace = p_namespace AND gt.job_id = p_job
    FOR UPDATE;
    -- Read with the gate held: a generation stored before the gate moved is seen here.
    v_now := clock_timestamp();
    SELECT g.partitions INTO v_partitions FROM {schema}.pb_groups g
    WHERE g.namespace = p_namespace;
    v_stored := {schema}.pb_partition_generation(v_partitions, p_job);
    IF v_stored < 0 THEN
        o_status := 3;
        o_found := v_partitions::text;
        RETURN;
    END IF;
    o_status := 0;
    IF v_stored <> p_generation THEN
        RETURN;
    END IF;
    IF NOT {schema}.pb_gate_readable(v_gate.generation, v_gate.names) THEN
        o_status := 4;
        o_found := format('generation %s, names %s', coalesce(v_gate.generation::text, 'NULL'),
                          coalesce(v_gate.names::text, 'NULL'));
        UPDATE {schema}.pb_gates
        SET generation = 0, names = '[]', blocked_until = v_now + p_block
        WHERE namespace = p_namespace AND job_id = p_job;
        RETURN;
    END IF;
    IF v_gate.generation = p_generation THEN
        o_status := 1;
        RETURN;
    END IF;
    IF v_gate.generation = 0 THEN
        IF v_now < coalesce(v_gate.blocked_until, '-infinity') THEN
            RETURN;
        END IF;
    ELSIF NOT {schema}.pb_locks_free(p_namespace, v_gate.names, p_incarnation, v_now, p_grace)
    THEN
        RETURN;
    END IF;
    UPDATE {schema}.pb_gates SET generation = p_generation, names = '[]', blocked_until = NULL
    WHERE namespace = p_namespace AND job_id = p_job;
    o_status := 1;
END $$;

-- Take a worker lock: free, expired, held by the caller itself (a release or an acquire whose
-- answer was lost), held in an earlier incarnation, or held by a member whose membership
-- expired at least p_grace_ms ago (taken over then instead of after its TTL); a holder
-- written member#instance is member's. No lock is granted while the group's incarnation
-- holds grants back. Fencing tokens strictly increase per slot, and are at least the
-- server's clock in microseconds, so they keep increasing across a restore of an older state.
-- With p_job, the lock is taken under that job's generation p_generation (pb_gate_admits
-- first; once granted, its name joins the gate's).
-- Returns (1, fence, NULL) taken, (2, fence, previous holder) taken over, (0, NULL, NULL) held
-- by a live member or grants held back, and refusals of the gate: (3, NULL, partitions) they
-- are unreadable, (4, NULL, record) the gate record was unreadable and is replaced.
DROP FUNCTION IF EXISTS {schema}.pb_lock_acquire(text, text, text, text, bigint);
DROP FUNCTION IF EXISTS {schema}.pb_lock_acquire(text, text, text, text, bigint, bigint);
CREATE OR REPLACE FUNCTION {schema}.pb_lock_acquire(
    p_namespace text, p_name text, p_token text, p_holder text, p_ttl_ms bigint,
    p_grace_ms bigint, p_job text, p_generation bigint,
    OUT o_status integer, OUT o_fence bigint, OUT o_previous text)
LANGUAGE plpgsql AS $$
DECLARE
    v_now timestamptz := clock_timestamp();
    v_grace interval := p_grace_ms * interval '1 millisecond';
    v_incarnation text;
    v_server text;
    v_grants_at timestamptz;
    v_gate record;
    v_lock record;
    v_deadline timestamptz;
BEGIN
    SELECT g.incarnation, g.incarnation_server, g.grants_at
    INTO v_incarnation, v_server, v_grants_at
    FROM {schema}.pb_groups g WHERE g.namespace = p_namespace;
    -- An incarnation begun by another server (this one was restored from a backup or promoted
    -- by a failover since): its memberships and locks may be older than what the processes
    -- run by, so nothing is granted before a heartbeat has begun a new incarnation.
    IF v_incarnation IS NULL OR v_server IS DISTINCT FROM {schema}.pb_server()
       OR v_now < coalesce(v_grants_at, '-infinity') + v_grace THEN
        o_status := 0;
        RETURN;
    END IF;
    IF p_job IS NOT NULL THEN
        SELECT * INTO v_gate FROM {schema}.pb_gate_admits(
            p_namespace, p_job, p_generation, v_incarnation, v_grace,
            (p_ttl_ms + p_grace_ms) * interval '1 millisecond');
        IF v_gate.o_status <> 1 THEN
            o_status := v_gate.o_status;
            o_previous := v_gate.o_found;
            RETURN;
        END IF;
        v_now := clock_timestamp();
    END IF;
    INSERT INTO {schema}.pb_locks (namespace, name) VALUES (p_namespace, p_name)
    ON CONFLICT (namespace, name) DO NOTHING;
    SELECT l.token, l.holder, l.expires_at, l.incarnation INTO v_lock
    FROM {schema}.pb_locks l WHERE l.namespace = p_namespace AND l.name = p_name FOR UPDATE;
    IF v_lock.token IS NOT NULL AND v_lock.expires_at > v_now AND v_lock.holder <> p_holder
       AND coalesce(v_lock.incarnation, v_incarnation) = v_incarnation THEN
        SELECT m.deadline INTO v_deadline FROM {schema}.pb_members m
        WHERE m.namespace = p_namespace AND m.identity = split_part(v_lock.holder, '#', 1);
        IF NOT FOUND THEN
            SELECT d.deadline INTO v_deadline FROM {schema}.pb_departed d
            WHERE d.namespace = p_namespace AND d.identity = split_part(v_lock.holder, '#', 1);
        END IF;
        IF v_deadline IS NOT NULL AND v_deadline + v_grace > v_now THEN
            o_status := 0;
            RETURN;
        END IF;
        o_previous := v_lock.holder;
    END IF;
    UPDATE {schema}.pb_locks l
    SET token = p_token, holder = p_holder, incarnation = v_incarnation,
        expires_at = v_now + (p_ttl_ms + p_grace_ms) * interval '1 millisecond',
        fence = greatest(l.fence + 1, (extract(epoch FROM v_now) * 1000000)::bigint)
    WHERE l.namespace = p_namespace AND l.name = p_name
    RETURNING l.fence INTO o_fence;
    IF p_job IS NOT NULL THEN
        UPDATE {schema}.pb_gates
        SET names = CASE WHEN names ? p_name THEN names ELSE names || to_jsonb(p_name) END
        WHERE namespace = p_namespace AND job_id = p_job;
    END IF;
    o_status := CASE WHEN o_previous IS NULL THEN 1 ELSE 2 END;
END $$;

-- Extend a lock held by p_token in the group's current incarnation. With p_job, only while
-- that job's gate is readable, at p_generation and names the lock.
DROP FUNCTION IF EXISTS {schema}.pb_lock_renew(text, text, text, bigint);
CREATE OR REPLACE FUNCTION {schema}.pb_lock_renew(
    p_namespace text, p_name text, p_token text, p_ttl_ms bigint, p_job text,
    p_generation bigint)
RETURNS boolean
LANGUAGE plpgsql AS $$
DECLARE
    v_now timestamptz;
    v_gate record;
BEGIN
    IF p_job IS NOT NULL THEN
        SELECT gt.generation, gt.names INTO v_gate FROM {schema}.pb_gates gt
        WHERE gt.namespace = p_namespace AND gt.job_id = p_job
        FOR SHARE;
        IF NOT FOUND OR NOT {schema}.pb_gate_readable(v_gate.generation, v_gate.names)
           OR v_gate.generation <> p_generation OR NOT v_gate.names ? p_name THEN
            RETURN false;
        END IF;
    END IF;
    v_now := clock_timestamp();
    UPDATE {schema}.pb_locks l
    SET expires_at = v_now + p_ttl_ms * interval '1 millisecond'
    WHERE l.namespace = p_namespace AND l.name = p_name AND l.token = p_token
      AND l.expires_at > v_now
      AND l.incarnation IS NOT DISTINCT FROM (
          SELECT g.incarnation FROM {schema}.pb_groups g WHERE g.namespace = p_namespace);
    RETURN FOUND;
END $$;

CREATE OR REPLACE FUNCTION {schema}.pb_lock_release(
    p_namespace text, p_name text, p_token text, p_channel text)
RETURNS boolean
LANGUAGE plpgsql AS $$
BEGIN
    UPDATE {schema}.pb_locks
    SET token = NULL, holder = NULL, expires_at = NULL
    WHERE namespace = p_namespace AND name = p_name AND token = p_token
      AND expires_at > clock_timestamp();
    IF NOT FOUND THEN
        RETURN false;
    END IF;
    PERFORM pg_notify(p_channel, 'released ' || p_name);
    RETURN true;
END $$;

INSERT INTO {schema}.pb_schema (singleton, version) VALUES (true, {version})
ON CONFLICT (singleton) DO UPDATE SET version = EXCLUDED.version;
