//! The mailbox of messages for waits (docs/waits.md), shared by every
//! host on one database. A posted message goes, in the post's own
//! transaction, to the oldest open wait holding its correlation key (its
//! ledger row's `received`, and its saga made ready); with none open it is
//! kept, and a wait that opens later takes it in the transaction that
//! opens it ([`Transition::take_message`](super::Transition)). Both sides
//! run under the one writer (SQLite) or the key's advisory lock
//! (PostgreSQL), so a message can never pass a wait opening at the same
//! moment: it is delivered or kept, never both, never neither. A
//! [`Store`](super::Store) is a [`MailboxStore`].

use super::StoreResult;
use crate::model::{SagaId, Timestamp, WaitVerdict};
use async_trait::async_trait;
use serde_json::Value;

/// A message to post.
#[derive(Debug, Clone)]
pub struct NewMessage {
    /// The `Idempotency-Key`, or a fresh id.
    pub id: String,
    pub key: String,
    pub payload: Value,
    /// The request's hash: a repeat under the same id must be the same.
    pub request_hash: String,
    pub now: Timestamp,
    pub expires_at: Timestamp,
}

/// What posting a message did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Posted {
    /// Given to this open wait, whose saga is ready now.
    Delivered { saga_id: SagaId, step_index: u32 },
    /// No wait with its key is open: kept until one opens, or it expires.
    Kept,
    /// The same message was posted before under this id: where it went.
    Repeat { delivered_to: Option<(SagaId, u32)> },
    /// The id was used with another message: nothing stored.
    IdConflict,
}

/// What posting again under a stored message's id is: the message as
/// stored (`hash`, and where it went) against the new one's hash.
pub(crate) fn repeat_of(
    request_hash: &str,
    (hash, saga, index): (String, Option<String>, Option<i64>),
) -> StoreResult<Posted> {
    if hash != request_hash {
        return Ok(Posted::IdConflict);
    }
    let delivered_to = match (saga, index) {
        (Some(saga), Some(index)) => Some((super::parse_saga_id(&saga)?, index as u32)),
        _ => None,
    };
    Ok(Posted::Repeat { delivered_to })
}

/// What a wait that received a message holds, as its row stores it.
pub(crate) fn delivered_verdict(id: &str, payload: Value) -> WaitVerdict {
    WaitVerdict::Completed {
        payload,
        by: vec![format!("message:{id}")],
    }
}

/// Messages for waits.
#[async_trait]
pub trait MailboxStore: Send + Sync {
    /// Delivers `message` to the oldest open wait with its key (on a saga
    /// not being cancelled), or keeps it; expired kept messages are
    /// dropped first.
    async fn post_message(&self, message: NewMessage) -> StoreResult<Posted>;

    /// Waits open now, and messages kept (not delivered, not expired):
    /// for `/metrics`.
    async fn mailbox_counts(&self, now: Timestamp) -> StoreResult<(u64, u64)>;
}
