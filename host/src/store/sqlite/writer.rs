//! The SQLite writer: one thread that owns the only writing connection and
//! commits every write of the process, in groups.
//!
//! SQLite allows one writer at a time, and a commit with `synchronous=FULL`
//! costs an fsync. The thread takes whatever writes are queued (up to
//! [`MAX_BATCH`]), runs each in its own savepoint inside one transaction,
//! commits once, and only then answers each caller: group commit, several
//! sagas' transitions for the price of one fsync, with every acknowledgement
//! still meaning "durable". A write that fails is rolled back to its
//! savepoint and answered with its error; the others of its batch commit. A
//! write alone in its batch (every write at low load) skips the savepoint,
//! two statements per commit: its failure rolls the transaction back.
//!
//! The thread calls SQLite directly (rusqlite, with cached prepared
//! statements) rather than through sqlx's async connection, whose every
//! statement is a round trip to a worker thread: the writer is the one
//! serial stage of the embedded store, so it does nothing but write.
//!
//! When nothing is queued and the connection is free, the caller commits
//! its write in place instead, on its own thread (`block_in_place` moves
//! that thread's other tasks elsewhere meanwhile): at low load a write then
//! costs its fsync and nothing more, where the hand-off to the writer thread
//! and back costs two thread wake-ups, which on a virtual machine are each
//! worth a good part of an fsync. Under load the queue is rarely empty, so
//! writes still share commits.

use super::super::space::Space;
use super::super::{StoreError, StoreResult};
use rusqlite::Connection;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use tokio::sync::{mpsc, oneshot};

/// Most writes committed in one transaction.
pub(super) const MAX_BATCH: usize = 512;

/// Why a batch did not commit.
#[derive(Debug, Clone)]
enum CommitFailure {
    /// The disk (or the database's page limit) is full.
    Full(String),
    Other(String),
}

/// What a job does once its batch's commit is known: answer its caller.
type Answer = Box<dyn FnOnce(Result<(), CommitFailure>) + Send>;

/// One queued write: runs its statements inside the batch's transaction and
/// returns how to answer its caller, and whether the transaction may still
/// commit. Among others it runs in its own savepoint, rolled back if it
/// fails; alone in its batch (the flag) it needs none, because its failure
/// rolls the whole transaction back. False when its writes could not be
/// undone in place: it failed alone, or its savepoint could not be rolled
/// back. Given no connection (the transaction could not begin), it runs
/// nothing.
type Job = Box<dyn FnOnce(Option<&Connection>, bool) -> (Answer, bool, bool) + Send>;

/// The handle the store writes through; the thread ends when it is dropped.
pub(super) struct Writer {
    jobs: mpsc::Sender<Job>,
    shared: Arc<Shared>,
}

/// What the writer thread and in-place writers share.
struct Shared {
    /// The writing connection: held for a whole batch, begin to commit.
    conn: Mutex<Connection>,
    /// Jobs sent to the thread and not yet taken into a batch.
    queued: AtomicUsize,
    /// Writes failing for want of space, and the writers waiting for room.
    space: Arc<Space>,
}

impl Writer {
    /// Starts the writer thread on `conn`.
    pub(super) fn start(conn: Connection, space: Space) -> StoreResult<Writer> {
        let (jobs, rx) = mpsc::channel(4 * MAX_BATCH);
        let shared = Arc::new(Shared {
            conn: Mutex::new(conn),
            queued: AtomicUsize::new(0),
            space: Arc::new(space),
        });
        let thread = shared.clone();
        std::thread::Builder::new()
            .name("wasaga-sqlite-writer".into())
            .spawn(move || write_loop(&thread, rx))
            .map_err(|e| StoreError::WriteFailed(format!("cannot start the writer thread: {e}")))?;
        Ok(Writer { jobs, shared })
    }

    /// Whether the writer thread has stopped.
    pub(super) fn is_closed(&self) -> bool {
        self.jobs.is_closed()
    }

    /// Writes failing for want of space.
    pub(super) fn space(&self) -> &Space {
        &self.shared.space
    }

