//! The saga domain's nouns: ids, digests, statuses, and the saga, step and
//! plugin records that the store persists and the API returns.
//!
//! These types are shared by every seam, so they hold data and the rules
//! that belong to the data (which statuses are final, what a digest looks
//! like, how a timestamp is written), never behaviour of a seam. Their serde
//! shapes are the JSON of HTTP API v1 (a contract: fields may be added, never
//! renamed or removed).

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use sha2::{Digest as _, Sha256};
use std::fmt;
use std::str::FromStr;
use utoipa::ToSchema;

/// Milliseconds since the Unix epoch, written in JSON as RFC 3339 UTC with
/// milliseconds ("2026-11-27T09:29:45.123Z").
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, ToSchema)]
#[schema(value_type = String, format = DateTime)]
pub struct Timestamp(pub i64);

impl Timestamp {
    pub fn now() -> Timestamp {
        Timestamp(chrono::Utc::now().timestamp_millis())
    }

    pub fn millis(self) -> i64 {
        self.0
    }

    pub fn plus(self, d: std::time::Duration) -> Timestamp {
        Timestamp(self.0.saturating_add(d.as_millis() as i64))
    }
}

impl fmt::Display for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match chrono::DateTime::from_timestamp_millis(self.0) {
            Some(t) => write!(f, "{}", t.format("%Y-%m-%dT%H:%M:%S%.3fZ")),
            None => write!(f, "{}ms", self.0),
        }
    }
}

impl Serialize for Timestamp {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Timestamp {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        chrono::DateTime::parse_from_rfc3339(&text)
            .map(|t| Timestamp(t.timestamp_millis()))
            .map_err(serde::de::Error::custom)
    }
}

/// A saga's id: a UUIDv7, so ids sort by creation time.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, ToSchema,
)]
#[serde(transparent)]
#[schema(value_type = String, example = "019ac4f2-6b1e-7c3a-9d2e-5f1a2b3c4d5e")]
pub struct SagaId(pub uuid::Uuid);

impl SagaId {
    pub fn new() -> SagaId {
        SagaId(uuid::Uuid::now_v7())
    }
}

impl Default for SagaId {
    fn default() -> Self {
        SagaId::new()
    }
}

impl fmt::Display for SagaId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl FromStr for SagaId {
    type Err = uuid::Error;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        uuid::Uuid::parse_str(s).map(SagaId)
    }
}

/// A plugin's content address: `sha256:<64 lowercase hex digits>`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, ToSchema)]
#[serde(try_from = "String", into = "String")]
#[schema(value_type = String, example = "sha256:9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08")]
pub struct Digest(String);

impl Digest {
    pub fn of(bytes: &[u8]) -> Digest {
        Digest(format!("sha256:{}", hex::encode(Sha256::digest(bytes))))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The hex part, for file names.
    pub fn hex(&self) -> &str {
        &self.0["sha256:".len()..]
    }

    /// The first 12 hex digits, for humans.
    pub fn short(&self) -> &str {
        &self.hex()[..12]
    }
}

impl fmt::Display for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Why a text is not a digest.
#[derive(Debug, Clone, thiserror::Error)]
#[error("`{0}` is not a digest: expected sha256: and 64 lowercase hex digits")]
pub struct BadDigest(String);

impl FromStr for Digest {
    type Err = BadDigest;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.strip_prefix("sha256:") {
            Some(hex)
                if hex.len() == 64
                    && hex
                        .bytes()
                        .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)) =>
            {
                Ok(Digest(s.to_string()))
            }
            _ => Err(BadDigest(s.to_string())),
        }
    }
}

impl TryFrom<String> for Digest {
    type Error = BadDigest;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        s.parse()
    }
}

impl From<Digest> for String {
    fn from(d: Digest) -> String {
        d.0
    }
}

