//! The shared store: PostgreSQL, for several hosts serving one queue.
//!
//! Same tables and shapes as SQLite (`migrations/postgres`). Hosts claim
//! sagas with `FOR UPDATE SKIP LOCKED` in short transactions, so two hosts
//! never claim one saga and neither waits on the other's locks; every write
//! of a transition is fenced by the lease's fencing number (bumped at every
//! claim) and the saga's version, so a host whose lease was taken over, or
//! two hosts started with one `--node-id`, cannot write over the new owner.
//! Leases expire by the database's clock, never a host's. The
//! runner's transitions are written in groups, one statement for all that
//! arrive together ([`group`]); every other write is its own short
//! transaction. Statements that lock several saga rows lock them in id
//! order, so they never deadlock with each other.

/// The ledger columns of a row that arrives as JSON
/// ([`super::ledger_row_json`]), as `jsonb_to_recordset` declares them.
macro_rules! json_ledger_columns {
    () => {
        "step_index BIGINT, phase TEXT, status TEXT, output TEXT, error TEXT, attempts BIGINT,
         compensate_attempts BIGINT, logs TEXT, started_at BIGINT, finished_at BIGINT, executed_by TEXT,
         waiting_until BIGINT, polls BIGINT, wait_started_at BIGINT, compensate_attempt_base BIGINT,
         calls TEXT, received TEXT, correlation_key TEXT, attempt_base BIGINT, wait_for TEXT"
    };
}

/// Those columns of such a row `r`, in [`step_insert`]'s order after the
/// saga id.
macro_rules! json_ledger_values {
    () => {
        "r.step_index, r.phase, r.status, r.output, r.error, r.attempts, r.compensate_attempts, r.logs,
         r.started_at, r.finished_at, r.executed_by, r.waiting_until, r.polls, r.wait_started_at,
         r.compensate_attempt_base, r.calls, r.received, r.correlation_key, r.attempt_base, r.wait_for"
    };
}

mod admin;
mod budgets;
mod drift;
mod group;
mod mailbox;
mod schedules;
mod slots;
mod transition;
use transition::{apply_transition, first_gone};
mod webhooks;

use super::schema::Schema;
use super::space::Space;
use super::{
    Admission, Applied, ClaimedSaga, ConsoleSession, CreateSaga, DeletePlugin, Fence, Health,
    Lease, LeaseState, LedgerResourceRow, NewSaga, Notice, PLUGIN_COLUMNS, Pins, PluginRow,
    PutPlugin, PutTemplate, RESOURCE_COLUMNS, ResourceFilter, ResourceRow, SAGA_COLUMNS,
    SECRET_COLUMNS, STEP_COLUMNS, SagaFilter, SagaRow, SecretRow, StepRow, Store, StoreError,
    StoreResult, SummaryRow, TEMPLATE_COLUMNS, TemplateRow, Transition, grants_from_row,
    ledger_row_json, mark_omitted, pinned_by, pinned_digests, same_template, shown_step_columns,
    summary_columns, to_json,
};
use crate::config::Migrations;
use crate::model::Grants;
use crate::model::{
    Arrival, Blocked, Digest, PluginInfo, Resource, SagaDetail, SagaId, SagaResource, SagaRun,
    SagaStatus, SagaSummary, Slot, SlotState, StepResult, Template, Timestamp, arrive,
};
use crate::model::{SealedSecret, SecretInfo, SecretName};
use async_trait::async_trait;
use sqlx::postgres::{PgConnectOptions, PgListener, PgPool, PgPoolOptions};
use sqlx::{PgConnection, Postgres, Transaction};
use std::str::FromStr;
use std::time::Duration;

static MIGRATIONS: sqlx::migrate::Migrator = sqlx::migrate!("../migrations/postgres");

/// The database's clock, in milliseconds since the epoch: the one clock
/// every host sharing the database agrees on, for lease expiry and claims.
const DB_NOW: &str = "(extract(epoch from clock_timestamp()) * 1000)::bigint";

