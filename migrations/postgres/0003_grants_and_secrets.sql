-- As migrations/sqlite/0004_grants_and_secrets.sql.

CREATE TABLE plugin_grants (
    plugin_name TEXT PRIMARY KEY,
    http        TEXT NOT NULL DEFAULT '[]',
    secrets     TEXT NOT NULL DEFAULT '{}',
    updated_at  BIGINT NOT NULL
);

CREATE TABLE secrets (
    name       TEXT PRIMARY KEY,
    nonce      BYTEA NOT NULL,
    ciphertext BYTEA NOT NULL,
    origins    TEXT NOT NULL DEFAULT '[]',
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL
);
