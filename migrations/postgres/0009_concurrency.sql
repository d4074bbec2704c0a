-- Concurrency keys (docs/flow-control.md). A saga's keys, as filled in at
-- its start, are kept on the saga (and a template's on the template); the
-- slots are rows every host on this database shares: `holding` (at most
-- the key's limit of them), `queued` (admitted in `seq` order, one order
-- for every key), `released` (the saga ended; kept for its history and
-- deleted with the saga). A change to a key's slots takes the key's
-- transaction-scoped advisory lock first, keys in sorted order.
ALTER TABLE saga_runs ADD COLUMN concurrency TEXT NOT NULL DEFAULT '[]';
ALTER TABLE saga_templates ADD COLUMN concurrency TEXT NOT NULL DEFAULT '[]';

CREATE SEQUENCE concurrency_arrivals;

CREATE TABLE concurrency_slots (
    key        TEXT NOT NULL,
    saga_id    TEXT NOT NULL REFERENCES saga_runs (id) ON DELETE CASCADE,
    slot_limit BIGINT NOT NULL,
    state      TEXT NOT NULL,
    seq        BIGINT NOT NULL,
    since      BIGINT NOT NULL,
    PRIMARY KEY (key, saga_id)
);
CREATE INDEX concurrency_slots_live ON concurrency_slots (key, seq) WHERE state <> 'released';
CREATE INDEX concurrency_slots_by_saga ON concurrency_slots (saga_id);
CREATE INDEX concurrency_slots_queued ON concurrency_slots (key) WHERE state = 'queued';
