//! The saga's and the ledger's statuses (a contract), and every rule that
//! belongs to a status alone: which are final, which are unfinished, how
//! they are spelled. This is the one list: the store's SQL and the
//! migrations' partial indexes are checked against it (see the tests).
//!
//! Each enum is spelled in snake case everywhere (JSON, SQL, the OpenAPI
//! document, the command line), through serde, strum and utoipa alike.

/// Derives for the string enums of the domain: one spelling for serde,
/// `Display`/`FromStr` (strum) and the OpenAPI schema (utoipa).
macro_rules! string_enum {
    ($(#[$meta:meta])* pub enum $name:ident { $($(#[$vmeta:meta])* $variant:ident),+ $(,)? }) => {
        $(#[$meta])*
        #[derive(
            Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord,
            ::serde::Serialize, ::serde::Deserialize, ::utoipa::ToSchema,
            ::strum::Display, ::strum::EnumString, ::strum::IntoStaticStr, ::strum::VariantArray,
        )]
        #[serde(rename_all = "snake_case")]
        #[strum(serialize_all = "snake_case")]
        pub enum $name {
            $($(#[$vmeta])* $variant),+
        }

        impl $name {
            pub const ALL: &'static [$name] = <$name as ::strum::VariantArray>::VARIANTS;

            pub fn as_str(self) -> &'static str {
                self.into()
            }

            /// Parses the snake-case spelling, with a message listing the
            /// valid ones.
            pub fn parse(text: &str) -> Result<$name, String> {
                text.parse().map_err(|_| {
                    format!(
                        "unknown {} `{}` (expected one of: {})",
                        stringify!($name),
                        text.chars().take(64).collect::<String>(),
                        Self::ALL.iter().map(|s| s.as_str()).collect::<Vec<_>>().join(", ")
                    )
                })
            }
        }
    };
}
pub(crate) use string_enum;

string_enum! {
    /// Where a saga is in its life (contract). `pending` -> `running` ->
    /// `completed`; on a fatal failure or a cancel, `running` ->
    /// `compensating` -> `rolled_back` or `failed`; `running` <-> `paused`
    /// by an operator.
    pub enum SagaStatus {
        /// Accepted, no step started yet.
        Pending,
        /// Executing its steps in order.
        Running,
        /// Stopped between steps by an operator; goes on when resumed.
        Paused,
        /// Undoing completed steps in reverse order.
        Compensating,
        /// Every step completed.
        Completed,
        /// Stopped, and every completed step was compensated.
        RolledBack,
        /// Stopped, and some compensation failed after its retries: needs a human.
        Failed,
        /// An `at_most_once` step's call was cut short (its host died
        /// mid-call): whether it happened is unknown, so it is not made
        /// again; a human resolves it as applied or not (docs/recovery.md).
        InDoubt,
    }
}

string_enum! {
    /// Whether a step's call cut short by a crash may be made again.
    #[derive(Default)]
    pub enum Semantics {
        /// Made again with the same idempotency key (the default).
        #[default]
        AtLeastOnce,
        /// Never made again: the saga goes `in_doubt`.
        AtMostOnce,
    }
}

string_enum! {
    /// What a human says of an `in_doubt` step's call.
    pub enum Resolution {
        /// It happened: its output is given, and the saga goes on after it.
        Applied,
        /// It did not: the step is called again, with fresh attempts.
        NotApplied,
    }
}

impl Semantics {
    pub fn is_default(&self) -> bool {
        *self == Semantics::AtLeastOnce
    }
}

impl SagaStatus {
    /// The statuses a saga can still leave: it holds its plugins pinned,
    /// and retention never deletes it.
    pub const UNFINISHED: &'static [SagaStatus] = &[
        SagaStatus::Pending,
        SagaStatus::Running,
        SagaStatus::Paused,
        SagaStatus::Compensating,
        SagaStatus::InDoubt,
    ];

    /// No further transition happens by itself from a final status (only a
    /// human's retry or resolve of a `failed` saga).
    pub fn is_final(self) -> bool {
        !Self::UNFINISHED.contains(&self)
    }

    /// The statuses a saga ends in: every one but the unfinished.
    pub fn ended() -> Vec<SagaStatus> {
        Self::ALL.iter().copied().filter(|s| s.is_final()).collect()
    }

    /// `('pending', 'running', ...)`: the statuses as an SQL list.
    pub fn sql_list(statuses: &[SagaStatus]) -> String {
        let quoted: Vec<String> = statuses.iter().map(|s| format!("'{s}'")).collect();
        format!("({})", quoted.join(", "))
    }
}

