//! The embedded store: one SQLite file in WAL mode with `synchronous=FULL`,
//! so a transition acknowledged to the runner or the API is on disk.
//!
//! SQLite allows one writer at a time. Rather than let concurrent callers
//! race for the write lock (and sometimes get "database is locked"), every
//! write goes through one writer thread ([`writer`]) that owns the only
//! writing connection and commits queued writes together (group commit).
//! Each write here is a closure of synchronous statements that the thread
//! runs in the batch's transaction (or, when the writer is idle, the caller
//! runs in place). Reads use a separate sqlx pool, which WAL lets run beside
//! the writer; plugin metadata is read from memory ([`catalog`]).
//!
//! The file belongs to one process at a time (an exclusive lock on
//! `<file>.lock`), so on open every lease in it is from a dead process and is
//! released at once: a restart after SIGKILL resumes its sagas immediately.

mod catalog;
mod writer;

use super::{
    Applied, CancelSaga, Claim, ClaimedSaga, CreateSaga, DeletePlugin, LeaseState, PluginRow,
    PutPlugin, ResourceRow, SAGA_COLUMNS, STEP_COLUMNS, SagaFilter, SagaRow, StepRow, Store,
    StoreError, StoreResult, Transition, pinned_by, start_of, to_json,
};
use crate::model::{
    Digest, PluginInfo, SagaDetail, SagaId, SagaResource, SagaRun, SagaStatus, StepResult,
    Timestamp,
};
use async_trait::async_trait;
use catalog::{Catalog, Plugins};
use rusqlite::{Connection, OptionalExtension, params};
use sqlx::SqliteConnection;
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous,
};
use std::path::Path;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;
use writer::Writer;

static MIGRATIONS: sqlx::migrate::Migrator = sqlx::migrate!("../migrations/sqlite");

/// How long a statement waits for a lock before it fails.
const BUSY_TIMEOUT: Duration = Duration::from_secs(10);

/// The SQLite store. See the module docs.
pub struct SqliteStore {
    reads: SqlitePool,
    writer: Writer,
    catalog: Arc<Catalog>,
    _lock: std::fs::File,
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
            .busy_timeout(BUSY_TIMEOUT);
        // Migrations through a one-connection pool: `Migrator::run` on a bare
        // connection makes the caller's future lose `Send`. Foreign keys are
        // off there, as SQLite's table-rebuild procedure requires (dropping a
        // parent table with them on deletes its children), and checked after.
        let migrations = SqlitePoolOptions::new()
            .max_connections(1)
            .connect_with(options.clone().foreign_keys(false))
            .await?;
        let before = applied_migrations(&migrations).await?;
        MIGRATIONS.run(&migrations).await?;
        // A full scan of every child table: only after a migration ran.
        let dangling: Vec<(String, Option<i64>, String)> =
            if applied_migrations(&migrations).await? > before {
                sqlx::query_as("SELECT \"table\", rowid, parent FROM pragma_foreign_key_check")
                    .fetch_all(&migrations)
                    .await?
            } else {
                Vec::new()
            };
        migrations.close().await;
        if let Some((table, rowid, parent)) = dangling.first() {
            return Err(StoreError::Corrupt(format!(
                "after the migrations, {} row(s) refer to a missing parent, the first in {table} \
                 (rowid {rowid:?}) to {parent}",
                dangling.len()
            )));
        }

        let path = path.to_path_buf();
        let conn = tokio::task::spawn_blocking(move || open_writer(&path))
            .await
            .map_err(|e| StoreError::WriteFailed(format!("opening the writer: {e}")))??;
        let reads = SqlitePoolOptions::new()
            .max_connections(8)
            .min_connections(1)
            .connect_with(options.read_only(true))
            .await?;
        Ok(SqliteStore {
            reads,
            writer: Writer::start(conn)?,
            catalog: Arc::default(),
            _lock: lock,
        })
    }
}

impl SqliteStore {
    /// Every plugin's metadata: the in-memory copy, or the table read again
    /// when it changed since.
    async fn plugins(&self) -> StoreResult<Arc<Plugins>> {
        if let Some(plugins) = self.catalog.current() {
            return Ok(plugins);
        }
        let read_at = self.catalog.read_begins();
        let rows: Vec<PluginRow> = sqlx::query_as(
            "SELECT digest, name, size, created_at FROM plugins ORDER BY created_at DESC, rowid DESC",
        )
        .fetch_all(&self.reads)
        .await?;
        let plugins = Arc::new(Plugins::new(
            rows.into_iter()
                .map(PluginInfo::try_from)
                .collect::<StoreResult<_>>()?,
        ));
        self.catalog.keep(read_at, plugins.clone());
        Ok(plugins)
    }
}

