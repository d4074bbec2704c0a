//! The embedded store: one SQLite file in WAL mode with `synchronous=FULL`,
//! so a transition acknowledged to the runner or the API is on disk.
//!
//! SQLite allows one writer at a time. Rather than let concurrent callers
//! race for the write lock (and sometimes get "database is locked"), every
//! write goes through one writer task that owns the only writing connection.
//! The writer takes whatever writes are queued, up to [`MAX_BATCH`], runs them
//! in one transaction (a write that fails after writing is taken out and the
//! rest run again, so one failing write does not undo the others), commits
//! once, and only then answers each caller: group commit,
//! several sagas' transitions for the price of one fsync, with every
//! acknowledgement still meaning "durable". Reads use a separate pool, which
//! WAL lets run beside the writer.
//!
//! The file belongs to one process at a time (an exclusive lock on
//! `<file>.lock`), so on open every lease in it is from a dead process and is
//! released at once: a restart after SIGKILL resumes its sagas immediately.

use super::{
    Applied, CancelSaga, Claim, ClaimedSaga, CreateSaga, DeletePlugin, LeaseState, PluginRow,
    PutPlugin, ResourceRow, SAGA_COLUMNS, STEP_COLUMNS, SagaFilter, SagaRow, StepRow, Store,
    StoreError, StoreResult, Transition, ledger_row_json, start_of, to_json,
};
use crate::model::{
    Digest, PluginInfo, SagaDetail, SagaId, SagaResource, SagaRun, SagaStatus, StepResult,
    Timestamp,
};
use async_trait::async_trait;
use futures::future::BoxFuture;
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous,
};
use sqlx::{Connection, SqliteConnection};
use std::path::Path;
use std::str::FromStr;
use std::sync::LazyLock;
use std::time::Duration;
use tokio::sync::{mpsc, oneshot};

/// Most writes committed in one transaction.
const MAX_BATCH: usize = 512;

static MIGRATIONS: sqlx::migrate::Migrator = sqlx::migrate!("../migrations/sqlite");

/// `INSERT INTO saga_step_results (<every column>)`, for the ledger upserts.
macro_rules! step_insert {
    () => {
        "INSERT INTO saga_step_results
     (saga_id, step_index, phase, status, output, error, attempts, compensate_attempts, logs, started_at,
      finished_at, executed_by)"
    };
}

/// A ledger upsert's conflict clause: the new row replaces the old.
macro_rules! step_on_conflict {
    () => {
        " ON CONFLICT (saga_id, step_index) DO UPDATE SET
     phase = excluded.phase, status = excluded.status, output = excluded.output, error = excluded.error,
     attempts = excluded.attempts, compensate_attempts = excluded.compensate_attempts, logs = excluded.logs,
     started_at = excluded.started_at, finished_at = excluded.finished_at, executed_by = excluded.executed_by"
    };
}

/// The SQLite store. See the module docs.
pub struct SqliteStore {
    reads: SqlitePool,
    writes: mpsc::Sender<Job>,
    _lock: std::fs::File,
}

/// One queued write. It can run more than once: when another job of its
/// batch fails, the batch is rolled back and the others run again in a new
/// transaction. Its result is kept until the batch's commit is known.
trait WriteJob: Send {
    /// Runs the job's statements inside the batch's transaction.
    fn run<'c>(&'c mut self, conn: &'c mut SqliteConnection) -> BoxFuture<'c, JobState>;
    /// Answers the caller: its result if the batch committed, else why not.
    fn answer(self: Box<Self>, commit: Result<(), String>);
    /// The transition this job applies, if it is one that can be written
    /// together with others in [`apply_group`].
    fn groupable(&self) -> Option<&Transition> {
        None
    }
    /// Takes the job's result from a group it was written in.
    fn grouped(&mut self, _result: StoreResult<Applied>) {}
}

/// How a job's run left the transaction.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum JobState {
    /// It succeeded, or failed without writing anything (a lost lease: every
    /// statement of a transition is fenced by it).
    Clean,
    /// It failed after statements that may have written: the batch must
    /// roll back without it.
    Dirty,
}

struct TypedJob<T, D, F> {
    data: D,
    op: F,
    result: Option<StoreResult<T>>,
    reply: oneshot::Sender<StoreResult<T>>,
}

impl<T, D, F> WriteJob for TypedJob<T, D, F>
where
    T: Send + 'static,
    D: Send + Sync + 'static,
    F: for<'c> Fn(&'c mut SqliteConnection, &'c D) -> BoxFuture<'c, StoreResult<T>>
        + Send
        + Sync
        + 'static,
{
    fn run<'c>(&'c mut self, conn: &'c mut SqliteConnection) -> BoxFuture<'c, JobState> {
        Box::pin(async move {
            let result = (self.op)(conn, &self.data).await;
            let state = match &result {
                Ok(_) | Err(StoreError::LeaseLost(_)) => JobState::Clean,
                Err(_) => JobState::Dirty,
            };
            self.result = Some(result);
            state
        })
    }

    fn answer(self: Box<Self>, commit: Result<(), String>) {
        let _ = self.reply.send(settle(commit, self.result));
    }
}

