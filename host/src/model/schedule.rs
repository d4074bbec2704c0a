//! Schedules (docs/schedules.md): a template started on a timer, by a cron
//! pattern in a time zone or every fixed interval, with a policy for a
//! fire that comes while the last run still goes.
//!
//! This module owns a schedule's shape and its calendar: which instants a
//! schedule fires at. A cron pattern is read by the `croner` crate over the
//! wall clock of its time zone (`chrono-tz`), and each wall-clock time it
//! names is turned into one instant here, so daylight saving is explicit:
//! a wall-clock time that happens twice (the hour repeated in autumn)
//! fires once, at its first instant; one that does not happen (the hour
//! skipped in spring) fires at the first valid instant after the gap, and
//! several such times collapse into that one fire. An interval (`every`)
//! is counted from the Unix epoch in absolute time, so every host computes
//! the same instants and no time zone touches it.

use super::{SagaId, Timestamp};
use chrono::{DateTime, NaiveDateTime, TimeZone as _, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::time::Duration;
use utoipa::ToSchema;

/// Longest schedule name (it is a path segment and part of an
/// idempotency key).
pub const MAX_SCHEDULE_NAME: usize = 64;

super::string_enum! {
    /// What a fire does while an earlier run of its schedule has not ended
    /// (contract).
    pub enum Overlap {
        /// The fire is skipped, and recorded with the run that still goes.
        Skip,
        /// At most one fire waits for the run to end, then starts; a
        /// further one is skipped.
        BufferOne,
        /// Every fire starts a run at once.
        Allow,
        /// Every earlier run is cancelled (and compensates); the new run
        /// starts when they have ended.
        CancelOther,
    }
}

super::string_enum! {
    /// What became of one fire.
    pub enum FireOutcome {
        /// A saga was started (or queued behind runs it cancelled).
        Started,
        /// A saga was stored waiting for the run before it (`buffer_one`).
        Buffered,
        /// No saga: the overlap policy said so; `reason` says why.
        Skipped,
        /// Nominal times the schedule's hosts were not there for, past the
        /// catch-up window: one record covers them all.
        Missed,
        /// The start was refused (the template changed, inputs no longer
        /// pass its schema, a plugin is gone); `reason` says why.
        Failed,
    }
}

/// `PUT /v1/schedules/{name}` body.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ScheduleRequest {
    /// The template each fire starts (its latest version at the fire).
    #[serde(default)]
    pub template: Option<String>,
    /// The start's inputs (a JSON object), checked against the template's
    /// schema now and at each fire.
    #[serde(default)]
    #[schema(value_type = Option<Object>)]
    pub inputs: Option<Value>,
    /// A cron pattern: 5 fields, or 6 with seconds first (`0 3 * * *`).
    #[serde(default)]
    pub cron: Option<String>,
    /// Or an interval, counted from the Unix epoch: `15m`, `1h`, `30s`.
    #[serde(default)]
    pub every: Option<String>,
    /// An IANA time zone the cron pattern reads (default `UTC`).
    #[serde(default)]
    pub timezone: Option<String>,
    /// Default `skip`.
    #[serde(default)]
    pub overlap: Option<Overlap>,
    /// How late a fire may still start after hosts were away (default
    /// `1h`); older nominal times are recorded as `missed`.
    #[serde(default)]
    pub catchup_window: Option<String>,
    #[serde(default)]
    pub paused: bool,
}

/// A stored schedule (contract: the JSON of `GET /v1/schedules/{name}`'s
/// fields of the same names).
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema, PartialEq)]
pub struct Schedule {
    pub name: String,
    #[serde(flatten)]
    pub spec: ScheduleSpec,
    pub paused: bool,
    pub created_at: Timestamp,
    pub updated_at: Timestamp,
}

