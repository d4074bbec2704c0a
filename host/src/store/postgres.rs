//! The shared store: PostgreSQL, for several hosts serving one queue.
//!
//! Same tables and shapes as SQLite (`migrations/postgres`). Hosts claim
//! sagas with `FOR UPDATE SKIP LOCKED` in short transactions, so two hosts
//! never claim one saga and neither waits on the other's locks; every write
//! of a transition is fenced by the lease (`WHERE lease_owner = $me`), so a
//! host whose lease was taken over cannot write over the new owner. The
//! runner's transitions are written in groups, one statement for all that
//! arrive together ([`group`]); every other write is its own short
//! transaction. Statements that lock several saga rows lock them in id
//! order, so they never deadlock with each other.

/// The ledger columns of a row that arrives as JSON
/// ([`super::ledger_row_json`]), as `jsonb_to_recordset` declares them.
macro_rules! json_ledger_columns {
    () => {
        "step_index BIGINT, phase TEXT, status TEXT, output TEXT, error TEXT, attempts BIGINT,
         compensate_attempts BIGINT, logs TEXT, started_at BIGINT, finished_at BIGINT, executed_by TEXT"
    };
}

/// Those columns of such a row `r`, in [`step_insert`]'s order after the
/// saga id.
macro_rules! json_ledger_values {
    () => {
        "r.step_index, r.phase, r.status, r.output, r.error, r.attempts, r.compensate_attempts, r.logs,
         r.started_at, r.finished_at, r.executed_by"
    };
}

mod group;

use super::{
    Applied, CancelSaga, Claim, ClaimedSaga, CreateSaga, DeletePlugin, LeaseState, Notice,
    PluginRow, PutPlugin, ResourceRow, SAGA_COLUMNS, STEP_COLUMNS, SagaFilter, SagaRow, StepRow,
    Store, StoreError, StoreResult, Transition, ledger_row_json, pinned_by, start_of, to_json,
};
use crate::model::{
    Digest, PluginInfo, SagaDetail, SagaId, SagaResource, SagaRun, SagaStatus, StepResult,
    Timestamp,
};
use async_trait::async_trait;
use sqlx::postgres::{PgConnectOptions, PgListener, PgPool, PgPoolOptions};
use sqlx::{PgConnection, Postgres, Transaction};
use std::str::FromStr;
use std::time::Duration;

static MIGRATIONS: sqlx::migrate::Migrator = sqlx::migrate!("../migrations/postgres");

const UNFINISHED: &str = "('pending', 'running', 'compensating')";

/// [`SAGA_COLUMNS`] of the claim's updated rows (`s`).
const CLAIMED_COLUMNS: &str = "s.id, s.kind, s.status, s.steps, s.inputs, s.current_step_index, \
     s.context, s.error, s.cancel_requested, s.deployment_id, s.triggered_by, s.created_at, s.updated_at";

/// NOTIFY channels: unclaimed work appeared, and a cancel for a saga id.
const WORK_CHANNEL: &str = "wasaga_work";
const CANCEL_CHANNEL: &str = "wasaga_cancel";

/// The PostgreSQL store. See the module docs.
#[derive(Clone)]
pub struct PgStore {
    pool: PgPool,
    group: group::Grouper,
}

impl std::fmt::Debug for PgStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgStore").finish_non_exhaustive()
    }
}

impl PgStore {
    /// Connects and runs the migrations (serialized across hosts by sqlx's
    /// advisory lock). A `max_connections=N` query parameter sizes the pool
    /// (default 16).
    pub async fn connect(url: &str) -> StoreResult<PgStore> {
        let (url, max_connections) = split_pool_size(url)?;
        let options = PgConnectOptions::from_str(&url)?.application_name("wasaga");
        let pool = PgPoolOptions::new()
            .max_connections(max_connections)
            .acquire_timeout(Duration::from_secs(10))
            .connect_with(options)
            .await?;
        MIGRATIONS.run(&pool).await?;
        Ok(PgStore {
            group: group::Grouper::start(pool.clone()),
            pool,
        })
    }

