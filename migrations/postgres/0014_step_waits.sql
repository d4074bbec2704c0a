-- Waits a step opens itself (contract 0.3.0, `wait-for`; docs/waits.md):
-- the wait's name, timeout and schema, kept on the step's ledger row.
ALTER TABLE saga_step_results ADD COLUMN wait_for TEXT;