type Job = Box<dyn WriteJob>;

/// A runner's transition: alone, [`apply_transition`]; with others of its
/// batch, [`apply_group`].
struct TransitionJob {
    transition: Transition,
    result: Option<StoreResult<Applied>>,
    reply: oneshot::Sender<StoreResult<Applied>>,
}

impl WriteJob for TransitionJob {
    fn run<'c>(&'c mut self, conn: &'c mut SqliteConnection) -> BoxFuture<'c, JobState> {
        Box::pin(async move {
            let result = apply_transition(conn, &self.transition).await;
            let state = match &result {
                Ok(_) | Err(StoreError::LeaseLost(_)) => JobState::Clean,
                Err(_) => JobState::Dirty,
            };
            self.result = Some(result);
            state
        })
    }

    fn answer(self: Box<Self>, commit: Result<(), String>) {
        let _ = self.reply.send(settle(commit, self.result));
    }

    fn groupable(&self) -> Option<&Transition> {
        // Resources take a version from the rows before them: written one
        // by one, in `apply_transition`.
        self.transition
            .resources
            .is_empty()
            .then_some(&self.transition)
    }

    fn grouped(&mut self, result: StoreResult<Applied>) {
        self.result = Some(result);
    }
}

/// A job's answer from its own result and its batch's commit.
fn settle<T>(commit: Result<(), String>, result: Option<StoreResult<T>>) -> StoreResult<T> {
    match (commit, result) {
        (_, None) => Err(StoreError::WriteFailed("the write never ran".into())),
        // A failed job answers its own error whatever became of the batch.
        (_, Some(Err(e))) => Err(e),
        (Ok(()), Some(Ok(value))) => Ok(value),
        (Err(why), Some(Ok(_))) => Err(StoreError::WriteFailed(why)),
    }
}

impl SqliteStore {
    /// Opens (creating if needed) the database file at `path`, runs the
    /// migrations, and releases leases left by a previous process.
    pub async fn open(path: &Path) -> StoreResult<SqliteStore> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir)
                .map_err(|e| StoreError::Locked(format!("cannot create {}: {e}", dir.display())))?;
        }
        let lock_path = path.with_extension("lock");
        let lock = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .map_err(|e| StoreError::Locked(format!("cannot open {}: {e}", lock_path.display())))?;
        lock.try_lock().map_err(|_| {
            StoreError::Locked(format!(
                "{} is in use by another wasaga process (it holds {}); SQLite serves one host, \
                 use PostgreSQL for several",
                path.display(),
                lock_path.display()
            ))
        })?;

        let options = SqliteConnectOptions::from_str(&format!("sqlite://{}", path.display()))?
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            // FULL: a commit is on disk when it returns, WAL or not.
            .synchronous(SqliteSynchronous::Full)
            .foreign_keys(true)
            .busy_timeout(Duration::from_secs(10));
        // Migrations through a one-connection pool: `Migrator::run` on a bare
        // connection makes the caller's future lose `Send`.
        let migrations = SqlitePoolOptions::new()
            .max_connections(1)
            .connect_with(options.clone())
            .await?;
        MIGRATIONS.run(&migrations).await?;
        migrations.close().await;
        let mut writer = SqliteConnection::connect_with(&options).await?;
        // Every lease in the file is from a process that is gone (we hold
        // the lock), so its sagas can resume now rather than at expiry.
        let released = sqlx::query(
            "UPDATE saga_runs SET lease_owner = NULL, lease_expires_at = NULL WHERE lease_owner IS NOT NULL",
        )
        .execute(&mut writer)
        .await?
        .rows_affected();
        if released > 0 {
            tracing::info!(released, "released leases left by a previous process");
        }
        let reads = SqlitePoolOptions::new()
            .max_connections(8)
            .min_connections(1)
            .connect_with(options.read_only(true))
            .await?;
        let (tx, rx) = mpsc::channel(4 * MAX_BATCH);
        tokio::spawn(write_loop(writer, rx));
        Ok(SqliteStore {
            reads,
            writes: tx,
            _lock: lock,
        })
    }

    /// Queues a write and waits until it is committed (or failed). `op` may
    /// run more than once (see [`WriteJob`]), so it borrows its `data`.
    async fn write<T, D, F>(&self, data: D, op: F) -> StoreResult<T>
    where
        T: Send + 'static,
        D: Send + Sync + 'static,
        F: for<'c> Fn(&'c mut SqliteConnection, &'c D) -> BoxFuture<'c, StoreResult<T>>
            + Send
            + Sync
            + 'static,
    {
        let (reply, rx) = oneshot::channel();
        let job: Job = Box::new(TypedJob {
            data,
            op,
            result: None,
            reply,
        });
        self.enqueue(job, rx).await
    }

    /// Hands `job` to the writer and waits for its answer on `rx`.
    async fn enqueue<T>(&self, job: Job, rx: oneshot::Receiver<StoreResult<T>>) -> StoreResult<T> {
        self.writes
            .send(job)
            .await
            .map_err(|_| StoreError::Closed)?;
        rx.await.map_err(|_| StoreError::Closed)?
    }
}

