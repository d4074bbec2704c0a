-- Schedules (docs/schedules.md): a template started on a timer. A
-- schedule's row says when it fires next (NULL while paused); a fire's row
-- is the claim of the host acting on it, then what came of it.
CREATE TABLE schedules (
    name TEXT PRIMARY KEY,
    -- The template, inputs, calendar and policies (JSON).
    spec TEXT NOT NULL,
    paused BOOLEAN NOT NULL DEFAULT FALSE,
    next_fire_at BIGINT,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL
);
CREATE INDEX schedules_due ON schedules (next_fire_at) WHERE next_fire_at IS NOT NULL;
CREATE TABLE schedule_fires (
    schedule TEXT NOT NULL,
    nominal_at BIGINT NOT NULL,
    claimed_by TEXT NOT NULL,
    claimed_at BIGINT NOT NULL,
    -- NULL while the claiming host acts on it.
    fired_at BIGINT,
    outcome TEXT,
    saga_id TEXT,
    reason TEXT,
    manual BOOLEAN NOT NULL DEFAULT FALSE,
    PRIMARY KEY (schedule, nominal_at)
);
