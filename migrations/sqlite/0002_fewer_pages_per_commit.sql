-- Fewer B-tree pages written per commit, so that a commit's fsync carries
-- less: every page a transaction dirties is one more 4 KiB frame in the WAL.
--
-- 1. `idempotency_key` loses its column UNIQUE for a partial unique index:
--    most sagas have no key, and the column constraint gave each of them an
--    index entry anyway (SQLite indexes NULLs), one more page per create.
-- 2. The ledger becomes WITHOUT ROWID, clustered on (saga_id, step_index):
--    one B-tree instead of a table plus its primary-key index, so a step's
--    commit writes one page fewer.
--
-- SQLite cannot drop a column constraint or change a table's storage, so
-- both tables are rebuilt the documented way (create, copy, drop, rename).
-- The store runs migrations on a connection with foreign keys OFF, as that
-- procedure requires: with them on, dropping the old `saga_runs` would
-- cascade-delete every ledger and resource row. The store checks the
-- foreign keys after the migrations (PRAGMA foreign_key_check).

CREATE TABLE saga_runs_rebuilt (
    id                 TEXT PRIMARY KEY NOT NULL,  -- UUIDv7
    kind               TEXT NOT NULL,
    status             TEXT NOT NULL,              -- pending|running|compensating|completed|rolled_back|failed
    steps              TEXT NOT NULL,              -- JSON: [{name, plugin (digest), max_attempts, timeout_ms, ...}]
    inputs             TEXT NOT NULL,              -- JSON object, fixed at start
    current_step_index INTEGER NOT NULL DEFAULT 0,
    context            TEXT NOT NULL DEFAULT '{}', -- JSON object: completed steps' outputs, merged
    error              TEXT,                       -- JSON: {message, failed_step, compensate_from_idx, reason, ...}
    cancel_requested   INTEGER NOT NULL DEFAULT 0,
    deployment_id      TEXT,
    triggered_by       TEXT,
    idempotency_key    TEXT,                       -- unique where set: saga_runs_by_idempotency_key
    request_hash       TEXT,                       -- of the start request, to tell a repeat from a conflict
    lease_owner        TEXT,
    lease_expires_at   INTEGER,
    created_at         INTEGER NOT NULL,
    updated_at         INTEGER NOT NULL
);
INSERT INTO saga_runs_rebuilt (id, kind, status, steps, inputs, current_step_index, context, error,
        cancel_requested, deployment_id, triggered_by, idempotency_key, request_hash, lease_owner,
        lease_expires_at, created_at, updated_at)
    SELECT id, kind, status, steps, inputs, current_step_index, context, error,
        cancel_requested, deployment_id, triggered_by, idempotency_key, request_hash, lease_owner,
        lease_expires_at, created_at, updated_at
    FROM saga_runs ORDER BY rowid;
DROP TABLE saga_runs;
ALTER TABLE saga_runs_rebuilt RENAME TO saga_runs;
CREATE UNIQUE INDEX saga_runs_by_idempotency_key ON saga_runs (idempotency_key)
    WHERE idempotency_key IS NOT NULL;
CREATE INDEX saga_runs_newest ON saga_runs (created_at DESC, id DESC);
CREATE INDEX saga_runs_unfinished ON saga_runs (created_at, id)
    WHERE status IN ('pending', 'running', 'compensating');
CREATE INDEX saga_runs_by_deployment ON saga_runs (deployment_id, created_at DESC) WHERE deployment_id IS NOT NULL;

CREATE TABLE saga_step_results_rebuilt (
    saga_id             TEXT NOT NULL REFERENCES saga_runs (id) ON DELETE CASCADE,
    step_index          INTEGER NOT NULL,
    phase               TEXT NOT NULL,              -- execute|compensate
    status              TEXT NOT NULL,              -- running|completed|failed|compensating|compensated|compensation_failed
    output              TEXT,                       -- JSON object
    error               TEXT,
    attempts            INTEGER NOT NULL DEFAULT 0, -- execute calls
    compensate_attempts INTEGER NOT NULL DEFAULT 0,
    logs                TEXT NOT NULL DEFAULT '[]', -- JSON: [{level, message, phase, attempt}]
    started_at          INTEGER,
    finished_at         INTEGER,
    executed_by         TEXT,                       -- the host (lease owner) that ran the latest attempt
    PRIMARY KEY (saga_id, step_index)
) WITHOUT ROWID;
INSERT INTO saga_step_results_rebuilt (saga_id, step_index, phase, status, output, error, attempts,
        compensate_attempts, logs, started_at, finished_at, executed_by)
    SELECT saga_id, step_index, phase, status, output, error, attempts,
        compensate_attempts, logs, started_at, finished_at, executed_by
    FROM saga_step_results;
DROP TABLE saga_step_results;
ALTER TABLE saga_step_results_rebuilt RENAME TO saga_step_results;
