-- Drift detection (docs/recovery.md): what the last scan of a present
-- resource found (its plugin's `observe` against the recorded spec), and
-- the one row through which hosts sharing a database agree on who runs
-- the periodic scan of each period.
ALTER TABLE resources ADD COLUMN observed_at INTEGER;
ALTER TABLE resources ADD COLUMN drift TEXT;
ALTER TABLE resources ADD COLUMN drift_diff TEXT;
CREATE INDEX resources_by_drift ON resources (drift, kind, external_id) WHERE drift IS NOT NULL;
CREATE TABLE drift_scans (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    -- The last period (scan start in ms / period in ms) a host took.
    period INTEGER NOT NULL
);
