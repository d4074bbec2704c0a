//! Secrets: values a step can use (or, granted `read`, see) without them
//! ever being stored in plain text, returned by the API, or written to a
//! log, an output, an error or a recorded resource.
//!
//! Values are sealed with XChaCha20-Poly1305 (RustCrypto) under a 32-byte
//! key from `--secrets-key-file` (64 hex characters; every host sharing a
//! database uses the same file), each with a random 24-byte nonce and the
//! secret's name as associated data, so a sealed value cannot be moved to
//! another name. Without a key, secrets cannot be set. Everything a step
//! produces passes through a [`Redactor`] of every secret's value and its
//! common encodings before it is stored: each becomes `[secret:NAME]`.

pub use crate::model::{BadSecretName, SealedSecret, SecretInfo, SecretName};
use crate::store::StoreError;
use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{Key, XChaCha20Poly1305, XNonce};
use serde_json::Value;
use std::fmt;
use std::path::Path;
use zeroize::Zeroizing;

/// The key secrets are sealed with.
pub struct SecretBox {
    cipher: XChaCha20Poly1305,
    /// The key waits' capability URLs are signed with, derived from the
    /// secrets key (`crate::callbacks`).
    callback_key: Zeroizing<[u8; 32]>,
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
            callback_key: crate::callbacks::derive_key(&bytes),
        })
    }

    /// What signs and checks waits' capability URLs on this host (and on
    /// every host sharing its key).
    pub fn callbacks(&self) -> crate::callbacks::CallbackSigner {
        crate::callbacks::CallbackSigner::new(self.callback_key.clone())
    }

    /// Seals `value` for the secret `name`.
    pub fn seal(&self, name: &SecretName, value: &str) -> Result<(Vec<u8>, Vec<u8>), StoreError> {
        self.seal_for(name.as_str(), value.as_bytes())
    }

    /// Seals `value` bound to `context` (the associated data: a value sealed
    /// for one context does not open for another).
    pub fn seal_for(&self, context: &str, value: &[u8]) -> Result<(Vec<u8>, Vec<u8>), StoreError> {
        let nonce: [u8; 24] = rand::random();
        let ciphertext = self
            .cipher
            .encrypt(
                XNonce::from_slice(&nonce),
                Payload {
                    msg: value,
                    aad: context.as_bytes(),
                },
            )
            .map_err(|_| StoreError::Secrets("sealing a secret failed".into()))?;
        Ok((nonce.to_vec(), ciphertext))
    }

    /// Opens a stored secret; fails when the key is not the one it was
    /// sealed with (or the row was tampered with).
    pub fn open(&self, secret: &SealedSecret) -> Result<Zeroizing<String>, StoreError> {
        let plain = self.open_for(
            &format!("secret `{}`", secret.name),
            secret.name.as_str(),
            &secret.nonce,
            &secret.ciphertext,
        )?;
        String::from_utf8(plain.to_vec())
            .map(Zeroizing::new)
            .map_err(|_| StoreError::Corrupt(format!("secret `{}` is not UTF-8", secret.name)))
    }

    /// Opens what [`SecretBox::seal_for`] sealed for `context`; `what` names
    /// it in errors.
    pub fn open_for(
        &self,
        what: &str,
        context: &str,
        nonce: &[u8],
        ciphertext: &[u8],
    ) -> Result<Zeroizing<Vec<u8>>, StoreError> {
        if nonce.len() != 24 {
            return Err(StoreError::Corrupt(format!(
                "{what} has a nonce of {} bytes",
                nonce.len()
            )));
        }
        self.cipher
            .decrypt(
                XNonce::from_slice(nonce),
                Payload {
                    msg: ciphertext,
                    aad: context.as_bytes(),
                },
            )
            .map(Zeroizing::new)
            .map_err(|_| {
                StoreError::Secrets(format!(
                    "{what} does not open with this host's key: is --secrets-key-file the file the other hosts use?"
                ))
            })
    }
}

