//! Time, injected: the runner reads "now" and sleeps for backoff only
//! through a [`Clock`], so tests drive backoff and lease expiry without
//! sleeping, and see exactly which delays the runner asked for.

use crate::model::Timestamp;
use futures::future::BoxFuture;
use std::sync::Mutex;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

/// The runner's source of time.
pub trait Clock: Send + Sync + 'static {
    fn now(&self) -> Timestamp;
    /// Waits `d` of this clock's time.
    fn sleep(&self, d: Duration) -> BoxFuture<'static, ()>;
}

/// Wall-clock time and tokio's timer.
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> Timestamp {
        Timestamp::now()
    }

    fn sleep(&self, d: Duration) -> BoxFuture<'static, ()> {
        Box::pin(tokio::time::sleep(d))
    }
}

/// Virtual time for tests: `sleep` returns at once after moving the clock
/// forward by the delay (and remembers the delay); `advance` moves it by
/// hand, e.g. past a lease's expiry.
#[derive(Debug)]
pub struct ManualClock {
    now_ms: AtomicI64,
    sleeps: Mutex<Vec<Duration>>,
}

impl ManualClock {
    pub fn new(start: Timestamp) -> ManualClock {
        ManualClock {
            now_ms: AtomicI64::new(start.millis()),
            sleeps: Mutex::new(Vec::new()),
        }
    }

    pub fn advance(&self, d: Duration) {
        self.now_ms
            .fetch_add(d.as_millis() as i64, Ordering::SeqCst);
    }

    /// Every delay the runner slept, in order.
    pub fn sleeps(&self) -> Vec<Duration> {
        self.sleeps.lock().expect("sleeps lock").clone()
    }
}

impl Clock for ManualClock {
    fn now(&self) -> Timestamp {
        Timestamp(self.now_ms.load(Ordering::SeqCst))
    }

    fn sleep(&self, d: Duration) -> BoxFuture<'static, ()> {
        self.sleeps.lock().expect("sleeps lock").push(d);
        self.advance(d);
        Box::pin(tokio::task::yield_now())
    }
}
