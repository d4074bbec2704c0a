//! Page cursors of the list routes (`GET /v1/sagas`, `GET /v1/resources`,
//! and the console's pages of sagas):
//! an opaque token holding where the page before ended and a fingerprint
//! of the filters it was for, so that following it never skips or repeats
//! an item, and a cursor used with other filters (or made up) is a clear
//! `400` rather than a wrong page.

use super::error::ApiError;
use base64::Engine as _;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};

/// What a cursor holds: the last item's key, and the filters' fingerprint.
#[derive(Serialize, Deserialize)]
struct Cursor<K> {
    k: K,
    f: String,
}

/// A short fingerprint of a list's filters (their `Debug` text).
pub(crate) fn fingerprint(filters: &impl std::fmt::Debug) -> String {
    hex::encode(&Sha256::digest(format!("{filters:?}").as_bytes())[..8])
}

/// The cursor of a page whose last item has `key`.
pub(crate) fn encode<K: Serialize>(key: K, filters: &impl std::fmt::Debug) -> String {
    let cursor = Cursor {
        k: key,
        f: fingerprint(filters),
    };
    base64::engine::general_purpose::URL_SAFE_NO_PAD
        .encode(serde_json::to_vec(&cursor).expect("a cursor serializes"))
}

/// The key a cursor holds, if this server made it for these filters.
/// `names` lists the filters, for the message when they differ.
pub(crate) fn decode<K: DeserializeOwned>(
    text: &str,
    filters: &impl std::fmt::Debug,
    names: &str,
) -> Result<K, ApiError> {
    let garbage = || {
        ApiError::bad_request(
            "`cursor` is not a cursor this server made; pass the `next_cursor` of a list answer as it is",
        )
    };
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(text)
        .map_err(|_| garbage())?;
    let cursor: Cursor<K> = serde_json::from_slice(&bytes).map_err(|_| garbage())?;
    if cursor.f != fingerprint(filters) {
        return Err(ApiError::bad_request(format!(
            "`cursor` belongs to a list with other filters; use the same {names}"
        )));
    }
    Ok(cursor.k)
}