/// Every form of every secret's value that the host redacts from what a
/// step leaves behind (logs, outputs, errors, recorded resources): the
/// value itself and the encodings a provider's echo or a step commonly
/// gives it, matched without regard to ASCII case. Each becomes
/// `[secret:NAME]`. Built from every secret on the database, not only the
/// calling plugin's: a secret one plugin used can come back through
/// another (a provider's echo decoded by a later step).
///
/// The forms: the value; reversed; JSON-escaped (with `/` as `\/` too, as
/// PHP writes it) and wholly `\uXXXX`-escaped; URL-encoded (`+` and `%20`
/// for spaces); hex; and base64 and base64url at each of the three
/// alignments the value can have inside a longer encoded text (the
/// characters that depend on the value alone). Short values (under
/// [`Redactor::MIN_ENCODED`] bytes) are matched only as themselves:
/// their encodings would match by chance.
#[derive(Default)]
pub struct Redactor {
    matcher: Option<aho_corasick::AhoCorasick>,
    /// The secret name of each pattern.
    names: Vec<String>,
    /// The longest pattern, in bytes.
    longest: usize,
}

impl fmt::Debug for Redactor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Redactor")
            .field("patterns", &self.names.len())
            .finish()
    }
}

impl Redactor {
    /// Shortest value whose encodings are redacted too.
    pub const MIN_ENCODED: usize = 6;

    /// A redactor of these `(name, value)` secrets.
    pub fn new<'a>(secrets: impl IntoIterator<Item = (&'a str, &'a str)>) -> Redactor {
        let mut patterns: Vec<(String, String)> = Vec::new();
        for (name, value) in secrets {
            if value.is_empty() {
                continue;
            }
            for form in forms(value) {
                patterns.push((form, name.to_string()));
            }
        }
        patterns.sort();
        patterns.dedup_by(|a, b| a.0.eq_ignore_ascii_case(&b.0));
        if patterns.is_empty() {
            return Redactor::default();
        }
        let longest = patterns.iter().map(|(p, _)| p.len()).max().unwrap_or(0);
        let matcher = aho_corasick::AhoCorasick::builder()
            .ascii_case_insensitive(true)
            .match_kind(aho_corasick::MatchKind::LeftmostLongest)
            .build(patterns.iter().map(|(p, _)| p.as_bytes()))
            .expect("secret patterns build a matcher");
        Redactor {
            matcher: Some(matcher),
            names: patterns.into_iter().map(|(_, name)| name).collect(),
            longest,
        }
    }

    /// Whether there is nothing to redact.
    pub fn is_empty(&self) -> bool {
        self.matcher.is_none()
    }

    /// The longest form redacted, in bytes: text cut shorter than a form
    /// could hide the rest of it, so buffers keep this much more.
    pub fn longest(&self) -> usize {
        self.longest
    }

    /// `text` with every form of every secret replaced by `[secret:NAME]`.
    pub fn redact<'t>(&self, text: &'t str) -> std::borrow::Cow<'t, str> {
        let Some(matcher) = &self.matcher else {
            return std::borrow::Cow::Borrowed(text);
        };
        if !matcher.is_match(text) {
            return std::borrow::Cow::Borrowed(text);
        }
        let mut out = String::with_capacity(text.len());
        let mut last = 0;
        for found in matcher.find_iter(text) {
            out.push_str(&text[last..found.start()]);
            out.push_str("[secret:");
            out.push_str(&self.names[found.pattern().as_usize()]);
            out.push(']');
            last = found.end();
        }
        out.push_str(&text[last..]);
        std::borrow::Cow::Owned(out)
    }

    /// [`Redactor::redact`] in place.
    pub fn redact_string(&self, text: &mut String) {
        if let std::borrow::Cow::Owned(redacted) = self.redact(text) {
            *text = redacted;
        }
    }

    /// [`Redactor::redact`] on every string of a JSON document, its keys,
    /// and its numbers (one holding a secret becomes a string).
    pub fn redact_json(&self, value: &mut Value) {
        if self.is_empty() {
            return;
        }
        match value {
            Value::String(s) => self.redact_string(s),
            Value::Number(n) => {
                let text = n.to_string();
                if let std::borrow::Cow::Owned(redacted) = self.redact(&text) {
                    *value = Value::String(redacted);
                }
            }
            Value::Array(items) => items.iter_mut().for_each(|v| self.redact_json(v)),
            Value::Object(map) => {
                let keys: Vec<String> = map.keys().cloned().collect();
                for key in keys {
                    let mut v = map.remove(&key).expect("a key of the map");
                    self.redact_json(&mut v);
                    map.insert(self.redact(&key).into_owned(), v);
                }
            }
            Value::Null | Value::Bool(_) => {}
        }
    }
}

