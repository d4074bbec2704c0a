//! Secrets: values a step can use (or, granted `read`, see) without them
//! ever being stored in plain text, returned by the API, or written to a
//! log, an output, an error or a recorded resource.
//!
//! Values are sealed with XChaCha20-Poly1305 (RustCrypto) under a 32-byte
//! key from `--secrets-key-file` (64 hex characters; every host sharing a
//! database uses the same file), each with a random 24-byte nonce and the
//! secret's name as associated data, so a sealed value cannot be moved to
//! another name. Without a key, secrets cannot be set. Everything a granted
//! step produces passes through [`redact`] and [`redact_json`] before it is
//! stored: each granted value becomes `[secret:NAME]`.

use crate::grants::Origin;
use crate::model::Timestamp;
use crate::store::StoreError;
use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{Key, XChaCha20Poly1305, XNonce};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::fmt;
use std::path::Path;
use std::str::FromStr;
use utoipa::ToSchema;
use zeroize::Zeroizing;

/// A secret's name: 1 to 64 lowercase letters, digits and dashes.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, ToSchema)]
#[serde(try_from = "String", into = "String")]
#[schema(value_type = String, example = "do-token")]
pub struct SecretName(String);

/// Why a text is not a secret name.
#[derive(Debug, Clone, thiserror::Error)]
#[error("`{0}` is not a secret name: use 1 to 64 lowercase letters, digits and dashes")]
pub struct BadSecretName(String);

impl FromStr for SecretName {
    type Err = BadSecretName;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let ok = (1..=64).contains(&s.len())
            && s.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
        if ok {
            Ok(SecretName(s.to_string()))
        } else {
            Err(BadSecretName(s.chars().take(80).collect()))
        }
    }
}

impl TryFrom<String> for SecretName {
    type Error = BadSecretName;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        s.parse()
    }
}

impl From<SecretName> for String {
    fn from(n: SecretName) -> String {
        n.0
    }
}

impl fmt::Display for SecretName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl SecretName {
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// A secret as stored: sealed.
#[derive(Clone)]
pub struct SealedSecret {
    pub name: SecretName,
    pub nonce: Vec<u8>,
    pub ciphertext: Vec<u8>,
    /// The origins its value may be sent to.
    pub origins: Vec<Origin>,
    pub created_at: Timestamp,
    pub updated_at: Timestamp,
}

impl fmt::Debug for SealedSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SealedSecret")
            .field("name", &self.name)
            .field("origins", &self.origins)
            .finish_non_exhaustive()
    }
}

/// A secret as the API lists it: never its value.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct SecretInfo {
    pub name: SecretName,
    #[schema(value_type = Vec<String>)]
    pub origins: Vec<Origin>,
    pub created_at: Timestamp,
    pub updated_at: Timestamp,
}

impl From<&SealedSecret> for SecretInfo {
    fn from(s: &SealedSecret) -> SecretInfo {
        SecretInfo {
            name: s.name.clone(),
            origins: s.origins.clone(),
            created_at: s.created_at,
            updated_at: s.updated_at,
        }
    }
}

/// The key secrets are sealed with.
pub struct SecretBox {
    cipher: XChaCha20Poly1305,
}

/// Why a secrets key file is refused. Never quotes the file's content.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct BadKey(String);

impl SecretBox {
    /// Reads the key: 64 hex characters (32 bytes), surrounding whitespace
    /// ignored.
    pub fn from_file(path: &Path) -> Result<SecretBox, BadKey> {
        let text = Zeroizing::new(
            std::fs::read_to_string(path)
                .map_err(|e| BadKey(format!("reading the secrets key {}: {e}", path.display())))?,
        );
        let bytes = Zeroizing::new(hex::decode(text.trim()).map_err(|_| {
            BadKey(format!(
                "the secrets key {} is not hex: it must be 64 hex characters (32 bytes), e.g. from `openssl rand -hex 32`",
                path.display()
            ))
        })?);
        if bytes.len() != 32 {
            return Err(BadKey(format!(
                "the secrets key {} is {} bytes; it must be 32 (64 hex characters)",
                path.display(),
                bytes.len()
            )));
        }
        Ok(SecretBox {
            cipher: XChaCha20Poly1305::new(Key::from_slice(&bytes)),
        })
    }

    /// Seals `value` for the secret `name`.
    pub fn seal(&self, name: &SecretName, value: &str) -> Result<(Vec<u8>, Vec<u8>), StoreError> {
        let nonce: [u8; 24] = rand::random();
        let ciphertext = self
            .cipher
            .encrypt(
                XNonce::from_slice(&nonce),
                Payload {
                    msg: value.as_bytes(),
                    aad: name.as_str().as_bytes(),
                },
            )
            .map_err(|_| StoreError::Secrets("sealing a secret failed".into()))?;
        Ok((nonce.to_vec(), ciphertext))
    }

