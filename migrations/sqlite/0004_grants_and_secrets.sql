-- What each plugin name may reach, and the secrets it may use.
--
-- plugin_grants: per plugin name (a name may be granted before it is
--   uploaded): http, a JSON array of origins; secrets, a JSON object of
--   secret name to mode (use | read).
-- secrets: values sealed with XChaCha20-Poly1305 under the host's key
--   (nonce and ciphertext; the name is the associated data); origins, a
--   JSON array of the origins the value may be sent to.

CREATE TABLE plugin_grants (
    plugin_name TEXT PRIMARY KEY NOT NULL,
    http        TEXT NOT NULL DEFAULT '[]',
    secrets     TEXT NOT NULL DEFAULT '{}',
    updated_at  INTEGER NOT NULL
);

CREATE TABLE secrets (
    name       TEXT PRIMARY KEY NOT NULL,
    nonce      BLOB NOT NULL,
    ciphertext BLOB NOT NULL,
    origins    TEXT NOT NULL DEFAULT '[]',
    created_at INTEGER NOT NULL,
    updated_at INTEGER NOT NULL
);
