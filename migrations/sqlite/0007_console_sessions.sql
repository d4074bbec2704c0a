-- Console sessions (issue 34): the cookie holds a random session id, never
-- a bearer token. A row is the SHA-256 of that id (a copy of the database
-- gives no live session), the label of the token that logged in and that
-- token's SHA-256 (a session dies with its token: removed from the tokens
-- file, it no longer matches), and when it expires. Logout deletes the
-- row; expired rows are swept when a session is made.
CREATE TABLE console_sessions (
    id_sha256    TEXT PRIMARY KEY NOT NULL,
    label        TEXT NOT NULL,
    token_sha256 TEXT NOT NULL,
    created_at   INTEGER NOT NULL,
    expires_at   INTEGER NOT NULL
) WITHOUT ROWID;
CREATE INDEX console_sessions_by_expiry ON console_sessions (expires_at);
