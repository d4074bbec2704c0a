//! The saga runner: the only place that decides a saga's transitions. It
//! starts sagas (the API submits them), claims ready ones under a lease,
//! drives each through its state machine (execute, retry, wait, compensate,
//! cancel, pause), applies the human actions (cancel, pause, resume, retry,
//! resolve), and resumes what a crashed or departed host left.
//!
//! One runner per host. Its claim loop claims at most as many ready sagas
//! as it has free driving slots, whenever it is woken (a saga was started
//! or released, a slot freed up, a wait ended) or the poll interval passes.
//! A claim only takes a lease: the driver decides what the saga does next,
//! so a running mark this host writes is always followed by its call. A
//! renewal loop extends the leases it
//! holds and learns from the store about requests (cancel, pause) sent to
//! other hosts; a host that stops renewing (it crashed, or lost the
//! database) loses its sagas to the others, which resume them exactly as
//! after a restart. The state machine itself, one saga at a time, is in
//! `saga`; every change it makes goes to the store as one transaction
//! fenced by the lease's fencing number and the saga's version. Drivers run
//! on the plugin runtime's threads (where there are some), so that a step's
//! call needs no hand-off between threads.
//!
//! A watchdog rides the renewal loop: a call that has not returned by its
//! deadline plus `call_grace` is one its own timeout could not end (the
//! thread running it is stuck outside the call: a blocking syscall, a
//! runaway host task). Its lease is then given up, not renewed, and the
//! call counted (`wasaga_calls_abandoned_total`): another host, or this one
//! at its next claim, takes the saga over as after a crash, with the next
//! attempt. Whatever the stuck call does if it ever returns is fenced off.
//!
//! A saga whose step waits (`poll-after`) or that is paused holds no slot,
//! lease or instance: its row says when it is ready again, and a timer here
//! wakes the claim loop then (other hosts find it at their next poll).
//!
//! With a retention period, a loop deletes sagas long ended (`retention`).
//!
//! Shutdown is graceful: claiming stops, steps in flight get a grace period
//! to finish (their results are recorded), then they are interrupted and
//! every lease is released, so another host (or this one, restarted) takes
//! over at once.

mod actions;
pub mod clock;
mod decide;
pub mod drift;
mod redrive;
mod retention;
mod saga;
mod schedules;
mod start;
pub mod waits;

pub use actions::{ActionError, Permit, permits};
pub use clock::{Clock, ManualClock, SystemClock};
pub use start::StartError;

use crate::config::{RetryPolicy, RunnerConfig};
use crate::events::EventHub;
use crate::grants::AccessBook;
use crate::model::{SagaId, SagaRun, SagaStatus, StepStatus, Timestamp};
use crate::plugin::PluginHost;
use crate::store::{ClaimedSaga, Lease, Notice, Store, Taken, Transition};
use crate::telemetry::Telemetry;
use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore, broadcast};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// The runner of one host. Cheap to clone; clones share everything.
#[derive(Clone)]
pub struct Runner {
    inner: Arc<RunnerInner>,
}

struct RunnerInner {
    store: Arc<dyn Store>,
    plugins: PluginHost,
    /// What each plugin may reach (grants, secrets).
    access: Arc<AccessBook>,
    config: RunnerConfig,
    clock: Arc<dyn Clock>,
    /// This host's identity in leases.
    owner: Arc<str>,
    active: Mutex<HashMap<SagaId, Arc<ActiveSaga>>>,
    slots: Arc<Semaphore>,
    wake: Notify,
    /// Sagas may be waiting for a slot: work was announced, or the last
    /// claim filled every slot. Only then does a slot that frees up wake
    /// the claim loop; otherwise every saga's end would cost a claim, a
    /// write transaction that finds nothing.
    backlog: AtomicBool,
    /// Set at shutdown: claim nothing more, start no further step.
    draining: AtomicBool,
    /// Cancelled to stop every driver (the end of the shutdown grace).
    stop_all: CancellationToken,
    drivers: TaskTracker,
    loops: TaskTracker,
    /// When parked sagas (waiting, or resumed) become ready: the timer
    /// loop wakes the claim loop then.
    wakeups: Mutex<BinaryHeap<Reverse<Timestamp>>>,
    wakeup_added: Notify,
    events: broadcast::Sender<SagaEnded>,
    /// Live events for subscribers (SSE, the console).
    hub: Arc<EventHub>,
    /// Woken when a transition wrote webhook deliveries.
    outbox_written: Arc<Notify>,
    /// What makes waits' capability URLs, for the `step` events of waits
    /// opening (set once at start, on a host with a secrets key).
    callback_urls: std::sync::OnceLock<Arc<crate::callbacks::CallbackUrls>>,
    /// Spans of calls and sagas (`--otlp-endpoint`).
    telemetry: Arc<Telemetry>,
    /// Calls the watchdog gave up that have not returned yet: each holds a
    /// Wasm thread, so a host with as many as it has threads claims
    /// nothing (its drivers could not start).
    stuck_calls: Arc<AtomicUsize>,
}

