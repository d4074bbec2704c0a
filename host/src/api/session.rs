//! Console sessions: what the console's cookie holds, and the CSRF token
//! bound to it.
//!
//! Logging in with a token makes a session: a random 256-bit id, which is
//! all the cookie holds (HttpOnly, SameSite=Strict, expiring with the
//! session), never the token itself. The database keeps only the id's
//! SHA-256, with the label and the SHA-256 of the token that logged in and
//! an expiry, so every host sharing the database knows every session, a
//! logout revokes it everywhere at once, and a token removed from the
//! tokens file ends its sessions. A state-changing request authenticated
//! by the cookie must carry the page's CSRF token: HMAC-SHA256 keyed by the
//! session id, which a page of another site cannot compute (it cannot read
//! the cookie), which differs for every session (a token from before a
//! logout is dead), and which any host can check without a shared key.

use super::auth::{Caller, Tokens};
use crate::model::Timestamp;
use crate::store::{ConsoleSession, Store, StoreError};
use axum::http::{HeaderMap, header};
use base64::Engine as _;
use hmac::{Hmac, Mac};
use sha2::{Digest as _, Sha256};
use std::time::Duration;

/// The cookie that holds a console session's id.
pub const SESSION_COOKIE: &str = "wasaga_session";

/// The header a cookie-authenticated state change must carry.
pub const CSRF_HEADER: &str = "x-csrf-token";

/// What the CSRF MAC is computed over (the key is the session id).
const CSRF_CONTEXT: &[u8] = b"wasaga console csrf v1";

/// The session id a request's cookie carries.
pub fn session_id(headers: &HeaderMap) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(name, _)| *name == SESSION_COOKIE)
        .map(|(_, value)| value.to_string())
        .filter(|v| !v.is_empty())
}

fn id_sha256(id: &str) -> String {
    hex::encode(Sha256::digest(id.as_bytes()))
}

fn mac(id: &str) -> Hmac<Sha256> {
    let mut mac = Hmac::<Sha256>::new_from_slice(id.as_bytes()).expect("HMAC takes any key");
    mac.update(CSRF_CONTEXT);
    mac
}

/// The CSRF token of a session.
pub fn csrf_token(id: &str) -> String {
    hex::encode(mac(id).finalize().into_bytes())
}

/// Whether `presented` is the CSRF token of session `id` (constant time).
pub fn csrf_ok(id: &str, presented: &str) -> bool {
    hex::decode(presented.trim()).is_ok_and(|tag| mac(id).verify_slice(&tag).is_ok())
}

/// The caller of a live session: it exists, has not expired, and the token
/// that made it is still known under the same label.
pub async fn caller(
    store: &dyn Store,
    tokens: &Tokens,
    id: &str,
) -> Result<Option<Caller>, StoreError> {
    let Some(session) = store.session(&id_sha256(id), Timestamp::now()).await? else {
        return Ok(None);
    };
    let Ok(Ok(digest)) = hex::decode(&session.token_sha256).map(<[u8; 32]>::try_from) else {
        return Ok(None);
    };
    Ok(tokens
        .by_digest(&digest)
        .filter(|caller| caller.label.as_deref() == Some(session.label.as_str())))
}

/// Makes a session for the holder of `token` (already checked); answers
/// its id and the `Set-Cookie` value that carries it.
pub async fn create(
    store: &dyn Store,
    caller: &Caller,
    token: &str,
    ttl: Duration,
) -> Result<(String, String), StoreError> {
    let bytes: [u8; 32] = rand::random();
    let id = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes);
    let now = Timestamp::now();
    let session = ConsoleSession {
        id_sha256: id_sha256(&id),
        label: caller.label.clone().unwrap_or_default(),
        token_sha256: hex::encode(Tokens::digest(token)),
        created_at: now,
        expires_at: Timestamp(now.millis().saturating_add(ttl.as_millis() as i64)),
    };
    store.put_session(&session, now).await?;
    let cookie = format!(
        "{SESSION_COOKIE}={id}; HttpOnly; SameSite=Strict; Path=/; Max-Age={}",
        ttl.as_secs()
    );
    Ok((id, cookie))
}

/// Revokes the session `id` (a logout), on every host.
pub async fn revoke(store: &dyn Store, id: &str) -> Result<(), StoreError> {
    store.delete_session(&id_sha256(id)).await
}

/// The `Set-Cookie` value that clears the session cookie.
pub const CLEAR_COOKIE: &str = "wasaga_session=; HttpOnly; SameSite=Strict; Path=/; Max-Age=0";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_csrf_token_belongs_to_one_session() {
        let token = csrf_token("session-a");
        assert!(csrf_ok("session-a", &token));
        assert!(!csrf_ok("session-b", &token));
        assert!(!csrf_ok("session-a", ""));
        assert!(!csrf_ok("session-a", "not hex"));
        assert!(!csrf_ok("session-a", &token[..20]));
    }
}
