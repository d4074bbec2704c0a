//! The database's schema against the migrations this binary carries: which
//! are applied, which are missing, which a newer binary applied. One
//! comparison for both databases, so that `wasaga migrate --check`,
//! `serve --migrations require` and `/readyz` agree on what "current" means.
//!
//! Current means every migration this binary knows is applied with the
//! checksum it knows. Migrations applied by a newer binary (a rolling
//! upgrade whose migrations job ran first) do not make an older host
//! unready: migrations within a release line only add.

use super::{StoreError, StoreResult};
use serde::Serialize;
use sqlx::migrate::Migrator;

/// Where a database's schema stands for this binary.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Schema {
    /// The migrations this binary carries.
    pub known: usize,
    /// Of those, how many the database has applied.
    pub applied: usize,
    /// Known but not applied: `VERSION description`.
    pub missing: Vec<String>,
    /// Applied with another checksum than this binary's (an edited
    /// migration: a bug, or a database of another build).
    pub changed: Vec<String>,
    /// Applied but unknown to this binary (a newer binary's).
    pub newer: Vec<i64>,
}

impl Schema {
    /// Compares what the database recorded (`version`, `checksum` of each
    /// successful migration) with what `migrator` carries.
    pub(crate) fn compare(migrator: &Migrator, recorded: &[(i64, Vec<u8>)]) -> Schema {
        let mut schema = Schema {
            known: 0,
            applied: 0,
            missing: Vec::new(),
            changed: Vec::new(),
            newer: Vec::new(),
        };
        for migration in migrator
            .iter()
            .filter(|m| m.migration_type.is_up_migration())
        {
            schema.known += 1;
            let name = format!("{:04} {}", migration.version, migration.description);
            match recorded.iter().find(|(v, _)| *v == migration.version) {
                None => schema.missing.push(name),
                Some((_, checksum)) if checksum.as_slice() != migration.checksum.as_ref() => {
                    schema.changed.push(name)
                }
                Some(_) => schema.applied += 1,
            }
        }
        schema.newer = recorded
            .iter()
            .map(|(v, _)| *v)
            .filter(|v| !migrator.iter().any(|m| m.version == *v))
            .collect();
        schema
    }

    /// Every migration this binary knows is applied, as it knows it.
    pub fn is_current(&self) -> bool {
        self.missing.is_empty() && self.changed.is_empty()
    }

    /// `Ok` when current; otherwise the error a host that may not migrate
    /// starts with, saying what to run.
    pub fn require_current(&self) -> StoreResult<()> {
        if self.is_current() {
            return Ok(());
        }
        Err(StoreError::SchemaNotCurrent(self.describe()))
    }

    /// One line for people: "current (9 of 9 applied)", or what is off.
    pub fn describe(&self) -> String {
        let mut parts = Vec::new();
        if !self.missing.is_empty() {
            parts.push(format!(
                "{} migration(s) not applied ({}): run `wasaga migrate` with this database",
                self.missing.len(),
                self.missing.join(", ")
            ));
        }
        if !self.changed.is_empty() {
            parts.push(format!(
                "{} migration(s) applied with another checksum than this build's ({}): the \
                 database was migrated by another build of wasaga",
                self.changed.len(),
                self.changed.join(", ")
            ));
        }
        if parts.is_empty() {
            let mut line = format!("current ({} of {} applied)", self.applied, self.known);
            if !self.newer.is_empty() {
                line.push_str(&format!(
                    "; {} newer migration(s) from a later release also applied",
                    self.newer.len()
                ));
            }
            return line;
        }
        parts.join("; ")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    static SQLITE: Migrator = sqlx::migrate!("../migrations/sqlite");

    fn recorded(migrator: &Migrator, upto: usize) -> Vec<(i64, Vec<u8>)> {
        migrator
            .iter()
            .take(upto)
            .map(|m| (m.version, m.checksum.to_vec()))
            .collect()
    }

    #[test]
    fn a_schema_is_current_when_every_known_migration_is_applied_as_known() {
        let all = SQLITE.iter().count();
        let full = Schema::compare(&SQLITE, &recorded(&SQLITE, all));
        assert!(full.is_current(), "{full:?}");
        assert_eq!(full.applied, all);
        assert!(
            full.describe().starts_with("current ("),
            "{}",
            full.describe()
        );

        let empty = Schema::compare(&SQLITE, &[]);
        assert!(!empty.is_current());
        assert_eq!(empty.missing.len(), all);
        let why = empty.require_current().unwrap_err().to_string();
        assert!(why.contains("run `wasaga migrate`"), "{why}");
        assert!(why.contains("0001 initial"), "{why}");

        let mut edited = recorded(&SQLITE, all);
        edited[0].1 = vec![0; 48];
        let edited = Schema::compare(&SQLITE, &edited);
        assert!(!edited.is_current());
        assert_eq!(edited.changed, vec!["0001 initial".to_string()]);

        let mut ahead = recorded(&SQLITE, all);
        ahead.push((9999, vec![1, 2, 3]));
        let ahead = Schema::compare(&SQLITE, &ahead);
        assert!(
            ahead.is_current(),
            "a newer release's migration does not unready a host"
        );
        assert_eq!(ahead.newer, vec![9999]);
        assert!(
            ahead.describe().contains("1 newer migration"),
            "{}",
            ahead.describe()
        );
    }
}
