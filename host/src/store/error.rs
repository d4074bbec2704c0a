//! Why a store call failed, and which failures are worth retrying.
//!
//! A caller branches on three things: the lease is gone (stop), the disk is
//! full (say so, and retry once space is back), or the failure is transient
//! (retry) or not (a corrupt row or a broken constraint fails the same way
//! every time, so it is reported at once instead of being retried).

use crate::model::SagaId;

/// Why a store call failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The saga's lease is held by another host (or was released, or a
    /// newer claim fenced this one off): the caller must stop working on it.
    #[error("the lease on saga {0} is no longer held by this host")]
    LeaseLost(SagaId),
    /// The database cannot grow: its disk (or quota) is full. Nothing of
    /// the write was applied.
    #[error("the database's disk is full: {0}")]
    StorageFull(String),
    #[error("database error: {0}")]
    Database(sqlx::Error),
    #[error("database error: {0}")]
    Sqlite(rusqlite::Error),
    /// The schema is not the one this binary needs, and this host may not
    /// migrate it (`--migrations require`).
    #[error("the database's schema is not current: {0}")]
    SchemaNotCurrent(String),
    #[error("database migration failed: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    /// A row that does not parse: a bug or a hand-edited database.
    #[error("corrupt row: {0}")]
    Corrupt(String),
    /// Another process has the embedded database open.
    #[error("{0}")]
    Locked(String),
    #[error("the database URL is not supported: {0}")]
    BadUrl(String),
    /// A write that did not reach the disk (the transaction did not begin
    /// or commit); nothing of it was applied.
    #[error("the database write failed: {0}")]
    WriteFailed(String),
    /// Secrets could not be sealed or opened (a wrong key file).
    #[error("{0}")]
    Secrets(String),
    #[error("the store is shut down")]
    Closed,
    /// A saga could not pin this plugin: it is no longer stored. Nothing of
    /// the write was applied.
    #[error("plugin {0} is no longer stored")]
    PinFailed(crate::model::Digest),
}

pub type StoreResult<T> = Result<T, StoreError>;

/// SQLite's and PostgreSQL's codes for a full disk.
const SQLITE_FULL: &str = "13";
const PG_DISK_FULL: &str = "53100";

impl From<rusqlite::Error> for StoreError {
    fn from(e: rusqlite::Error) -> StoreError {
        match e.sqlite_error_code() {
            Some(rusqlite::ErrorCode::DiskFull) => StoreError::StorageFull(e.to_string()),
            _ => StoreError::Sqlite(e),
        }
    }
}

impl From<sqlx::Error> for StoreError {
    fn from(e: sqlx::Error) -> StoreError {
        let full = e
            .as_database_error()
            .and_then(|d| d.code())
            .is_some_and(|code| code == SQLITE_FULL || code == PG_DISK_FULL);
        if full {
            StoreError::StorageFull(e.to_string())
        } else {
            StoreError::Database(e)
        }
    }
}

impl StoreError {
    /// Whether the same call could succeed if tried again later. A lost
    /// lease, a corrupt row, a broken constraint or a bad URL cannot.
    pub fn is_transient(&self) -> bool {
        match self {
            StoreError::StorageFull(_) | StoreError::WriteFailed(_) => true,
            StoreError::Database(e) => match e {
                sqlx::Error::Io(_) | sqlx::Error::PoolTimedOut | sqlx::Error::Protocol(_) => true,
                sqlx::Error::Database(d) => d.code().is_some_and(|code| {
                    // PostgreSQL: connection (08), serialization and
                    // deadlock (40), resources (53), operator action (57);
                    // SQLite: busy (5), locked (6), I/O (10).
                    ["08", "40", "53", "57"].iter().any(|c| code.starts_with(c))
                        || ["5", "6", "10"].contains(&code.as_ref())
                }),
                _ => false,
            },
            StoreError::Sqlite(e) => matches!(
                e.sqlite_error_code(),
                Some(
                    rusqlite::ErrorCode::DatabaseBusy
                        | rusqlite::ErrorCode::DatabaseLocked
                        | rusqlite::ErrorCode::SystemIoFailure
                )
            ),
            StoreError::LeaseLost(_)
            | StoreError::Migrate(_)
            | StoreError::SchemaNotCurrent(_)
            | StoreError::Corrupt(_)
            | StoreError::Locked(_)
            | StoreError::BadUrl(_)
            | StoreError::Secrets(_)
            | StoreError::PinFailed(_)
            | StoreError::Closed => false,
        }
    }

