-- The W3C `traceparent` a saga was started with (OpenTelemetry): every
-- host that drives the saga puts its spans into that trace. NULL: the
-- trace is the saga's own (its id derived from the saga id).
ALTER TABLE saga_runs ADD COLUMN trace_parent TEXT;
