//! Live events: what changed in which saga, as it happens, for the SSE
//! routes (`/v1/sagas/{id}/events`, `/v1/events`), `saga watch` and the
//! console.
//!
//! The runner publishes every change it writes (a `step` event per ledger
//! row written, then a `saga` event when the saga row's status, flags or
//! actions changed) to this host's [`EventHub`], right after the commit. On
//! PostgreSQL every transition also sends a notice (`saga id`, `version`)
//! to the other hosts; a host with subscribers reads that saga once and
//! publishes what differs from what it last published, so a saga's events
//! reach every host whichever host runs it.
//!
//! The hub is two bounded broadcast buffers (every event, for one saga's
//! streams, whose `saga` events carry the saga without its ledger; `saga`
//! events only, for `/v1/events`, carrying the saga's summary as
//! `GET /v1/sagas` lists it, whose subscribers are then not woken for each
//! ledger row and do not receive plans, inputs and contexts they do not
//! show). Each event is framed once, when it is published, and the same
//! bytes go to every subscriber. A subscriber sees every change (nothing is
//! coalesced); one that falls more than
//! its capacity behind is told it lagged (its stream then ends with an
//! error event and the client reconnects for a fresh snapshot), so a slow
//! client never grows memory. With no subscriber, publishing costs an
//! atomic load.

use crate::model::{SagaDetail, SagaId, SagaRun, SagaStatus, StepResult};
use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use tokio::sync::broadcast;

/// Sagas whose last published state a host remembers (to tell what a
/// notice from another host changed).
const REMEMBERED_SAGAS: usize = 10_000;

/// One change, serialized once for every subscriber.
#[derive(Debug, Clone)]
pub struct Event {
    /// Order of publication on this host (the SSE `id`).
    pub seq: u64,
    pub saga_id: SagaId,
    /// `saga` (the saga row changed: data is the saga without its ledger
    /// on a saga's stream, its summary on `/v1/events`) or `step` (a
    /// ledger row was written: data is the row).
    pub name: &'static str,
    /// The whole SSE frame (`event`, `id`, `data` lines), made once and
    /// shared by every subscriber.
    pub frame: bytes::Bytes,
    /// For a `saga` event: its status and kind (the filters of
    /// `/v1/events`).
    pub status: Option<SagaStatus>,
    pub kind: Option<Arc<str>>,
}

impl Event {
    /// A `saga` event whose status is final: the saga's last.
    pub fn is_final(&self) -> bool {
        self.status.is_some_and(SagaStatus::is_final)
    }
}

/// One SSE frame: `event: NAME`, `id: SEQ`, `data: JSON` (one line:
/// serde_json escapes newlines inside strings) and a blank line.
pub fn frame(name: &str, seq: u64, data: &impl serde::Serialize) -> bytes::Bytes {
    let mut out = format!("event: {name}\nid: {seq}\ndata: ").into_bytes();
    serde_json::to_writer(&mut out, data).expect("model types serialize");
    out.extend_from_slice(b"\n\n");
    out.into()
}

/// What a host last published of a saga.
#[derive(Default)]
struct Seen {
    version: u64,
    saga: u64,
    rows: HashMap<u32, u64>,
}

/// This host's events.
pub struct EventHub {
    /// Every event: what one saga's streams follow.
    all: broadcast::Sender<Event>,
    /// `saga` events only: what `/v1/events` follows (so its subscribers
    /// are not woken for every ledger row).
    sagas: broadcast::Sender<Event>,
    seq: AtomicU64,
    seen: Mutex<HashMap<SagaId, Seen>>,
    /// Other hosts share the database: what this host publishes is
    /// remembered in full, so a notice of the same change (a request
    /// written here, heard back from the database) repeats nothing.
    shared: std::sync::atomic::AtomicBool,
}

fn digest(value: &impl serde::Serialize) -> u64 {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    serde_json::to_string(value)
        .expect("model types serialize")
        .hash(&mut h);
    h.finish()
}

/// The parts of a saga row a `saga` event is about.
fn saga_digest(saga: &SagaRun) -> u64 {
    digest(&(
        saga.status,
        saga.cancel_requested,
        saga.pause_requested,
        &saga.actions,
        &saga.error,
    ))
}

impl EventHub {
    pub fn new(capacity: usize) -> EventHub {
        EventHub {
            all: broadcast::channel(capacity.max(1)).0,
            sagas: broadcast::channel(capacity.max(1)).0,
            seq: AtomicU64::new(0),
            seen: Mutex::new(HashMap::new()),
            shared: std::sync::atomic::AtomicBool::new(false),
        }
    }

    /// Every event (to follow one saga).
    pub fn subscribe(&self) -> broadcast::Receiver<Event> {
        self.all.subscribe()
    }

    /// `saga` events only (to follow every saga's status).
    pub fn subscribe_sagas(&self) -> broadcast::Receiver<Event> {
        self.sagas.subscribe()
    }

    /// Other hosts share the database (their changes arrive as notices).
    pub fn set_shared(&self, shared: bool) {
        self.shared.store(shared, Ordering::Relaxed);
    }

