-- Provider budgets (docs/flow-control.md): one row per budget, shared by
-- every host. `tat_us` is the GCRA theoretical arrival time in µs on the
-- database's clock (a take moves it by one interval); `paused_until` (ms)
-- holds every take back (a provider's 429 or Retry-After, or by hand).
CREATE TABLE budgets (
    name         TEXT PRIMARY KEY,
    origins      TEXT NOT NULL,
    rate         BIGINT NOT NULL CHECK (rate > 0),
    per          TEXT NOT NULL,
    per_ms       BIGINT NOT NULL CHECK (per_ms > 0),
    burst        BIGINT NOT NULL CHECK (burst > 0),
    tat_us       BIGINT NOT NULL DEFAULT 0,
    paused_until BIGINT,
    created_at   BIGINT NOT NULL,
    updated_at   BIGINT NOT NULL
);