/// The writer: takes every queued job (up to [`MAX_BATCH`]) into one
/// transaction and one commit. A job that fails after writing is dropped
/// from the batch (answered with its error), the transaction rolled back and
/// the rest run again, so one bad write never takes others down with it.
async fn write_loop(mut conn: SqliteConnection, mut rx: mpsc::Receiver<Job>) {
    let mut batch: Vec<Job> = Vec::with_capacity(MAX_BATCH);
    while let Some(first) = rx.recv().await {
        batch.push(first);
        while batch.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(job) => batch.push(job),
                Err(_) => break,
            }
        }
        let outcome = commit_batch(&mut conn, &mut batch).await;
        for job in batch.drain(..) {
            job.answer(outcome.clone());
        }
    }
}

/// Runs `batch` in one transaction until it commits; jobs that fail dirty
/// are answered and removed on the way. Returns how the commit went.
///
/// Transitions go in together, in one query ([`apply_group`]): a round trip
/// to SQLite's thread costs more than the writing, so a batch of them costs
/// about one. When the batch is nothing else, `BEGIN` and `COMMIT` ride in
/// that same query. If the group fails, the batch is rolled back and run
/// again one job at a time, which finds the job at fault.
async fn commit_batch(conn: &mut SqliteConnection, batch: &mut Vec<Job>) -> Result<(), String> {
    let mut grouping = true;
    'attempt: loop {
        let group = if grouping {
            group_of(batch)
        } else {
            Vec::new()
        };
        if !group.is_empty() && group.len() == batch.len() {
            match apply_group(conn, batch, &group, true).await {
                Ok(()) => return Ok(()),
                Err(e) => {
                    tracing::warn!(error = %e, "a grouped write failed; writing one by one");
                    rollback(conn).await;
                    grouping = false;
                    continue 'attempt;
                }
            }
        }
        if let Err(e) = sqlx::query("BEGIN IMMEDIATE").execute(&mut *conn).await {
            tracing::error!(error = %e, "SQLite could not begin a transaction");
            return Err(format!("cannot begin a transaction: {e}"));
        }
        for i in 0..batch.len() {
            if group.contains(&i) {
                continue;
            }
            if batch[i].run(conn).await == JobState::Dirty {
                rollback(conn).await;
                batch.remove(i).answer(Ok(()));
                if batch.is_empty() {
                    return Ok(());
                }
                continue 'attempt;
            }
        }
        if !group.is_empty()
            && let Err(e) = apply_group(conn, batch, &group, false).await
        {
            tracing::warn!(error = %e, "a grouped write failed; writing one by one");
            rollback(conn).await;
            grouping = false;
            continue 'attempt;
        }
        return match sqlx::query("COMMIT").execute(&mut *conn).await {
            Ok(_) => Ok(()),
            Err(e) => {
                tracing::error!(error = %e, "SQLite commit failed");
                rollback(conn).await;
                Err(format!("commit failed: {e}"))
            }
        };
    }
}

async fn rollback(conn: &mut SqliteConnection) {
    // Fails harmlessly when no transaction is open (a failed BEGIN).
    if let Err(e) = sqlx::query("ROLLBACK").execute(&mut *conn).await {
        tracing::debug!(error = %e, "rollback");
    }
}

/// The batch's jobs that go in one group: transitions that can (see
/// [`WriteJob::groupable`]), at most one per saga, so that each result row
/// belongs to one of them.
fn group_of(batch: &[Job]) -> Vec<usize> {
    let mut sagas = std::collections::HashSet::new();
    batch
        .iter()
        .enumerate()
        .filter(|(_, job)| job.groupable().is_some_and(|t| sagas.insert(t.saga_id)))
        .map(|(i, _)| i)
        .collect()
}

/// The ledger rows of a group of transitions, written only while each
/// row's saga is leased by the row's owner (and, for a step about to start
/// executing, has no cancel requested). Rows come in order, so a
/// transition's running mark for its next step follows its own result.
const GROUP_STEP_UPSERT: &str = concat!(
    step_insert!(),
    " SELECT r.value ->> '$.saga_id', r.value ->> '$.step_index', r.value ->> '$.phase', r.value ->> '$.status',
        r.value ->> '$.output', r.value ->> '$.error', r.value ->> '$.attempts',
        r.value ->> '$.compensate_attempts', r.value ->> '$.logs', r.value ->> '$.started_at',
        r.value ->> '$.finished_at', r.value ->> '$.executed_by'
 FROM json_each(?) AS r
 WHERE EXISTS (SELECT 1 FROM saga_runs s
               WHERE s.id = r.value ->> '$.saga_id' AND s.lease_owner = r.value ->> '$.owner'
                 AND (r.value ->> '$.ignore_cancel' OR s.cancel_requested = 0))
 ORDER BY r.key",
    step_on_conflict!(),
    ";"
);