/// A saga this host drove reached a final status.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SagaEnded {
    pub id: SagaId,
    pub status: SagaStatus,
}

/// A saga this host is driving.
struct ActiveSaga {
    /// Fires when this host must stop working on the saga at once (lease
    /// lost, shutdown grace over). The parent of `cancel`.
    stop: CancellationToken,
    /// Fires on a user's cancel (or on `stop`): interrupts `execute`.
    cancel: CancellationToken,
    /// A request (cancel or pause) was recorded: cuts a backoff short so
    /// the driver reads it.
    nudge: Notify,
    lease_lost: AtomicBool,
    /// The fencing number of this host's current claim of the saga (a
    /// re-claim after the lease expired, by this host, bumps it).
    epoch: AtomicU64,
    /// While a call runs: the instant past which the watchdog gives it up
    /// (its deadline plus `call_grace`), and whether it gave it up.
    call_deadline: Mutex<CallDeadline>,
    /// The runner's count of stuck calls, which this saga's call is part
    /// of while it is given up and has not returned.
    stuck_calls: Arc<AtomicUsize>,
}

/// The watchdog's view of a saga's call in flight.
#[derive(Default)]
struct CallDeadline {
    give_up_at: Option<Instant>,
    given_up: bool,
}

/// Marks a call in flight for the watchdog until dropped.
struct CallWatch<'a>(&'a ActiveSaga);

impl ActiveSaga {
    fn watch_call(&self, give_up_at: Instant) -> CallWatch<'_> {
        self.call_deadline
            .lock()
            .expect("call deadline lock")
            .give_up_at = Some(give_up_at);
        CallWatch(self)
    }

    /// Whether its call in flight has passed the watchdog's limit.
    fn stuck(&self, now: Instant) -> bool {
        self.call_deadline
            .lock()
            .expect("call deadline lock")
            .give_up_at
            .is_some_and(|at| at <= now)
    }

    /// The watchdog gives its call in flight up: counted among the stuck
    /// calls until it returns (if it is still in flight).
    fn give_up_call(&self) {
        let mut deadline = self.call_deadline.lock().expect("call deadline lock");
        if deadline.give_up_at.is_some() && !deadline.given_up {
            deadline.given_up = true;
            self.stuck_calls.fetch_add(1, Ordering::SeqCst);
            crate::metrics::global().calls_stuck.inc();
        }
    }
}

impl Drop for CallWatch<'_> {
    fn drop(&mut self) {
        let mut deadline = self.0.call_deadline.lock().expect("call deadline lock");
        deadline.give_up_at = None;
        if std::mem::take(&mut deadline.given_up) {
            // The stuck call returned: its thread is free again.
            self.0.stuck_calls.fetch_sub(1, Ordering::SeqCst);
            crate::metrics::global().calls_stuck.dec();
        }
    }
}

impl Runner {
    /// A runner whose plugins reach what their grants say, with no secrets
    /// key (granted secrets count as missing).
    pub fn new(
        store: Arc<dyn Store>,
        plugins: PluginHost,
        config: RunnerConfig,
        clock: Arc<dyn Clock>,
    ) -> Runner {
        let access = Arc::new(AccessBook::new(store.clone(), None));
        Runner::with_access(store, plugins, config, clock, access)
    }

    /// [`Runner::new`], with the access book (and its secrets key).
    pub fn with_access(
        store: Arc<dyn Store>,
        plugins: PluginHost,
        config: RunnerConfig,
        clock: Arc<dyn Clock>,
        access: Arc<AccessBook>,
    ) -> Runner {
        Runner::with_parts(
            store,
            plugins,
            config,
            clock,
            access,
            Arc::new(Telemetry::default()),
        )
    }