    /// Runs `op` in the next batch and answers once that batch committed:
    /// its result if it did, otherwise why not. A failing `op` leaves
    /// nothing behind (its savepoint, or its batch, is rolled back).
    pub(super) async fn write<T, F>(&self, op: F) -> StoreResult<T>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> StoreResult<T> + Send + 'static,
    {
        self.write_then(op, || ()).await
    }

    /// [`Writer::write`], and `then` runs once `op`'s batch has committed or
    /// failed, before the caller is answered, even if the caller stopped
    /// waiting: for state kept beside the database, which must follow every
    /// commit.
    pub(super) async fn write_then<T, F, A>(&self, op: F, then: A) -> StoreResult<T>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> StoreResult<T> + Send + 'static,
        A: FnOnce() + Send + 'static,
    {
        let (op, then) = match self.try_in_place(op, then) {
            Ok(result) => return result,
            Err(given_back) => given_back,
        };
        let (job, rx) = job(op, then);
        self.shared.queued.fetch_add(1, Ordering::SeqCst);
        if self.jobs.send(job).await.is_err() {
            self.shared.queued.fetch_sub(1, Ordering::SeqCst);
            return Err(StoreError::Closed);
        }
        rx.await.map_err(|_| StoreError::Closed)?
    }

    /// Commits `op` in a batch of its own on the calling thread, when that
    /// needs no other thread: nothing is queued, the connection is free,
    /// and the caller is a worker of a multi-thread tokio runtime, which
    /// `block_in_place` lets hand its other tasks to another thread for the
    /// time of the fsync. Gives `op` and `then` back otherwise.
    fn try_in_place<T, F, A>(&self, op: F, then: A) -> Result<StoreResult<T>, (F, A)>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> StoreResult<T> + Send + 'static,
        A: FnOnce() + Send + 'static,
    {
        let multi_thread = tokio::runtime::Handle::try_current()
            .is_ok_and(|rt| rt.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread);
        if !multi_thread || self.shared.queued.load(Ordering::SeqCst) > 0 || self.is_closed() {
            return Err((op, then));
        }
        let Ok(conn) = self.shared.conn.try_lock() else {
            return Err((op, then));
        };
        let (job, mut rx) = job(op, then);
        tokio::task::block_in_place(|| {
            commit_batch(
                &self.shared,
                &conn,
                &mut vec![job],
                &mut Vec::with_capacity(1),
            )
        });
        Ok(rx.try_recv().unwrap_or(Err(StoreError::Closed)))
    }
}

/// `op` as a job whose answer first runs `then`, and where the answer
/// arrives.
fn job<T, F, A>(op: F, then: A) -> (Job, oneshot::Receiver<StoreResult<T>>)
where
    T: Send + 'static,
    F: FnOnce(&Connection) -> StoreResult<T> + Send + 'static,
    A: FnOnce() + Send + 'static,
{
    let (reply, rx) = oneshot::channel();
    let job: Job = Box::new(move |conn, alone| {
        let ran = conn.map(|conn| match alone {
            true => {
                let result = op(conn);
                let sound = result.is_ok();
                (result, sound)
            }
            false => in_savepoint(conn, op),
        });
        let (result, sound) = match ran {
            Some((result, sound)) => (Some(result), sound),
            None => (None, true),
        };
        let full = matches!(result, Some(Err(StoreError::StorageFull(_))));
        let answer: Answer = Box::new(move |commit| {
            then();
            let _ = reply.send(settle(commit, result));
        });
        (answer, sound, full)
    });
    (job, rx)
}

/// Runs `op` in a savepoint, which it keeps on success and rolls back on
/// failure. Also says whether the transaction is still sound: false when
/// the savepoint could not be rolled back or released, so `op`'s writes
/// may linger.
fn in_savepoint<T>(
    conn: &Connection,
    op: impl FnOnce(&Connection) -> StoreResult<T>,
) -> (StoreResult<T>, bool) {
    let run = |sql: &str| conn.prepare_cached(sql).and_then(|mut s| s.execute([]));
    if let Err(e) = run("SAVEPOINT job") {
        // Nothing of `op` ran.
        return (Err(e.into()), true);
    }
    let result = op(conn);
    let undone = if result.is_err() {
        run("ROLLBACK TO job").map(drop)
    } else {
        Ok(())
    };
    match undone.and_then(|()| run("RELEASE job")) {
        Ok(_) => (result, true),
        Err(e) => {
            tracing::error!(error = %e, "SQLite could not close a write's savepoint");
            (result.and(Err(e.into())), false)
        }
    }
}

