-- The queue table the example drains. fill.py runs this file; it is safe to run again.
--
-- A row is claimable while status = 'queued' and lock_owner IS NULL. A worker claims it by
-- setting lock_owner to its worker index and lock_fence to its fencing token, and marks it
-- done with a write that only lands while both still match (see jobs.py).

CREATE TABLE IF NOT EXISTS queue_records (
    id            bigserial   PRIMARY KEY,
    payload       text        NOT NULL,
    status        text        NOT NULL DEFAULT 'queued' CHECK (status IN ('queued', 'done')),
    lock_owner    integer,    -- worker index holding the row, NULL when free or done
    lock_fence    bigint,     -- fencing token of that holder's worker lock
    locked_at     timestamptz,
    processed_at  timestamptz,
    processed_by  bigint,     -- fencing token of the write that marked the row done
    processed_pid integer,    -- operating-system pid of the runner process that did it
    process_count integer     NOT NULL DEFAULT 0,
    result        text
);

-- What lock_records scans: the claimable rows in id order. Small, as done rows leave it.
CREATE INDEX IF NOT EXISTS queue_records_claimable
    ON queue_records (id) WHERE status = 'queued' AND lock_owner IS NULL;

-- What a worker scans for rows an earlier holder of its index left claimed.
CREATE INDEX IF NOT EXISTS queue_records_claimed
    ON queue_records (lock_owner) WHERE lock_owner IS NOT NULL;