/// The sagas' updates of a group, fenced like [`FENCED_SAGA_UPDATE`] and
/// after the ledger rows for the same reason; each saga whose lease held
/// returns a row.
const GROUP_SAGA_UPDATE: &str = "UPDATE saga_runs AS s SET
     updated_at = u.value ->> '$.now',
     status = COALESCE(u.value ->> '$.status', s.status),
     current_step_index = COALESCE(u.value ->> '$.current_step_index', s.current_step_index),
     context = COALESCE(u.value ->> '$.context', s.context),
     error = COALESCE(u.value ->> '$.error', s.error),
     lease_owner = CASE WHEN u.value ->> '$.ends' THEN NULL ELSE s.lease_owner END,
     lease_expires_at = CASE WHEN u.value ->> '$.ends' THEN NULL ELSE s.lease_expires_at END
 FROM json_each(?) AS u
 WHERE s.id = u.value ->> '$.saga_id' AND s.lease_owner = u.value ->> '$.owner'
 RETURNING id, cancel_requested;";

/// Writes the transitions at `group` in `batch` with two statements whose
/// rows come as JSON (one round trip, and the same two statements whatever
/// the batch: SQLite prepares them once). `whole`: the group is the batch,
/// and the query also begins and commits its transaction. Each job gets
/// its result, as [`apply_transition`] would give it.
async fn apply_group(
    conn: &mut SqliteConnection,
    batch: &mut [Job],
    group: &[usize],
    whole: bool,
) -> StoreResult<()> {
    let mut steps = Vec::new();
    let mut sagas = Vec::new();
    for &i in group {
        let t = batch[i].groupable().expect("a groupable job");
        for (step, ignore_cancel) in t.ledger_rows() {
            let mut row = ledger_row_json(step, ignore_cancel);
            row.insert("saga_id".into(), t.saga_id.to_string().into());
            row.insert("owner".into(), (*t.owner).into());
            steps.push(serde_json::Value::Object(row));
        }
        let ends = t.saga.status.is_some_and(SagaStatus::is_final);
        sagas.push(serde_json::json!({
            "saga_id": t.saga_id.to_string(),
            "owner": &*t.owner,
            "now": t.now.millis(),
            "status": t.saga.status.map(SagaStatus::as_str),
            "current_step_index": t.saga.current_step_index,
            "context": t.saga.context.as_ref().map(to_json),
            "error": t.saga.error.as_ref().map(to_json),
            "ends": ends,
        }));
    }
    static WHOLE: LazyLock<String> =
        LazyLock::new(|| format!("BEGIN IMMEDIATE;{GROUP_STEP_UPSERT}{GROUP_SAGA_UPDATE}COMMIT;"));
    static PART: LazyLock<String> =
        LazyLock::new(|| format!("{GROUP_STEP_UPSERT}{GROUP_SAGA_UPDATE}"));
    let sql: &str = if whole { &WHOLE } else { &PART };
    let rows = sqlx::query(sql)
        .bind(serde_json::Value::Array(steps).to_string())
        .bind(serde_json::Value::Array(sagas).to_string())
        .fetch_all(&mut *conn)
        .await?;
    let mut held = std::collections::HashMap::with_capacity(rows.len());
    for row in &rows {
        let id: String = sqlx::Row::try_get(row, 0)?;
        let cancel_requested: bool = sqlx::Row::try_get(row, 1)?;
        held.insert(id, cancel_requested);
    }
    for &i in group {
        let t = batch[i].groupable().expect("a groupable job");
        let result = match held.get(&t.saga_id.to_string()) {
            None => Err(StoreError::LeaseLost(t.saga_id)),
            Some(&cancel_requested) => Ok(Applied::found(t, cancel_requested)),
        };
        batch[i].grouped(result);
    }
    Ok(())
}

fn status_list(statuses: &[SagaStatus]) -> String {
    statuses
        .iter()
        .map(|s| format!("'{s}'"))
        .collect::<Vec<_>>()
        .join(", ")
}

const UNFINISHED: &[SagaStatus] = &[
    SagaStatus::Pending,
    SagaStatus::Running,
    SagaStatus::Compensating,
];

async fn ledger(conn: &mut SqliteConnection, saga: &SagaRun) -> StoreResult<Vec<StepResult>> {
    let rows: Vec<StepRow> = sqlx::query_as(&format!(
        "SELECT {STEP_COLUMNS} FROM saga_step_results WHERE saga_id = ? ORDER BY step_index"
    ))
    .bind(saga.id.to_string())
    .fetch_all(&mut *conn)
    .await?;
    rows.into_iter()
        .map(|r| r.into_result(&saga.plan))
        .collect()
}

async fn saga_by_id(conn: &mut SqliteConnection, id: &str) -> StoreResult<Option<SagaRun>> {
    let row: Option<SagaRow> = sqlx::query_as(&format!(
        "SELECT {SAGA_COLUMNS} FROM saga_runs WHERE id = ?"
    ))
    .bind(id)
    .fetch_optional(&mut *conn)
    .await?;
    row.map(SagaRun::try_from).transpose()
}

