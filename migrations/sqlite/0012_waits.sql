-- Waits (docs/waits.md). A wait's ledger row keeps what it received
-- (`received`, JSON) until its saga's driver completes or fails it, and,
-- while it is open, its correlation key: a message posted under that key
-- goes to the oldest open wait holding it.
ALTER TABLE saga_step_results ADD COLUMN received TEXT;
ALTER TABLE saga_step_results ADD COLUMN correlation_key TEXT;
CREATE INDEX saga_step_results_open_waits ON saga_step_results (correlation_key, started_at)
    WHERE status = 'waiting' AND received IS NULL AND correlation_key IS NOT NULL;
-- Open waits, counted for /metrics.
CREATE INDEX saga_step_results_waiting ON saga_step_results (saga_id) WHERE status = 'waiting';

-- The mailbox: a message no open wait took is kept here (`saga_id` null)
-- until a wait with its key opens (the open takes it in the same
-- transaction) or it expires. A delivered message names its wait and
-- goes with its saga. `id` is the Idempotency-Key when one was given.
CREATE TABLE wait_messages (
    id           TEXT PRIMARY KEY,
    key          TEXT NOT NULL,
    payload      TEXT NOT NULL,
    request_hash TEXT NOT NULL,
    created_at   INTEGER NOT NULL,
    expires_at   INTEGER NOT NULL,
    saga_id      TEXT REFERENCES saga_runs (id) ON DELETE CASCADE,
    step_index   INTEGER,
    delivered_at INTEGER
);
CREATE INDEX wait_messages_kept ON wait_messages (key, created_at) WHERE saga_id IS NULL;
CREATE INDEX wait_messages_expiry ON wait_messages (expires_at) WHERE saga_id IS NULL;
CREATE INDEX wait_messages_by_saga ON wait_messages (saga_id) WHERE saga_id IS NOT NULL;