/// What a schedule starts and when: the parts stored as one JSON document
/// (the rest of a [`Schedule`] are columns).
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema, PartialEq)]
pub struct ScheduleSpec {
    pub template: String,
    #[schema(value_type = Object)]
    pub inputs: Value,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cron: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub every: Option<String>,
    /// The cron pattern's time zone; `UTC` for an interval.
    pub timezone: String,
    pub overlap: Overlap,
    pub catchup_window: String,
}

impl Schedule {
    /// When it fires (it was checked when stored).
    pub fn calendar(&self) -> Result<Calendar, String> {
        Calendar::new(
            self.spec.cron.as_deref(),
            self.spec.every.as_deref(),
            Some(&self.spec.timezone),
        )
    }

    /// How late a fire may start (it was checked when stored).
    pub fn catchup(&self) -> Duration {
        humantime::parse_duration(&self.spec.catchup_window).unwrap_or(Duration::ZERO)
    }

    /// The idempotency key of the saga a fire at `nominal` starts: two
    /// hosts firing the same nominal time start one saga.
    pub fn fire_key(&self, nominal: Timestamp) -> String {
        format!("schedule:{}:{nominal}", self.name)
    }

    /// The concurrency key runs hold under `skip`, `buffer_one` and
    /// `cancel_other`.
    pub fn overlap_key(&self) -> String {
        format!("schedule:{}", self.name)
    }
}

/// One fire of a schedule, as `GET /v1/schedules/{name}` lists it.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema, PartialEq)]
pub struct Fire {
    /// The time it was due (the saga's idempotency key names it).
    pub nominal_at: Timestamp,
    /// When a host acted on it; null while one is.
    pub fired_at: Option<Timestamp>,
    /// Null while a host is acting on it.
    pub outcome: Option<FireOutcome>,
    pub saga_id: Option<SagaId>,
    /// Why it was skipped, missed or failed, or what it cancelled.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// Fired by `POST .../trigger`, not by the calendar.
    pub manual: bool,
}

/// A schedule as `GET /v1/schedules/{name}` shows it.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ScheduleStatus {
    #[serde(flatten)]
    pub schedule: Schedule,
    /// The next nominal times (5; none while paused).
    pub next_runs: Vec<Timestamp>,
    /// The latest fires, newest first.
    pub fires: Vec<Fire>,
}

/// Which instants a schedule fires at.
#[derive(Debug, Clone)]
pub enum Calendar {
    Cron {
        cron: Box<croner::Cron>,
        tz: chrono_tz::Tz,
    },
    /// Milliseconds between fires, from the Unix epoch.
    Every(i64),
}

/// The longest interval `every` may say.
const MAX_EVERY: Duration = Duration::from_secs(366 * 24 * 3600);

/// Wall-clock times a search looks at before giving up (a pattern such as
/// `0 0 30 2 *` never matches).
const MAX_SEARCH: usize = 100_000;

impl Calendar {
    /// The calendar of a cron pattern in a time zone, or of an interval;
    /// exactly one of them. The error names the field.
    pub fn new(
        cron: Option<&str>,
        every: Option<&str>,
        timezone: Option<&str>,
    ) -> Result<Calendar, String> {
        match (cron, every) {
            (Some(_), Some(_)) => Err("give either `cron` or `every`, not both".into()),
            (None, None) => Err("`cron` or `every` is required".into()),
            (Some(pattern), None) => {
                let tz: chrono_tz::Tz = timezone.unwrap_or("UTC").parse().map_err(|_| {
                    format!(
                        "`timezone`: `{}` is not an IANA time zone (such as `Europe/Rome` or `UTC`)",
                        timezone.unwrap_or_default().chars().take(64).collect::<String>()
                    )
                })?;
                let cron = croner::parser::CronParser::builder()
                    .seconds(croner::parser::Seconds::Optional)
                    .build()
                    .parse(pattern)
                    .map_err(|e| format!("`cron`: `{pattern}` is not a cron pattern: {e}"))?;
                let calendar = Calendar::Cron {
                    cron: Box::new(cron),
                    tz,
                };
                if calendar.next_after(Timestamp::now()).is_none() {
                    return Err(format!("`cron`: `{pattern}` never fires"));
                }
                Ok(calendar)
            }
            (None, Some(every)) => {
                if timezone.is_some_and(|tz| tz != "UTC") {
                    return Err(
                        "`timezone` applies to `cron` only: an interval counts absolute time"
                            .into(),
                    );
                }
                let d = humantime::parse_duration(every)
                    .map_err(|e| format!("`every`: `{every}` is not a duration: {e}"))?;
                if d < Duration::from_secs(1) || d > MAX_EVERY || d.subsec_nanos() != 0 {
                    return Err(format!(
                        "`every` must be a whole number of seconds from 1s to 366d, not `{every}`"
                    ));
                }
                Ok(Calendar::Every(d.as_millis() as i64))
            }
        }
    }

