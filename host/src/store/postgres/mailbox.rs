//! The mailbox on PostgreSQL (`store::mailbox` says what it is): a post
//! and a wait's opening both take the key's transaction-scoped advisory
//! lock (in the `mail:` space, apart from concurrency keys) before any
//! row, so on every host neither can pass the other.

use super::*;
use crate::store::mailbox::{MailboxStore, NewMessage, Posted, delivered_verdict, repeat_of};
use crate::store::{from_json, parse_saga_id};

/// How many open waits a post tries that closed under it before it keeps
/// the message.
const MAX_RACES: usize = 8;

/// Takes the lock of a correlation key until the transaction ends.
pub(super) async fn lock(tx: &mut Transaction<'static, Postgres>, key: &str) -> StoreResult<()> {
    slots::lock(tx, [format!("mail:{key}").as_str()]).await
}

/// The oldest message kept under `key` goes to the wait `index` of
/// `saga_id`, which this transaction opened (holding the key's lock).
pub(super) async fn take(
    tx: &mut Transaction<'static, Postgres>,
    saga_id: &str,
    index: u32,
    key: &str,
    now: Timestamp,
) -> StoreResult<()> {
    let kept: Option<(String, String)> = sqlx::query_as(
        "SELECT id, payload FROM wait_messages
         WHERE key = $1 AND saga_id IS NULL AND expires_at >= $2
         ORDER BY created_at, id LIMIT 1",
    )
    .bind(key)
    .bind(now.millis())
    .fetch_optional(&mut **tx)
    .await?;
    let Some((id, payload)) = kept else {
        return Ok(());
    };
    let verdict = delivered_verdict(&id, from_json("a message's payload", &payload)?);
    sqlx::query(
        "UPDATE wait_messages SET saga_id = $1, step_index = $2, delivered_at = $3 WHERE id = $4",
    )
    .bind(saga_id)
    .bind(i64::from(index))
    .bind(now.millis())
    .bind(&id)
    .execute(&mut **tx)
    .await?;
    sqlx::query(
        "UPDATE saga_step_results SET received = $1 WHERE saga_id = $2 AND step_index = $3",
    )
    .bind(to_json(&verdict))
    .bind(saga_id)
    .bind(i64::from(index))
    .execute(&mut **tx)
    .await?;
    Ok(())
}

#[async_trait]
impl MailboxStore for PgStore {
    async fn post_message(&self, message: NewMessage) -> StoreResult<Posted> {
        let mut tx = self.pool.begin().await?;
        lock(&mut tx, &message.key).await?;
        let now = message.now.millis();
        let before: Option<(String, Option<String>, Option<i64>)> = sqlx::query_as(
            "SELECT request_hash, saga_id, step_index FROM wait_messages WHERE id = $1",
        )
        .bind(&message.id)
        .fetch_optional(&mut *tx)
        .await?;
        if let Some(before) = before {
            return repeat_of(&message.request_hash, before);
        }
        sqlx::query(
            "DELETE FROM wait_messages WHERE key = $1 AND saga_id IS NULL AND expires_at < $2",
        )
        .bind(&message.key)
        .bind(now)
        .execute(&mut *tx)
        .await?;
        let mut open: Option<(String, i64)> = None;
        // A wait found open may be closing in another host's transaction
        // (its timeout, a cancel) until its row is locked: the row is
        // taken only if it is still open then, else the next one is
        // looked for.
        for _ in 0..MAX_RACES {
            let Some((saga, index)) = sqlx::query_as::<_, (String, i64)>(
                "SELECT r.saga_id, r.step_index FROM saga_step_results r
                 JOIN saga_runs s ON s.id = r.saga_id
                 WHERE r.correlation_key = $1 AND r.status = 'waiting'
                   AND r.received IS NULL AND NOT s.cancel_requested
                 ORDER BY r.started_at, r.saga_id LIMIT 1",
            )
            .bind(&message.key)
            .fetch_optional(&mut *tx)
            .await?
            else {
                break;
            };
            // The saga row first (every writer's order), then its ledger.
            sqlx::query(
                "UPDATE saga_runs SET version = version + 1, updated_at = $1,
                     ready_at = CASE WHEN status = 'paused' THEN ready_at ELSE $1 END
                 WHERE id = $2",
            )
            .bind(now)
            .bind(&saga)
            .execute(&mut *tx)
            .await?;
            let verdict = delivered_verdict(&message.id, message.payload.clone());
            let taken = sqlx::query(
                "UPDATE saga_step_results SET received = $1
                 WHERE saga_id = $2 AND step_index = $3 AND status = 'waiting' AND received IS NULL",
            )
            .bind(to_json(&verdict))
            .bind(&saga)
            .bind(index)
            .execute(&mut *tx)
            .await?
            .rows_affected();
            if taken == 1 {
                // Every host's claim loop hears of it (at commit).
                sqlx::query("SELECT pg_notify($1, '')")
                    .bind(WORK_CHANNEL)
                    .execute(&mut *tx)
                    .await?;
                open = Some((saga, index));
                break;
            }
        }
        sqlx::query(
            "INSERT INTO wait_messages
                 (id, key, payload, request_hash, created_at, expires_at, saga_id, step_index, delivered_at)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
        )
        .bind(&message.id)
        .bind(&message.key)
        .bind(to_json(&message.payload))
        .bind(&message.request_hash)
        .bind(now)
        .bind(message.expires_at.millis())
        .bind(open.as_ref().map(|(s, _)| s.as_str()))
        .bind(open.as_ref().map(|(_, i)| *i))
        .bind(open.as_ref().map(|_| now))
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(match open {
            Some((saga, index)) => Posted::Delivered {
                saga_id: parse_saga_id(&saga)?,
                step_index: index as u32,
            },
            None => Posted::Kept,
        })
    }

    async fn mailbox_counts(&self, now: Timestamp) -> StoreResult<(u64, u64)> {
        let (open, kept): (i64, i64) = sqlx::query_as(
            "SELECT (SELECT count(*) FROM saga_step_results WHERE status = 'waiting'),
                    (SELECT count(*) FROM wait_messages WHERE saga_id IS NULL AND expires_at >= $1)",
        )
        .bind(now.millis())
        .fetch_one(&self.pool)
        .await?;
        Ok((open as u64, kept as u64))
    }
}
