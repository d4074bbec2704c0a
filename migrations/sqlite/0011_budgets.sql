-- Provider budgets (docs/flow-control.md): one row per budget. `tat_us` is
-- the GCRA theoretical arrival time in µs on the host's clock (the file
-- belongs to one process); a take moves it by one interval. `paused_until`
-- (ms) holds every take back (a provider's 429 or Retry-After, or by hand).
CREATE TABLE budgets (
    name         TEXT PRIMARY KEY,
    origins      TEXT NOT NULL,
    rate         INTEGER NOT NULL CHECK (rate > 0),
    per          TEXT NOT NULL,
    per_ms       INTEGER NOT NULL CHECK (per_ms > 0),
    burst        INTEGER NOT NULL CHECK (burst > 0),
    tat_us       INTEGER NOT NULL DEFAULT 0,
    paused_until INTEGER,
    created_at   INTEGER NOT NULL,
    updated_at   INTEGER NOT NULL
);
