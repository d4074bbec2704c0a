-- The same change as migrations/sqlite/0006_lifecycle.sql (see there for
-- what each column and table means).

ALTER TABLE saga_step_results ADD COLUMN compensate_attempt_base BIGINT NOT NULL DEFAULT 0;
ALTER TABLE saga_step_results ADD COLUMN calls TEXT NOT NULL DEFAULT '[]';

CREATE TABLE resources (
    kind         TEXT NOT NULL,
    external_id  TEXT NOT NULL,
    spec         TEXT NOT NULL,
    spec_version BIGINT NOT NULL,
    saga_id      TEXT NOT NULL,
    step_index   BIGINT NOT NULL,
    deployment_id TEXT,
    state        TEXT NOT NULL CHECK (state IN ('present', 'removed')),
    created_at   BIGINT NOT NULL,
    updated_at   BIGINT NOT NULL,
    PRIMARY KEY (kind, external_id)
);
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
    version       BIGINT NOT NULL,
    description   TEXT,
    steps         TEXT NOT NULL,
    inputs_schema TEXT,
    created_at    BIGINT NOT NULL,
    created_by    TEXT,
    deleted_at    BIGINT,
    PRIMARY KEY (name, version)
);

CREATE INDEX saga_runs_ended ON saga_runs (updated_at, id)
    WHERE status IN ('completed', 'rolled_back', 'failed');
