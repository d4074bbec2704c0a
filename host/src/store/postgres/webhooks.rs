//! [`WebhookStore`] on PostgreSQL, shared by every host on the database:
//! claims take rows with `FOR UPDATE SKIP LOCKED` under leases on the
//! database's clock, so two hosts never send one attempt twice and a dead
//! host's rows go to the next claim. Also the outbox insert that `apply`
//! runs inside a transition's transaction.

use super::{DB_NOW, PgStore};
use crate::model::{
    AttemptOutcome, Delivery, DueDelivery, NewWebhook, OutboxEvent, SealedKey, Timestamp, Webhook,
};
use crate::store::webhooks::{
    DELIVERY_COLUMNS, DUE_COLUMNS, DeliveryRow, DueRow, OutcomeColumns, WebhookRow, WebhookStore,
    webhook_select,
};
use crate::store::{StoreError, StoreResult};
use async_trait::async_trait;
use sqlx::{PgConnection, Postgres, Transaction};
use std::time::Duration;

fn select_webhooks() -> String {
    webhook_select("string_agg(e.event, ',')")
}

/// Writes `events` to the outbox: one pending delivery per subscribed
/// endpoint whose filter matches (disabled ones too, sent once enabled).
pub(super) async fn write_outbox(
    conn: &mut PgConnection,
    events: &[OutboxEvent],
    now: Timestamp,
) -> StoreResult<()> {
    for e in events {
        sqlx::query(
            "INSERT INTO webhook_deliveries
                 (webhook_id, message_id, saga_id, event, body, status, attempts, next_at, created_at)
             SELECT w.id, $1, $2, $3, $4, 'pending', 0, $5, $5
             FROM webhook_events s JOIN webhooks w ON w.id = s.webhook_id
             WHERE s.event = $3
               AND (w.filter_kind IS NULL OR w.filter_kind = $6)
               AND (w.filter_template IS NULL OR w.filter_template = $7)
             ORDER BY w.id",
        )
        .bind(&e.message_id)
        .bind(e.saga_id.map(|id| id.to_string()))
        .bind(e.event.as_str())
        .bind(&e.body)
        .bind(now.millis())
        .bind(&e.kind)
        .bind(&e.template)
        .execute(&mut *conn)
        .await?;
    }
    Ok(())
}

impl PgStore {
    async fn in_tx<T>(
        &self,
        op: impl for<'c> FnOnce(
            &'c mut Transaction<'static, Postgres>,
        ) -> futures::future::BoxFuture<'c, StoreResult<T>>,
    ) -> StoreResult<T> {
        let result = async {
            let mut tx = self.pool.begin().await?;
            let value = op(&mut tx).await?;
            tx.commit().await?;
            Ok(value)
        }
        .await;
        self.note(result)
    }
}

