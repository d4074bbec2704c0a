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

mod admin;
mod budgets;
mod catalog;
mod drift;
mod mailbox;
mod schedules;
mod slots;
mod transition;
use transition::{apply_transition, pin, upsert_step};
mod webhooks;
mod writer;

use super::schema::Schema;
use super::space::Space;
use super::{
    Admission, Applied, ClaimedSaga, ConsoleSession, CreateSaga, DeletePlugin, Fence, Health,
    Lease, LeaseState, LedgerResourceRow, NewSaga, PLUGIN_COLUMNS, Pins, PluginRow, PutPlugin,
    PutTemplate, RESOURCE_COLUMNS, ResourceFilter, ResourceRow, SAGA_COLUMNS, SECRET_COLUMNS,
    STEP_COLUMNS, SagaFilter, SagaRow, SecretRow, StepRow, Store, StoreError, StoreResult,
    SummaryRow, TEMPLATE_COLUMNS, TemplateRow, Transition, grants_from_row, mark_omitted,
    pinned_by, pinned_digests, same_template, shown_step_columns, summary_columns, to_json,
};
use crate::config::{Migrations, SQLITE_PAGE_BYTES, StoreConfig};
use crate::model::Grants;
use crate::model::{
    Arrival, Digest, PluginInfo, Resource, SagaDetail, SagaId, SagaResource, SagaRun, SagaStatus,
    SagaSummary, Slot, SlotState, StepResult, Template, Timestamp, arrive,
};
use crate::model::{SealedSecret, SecretInfo, SecretName};
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
        SqliteStore::open_with(path, &StoreConfig::default()).await
    }

    /// [`SqliteStore::open`], with the store's settings.
    pub async fn open_with(path: &Path, settings: &StoreConfig) -> StoreResult<SqliteStore> {
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
        let before = recorded_migrations(&migrations).await?;
        match settings.migrations {
            Migrations::Apply => MIGRATIONS.run(&migrations).await?,
            Migrations::Require => Schema::compare(&MIGRATIONS, &before).require_current()?,
        }
        // A full scan of every child table: only after a migration ran.
        let dangling: Vec<(String, Option<i64>, String)> =
            if recorded_migrations(&migrations).await?.len() > before.len() {
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
        // Past `max_page_count` a write fails exactly as on a full disk
        // (SQLITE_FULL).
        let max_pages = settings
            .max_database_bytes
            .map(|bytes| (bytes / SQLITE_PAGE_BYTES).max(1));
        let conn = tokio::task::spawn_blocking(move || open_writer(&path, max_pages))
            .await
            .map_err(|e| StoreError::WriteFailed(format!("opening the writer: {e}")))??;
        let reads = SqlitePoolOptions::new()
            .max_connections(8)
            .min_connections(1)
            .connect_with(options.read_only(true))
            .await?;
        Ok(SqliteStore {
            reads,
            writer: Writer::start(conn, Space::new(settings.degraded_for))?,
            catalog: Arc::default(),
            _lock: lock,
        })
    }

    /// Every plugin's metadata: the in-memory copy, or the table read again
    /// when it changed since.
    async fn plugins(&self) -> StoreResult<Arc<Plugins>> {
        if let Some(plugins) = self.catalog.current() {
            return Ok(plugins);
        }
        let read_at = self.catalog.read_begins();
        let rows: Vec<PluginRow> = sqlx::query_as(&format!(
            "SELECT {PLUGIN_COLUMNS} FROM plugins ORDER BY created_at DESC, rowid DESC"
        ))
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

/// The migrations the database records as applied: version and checksum
/// (none when it is new).
async fn recorded_migrations(pool: &SqlitePool) -> StoreResult<Vec<(i64, Vec<u8>)>> {
    let tracked: bool = sqlx::query_scalar(
        "SELECT EXISTS (SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = '_sqlx_migrations')",
    )
    .fetch_one(pool)
    .await?;
    if !tracked {
        return Ok(Vec::new());
    }
    Ok(sqlx::query_as(
        "SELECT version, checksum FROM _sqlx_migrations WHERE success ORDER BY version",
    )
    .fetch_all(pool)
    .await?)
}

/// The writing connection, with the same settings as the sqlx ones, after
/// releasing every lease in the file: they are from a process that is gone
/// (we hold the lock), so its sagas can resume now rather than at expiry.
fn open_writer(path: &Path, max_page_count: Option<u64>) -> StoreResult<Connection> {
    let conn = Connection::open(path)?;
    conn.busy_timeout(BUSY_TIMEOUT)?;
    // `journal_mode` answers with a row; the others answer nothing.
    conn.query_row("PRAGMA journal_mode = WAL", [], |_| Ok(()))?;
    conn.execute_batch("PRAGMA synchronous = FULL; PRAGMA foreign_keys = ON;")?;
    if let Some(pages) = max_page_count {
        conn.query_row(&format!("PRAGMA max_page_count = {pages}"), [], |_| Ok(()))?;
    }
    conn.set_prepared_statement_cache_capacity(64);
    let released = conn.execute(
        "UPDATE saga_runs SET lease_owner = NULL, lease_expires_at = NULL, lease_epoch = lease_epoch + 1
         WHERE lease_owner IS NOT NULL",
        [],
    )?;
    if released > 0 {
        tracing::info!(released, "released leases left by a previous process");
    }
    Ok(conn)
}

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
        pause_requested: r.get(9)?,
        deployment_id: r.get(10)?,
        triggered_by: r.get(11)?,
        template: r.get(12)?,
        template_version: r.get(13)?,
        actions: r.get(14)?,
        version: r.get(15)?,
        created_at: r.get(16)?,
        updated_at: r.get(17)?,
        trace_parent: r.get(18)?,
        concurrency: r.get(19)?,
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
        waiting_until: r.get(11)?,
        polls: r.get(12)?,
        wait_started_at: r.get(13)?,
        compensate_attempt_base: r.get(14)?,
        calls: r.get(15)?,
        received: r.get(16)?,
        correlation_key: r.get(17)?,
        attempt_base: r.get(18)?,
        wait_for: r.get(19)?,
    })
}