/// Writes a ledger row, unfenced: for a saga being created or claimed in
/// this same transaction.
async fn upsert_step(
    conn: &mut SqliteConnection,
    saga_id: &str,
    step: &StepResult,
) -> StoreResult<()> {
    const UPSERT: &str = concat!(
        step_insert!(),
        " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        step_on_conflict!()
    );
    bind_row(sqlx::query(UPSERT), saga_id, step)
        .execute(&mut *conn)
        .await?;
    Ok(())
}

type SqliteQuery<'q> = sqlx::query::Query<'q, sqlx::Sqlite, sqlx::sqlite::SqliteArguments<'q>>;

/// Binds a ledger row's twelve columns, in [`step_insert`]'s order.
fn bind_row<'q>(query: SqliteQuery<'q>, id: &'q str, step: &'q StepResult) -> SqliteQuery<'q> {
    query
        .bind(id)
        .bind(step.index as i64)
        .bind(step.phase.as_str())
        .bind(step.status.as_str())
        .bind(step.output.as_ref().map(to_json))
        .bind(step.error.as_deref())
        .bind(step.attempts as i64)
        .bind(step.compensate_attempts as i64)
        .bind(to_json(&step.logs))
        .bind(step.started_at.map(Timestamp::millis))
        .bind(step.finished_at.map(Timestamp::millis))
        .bind(step.executed_by.as_deref())
}

/// A ledger row upsert that writes only while `owner` holds the lease
/// (binds: the row's twelve columns, then saga id, owner, and whether a
/// cancel may be ignored).
const FENCED_STEP_UPSERT: &str = concat!(
    step_insert!(),
    " SELECT ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?
 WHERE EXISTS (SELECT 1 FROM saga_runs WHERE id = ? AND lease_owner = ? AND (? OR cancel_requested = 0))",
    step_on_conflict!(),
    ";"
);

/// A resource insert fenced the same way (binds: saga id, step index, kind,
/// external id, spec, created_at, then saga id, kind, external id for the
/// version, then saga id and owner for the fence).
const FENCED_RESOURCE_INSERT: &str = "INSERT INTO provisioned_resources
     (saga_id, step_index, kind, external_id, spec, spec_version, created_at)
 SELECT ?, ?, ?, ?, ?, version, ?
 FROM (SELECT COALESCE(MAX(spec_version), 0) + 1 AS version FROM provisioned_resources
       WHERE saga_id = ? AND kind = ? AND external_id = ?)
 WHERE EXISTS (SELECT 1 FROM saga_runs WHERE id = ? AND lease_owner = ?);";

/// The saga row's update, last so that the fences above still see the lease
/// (a final status releases it); `RETURNING` says whether the lease was held.
const FENCED_SAGA_UPDATE: &str = "UPDATE saga_runs SET
     updated_at = ?,
     status = COALESCE(?, status),
     current_step_index = COALESCE(?, current_step_index),
     context = COALESCE(?, context),
     error = COALESCE(?, error),
     lease_owner = CASE WHEN ? THEN NULL ELSE lease_owner END,
     lease_expires_at = CASE WHEN ? THEN NULL ELSE lease_expires_at END
 WHERE id = ? AND lease_owner = ?
 RETURNING cancel_requested;";

fn bind_step<'q>(
    query: SqliteQuery<'q>,
    id: &'q str,
    owner: &'q str,
    step: &'q StepResult,
    ignore_cancel: bool,
) -> SqliteQuery<'q> {
    bind_row(query, id, step)
        .bind(id)
        .bind(owner)
        .bind(ignore_cancel)
}

/// A transition as one query of several statements (one round trip to
/// SQLite's thread), each fenced by the lease, so that without the lease
/// nothing is written.
async fn apply_transition(conn: &mut SqliteConnection, t: &Transition) -> StoreResult<Applied> {
    let id = t.saga_id.to_string();
    let owner: &str = &t.owner;
    let mut sql = String::new();
    for _ in t.ledger_rows() {
        sql.push_str(FENCED_STEP_UPSERT);
    }
    for _ in &t.resources {
        sql.push_str(FENCED_RESOURCE_INSERT);
    }
    sql.push_str(FENCED_SAGA_UPDATE);

    let mut query = sqlx::query(&sql);
    for (step, ignore_cancel) in t.ledger_rows() {
        query = bind_step(query, &id, owner, step, ignore_cancel);
    }
    for (step_index, resource) in &t.resources {
        query = query
            .bind(id.as_str())
            .bind(*step_index as i64)
            .bind(resource.kind.as_str())
            .bind(resource.external_id.as_str())
            .bind(to_json(&resource.spec))
            .bind(t.now.millis())
            .bind(id.as_str())
            .bind(resource.kind.as_str())
            .bind(resource.external_id.as_str())
            .bind(id.as_str())
            .bind(owner);
    }
    let ends = t.saga.status.is_some_and(SagaStatus::is_final);
    query = query
        .bind(t.now.millis())
        .bind(t.saga.status.map(SagaStatus::as_str))
        .bind(t.saga.current_step_index.map(i64::from))
        .bind(t.saga.context.as_ref().map(to_json))
        .bind(t.saga.error.as_ref().map(to_json))
        .bind(ends)
        .bind(ends)
        .bind(id.as_str())
        .bind(owner);
    let rows = query.fetch_all(&mut *conn).await?;
    let Some(row) = rows.first() else {
        return Err(StoreError::LeaseLost(t.saga_id));
    };
    let cancel_requested: bool = sqlx::Row::try_get(row, 0)?;
    Ok(Applied::found(t, cancel_requested))
}

