//! [`WebhookStore`] on SQLite: reads through the read pool, writes through
//! the writer thread like every other write, and the outbox insert that
//! `apply` runs inside a transition's transaction.

use super::SqliteStore;
use crate::model::{
    AttemptOutcome, Delivery, DueDelivery, NewWebhook, OutboxEvent, SealedKey, Timestamp, Webhook,
};
use crate::store::StoreResult;
use crate::store::webhooks::{
    DELIVERY_COLUMNS, DUE_COLUMNS, DeliveryRow, DueRow, OutcomeColumns, WebhookRow, WebhookStore,
    webhook_select,
};
use async_trait::async_trait;
use rusqlite::{Connection, OptionalExtension, params};
use std::time::Duration;

fn select_webhooks() -> String {
    webhook_select("group_concat(e.event, ',')")
}

/// Writes `events` to the outbox: one pending delivery per subscribed
/// endpoint whose filter matches (disabled ones too, sent once enabled).
pub(super) fn write_outbox(
    conn: &Connection,
    events: &[OutboxEvent],
    now: Timestamp,
) -> StoreResult<()> {
    for e in events {
        conn.prepare_cached(
            "INSERT INTO webhook_deliveries
                 (webhook_id, message_id, saga_id, event, body, status, attempts, next_at, created_at)
             SELECT w.id, ?1, ?2, ?3, ?4, 'pending', 0, ?5, ?5
             FROM webhook_events s JOIN webhooks w ON w.id = s.webhook_id
             WHERE s.event = ?3
               AND (w.filter_kind IS NULL OR w.filter_kind = ?6)
               AND (w.filter_template IS NULL OR w.filter_template = ?7)
             ORDER BY w.id",
        )?
        .execute(params![
            e.message_id,
            e.saga_id.map(|id| id.to_string()),
            e.event.as_str(),
            e.body,
            now.millis(),
            e.kind,
            e.template,
        ])?;
    }
    Ok(())
}

