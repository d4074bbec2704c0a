//! Capability URLs of waits (docs/waits.md): `POST /v1/callbacks/{token}`
//! completes one open wait with no bearer token, for a system that cannot
//! hold one (a provider's webhook).
//!
//! A token names the saga, the wait's index and when that wait opened,
//! with an HMAC-SHA256 tag (128 bits kept) under a key derived from the
//! secrets key: every host sharing the key makes and checks the same
//! tokens, and the database stores nothing from which one could be made
//! (not even a hash). A token is good for one opening of one wait: once
//! that wait completes, fails, or the saga is cancelled, it answers `410`;
//! a wait opened again (a retry) gets a new one. Tags are compared in
//! constant time.

use crate::model::{SagaId, SagaRun, StepResult, StepStatus, Timestamp};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hmac::{Hmac, Mac};
use sha2::Sha256;
use zeroize::Zeroizing;

type HmacSha256 = Hmac<Sha256>;

/// Bytes of a token before its tag: saga id, index, opening time.
const BODY: usize = 16 + 4 + 8;
/// Bytes of the tag kept.
const TAG: usize = 16;

/// The callback key from the secrets key: a key of its own, so a token
/// tells nothing about the key secrets are sealed with.
pub(crate) fn derive_key(secrets_key: &[u8]) -> Zeroizing<[u8; 32]> {
    let mut mac = HmacSha256::new_from_slice(secrets_key).expect("HMAC takes any key size");
    mac.update(b"wasaga wait callback tokens v1");
    Zeroizing::new(mac.finalize().into_bytes().into())
}

/// What a valid token names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CallbackTarget {
    pub saga_id: SagaId,
    pub step_index: u32,
    /// When the wait opened (its row's `started_at`).
    pub opened: Timestamp,
}

/// Makes and checks tokens.
pub struct CallbackSigner {
    key: Zeroizing<[u8; 32]>,
}

impl CallbackSigner {
    pub(crate) fn new(key: Zeroizing<[u8; 32]>) -> CallbackSigner {
        CallbackSigner { key }
    }

    fn mac(&self, body: &[u8]) -> HmacSha256 {
        let mut mac = HmacSha256::new_from_slice(&*self.key).expect("HMAC takes any key size");
        mac.update(body);
        mac
    }

    /// The token of one opening of a wait.
    pub fn token(&self, target: CallbackTarget) -> String {
        let mut bytes = Vec::with_capacity(BODY + TAG);
        bytes.extend_from_slice(target.saga_id.0.as_bytes());
        bytes.extend_from_slice(&target.step_index.to_be_bytes());
        bytes.extend_from_slice(&target.opened.millis().to_be_bytes());
        let tag = self.mac(&bytes).finalize().into_bytes();
        bytes.extend_from_slice(&tag[..TAG]);
        URL_SAFE_NO_PAD.encode(bytes)
    }

    /// What `token` names, if this key made it; `None` for anything else
    /// (malformed, forged, made with another key).
    pub fn check(&self, token: &str) -> Option<CallbackTarget> {
        if token.len() > 128 {
            return None;
        }
        let bytes = URL_SAFE_NO_PAD.decode(token).ok()?;
        if bytes.len() != BODY + TAG {
            return None;
        }
        let (body, tag) = bytes.split_at(BODY);
        self.mac(body).verify_truncated_left(tag).ok()?;
        let uuid = uuid::Uuid::from_slice(&body[..16]).ok()?;
        Some(CallbackTarget {
            saga_id: SagaId(uuid),
            step_index: u32::from_be_bytes(body[16..20].try_into().ok()?),
            opened: Timestamp(i64::from_be_bytes(body[20..28].try_into().ok()?)),
        })
    }
}

/// Whether `row` is an open wait nothing answered yet: the rows that show
/// a `callback_url`.
pub fn is_open_wait(row: &StepResult) -> bool {
    row.status == StepStatus::Waiting && row.received.is_none() && row.started_at.is_some()
}

/// Fills in waits' `callback_url`s: a signer and where clients reach this
/// server (`--public-url`; without it the URLs are paths).
pub struct CallbackUrls {
    pub signer: CallbackSigner,
    base: String,
}

impl CallbackUrls {
    pub fn new(signer: CallbackSigner, public_url: Option<&str>) -> CallbackUrls {
        CallbackUrls {
            signer,
            base: public_url.unwrap_or("").trim_end_matches('/').to_string(),
        }
    }

    /// Sets `callback_url` on each of `rows` (of `saga`) that is an open
    /// wait.
    pub fn fill(&self, saga: &SagaRun, rows: &mut [StepResult]) {
        for row in rows {
            let is_wait = row.wait_for.is_some()
                || saga
                    .plan
                    .get(row.index as usize)
                    .is_some_and(|s| s.wait.is_some());
            let (true, true, Some(opened)) = (is_wait, is_open_wait(row), row.started_at) else {
                continue;
            };
            let token = self.signer.token(CallbackTarget {
                saga_id: saga.id,
                step_index: row.index,
                opened,
            });
            row.callback_url = Some(format!("{}/v1/callbacks/{token}", self.base));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn signer(byte: u8) -> CallbackSigner {
        CallbackSigner::new(derive_key(&[byte; 32]))
    }

    #[test]
    fn a_token_names_its_wait_and_nothing_else_opens() {
        let target = CallbackTarget {
            saga_id: SagaId::new(),
            step_index: 3,
            opened: Timestamp(1_765_000_000_123),
        };
        let token = signer(1).token(target);
        assert!(token.len() < 64, "{token}");
        assert_eq!(signer(1).check(&token), Some(target));
        assert_eq!(signer(2).check(&token), None, "another key");
        let mut forged = token.clone().into_bytes();
        forged[5] = if forged[5] == b'A' { b'B' } else { b'A' };
        assert_eq!(signer(1).check(&String::from_utf8(forged).unwrap()), None);
        assert_eq!(signer(1).check("not a token"), None);
        assert_eq!(signer(1).check(&token[..token.len() - 2]), None);
    }
}