    /// The pool, for LISTEN/NOTIFY and tests.
    pub fn pool(&self) -> &PgPool {
        &self.pool
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

async fn ledger(conn: &mut PgConnection, saga: &SagaRun) -> StoreResult<Vec<StepResult>> {
    let rows: Vec<StepRow> = sqlx::query_as(&format!(
        "SELECT {STEP_COLUMNS} FROM saga_step_results WHERE saga_id = $1 ORDER BY step_index"
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

async fn upsert_step(conn: &mut PgConnection, saga_id: &str, step: &StepResult) -> StoreResult<()> {
    sqlx::query(concat!(
        step_insert!(),
        " VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)",
        step_on_conflict!()
    ))
    .bind(saga_id)
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
    .execute(&mut *conn)
    .await?;
    Ok(())
}

async fn apply_transition(
    tx: &mut Transaction<'static, Postgres>,
    t: &Transition,
) -> StoreResult<Applied> {
    let id = t.saga_id.to_string();
    let ends = t.saga.status.is_some_and(SagaStatus::is_final);
    let cancel_requested: Option<bool> = sqlx::query_scalar(
        "UPDATE saga_runs SET
             updated_at = $1,
             status = COALESCE($2, status),
             current_step_index = COALESCE($3, current_step_index),
             context = COALESCE($4, context),
             error = COALESCE($5, error),
             lease_owner = CASE WHEN $6 THEN NULL ELSE lease_owner END,
             lease_expires_at = CASE WHEN $6 THEN NULL ELSE lease_expires_at END
         WHERE id = $7 AND lease_owner = $8
         RETURNING cancel_requested",
    )
    .bind(t.now.millis())
    .bind(t.saga.status.map(SagaStatus::as_str))
    .bind(t.saga.current_step_index.map(i64::from))
    .bind(t.saga.context.as_ref().map(to_json))
    .bind(t.saga.error.as_ref().map(to_json))
    .bind(ends)
    .bind(&id)
    .bind(&*t.owner)
    .fetch_optional(&mut **tx)
    .await?;
    let Some(cancel_requested) = cancel_requested else {
        return Err(StoreError::LeaseLost(t.saga_id));
    };
    for step in &t.steps {
        upsert_step(tx, &id, step).await?;
    }
    for (step_index, resource) in &t.resources {
        sqlx::query(
            "INSERT INTO provisioned_resources (saga_id, step_index, kind, external_id, spec, spec_version, created_at)
             SELECT $1, $2, $3, $4, $5, COALESCE(MAX(spec_version), 0) + 1, $6
             FROM provisioned_resources WHERE saga_id = $1 AND kind = $3 AND external_id = $4",
        )
        .bind(&id)
        .bind(*step_index as i64)
        .bind(&resource.kind)
        .bind(&resource.external_id)
        .bind(to_json(&resource.spec))
        .bind(t.now.millis())
        .execute(&mut **tx)
        .await?;
    }
    let applied = Applied::found(t, cancel_requested);
    if let Some(step) = t.start.as_ref().filter(|_| applied.started) {
        upsert_step(tx, &id, step).await?;
    }
    Ok(applied)
}

#[async_trait]
impl Store for PgStore {
    fn backend(&self) -> &'static str {
        "postgres"
    }

    async fn health(&self) -> StoreResult<()> {
        sqlx::query("SELECT 1").execute(&self.pool).await?;
        Ok(())
    }

    async fn put_plugin(&self, info: &PluginInfo, wasm: &[u8]) -> StoreResult<PutPlugin> {
        let inserted = sqlx::query(
            "INSERT INTO plugins (digest, name, size, wasm, created_at) VALUES ($1, $2, $3, $4, $5)
             ON CONFLICT (digest) DO NOTHING",
        )
        .bind(info.digest.as_str())
        .bind(&info.name)
        .bind(info.size as i64)
        .bind(wasm)
        .bind(info.created_at.millis())
        .execute(&self.pool)
        .await?
        .rows_affected();
        if inserted == 1 {
            return Ok(PutPlugin::Created(info.clone()));
        }
        let existing = self
            .plugin(&info.digest)
            .await?
            .ok_or_else(|| StoreError::Corrupt(format!("plugin {} vanished", info.digest)))?;
        Ok(PutPlugin::Existing(existing))
    }

    async fn plugin(&self, digest: &Digest) -> StoreResult<Option<PluginInfo>> {
        let row: Option<PluginRow> =
            sqlx::query_as("SELECT digest, name, size, created_at FROM plugins WHERE digest = $1")
                .bind(digest.as_str())
                .fetch_optional(&self.pool)
                .await?;
        row.map(PluginInfo::try_from).transpose()
    }

    async fn plugin_by_name(&self, name: &str) -> StoreResult<Option<PluginInfo>> {
        let row: Option<PluginRow> = sqlx::query_as(
            "SELECT digest, name, size, created_at FROM plugins WHERE name = $1
             ORDER BY created_at DESC, seq DESC LIMIT 1",
        )
        .bind(name)
        .fetch_optional(&self.pool)
        .await?;
        row.map(PluginInfo::try_from).transpose()
    }

    async fn plugin_bytes(&self, digest: &Digest) -> StoreResult<Option<Vec<u8>>> {
        Ok(
            sqlx::query_scalar("SELECT wasm FROM plugins WHERE digest = $1")
                .bind(digest.as_str())
                .fetch_optional(&self.pool)
                .await?,
        )
    }

    async fn list_plugins(&self) -> StoreResult<Vec<PluginInfo>> {
        let rows: Vec<PluginRow> = sqlx::query_as(
            "SELECT digest, name, size, created_at FROM plugins ORDER BY created_at DESC, seq DESC",
        )
        .fetch_all(&self.pool)
        .await?;
        rows.into_iter().map(PluginInfo::try_from).collect()
    }

    async fn delete_plugin(&self, digest: &Digest) -> StoreResult<DeletePlugin> {
        let mut tx = self.pool.begin().await?;
        // Lock the plugin row: a saga starting now pins by digest after
        // reading the plugin, which this lock orders against.
        let exists: Option<i32> =
            sqlx::query_scalar("SELECT 1 FROM plugins WHERE digest = $1 FOR UPDATE")
                .bind(digest.as_str())
                .fetch_optional(&mut *tx)
                .await?;
        if exists.is_none() {
            return Ok(DeletePlugin::NotFound);
        }
        let pinned: Vec<String> = sqlx::query_scalar(&format!(
            "SELECT id FROM saga_runs WHERE status IN {UNFINISHED} AND strpos(steps, $1) > 0
             ORDER BY created_at LIMIT 10"
        ))
        .bind(format!("\"{}\"", digest.as_str()))
        .fetch_all(&mut *tx)
        .await?;
        if !pinned.is_empty() {
            return pinned_by(&pinned);
        }
        sqlx::query("DELETE FROM plugins WHERE digest = $1")
            .bind(digest.as_str())
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(DeletePlugin::Deleted)
    }

    async fn create_saga(
        &self,
        saga: &SagaRun,
        idempotency: Option<(&str, &str)>,
        claim: Option<&Claim>,
    ) -> StoreResult<CreateSaga> {
        let started = claim.and_then(|c| start_of(saga, c));
        let saga = started
            .as_ref()
            .map_or_else(|| saga.clone(), |(s, _)| s.clone());
        // One statement: the saga, its first step's running mark (when
        // it starts now) or a wake-up for the hosts (when it waits), atomic
        // without an explicit transaction.
        let first: Vec<serde_json::Value> = started
            .iter()
            .map(|(_, first)| serde_json::Value::Object(ledger_row_json(first, true)))
            .collect();
        // `wake` is a plain SELECT: it runs only if the result refers to it.
        let (inserted, _woken): (i64, i64) = sqlx::query_as(concat!(
            "WITH saga AS (
                 INSERT INTO saga_runs (id, kind, status, steps, inputs, current_step_index, context, error,
                     cancel_requested, deployment_id, triggered_by, idempotency_key, request_hash,
                     lease_owner, lease_expires_at, created_at, updated_at)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, NULL, FALSE, $8, $9, $10, $11, $12, $13, $14, $15)
                 ON CONFLICT (idempotency_key) DO NOTHING
                 RETURNING id
             ), first AS (",
            step_insert!(),
            " SELECT saga.id, ",
            json_ledger_values!(),
            " FROM saga, jsonb_to_recordset($16::jsonb) AS r(",
            json_ledger_columns!(),
            ")
             ), wake AS (
                 SELECT pg_notify('wasaga_work', '') FROM saga WHERE $17
             )
             SELECT (SELECT count(*) FROM saga), (SELECT count(*) FROM wake)",
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
        .bind(idempotency.map(|(k, _)| k))
        .bind(idempotency.map(|(_, h)| h))
        .bind(claim.map(|c| c.owner.to_string()))
        .bind(claim.map(|c| c.lease_until.millis()))
        .bind(saga.created_at.millis())
        .bind(saga.updated_at.millis())
        .bind(serde_json::Value::Array(first).to_string())
        // Unclaimed: wake the hosts waiting for work.
        .bind(started.is_none())
        .fetch_one(&self.pool)
        .await?;
        if inserted == 1 {
            return Ok(CreateSaga::Created(ClaimedSaga {
                saga,
                first_step_started: started.is_some(),
                ledger: started.map(|(_, first)| vec![first]).unwrap_or_default(),
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
                .bind(key)
                .fetch_one(&mut *conn)
                .await?;
        let found = saga_by_id(&mut conn, &id)
            .await?
            .ok_or_else(|| StoreError::Corrupt(format!("saga {id} vanished")))?;
        Ok(if existing_hash.as_deref() == Some(hash) {
            CreateSaga::Existing(found)
        } else {
            CreateSaga::KeyConflict(found.id)
        })
    }

    async fn saga(&self, id: SagaId) -> StoreResult<Option<SagaDetail>> {
        // REPEATABLE READ: the saga, its ledger and its resources as of one
        // snapshot.
        let mut tx = self.pool.begin().await?;
        sqlx::query("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ READ ONLY")
            .execute(&mut *tx)
            .await?;
        let Some(saga) = saga_by_id(&mut tx, &id.to_string()).await? else {
            return Ok(None);
        };
        let steps = ledger(&mut tx, &saga).await?;
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
             WHERE ($1::text IS NULL OR status = $1) AND ($2::text IS NULL OR kind = $2)
               AND ($3::text IS NULL OR deployment_id = $3)
             ORDER BY created_at DESC, id DESC LIMIT $4"
        ))
        .bind(filter.status.map(SagaStatus::as_str))
        .bind(filter.kind.as_deref())
        .bind(filter.deployment_id.as_deref())
        .bind(filter.limit as i64)
        .fetch_all(&self.pool)
        .await?;
        rows.into_iter().map(SagaRun::try_from).collect()
    }

    async fn request_cancel(&self, id: SagaId, now: Timestamp) -> StoreResult<CancelSaga> {
        let mut tx = self.pool.begin().await?;
        let row: Option<SagaRow> = sqlx::query_as(&format!(
            "UPDATE saga_runs SET cancel_requested = TRUE, updated_at = $1
             WHERE id = $2 AND status IN {UNFINISHED}
             RETURNING {SAGA_COLUMNS}"
        ))
        .bind(now.millis())
        .bind(id.to_string())
        .fetch_optional(&mut *tx)
        .await?;
        if let Some(row) = row {
            // Wakes whichever host runs it (see runner: LISTEN wasaga_cancel).
            sqlx::query("SELECT pg_notify('wasaga_cancel', $1)")
                .bind(id.to_string())
                .execute(&mut *tx)
                .await?;
            tx.commit().await?;
            return Ok(CancelSaga::Requested(row.try_into()?));
        }
        Ok(match saga_by_id(&mut tx, &id.to_string()).await? {
            Some(saga) => CancelSaga::AlreadyEnded(saga),
            None => CancelSaga::NotFound,
        })
    }

    async fn claim_sagas(&self, claim: &Claim, limit: usize) -> StoreResult<Vec<ClaimedSaga>> {
        // One statement: take the lease of the oldest claimable sagas, start
        // the pending ones (status and first step's running mark, the row
        // `StepResult::first_attempt` makes, checked below), and return
        // them with whether each was started.
        let rows: Vec<(SagaRow, bool)> = sqlx::query(&format!(
            concat!(
                "WITH picked AS (
                 SELECT id, $5 AND status = 'pending' AND NOT cancel_requested AND steps <> '[]' AS start
                 FROM saga_runs
                 WHERE status IN {UNFINISHED} AND (lease_owner IS NULL OR lease_expires_at < $2)
                 ORDER BY created_at, id LIMIT $4
                 FOR UPDATE SKIP LOCKED
             ), claimed AS (
                 UPDATE saga_runs s SET lease_owner = $1, lease_expires_at = $3,
                     status = CASE WHEN picked.start THEN 'running' ELSE s.status END,
                     updated_at = CASE WHEN picked.start THEN $2 ELSE s.updated_at END
                 FROM picked WHERE s.id = picked.id
                 RETURNING {CLAIMED_COLUMNS}, picked.start
             ), first AS (",
                step_insert!(),
                " SELECT id, 0, 'execute', 'running', NULL, NULL, 1, 0, '[]', $2, NULL, $1
                 FROM claimed WHERE start
             )
             SELECT * FROM claimed"
            ),
            UNFINISHED = UNFINISHED,
            CLAIMED_COLUMNS = CLAIMED_COLUMNS,
        ))
        .bind(&*claim.owner)
        .bind(claim.now.millis())
        .bind(claim.lease_until.millis())
        .bind(limit as i64)
        .bind(claim.start_pending)
        .try_map(|row: sqlx::postgres::PgRow| {
            use sqlx::{FromRow, Row};
            Ok((SagaRow::from_row(&row)?, row.try_get("start")?))
        })
        .fetch_all(&self.pool)
        .await?;
        let mut claimed = Vec::with_capacity(rows.len());
        let mut resumed = Vec::new();
        for (row, started) in rows {
            let saga = SagaRun::try_from(row)?;
            if started {
                let spec = saga.plan.first().ok_or_else(|| {
                    StoreError::Corrupt(format!("saga {} started with no steps", saga.id))
                })?;
                let first = StepResult::first_attempt(0, spec, &claim.owner, claim.now);
                claimed.push(ClaimedSaga {
                    saga,
                    ledger: vec![first],
                    first_step_started: true,
                });
            } else {
                resumed.push(saga);
            }
        }
        if !resumed.is_empty() {
            // Sagas taken over or resumed: their ledgers as they are now
            // that the lease is ours.
            let mut conn = self.pool.acquire().await?;
            for saga in resumed {
                let ledger = ledger(&mut conn, &saga).await?;
                claimed.push(ClaimedSaga {
                    saga,
                    ledger,
                    first_step_started: false,
                });
            }
        }
        claimed.sort_by_key(|c| (c.saga.created_at, c.saga.id));
        Ok(claimed)
    }

    async fn renew_leases(
        &self,
        owner: &str,
        ids: &[SagaId],
        until: Timestamp,
    ) -> StoreResult<Vec<LeaseState>> {
        let id_texts: Vec<String> = ids.iter().map(SagaId::to_string).collect();
        let held: Vec<(String, bool)> = sqlx::query_as(
            "WITH locked AS (
                 SELECT id FROM saga_runs WHERE id = ANY($2) AND lease_owner = $3
                 ORDER BY id FOR UPDATE
             )
             UPDATE saga_runs s SET lease_expires_at = $1
             FROM locked WHERE s.id = locked.id AND s.lease_owner = $3
             RETURNING s.id, s.cancel_requested",
        )
        .bind(until.millis())
        .bind(&id_texts)
        .bind(owner)
        .fetch_all(&self.pool)
        .await?;
        Ok(ids
            .iter()
            .map(|id| {
                let text = id.to_string();
                let found = held.iter().find(|(h, _)| *h == text);
                LeaseState {
                    saga_id: *id,
                    held: found.is_some(),
                    cancel_requested: found.is_some_and(|(_, c)| *c),
                }
            })
            .collect())
    }

    async fn release_leases(&self, owner: &str, ids: &[SagaId]) -> StoreResult<()> {
        let id_texts: Vec<String> = ids.iter().map(SagaId::to_string).collect();
        sqlx::query(
            "WITH locked AS (
                 SELECT id FROM saga_runs WHERE id = ANY($1) AND lease_owner = $2
                 ORDER BY id FOR UPDATE
             )
             UPDATE saga_runs s SET lease_owner = NULL, lease_expires_at = NULL
             FROM locked WHERE s.id = locked.id AND s.lease_owner = $2",
        )
        .bind(&id_texts)
        .bind(owner)
        .execute(&self.pool)
        .await?;
        // Other hosts may pick these up now rather than at their next poll.
        sqlx::query("SELECT pg_notify('wasaga_work', '')")
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    async fn notices(&self) -> StoreResult<Option<futures::stream::BoxStream<'static, Notice>>> {
        let mut listener = PgListener::connect_with(&self.pool).await?;
        listener.listen_all([WORK_CHANNEL, CANCEL_CHANNEL]).await?;
        let stream = futures::stream::unfold(listener, |mut listener| async move {
            loop {
                match listener.try_recv().await {
                    Ok(Some(n)) if n.channel() == CANCEL_CHANNEL => match n.payload().parse() {
                        Ok(id) => return Some((Notice::Cancel(id), listener)),
                        Err(_) => tracing::warn!(
                            payload = n.payload(),
                            "a cancel notice without a saga id"
                        ),
                    },
                    Ok(Some(_)) => return Some((Notice::Work, listener)),
                    // The connection dropped and will be re-established:
                    // notices may have been missed, so look for work.
                    Ok(None) => return Some((Notice::Work, listener)),
                    Err(e) => {
                        tracing::warn!(error = %e, "listening for notices failed; retrying");
                        tokio::time::sleep(Duration::from_secs(1)).await;
                        return Some((Notice::Work, listener));
                    }
                }
            }
        });
        Ok(Some(Box::pin(stream)))
    }

    async fn apply(&self, transition: Transition) -> StoreResult<Applied> {
        if group::Grouper::fits(&transition) {
            return self.group.apply(transition).await;
        }
        let mut tx = self.pool.begin().await?;
        let applied = apply_transition(&mut tx, &transition).await?;
        tx.commit().await?;
        Ok(applied)
    }
}
