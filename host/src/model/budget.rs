//! Provider budgets (docs/flow-control.md): a rate at which every host on
//! one database may send requests to a provider's origins, shared as one
//! row. The row keeps a GCRA "theoretical arrival time" (`tat`), so taking
//! a token is one conditional update with no refill job. A provider's
//! `429`, or a `503` with `Retry-After`, pauses the budget for every host.
//! This module holds the values and the arithmetic; the stores keep the
//! row, and `crate::budgets` sits between steps' requests and the store.

use super::{Origin, Timestamp};
use serde::{Deserialize, Serialize};
use std::time::Duration;
use utoipa::ToSchema;

/// Longest budget name.
pub const MAX_BUDGET_NAME: usize = 64;
/// Most origins one budget covers.
pub const MAX_BUDGET_ORIGINS: usize = 16;

/// `PUT /v1/budgets/{name}` body.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct BudgetRequest {
    /// Origins in the form grants use (`https://api.example.com`,
    /// `https://*.example.com`).
    #[schema(value_type = Vec<String>)]
    pub origins: Vec<Origin>,
    /// Requests per `per`.
    pub rate: u32,
    /// The period of `rate`, e.g. `1s`, `1m` (default `1s`).
    #[serde(default)]
    pub per: Option<String>,
    /// Requests that may go at once after a quiet spell (default 1).
    #[serde(default)]
    pub burst: Option<u32>,
}

/// A budget as stored and shown.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Budget {
    pub name: String,
    #[schema(value_type = Vec<String>)]
    pub origins: Vec<Origin>,
    pub rate: u32,
    /// The period of `rate`, as given (`1s`).
    pub per: String,
    #[serde(skip)]
    pub per_ms: u64,
    pub burst: u32,
    /// No request goes out before this (a `429`'s `Retry-After`, or a
    /// pause by hand).
    pub paused_until: Option<Timestamp>,
    pub created_at: Timestamp,
    pub updated_at: Timestamp,
}

/// `GET /v1/budgets/{name}`: the budget, its tokens now and who waits.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct BudgetStatus {
    #[serde(flatten)]
    pub budget: Budget,
    /// Requests that could go out now without waiting.
    pub tokens: u32,
    /// Steps' requests waiting for a token on the host that answers.
    pub waiting: u64,
}

impl Budget {
    /// Microseconds between two requests at the budget's rate.
    pub fn interval_us(&self) -> i64 {
        interval_us(self.per_ms, self.rate)
    }

    /// Tokens left at `now_us`, given the stored `tat_us`.
    pub fn tokens(&self, tat_us: i64, now_us: i64) -> u32 {
        let paused = self.paused_until.map_or(0, |t| t.millis() * 1000);
        if paused > now_us {
            return 0;
        }
        let ahead = (tat_us - now_us).max(0);
        let used = (ahead + self.interval_us() - 1) / self.interval_us();
        (i64::from(self.burst) - used).max(0) as u32
    }

    /// Whether this budget covers `origin`.
    pub fn covers(&self, origin: &Origin) -> bool {
        self.origins.iter().any(|o| o.allows(origin))
    }

    /// Whether this budget and `other` could both cover one origin.
    pub fn overlaps(&self, other: &Budget) -> Option<(Origin, Origin)> {
        self.origins.iter().find_map(|a| {
            other
                .origins
                .iter()
                .find(|b| a.allows(b) || b.allows(a) || a == *b)
                .map(|b| (a.clone(), b.clone()))
        })
    }
}

/// Microseconds between two requests at `rate` per `per_ms`.
pub fn interval_us(per_ms: u64, rate: u32) -> i64 {
    ((per_ms as i64 * 1000) / i64::from(rate.max(1))).max(1)
}

/// When a `Retry-After` value (seconds, or an HTTP date) says to come
/// back, from `now`; `None` when it says neither.
pub fn retry_after(value: &str, now: Timestamp) -> Option<Timestamp> {
    let value = value.trim();
    if let Ok(seconds) = value.parse::<u64>() {
        return Some(now.plus(Duration::from_secs(seconds.min(86_400))));
    }
    let at = chrono::DateTime::parse_from_rfc2822(value).ok()?;
    Some(Timestamp(at.timestamp_millis().max(now.millis())))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn budget(rate: u32, per_ms: u64, burst: u32) -> Budget {
        Budget {
            name: "do".into(),
            origins: vec!["https://api.example.com".parse().unwrap()],
            rate,
            per: "1s".into(),
            per_ms,
            burst,
            paused_until: None,
            created_at: Timestamp(0),
            updated_at: Timestamp(0),
        }
    }

    #[test]
    fn tokens_refill_at_the_rate_up_to_the_burst() {
        let b = budget(5, 1000, 10);
        assert_eq!(b.interval_us(), 200_000);
        assert_eq!(b.tokens(0, 1_000_000), 10, "a quiet budget has its burst");
        // Ten taken at t=1s: tat = 1s + 10 × 200 ms.
        assert_eq!(b.tokens(3_000_000, 1_000_000), 0);
        assert_eq!(
            b.tokens(3_000_000, 1_400_000),
            2,
            "two refilled 400 ms later"
        );
        let mut paused = b.clone();
        paused.paused_until = Some(Timestamp(2_000));
        assert_eq!(paused.tokens(0, 1_000_000), 0, "a paused budget has none");
    }

    #[test]
    fn retry_after_takes_seconds_or_an_http_date() {
        let now = Timestamp(1_000_000);
        assert_eq!(retry_after("2", now), Some(Timestamp(1_002_000)));
        let date = retry_after("Thu, 01 Jan 1970 00:20:00 GMT", now).unwrap();
        assert_eq!(date, Timestamp(1_200_000));
        assert_eq!(retry_after("soon", now), None);
    }

    #[test]
    fn wildcards_overlap_their_subdomains() {
        let mut a = budget(1, 1000, 1);
        let mut b = budget(1, 1000, 1);
        a.origins = vec!["https://*.example.com".parse().unwrap()];
        b.origins = vec!["https://api.example.com".parse().unwrap()];
        assert!(a.overlaps(&b).is_some());
        b.origins = vec!["https://api.example.org".parse().unwrap()];
        assert!(a.overlaps(&b).is_none());
    }
}
