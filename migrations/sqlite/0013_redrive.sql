-- Redrive (docs/recovery.md): a step executed again after a redrive counts
-- its `max_attempts` from the calls begun before it, and its calls carry a
-- new idempotency key made from that number.
ALTER TABLE saga_step_results ADD COLUMN attempt_base INTEGER NOT NULL DEFAULT 0;