#[async_trait]
impl Store for SqliteStore {
    fn backend(&self) -> &'static str {
        "sqlite"
    }

    async fn health(&self) -> StoreResult<()> {
        sqlx::query("SELECT 1").execute(&self.reads).await?;
        if self.writes.is_closed() {
            return Err(StoreError::Closed);
        }
        Ok(())
    }

    async fn put_plugin(&self, info: &PluginInfo, wasm: &[u8]) -> StoreResult<PutPlugin> {
        let info = info.clone();
        let wasm = wasm.to_vec();
        self.write((info, wasm), |conn, data| {
            let (info, wasm) = data.clone();
            Box::pin(async move {
                let inserted = sqlx::query(
                    "INSERT INTO plugins (digest, name, size, wasm, created_at) VALUES (?, ?, ?, ?, ?)
                     ON CONFLICT (digest) DO NOTHING",
                )
                .bind(info.digest.as_str())
                .bind(&info.name)
                .bind(info.size as i64)
                .bind(&wasm)
                .bind(info.created_at.millis())
                .execute(&mut *conn)
                .await?
                .rows_affected();
                if inserted == 1 {
                    return Ok(PutPlugin::Created(info));
                }
                let row: PluginRow =
                    sqlx::query_as("SELECT digest, name, size, created_at FROM plugins WHERE digest = ?")
                        .bind(info.digest.as_str())
                        .fetch_one(&mut *conn)
                        .await?;
                Ok(PutPlugin::Existing(row.try_into()?))
            })
        })
        .await
    }

    async fn plugin(&self, digest: &Digest) -> StoreResult<Option<PluginInfo>> {
        let row: Option<PluginRow> =
            sqlx::query_as("SELECT digest, name, size, created_at FROM plugins WHERE digest = ?")
                .bind(digest.as_str())
                .fetch_optional(&self.reads)
                .await?;
        row.map(PluginInfo::try_from).transpose()
    }

    async fn plugin_by_name(&self, name: &str) -> StoreResult<Option<PluginInfo>> {
        let row: Option<PluginRow> = sqlx::query_as(
            "SELECT digest, name, size, created_at FROM plugins WHERE name = ? ORDER BY created_at DESC, rowid DESC LIMIT 1",
        )
        .bind(name)
        .fetch_optional(&self.reads)
        .await?;
        row.map(PluginInfo::try_from).transpose()
    }

    async fn plugin_bytes(&self, digest: &Digest) -> StoreResult<Option<Vec<u8>>> {
        Ok(
            sqlx::query_scalar("SELECT wasm FROM plugins WHERE digest = ?")
                .bind(digest.as_str())
                .fetch_optional(&self.reads)
                .await?,
        )
    }

    async fn list_plugins(&self) -> StoreResult<Vec<PluginInfo>> {
        let rows: Vec<PluginRow> =
            sqlx::query_as("SELECT digest, name, size, created_at FROM plugins ORDER BY created_at DESC, rowid DESC")
                .fetch_all(&self.reads)
                .await?;
        rows.into_iter().map(PluginInfo::try_from).collect()
    }

    async fn delete_plugin(&self, digest: &Digest) -> StoreResult<DeletePlugin> {
        let digest = digest.clone();
        self.write(digest, |conn, digest| {
            let digest = digest.clone();
            Box::pin(async move {
                let exists: Option<i64> = sqlx::query_scalar("SELECT 1 FROM plugins WHERE digest = ?")
                    .bind(digest.as_str())
                    .fetch_optional(&mut *conn)
                    .await?;
                if exists.is_none() {
                    return Ok(DeletePlugin::NotFound);
                }
                // The plan is JSON text; a digest is 71 unique characters, so
                // a substring match is exact.
                let pinned: Vec<String> = sqlx::query_scalar(&format!(
                    "SELECT id FROM saga_runs WHERE status IN ({}) AND instr(steps, ?) > 0 ORDER BY created_at LIMIT 10",
                    status_list(UNFINISHED)
                ))
                .bind(format!("\"{}\"", digest.as_str()))
                .fetch_all(&mut *conn)
                .await?;
                if !pinned.is_empty() {
                    let ids = pinned
                        .iter()
                        .map(|id| id.parse().map_err(|e| StoreError::Corrupt(format!("saga id {id}: {e}"))))
                        .collect::<StoreResult<Vec<SagaId>>>()?;
                    return Ok(DeletePlugin::Pinned(ids));
                }
                sqlx::query("DELETE FROM plugins WHERE digest = ?")
                    .bind(digest.as_str())
                    .execute(&mut *conn)
                    .await?;
                Ok(DeletePlugin::Deleted)
            })
        })
        .await
    }

    async fn create_saga(
        &self,
        saga: &SagaRun,
        idempotency: Option<(&str, &str)>,
        claim: Option<&Claim>,
    ) -> StoreResult<CreateSaga> {
        let saga = saga.clone();
        let idempotency = idempotency.map(|(k, h)| (k.to_string(), h.to_string()));
        let claim = claim.cloned();
        self.write((saga, idempotency, claim), |conn, data| {
            let (saga, idempotency, claim) = data.clone();
            Box::pin(async move {
                if let Some((key, hash)) = &idempotency {
                    let existing: Option<(String, Option<String>)> =
                        sqlx::query_as("SELECT id, request_hash FROM saga_runs WHERE idempotency_key = ?")
                            .bind(key)
                            .fetch_optional(&mut *conn)
                            .await?;
                    if let Some((id, existing_hash)) = existing {
                        let found = saga_by_id(conn, &id)
                            .await?
                            .ok_or_else(|| StoreError::Corrupt(format!("saga {id} vanished")))?;
                        return Ok(if existing_hash.as_deref() == Some(hash.as_str()) {
                            CreateSaga::Existing(found)
                        } else {
                            CreateSaga::KeyConflict(found.id)
                        });
                    }
                }
                let started = claim.as_ref().and_then(|c| start_of(&saga, c));
                let saga = started.as_ref().map_or(saga, |(s, _)| s.clone());
                sqlx::query(
                    "INSERT INTO saga_runs (id, kind, status, steps, inputs, current_step_index, context, error,
                         cancel_requested, deployment_id, triggered_by, idempotency_key, request_hash,
                         lease_owner, lease_expires_at, created_at, updated_at)
                     VALUES (?, ?, ?, ?, ?, ?, ?, NULL, 0, ?, ?, ?, ?, ?, ?, ?, ?)",
                )
                .bind(saga.id.to_string())
                .bind(&saga.kind)
                .bind(saga.status.as_str())
                .bind(to_json(&saga.plan))
                .bind(to_json(&saga.inputs))
                .bind(saga.current_step_index as i64)
                .bind(to_json(&saga.context))
                .bind(&saga.deployment_id)
                .bind(&saga.triggered_by)
                .bind(idempotency.as_ref().map(|(k, _)| k.as_str()))
                .bind(idempotency.as_ref().map(|(_, h)| h.as_str()))
                .bind(claim.as_ref().map(|c| c.owner.to_string()))
                .bind(claim.as_ref().map(|c| c.lease_until.millis()))
                .bind(saga.created_at.millis())
                .bind(saga.updated_at.millis())
                .execute(&mut *conn)
                .await?;
                if let Some((_, first)) = &started {
                    upsert_step(conn, &saga.id.to_string(), first).await?;
                }
                Ok(CreateSaga::Created(ClaimedSaga {
                    saga,
                    first_step_started: started.is_some(),
                    ledger: started.map(|(_, first)| vec![first]).unwrap_or_default(),
                }))
            })
        })
        .await
    }

    async fn saga(&self, id: SagaId) -> StoreResult<Option<SagaDetail>> {
        // One read transaction, so the saga, its ledger and its resources
        // are one consistent snapshot.
        let mut tx = self.reads.begin().await?;
        let Some(saga) = saga_by_id(&mut tx, &id.to_string()).await? else {
            return Ok(None);
        };
        let steps = ledger(&mut tx, &saga).await?;
        let rows: Vec<ResourceRow> = sqlx::query_as(
            "SELECT step_index, kind, external_id, spec, spec_version, created_at
             FROM provisioned_resources WHERE saga_id = ? ORDER BY id",
        )
        .bind(id.to_string())
        .fetch_all(&mut *tx)
        .await?;
        let resources = rows
            .into_iter()
            .map(SagaResource::try_from)
            .collect::<StoreResult<_>>()?;
        tx.commit().await?;
        Ok(Some(SagaDetail {
            saga,
            steps,
            resources,
        }))
    }

    async fn list_sagas(&self, filter: &SagaFilter) -> StoreResult<Vec<SagaRun>> {
        let rows: Vec<SagaRow> = sqlx::query_as(&format!(
            "SELECT {SAGA_COLUMNS} FROM saga_runs
             WHERE (?1 IS NULL OR status = ?1) AND (?2 IS NULL OR kind = ?2) AND (?3 IS NULL OR deployment_id = ?3)
             ORDER BY created_at DESC, id DESC LIMIT ?4"
        ))
        .bind(filter.status.map(SagaStatus::as_str))
        .bind(filter.kind.as_deref())
        .bind(filter.deployment_id.as_deref())
        .bind(filter.limit as i64)
        .fetch_all(&self.reads)
        .await?;
        rows.into_iter().map(SagaRun::try_from).collect()
    }

    async fn request_cancel(&self, id: SagaId, now: Timestamp) -> StoreResult<CancelSaga> {
        self.write((), move |conn, _| {
            Box::pin(async move {
                let Some(saga) = saga_by_id(conn, &id.to_string()).await? else {
                    return Ok(CancelSaga::NotFound);
                };
                if saga.status.is_final() {
                    return Ok(CancelSaga::AlreadyEnded(saga));
                }
                sqlx::query(
                    "UPDATE saga_runs SET cancel_requested = 1, updated_at = ? WHERE id = ?",
                )
                .bind(now.millis())
                .bind(id.to_string())
                .execute(&mut *conn)
                .await?;
                Ok(CancelSaga::Requested(SagaRun {
                    cancel_requested: true,
                    updated_at: now,
                    ..saga
                }))
            })
        })
        .await
    }

    async fn claim_sagas(&self, claim: &Claim, limit: usize) -> StoreResult<Vec<ClaimedSaga>> {
        let claim = claim.clone();
        self.write(claim, move |conn, claim| {
            let claim = claim.clone();
            Box::pin(async move {
                let rows: Vec<SagaRow> = sqlx::query_as(&format!(
                    "UPDATE saga_runs SET lease_owner = ?1, lease_expires_at = ?3
                     WHERE id IN (
                         SELECT id FROM saga_runs
                         WHERE status IN ({}) AND (lease_owner IS NULL OR lease_expires_at < ?2)
                         ORDER BY created_at, id LIMIT ?4)
                     RETURNING {SAGA_COLUMNS}",
                    status_list(UNFINISHED)
                ))
                .bind(&*claim.owner)
                .bind(claim.now.millis())
                .bind(claim.lease_until.millis())
                .bind(limit as i64)
                .fetch_all(&mut *conn)
                .await?;
                let mut claimed = Vec::with_capacity(rows.len());
                for row in rows {
                    let saga = SagaRun::try_from(row)?;
                    if let Some((saga, first)) = start_of(&saga, &claim) {
                        let id = saga.id.to_string();
                        sqlx::query("UPDATE saga_runs SET status = ?, updated_at = ? WHERE id = ?")
                            .bind(saga.status.as_str())
                            .bind(saga.updated_at.millis())
                            .bind(&id)
                            .execute(&mut *conn)
                            .await?;
                        upsert_step(conn, &id, &first).await?;
                        claimed.push(ClaimedSaga {
                            saga,
                            ledger: vec![first],
                            first_step_started: true,
                        });
                        continue;
                    }
                    let ledger = ledger(conn, &saga).await?;
                    claimed.push(ClaimedSaga {
                        saga,
                        ledger,
                        first_step_started: false,
                    });
                }
                claimed.sort_by_key(|c| (c.saga.created_at, c.saga.id));
                Ok(claimed)
            })
        })
        .await
    }

    async fn renew_leases(
        &self,
        owner: &str,
        ids: &[SagaId],
        until: Timestamp,
    ) -> StoreResult<Vec<LeaseState>> {
        let owner = owner.to_string();
        let ids = ids.to_vec();
        self.write((owner, ids), move |conn, data| {
            let (owner, ids) = data.clone();
            Box::pin(async move {
                let mut states = Vec::with_capacity(ids.len());
                for id in ids {
                    let cancel: Option<bool> = sqlx::query_scalar(
                        "UPDATE saga_runs SET lease_expires_at = ? WHERE id = ? AND lease_owner = ?
                         RETURNING cancel_requested",
                    )
                    .bind(until.millis())
                    .bind(id.to_string())
                    .bind(&owner)
                    .fetch_optional(&mut *conn)
                    .await?;
                    states.push(LeaseState {
                        saga_id: id,
                        held: cancel.is_some(),
                        cancel_requested: cancel.unwrap_or(false),
                    });
                }
                Ok(states)
            })
        })
        .await
    }

    async fn release_leases(&self, owner: &str, ids: &[SagaId]) -> StoreResult<()> {
        let owner = owner.to_string();
        let ids = ids.to_vec();
        self.write((owner, ids), move |conn, data| {
            let (owner, ids) = data.clone();
            Box::pin(async move {
                for id in ids {
                    sqlx::query(
                        "UPDATE saga_runs SET lease_owner = NULL, lease_expires_at = NULL WHERE id = ? AND lease_owner = ?",
                    )
                    .bind(id.to_string())
                    .bind(&owner)
                    .execute(&mut *conn)
                    .await?;
                }
                Ok(())
            })
        })
        .await
    }

    async fn apply(&self, transition: Transition) -> StoreResult<Applied> {
        let (reply, rx) = oneshot::channel();
        let job: Job = Box::new(TransitionJob {
            transition,
            result: None,
            reply,
        });
        self.enqueue(job, rx).await
    }
}

impl std::fmt::Debug for SqliteStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqliteStore").finish_non_exhaustive()
    }
}
