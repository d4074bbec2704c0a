//! Concurrency keys (docs/flow-control.md): a saga may claim up to
//! [`MAX_KEYS`] keys, each with a limit on how many sagas hold it at once.
//! The key is held for the saga's whole life (its waits, pause and
//! compensation) and given up when it ends. This module holds the values
//! and the one admission rule; the stores keep the slots as rows, so every
//! host on one database sees the same holders and the same queue.
//!
//! Admission is all or nothing: a saga holds every one of its keys, or it
//! is queued on all of them. One arrival order (`seq`) is shared by every
//! key, so a saga waiting for two keys never holds one while another saga
//! holds the other and waits for the first: the oldest waiter of any set
//! of keys is at the head of each of its queues, and is admitted as soon
//! as its keys free.

use super::{SagaId, Timestamp, string_enum};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// Most keys one saga may name.
pub const MAX_KEYS: usize = 4;
/// Longest key, after its fields are filled in.
pub const MAX_KEY_BYTES: usize = 256;

string_enum! {
    /// What a start does when a key has no free slot.
    #[derive(Default)]
    pub enum OnConflict {
        /// Store the saga `pending`; it starts in arrival order per key
        /// when a slot frees.
        #[default]
        Queue,
        /// Refuse the start (`409 concurrency_conflict`); nothing is stored.
        Reject,
    }
}

string_enum! {
    /// Where a saga stands on one of its keys.
    pub enum SlotState {
        /// It holds a slot.
        Holding,
        /// It waits for a slot.
        Queued,
        /// It ended and gave the slot up (kept for its history).
        Released,
    }
}

/// A key as a start or template states it, and as a saga holds it (its
/// fields filled in: `{{inputs.PATH}}`, `{{deployment_id}}`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ConcurrencyKey {
    /// E.g. `droplet:{{inputs.droplet_id}}`.
    pub key: String,
    /// Sagas that may hold the key at once (1 or more; default 1).
    #[serde(default = "one")]
    pub limit: u32,
    #[serde(default)]
    pub on_conflict: OnConflict,
}

fn one() -> u32 {
    1
}

/// One saga's row on a key, as stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Slot {
    pub key: String,
    pub saga_id: SagaId,
    /// The limit this saga asked for.
    pub limit: u32,
    pub state: SlotState,
    /// Arrival order, shared by every key.
    #[serde(skip)]
    pub seq: i64,
    /// When it was queued, or took its slot.
    pub since: Timestamp,
}

/// `GET /v1/concurrency/{key}`: who holds a key and who waits, in order.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct KeyStatus {
    pub key: String,
    pub holders: Vec<SlotAge>,
    /// In the order they will be admitted.
    pub queue: Vec<SlotAge>,
}

/// A holder or waiter, with how long it has been one.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct SlotAge {
    pub saga_id: SagaId,
    pub limit: u32,
    pub since: Timestamp,
    /// Milliseconds since `since`.
    pub age_ms: u64,
}

/// The first key on which a saga may not hold a slot now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Blocked {
    pub key: String,
    /// The sagas holding it.
    pub holders: Vec<SagaId>,
}

/// Whether a saga may hold every one of `keys` now, given the live
/// (holding or queued) slots of other sagas on those keys. `seq` is the
/// saga's place in the arrival order (`None`: it arrives now, behind
/// everyone). On each key, the holders plus the sagas queued ahead of it
/// must leave room under its limit.
pub fn admit(keys: &[ConcurrencyKey], seq: Option<i64>, others: &[Slot]) -> Result<(), Blocked> {
    for k in keys {
        let on_key = others.iter().filter(|s| s.key == k.key);
        let holders: Vec<SagaId> = on_key
            .clone()
            .filter(|s| s.state == SlotState::Holding)
            .map(|s| s.saga_id)
            .collect();
        let ahead = on_key
            .filter(|s| s.state == SlotState::Queued && seq.is_none_or(|own| s.seq < own))
            .count();
        if holders.len() + ahead >= k.limit as usize {
            return Err(Blocked {
                key: k.key.clone(),
                holders,
            });
        }
    }
    Ok(())
}

