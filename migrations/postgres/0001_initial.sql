-- wasaga's tables (DESIGN.md), as in migrations/sqlite: same tables, names
-- and shapes. Timestamps are milliseconds since the Unix epoch; JSON
-- documents are TEXT, so both databases store and return the same bytes.

CREATE TABLE plugins (
    digest     TEXT PRIMARY KEY,            -- sha256:<hex>
    name       TEXT NOT NULL,
    size       BIGINT NOT NULL,
    wasm       BYTEA NOT NULL,
    created_at BIGINT NOT NULL,
    seq        BIGSERIAL NOT NULL           -- upload order among equal timestamps
);
CREATE INDEX plugins_by_name ON plugins (name, created_at DESC, seq DESC);

CREATE TABLE saga_runs (
    id                 TEXT PRIMARY KEY,
    kind               TEXT NOT NULL,
    status             TEXT NOT NULL,
    steps              TEXT NOT NULL,
    inputs             TEXT NOT NULL,
    current_step_index BIGINT NOT NULL DEFAULT 0,
    context            TEXT NOT NULL DEFAULT '{}',
    error              TEXT,
    cancel_requested   BOOLEAN NOT NULL DEFAULT FALSE,
    deployment_id      TEXT,
    triggered_by       TEXT,
    idempotency_key    TEXT UNIQUE,
    request_hash       TEXT,
    lease_owner        TEXT,
    lease_expires_at   BIGINT,
    created_at         BIGINT NOT NULL,
    updated_at         BIGINT NOT NULL
);
CREATE INDEX saga_runs_newest ON saga_runs (created_at DESC, id DESC);
CREATE INDEX saga_runs_unfinished ON saga_runs (created_at, id)
    WHERE status IN ('pending', 'running', 'compensating');
CREATE INDEX saga_runs_by_deployment ON saga_runs (deployment_id, created_at DESC) WHERE deployment_id IS NOT NULL;

CREATE TABLE saga_step_results (
    saga_id             TEXT NOT NULL REFERENCES saga_runs (id) ON DELETE CASCADE,
    step_index          BIGINT NOT NULL,
    phase               TEXT NOT NULL,
    status              TEXT NOT NULL,
    output              TEXT,
    error               TEXT,
    attempts            BIGINT NOT NULL DEFAULT 0,
    compensate_attempts BIGINT NOT NULL DEFAULT 0,
    logs                TEXT NOT NULL DEFAULT '[]',
    started_at          BIGINT,
    finished_at         BIGINT,
    executed_by         TEXT,
    PRIMARY KEY (saga_id, step_index)
);

CREATE TABLE provisioned_resources (
    id           BIGSERIAL PRIMARY KEY,
    saga_id      TEXT NOT NULL REFERENCES saga_runs (id) ON DELETE CASCADE,
    step_index   BIGINT NOT NULL,
    kind         TEXT NOT NULL,
    external_id  TEXT NOT NULL,
    spec         TEXT NOT NULL,
    spec_version BIGINT NOT NULL,
    created_at   BIGINT NOT NULL
);
CREATE INDEX provisioned_resources_by_saga ON provisioned_resources (saga_id, kind, external_id);