    /// How many subscribers there are now.
    pub fn subscribers(&self) -> usize {
        self.all.receiver_count() + self.sagas.receiver_count()
    }

    /// Whether anyone listens (publishing is skipped when not).
    pub fn has_subscribers(&self) -> bool {
        self.all.receiver_count() > 0 || self.sagas.receiver_count() > 0
    }

    fn next_seq(&self) -> u64 {
        self.seq.fetch_add(1, Ordering::Relaxed) + 1
    }

    fn send_saga(&self, saga: &SagaRun) {
        let seq = self.next_seq();
        let event = |frame| Event {
            seq,
            saga_id: saga.id,
            name: "saga",
            frame,
            status: Some(saga.status),
            kind: Some(saga.kind.as_str().into()),
        };
        if self.sagas.receiver_count() > 0 {
            let _ = self.sagas.send(event(frame("saga", seq, &saga.summary())));
        }
        if self.all.receiver_count() > 0 {
            let _ = self.all.send(event(frame("saga", seq, saga)));
        }
    }

    fn send_step(&self, saga_id: SagaId, row: &StepResult) {
        if self.all.receiver_count() == 0 {
            return;
        }
        let seq = self.next_seq();
        let _ = self.all.send(Event {
            seq,
            saga_id,
            name: "step",
            frame: frame("step", seq, row),
            status: None,
            kind: None,
        });
    }

    /// Publishes a change this host wrote: the saga as it now is (sent as
    /// a `saga` event when `saga_changed`), and the ledger rows written.
    pub fn publish(&self, saga: &SagaRun, saga_changed: bool, rows: &[StepResult]) {
        if !self.has_subscribers() {
            return;
        }
        {
            // The version (a notice of this change is then no news), and
            // where other hosts write too, what was published.
            let mut seen = self.seen.lock().expect("seen lock");
            if seen.len() >= REMEMBERED_SAGAS && !seen.contains_key(&saga.id) {
                seen.clear();
            }
            let entry = seen.entry(saga.id).or_default();
            entry.version = entry.version.max(saga.version);
            if self.shared.load(Ordering::Relaxed) {
                entry.saga = saga_digest(saga);
                for row in rows {
                    entry.rows.insert(row.index, digest(row));
                }
            }
        }
        // Rows first: a final saga event ends a saga's stream.
        for row in rows {
            self.send_step(saga.id, row);
        }
        if saga_changed {
            self.send_saga(saga);
        }
    }

    /// Whether a notice of `version` of `id` (from another host) may hold
    /// something not yet published here.
    pub fn is_news(&self, id: SagaId, version: u64) -> bool {
        self.has_subscribers()
            && self
                .seen
                .lock()
                .expect("seen lock")
                .get(&id)
                .is_none_or(|s| s.version < version)
    }

    /// Publishes what another host changed: what differs in `detail` from
    /// what this host last published of it.
    pub fn publish_read(&self, detail: &SagaDetail) {
        let saga = &detail.saga;
        let (saga_changed, rows) = {
            let mut seen = self.seen.lock().expect("seen lock");
            let entry = seen.entry(saga.id).or_default();
            if entry.version >= saga.version {
                return;
            }
            entry.version = saga.version;
            let now = saga_digest(saga);
            let saga_changed = entry.saga != now;
            entry.saga = now;
            let mut rows = Vec::new();
            for row in &detail.steps {
                let now = digest(row);
                if entry.rows.insert(row.index, now) != Some(now) {
                    rows.push(row.clone());
                }
            }
            if saga.status.is_final() && saga.status != SagaStatus::Failed {
                seen.remove(&saga.id);
            }
            (saga_changed, rows)
        };
        for row in &rows {
            self.send_step(saga.id, row);
        }
        if saga_changed {
            self.send_saga(saga);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{SagaRun, Timestamp};

    /// A subscriber that stops reading holds no more than the buffer: past
    /// it, it is told how many events it missed (and the SSE route then
    /// ends its stream), while publishing never waits for it.
    #[test]
    fn a_subscriber_that_stops_reading_is_bounded() {
        let hub = EventHub::new(8);
        let mut slow = hub.subscribe();
        let saga = SagaRun::pending(
            "k",
            Vec::new(),
            serde_json::json!({}),
            None,
            None,
            Timestamp::now(),
        );
        for _ in 0..100 {
            hub.publish(&saga, true, &[]);
        }
        assert_eq!(hub.all.len(), 8, "the buffer holds at most its capacity");
        match slow.try_recv() {
            Err(broadcast::error::TryRecvError::Lagged(missed)) => assert_eq!(missed, 92),
            other => panic!("expected a lag, got {other:?}"),
        }
    }

    #[test]
    fn nothing_is_serialized_without_subscribers() {
        let hub = EventHub::new(8);
        let saga = SagaRun::pending(
            "k",
            Vec::new(),
            serde_json::json!({}),
            None,
            None,
            Timestamp::now(),
        );
        hub.publish(&saga, true, &[]);
        assert_eq!(hub.seq.load(Ordering::Relaxed), 0);
    }
}
