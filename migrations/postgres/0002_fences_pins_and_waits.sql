-- The same change as migrations/sqlite/0003_fences_pins_and_waits.sql (see
-- there for what each column means). Lease expiry is on the database's
-- clock here: several hosts share this database, and their clocks differ.

ALTER TABLE saga_runs ADD COLUMN version BIGINT NOT NULL DEFAULT 0;
ALTER TABLE saga_runs ADD COLUMN lease_epoch BIGINT NOT NULL DEFAULT 0;
ALTER TABLE saga_runs ADD COLUMN pause_requested BOOLEAN NOT NULL DEFAULT FALSE;
ALTER TABLE saga_runs ADD COLUMN ready_at BIGINT;
ALTER TABLE saga_runs ADD COLUMN actions TEXT NOT NULL DEFAULT '[]';
ALTER TABLE saga_runs ADD COLUMN template TEXT;
ALTER TABLE saga_runs ADD COLUMN template_version BIGINT;
UPDATE saga_runs SET ready_at = created_at WHERE status IN ('pending', 'running', 'compensating');

DROP INDEX saga_runs_unfinished;
CREATE INDEX saga_runs_unfinished ON saga_runs (created_at, id)
    WHERE status IN ('pending', 'running', 'paused', 'compensating');
CREATE INDEX saga_runs_ready ON saga_runs (ready_at, id) WHERE ready_at IS NOT NULL;

ALTER TABLE saga_step_results ADD COLUMN waiting_until BIGINT;
ALTER TABLE saga_step_results ADD COLUMN polls BIGINT NOT NULL DEFAULT 0;
ALTER TABLE saga_step_results ADD COLUMN wait_started_at BIGINT;

ALTER TABLE plugins ADD COLUMN promoted_seq BIGINT NOT NULL DEFAULT 0;
UPDATE plugins SET promoted_seq = seq;
CREATE INDEX plugins_current ON plugins (name, promoted_seq DESC);
CREATE SEQUENCE plugins_promotion START WITH 1;
SELECT setval('plugins_promotion', COALESCE((SELECT MAX(seq) FROM plugins), 0) + 1, false);

CREATE TABLE saga_plugin_pins (
    digest  TEXT NOT NULL REFERENCES plugins (digest),
    saga_id TEXT NOT NULL REFERENCES saga_runs (id) ON DELETE CASCADE,
    PRIMARY KEY (digest, saga_id)
);
CREATE INDEX saga_plugin_pins_by_saga ON saga_plugin_pins (saga_id);
INSERT INTO saga_plugin_pins (digest, saga_id)
    SELECT DISTINCT step->>'plugin', s.id
    FROM saga_runs s, jsonb_array_elements(s.steps::jsonb) AS step
    WHERE s.status IN ('pending', 'running', 'paused', 'compensating')
      AND step->>'plugin' IN (SELECT digest FROM plugins)
ON CONFLICT DO NOTHING;
