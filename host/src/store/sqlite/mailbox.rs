//! The mailbox on SQLite (`store::mailbox` says what it is): a post and a
//! wait's opening are both writes of the one writer, so neither can pass
//! the other.

use super::*;
use crate::store::mailbox::{MailboxStore, NewMessage, Posted, delivered_verdict, repeat_of};
use crate::store::{from_json, parse_saga_id};

/// The oldest message kept under `key` goes to the wait `index` of
/// `saga_id`, which this transaction opened: its row's `received`.
pub(super) fn take(
    conn: &Connection,
    saga_id: &str,
    index: u32,
    key: &str,
    now: Timestamp,
) -> StoreResult<()> {
    let kept: Option<(String, String)> = conn
        .prepare_cached(
            "SELECT id, payload FROM wait_messages
             WHERE key = ? AND saga_id IS NULL AND expires_at >= ?
             ORDER BY created_at, id LIMIT 1",
        )?
        .query_row(params![key, now.millis()], |r| Ok((r.get(0)?, r.get(1)?)))
        .optional()?;
    let Some((id, payload)) = kept else {
        return Ok(());
    };
    let verdict = delivered_verdict(&id, from_json("a message's payload", &payload)?);
    conn.prepare_cached(
        "UPDATE wait_messages SET saga_id = ?, step_index = ?, delivered_at = ? WHERE id = ?",
    )?
    .execute(params![saga_id, index as i64, now.millis(), id])?;
    conn.prepare_cached(
        "UPDATE saga_step_results SET received = ? WHERE saga_id = ? AND step_index = ?",
    )?
    .execute(params![to_json(&verdict), saga_id, index as i64])?;
    Ok(())
}

#[async_trait]
impl MailboxStore for SqliteStore {
    async fn post_message(&self, message: NewMessage) -> StoreResult<Posted> {
        self.writer
            .write(move |conn| {
                let now = message.now.millis();
                let before: Option<(String, Option<String>, Option<i64>)> = conn
                    .prepare_cached(
                        "SELECT request_hash, saga_id, step_index FROM wait_messages WHERE id = ?",
                    )?
                    .query_row([&message.id], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
                    .optional()?;
                if let Some(before) = before {
                    return repeat_of(&message.request_hash, before);
                }
                conn.prepare_cached(
                    "DELETE FROM wait_messages WHERE saga_id IS NULL AND expires_at < ?",
                )?
                .execute([now])?;
                let open: Option<(String, i64)> = conn
                    .prepare_cached(
                        "SELECT r.saga_id, r.step_index FROM saga_step_results r
                         JOIN saga_runs s ON s.id = r.saga_id
                         WHERE r.correlation_key = ? AND r.status = 'waiting'
                           AND r.received IS NULL AND s.cancel_requested = 0
                         ORDER BY r.started_at, r.saga_id LIMIT 1",
                    )?
                    .query_row([&message.key], |r| Ok((r.get(0)?, r.get(1)?)))
                    .optional()?;
                let payload = to_json(&message.payload);
                if let Some((saga, index)) = &open {
                    let verdict = delivered_verdict(&message.id, message.payload.clone());
                    conn.prepare_cached(
                        "UPDATE saga_step_results SET received = ? WHERE saga_id = ? AND step_index = ?",
                    )?
                    .execute(params![to_json(&verdict), saga, index])?;
                    // A new version: a driver holding it reads it again.
                    conn.prepare_cached(
                        "UPDATE saga_runs SET version = version + 1, updated_at = ?1,
                             ready_at = CASE WHEN status = 'paused' THEN ready_at ELSE ?1 END
                         WHERE id = ?2",
                    )?
                    .execute(params![now, saga])?;
                }
                conn.prepare_cached(
                    "INSERT INTO wait_messages
                         (id, key, payload, request_hash, created_at, expires_at, saga_id, step_index, delivered_at)
                     VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                )?
                .execute(params![
                    message.id,
                    message.key,
                    payload,
                    message.request_hash,
                    now,
                    message.expires_at.millis(),
                    open.as_ref().map(|(s, _)| s.as_str()),
                    open.as_ref().map(|(_, i)| *i),
                    open.as_ref().map(|_| now),
                ])?;
                Ok(match open {
                    Some((saga, index)) => Posted::Delivered {
                        saga_id: parse_saga_id(&saga)?,
                        step_index: index as u32,
                    },
                    None => Posted::Kept,
                })
            })
            .await
    }

    async fn mailbox_counts(&self, now: Timestamp) -> StoreResult<(u64, u64)> {
        let (open, kept): (i64, i64) = sqlx::query_as(
            "SELECT (SELECT count(*) FROM saga_step_results WHERE status = 'waiting'),
                    (SELECT count(*) FROM wait_messages WHERE saga_id IS NULL AND expires_at >= ?)",
        )
        .bind(now.millis())
        .fetch_one(&self.reads)
        .await?;
        Ok((open as u64, kept as u64))
    }
}
