-- Concurrency keys (docs/flow-control.md). A saga's keys, as filled in at
-- its start, are kept on the saga (and a template's on the template); the
-- slots are rows: `holding` (at most the key's limit of them), `queued`
-- (admitted in `seq` order, one order for every key), `released` (the
-- saga ended; kept for its history and deleted with the saga). SQLite has
-- one writer, so a change to the slots needs no lock of its own.
ALTER TABLE saga_runs ADD COLUMN concurrency TEXT NOT NULL DEFAULT '[]';
ALTER TABLE saga_templates ADD COLUMN concurrency TEXT NOT NULL DEFAULT '[]';

CREATE TABLE concurrency_slots (
    key        TEXT NOT NULL,
    saga_id    TEXT NOT NULL REFERENCES saga_runs (id) ON DELETE CASCADE,
    slot_limit INTEGER NOT NULL,
    state      TEXT NOT NULL,
    seq        INTEGER NOT NULL,
    since      INTEGER NOT NULL,
    PRIMARY KEY (key, saga_id)
);
CREATE INDEX concurrency_slots_live ON concurrency_slots (key, seq) WHERE state <> 'released';
CREATE INDEX concurrency_slots_by_saga ON concurrency_slots (saga_id);
CREATE INDEX concurrency_slots_arrivals ON concurrency_slots (seq);