#[async_trait]
impl WebhookStore for PgStore {
    async fn put_webhook(&self, new: &NewWebhook) -> StoreResult<()> {
        let new = new.clone();
        self.in_tx(move |tx| {
            Box::pin(async move {
                let w = &new.webhook;
                sqlx::query(
                    "INSERT INTO webhooks (id, url, filter_kind, filter_template, secret_nonce,
                         secret_ciphertext, created_by, created_at)
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
                )
                .bind(&w.id)
                .bind(&w.url)
                .bind(&w.filter.kind)
                .bind(&w.filter.template)
                .bind(&new.key.nonce)
                .bind(&new.key.ciphertext)
                .bind(&w.created_by)
                .bind(w.created_at.millis())
                .execute(&mut **tx)
                .await?;
                for event in &w.events {
                    sqlx::query("INSERT INTO webhook_events (webhook_id, event) VALUES ($1, $2)")
                        .bind(&w.id)
                        .bind(event.as_str())
                        .execute(&mut **tx)
                        .await?;
                }
                Ok(())
            })
        })
        .await
    }

    async fn list_webhooks(&self) -> StoreResult<Vec<Webhook>> {
        let rows: Vec<WebhookRow> = sqlx::query_as(&format!(
            "{} ORDER BY w.created_at, w.id",
            select_webhooks()
        ))
        .fetch_all(&self.pool)
        .await?;
        rows.into_iter().map(Webhook::try_from).collect()
    }

    async fn webhook(&self, id: &str) -> StoreResult<Option<Webhook>> {
        let row: Option<WebhookRow> =
            sqlx::query_as(&format!("{} WHERE w.id = $1", select_webhooks()))
                .bind(id)
                .fetch_optional(&self.pool)
                .await?;
        row.map(Webhook::try_from).transpose()
    }

    async fn delete_webhook(&self, id: &str) -> StoreResult<bool> {
        let done = sqlx::query("DELETE FROM webhooks WHERE id = $1")
            .bind(id)
            .execute(&self.pool)
            .await
            .map(|r| r.rows_affected() > 0)
            .map_err(StoreError::from);
        self.note(done)
    }

    async fn rotate_webhook(
        &self,
        id: &str,
        key: &SealedKey,
        previous_until: Timestamp,
    ) -> StoreResult<bool> {
        let done = sqlx::query(
            "UPDATE webhooks SET previous_nonce = secret_nonce,
                 previous_ciphertext = secret_ciphertext, previous_expires_at = $1,
                 secret_nonce = $2, secret_ciphertext = $3
             WHERE id = $4",
        )
        .bind(previous_until.millis())
        .bind(&key.nonce)
        .bind(&key.ciphertext)
        .bind(id)
        .execute(&self.pool)
        .await
        .map(|r| r.rows_affected() > 0)
        .map_err(StoreError::from);
        self.note(done)
    }

    async fn enable_webhook(&self, id: &str) -> StoreResult<bool> {
        let done = sqlx::query(
            "UPDATE webhooks SET disabled_at = NULL, disabled_reason = NULL WHERE id = $1",
        )
        .bind(id)
        .execute(&self.pool)
        .await
        .map(|r| r.rows_affected() > 0)
        .map_err(StoreError::from);
        self.note(done)
    }

    async fn deliveries(&self, webhook_id: &str, limit: usize) -> StoreResult<Vec<Delivery>> {
        let rows: Vec<DeliveryRow> = sqlx::query_as(&format!(
            "SELECT {DELIVERY_COLUMNS} FROM webhook_deliveries WHERE webhook_id = $1
             ORDER BY id DESC LIMIT $2"
        ))
        .bind(webhook_id)
        .bind(limit as i64)
        .fetch_all(&self.pool)
        .await?;
        rows.into_iter().map(Delivery::try_from).collect()
    }

    async fn redeliver(
        &self,
        webhook_id: &str,
        id: i64,
        now: Timestamp,
    ) -> StoreResult<Option<Delivery>> {
        let row: StoreResult<Option<DeliveryRow>> = sqlx::query_as(&format!(
            "INSERT INTO webhook_deliveries
                 (webhook_id, message_id, saga_id, event, body, status, attempts, next_at, created_at)
             SELECT webhook_id, message_id, saga_id, event, body, 'pending', 0, $1, $1
             FROM webhook_deliveries WHERE id = $2 AND webhook_id = $3
             RETURNING {DELIVERY_COLUMNS}"
        ))
        .bind(now.millis())
        .bind(id)
        .bind(webhook_id)
        .fetch_optional(&self.pool)
        .await
        .map_err(StoreError::from);
        self.note(row)?.map(Delivery::try_from).transpose()
    }

    async fn claim_deliveries(
        &self,
        owner: &str,
        _now: Timestamp,
        lease: Duration,
        limit: usize,
    ) -> StoreResult<Vec<DueDelivery>> {
        let rows: StoreResult<Vec<DueRow>> = sqlx::query_as(&format!(
            "WITH claimed AS (
                 UPDATE webhook_deliveries SET lease_owner = $1,
                     lease_expires_at = {DB_NOW} + $2, attempts = attempts + 1
                 WHERE id IN (
                     SELECT d.id FROM webhook_deliveries d JOIN webhooks w ON w.id = d.webhook_id
                     WHERE d.status = 'pending' AND d.next_at <= {DB_NOW} AND w.disabled_at IS NULL
                       AND (d.lease_expires_at IS NULL OR d.lease_expires_at <= {DB_NOW})
                       AND NOT EXISTS (
                           SELECT 1 FROM webhook_deliveries e
                           WHERE e.webhook_id = d.webhook_id AND e.saga_id = d.saga_id
                             AND e.status = 'pending' AND e.id < d.id)
                     ORDER BY d.id LIMIT $3
                     FOR UPDATE OF d SKIP LOCKED)
                 RETURNING *
             )
             SELECT {DUE_COLUMNS} FROM claimed d JOIN webhooks w ON w.id = d.webhook_id
             ORDER BY d.id"
        ))
        .bind(owner)
        .bind(lease.as_millis() as i64)
        .bind(limit as i64)
        .fetch_all(&self.pool)
        .await
        .map_err(StoreError::from);
        self.note(rows)?
            .into_iter()
            .map(DueDelivery::try_from)
            .collect()
    }

    async fn finish_attempt(
        &self,
        id: i64,
        owner: &str,
        now: Timestamp,
        outcome: &AttemptOutcome,
    ) -> StoreResult<()> {
        let c = OutcomeColumns::from(outcome);
        let owner = owner.to_string();
        self.in_tx(move |tx| {
            Box::pin(async move {
                let webhook: Option<String> = sqlx::query_scalar(
                    "UPDATE webhook_deliveries SET status = $1, next_at = COALESCE($2, next_at),
                         last_status = $3, last_error = $4,
                         finished_at = CASE WHEN $5 THEN $6 ELSE NULL END,
                         lease_owner = NULL, lease_expires_at = NULL
                     WHERE id = $7 AND lease_owner = $8
                     RETURNING webhook_id",
                )
                .bind(c.status)
                .bind(c.next_at)
                .bind(c.last_status)
                .bind(&c.last_error)
                .bind(c.finished)
                .bind(now.millis())
                .bind(id)
                .bind(&owner)
                .fetch_optional(&mut **tx)
                .await?;
                if let (Some(webhook), Some(reason)) = (webhook, c.disable) {
                    sqlx::query(
                        "UPDATE webhooks SET disabled_at = $1, disabled_reason = $2
                         WHERE id = $3 AND disabled_at IS NULL",
                    )
                    .bind(now.millis())
                    .bind(reason)
                    .bind(webhook)
                    .execute(&mut **tx)
                    .await?;
                }
                Ok(())
            })
        })
        .await
    }

    async fn delete_finished_deliveries(&self, before: Timestamp) -> StoreResult<u64> {
        let done = sqlx::query(
            "DELETE FROM webhook_deliveries WHERE status <> 'pending' AND finished_at < $1",
        )
        .bind(before.millis())
        .execute(&self.pool)
        .await
        .map(|r| r.rows_affected())
        .map_err(StoreError::from);
        self.note(done)
    }
}