macro_rules! string_enum {
    ($(#[$meta:meta])* pub enum $name:ident { $($(#[$vmeta:meta])* $variant:ident = $text:literal),+ $(,)? }) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema)]
        pub enum $name {
            $($(#[$vmeta])* #[serde(rename = $text)] $variant),+
        }

        impl $name {
            pub const ALL: &'static [$name] = &[$($name::$variant),+];

            pub fn as_str(self) -> &'static str {
                match self {
                    $($name::$variant => $text),+
                }
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl FromStr for $name {
            type Err = String;
            fn from_str(s: &str) -> Result<Self, Self::Err> {
                match s {
                    $($text => Ok($name::$variant),)+
                    other => Err(format!(
                        "unknown {} `{other}` (expected one of: {})",
                        stringify!($name),
                        [$($text),+].join(", ")
                    )),
                }
            }
        }
    };
}

string_enum! {
    /// Where a saga is in its life (contract). `pending` -> `running` ->
    /// `completed`; on a fatal failure or a cancel, `running` ->
    /// `compensating` -> `rolled_back` or `failed`.
    pub enum SagaStatus {
        /// Accepted, no step started yet.
        Pending = "pending",
        /// Executing its steps in order.
        Running = "running",
        /// Undoing completed steps in reverse order.
        Compensating = "compensating",
        /// Every step completed.
        Completed = "completed",
        /// Stopped, and every completed step was compensated.
        RolledBack = "rolled_back",
        /// Stopped, and some compensation failed after its retries: needs a human.
        Failed = "failed",
    }
}

impl SagaStatus {
    /// No further transition happens from a final status.
    pub fn is_final(self) -> bool {
        matches!(
            self,
            SagaStatus::Completed | SagaStatus::RolledBack | SagaStatus::Failed
        )
    }
}

string_enum! {
    /// A step's status in the ledger (contract).
    pub enum StepStatus {
        Running = "running",
        Completed = "completed",
        Failed = "failed",
        Compensating = "compensating",
        Compensated = "compensated",
        CompensationFailed = "compensation_failed",
    }
}

string_enum! {
    /// Which of a step's two calls is meant.
    pub enum Phase {
        Execute = "execute",
        Compensate = "compensate",
    }
}

string_enum! {
    /// Severity of a log line, as the WIT `log-level`.
    pub enum LogLevel {
        Trace = "trace",
        Debug = "debug",
        Info = "info",
        Warn = "warn",
        Error = "error",
    }
}

/// One line a plugin call logged (host `log`, or a captured stdout/stderr
/// line, prefixed `[stdout]`/`[stderr]`; the host's own notes start `[host]`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct LogLine {
    pub level: LogLevel,
    pub message: String,
}

/// A log line in a step's ledger: which call wrote it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct LedgerLogLine {
    pub level: LogLevel,
    pub message: String,
    pub phase: Phase,
    pub attempt: u32,
}

/// A resource a step recorded through `record-resource`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct RecordedResource {
    pub kind: String,
    pub external_id: String,
    #[schema(value_type = Object)]
    pub spec: Value,
}

/// A resource in a saga's ledger.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct SagaResource {
    pub step_index: u32,
    pub kind: String,
    pub external_id: String,
    #[schema(value_type = Object)]
    pub spec: Value,
    /// 1 for the first record of this (kind, external id) in the saga; a
    /// later step recording the same resource again bumps it.
    pub spec_version: u32,
    pub created_at: Timestamp,
}

/// One step of a saga, as pinned when the saga started.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct StepSpec {
    /// The plugin's name when the saga started.
    pub name: String,
    /// The exact plugin that runs, whatever is uploaded later.
    pub plugin: Digest,
    /// Attempts per phase, the first call included.
    pub max_attempts: u32,
    /// Deadline of one call, in milliseconds.
    pub timeout_ms: u64,
    /// Memory limit of one call, when not the host's default.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_memory_bytes: Option<u64>,
    /// Output size limit, when not the host's default.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_output_bytes: Option<u64>,
}

/// Why a saga stopped short of `completed`. The original engine recorded
/// `{compensate_from_idx, reason}`; `message` says it all in one sentence.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct SagaError {
    /// One sentence for humans.
    pub message: String,
    /// The step whose failure (or interruption) stopped the saga, if any.
    #[serde(default)]
    pub failed_step: Option<u32>,
    /// The step compensation started from (the last completed one), or
    /// `null` when no step had completed.
    #[serde(default)]
    pub compensate_from_idx: Option<u32>,
    /// The failure's own message, or `cancelled`.
    pub reason: String,
    /// Steps whose compensation failed after its retries (status `failed`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub compensation_failed_steps: Vec<u32>,
}