#[async_trait]
impl WebhookStore for SqliteStore {
    async fn put_webhook(&self, new: &NewWebhook) -> StoreResult<()> {
        let new = new.clone();
        self.writer
            .write(move |conn| {
                let w = &new.webhook;
                conn.prepare_cached(
                    "INSERT INTO webhooks (id, url, filter_kind, filter_template, secret_nonce,
                         secret_ciphertext, created_by, created_at)
                     VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                )?
                .execute(params![
                    w.id,
                    w.url,
                    w.filter.kind,
                    w.filter.template,
                    new.key.nonce,
                    new.key.ciphertext,
                    w.created_by,
                    w.created_at.millis(),
                ])?;
                let mut subscribe = conn.prepare_cached(
                    "INSERT INTO webhook_events (webhook_id, event) VALUES (?, ?)",
                )?;
                for event in &w.events {
                    subscribe.execute(params![w.id, event.as_str()])?;
                }
                Ok(())
            })
            .await
    }

    async fn list_webhooks(&self) -> StoreResult<Vec<Webhook>> {
        let rows: Vec<WebhookRow> = sqlx::query_as(&format!(
            "{} ORDER BY w.created_at, w.id",
            select_webhooks()
        ))
        .fetch_all(&self.reads)
        .await?;
        rows.into_iter().map(Webhook::try_from).collect()
    }

    async fn webhook(&self, id: &str) -> StoreResult<Option<Webhook>> {
        let row: Option<WebhookRow> =
            sqlx::query_as(&format!("{} WHERE w.id = ?", select_webhooks()))
                .bind(id)
                .fetch_optional(&self.reads)
                .await?;
        row.map(Webhook::try_from).transpose()
    }

    async fn delete_webhook(&self, id: &str) -> StoreResult<bool> {
        let id = id.to_string();
        self.writer
            .write(move |conn| {
                Ok(conn
                    .prepare_cached("DELETE FROM webhooks WHERE id = ?")?
                    .execute([id])?
                    > 0)
            })
            .await
    }

    async fn rotate_webhook(
        &self,
        id: &str,
        key: &SealedKey,
        previous_until: Timestamp,
    ) -> StoreResult<bool> {
        let (id, key) = (id.to_string(), key.clone());
        self.writer
            .write(move |conn| {
                Ok(conn
                    .prepare_cached(
                        "UPDATE webhooks SET previous_nonce = secret_nonce,
                             previous_ciphertext = secret_ciphertext, previous_expires_at = ?,
                             secret_nonce = ?, secret_ciphertext = ?
                         WHERE id = ?",
                    )?
                    .execute(params![
                        previous_until.millis(),
                        key.nonce,
                        key.ciphertext,
                        id
                    ])?
                    > 0)
            })
            .await
    }

    async fn enable_webhook(&self, id: &str) -> StoreResult<bool> {
        let id = id.to_string();
        self.writer
            .write(move |conn| {
                Ok(conn
                    .prepare_cached(
                        "UPDATE webhooks SET disabled_at = NULL, disabled_reason = NULL WHERE id = ?",
                    )?
                    .execute([id])?
                    > 0)
            })
            .await
    }

    async fn deliveries(&self, webhook_id: &str, limit: usize) -> StoreResult<Vec<Delivery>> {
        let rows: Vec<DeliveryRow> = sqlx::query_as(&format!(
            "SELECT {DELIVERY_COLUMNS} FROM webhook_deliveries WHERE webhook_id = ?
             ORDER BY id DESC LIMIT ?"
        ))
        .bind(webhook_id)
        .bind(limit as i64)
        .fetch_all(&self.reads)
        .await?;
        rows.into_iter().map(Delivery::try_from).collect()
    }

    async fn redeliver(
        &self,
        webhook_id: &str,
        id: i64,
        now: Timestamp,
    ) -> StoreResult<Option<Delivery>> {
        let webhook_id = webhook_id.to_string();
        let row = self
            .writer
            .write(move |conn| {
                let new: Option<i64> = conn
                    .prepare_cached(
                        "INSERT INTO webhook_deliveries
                             (webhook_id, message_id, saga_id, event, body, status, attempts, next_at, created_at)
                         SELECT webhook_id, message_id, saga_id, event, body, 'pending', 0, ?1, ?1
                         FROM webhook_deliveries WHERE id = ?2 AND webhook_id = ?3
                         RETURNING id",
                    )?
                    .query_row(params![now.millis(), id, webhook_id], |r| r.get(0))
                    .optional()?;
                Ok(new)
            })
            .await?;
        let Some(new) = row else { return Ok(None) };
        let row: DeliveryRow = sqlx::query_as(&format!(
            "SELECT {DELIVERY_COLUMNS} FROM webhook_deliveries WHERE id = ?"
        ))
        .bind(new)
        .fetch_one(&self.reads)
        .await?;
        row.try_into().map(Some)
    }

    async fn claim_deliveries(
        &self,
        owner: &str,
        now: Timestamp,
        lease: Duration,
        limit: usize,
    ) -> StoreResult<Vec<DueDelivery>> {
        let owner = owner.to_string();
        let claimed = self
            .writer
            .write(move |conn| {
                let mut claim = conn.prepare_cached(
                    "UPDATE webhook_deliveries SET lease_owner = ?1, lease_expires_at = ?2,
                         attempts = attempts + 1
                     WHERE id IN (
                         SELECT d.id FROM webhook_deliveries d JOIN webhooks w ON w.id = d.webhook_id
                         WHERE d.status = 'pending' AND d.next_at <= ?3 AND w.disabled_at IS NULL
                           AND (d.lease_expires_at IS NULL OR d.lease_expires_at <= ?3)
                           AND NOT EXISTS (
                               SELECT 1 FROM webhook_deliveries e
                               WHERE e.webhook_id = d.webhook_id AND e.saga_id = d.saga_id
                                 AND e.status = 'pending' AND e.id < d.id)
                         ORDER BY d.id LIMIT ?4)
                     RETURNING id",
                )?;
                let ids = claim
                    .query_map(
                        params![
                            owner,
                            now.plus(lease).millis(),
                            now.millis(),
                            limit as i64
                        ],
                        |r| r.get::<_, i64>(0),
                    )?
                    .collect::<Result<Vec<_>, _>>()?;
                Ok(ids)
            })
            .await?;
        if claimed.is_empty() {
            return Ok(Vec::new());
        }
        let mut due = Vec::with_capacity(claimed.len());
        for id in claimed {
            let row: DueRow = sqlx::query_as(&format!(
                "SELECT {DUE_COLUMNS} FROM webhook_deliveries d JOIN webhooks w ON w.id = d.webhook_id
                 WHERE d.id = ?"
            ))
            .bind(id)
            .fetch_one(&self.reads)
            .await?;
            due.push(row.try_into()?);
        }
        Ok(due)
    }

    async fn finish_attempt(
        &self,
        id: i64,
        owner: &str,
        now: Timestamp,
        outcome: &AttemptOutcome,
    ) -> StoreResult<()> {
        let owner = owner.to_string();
        let c = OutcomeColumns::from(outcome);
        self.writer
            .write(move |conn| {
                let webhook: Option<String> = conn
                    .prepare_cached(
                        "UPDATE webhook_deliveries SET status = ?1, next_at = COALESCE(?2, next_at),
                             last_status = ?3, last_error = ?4,
                             finished_at = CASE WHEN ?5 THEN ?6 ELSE NULL END,
                             lease_owner = NULL, lease_expires_at = NULL
                         WHERE id = ?7 AND lease_owner = ?8
                         RETURNING webhook_id",
                    )?
                    .query_row(
                        params![
                            c.status,
                            c.next_at,
                            c.last_status,
                            c.last_error,
                            c.finished,
                            now.millis(),
                            id,
                            owner
                        ],
                        |r| r.get(0),
                    )
                    .optional()?;
                if let (Some(webhook), Some(reason)) = (webhook, c.disable) {
                    conn.prepare_cached(
                        "UPDATE webhooks SET disabled_at = ?, disabled_reason = ?
                         WHERE id = ? AND disabled_at IS NULL",
                    )?
                    .execute(params![now.millis(), reason, webhook])?;
                }
                Ok(())
            })
            .await
    }

    async fn delete_finished_deliveries(&self, before: Timestamp) -> StoreResult<u64> {
        self.writer
            .write(move |conn| {
                Ok(conn
                    .prepare_cached(
                        "DELETE FROM webhook_deliveries WHERE status <> 'pending' AND finished_at < ?",
                    )?
                    .execute([before.millis()])? as u64)
            })
            .await
    }
}