    /// [`Runner::with_access`], with the host's tracing.
    pub fn with_parts(
        store: Arc<dyn Store>,
        plugins: PluginHost,
        config: RunnerConfig,
        clock: Arc<dyn Clock>,
        access: Arc<AccessBook>,
        telemetry: Arc<Telemetry>,
    ) -> Runner {
        let owner: Arc<str> = Arc::from(
            config
                .node_id
                .clone()
                .unwrap_or_else(|| format!("wasaga-{}", uuid::Uuid::now_v7().simple())),
        );
        let event_buffer = config.event_buffer;
        Runner {
            inner: Arc::new(RunnerInner {
                slots: Arc::new(Semaphore::new(config.concurrency.max(1))),
                store,
                plugins,
                access,
                config,
                clock,
                owner,
                active: Mutex::new(HashMap::new()),
                wake: Notify::new(),
                backlog: AtomicBool::new(true),
                draining: AtomicBool::new(false),
                stop_all: CancellationToken::new(),
                drivers: TaskTracker::new(),
                loops: TaskTracker::new(),
                wakeups: Mutex::new(BinaryHeap::new()),
                wakeup_added: Notify::new(),
                events: broadcast::channel(1024).0,
                hub: Arc::new(EventHub::new(event_buffer)),
                outbox_written: Arc::new(Notify::new()),
                callback_urls: std::sync::OnceLock::new(),
                telemetry,
                stuck_calls: Arc::new(AtomicUsize::new(0)),
            }),
        }
    }

    /// This host's identity in leases.
    pub fn owner(&self) -> &str {
        &self.inner.owner
    }

    /// Now, by the runner's clock.
    pub fn now(&self) -> Timestamp {
        self.inner.clock.now()
    }

    /// The store this runner writes through.
    pub fn store(&self) -> &Arc<dyn Store> {
        &self.inner.store
    }

    /// This host's live events.
    pub fn hub(&self) -> &Arc<EventHub> {
        &self.inner.hub
    }

    /// Makes the `step` events of waits opening carry their capability
    /// URLs (the first call counts).
    pub fn set_callback_urls(&self, urls: Arc<crate::callbacks::CallbackUrls>) {
        let _ = self.inner.callback_urls.set(urls);
    }

    /// Woken when this host wrote webhook deliveries (for the deliverer).
    pub fn outbox_written(&self) -> Arc<Notify> {
        self.inner.outbox_written.clone()
    }

    /// What each plugin may reach.
    pub fn access(&self) -> &Arc<AccessBook> {
        &self.inner.access
    }

    /// Starts the claim, lease-renewal, notice and wake-up loops.
    pub fn start(&self) {
        let claim = self.clone();
        self.inner
            .loops
            .spawn(async move { claim.claim_loop().await });
        let renew = self.clone();
        self.inner
            .loops
            .spawn(async move { renew.renew_loop().await });
        let listen = self.clone();
        self.inner
            .loops
            .spawn(async move { listen.notice_loop().await });
        let timer = self.clone();
        self.inner
            .loops
            .spawn(async move { timer.wakeup_loop().await });
        if let Some(every) = self.inner.config.drift_scan_every {
            let scan = self.clone();
            self.inner
                .loops
                .spawn(async move { scan.drift_scan_loop(every).await });
        }
        if self.inner.config.retention.is_some() {
            let retention = self.clone();
            self.inner
                .loops
                .spawn(async move { retention.retention_loop().await });
        }
    }

    /// Wakes on other hosts' notices (new work, requests) where the store
    /// has them; the poll in `claim_loop` is only the fallback.
    async fn notice_loop(&self) {
        use futures::StreamExt;
        let inner = &self.inner;
        let mut notices = match inner.store.notices().await {
            Ok(Some(notices)) => {
                inner.hub.set_shared(true);
                notices
            }
            Ok(None) => return,
            Err(e) => {
                tracing::warn!(error = %e, "cannot listen for notices; polling only");
                return;
            }
        };
        loop {
            tokio::select! {
                notice = notices.next() => match notice {
                    Some(Notice::Work) => self.wake(),
                    Some(Notice::AccessChanged) => inner.access.changed(),
                    Some(Notice::Reconnected) => {
                        inner.access.changed();
                        self.wake();
                    }
                    Some(Notice::Request { id, cancel }) => self.notify_request(id, cancel),
                    // This host published its own writes already.
                    Some(Notice::Changed { id, version, origin }) => {
                        if *origin != *inner.owner {
                            self.publish_remote(id, version);
                        }
                    }
                    None => return,
                },
                _ = inner.stop_all.cancelled() => return,
            }
        }
    }