    /// Whether the disk is full.
    pub fn is_storage_full(&self) -> bool {
        matches!(self, StoreError::StorageFull(_))
    }

    /// Whether this is a violated foreign key (a plugin pinned, or gone).
    pub(crate) fn is_foreign_key(&self) -> bool {
        match self {
            StoreError::Sqlite(e) => sqlite_foreign_key(e),
            StoreError::Database(sqlx::Error::Database(d)) => {
                d.kind() == sqlx::error::ErrorKind::ForeignKeyViolation
            }
            _ => false,
        }
    }
}

/// Whether SQLite refused a statement for a foreign key.
pub(crate) fn sqlite_foreign_key(e: &rusqlite::Error) -> bool {
    matches!(e, rusqlite::Error::SqliteFailure(f, _)
        if f.extended_code == rusqlite::ffi::SQLITE_CONSTRAINT_FOREIGNKEY)
}

/// The URL without its password (in the user part or a `password` query
/// parameter), for messages and logs.
pub fn redact_url(text: &str) -> String {
    let Ok(mut url) = url::Url::parse(text) else {
        // Not a URL we can take apart: keep only what cannot be a secret.
        return match text.split_once("://") {
            Some((scheme, _)) => format!("{scheme}://[redacted]"),
            None => text.to_string(),
        };
    };
    if url.password().is_some() {
        let _ = url.set_password(Some("***"));
    }
    if url.query().is_some() {
        let pairs: Vec<(String, String)> = url
            .query_pairs()
            .map(|(k, v)| {
                let secret = ["password", "sslpassword", "passfile"]
                    .contains(&k.to_ascii_lowercase().as_str());
                (
                    k.into_owned(),
                    if secret { "***".into() } else { v.into_owned() },
                )
            })
            .collect();
        url.query_pairs_mut().clear().extend_pairs(pairs);
    }
    url.to_string()
}

#[cfg(test)]
mod tests {
    use super::{StoreError, redact_url};

    /// What retrying cannot fix is not retried (a corrupt row, a broken
    /// constraint); a busy database, a lost connection or a full disk are.
    #[test]
    fn only_transient_failures_are_worth_retrying() {
        let sqlite = |code| {
            StoreError::from(rusqlite::Error::SqliteFailure(
                rusqlite::ffi::Error::new(code),
                None,
            ))
        };
        assert!(sqlite(rusqlite::ffi::SQLITE_BUSY).is_transient());
        assert!(sqlite(rusqlite::ffi::SQLITE_FULL).is_storage_full());
        assert!(sqlite(rusqlite::ffi::SQLITE_FULL).is_transient());
        assert!(!sqlite(rusqlite::ffi::SQLITE_CONSTRAINT).is_transient());
        assert!(!sqlite(rusqlite::ffi::SQLITE_CORRUPT).is_transient());
        assert!(!StoreError::Corrupt("a bad row".into()).is_transient());
        assert!(StoreError::WriteFailed("the batch rolled back".into()).is_transient());
        assert!(StoreError::from(sqlx::Error::PoolTimedOut).is_transient());
        assert!(!StoreError::from(sqlx::Error::RowNotFound).is_transient());
    }

    #[test]
    fn urls_lose_their_passwords() {
        assert_eq!(
            redact_url("postgres://app:s3cret@db:5432/x"),
            "postgres://app:***@db:5432/x"
        );
        assert_eq!(redact_url("postgres://app@db/x"), "postgres://app@db/x");
        assert_eq!(
            redact_url("postgres://app@db/x?password=s3cret&max_connections=4"),
            "postgres://app@db/x?password=***&max_connections=4"
        );
        assert_eq!(redact_url("sqlite://./data/w.db"), "sqlite://./data/w.db");
        assert!(!redact_url("postgres://a:b c@d/x").contains("b c"));
    }
}