/// What a start meets on its keys.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Arrival {
    /// It holds every key now.
    Admitted,
    /// It waits, queued on every key.
    Queued,
    /// A key with `on_conflict: reject` has no room: nothing is stored.
    Rejected(Blocked),
}

/// What a saga arriving now with `keys` meets, given the live slots of
/// other sagas on those keys: a `reject` key without room refuses it
/// (whatever the other keys say), else [`admit`] decides.
pub fn arrive(keys: &[ConcurrencyKey], others: &[Slot]) -> Arrival {
    for k in keys.iter().filter(|k| k.on_conflict == OnConflict::Reject) {
        if let Err(blocked) = admit(std::slice::from_ref(k), None, others) {
            return Arrival::Rejected(blocked);
        }
    }
    match admit(keys, None, others) {
        Ok(()) => Arrival::Admitted,
        Err(_) => Arrival::Queued,
    }
}

/// A key's label in metrics: the key up to its first `:`.
pub fn key_prefix(key: &str) -> &str {
    key.split(':').next().unwrap_or(key)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(name: &str, limit: u32) -> ConcurrencyKey {
        ConcurrencyKey {
            key: name.into(),
            limit,
            on_conflict: OnConflict::Queue,
        }
    }

    fn slot(name: &str, state: SlotState, seq: i64) -> Slot {
        Slot {
            key: name.into(),
            saga_id: SagaId::new(),
            limit: 1,
            state,
            seq,
            since: Timestamp(0),
        }
    }

    #[test]
    fn a_key_admits_up_to_its_limit_counting_those_queued_ahead() {
        let holding = slot("a", SlotState::Holding, 1);
        assert!(admit(&[key("a", 2)], None, std::slice::from_ref(&holding)).is_ok());
        let blocked = admit(&[key("a", 1)], None, std::slice::from_ref(&holding)).unwrap_err();
        assert_eq!(blocked.key, "a");
        assert_eq!(blocked.holders, vec![holding.saga_id]);
        // A free slot goes to the oldest waiter, not to a newer one.
        let queued = slot("a", SlotState::Queued, 2);
        assert!(admit(&[key("a", 1)], Some(3), std::slice::from_ref(&queued)).is_err());
        assert!(admit(&[key("a", 1)], Some(2), &[]).is_ok());
        assert!(admit(&[key("a", 1)], None, &[queued]).is_err());
    }

    #[test]
    fn every_key_must_admit() {
        let others = [slot("b", SlotState::Holding, 1)];
        let blocked = admit(&[key("a", 1), key("b", 1)], None, &others).unwrap_err();
        assert_eq!(blocked.key, "b");
        assert!(admit(&[key("a", 1), key("c", 1)], None, &others).is_ok());
    }

    #[test]
    fn a_reject_key_without_room_refuses_even_behind_a_queue_key() {
        let others = [
            slot("q", SlotState::Holding, 1),
            slot("r", SlotState::Holding, 2),
        ];
        let mut reject = key("r", 1);
        reject.on_conflict = OnConflict::Reject;
        assert!(matches!(
            arrive(&[key("q", 1), reject.clone()], &others),
            Arrival::Rejected(b) if b.key == "r"
        ));
        assert_eq!(arrive(&[key("q", 1)], &others), Arrival::Queued);
        assert_eq!(
            arrive(&[key("x", 1), reject], &others[..1]),
            Arrival::Admitted
        );
    }

    #[test]
    fn the_metric_label_is_the_key_up_to_its_first_colon() {
        assert_eq!(key_prefix("droplet:42:x"), "droplet");
        assert_eq!(key_prefix("global"), "global");
    }
}