    /// Another host changed saga `id` to `version`: if anyone here listens
    /// and has not seen it, read it and publish what changed.
    fn publish_remote(&self, id: SagaId, version: u64) {
        if !self.inner.hub.is_news(id, version) {
            return;
        }
        let runner = self.clone();
        tokio::spawn(async move {
            match runner.inner.store.saga(id).await {
                Ok(Some(mut detail)) => {
                    if let Some(urls) = runner.inner.callback_urls.get() {
                        urls.fill(&detail.saga, &mut detail.steps);
                    }
                    runner.inner.hub.publish_read(&detail)
                }
                Ok(None) => {}
                Err(e) => {
                    tracing::debug!(error = %e, saga = %id, "reading a saga another host changed")
                }
            }
        });
    }

    /// Work may be waiting (a saga was started, a lease released).
    pub fn wake(&self) {
        self.inner.backlog.store(true, Ordering::SeqCst);
        self.inner.wake.notify_one();
    }

    /// Wakes the claim loop at `at`, when a parked saga becomes ready.
    fn wake_at(&self, at: Timestamp) {
        if at <= self.inner.clock.now() {
            self.wake();
            return;
        }
        self.inner
            .wakeups
            .lock()
            .expect("wakeups lock")
            .push(Reverse(at));
        self.inner.wakeup_added.notify_one();
    }

    /// Sleeps until the earliest parked saga is ready, then wakes the
    /// claim loop (on real time: a parked saga waits for the world).
    async fn wakeup_loop(&self) {
        let inner = &self.inner;
        loop {
            let next = {
                let mut heap = inner.wakeups.lock().expect("wakeups lock");
                let now = inner.clock.now();
                let mut due = false;
                while heap.peek().is_some_and(|Reverse(at)| *at <= now) {
                    heap.pop();
                    due = true;
                }
                if due {
                    self.wake();
                }
                heap.peek().map(|Reverse(at)| now.until(*at))
            };
            let sleep = next.unwrap_or(Duration::from_secs(3600));
            tokio::select! {
                _ = tokio::time::sleep(sleep) => {}
                _ = inner.wakeup_added.notified() => {}
                _ = inner.stop_all.cancelled() => return,
            }
        }
    }

    /// A driving slot freed up: claim again if sagas may be waiting for one.
    fn slot_freed(&self) {
        if self.inner.backlog.load(Ordering::SeqCst) {
            self.inner.wake.notify_one();
        }
    }

    /// A request (cancel, pause) was recorded for `id`: interrupt its step
    /// in flight (a cancel) or cut its backoff short, if this host runs it.
    fn notify_request(&self, id: SagaId, cancel: bool) {
        if let Some(active) = self.inner.active.lock().expect("active lock").get(&id) {
            if cancel {
                active.cancel.cancel();
            }
            active.nudge.notify_one();
        }
        self.wake();
    }

    /// Every saga this host drives to its end, as it ends (for waiting
    /// clients and benchmarks; a slow subscriber misses events, never blocks).
    pub fn subscribe(&self) -> broadcast::Receiver<SagaEnded> {
        self.inner.events.subscribe()
    }

    /// A lease for this host, from now.
    fn lease(&self) -> Lease {
        Lease {
            owner: self.inner.owner.clone(),
            ttl: self.inner.config.lease_ttl,
            now: self.inner.clock.now(),
        }
    }

    /// Sagas this host is driving now.
    pub fn active_count(&self) -> usize {
        self.inner.active.lock().expect("active lock").len()
    }

    /// Stops claiming, lets steps in flight finish for up to `grace`, then
    /// interrupts the rest and releases every lease.
    pub async fn shutdown(&self, grace: Duration) {
        let inner = &self.inner;
        inner.draining.store(true, Ordering::SeqCst);
        inner.wake.notify_waiters();
        inner.wake.notify_one();
        inner.drivers.close();
        if tokio::time::timeout(grace, inner.drivers.wait())
            .await
            .is_err()
        {
            tracing::warn!(
                grace_ms = grace.as_millis() as u64,
                "steps still running after the grace period; interrupting them"
            );
            inner.stop_all.cancel();
            inner.drivers.wait().await;
        }
        inner.stop_all.cancel();
        inner.loops.close();
        inner.loops.wait().await;
        let left: Vec<(SagaId, u64)> = inner
            .active
            .lock()
            .expect("active lock")
            .iter()
            .map(|(id, a)| (*id, a.epoch.load(Ordering::SeqCst)))
            .collect();
        if !left.is_empty()
            && let Err(e) = inner.store.release_leases(&inner.owner, &left).await
        {
            tracing::warn!(error = %e, "releasing leases at shutdown");
        }
    }

