-- A saga's whole life: retries, the desired-state resource ledger,
-- templates, retention.
--
-- saga_step_results.compensate_attempt_base: compensate calls begun before
--   the latest retry of a failed saga. A retry gives the step fresh
--   attempts (its max_attempts counts from here) without forgetting the
--   calls already made (compensate_attempts keeps counting them all).
-- saga_step_results.calls: the step's latest calls (JSON: phase, attempt,
--   when each began and ended, outcome), which the console's timeline
--   draws; bounded, so a step that polls for days keeps a small row.
-- resources: the desired state, one row per (kind, external_id): the spec
--   last recorded, how many times it was recorded (spec_version), which
--   saga and step recorded it last (and that saga's deployment), and
--   whether it is `present` or was `removed` by compensating that step. No foreign key to saga_runs:
--   retention deletes old sagas, and what they provisioned stays known.
--   provisioned_resources (each saga's own history) now numbers
--   spec_version from this table, so both say the same number.
-- saga_templates: every version of every template; a delete marks all
--   versions deleted (deleted_at) so that a later put goes on numbering
--   and a version a saga pinned never means two things.
-- saga_runs_ended: what retention scans, oldest end first.

ALTER TABLE saga_step_results ADD COLUMN compensate_attempt_base INTEGER NOT NULL DEFAULT 0;
ALTER TABLE saga_step_results ADD COLUMN calls TEXT NOT NULL DEFAULT '[]';

CREATE TABLE resources (
    kind         TEXT NOT NULL,
    external_id  TEXT NOT NULL,
    spec         TEXT NOT NULL,
    spec_version INTEGER NOT NULL,
    saga_id      TEXT NOT NULL,
    step_index   INTEGER NOT NULL,
    deployment_id TEXT,
    state        TEXT NOT NULL CHECK (state IN ('present', 'removed')),
    created_at   INTEGER NOT NULL,
    updated_at   INTEGER NOT NULL,
    PRIMARY KEY (kind, external_id)
) WITHOUT ROWID;
CREATE INDEX resources_by_saga ON resources (saga_id, step_index);
CREATE INDEX resources_by_deployment ON resources (deployment_id, kind, external_id);

INSERT INTO resources
    (kind, external_id, spec, spec_version, saga_id, step_index, deployment_id, state,
     created_at, updated_at)
SELECT p.kind, p.external_id, p.spec,
       (SELECT COUNT(*) FROM provisioned_resources q
         WHERE q.kind = p.kind AND q.external_id = p.external_id),
       p.saga_id, p.step_index,
       (SELECT r.deployment_id FROM saga_runs r WHERE r.id = p.saga_id),
       CASE WHEN EXISTS (SELECT 1 FROM saga_step_results s
                          WHERE s.saga_id = p.saga_id AND s.step_index = p.step_index
                            AND s.status = 'compensated')
            THEN 'removed' ELSE 'present' END,
       (SELECT MIN(q.created_at) FROM provisioned_resources q
         WHERE q.kind = p.kind AND q.external_id = p.external_id),
       p.created_at
FROM provisioned_resources p
WHERE p.id = (SELECT MAX(q.id) FROM provisioned_resources q
               WHERE q.kind = p.kind AND q.external_id = p.external_id);

CREATE TABLE saga_templates (
    name          TEXT NOT NULL,
    version       INTEGER NOT NULL,
    description   TEXT,
    steps         TEXT NOT NULL,
    inputs_schema TEXT,
    created_at    INTEGER NOT NULL,
    created_by    TEXT,
    deleted_at    INTEGER,
    PRIMARY KEY (name, version)
) WITHOUT ROWID;

CREATE INDEX saga_runs_ended ON saga_runs (updated_at, id)
    WHERE status IN ('completed', 'rolled_back', 'failed');