string_enum! {
    /// A step's status in the ledger (contract).
    pub enum StepStatus {
        /// Executing, or waiting to be called again (`waiting_until`).
        Running,
        /// A wait, open until it receives a payload or times out
        /// (`waiting_until`).
        Waiting,
        Completed,
        Failed,
        Compensating,
        Compensated,
        CompensationFailed,
    }
}

string_enum! {
    /// Which of a step's two calls is meant.
    pub enum Phase {
        Execute,
        Compensate,
    }
}

string_enum! {
    /// Severity of a log line, as the WIT `log-level`.
    pub enum LogLevel {
        Trace,
        Debug,
        Info,
        Warn,
        Error,
    }
}

string_enum! {
    /// What a human did to a saga. `start` is recorded with the
    /// authenticated label of whoever started it (when tokens are on),
    /// beside the `triggered_by` the request gave.
    pub enum ActionKind {
        Start,
        Cancel,
        Pause,
        Resume,
        Retry,
        Resolve,
        /// An approval (or the completion) of a wait, by its actor.
        Complete,
        /// A wait rejected: it fails and the saga compensates.
        Reject,
        /// A failed or rolled-back saga driven again (docs/recovery.md).
        Redrive,
    }
}

string_enum! {
    /// Whether a resource in the desired-state ledger is meant to exist.
    pub enum ResourceState {
        /// Recorded by a step that was not compensated.
        Present,
        /// The step that recorded it last was compensated (or resolved by
        /// hand).
        Removed,
    }
}

string_enum! {
    /// What a drift scan found of a present resource (docs/recovery.md):
    /// its plugin's `observe` compared with the spec last recorded.
    pub enum Drift {
        /// As recorded.
        None,
        /// There, with another spec (`diff` says how).
        Changed,
        /// Not there.
        Missing,
        /// Its plugin cannot tell (no `observe`, `unknown`, or a failed call).
        Unknown,
    }
}

string_enum! {
    /// Why a saga stopped going forward.
    pub enum StopCause {
        /// A step failed for good (its own error, exhausted retries, a wait
        /// past its limit).
        StepFailed,
        /// A cancel request.
        Cancelled,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_use_contract_names() {
        assert_eq!(SagaStatus::RolledBack.as_str(), "rolled_back");
        assert_eq!(SagaStatus::RolledBack.to_string(), "rolled_back");
        assert_eq!(
            StepStatus::parse("compensation_failed").unwrap(),
            StepStatus::CompensationFailed
        );
        assert_eq!(
            serde_json::to_value(StepStatus::CompensationFailed).unwrap(),
            "compensation_failed"
        );
        let err = SagaStatus::parse("done").unwrap_err();
        assert!(err.contains("pending, running, paused"), "{err}");
        assert!(SagaStatus::Failed.is_final() && !SagaStatus::Compensating.is_final());
        assert!(!SagaStatus::Paused.is_final());
        assert_eq!(
            SagaStatus::sql_list(&[SagaStatus::Pending, SagaStatus::RolledBack]),
            "('pending', 'rolled_back')"
        );
    }

    /// The migrations' partial indexes over unfinished sagas and over
    /// ended ones must name exactly [`SagaStatus::UNFINISHED`] and the
    /// rest: the newest migration that (re)creates each, per database, is
    /// checked.
    #[test]
    fn the_migrations_partial_indexes_follow_the_status_list() {
        for (index, statuses) in [
            ("saga_runs_unfinished", SagaStatus::UNFINISHED.to_vec()),
            ("saga_runs_ended", SagaStatus::ended()),
        ] {
            newest_index_covers(index, &statuses);
        }
    }

    /// The newest migration (per database) that creates `index` makes it
    /// partial over exactly `statuses`.
    fn newest_index_covers(index: &str, statuses: &[SagaStatus]) {
        let expected = format!("status IN {}", SagaStatus::sql_list(statuses));
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../migrations");
        for db in ["sqlite", "postgres"] {
            let mut files: Vec<_> = std::fs::read_dir(root.join(db))
                .unwrap()
                .map(|e| e.unwrap().path())
                .collect();
            files.sort();
            let newest = files
                .iter()
                .rev()
                .map(|f| std::fs::read_to_string(f).unwrap())
                .find_map(|sql| {
                    sql.lines()
                        .skip_while(|l| !l.contains(&format!("CREATE INDEX {index} ")))
                        .nth(1)
                        .map(|l| l.trim().trim_end_matches(';').to_string())
                })
                .unwrap_or_else(|| panic!("no {index} index in migrations/{db}"));
            assert_eq!(
                newest.trim_start_matches("WHERE ").trim(),
                expected,
                "migrations/{db}"
            );
        }
    }
}