    async fn claim_loop(&self) {
        let inner = &self.inner;
        loop {
            if inner.draining.load(Ordering::SeqCst) {
                return;
            }
            let claimed_any = match self.claim_once().await {
                Ok(n) => n > 0,
                Err(e) => {
                    tracing::warn!(error = %e, "claiming sagas failed; retrying at the next poll");
                    false
                }
            };
            if claimed_any && inner.slots.available_permits() > 0 {
                // There may be more: claim again before sleeping.
                continue;
            }
            tokio::select! {
                _ = inner.wake.notified() => {}
                _ = tokio::time::sleep(inner.config.poll_every) => {}
                _ = inner.stop_all.cancelled() => return,
            }
        }
    }

    /// Claims at most as many sagas as there are free slots and drives
    /// each in a slot of its own. A claim only takes the lease (it marks
    /// nothing running), so a saga claimed when a start took the last slot
    /// meanwhile is simply given back.
    async fn claim_once(&self) -> Result<usize, crate::store::StoreError> {
        let inner = &self.inner;
        let free = inner.slots.available_permits();
        if free == 0 {
            inner.backlog.store(true, Ordering::SeqCst);
            return Ok(0);
        }
        let threads = inner.plugins.config().wasm_threads;
        let stuck = inner.stuck_calls.load(Ordering::SeqCst);
        if threads > 0 && stuck >= threads {
            // Every Wasm thread holds a call the watchdog gave up: a saga
            // claimed now could not even start. Other hosts take the work.
            tracing::warn!(
                stuck,
                threads,
                "every Wasm thread is stuck in a call; claiming nothing"
            );
            inner.backlog.store(true, Ordering::SeqCst);
            return Ok(0);
        }
        let claimed = inner.store.claim_sagas(&self.lease(), free).await?;
        // Fewer than asked for: none were left waiting. A `wake` racing
        // with this leaves the loop a notification, so its work is claimed.
        inner.backlog.store(claimed.len() >= free, Ordering::SeqCst);
        let mut started = 0;
        let mut overflow = Vec::new();
        for claim in claimed {
            // A call in flight (marked, not waiting) whose host is gone.
            let cut_short = claim.ledger.iter().any(|r| {
                matches!(r.status, StepStatus::Running | StepStatus::Compensating)
                    && r.waiting_until.is_none()
                    && r.finished_at.is_none()
            });
            if cut_short {
                crate::metrics::global().lease_takeovers.inc();
            }
            let Ok(permit) = inner.slots.clone().try_acquire_owned() else {
                overflow.push((claim.saga.id, claim.epoch));
                continue;
            };
            if self.drive(claim, permit, None) {
                started += 1;
            }
        }
        if !overflow.is_empty() {
            inner.backlog.store(true, Ordering::SeqCst);
            inner.store.release_leases(&inner.owner, &overflow).await?;
        }
        Ok(started)
    }