/// NOTIFY channels: unclaimed work appeared, and a request (cancel, pause)
/// for a saga id.
const WORK_CHANNEL: &str = "wasaga_work";
const REQUEST_CHANNEL: &str = "wasaga_request";
/// A grant or secret changed.
const ACCESS_CHANNEL: &str = "wasaga_access";
/// Every written transition: `<saga id> <version>` (live events on every
/// host).
const CHANGE_CHANNEL: &str = "wasaga_change";

/// The PostgreSQL store. See the module docs.
pub struct PgStore {
    pool: PgPool,
    group: group::Grouper,
    /// Writes failing for want of space.
    space: Space,
}

impl std::fmt::Debug for PgStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgStore").finish_non_exhaustive()
    }
}

/// The migrations the database records as applied: version and checksum
/// (none when it is new).
async fn recorded_migrations(pool: &PgPool) -> StoreResult<Vec<(i64, Vec<u8>)>> {
    let tracked: bool = sqlx::query_scalar("SELECT to_regclass('_sqlx_migrations') IS NOT NULL")
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

impl PgStore {
    /// Connects and runs the migrations (serialized across hosts by sqlx's
    /// advisory lock). A `max_connections=N` query parameter sizes the pool
    /// (default 16).
    pub async fn connect(url: &str) -> StoreResult<PgStore> {
        PgStore::connect_with(url, &crate::config::StoreConfig::default()).await
    }

    /// [`PgStore::connect`], with the store's settings.
    pub async fn connect_with(
        url: &str,
        config: &crate::config::StoreConfig,
    ) -> StoreResult<PgStore> {
        let (url, max_connections) = split_pool_size(url)?;
        let options = PgConnectOptions::from_str(&url)?.application_name("wasaga");
        let pool = PgPoolOptions::new()
            .max_connections(max_connections)
            .acquire_timeout(Duration::from_secs(10))
            .connect_with(options)
            .await?;
        match config.migrations {
            Migrations::Apply => MIGRATIONS.run(&pool).await?,
            Migrations::Require => Schema::compare(&MIGRATIONS, &recorded_migrations(&pool).await?)
                .require_current()?,
        }
        Ok(PgStore {
            group: group::Grouper::start(pool.clone()),
            pool,
            space: Space::new(config.degraded_for),
        })
    }

    /// The pool, for LISTEN/NOTIFY and tests.
    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    /// Notes a write's outcome for `/healthz`: a full disk marks the store
    /// degraded until a write succeeds.
    fn note<T>(&self, result: StoreResult<T>) -> StoreResult<T> {
        match &result {
            Err(StoreError::StorageFull(why)) => self.space.failed(why),
            Ok(_) => self.space.succeeded(),
            Err(_) => {}
        }
        result
    }
}

/// Takes wasaga's own `max_connections` parameter out of the URL.
fn split_pool_size(url: &str) -> StoreResult<(String, u32)> {
    let Some((base, query)) = url.split_once('?') else {
        return Ok((url.to_string(), 16));
    };
    let mut size = 16;
    let mut rest = Vec::new();
    for pair in query.split('&') {
        match pair.split_once('=') {
            Some(("max_connections", n)) => {
                size = n.parse().ok().filter(|n| *n > 0).ok_or_else(|| {
                    StoreError::BadUrl(format!("max_connections={n} is not a positive number"))
                })?;
            }
            _ => rest.push(pair),
        }
    }
    let url = if rest.is_empty() {
        base.to_string()
    } else {
        format!("{base}?{}", rest.join("&"))
    };
    Ok((url, size))
}

async fn ledger(
    conn: &mut PgConnection,
    saga: &SagaRun,
    columns: &str,
) -> StoreResult<Vec<StepResult>> {
    let rows: Vec<StepRow> = sqlx::query_as(&format!(
        "SELECT {columns} FROM saga_step_results WHERE saga_id = $1 ORDER BY step_index"
    ))
    .bind(saga.id.to_string())
    .fetch_all(&mut *conn)
    .await?;
    rows.into_iter()
        .map(|r| r.into_result(&saga.plan))
        .collect()
}

async fn saga_by_id(conn: &mut PgConnection, id: &str) -> StoreResult<Option<SagaRun>> {
    let row: Option<SagaRow> = sqlx::query_as(&format!(
        "SELECT {SAGA_COLUMNS} FROM saga_runs WHERE id = $1"
    ))
    .bind(id)
    .fetch_optional(&mut *conn)
    .await?;
    row.map(SagaRun::try_from).transpose()
}

impl PgStore {
    /// A saga with its ledger and resources as of one snapshot (REPEATABLE
    /// READ); outputs past `shown` left out.
    async fn detail(&self, id: SagaId, shown: Option<usize>) -> StoreResult<Option<SagaDetail>> {
        let mut tx = self.pool.begin().await?;
        sqlx::query("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ READ ONLY")
            .execute(&mut *tx)
            .await?;
        let Some(saga) = saga_by_id(&mut tx, &id.to_string()).await? else {
            return Ok(None);
        };
        let columns = shown.map_or_else(|| STEP_COLUMNS.to_string(), shown_step_columns);
        let mut steps = ledger(&mut tx, &saga, &columns).await?;
        if let Some(shown) = shown {
            let omitted: Vec<(i64, i64)> = sqlx::query_as(
                "SELECT step_index, octet_length(output)::BIGINT FROM saga_step_results
                 WHERE saga_id = $1 AND octet_length(output) > $2",
            )
            .bind(id.to_string())
            .bind(shown as i64)
            .fetch_all(&mut *tx)
            .await?;
            mark_omitted(&mut steps, &omitted);
        }
        let rows: Vec<ResourceRow> = sqlx::query_as(
            "SELECT step_index, kind, external_id, spec, spec_version, created_at
             FROM provisioned_resources WHERE saga_id = $1 ORDER BY id",
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

/// Inserts a new saga with its pins and first ledger rows, and tells the
/// hosts: one statement, atomic without an explicit transaction. `wake` is
/// a plain SELECT: it runs only if the result refers to it. Answers how
/// many sagas were inserted (0: the idempotency key exists).
async fn insert_saga<'c>(
    exec: impl sqlx::PgExecutor<'c>,
    new: &NewSaga,
) -> Result<(i64, i64), sqlx::Error> {
    let NewSaga {
        saga,
        idempotency,
        lease,
        ledger,
        ready_at,
    } = new;
    let rows: Vec<serde_json::Value> = ledger
        .iter()
        .map(|s| serde_json::Value::Object(ledger_row_json(s)))
        .collect();
    let digests: Vec<String> = pinned_digests(&saga.plan)
        .into_iter()
        .map(String::from)
        .collect();
    sqlx::query_as(&format!(
        concat!(
            "WITH saga AS (
             INSERT INTO saga_runs (id, kind, status, steps, inputs, current_step_index, context, error,
                 cancel_requested, pause_requested, deployment_id, triggered_by, template, template_version,
                 actions, version, idempotency_key, request_hash, lease_owner, lease_epoch, lease_expires_at,
                 ready_at, created_at, updated_at, trace_parent, concurrency)
             VALUES ($1, $2, $3, $4, $5, $6, $7, NULL, FALSE, FALSE, $8, $9, $10, $11, $23, 0, $12, $13, $14,
                 $15, CASE WHEN $14::text IS NULL THEN NULL ELSE {DB_NOW} + $16 END, $17, $18, $19, $24, $25)
             ON CONFLICT (idempotency_key) DO NOTHING
             RETURNING id
         ), pins AS (
             INSERT INTO saga_plugin_pins (digest, saga_id)
             SELECT d, saga.id FROM saga, unnest($20::text[]) AS d
         ), first AS (",
            step_insert!(),
            " SELECT saga.id, ",
            json_ledger_values!(),
            " FROM saga, jsonb_to_recordset($21::jsonb) AS r(",
            json_ledger_columns!(),
            ")
         ), wake AS (
             SELECT pg_notify('wasaga_work', '') FROM saga WHERE $22
         ), changed AS (
             SELECT pg_notify('{CHANGE_CHANNEL}', saga.id || ' 0 ' || COALESCE($14::text, '')) FROM saga
         )
         SELECT (SELECT count(*) FROM saga), (SELECT count(*) FROM wake) + (SELECT count(*) FROM changed)"
        ),
        DB_NOW = DB_NOW,
        CHANGE_CHANNEL = CHANGE_CHANNEL,
    ))
    .bind(saga.id.to_string())
    .bind(&saga.kind)
    .bind(saga.status.as_str())
    .bind(to_json(&saga.plan))
    .bind(to_json(&saga.inputs))
    .bind(saga.current_step_index as i64)
    .bind(to_json(&saga.context))
    .bind(&saga.deployment_id)
    .bind(&saga.triggered_by)
    .bind(&saga.template)
    .bind(saga.template_version.map(i64::from))
    .bind(idempotency.as_ref().map(|(k, _)| k.as_str()))
    .bind(idempotency.as_ref().map(|(_, h)| h.as_str()))
    .bind(lease.as_ref().map(|l| l.owner.to_string()))
    .bind(i64::from(lease.is_some()))
    .bind(lease.as_ref().map_or(0, |l| l.ttl.as_millis() as i64))
    .bind(ready_at.map(Timestamp::millis))
    .bind(saga.created_at.millis())
    .bind(saga.updated_at.millis())
    .bind(&digests)
    .bind(serde_json::Value::Array(rows).to_string())
    .bind(lease.is_none() && ready_at.is_some())
    .bind(to_json(&saga.actions))
    .bind(&saga.trace_parent)
    .bind(to_json(&saga.concurrency))
    .fetch_one(exec)
    .await
}

impl PgStore {
    /// Creates a saga that names concurrency keys, in one transaction
    /// holding its keys' locks: it takes its slots, or is stored queued
    /// (`pending`, no lease, no ledger, not claimable), or (a `reject` key
    /// without room) nothing is stored. Answers what the insert answered
    /// and whether the saga was queued.
    async fn create_keyed(
        &self,
        new: &mut NewSaga,
    ) -> StoreResult<Result<((i64, i64), bool), Blocked>> {
        let mut tx = self.pool.begin().await?;
        if let Some((key, _)) = &new.idempotency {
            let exists: Option<i64> =
                sqlx::query_scalar("SELECT 1 FROM saga_runs WHERE idempotency_key = $1")
                    .bind(key)
                    .fetch_optional(&mut *tx)
                    .await?;
            if exists.is_some() {
                return Ok(Ok(((0, 0), false)));
            }
        }
        let keys = &new.saga.concurrency;
        slots::lock(&mut tx, keys.iter().map(|k| k.key.as_str())).await?;
        let others = slots::live_on(&mut tx, keys, &new.saga.id.to_string()).await?;
        let state = match arrive(keys, &others) {
            Arrival::Rejected(blocked) => return Ok(Err(blocked)),
            Arrival::Queued => {
                new.saga.status = SagaStatus::Pending;
                new.lease = None;
                new.ledger.clear();
                new.ready_at = None;
                SlotState::Queued
            }
            Arrival::Admitted => SlotState::Holding,
        };
        let inserted = insert_saga(&mut *tx, new).await?;
        if inserted.0 == 1 {
            slots::insert(&mut tx, &new.saga, state).await?;
        }
        tx.commit().await?;
        Ok(Ok((inserted, state == SlotState::Queued)))
    }
}

#[async_trait]
impl Store for PgStore {
    fn backend(&self) -> &'static str {
        "postgres"
    }

    async fn health(&self) -> StoreResult<Health> {
        sqlx::query("SELECT 1").execute(&self.pool).await?;
        Ok(match self.space.degraded() {
            Some(why) => Health::Degraded(why),
            None => Health::Ok,
        })
    }

    async fn schema(&self) -> StoreResult<Schema> {
        let recorded = recorded_migrations(&self.pool).await?;
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

    async fn create_saga(&self, mut new: NewSaga) -> StoreResult<CreateSaga> {
        let mut queued = false;
        let created = if new.saga.concurrency.is_empty() {
            insert_saga(&self.pool, &new)
                .await
                .map_err(StoreError::from)
        } else {
            match self.create_keyed(&mut new).await {
                Ok(Err(blocked)) => return Ok(CreateSaga::ConcurrencyConflict(blocked)),
                Ok(Ok((inserted, was_queued))) => {
                    queued = was_queued;
                    Ok(inserted)
                }
                Err(e) => Err(e),
            }
        };
        let NewSaga {
            saga,
            idempotency,
            lease,
            ledger,
            ..
        } = new;
        let inserted = match self.note(created) {
            Ok((inserted, _)) => inserted,
            Err(e) if e.is_foreign_key() => {
                let mut conn = self.pool.acquire().await?;
                let plan = pinned_digests(&saga.plan);
                let gone = first_gone(&mut conn, &plan).await?;
                return Ok(CreateSaga::PluginGone(
                    gone.unwrap_or_else(|| plan[0].clone()),
                ));
            }
            Err(e) => return Err(e),
        };
        if inserted == 1 && queued {
            return Ok(CreateSaga::Queued(saga));
        }
        if inserted == 1 {
            return Ok(CreateSaga::Created(ClaimedSaga {
                epoch: u64::from(lease.is_some()),
                saga,
                ledger,
                slots_held: true,
            }));
        }
        let Some((key, hash)) = idempotency else {
            return Err(StoreError::Corrupt(format!(
                "saga {} was not inserted",
                saga.id
            )));
        };
        // The key's saga: committed, since the insert waited for it.
        let mut conn = self.pool.acquire().await?;
        let (id, existing_hash): (String, Option<String>) =
            sqlx::query_as("SELECT id, request_hash FROM saga_runs WHERE idempotency_key = $1")
                .bind(&key)
                .fetch_one(&mut *conn)
                .await?;
        let found = saga_by_id(&mut conn, &id)
            .await?
            .ok_or_else(|| StoreError::Corrupt(format!("saga {id} vanished")))?;
        Ok(if existing_hash.as_deref() == Some(hash.as_str()) {
            CreateSaga::Existing(found)
        } else {
            CreateSaga::KeyConflict(found.id)
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
            "SELECT output FROM saga_step_results WHERE saga_id = $1 AND step_index = $2",
        )
        .bind(id.to_string())
        .bind(i64::from(index))
        .fetch_optional(&self.pool)
        .await?
        .flatten())
    }

    async fn count_status(&self, status: SagaStatus) -> StoreResult<u64> {
        let n: i64 = sqlx::query_scalar("SELECT count(*) FROM saga_runs WHERE status = $1")
            .bind(status.as_str())
            .fetch_one(&self.pool)
            .await?;
        Ok(n as u64)
    }

    async fn list_resources(&self, filter: &ResourceFilter) -> StoreResult<Vec<Resource>> {
        let (after_kind, after_id) = filter.after.clone().unzip();
        let rows: Vec<LedgerResourceRow> = sqlx::query_as(&format!(
            "SELECT {RESOURCE_COLUMNS} FROM resources
             WHERE ($1::text IS NULL OR kind = $1) AND ($2::text IS NULL OR deployment_id = $2)
               AND ($3::text IS NULL OR saga_id = $3) AND ($4::text IS NULL OR state = $4)
               AND ($5::text IS NULL OR (kind, external_id) > ($5, $6::text))
               AND ($8::text IS NULL OR drift = $8)
             ORDER BY kind, external_id LIMIT $7"
        ))
        .bind(filter.kind.as_deref())
        .bind(filter.deployment_id.as_deref())
        .bind(filter.saga_id.map(|id| id.to_string()))
        .bind(filter.state.map(|s| s.as_str()))
        .bind(after_kind)
        .bind(after_id)
        .bind(filter.limit as i64)
        .bind(filter.drift.map(|d| d.as_str()))
        .fetch_all(&self.pool)
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
             WHERE ($1::text IS NULL OR status = $1) AND ($2::text IS NULL OR kind = $2)
               AND ($3::text IS NULL OR deployment_id = $3) AND ($4::text IS NULL OR template = $4)
               AND ($5::bigint IS NULL OR (created_at, id) < ($5, $6::text))
             ORDER BY created_at DESC, id DESC LIMIT $7",
            summary_columns("json_array_length(steps::json)::bigint")
        ))
        .bind(filter.status.map(|s| s.as_str()))
        .bind(filter.kind.as_deref())
        .bind(filter.deployment_id.as_deref())
        .bind(filter.template.as_deref())
        .bind(before_at)
        .bind(before_id)
        .bind(filter.limit as i64)
        .fetch_all(&self.pool)
        .await?;
        rows.into_iter().map(SagaSummary::try_from).collect()
    }

    async fn claim_sagas(&self, claim: &Lease, limit: usize) -> StoreResult<Vec<ClaimedSaga>> {
        let claimed_columns: String = SAGA_COLUMNS
            .split(", ")
            .map(|c| format!("s.{}", c.trim()))
            .collect::<Vec<_>>()
            .join(", ");
        let rows: Vec<(SagaRow, i64)> = sqlx::query(&format!(
            "WITH picked AS (
                 SELECT id FROM saga_runs
                 WHERE ready_at <= {DB_NOW} AND (lease_owner IS NULL OR lease_expires_at < {DB_NOW})
                 ORDER BY ready_at, id LIMIT $3
                 FOR UPDATE SKIP LOCKED
             )
             UPDATE saga_runs s SET lease_owner = $1, lease_expires_at = {DB_NOW} + $2,
                 lease_epoch = s.lease_epoch + 1
             FROM picked WHERE s.id = picked.id
             RETURNING {claimed_columns}, s.lease_epoch"
        ))
        .bind(&*claim.owner)
        .bind(claim.ttl.as_millis() as i64)
        .bind(limit as i64)
        .try_map(|row: sqlx::postgres::PgRow| {
            use sqlx::{FromRow, Row};
            Ok((SagaRow::from_row(&row)?, row.try_get("lease_epoch")?))
        })
        .fetch_all(&self.pool)
        .await?;
        let mut claimed = Vec::with_capacity(rows.len());
        if !rows.is_empty() {
            // Their ledgers as they are now that the lease is ours.
            let mut conn = self.pool.acquire().await?;
            for (row, epoch) in rows {
                let saga = SagaRun::try_from(row)?;
                let ledger = ledger(&mut conn, &saga, STEP_COLUMNS).await?;
                let slots_held = saga.concurrency.is_empty()
                    || !slots::queued(&mut conn, &saga.id.to_string()).await?;
                claimed.push(ClaimedSaga {
                    saga,
                    ledger,
                    epoch: epoch as u64,
                    slots_held,
                });
            }
        }
        claimed.sort_by_key(|c| (c.saga.created_at, c.saga.id));
        Ok(claimed)
    }

    async fn renew_leases(
        &self,
        owner: &str,
        held: &[(SagaId, u64)],
        ttl: Duration,
        _now: Timestamp,
    ) -> StoreResult<Vec<LeaseState>> {
        let ids: Vec<String> = held.iter().map(|(id, _)| id.to_string()).collect();
        let epochs: Vec<i64> = held.iter().map(|(_, e)| *e as i64).collect();
        let found: Vec<(String, bool, bool)> = sqlx::query_as(&format!(
            "WITH mine AS (
                 SELECT * FROM unnest($2::text[], $3::bigint[]) AS m(id, epoch)
             ), locked AS (
                 SELECT s.id FROM saga_runs s JOIN mine ON mine.id = s.id
                 WHERE s.lease_owner = $4 AND s.lease_epoch = mine.epoch
                 ORDER BY s.id FOR UPDATE OF s
             )
             UPDATE saga_runs s SET lease_expires_at = {DB_NOW} + $1
             FROM locked WHERE s.id = locked.id
             RETURNING s.id, s.cancel_requested, s.pause_requested"
        ))
        .bind(ttl.as_millis() as i64)
        .bind(&ids)
        .bind(&epochs)
        .bind(owner)
        .fetch_all(&self.pool)
        .await?;
        Ok(held
            .iter()
            .map(|(id, _)| {
                let text = id.to_string();
                let row = found.iter().find(|(h, _, _)| *h == text);
                LeaseState {
                    saga_id: *id,
                    held: row.is_some(),
                    cancel_requested: row.is_some_and(|r| r.1),
                    pause_requested: row.is_some_and(|r| r.2),
                }
            })
            .collect())
    }

    async fn release_leases(&self, owner: &str, held: &[(SagaId, u64)]) -> StoreResult<()> {
        let ids: Vec<String> = held.iter().map(|(id, _)| id.to_string()).collect();
        let epochs: Vec<i64> = held.iter().map(|(_, e)| *e as i64).collect();
        sqlx::query(
            "WITH mine AS (
                 SELECT * FROM unnest($1::text[], $2::bigint[]) AS m(id, epoch)
             ), locked AS (
                 SELECT s.id FROM saga_runs s JOIN mine ON mine.id = s.id
                 WHERE s.lease_owner = $3 AND s.lease_epoch = mine.epoch
                 ORDER BY s.id FOR UPDATE OF s
             )
             UPDATE saga_runs s SET lease_owner = NULL, lease_expires_at = NULL
             FROM locked WHERE s.id = locked.id",
        )
        .bind(&ids)
        .bind(&epochs)
        .bind(owner)
        .execute(&self.pool)
        .await?;
        // Other hosts may pick these up now rather than at their next poll.
        self.announce_work().await
    }

    async fn notices(&self) -> StoreResult<Option<futures::stream::BoxStream<'static, Notice>>> {
        let mut listener = PgListener::connect_with(&self.pool).await?;
        listener
            .listen_all([
                WORK_CHANNEL,
                REQUEST_CHANNEL,
                ACCESS_CHANNEL,
                CHANGE_CHANNEL,
            ])
            .await?;
        let stream = futures::stream::unfold(listener, |mut listener| async move {
            loop {
                match listener.try_recv().await {
                    Ok(Some(n)) if n.channel() == REQUEST_CHANNEL => {
                        let (what, id) = n.payload().split_once(':').unwrap_or(("", ""));
                        match id.parse() {
                            Ok(id) => {
                                let cancel = what == "cancel";
                                return Some((Notice::Request { id, cancel }, listener));
                            }
                            Err(_) => tracing::warn!(
                                payload = n.payload(),
                                "a request notice without a saga id"
                            ),
                        }
                    }
                    Ok(Some(n)) if n.channel() == CHANGE_CHANNEL => {
                        let mut parts = n.payload().splitn(3, ' ');
                        let (id, version) = (parts.next(), parts.next());
                        let origin = parts.next().unwrap_or("").to_string();
                        if let (Some(Ok(id)), Some(Ok(version))) =
                            (id.map(str::parse), version.map(str::parse))
                        {
                            return Some((
                                Notice::Changed {
                                    id,
                                    version,
                                    origin,
                                },
                                listener,
                            ));
                        }
                    }
                    Ok(Some(n)) if n.channel() == ACCESS_CHANNEL => {
                        return Some((Notice::AccessChanged, listener));
                    }
                    Ok(Some(_)) => return Some((Notice::Work, listener)),
                    // The connection dropped and will be re-established:
                    // notices may have been missed.
                    Ok(None) => return Some((Notice::Reconnected, listener)),
                    Err(e) => {
                        tracing::warn!(error = %e, "listening for notices failed; retrying");
                        tokio::time::sleep(Duration::from_secs(1)).await;
                        return Some((Notice::Reconnected, listener));
                    }
                }
            }
        });
        Ok(Some(Box::pin(stream)))
    }

    async fn writable(&self) {
        self.space.writable().await
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
        let deleted = sqlx::query(&format!(
            "DELETE FROM saga_runs WHERE id IN (
                 SELECT id FROM saga_runs
                 WHERE status IN {} AND updated_at < $1
                 ORDER BY updated_at, id LIMIT $2
                 FOR UPDATE SKIP LOCKED)",
            SagaStatus::sql_list(&SagaStatus::ended())
        ))
        .bind(before.millis())
        .bind(limit as i64)
        .execute(&self.pool)
        .await
        .map(|r| r.rows_affected() as usize)
        .map_err(StoreError::from);
        self.note(deleted)
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

    async fn put_secret(&self, s: &SealedSecret) -> StoreResult<()> {
        admin::put_secret(self, s).await
    }

    async fn list_secrets(&self) -> StoreResult<Vec<SecretInfo>> {
        admin::list_secrets(self).await
    }

    async fn delete_secret(&self, name: &SecretName) -> StoreResult<bool> {
        admin::delete_secret(self, name).await
    }

    async fn put_session(&self, s: &ConsoleSession, now: Timestamp) -> StoreResult<()> {
        admin::put_session(self, s, now).await
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

    async fn announce_access(&self) -> StoreResult<()> {
        sqlx::query("SELECT pg_notify($1, '')")
            .bind(ACCESS_CHANNEL)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    async fn announce_request(&self, id: SagaId, cancel: bool) -> StoreResult<()> {
        let what = if cancel { "cancel" } else { "pause" };
        sqlx::query("SELECT pg_notify($1, $2)")
            .bind(REQUEST_CHANNEL)
            .bind(format!("{what}:{id}"))
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    async fn announce_work(&self) -> StoreResult<()> {
        sqlx::query("SELECT pg_notify($1, '')")
            .bind(WORK_CHANNEL)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    async fn apply(&self, transition: Transition) -> StoreResult<Applied> {
        let result = if group::Grouper::fits(&transition) {
            self.group.apply(transition).await
        } else {
            async {
                let mut tx = self.pool.begin().await?;
                if transition.release_slots || transition.retake_slots {
                    // Keys before rows: the one lock order (`slots`).
                    slots::lock_saga_keys(&mut tx, &transition.saga_id.to_string()).await?;
                }
                if let Some((_, key)) = &transition.take_message {
                    // The key before the saga's row, as a post takes them.
                    mailbox::lock(&mut tx, key).await?;
                }
                let applied = apply_transition(&mut tx, &transition).await?;
                tx.commit().await?;
                Ok(applied)
            }
            .await
        };
        self.note(result)
    }

    async fn admit_saga(
        &self,
        id: SagaId,
        owner: &str,
        epoch: u64,
        version: u64,
        now: Timestamp,
    ) -> StoreResult<Admission> {
        let admitted =
            slots::admit_saga(&self.pool, &id.to_string(), owner, epoch, version, now).await;
        self.note(admitted)
    }

    async fn concurrency_key(&self, key: &str) -> StoreResult<Vec<Slot>> {
        slots::of_key(&self.pool, key).await
    }

    async fn queued_by_prefix(&self) -> StoreResult<Vec<(String, u64)>> {
        slots::queued_by_prefix(&self.pool).await
    }
}
