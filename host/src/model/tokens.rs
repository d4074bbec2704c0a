//! Bearer tokens and the roles they carry, as values: which token is
//! whose, checked in constant time. How a request presents one and what a
//! role may do is the API's (`crate::api::auth`); this is here so that the
//! configuration can hold the tokens without depending on the API.
//!
//! Tokens come from `--token` (an admin labelled `admin`) and from a tokens
//! file, one per line `ROLE LABEL SECRET`, where SECRET is the token or
//! `sha256:<hex>` of it (so the file need not hold the token itself). A
//! line whose first non-blank character is `#` is a comment; a `#`
//! anywhere else is part of its field (tokens may hold one), and a line
//! that does not parse stops the server at start, naming the line. Only
//! SHA-256 digests are kept in memory, and a presented token is compared
//! with every one of them in constant time, so timing says nothing about
//! which token (if any) nearly matched.

use sha2::{Digest as _, Sha256};
use std::fmt;
use subtle::ConstantTimeEq;

super::string_enum! {
    /// What a token may do; each role includes the ones before it.
    pub enum Role {
        Viewer,
        Operator,
        Admin,
    }
}

/// The caller of a request, as authentication found it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    /// The token's label (`None` when the server runs without tokens).
    pub label: Option<String>,
    pub role: Role,
}

impl Caller {
    /// The caller when no token is configured (a loopback-only server):
    /// everything is allowed, and actions have no actor.
    pub fn anonymous() -> Caller {
        Caller {
            label: None,
            role: Role::Admin,
        }
    }

    /// Who to record as the actor of an action.
    pub fn actor(&self) -> Option<String> {
        self.label.clone()
    }
}

/// One known token.
#[derive(Clone)]
struct Entry {
    role: Role,
    label: String,
    sha256: [u8; 32],
}

/// Every token the server accepts.
#[derive(Clone, Default)]
pub struct Tokens {
    entries: Vec<Entry>,
}

impl fmt::Debug for Tokens {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Tokens")
            .field(
                "labels",
                &self.entries.iter().map(|e| &e.label).collect::<Vec<_>>(),
            )
            .finish()
    }
}

/// Why a tokens file (or token) was refused.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct TokensError(String);

impl Tokens {
    /// The admin token of `--token`, labelled `admin`.
    pub fn admin(token: &str) -> Result<Tokens, TokensError> {
        let mut tokens = Tokens::default();
        tokens.add(Role::Admin, "admin", token.trim())?;
        Ok(tokens)
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    fn add(&mut self, role: Role, label: &str, secret: &str) -> Result<(), TokensError> {
        if secret.is_empty() {
            return Err(TokensError(format!("the token of `{label}` is empty")));
        }
        if self.entries.iter().any(|e| e.label == label) {
            return Err(TokensError(format!("the label `{label}` is used twice")));
        }
        let sha256 = match secret.strip_prefix("sha256:") {
            Some(hex_digest) => {
                let bytes = hex::decode(hex_digest)
                    .ok()
                    .filter(|b| b.len() == 32)
                    .ok_or_else(|| {
                        TokensError(format!(
                            "the token of `{label}` is `sha256:` but not followed by 64 hex digits"
                        ))
                    })?;
                bytes.try_into().expect("32 bytes")
            }
            None => Sha256::digest(secret.as_bytes()).into(),
        };
        self.entries.push(Entry {
            role,
            label: label.to_string(),
            sha256,
        });
        Ok(())
    }

    /// Adds the tokens of a tokens file's text (`ROLE LABEL SECRET` per
    /// line). Errors name the line, never the secret.
    pub fn add_file(&mut self, text: &str) -> Result<(), TokensError> {
        for (n, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let fields: Vec<&str> = line.split_whitespace().collect();
            let [role, label, secret] = fields[..] else {
                return Err(TokensError(format!(
                    "line {}: expected `ROLE LABEL SECRET`, found {} field{} \
                     (a comment is a line of its own starting with `#`)",
                    n + 1,
                    fields.len(),
                    if fields.len() == 1 { "" } else { "s" }
                )));
            };
            let role =
                Role::parse(role).map_err(|e| TokensError(format!("line {}: {e}", n + 1)))?;
            self.add(role, label, secret)
                .map_err(|TokensError(e)| TokensError(format!("line {}: {e}", n + 1)))?;
        }
        Ok(())
    }

    /// The SHA-256 of a presented token, as tokens are kept.
    pub fn digest(presented: &str) -> [u8; 32] {
        Sha256::digest(presented.trim().as_bytes()).into()
    }

    /// The caller a presented token belongs to, comparing it with every
    /// known token in constant time.
    pub fn check(&self, presented: &str) -> Option<Caller> {
        self.by_digest(&Tokens::digest(presented))
    }

    /// The caller whose token has this SHA-256 (every entry compared, in
    /// constant time).
    pub fn by_digest(&self, digest: &[u8; 32]) -> Option<Caller> {
        let mut found: Option<&Entry> = None;
        for entry in &self.entries {
            let equal: bool = entry.sha256.ct_eq(digest).into();
            if equal {
                found = Some(entry);
            }
        }
        found.map(|e| Caller {
            label: Some(e.label.clone()),
            role: e.role,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_tokens_file_gives_roles_and_labels() {
        let mut tokens = Tokens::admin("root-secret").unwrap();
        let hashed = hex::encode(Sha256::digest(b"ops-secret"));
        tokens
            .add_file(&format!(
                "# who may do what\nviewer dashboards view-secret\n  # hashed\noperator  oncall sha256:{hashed}\nadmin hash Xy7#kQ9-long-secret\n\n"
            ))
            .unwrap();
        assert_eq!(
            tokens.check("root-secret"),
            Some(Caller {
                label: Some("admin".into()),
                role: Role::Admin
            })
        );
        assert_eq!(tokens.check("view-secret").unwrap().role, Role::Viewer);
        assert_eq!(
            tokens.check("ops-secret").unwrap().label.as_deref(),
            Some("oncall")
        );
        assert_eq!(tokens.check("nope"), None);
        // A `#` inside a token is part of it, not a comment.
        assert_eq!(tokens.check("Xy7"), None);
        assert_eq!(
            tokens
                .check("Xy7#kQ9-long-secret")
                .unwrap()
                .label
                .as_deref(),
            Some("hash")
        );
        let err = Tokens::default()
            .add_file("viewer a s1 # a trailing comment\n")
            .unwrap_err()
            .to_string();
        assert!(err.starts_with("line 1: expected"), "{err}");
    }

    #[test]
    fn a_bad_tokens_file_names_the_line_not_the_secret() {
        let mut tokens = Tokens::default();
        let err = tokens
            .add_file("viewer a s1\nsuperuser b topsecret\n")
            .unwrap_err()
            .to_string();
        assert!(err.starts_with("line 2: unknown Role `superuser`"), "{err}");
        assert!(!err.contains("topsecret"));
        let err = Tokens::default()
            .add_file("viewer only-two\n")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("line 1: expected `ROLE LABEL SECRET`"),
            "{err}"
        );
        let err = Tokens::default()
            .add_file("viewer a sha256:xyz\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("64 hex digits"), "{err}");
    }
}