    /// Starts driving a claimed saga in its slot; false when this host is
    /// already driving it (the claim only renewed its lease, under a new
    /// fencing number the driver takes up). `marked` is the step this host
    /// marked running for it and has not called yet.
    fn drive(
        &self,
        claim: ClaimedSaga,
        permit: OwnedSemaphorePermit,
        marked: Option<saga::Marked>,
    ) -> bool {
        let inner = &self.inner;
        let id = claim.saga.id;
        let active = {
            let mut map = inner.active.lock().expect("active lock");
            if let Some(active) = map.get(&id) {
                active.epoch.store(claim.epoch, Ordering::SeqCst);
                return false;
            }
            let stop = inner.stop_all.child_token();
            let active = Arc::new(ActiveSaga {
                cancel: stop.child_token(),
                stop,
                nudge: Notify::new(),
                lease_lost: AtomicBool::new(false),
                epoch: AtomicU64::new(claim.epoch),
                call_deadline: Mutex::new(CallDeadline::default()),
                stuck_calls: inner.stuck_calls.clone(),
            });
            map.insert(id, active.clone());
            active
        };
        let runner = self.clone();
        let driver = async move {
            let mut successor = None;
            match saga::drive(&runner, claim, &active, marked).await {
                saga::Ended::Final(status, next) => {
                    let _ = runner.inner.events.send(SagaEnded { id, status });
                    successor = next;
                }
                saga::Ended::Parked(Some(at)) => runner.wake_at(at),
                saga::Ended::Parked(None) | saga::Ended::Halted => {}
            }
            {
                // Unless the watchdog gave it up and another drive of the
                // saga took its place.
                let mut map = runner.inner.active.lock().expect("active lock");
                if map.get(&id).is_some_and(|a| Arc::ptr_eq(a, &active)) {
                    map.remove(&id);
                }
            }
            match successor {
                // Its keys' next saga, claimed in its last commit, drives
                // on in its slot.
                Some(next) => {
                    runner.drive_taken(*next, permit);
                }
                None => {
                    drop(permit);
                    runner.slot_freed();
                }
            }
        };
        // On the Wasm threads where there are some: the saga's calls then
        // run in place, and its commits may too.
        match inner.plugins.runtime() {
            Some(rt) => inner.drivers.spawn_on(driver, rt),
            None => inner.drivers.spawn(driver),
        };
        true
    }

    /// Drives a saga that a release admitted and claimed for this host
    /// ([`crate::store::TakeOver`]), from the step marked for it there.
    fn drive_taken(&self, taken: Taken, permit: OwnedSemaphorePermit) {
        let marked = taken.marked.then(saga::Marked::first);
        self.inner
            .hub
            .publish(&taken.claim.saga, taken.marked, &taken.claim.ledger);
        self.drive(taken.claim, permit, marked);
    }

    async fn renew_loop(&self) {
        let inner = &self.inner;
        loop {
            tokio::select! {
                _ = tokio::time::sleep(inner.config.lease_renew_every) => {}
                _ = inner.stop_all.cancelled() => return,
            }
            let abandoned: Vec<(SagaId, Arc<ActiveSaga>)> = {
                let mut map = inner.active.lock().expect("active lock");
                let now = Instant::now();
                let stuck: Vec<SagaId> = map
                    .iter()
                    .filter(|(_, a)| a.stuck(now))
                    .map(|(id, _)| *id)
                    .collect();
                stuck
                    .into_iter()
                    .filter_map(|id| map.remove(&id).map(|a| (id, a)))
                    .collect()
            };
            self.abandon(&abandoned).await;
            let held: Vec<(SagaId, Arc<ActiveSaga>)> = inner
                .active
                .lock()
                .expect("active lock")
                .iter()
                .map(|(id, a)| (*id, a.clone()))
                .collect();
            if held.is_empty() {
                continue;
            }
            let leases: Vec<(SagaId, u64)> = held
                .iter()
                .map(|(id, a)| (*id, a.epoch.load(Ordering::SeqCst)))
                .collect();
            match inner
                .store
                .renew_leases(
                    &inner.owner,
                    &leases,
                    inner.config.lease_ttl,
                    inner.clock.now(),
                )
                .await
            {
                Ok(states) => {
                    for state in states {
                        let Some((_, active)) = held.iter().find(|(id, _)| *id == state.saga_id)
                        else {
                            continue;
                        };
                        if !state.held {
                            tracing::warn!(saga = %state.saga_id, "lease lost to another host; stopping work on it");
                            active.lease_lost.store(true, Ordering::SeqCst);
                            active.stop.cancel();
                        } else if state.cancel_requested {
                            active.cancel.cancel();
                            active.nudge.notify_one();
                        } else if state.pause_requested {
                            active.nudge.notify_one();
                        }
                    }
                }
                Err(e) => tracing::warn!(error = %e, "renewing leases failed"),
            }
        }
    }
}

