-- Schedules (docs/schedules.md): a template started on a timer. A
-- schedule's row says when it fires next (NULL while paused); a fire's row
-- is the claim of the host acting on it, then what came of it.
CREATE TABLE schedules (
    name TEXT PRIMARY KEY,
    -- The template, inputs, calendar and policies (JSON).
    spec TEXT NOT NULL,
    paused INTEGER NOT NULL DEFAULT 0,
    next_fire_at INTEGER,
    created_at INTEGER NOT NULL,
    updated_at INTEGER NOT NULL
);
CREATE INDEX schedules_due ON schedules (next_fire_at) WHERE next_fire_at IS NOT NULL;
CREATE TABLE schedule_fires (
    schedule TEXT NOT NULL,
    nominal_at INTEGER NOT NULL,
    claimed_by TEXT NOT NULL,
    claimed_at INTEGER NOT NULL,
    -- NULL while the claiming host acts on it.
    fired_at INTEGER,
    outcome TEXT,
    saga_id TEXT,
    reason TEXT,
    manual INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (schedule, nominal_at)
);
