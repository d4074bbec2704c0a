-- `in_doubt` (docs/recovery.md): an at_most_once step's call was cut short,
-- and the saga waits for a human's resolution. It is unfinished: retention
-- never deletes it, and its plugins stay pinned.
DROP INDEX saga_runs_unfinished;
CREATE INDEX saga_runs_unfinished ON saga_runs (created_at, id)
    WHERE status IN ('pending', 'running', 'paused', 'compensating', 'in_doubt');