/// The forms of one secret's value a redactor matches (see [`Redactor`]).
fn forms(value: &str) -> Vec<String> {
    use base64::Engine as _;
    use base64::engine::general_purpose::{STANDARD_NO_PAD, URL_SAFE_NO_PAD};
    let mut forms = vec![value.to_string()];
    if value.len() < Redactor::MIN_ENCODED {
        return forms;
    }
    forms.push(value.chars().rev().collect());
    let json = serde_json::to_string(value).expect("a string serializes");
    let json = json[1..json.len() - 1].to_string();
    forms.push(json.replace('/', "\\/"));
    forms.push(json);
    forms.push(
        value
            .encode_utf16()
            .map(|u| format!("\\u{u:04x}"))
            .collect(),
    );
    let url: String = url::form_urlencoded::byte_serialize(value.as_bytes()).collect();
    forms.push(url.replace('+', "%20"));
    forms.push(url);
    forms.push(hex::encode(value.as_bytes()));
    let bytes = value.as_bytes();
    for engine in [STANDARD_NO_PAD, URL_SAFE_NO_PAD] {
        for offset in 0..3usize {
            let mut shifted = vec![0u8; offset];
            shifted.extend_from_slice(bytes);
            let encoded = engine.encode(&shifted);
            // Characters that depend on the value's bytes alone.
            let first = (8 * offset).div_ceil(6);
            let end = (8 * (offset + bytes.len())) / 6;
            if end > first + 4 {
                forms.push(encoded[first..end].to_string());
            }
        }
    }
    forms.retain(|f| !f.is_empty());
    forms
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Timestamp;
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
        let r = Redactor::new([("b", "s3cr3t-long"), ("a", "s3cr3t")]);
        assert_eq!(
            r.redact("x s3cr3t-long y s3cr3t"),
            "x [secret:b] y [secret:a]"
        );
        let mut doc = json!({"k": ["s3cr3t", {"s3cr3t": 1, "n": "pre-s3cr3t"}], "x": 2});
        r.redact_json(&mut doc);
        assert_eq!(
            doc,
            json!({"k": ["[secret:a]", {"[secret:a]": 1, "n": "pre-[secret:a]"}], "x": 2})
        );
    }

    #[test]
    fn every_common_encoding_of_a_secret_is_redacted() {
        use base64::Engine as _;
        use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
        let value = "k9/Xq+Zt/7pLw2==";
        let r = Redactor::new([("do-token", value)]);
        let b64 = |s: &str| STANDARD.encode(s);
        let echoes = [
            value.to_string(),
            value.to_lowercase(),
            value.to_uppercase(),
            value.chars().rev().collect(),
            "k9\\/Xq+Zt\\/7pLw2==".to_string(),
            value
                .chars()
                .map(|c| format!("\\u{:04X}", c as u32))
                .collect(),
            url::form_urlencoded::byte_serialize(value.as_bytes()).collect(),
            hex::encode(value),
            b64(value),
            b64(&format!("user:{value}")),
            b64(&format!("ab{value}cd")),
            URL_SAFE_NO_PAD.encode(format!("x{value}")),
        ];
        for echo in echoes {
            let text = format!("the provider said [{echo}] back");
            let redacted = r.redact(&text);
            assert!(redacted.contains("[secret:do-token]"), "{echo}: {redacted}");
        }
        let mut number = json!({"pin": 48151623421u64});
        Redactor::new([("pin", "48151623421")]).redact_json(&mut number);
        assert_eq!(number, json!({"pin": "[secret:pin]"}));
        assert_eq!(r.redact("nothing here"), "nothing here");
    }
}