/// A saga, without its ledger.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct SagaRun {
    pub id: SagaId,
    pub kind: String,
    pub status: SagaStatus,
    /// The step being executed or compensated (or the next one to run).
    pub current_step_index: u32,
    #[schema(value_type = Object)]
    pub inputs: Value,
    /// What completed steps output, merged (a JSON object).
    #[schema(value_type = Object)]
    pub context: Map<String, Value>,
    pub error: Option<SagaError>,
    pub cancel_requested: bool,
    pub deployment_id: Option<String>,
    pub triggered_by: Option<String>,
    /// The steps as pinned at start: plugin digests and per-step settings.
    pub plan: Vec<StepSpec>,
    pub created_at: Timestamp,
    pub updated_at: Timestamp,
}

impl SagaRun {
    /// A new saga, not started yet.
    pub fn pending(
        kind: impl Into<String>,
        plan: Vec<StepSpec>,
        inputs: Value,
        deployment_id: Option<String>,
        triggered_by: Option<String>,
        now: Timestamp,
    ) -> SagaRun {
        SagaRun {
            id: SagaId::new(),
            kind: kind.into(),
            status: SagaStatus::Pending,
            current_step_index: 0,
            inputs,
            context: Map::new(),
            error: None,
            cancel_requested: false,
            deployment_id,
            triggered_by,
            plan,
            created_at: now,
            updated_at: now,
        }
    }
}

/// A step's row in a saga's ledger.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct StepResult {
    pub index: u32,
    pub name: String,
    pub plugin: Digest,
    pub status: StepStatus,
    /// The phase of the latest call: `execute`, or `compensate` once
    /// compensation reached this step.
    pub phase: Phase,
    /// Calls of `execute` so far.
    pub attempts: u32,
    /// Calls of `compensate` so far.
    pub compensate_attempts: u32,
    #[schema(value_type = Option<Object>)]
    pub output: Option<Value>,
    pub error: Option<String>,
    pub logs: Vec<LedgerLogLine>,
    pub started_at: Option<Timestamp>,
    pub finished_at: Option<Timestamp>,
    /// The host (its node id) that ran the latest attempt.
    #[serde(default)]
    pub executed_by: Option<String>,
}

impl StepResult {
    /// The ledger row of a step about to execute for the first time on
    /// host `node`.
    pub fn first_attempt(index: u32, spec: &StepSpec, node: &str, now: Timestamp) -> StepResult {
        StepResult {
            index,
            name: spec.name.clone(),
            plugin: spec.plugin.clone(),
            status: StepStatus::Running,
            phase: Phase::Execute,
            attempts: 1,
            compensate_attempts: 0,
            output: None,
            error: None,
            logs: Vec::new(),
            started_at: Some(now),
            finished_at: None,
            executed_by: Some(node.to_string()),
        }
    }
}

/// A saga with its ledger and resources: `GET /v1/sagas/{id}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct SagaDetail {
    #[serde(flatten)]
    pub saga: SagaRun,
    pub steps: Vec<StepResult>,
    pub resources: Vec<SagaResource>,
}

/// A stored plugin, without its bytes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct PluginInfo {
    pub digest: Digest,
    pub name: String,
    /// Size of the component in bytes.
    pub size: u64,
    pub created_at: Timestamp,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn digest_round_trips_and_rejects_junk() {
        let d = Digest::of(b"hello");
        assert_eq!(
            d.as_str(),
            "sha256:2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824"
        );
        assert_eq!(d.as_str().parse::<Digest>().unwrap(), d);
        for bad in [
            "",
            "sha256:",
            "sha256:XYZ",
            "md5:2cf24dba5fb0a30e26e83b2ac5b9e29e",
            "echo",
        ] {
            assert!(bad.parse::<Digest>().is_err(), "{bad} parsed");
        }
    }

    #[test]
    fn timestamps_are_rfc3339_utc_millis() {
        let t = Timestamp(1_795_000_000_123);
        let json = serde_json::to_string(&t).unwrap();
        assert_eq!(json, "\"2026-11-18T11:06:40.123Z\"");
        assert_eq!(serde_json::from_str::<Timestamp>(&json).unwrap(), t);
    }

    #[test]
    fn statuses_use_contract_names() {
        assert_eq!(SagaStatus::RolledBack.as_str(), "rolled_back");
        assert_eq!(
            "compensation_failed".parse::<StepStatus>().unwrap(),
            StepStatus::CompensationFailed
        );
        assert!("done".parse::<SagaStatus>().is_err());
        assert!(SagaStatus::Failed.is_final() && !SagaStatus::Compensating.is_final());
    }
}
