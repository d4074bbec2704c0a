-- wasaga's tables (DESIGN.md). Timestamps are milliseconds since the Unix
-- epoch; JSON documents are TEXT. migrations/postgres holds the same tables.

-- Uploaded components, content-addressed. Every host reads plugins from here.
CREATE TABLE plugins (
    digest     TEXT PRIMARY KEY NOT NULL,   -- sha256:<hex>
    name       TEXT NOT NULL,               -- what name() returned at upload
    size       INTEGER NOT NULL,
    wasm       BLOB NOT NULL,
    created_at INTEGER NOT NULL
);
CREATE INDEX plugins_by_name ON plugins (name, created_at DESC);

-- One row per saga: its plan, progress and lease.
CREATE TABLE saga_runs (
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
    idempotency_key    TEXT UNIQUE,
    request_hash       TEXT,                       -- of the start request, to tell a repeat from a conflict
    lease_owner        TEXT,
    lease_expires_at   INTEGER,
    created_at         INTEGER NOT NULL,
    updated_at         INTEGER NOT NULL
);
CREATE INDEX saga_runs_newest ON saga_runs (created_at DESC, id DESC);
CREATE INDEX saga_runs_unfinished ON saga_runs (created_at, id)
    WHERE status IN ('pending', 'running', 'compensating');
CREATE INDEX saga_runs_by_deployment ON saga_runs (deployment_id, created_at DESC) WHERE deployment_id IS NOT NULL;

-- The ledger: one row per step that started, updated as it runs and compensates.
CREATE TABLE saga_step_results (
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
);

-- Resources steps recorded (record-resource), written with the step's result.
CREATE TABLE provisioned_resources (
    id           INTEGER PRIMARY KEY AUTOINCREMENT,
    saga_id      TEXT NOT NULL REFERENCES saga_runs (id) ON DELETE CASCADE,
    step_index   INTEGER NOT NULL,
    kind         TEXT NOT NULL,
    external_id  TEXT NOT NULL,
    spec         TEXT NOT NULL,                     -- JSON
    spec_version INTEGER NOT NULL,                  -- 1, 2, ... per (saga, kind, external_id)
    created_at   INTEGER NOT NULL
);
CREATE INDEX provisioned_resources_by_saga ON provisioned_resources (saga_id, kind, external_id);
