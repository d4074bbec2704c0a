-- The runner alone decides transitions; the store fences them.
--
-- saga_runs:
--   version          bumped by every change to the saga (a transition or a
--                    request); a writer says which version it expects.
--   lease_epoch      the fencing number of the lease, bumped by every claim:
--                    a host's writes carry the epoch it claimed with.
--   pause_requested  an operator's pause, applied between steps.
--   ready_at         when the saga may next be claimed (NULL: not until a
--                    human acts, or never again: paused or ended).
--   actions          human actions, JSON: [{action, actor, at, note, step_index}]
--   template, template_version   what it was started from.
-- saga_step_results: a durable wait (poll-after): waiting_until, polls, and
--   when the phase's first wait began (bounds the total wait).
-- plugins.promoted_seq: which upload of a name is current (the largest).
-- saga_plugin_pins: the digests each unfinished saga pins; a plugin with a
--   pin cannot be deleted, and a saga cannot pin a deleted plugin (foreign
--   keys, so either the start or the delete loses, atomically).

ALTER TABLE saga_runs ADD COLUMN version INTEGER NOT NULL DEFAULT 0;
ALTER TABLE saga_runs ADD COLUMN lease_epoch INTEGER NOT NULL DEFAULT 0;
ALTER TABLE saga_runs ADD COLUMN pause_requested INTEGER NOT NULL DEFAULT 0;
ALTER TABLE saga_runs ADD COLUMN ready_at INTEGER;
ALTER TABLE saga_runs ADD COLUMN actions TEXT NOT NULL DEFAULT '[]';
ALTER TABLE saga_runs ADD COLUMN template TEXT;
ALTER TABLE saga_runs ADD COLUMN template_version INTEGER;
UPDATE saga_runs SET ready_at = created_at WHERE status IN ('pending', 'running', 'compensating');

DROP INDEX saga_runs_unfinished;
CREATE INDEX saga_runs_unfinished ON saga_runs (created_at, id)
    WHERE status IN ('pending', 'running', 'paused', 'compensating');
CREATE INDEX saga_runs_ready ON saga_runs (ready_at, id) WHERE ready_at IS NOT NULL;

ALTER TABLE saga_step_results ADD COLUMN waiting_until INTEGER;
ALTER TABLE saga_step_results ADD COLUMN polls INTEGER NOT NULL DEFAULT 0;
ALTER TABLE saga_step_results ADD COLUMN wait_started_at INTEGER;

ALTER TABLE plugins ADD COLUMN promoted_seq INTEGER NOT NULL DEFAULT 0;
UPDATE plugins SET promoted_seq = rowid;
CREATE INDEX plugins_current ON plugins (name, promoted_seq DESC);

CREATE TABLE saga_plugin_pins (
    digest  TEXT NOT NULL REFERENCES plugins (digest),
    saga_id TEXT NOT NULL REFERENCES saga_runs (id) ON DELETE CASCADE,
    PRIMARY KEY (digest, saga_id)
) WITHOUT ROWID;
CREATE INDEX saga_plugin_pins_by_saga ON saga_plugin_pins (saga_id);
INSERT OR IGNORE INTO saga_plugin_pins (digest, saga_id)
    SELECT DISTINCT json_extract(step.value, '$.plugin'), s.id
    FROM saga_runs s, json_each(s.steps) AS step
    WHERE s.status IN ('pending', 'running', 'paused', 'compensating')
      AND json_extract(step.value, '$.plugin') IN (SELECT digest FROM plugins);