/// A job's answer from its own result (`None`: it never ran) and its
/// batch's commit.
fn settle<T>(commit: Result<(), CommitFailure>, result: Option<StoreResult<T>>) -> StoreResult<T> {
    match (commit, result) {
        // A failed job answers its own error whatever became of the batch.
        (_, Some(Err(e))) => Err(e),
        (Ok(()), Some(Ok(value))) => Ok(value),
        (Err(CommitFailure::Full(why)), _) => Err(StoreError::StorageFull(why)),
        (Err(CommitFailure::Other(why)), _) => Err(StoreError::WriteFailed(why)),
        (Ok(()), None) => Err(StoreError::WriteFailed("the write never ran".into())),
    }
}

/// The thread: takes every queued job (up to [`MAX_BATCH`]) into one
/// transaction and one commit, until the store is dropped.
fn write_loop(shared: &Shared, mut rx: mpsc::Receiver<Job>) {
    let mut batch: Vec<Job> = Vec::with_capacity(MAX_BATCH);
    let mut answers: Vec<Answer> = Vec::with_capacity(MAX_BATCH);
    while let Some(first) = rx.blocking_recv() {
        // An in-place write may hold the connection; wait for it.
        let conn = shared.conn.lock().unwrap_or_else(PoisonError::into_inner);
        batch.push(first);
        while batch.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(job) => batch.push(job),
                Err(_) => break,
            }
        }
        shared.queued.fetch_sub(batch.len(), Ordering::SeqCst);
        commit_batch(shared, &conn, &mut batch, &mut answers);
    }
}

/// A failed statement of the writer itself (begin, commit), sorted.
fn commit_failure(what: &str, e: &rusqlite::Error) -> CommitFailure {
    let why = format!("{what}: {e}");
    match e.sqlite_error_code() {
        Some(rusqlite::ErrorCode::DiskFull) => CommitFailure::Full(why),
        _ => CommitFailure::Other(why),
    }
}

/// Runs `batch` (emptying it) in one transaction, each job in its own
/// savepoint unless it is alone, commits once, and only then answers every
/// job. Keeps [`Shared::full`] up to date.
fn commit_batch(
    shared: &Shared,
    conn: &Connection,
    batch: &mut Vec<Job>,
    answers: &mut Vec<Answer>,
) {
    if let Err(e) = conn
        .prepare_cached("BEGIN IMMEDIATE")
        .and_then(|mut s| s.execute([]))
    {
        tracing::error!(error = %e, "SQLite could not begin a transaction");
        let failure = commit_failure("cannot begin a transaction", &e);
        note_outcome(shared, Err(&failure), false);
        for job in batch.drain(..) {
            job(None, false).0(Err(failure.clone()));
        }
        return;
    }
    let mut sound = true;
    let mut full = false;
    let alone = batch.len() == 1;
    for job in batch.drain(..) {
        // Some failures (a full disk among them) make SQLite roll the
        // whole transaction back: a job run after that would run in
        // autocommit mode and stay written whatever the batch's fate. The
        // rest of the batch is answered unrun instead.
        if conn.is_autocommit() {
            sound = false;
            let (answer, _, _) = job(None, false);
            answers.push(answer);
            continue;
        }
        // A job that panics (a bug) takes its batch down, not the
        // writer: its caller sees the store fail, the others a rollback.
        match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| job(Some(conn), alone))) {
            Ok((answer, job_sound, job_full)) => {
                answers.push(answer);
                sound &= job_sound;
                full |= job_full;
            }
            Err(_) => {
                tracing::error!("a SQLite write panicked; rolling back its batch");
                sound = false;
            }
        }
    }
    let commit = if sound {
        conn.prepare_cached("COMMIT")
            .and_then(|mut s| s.execute([]))
            .map(drop)
            .map_err(|e| {
                tracing::error!(error = %e, "SQLite commit failed");
                rollback(conn);
                commit_failure("commit failed", &e)
            })
    } else {
        rollback(conn);
        let why = "another write of the batch could not be undone alone; the batch was rolled back";
        // A full disk rolls SQLite's whole transaction back: every write of
        // the batch failed for want of space.
        Err(if full {
            CommitFailure::Full(format!("{why} (the disk is full)"))
        } else {
            CommitFailure::Other(why.into())
        })
    };
    note_outcome(shared, commit.as_ref().map(|_| ()), full);
    for answer in answers.drain(..) {
        answer(commit.clone());
    }
}