/// How many migrations the database has had (none when it is new).
async fn applied_migrations(pool: &SqlitePool) -> StoreResult<i64> {
    let tracked: bool = sqlx::query_scalar(
        "SELECT EXISTS (SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = '_sqlx_migrations')",
    )
    .fetch_one(pool)
    .await?;
    if !tracked {
        return Ok(0);
    }
    Ok(
        sqlx::query_scalar("SELECT COUNT(*) FROM _sqlx_migrations WHERE success")
            .fetch_one(pool)
            .await?,
    )
}

/// The writing connection, with the same settings as the sqlx ones, after
/// releasing every lease in the file: they are from a process that is gone
/// (we hold the lock), so its sagas can resume now rather than at expiry.
fn open_writer(path: &Path) -> StoreResult<Connection> {
    let conn = Connection::open(path)?;
    conn.busy_timeout(BUSY_TIMEOUT)?;
    // `journal_mode` answers with a row; the others answer nothing.
    conn.query_row("PRAGMA journal_mode = WAL", [], |_| Ok(()))?;
    conn.execute_batch("PRAGMA synchronous = FULL; PRAGMA foreign_keys = ON;")?;
    conn.set_prepared_statement_cache_capacity(64);
    let released = conn.execute(
        "UPDATE saga_runs SET lease_owner = NULL, lease_expires_at = NULL WHERE lease_owner IS NOT NULL",
        [],
    )?;
    if released > 0 {
        tracing::info!(released, "released leases left by a previous process");
    }
    Ok(conn)
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

/// A saga row read on the writer, in [`SAGA_COLUMNS`]' order.
fn saga_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<SagaRow> {
    Ok(SagaRow {
        id: r.get(0)?,
        kind: r.get(1)?,
        status: r.get(2)?,
        steps: r.get(3)?,
        inputs: r.get(4)?,
        current_step_index: r.get(5)?,
        context: r.get(6)?,
        error: r.get(7)?,
        cancel_requested: r.get(8)?,
        deployment_id: r.get(9)?,
        triggered_by: r.get(10)?,
        created_at: r.get(11)?,
        updated_at: r.get(12)?,
    })
}

/// A ledger row read on the writer, in [`STEP_COLUMNS`]' order.
fn step_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<StepRow> {
    Ok(StepRow {
        step_index: r.get(0)?,
        phase: r.get(1)?,
        status: r.get(2)?,
        output: r.get(3)?,
        error: r.get(4)?,
        attempts: r.get(5)?,
        compensate_attempts: r.get(6)?,
        logs: r.get(7)?,
        started_at: r.get(8)?,
        finished_at: r.get(9)?,
        executed_by: r.get(10)?,
    })
}

/// A plugin row read on the writer.
fn plugin_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<PluginRow> {
    Ok(PluginRow {
        digest: r.get(0)?,
        name: r.get(1)?,
        size: r.get(2)?,
        created_at: r.get(3)?,
    })
}

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

/// [`ledger`], on the writer.
fn ledger_on(conn: &Connection, saga: &SagaRun) -> StoreResult<Vec<StepResult>> {
    let mut stmt = conn.prepare_cached(&format!(
        "SELECT {STEP_COLUMNS} FROM saga_step_results WHERE saga_id = ? ORDER BY step_index"
    ))?;
    let rows = stmt.query_map([saga.id.to_string()], step_row)?;
    rows.map(|r| r?.into_result(&saga.plan)).collect()
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

/// [`saga_by_id`], on the writer.
fn saga_on(conn: &Connection, id: &str) -> StoreResult<Option<SagaRun>> {
    conn.prepare_cached(&format!(
        "SELECT {SAGA_COLUMNS} FROM saga_runs WHERE id = ?"
    ))?
    .query_row([id], saga_row)
    .optional()?
    .map(SagaRun::try_from)
    .transpose()
}

/// Writes a ledger row, unfenced: for a saga being created or claimed in
/// this same transaction, or whose lease this transaction has checked.
fn upsert_step(conn: &Connection, saga_id: &str, step: &StepResult) -> StoreResult<()> {
    const UPSERT: &str = concat!(
        step_insert!(),
        " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        step_on_conflict!()
    );
    // The twelve columns, in `step_insert!`'s order.
    conn.prepare_cached(UPSERT)?.execute(params![
        saga_id,
        step.index as i64,
        step.phase.as_str(),
        step.status.as_str(),
        step.output.as_ref().map(to_json),
        step.error.as_deref(),
        step.attempts as i64,
        step.compensate_attempts as i64,
        to_json(&step.logs),
        step.started_at.map(Timestamp::millis),
        step.finished_at.map(Timestamp::millis),
        step.executed_by.as_deref(),
    ])?;
    Ok(())
}

/// A resource insert, numbered after the same resource's earlier specs
/// (binds: saga id, step index, kind, external id, spec, created_at).
const RESOURCE_INSERT: &str = "INSERT INTO provisioned_resources
     (saga_id, step_index, kind, external_id, spec, spec_version, created_at)
 SELECT ?1, ?2, ?3, ?4, ?5, COALESCE(MAX(spec_version), 0) + 1, ?6
 FROM provisioned_resources WHERE saga_id = ?1 AND kind = ?3 AND external_id = ?4";

/// The saga row's update, fenced by the lease; `RETURNING` says whether the
/// lease was held (no row: it was not) and whether a cancel was requested.
/// `$status` sets the status or not: SQLite rewrites a partial index's entry
/// whenever an UPDATE assigns a column of its condition, even to the same
/// value, so a step that leaves the status alone must not name it, or each
/// step's commit writes a page of `saga_runs_unfinished` for nothing.
macro_rules! fenced_saga_update {
    ($status:literal) => {
        concat!(
            "UPDATE saga_runs SET updated_at = ?1, ",
            $status,
            " current_step_index = COALESCE(?3, current_step_index),
     context = COALESCE(?4, context),
     error = COALESCE(?5, error),
     lease_owner = CASE WHEN ?6 THEN NULL ELSE lease_owner END,
     lease_expires_at = CASE WHEN ?6 THEN NULL ELSE lease_expires_at END
 WHERE id = ?7 AND lease_owner = ?8
 RETURNING cancel_requested"
        )
    };
}

/// A transition. The saga row's update goes first and is the fence: without
/// the lease it matches no row, and the transition fails with nothing
/// written. With it, the ledger rows and resources follow in the same write
/// transaction, which no other writer can enter, so the lease it saw still
/// holds and they need no fence of their own; a step's start is written
/// only if [`Applied::found`] says the cancel the update saw allows it. The
/// PostgreSQL store applies a transition the same way.
fn apply_transition(conn: &Connection, t: &Transition) -> StoreResult<Applied> {
    let id = t.saga_id.to_string();
    let ends = t.saga.status.is_some_and(SagaStatus::is_final);
    let update = match t.saga.status {
        Some(_) => fenced_saga_update!("status = ?2,"),
        // ?2 (NULL) is bound but unused.
        None => fenced_saga_update!(""),
    };
    let cancel_requested: bool = conn
        .prepare_cached(update)?
        .query_row(
            params![
                t.now.millis(),
                t.saga.status.map(SagaStatus::as_str),
                t.saga.current_step_index.map(i64::from),
                t.saga.context.as_ref().map(to_json),
                t.saga.error.as_ref().map(to_json),
                ends,
                id,
                t.owner,
            ],
            |r| r.get(0),
        )
        .optional()?
        .ok_or(StoreError::LeaseLost(t.saga_id))?;
    for step in &t.steps {
        upsert_step(conn, &id, step)?;
    }
    if !t.resources.is_empty() {
        let mut insert = conn.prepare_cached(RESOURCE_INSERT)?;
        for (step_index, resource) in &t.resources {
            insert.execute(params![
                id,
                *step_index as i64,
                resource.kind,
                resource.external_id,
                to_json(&resource.spec),
                t.now.millis(),
            ])?;
        }
    }
    let applied = Applied::found(t, cancel_requested);
    if let Some(step) = t.start.as_ref().filter(|_| applied.started) {
        upsert_step(conn, &id, step)?;
    }
    Ok(applied)
}

#[async_trait]
impl Store for SqliteStore {
    fn backend(&self) -> &'static str {
        "sqlite"
    }

    async fn health(&self) -> StoreResult<()> {
        sqlx::query("SELECT 1").execute(&self.reads).await?;
        if self.writer.is_closed() {
            return Err(StoreError::Closed);
        }
        Ok(())
    }

    async fn put_plugin(&self, info: &PluginInfo, wasm: &[u8]) -> StoreResult<PutPlugin> {
        let info = info.clone();
        let wasm = wasm.to_vec();
        let catalog = self.catalog.clone();
        self.writer
            .write_then(move |conn| {
                let inserted = conn
                    .prepare_cached(
                        "INSERT INTO plugins (digest, name, size, wasm, created_at) VALUES (?, ?, ?, ?, ?)
                         ON CONFLICT (digest) DO NOTHING",
                    )?
                    .execute(params![
                        info.digest.as_str(),
                        info.name,
                        info.size as i64,
                        wasm,
                        info.created_at.millis(),
                    ])?;
                if inserted == 1 {
                    return Ok(PutPlugin::Created(info));
                }
                let row = conn
                    .prepare_cached("SELECT digest, name, size, created_at FROM plugins WHERE digest = ?")?
                    .query_row([info.digest.as_str()], plugin_row)?;
                Ok(PutPlugin::Existing(row.try_into()?))
            }, move || catalog.changed())
            .await
    }

    async fn plugin(&self, digest: &Digest) -> StoreResult<Option<PluginInfo>> {
        Ok(self.plugins().await?.by_digest(digest))
    }

    async fn plugin_by_name(&self, name: &str) -> StoreResult<Option<PluginInfo>> {
        Ok(self.plugins().await?.by_name(name))
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
        Ok(self.plugins().await?.newest_first.clone())
    }

    async fn delete_plugin(&self, digest: &Digest) -> StoreResult<DeletePlugin> {
        let digest = digest.clone();
        let catalog = self.catalog.clone();
        self.writer
            .write_then(
                move |conn| {
                    let exists = conn
                        .prepare_cached("SELECT 1 FROM plugins WHERE digest = ?")?
                        .exists([digest.as_str()])?;
                    if !exists {
                        return Ok(DeletePlugin::NotFound);
                    }
                    // The plan is JSON text; a digest is 71 unique characters, so
                    // a substring match is exact.
                    let pinned = conn
                        .prepare_cached(&format!(
                            "SELECT id FROM saga_runs WHERE status IN ({}) AND instr(steps, ?) > 0
                         ORDER BY created_at LIMIT 10",
                            status_list(UNFINISHED)
                        ))?
                        .query_map([format!("\"{}\"", digest.as_str())], |r| {
                            r.get::<_, String>(0)
                        })?
                        .collect::<Result<Vec<_>, _>>()?;
                    if !pinned.is_empty() {
                        return pinned_by(&pinned);
                    }
                    conn.prepare_cached("DELETE FROM plugins WHERE digest = ?")?
                        .execute([digest.as_str()])?;
                    Ok(DeletePlugin::Deleted)
                },
                move || catalog.changed(),
            )
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
        self.writer
            .write(move |conn| {
                if let Some((key, hash)) = &idempotency {
                    let existing: Option<(String, Option<String>)> = conn
                        .prepare_cached(
                            "SELECT id, request_hash FROM saga_runs WHERE idempotency_key = ?",
                        )?
                        .query_row([key], |r| Ok((r.get(0)?, r.get(1)?)))
                        .optional()?;
                    if let Some((id, existing_hash)) = existing {
                        let found = saga_on(conn, &id)?
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
                let id = saga.id.to_string();
                conn.prepare_cached(
                    "INSERT INTO saga_runs (id, kind, status, steps, inputs, current_step_index, context, error,
                         cancel_requested, deployment_id, triggered_by, idempotency_key, request_hash,
                         lease_owner, lease_expires_at, created_at, updated_at)
                     VALUES (?, ?, ?, ?, ?, ?, ?, NULL, 0, ?, ?, ?, ?, ?, ?, ?, ?)",
                )?
                .execute(params![
                    id,
                    saga.kind,
                    saga.status.as_str(),
                    to_json(&saga.plan),
                    to_json(&saga.inputs),
                    saga.current_step_index as i64,
                    to_json(&saga.context),
                    saga.deployment_id,
                    saga.triggered_by,
                    idempotency.as_ref().map(|(k, _)| k.as_str()),
                    idempotency.as_ref().map(|(_, h)| h.as_str()),
                    claim.as_ref().map(|c| &*c.owner),
                    claim.as_ref().map(|c| c.lease_until.millis()),
                    saga.created_at.millis(),
                    saga.updated_at.millis(),
                ])?;
                if let Some((_, first)) = &started {
                    upsert_step(conn, &id, first)?;
                }
                Ok(CreateSaga::Created(ClaimedSaga {
                    saga,
                    first_step_started: started.is_some(),
                    ledger: started.map(|(_, first)| vec![first]).unwrap_or_default(),
                }))
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
        self.writer
            .write(move |conn| {
                let Some(saga) = saga_on(conn, &id.to_string())? else {
                    return Ok(CancelSaga::NotFound);
                };
                if saga.status.is_final() {
                    return Ok(CancelSaga::AlreadyEnded(saga));
                }
                conn.prepare_cached(
                    "UPDATE saga_runs SET cancel_requested = 1, updated_at = ? WHERE id = ?",
                )?
                .execute(params![now.millis(), id.to_string()])?;
                Ok(CancelSaga::Requested(SagaRun {
                    cancel_requested: true,
                    updated_at: now,
                    ..saga
                }))
            })
            .await
    }

    async fn claim_sagas(&self, claim: &Claim, limit: usize) -> StoreResult<Vec<ClaimedSaga>> {
        let claim = claim.clone();
        self.writer
            .write(move |conn| {
                let rows = conn
                    .prepare_cached(&format!(
                        "UPDATE saga_runs SET lease_owner = ?1, lease_expires_at = ?3
                         WHERE id IN (
                             SELECT id FROM saga_runs
                             WHERE status IN ({}) AND (lease_owner IS NULL OR lease_expires_at < ?2)
                             ORDER BY created_at, id LIMIT ?4)
                         RETURNING {SAGA_COLUMNS}",
                        status_list(UNFINISHED)
                    ))?
                    .query_map(
                        params![
                            &*claim.owner,
                            claim.now.millis(),
                            claim.lease_until.millis(),
                            limit as i64
                        ],
                        saga_row,
                    )?
                    .collect::<Result<Vec<_>, _>>()?;
                let mut claimed = Vec::with_capacity(rows.len());
                for row in rows {
                    let saga = SagaRun::try_from(row)?;
                    if let Some((saga, first)) = start_of(&saga, &claim) {
                        let id = saga.id.to_string();
                        conn.prepare_cached(
                            "UPDATE saga_runs SET status = ?, updated_at = ? WHERE id = ?",
                        )?
                        .execute(params![
                            saga.status.as_str(),
                            saga.updated_at.millis(),
                            id
                        ])?;
                        upsert_step(conn, &id, &first)?;
                        claimed.push(ClaimedSaga {
                            saga,
                            ledger: vec![first],
                            first_step_started: true,
                        });
                        continue;
                    }
                    let ledger = ledger_on(conn, &saga)?;
                    claimed.push(ClaimedSaga {
                        saga,
                        ledger,
                        first_step_started: false,
                    });
                }
                claimed.sort_by_key(|c| (c.saga.created_at, c.saga.id));
                Ok(claimed)
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
        self.writer
            .write(move |conn| {
                let mut renew = conn.prepare_cached(
                    "UPDATE saga_runs SET lease_expires_at = ? WHERE id = ? AND lease_owner = ?
                     RETURNING cancel_requested",
                )?;
                let mut states = Vec::with_capacity(ids.len());
                for id in ids {
                    let cancel: Option<bool> = renew
                        .query_row(params![until.millis(), id.to_string(), owner], |r| r.get(0))
                        .optional()?;
                    states.push(LeaseState {
                        saga_id: id,
                        held: cancel.is_some(),
                        cancel_requested: cancel.unwrap_or(false),
                    });
                }
                Ok(states)
            })
            .await
    }

    async fn release_leases(&self, owner: &str, ids: &[SagaId]) -> StoreResult<()> {
        let owner = owner.to_string();
        let ids = ids.to_vec();
        self.writer
            .write(move |conn| {
                let mut release = conn.prepare_cached(
                    "UPDATE saga_runs SET lease_owner = NULL, lease_expires_at = NULL
                     WHERE id = ? AND lease_owner = ?",
                )?;
                for id in ids {
                    release.execute(params![id.to_string(), owner])?;
                }
                Ok(())
            })
            .await
    }

    async fn apply(&self, transition: Transition) -> StoreResult<Applied> {
        self.writer
            .write(move |conn| apply_transition(conn, &transition))
            .await
    }
}

impl std::fmt::Debug for SqliteStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqliteStore").finish_non_exhaustive()
    }
}
