//! What a store knows of its disk filling up: when writes last failed for
//! want of space (what `/healthz` reports), and a signal for writers that
//! wait for room (they retry at once when a write succeeds again).
//!
//! On a nearly full disk small writes may succeed while larger ones fail,
//! so health does not flip back to ok at the first small success: it stays
//! degraded for a while after the last failure (`StoreConfig::degraded_for`,
//! 30 s by default: long enough for a monitor that scrapes every 15 s).

use std::sync::Mutex;
use std::time::{Duration, Instant};
use tokio::sync::Notify;

/// The store's record of writes failing for want of space.
#[derive(Debug)]
pub struct Space {
    /// How long health stays degraded after a failure.
    degraded_for: Duration,
    /// The last failure: why, when, and whether a write succeeded since.
    last_full: Mutex<Option<(String, Instant, bool)>>,
    recovered: Notify,
}

impl Space {
    pub fn new(degraded_for: Duration) -> Space {
        Space {
            degraded_for,
            last_full: Mutex::new(None),
            recovered: Notify::new(),
        }
    }

    /// A write failed for want of space.
    pub fn failed(&self, why: &str) {
        *self.last_full.lock().unwrap_or_else(|e| e.into_inner()) =
            Some((why.to_string(), Instant::now(), false));
    }

    /// A write succeeded: writers waiting for room retry now.
    pub fn succeeded(&self) {
        let mut last = self.last_full.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((_, _, recovered)) = last.as_mut()
            && !*recovered
        {
            *recovered = true;
            tracing::info!("writes succeed again after the disk was full");
            self.recovered.notify_waiters();
        }
    }

    /// Why the store is degraded, if writes failed for want of space
    /// lately.
    pub fn degraded(&self) -> Option<String> {
        let last = self.last_full.lock().unwrap_or_else(|e| e.into_inner());
        match &*last {
            Some((why, at, _)) if at.elapsed() < self.degraded_for => Some(format!(
                "writes failed for want of space {} s ago: {why}",
                at.elapsed().as_secs()
            )),
            _ => None,
        }
    }

    /// Resolves when a write succeeds after the last failure for want of
    /// space (at once if none is pending).
    pub async fn writable(&self) {
        let notified = self.recovered.notified();
        let waiting = self
            .last_full
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .as_ref()
            .is_some_and(|(_, _, recovered)| !recovered);
        if waiting {
            notified.await;
        }
    }
}