/// Records whether writes fail for want of space: a full disk (in a
/// statement or the commit), or a commit that succeeds.
fn note_outcome(shared: &Shared, commit: Result<(), &CommitFailure>, job_full: bool) {
    match commit {
        Err(CommitFailure::Full(why)) => shared.space.failed(why),
        Ok(()) if job_full => shared
            .space
            .failed("a write needed more room than the disk has"),
        Ok(()) => shared.space.succeeded(),
        Err(CommitFailure::Other(_)) => {}
    }
}

/// Ends a transaction that must not commit.
fn rollback(conn: &Connection) {
    if let Err(e) = conn.execute_batch("ROLLBACK") {
        tracing::debug!(error = %e, "rollback");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn writer() -> Writer {
        let conn = Connection::open_in_memory().unwrap();
        conn.execute_batch("CREATE TABLE t (v INTEGER NOT NULL)")
            .unwrap();
        Writer::start(conn, Space::new(std::time::Duration::from_secs(1))).unwrap()
    }

    /// A write that inserts `v`, then fails if `fail`.
    async fn insert(w: &Writer, v: i64, fail: bool) -> StoreResult<()> {
        w.write(move |c| {
            c.execute("INSERT INTO t VALUES (?)", [v])?;
            match fail {
                true => Err(StoreError::Corrupt(format!("{v} fails"))),
                false => Ok(()),
            }
        })
        .await
    }

    async fn rows(w: &Writer) -> Vec<i64> {
        w.write(|c| {
            let mut s = c.prepare("SELECT v FROM t ORDER BY v")?;
            let rows = s.query_map([], |r| r.get(0))?;
            Ok(rows.collect::<Result<Vec<i64>, _>>()?)
        })
        .await
        .unwrap()
    }

    /// Failing writes leave nothing behind, whether alone in their batch
    /// (no savepoint: the transaction rolls back) or beside writes that
    /// succeed (their savepoint rolls back, the others commit).
    async fn failures_leave_nothing(w: Writer) {
        let failed = insert(&w, 1, true).await;
        assert!(
            matches!(failed, Err(StoreError::Corrupt(ref m)) if m == "1 fails"),
            "{failed:?}"
        );
        insert(&w, 2, false).await.unwrap();
        assert_eq!(rows(&w).await, [2], "alone");

        // Hold the connection so the next writes queue up and share a batch.
        let shared = w.shared.clone();
        let (held_tx, held_rx) = std::sync::mpsc::channel();
        let holder = std::thread::spawn(move || {
            let _conn = shared.conn.lock().unwrap();
            held_tx.send(()).unwrap();
            std::thread::sleep(Duration::from_millis(200));
        });
        held_rx.recv().unwrap();
        let (a, b, c) = tokio::join!(
            insert(&w, 3, false),
            insert(&w, 4, true),
            insert(&w, 5, false)
        );
        holder.join().unwrap();
        assert!(a.is_ok() && c.is_ok(), "{a:?} {c:?}");
        assert!(
            matches!(b, Err(StoreError::Corrupt(ref m)) if m == "4 fails"),
            "{b:?}"
        );
        assert_eq!(rows(&w).await, [2, 3, 5], "in a batch");
    }

    #[test]
    fn failures_leave_nothing_in_place() {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .build()
            .unwrap();
        rt.block_on(failures_leave_nothing(writer()));
    }

    #[test]
    fn failures_leave_nothing_through_the_thread() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        rt.block_on(failures_leave_nothing(writer()));
    }
}
