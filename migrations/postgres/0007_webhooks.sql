-- Webhooks (issue 33): endpoints an admin subscribes to saga events, and an
-- outbox of deliveries written in the same transaction as the change that
-- caused them (nothing lost on a crash, nothing sent for a change that did
-- not commit).
--
-- webhooks: the signing secret is sealed with XChaCha20-Poly1305 under the
--   host's secrets key (associated data `webhook:<id>`); after a rotation
--   the previous secret also signs until `previous_expires_at`.
-- webhook_events: the event types an endpoint receives, one row each, so
--   the outbox insert selects the subscribers with one indexed join.
-- webhook_deliveries: one row per (message, endpoint). `message_id` is the
--   Standard Webhooks `webhook-id`, the same for every endpoint and every
--   attempt. A row is claimed under a lease; the oldest pending row of an
--   (endpoint, saga) holds back the later ones, so each saga's events
--   arrive in order.
CREATE TABLE webhooks (
    id                  TEXT PRIMARY KEY NOT NULL,
    url                 TEXT NOT NULL,
    filter_kind         TEXT,
    filter_template     TEXT,
    secret_nonce        BYTEA NOT NULL,
    secret_ciphertext   BYTEA NOT NULL,
    previous_nonce      BYTEA,
    previous_ciphertext BYTEA,
    previous_expires_at BIGINT,
    created_by          TEXT,
    created_at          BIGINT NOT NULL,
    disabled_at         BIGINT,
    disabled_reason     TEXT
);

CREATE TABLE webhook_events (
    webhook_id TEXT NOT NULL REFERENCES webhooks (id) ON DELETE CASCADE,
    event      TEXT NOT NULL,
    PRIMARY KEY (event, webhook_id)
);
CREATE INDEX webhook_events_by_webhook ON webhook_events (webhook_id);

CREATE TABLE webhook_deliveries (
    id               BIGSERIAL PRIMARY KEY,
    webhook_id       TEXT NOT NULL REFERENCES webhooks (id) ON DELETE CASCADE,
    message_id       TEXT NOT NULL,
    saga_id          TEXT,
    event            TEXT NOT NULL,
    body             TEXT NOT NULL,
    status           TEXT NOT NULL,
    attempts         BIGINT NOT NULL DEFAULT 0,
    next_at          BIGINT NOT NULL,
    lease_owner      TEXT,
    lease_expires_at BIGINT,
    last_status      BIGINT,
    last_error       TEXT,
    created_at       BIGINT NOT NULL,
    finished_at      BIGINT
);
CREATE INDEX webhook_deliveries_due ON webhook_deliveries (status, next_at);
CREATE INDEX webhook_deliveries_by_webhook ON webhook_deliveries (webhook_id, id);
CREATE INDEX webhook_deliveries_by_saga ON webhook_deliveries (webhook_id, saga_id, id);