    /// The first fire strictly after `t`; `None` when the pattern never
    /// matches again.
    pub fn next_after(&self, t: Timestamp) -> Option<Timestamp> {
        match self {
            Calendar::Every(ms) => Some(Timestamp((t.millis().div_euclid(*ms) + 1) * ms)),
            Calendar::Cron { cron, tz } => {
                let at = DateTime::<Utc>::from_timestamp_millis(t.millis())?;
                // Wall-clock times map to instants in order, so the first
                // one past `t` comes at or after `t`'s own wall-clock time.
                let mut cursor = at.with_timezone(tz).naive_local();
                let mut inclusive = true;
                for _ in 0..MAX_SEARCH {
                    let wall = cron.find_next_occurrence(&cursor, inclusive).ok()?;
                    let instant = instant_of(tz, wall)?;
                    if instant > t {
                        return Some(instant);
                    }
                    cursor = wall;
                    inclusive = false;
                }
                None
            }
        }
    }

    /// The next `n` fires after `t`.
    pub fn next_runs(&self, t: Timestamp, n: usize) -> Vec<Timestamp> {
        std::iter::successors(self.next_after(t), |at| self.next_after(*at))
            .take(n)
            .collect()
    }
}

/// The instant a wall-clock time in `tz` fires at: its only instant; the
/// first of two (a repeated hour fires once); or, in a gap, the first valid
/// instant after it.
fn instant_of(tz: &chrono_tz::Tz, wall: NaiveDateTime) -> Option<Timestamp> {
    use chrono::LocalResult;
    use chrono::Timelike as _;
    let at = |d: DateTime<chrono_tz::Tz>| Timestamp(d.timestamp_millis());
    match tz.from_local_datetime(&wall) {
        LocalResult::Single(d) => Some(at(d)),
        LocalResult::Ambiguous(first, _) => Some(at(first)),
        LocalResult::None => {
            // Gaps start and end on a whole minute; none is longer than a
            // day.
            let mut probe = wall.with_second(0)?.with_nanosecond(0)?;
            for _ in 0..(24 * 60) {
                probe += chrono::TimeDelta::minutes(1);
                match tz.from_local_datetime(&probe) {
                    LocalResult::Single(d) => return Some(at(d)),
                    LocalResult::Ambiguous(first, _) => return Some(at(first)),
                    LocalResult::None => {}
                }
            }
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn utc(text: &str) -> Timestamp {
        Timestamp(
            DateTime::parse_from_rfc3339(text)
                .expect("a test time")
                .timestamp_millis(),
        )
    }

    fn runs(cron: &str, tz: &str, from: &str, n: usize) -> Vec<String> {
        Calendar::new(Some(cron), None, Some(tz))
            .expect("a calendar")
            .next_runs(utc(from), n)
            .into_iter()
            .map(|t| t.to_string())
            .collect()
    }

    #[test]
    fn a_fixed_time_in_the_hour_skipped_in_spring_fires_when_the_gap_ends() {
        // Rome, 29 March 2026: 02:00 CET becomes 03:00 CEST.
        assert_eq!(
            runs("30 2 * * *", "Europe/Rome", "2026-03-27T12:00:00Z", 3),
            [
                "2026-03-28T01:30:00.000Z", // 02:30 CET
                "2026-03-29T01:00:00.000Z", // 03:00 CEST: the first valid instant
                "2026-03-30T00:30:00.000Z", // 02:30 CEST
            ]
        );
    }

    #[test]
    fn every_time_of_the_skipped_hour_collapses_into_one_fire() {
        // Every 20 minutes: 02:00, 02:20, 02:40 do not happen; one fire at
        // 03:00 CEST stands for them and for 03:00 itself.
        assert_eq!(
            runs("*/20 * * * *", "Europe/Rome", "2026-03-29T00:30:00Z", 4),
            [
                "2026-03-29T00:40:00.000Z", // 01:40 CET
                "2026-03-29T01:00:00.000Z", // 03:00 CEST
                "2026-03-29T01:20:00.000Z", // 03:20 CEST
                "2026-03-29T01:40:00.000Z",
            ]
        );
    }

    #[test]
    fn a_repeated_hour_fires_once() {
        // Rome, 25 October 2026: 03:00 CEST becomes 02:00 CET, so 02:30
        // happens twice; it fires at the first.
        assert_eq!(
            runs("30 2 * * *", "Europe/Rome", "2026-10-24T12:00:00Z", 3),
            [
                "2026-10-25T00:30:00.000Z", // 02:30 CEST
                "2026-10-26T01:30:00.000Z", // 02:30 CET, the next day
                "2026-10-27T01:30:00.000Z",
            ]
        );
        // Hourly: 02:00 fires once (CEST); 03:00 CET comes two hours later.
        assert_eq!(
            runs("0 * * * *", "Europe/Rome", "2026-10-24T23:30:00Z", 3),
            [
                "2026-10-25T00:00:00.000Z", // 02:00 CEST
                "2026-10-25T02:00:00.000Z", // 03:00 CET
                "2026-10-25T03:00:00.000Z", // 04:00 CET
            ]
        );
    }

    #[test]
    fn a_search_from_inside_the_repeated_hour_goes_forward() {
        // From 02:10 CET (the second pass of the hour), 02:30 has fired
        // already (at CEST), so the next fire is the day after.
        assert_eq!(
            runs("30 2 * * *", "Europe/Rome", "2026-10-25T01:10:00Z", 1),
            ["2026-10-26T01:30:00.000Z"]
        );
    }

    #[test]
    fn an_interval_counts_from_the_epoch_and_ignores_time_zones() {
        let every = Calendar::new(None, Some("15m"), None).expect("a calendar");
        assert_eq!(
            every
                .next_runs(utc("2026-03-29T00:50:00Z"), 2)
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>(),
            ["2026-03-29T01:00:00.000Z", "2026-03-29T01:15:00.000Z"]
        );
        assert_eq!(
            every.next_after(utc("2026-03-29T01:00:00Z")),
            Some(utc("2026-03-29T01:15:00Z"))
        );
    }

    #[test]
    fn bad_calendars_name_their_field() {
        // (cron, every, timezone, what the error says)
        type Case<'a> = (Option<&'a str>, Option<&'a str>, Option<&'a str>, &'a str);
        let cases: [Case; 7] = [
            (Some("0 3 * * *"), Some("1h"), None, "not both"),
            (None, None, None, "is required"),
            (Some("61 3 * * *"), None, None, "`cron`"),
            (Some("0 3 * * *"), None, Some("Mars/Olympus"), "`timezone`"),
            (Some("0 0 30 2 *"), None, None, "never fires"),
            (None, Some("500ms"), None, "`every`"),
            (None, Some("1h"), Some("Europe/Rome"), "`timezone` applies"),
        ];
        for (cron, every, tz, says) in cases {
            let error = Calendar::new(cron, every, tz).expect_err("refused");
            assert!(error.contains(says), "{error} should say {says}");
        }
    }
}