impl Runner {
    /// The watchdog's verdict on calls past their deadline and grace: stop
    /// working on their sagas here (the stuck call's writes, if it ever
    /// returns, are fenced off) and release their leases, so a claim (on any
    /// host) takes them over with the next attempt.
    async fn abandon(&self, stuck: &[(SagaId, Arc<ActiveSaga>)]) {
        if stuck.is_empty() {
            return;
        }
        let inner = &self.inner;
        for (id, active) in stuck {
            tracing::error!(
                saga = %id,
                grace = ?inner.config.call_grace,
                "a call passed its deadline and grace without returning (its thread is stuck \
                 outside it); giving up the saga's lease so it is taken over"
            );
            crate::metrics::global().calls_abandoned.inc();
            active.give_up_call();
            active.lease_lost.store(true, Ordering::SeqCst);
            active.stop.cancel();
        }
        let leases: Vec<(SagaId, u64)> = stuck
            .iter()
            .map(|(id, a)| (*id, a.epoch.load(Ordering::SeqCst)))
            .collect();
        if let Err(e) = inner.store.release_leases(&inner.owner, &leases).await {
            // They expire unrenewed instead.
            tracing::warn!(error = %e, "releasing abandoned leases failed");
        }
        self.wake();
    }
}

impl RetryPolicy {
    /// The delay before attempt `next_attempt` (2 for the first retry):
    /// exponential, capped, with ±`jitter` spread so that sagas failing
    /// together do not retry together.
    pub fn backoff(&self, next_attempt: u32) -> Duration {
        let exponent = next_attempt.saturating_sub(2).min(62) as i32;
        let base = self.initial_backoff.as_secs_f64() * self.multiplier.powi(exponent);
        let capped = base.min(self.max_backoff.as_secs_f64());
        let spread = if self.jitter > 0.0 {
            1.0 + self.jitter * (rand::random::<f64>() * 2.0 - 1.0)
        } else {
            1.0
        };
        Duration::from_secs_f64((capped * spread).max(0.0))
    }
}

impl Runner {
    /// After a transition was written (`saga` is the saga it left): its
    /// live events, and the count of sagas that ended. Every writer of
    /// transitions (the driver, the actions) comes through here.
    fn written(&self, saga: &SagaRun, t: &Transition) {
        let u = &t.saga;
        let saga_changed = u.status.is_some()
            || u.actions.is_some()
            || u.cancel_requested.is_some()
            || u.pause_requested.is_some();
        match self.inner.callback_urls.get() {
            Some(urls) if t.steps.iter().any(crate::callbacks::is_open_wait) => {
                let mut rows = t.steps.clone();
                urls.fill(saga, &mut rows);
                self.inner.hub.publish(saga, saga_changed, &rows);
            }
            _ => self.inner.hub.publish(saga, saga_changed, &t.steps),
        }
        if !t.outbox.is_empty() {
            self.inner.outbox_written.notify_one();
        }
        if let Some(status) = u.status.filter(|s| s.is_final()) {
            crate::metrics::global().finished(&saga.kind, status.as_str());
            self.inner.telemetry.saga_ended(saga, status);
        }
    }
}

/// The webhook events `t` causes when written to `saga` (as it was read):
/// one when the saga reaches a status endpoints subscribe to, carrying the
/// saga's summary as `t` leaves it. Every writer of transitions puts them
/// on the transition, so the store writes them in its transaction.
pub(super) fn stamp_outbox(saga: &SagaRun, t: &mut Transition) {
    let Some(event) = t
        .saga
        .status
        .filter(|s| *s != saga.status)
        .and_then(crate::model::WebhookEvent::of_status)
    else {
        return;
    };
    let mut after = saga.clone();
    t.apply_to_saga(&mut after, saga.version + 1);
    t.outbox
        .push(crate::webhooks::saga_event(event, &after.summary(), t.now));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_exponentially_within_its_jitter_and_cap() {
        let policy = RetryPolicy {
            initial_backoff: Duration::from_millis(100),
            multiplier: 2.0,
            max_backoff: Duration::from_millis(1000),
            jitter: 0.2,
            ..RetryPolicy::default()
        };
        for _ in 0..200 {
            for (attempt, expected_ms) in [
                (2, 100.0),
                (3, 200.0),
                (4, 400.0),
                (5, 800.0),
                (6, 1000.0),
                (30, 1000.0),
            ] {
                let ms = policy.backoff(attempt).as_secs_f64() * 1000.0;
                assert!(
                    (expected_ms * 0.8 - 1e-6..=expected_ms * 1.2 + 1e-6).contains(&ms),
                    "attempt {attempt}: {ms} ms, expected {expected_ms} ± 20 %"
                );
            }
        }
        let exact = RetryPolicy {
            jitter: 0.0,
            ..policy
        };
        assert_eq!(exact.backoff(3), Duration::from_millis(200));
    }
}