    /// Opens a stored secret; fails when the key is not the one it was
    /// sealed with (or the row was tampered with).
    pub fn open(&self, secret: &SealedSecret) -> Result<Zeroizing<String>, StoreError> {
        if secret.nonce.len() != 24 {
            return Err(StoreError::Corrupt(format!(
                "secret `{}` has a nonce of {} bytes",
                secret.name,
                secret.nonce.len()
            )));
        }
        let plain = Zeroizing::new(
            self.cipher
                .decrypt(
                    XNonce::from_slice(&secret.nonce),
                    Payload {
                        msg: &secret.ciphertext,
                        aad: secret.name.as_str().as_bytes(),
                    },
                )
                .map_err(|_| {
                    StoreError::Secrets(format!(
                        "secret `{}` does not open with this host's key: is --secrets-key-file the file the other hosts use?",
                        secret.name
                    ))
                })?,
        );
        String::from_utf8(plain.to_vec())
            .map(Zeroizing::new)
            .map_err(|_| StoreError::Corrupt(format!("secret `{}` is not UTF-8", secret.name)))
    }
}

/// `text` with every value of `pairs` (value, name) replaced by
/// `[secret:NAME]`. `pairs` longest value first.
pub fn redact(text: &str, pairs: &[(&str, &str)]) -> String {
    let mut out = text.to_string();
    for (value, name) in pairs {
        if out.contains(value) {
            out = out.replace(value, &format!("[secret:{name}]"));
        }
    }
    out
}

/// [`redact`] on every string (keys included) of a JSON document.
pub fn redact_json(value: &mut Value, pairs: &[(&str, &str)]) {
    match value {
        Value::String(s) if pairs.iter().any(|(v, _)| s.contains(v)) => {
            *s = redact(s, pairs);
        }
        Value::Array(items) => items.iter_mut().for_each(|v| redact_json(v, pairs)),
        Value::Object(map) => {
            let keys: Vec<String> = map.keys().cloned().collect();
            for key in keys {
                let mut v = map.remove(&key).expect("a key of the map");
                redact_json(&mut v, pairs);
                map.insert(redact(&key, pairs), v);
            }
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn key() -> SecretBox {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("key");
        std::fs::write(&path, format!("{}\n", "ab".repeat(32))).unwrap();
        SecretBox::from_file(&path).unwrap()
    }

    #[test]
    fn a_sealed_value_opens_only_under_its_name_and_key() {
        let name: SecretName = "do-token".parse().unwrap();
        let (nonce, ciphertext) = key().seal(&name, "s3cr3t").unwrap();
        assert!(!String::from_utf8_lossy(&ciphertext).contains("s3cr3t"));
        let sealed = SealedSecret {
            name: name.clone(),
            nonce,
            ciphertext,
            origins: Vec::new(),
            created_at: Timestamp(0),
            updated_at: Timestamp(0),
        };
        assert_eq!(key().open(&sealed).unwrap().as_str(), "s3cr3t");
        let moved = SealedSecret {
            name: "other".parse().unwrap(),
            ..sealed.clone()
        };
        assert!(key().open(&moved).is_err(), "bound to its name");
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("other-key");
        std::fs::write(&path, "cd".repeat(32)).unwrap();
        let err = SecretBox::from_file(&path)
            .unwrap()
            .open(&sealed)
            .unwrap_err();
        assert!(
            err.to_string()
                .contains("does not open with this host's key"),
            "{err}"
        );
        assert!(!err.to_string().contains("s3cr3t"));
    }

    #[test]
    fn bad_keys_and_names_are_refused_without_quoting_them() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("key");
        std::fs::write(&path, "not-hex-at-all").unwrap();
        let err = SecretBox::from_file(&path).err().unwrap().to_string();
        assert!(
            err.contains("not hex") && !err.contains("not-hex-at-all"),
            "{err}"
        );
        std::fs::write(&path, "abcd").unwrap();
        let err = SecretBox::from_file(&path).err().unwrap().to_string();
        assert!(err.contains("is 2 bytes; it must be 32"), "{err}");
        for bad in ["", "Upper", "under_score", &"a".repeat(65)] {
            assert!(bad.parse::<SecretName>().is_err(), "{bad}");
        }
        assert!("do-token-2".parse::<SecretName>().is_ok());
    }

    #[test]
    fn redaction_reaches_every_string() {
        let pairs = [("s3cr3t-long", "b"), ("s3cr3t", "a")];
        assert_eq!(
            redact("x s3cr3t-long y s3cr3t", &pairs),
            "x [secret:b] y [secret:a]"
        );
        let mut doc = json!({"k": ["s3cr3t", {"s3cr3t": 1, "n": "pre-s3cr3t"}], "x": 2});
        redact_json(&mut doc, &pairs);
        assert_eq!(
            doc,
            json!({"k": ["[secret:a]", {"[secret:a]": 1, "n": "pre-[secret:a]"}], "x": 2})
        );
    }
}