/// A template row read on the writer, in [`TEMPLATE_COLUMNS`]' order.
fn template_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<TemplateRow> {
    Ok(TemplateRow {
        name: r.get(0)?,
        version: r.get(1)?,
        description: r.get(2)?,
        steps: r.get(3)?,
        inputs_schema: r.get(4)?,
        created_at: r.get(5)?,
        created_by: r.get(6)?,
        concurrency: r.get(7)?,
    })
}

/// A plugin row read on the writer, in [`PLUGIN_COLUMNS`]' order.
fn plugin_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<PluginRow> {
    Ok(PluginRow {
        digest: r.get(0)?,
        name: r.get(1)?,
        size: r.get(2)?,
        created_at: r.get(3)?,
        current: r.get(4)?,
        contract: r.get(5)?,
    })
}

async fn ledger(
    conn: &mut SqliteConnection,
    saga: &SagaRun,
    columns: &str,
) -> StoreResult<Vec<StepResult>> {
    let rows: Vec<StepRow> = sqlx::query_as(&format!(
        "SELECT {columns} FROM saga_step_results WHERE saga_id = ? ORDER BY step_index"
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

impl SqliteStore {
    /// A saga with its ledger and resources in one read transaction (one
    /// consistent snapshot); outputs past `shown` left out.
    async fn detail(&self, id: SagaId, shown: Option<usize>) -> StoreResult<Option<SagaDetail>> {
        let mut tx = self.reads.begin().await?;
        let Some(saga) = saga_by_id(&mut tx, &id.to_string()).await? else {
            return Ok(None);
        };
        let columns = shown.map_or_else(|| STEP_COLUMNS.to_string(), shown_step_columns);
        let mut steps = ledger(&mut tx, &saga, &columns).await?;
        if let Some(shown) = shown {
            let omitted: Vec<(i64, i64)> = sqlx::query_as(
                "SELECT step_index, octet_length(output) FROM saga_step_results
                 WHERE saga_id = ? AND octet_length(output) > ?",
            )
            .bind(id.to_string())
            .bind(shown as i64)
            .fetch_all(&mut *tx)
            .await?;
            mark_omitted(&mut steps, &omitted);
        }
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
        let slots = if saga.concurrency.is_empty() {
            Vec::new()
        } else {
            slots::of_saga(&mut tx, &id.to_string()).await?
        };
        tx.commit().await?;
        Ok(Some(SagaDetail {
            saga,
            steps,
            resources,
            slots,
        }))
    }
}

#[async_trait]
impl Store for SqliteStore {
    fn backend(&self) -> &'static str {
        "sqlite"
    }

    async fn health(&self) -> StoreResult<Health> {
        sqlx::query("SELECT 1").execute(&self.reads).await?;
        if self.writer.is_closed() {
            return Err(StoreError::Closed);
        }
        Ok(match self.writer.space().degraded() {
            Some(why) => Health::Degraded(why),
            None => Health::Ok,
        })
    }

    async fn schema(&self) -> StoreResult<Schema> {
        let recorded = recorded_migrations(&self.reads).await?;
        Ok(Schema::compare(&MIGRATIONS, &recorded))
    }

    async fn put_plugin(&self, info: &PluginInfo, wasm: &[u8]) -> StoreResult<PutPlugin> {
        admin::put_plugin(self, info, wasm).await
    }

    async fn plugin(&self, digest: &Digest) -> StoreResult<Option<PluginInfo>> {
        admin::plugin(self, digest).await
    }

    async fn plugin_by_name(&self, name: &str) -> StoreResult<Option<PluginInfo>> {
        admin::plugin_by_name(self, name).await
    }

    async fn plugin_bytes(&self, digest: &Digest) -> StoreResult<Option<Vec<u8>>> {
        admin::plugin_bytes(self, digest).await
    }

    async fn list_plugins(&self) -> StoreResult<Vec<PluginInfo>> {
        admin::list_plugins(self).await
    }

    async fn delete_plugin(&self, digest: &Digest) -> StoreResult<DeletePlugin> {
        admin::delete_plugin(self, digest).await
    }

    async fn create_saga(&self, new: NewSaga) -> StoreResult<CreateSaga> {
        self.writer
            .write(move |conn| {
                let NewSaga {
                    mut saga,
                    idempotency,
                    mut lease,
                    mut ledger,
                    mut ready_at,
                } = new;
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
                let id = saga.id.to_string();
                let arrival = if saga.concurrency.is_empty() {
                    Arrival::Admitted
                } else {
                    arrive(&saga.concurrency, &slots::live_on(conn, &saga.concurrency, &id)?)
                };
                match &arrival {
                    Arrival::Rejected(blocked) => {
                        return Ok(CreateSaga::ConcurrencyConflict(blocked.clone()));
                    }
                    Arrival::Queued => {
                        saga.status = SagaStatus::Pending;
                        lease = None;
                        ledger.clear();
                        ready_at = None;
                    }
                    Arrival::Admitted => {}
                }
                conn.prepare_cached(
                    "INSERT INTO saga_runs (id, kind, status, steps, inputs, current_step_index, context, error,
                         cancel_requested, pause_requested, deployment_id, triggered_by, template, template_version,
                         actions, version, idempotency_key, request_hash, lease_owner, lease_epoch, lease_expires_at,
                         ready_at, created_at, updated_at, trace_parent, concurrency)
                     VALUES (?, ?, ?, ?, ?, ?, ?, NULL, 0, 0, ?, ?, ?, ?, ?, 0, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
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
                    saga.template,
                    saga.template_version.map(i64::from),
                    to_json(&saga.actions),
                    idempotency.as_ref().map(|(k, _)| k.as_str()),
                    idempotency.as_ref().map(|(_, h)| h.as_str()),
                    lease.as_ref().map(|l| &*l.owner),
                    i64::from(lease.is_some()),
                    lease.as_ref().map(|l| l.now.plus(l.ttl).millis()),
                    ready_at.map(Timestamp::millis),
                    saga.created_at.millis(),
                    saga.updated_at.millis(),
                    saga.trace_parent,
                    to_json(&saga.concurrency),
                ])?;
                if let Some(gone) = pin(conn, &id, &pinned_digests(&saga.plan))? {
                    // Undone by the job's savepoint (or its batch's rollback).
                    return Err(StoreError::PinFailed(gone));
                }
                for row in &ledger {
                    upsert_step(conn, &id, row)?;
                }
                if !saga.concurrency.is_empty() {
                    let state = match arrival {
                        Arrival::Queued => SlotState::Queued,
                        _ => SlotState::Holding,
                    };
                    slots::insert(conn, &saga, state)?;
                }
                if arrival == Arrival::Queued {
                    return Ok(CreateSaga::Queued(saga));
                }
                Ok(CreateSaga::Created(ClaimedSaga {
                    epoch: u64::from(lease.is_some()),
                    saga,
                    ledger,
                    slots_held: true,
                }))
            })
            .await
            .or_else(|e| match e {
                StoreError::PinFailed(gone) => Ok(CreateSaga::PluginGone(gone)),
                other => Err(other),
            })
    }

    async fn saga(&self, id: SagaId) -> StoreResult<Option<SagaDetail>> {
        self.detail(id, None).await
    }

    async fn saga_shown(&self, id: SagaId, shown_bytes: usize) -> StoreResult<Option<SagaDetail>> {
        self.detail(id, Some(shown_bytes)).await
    }

    async fn step_output(&self, id: SagaId, index: u32) -> StoreResult<Option<String>> {
        Ok(sqlx::query_scalar(
            "SELECT output FROM saga_step_results WHERE saga_id = ? AND step_index = ?",
        )
        .bind(id.to_string())
        .bind(i64::from(index))
        .fetch_optional(&self.reads)
        .await?
        .flatten())
    }

    async fn count_status(&self, status: SagaStatus) -> StoreResult<u64> {
        let n: i64 = sqlx::query_scalar("SELECT count(*) FROM saga_runs WHERE status = ?")
            .bind(status.as_str())
            .fetch_one(&self.reads)
            .await?;
        Ok(n as u64)
    }

    async fn list_resources(&self, filter: &ResourceFilter) -> StoreResult<Vec<Resource>> {
        let (after_kind, after_id) = filter.after.clone().unzip();
        let rows: Vec<LedgerResourceRow> = sqlx::query_as(&format!(
            "SELECT {RESOURCE_COLUMNS} FROM resources
             WHERE (?1 IS NULL OR kind = ?1) AND (?2 IS NULL OR deployment_id = ?2)
               AND (?3 IS NULL OR saga_id = ?3) AND (?4 IS NULL OR state = ?4)
               AND (?5 IS NULL OR (kind, external_id) > (?5, ?6))
               AND (?8 IS NULL OR drift = ?8)
             ORDER BY kind, external_id LIMIT ?7"
        ))
        .bind(filter.kind.as_deref())
        .bind(filter.deployment_id.as_deref())
        .bind(filter.saga_id.map(|id| id.to_string()))
        .bind(filter.state.map(|s| s.as_str()))
        .bind(after_kind)
        .bind(after_id)
        .bind(filter.limit as i64)
        .bind(filter.drift.map(|d| d.as_str()))
        .fetch_all(&self.reads)
        .await?;
        rows.into_iter().map(Resource::try_from).collect()
    }

    async fn list_sagas(&self, filter: &SagaFilter) -> StoreResult<Vec<SagaSummary>> {
        let (before_at, before_id) = match filter.before {
            Some((at, id)) => (Some(at.millis()), Some(id.to_string())),
            None => (None, None),
        };
        let rows: Vec<SummaryRow> = sqlx::query_as(&format!(
            "SELECT {} FROM saga_runs
             WHERE (?1 IS NULL OR status = ?1) AND (?2 IS NULL OR kind = ?2) AND (?3 IS NULL OR deployment_id = ?3)
               AND (?4 IS NULL OR template = ?4)
               AND (?5 IS NULL OR (created_at, id) < (?5, ?6))
             ORDER BY created_at DESC, id DESC LIMIT ?7",
            summary_columns("json_array_length(steps)")
        ))
        .bind(filter.status.map(|s| s.as_str()))
        .bind(filter.kind.as_deref())
        .bind(filter.deployment_id.as_deref())
        .bind(filter.template.as_deref())
        .bind(before_at)
        .bind(before_id)
        .bind(filter.limit as i64)
        .fetch_all(&self.reads)
        .await?;
        rows.into_iter().map(SagaSummary::try_from).collect()
    }

    async fn claim_sagas(&self, claim: &Lease, limit: usize) -> StoreResult<Vec<ClaimedSaga>> {
        let claim = claim.clone();
        self.writer
            .write(move |conn| {
                let now = claim.now.millis();
                let rows = conn
                    .prepare_cached(&format!(
                        "UPDATE saga_runs SET lease_owner = ?1, lease_expires_at = ?3, lease_epoch = lease_epoch + 1
                         WHERE id IN (
                             SELECT id FROM saga_runs
                             WHERE ready_at <= ?2 AND (lease_owner IS NULL OR lease_expires_at < ?2)
                             ORDER BY ready_at, id LIMIT ?4)
                         RETURNING {SAGA_COLUMNS}, lease_epoch",
                    ))?
                    .query_map(
                        params![
                            &*claim.owner,
                            now,
                            claim.now.plus(claim.ttl).millis(),
                            limit as i64
                        ],
                        |r| Ok((saga_row(r)?, r.get::<_, i64>(SAGA_COLUMNS.split(',').count())?)),
                    )?
                    .collect::<Result<Vec<_>, _>>()?;
                let mut claimed = Vec::with_capacity(rows.len());
                for (row, epoch) in rows {
                    let saga = SagaRun::try_from(row)?;
                    let ledger = ledger_on(conn, &saga)?;
                    let slots_held = saga.concurrency.is_empty()
                        || !slots::queued(conn, &saga.id.to_string())?;
                    claimed.push(ClaimedSaga {
                        saga,
                        ledger,
                        epoch: epoch as u64,
                        slots_held,
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
        held: &[(SagaId, u64)],
        ttl: Duration,
        now: Timestamp,
    ) -> StoreResult<Vec<LeaseState>> {
        let owner = owner.to_string();
        let held = held.to_vec();
        self.writer
            .write(move |conn| {
                let mut renew = conn.prepare_cached(
                    "UPDATE saga_runs SET lease_expires_at = ? WHERE id = ? AND lease_owner = ? AND lease_epoch = ?
                     RETURNING cancel_requested, pause_requested",
                )?;
                let until = now.plus(ttl).millis();
                let mut states = Vec::with_capacity(held.len());
                for (id, epoch) in held {
                    let flags: Option<(bool, bool)> = renew
                        .query_row(
                            params![until, id.to_string(), owner, epoch as i64],
                            |r| Ok((r.get(0)?, r.get(1)?)),
                        )
                        .optional()?;
                    states.push(LeaseState {
                        saga_id: id,
                        held: flags.is_some(),
                        cancel_requested: flags.is_some_and(|f| f.0),
                        pause_requested: flags.is_some_and(|f| f.1),
                    });
                }
                Ok(states)
            })
            .await
    }

    async fn release_leases(&self, owner: &str, held: &[(SagaId, u64)]) -> StoreResult<()> {
        let owner = owner.to_string();
        let held = held.to_vec();
        self.writer
            .write(move |conn| {
                let mut release = conn.prepare_cached(
                    "UPDATE saga_runs SET lease_owner = NULL, lease_expires_at = NULL
                     WHERE id = ? AND lease_owner = ? AND lease_epoch = ?",
                )?;
                for (id, epoch) in held {
                    release.execute(params![id.to_string(), owner, epoch as i64])?;
                }
                Ok(())
            })
            .await
    }

    async fn writable(&self) {
        self.writer.space().writable().await
    }

    async fn grants(&self, plugin_name: &str) -> StoreResult<Option<Grants>> {
        admin::grants(self, plugin_name).await
    }

    async fn put_grants(
        &self,
        plugin_name: &str,
        grants: &Grants,
        now: Timestamp,
    ) -> StoreResult<()> {
        admin::put_grants(self, plugin_name, grants, now).await
    }

    async fn delete_ended(&self, before: Timestamp, limit: usize) -> StoreResult<usize> {
        let sql = format!(
            "DELETE FROM saga_runs WHERE id IN (
                 SELECT id FROM saga_runs
                 WHERE status IN {} AND updated_at < ?1
                 ORDER BY updated_at, id LIMIT ?2)",
            SagaStatus::sql_list(&SagaStatus::ended())
        );
        self.writer
            .write(move |conn| {
                Ok(conn
                    .prepare_cached(&sql)?
                    .execute(params![before.millis(), limit as i64])?)
            })
            .await
    }

    async fn put_template(&self, template: &Template) -> StoreResult<PutTemplate> {
        admin::put_template(self, template).await
    }

    async fn template(&self, name: &str, version: Option<u32>) -> StoreResult<Option<Template>> {
        admin::template(self, name, version).await
    }

    async fn list_templates(&self) -> StoreResult<Vec<Template>> {
        admin::list_templates(self).await
    }

    async fn delete_template(&self, name: &str, now: Timestamp) -> StoreResult<bool> {
        admin::delete_template(self, name, now).await
    }

    async fn put_secret(&self, secret: &SealedSecret) -> StoreResult<()> {
        admin::put_secret(self, secret).await
    }

    async fn list_secrets(&self) -> StoreResult<Vec<SecretInfo>> {
        admin::list_secrets(self).await
    }

    async fn delete_secret(&self, name: &SecretName) -> StoreResult<bool> {
        admin::delete_secret(self, name).await
    }

    async fn put_session(&self, session: &ConsoleSession, now: Timestamp) -> StoreResult<()> {
        admin::put_session(self, session, now).await
    }

    async fn session(
        &self,
        id_sha256: &str,
        now: Timestamp,
    ) -> StoreResult<Option<ConsoleSession>> {
        admin::session(self, id_sha256, now).await
    }

    async fn delete_session(&self, id_sha256: &str) -> StoreResult<()> {
        admin::delete_session(self, id_sha256).await
    }

    async fn sealed_secrets(&self, names: &[SecretName]) -> StoreResult<Vec<SealedSecret>> {
        admin::sealed_secrets(self, names).await
    }

    async fn apply(&self, transition: Transition) -> StoreResult<Applied> {
        self.writer
            .write(move |conn| apply_transition(conn, &transition))
            .await
    }

    async fn admit_saga(
        &self,
        id: SagaId,
        owner: &str,
        epoch: u64,
        version: u64,
        now: Timestamp,
    ) -> StoreResult<Admission> {
        let owner = owner.to_string();
        self.writer
            .write(move |conn| {
                slots::admit_saga(conn, &id.to_string(), &owner, epoch, version, now)
            })
            .await
    }

    async fn concurrency_key(&self, key: &str) -> StoreResult<Vec<Slot>> {
        slots::of_key(self, key).await
    }

    async fn queued_by_prefix(&self) -> StoreResult<Vec<(String, u64)>> {
        slots::queued_by_prefix(self).await
    }
}

impl std::fmt::Debug for SqliteStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqliteStore").finish_non_exhaustive()
    }
}
