//! What an uploaded plugin may reach: outbound HTTP origins and secrets,
//! granted per plugin name by an admin, stored in the database (so every
//! host sees the same grants), and nothing else.
//!
//! An origin is `scheme://host[:port]`: scheme `https` or `http`, the port
//! defaulting to 443 or 80, no path; a host may start with `*.` to mean any
//! subdomain (not the domain itself). A request goes out only if its
//! scheme, host and port all match one granted origin. A secret is granted
//! `use` (it may be substituted into a request's header, `{{secret:NAME}}`,
//! toward an origin both the secret and the plugin allow) or `read` (also
//! readable by a contract 0.2.0 step through `secrets.get`).
//!
//! [`AccessBook`] assembles, per plugin name, the [`Access`] a call gets
//! (origins, and the granted secrets decrypted), and keeps it for a few
//! seconds: a grant or secret changed through this host takes effect at
//! once, one changed through another host as soon as its notice arrives
//! (PostgreSQL), or at the latest when the cached copy expires.

use crate::model::SecretName;
pub use crate::model::{BadOrigin, Grants, Origin, SecretMode};
use crate::secrets::{Redactor, SecretBox};
use crate::store::{Store, StoreError};
use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use zeroize::Zeroizing;

/// A secret a call may use: its value (zeroed when dropped) and origins.
pub struct GrantedSecret {
    pub mode: SecretMode,
    pub value: Zeroizing<String>,
    pub origins: Vec<Origin>,
}

impl fmt::Debug for GrantedSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GrantedSecret")
            .field("mode", &self.mode)
            .field("value", &"[secret]")
            .field("origins", &self.origins)
            .finish()
    }
}

/// What one call of a plugin may reach.
#[derive(Debug, Default)]
pub struct Access {
    pub http: Vec<Origin>,
    /// Granted secrets that exist, by name.
    pub secrets: BTreeMap<String, GrantedSecret>,
    /// Granted secrets that do not exist (not set, or deleted).
    pub missing: Vec<String>,
    /// Every secret on the database (not only the granted ones), in every
    /// form the host redacts from what the call leaves behind.
    pub redactor: Arc<Redactor>,
}

impl Access {
    /// Whether a request to `origin` may go out.
    pub fn allows(&self, origin: &Origin) -> bool {
        self.http.iter().any(|g| g.allows(origin))
    }
}

/// How long a plugin's assembled access is reused before it is read again.
const FRESH_FOR: Duration = Duration::from_secs(5);

/// Assembles and caches each plugin name's [`Access`].
pub struct AccessBook {
    store: Arc<dyn Store>,
    key: Option<Arc<SecretBox>>,
    /// Bumped by every change this host learns of.
    version: AtomicU64,
    cache: Mutex<HashMap<String, Cached>>,
    /// The redactor of every secret, as assembled at a version.
    redactor: Mutex<Option<(u64, Instant, Arc<Redactor>)>>,
}

/// An assembled access: the version it was read at, and when.
type Cached = (u64, Instant, Arc<Access>);

impl AccessBook {
    pub fn new(store: Arc<dyn Store>, key: Option<Arc<SecretBox>>) -> AccessBook {
        AccessBook {
            store,
            key,
            version: AtomicU64::new(0),
            cache: Mutex::new(HashMap::new()),
            redactor: Mutex::new(None),
        }
    }

    /// The redactor of every secret on the database, reused as an access
    /// is (until a change, or for [`FRESH_FOR`]).
    pub async fn redactor(&self) -> Result<Arc<Redactor>, StoreError> {
        let version = self.version.load(Ordering::SeqCst);
        if let Some((v, at, redactor)) = &*self.redactor.lock().unwrap_or_else(|e| e.into_inner())
            && *v == version
            && at.elapsed() < FRESH_FOR
        {
            return Ok(redactor.clone());
        }
        let Some(key) = &self.key else {
            // Without a key no secret can be set or opened here.
            return Ok(Arc::new(Redactor::default()));
        };
        let names: Vec<SecretName> = self
            .store
            .list_secrets()
            .await?
            .into_iter()
            .map(|s| s.name)
            .collect();
        let sealed = self.store.sealed_secrets(&names).await?;
        let mut values = Vec::with_capacity(sealed.len());
        for secret in &sealed {
            values.push((secret.name.as_str(), key.open(secret)?));
        }
        let redactor = Arc::new(Redactor::new(
            values.iter().map(|(name, value)| (*name, value.as_str())),
        ));
        if self.version.load(Ordering::SeqCst) == version {
            *self.redactor.lock().unwrap_or_else(|e| e.into_inner()) =
                Some((version, Instant::now(), redactor.clone()));
        }
        Ok(redactor)
    }

    /// The secrets key, when one is configured.
    pub fn key(&self) -> Option<&Arc<SecretBox>> {
        self.key.as_ref()
    }

    /// A grant or secret changed: assemble every access again.
    pub fn changed(&self) {
        self.version.fetch_add(1, Ordering::SeqCst);
        self.cache.lock().unwrap_or_else(|e| e.into_inner()).clear();
    }

    /// What a call of the plugin named `name` may reach.
    pub async fn access(&self, name: &str) -> Result<Arc<Access>, StoreError> {
        let version = self.version.load(Ordering::SeqCst);
        if let Some((v, at, access)) = self
            .cache
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(name)
            && *v == version
            && at.elapsed() < FRESH_FOR
        {
            return Ok(access.clone());
        }
        let access = Arc::new(self.assemble(name).await?);
        let mut cache = self.cache.lock().unwrap_or_else(|e| e.into_inner());
        if self.version.load(Ordering::SeqCst) == version {
            cache.insert(name.to_string(), (version, Instant::now(), access.clone()));
        }
        Ok(access)
    }

    async fn assemble(&self, name: &str) -> Result<Access, StoreError> {
        let redactor = self.redactor().await?;
        let Some(grants) = self.store.grants(name).await? else {
            return Ok(Access {
                redactor,
                ..Access::default()
            });
        };
        let mut access = Access {
            http: grants.http,
            redactor,
            ..Access::default()
        };
        if grants.secrets.is_empty() {
            return Ok(access);
        }
        let names: Vec<SecretName> = grants.secrets.keys().cloned().collect();
        let sealed = self.store.sealed_secrets(&names).await?;
        for (name, mode) in grants.secrets {
            let Some(secret) = sealed.iter().find(|s| s.name == name) else {
                access.missing.push(name.to_string());
                continue;
            };
            let Some(key) = &self.key else {
                // Stored, but this host has no key to open it: as missing.
                access.missing.push(name.to_string());
                continue;
            };
            let value = key.open(secret)?;
            access.secrets.insert(
                name.to_string(),
                GrantedSecret {
                    mode,
                    value,
                    origins: secret.origins.clone(),
                },
            );
        }
        Ok(access)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn origin(s: &str) -> Origin {
        s.parse().unwrap_or_else(|e| panic!("{e}"))
    }

    #[test]
    fn origins_are_scheme_host_and_port() {
        assert_eq!(
            origin("https://API.example.com").to_string(),
            "https://api.example.com"
        );
        assert_eq!(
            origin("https://api.example.com:443").to_string(),
            "https://api.example.com"
        );
        assert_eq!(
            origin("http://127.0.0.1:9400").to_string(),
            "http://127.0.0.1:9400"
        );
        assert_eq!(
            origin("https://*.example.com").to_string(),
            "https://*.example.com"
        );
        for (bad, why) in [
            ("api.example.com", "no scheme"),
            ("ftp://example.com", "https or http"),
            ("https://example.com/v2", "path"),
            ("https://example.com/", "path"),
            ("https://example.com?x=1", "query"),
            ("https://user:pw@example.com", "user name"),
            ("https://*.com", "domain with a dot"),
            ("https://*.10.0.0.1", "not an address"),
            ("https://", "`https://`"),
        ] {
            let err = bad.parse::<Origin>().unwrap_err().to_string();
            assert!(err.contains(why), "{bad}: {err}");
        }
    }

    #[test]
    fn a_grant_matches_scheme_host_and_port_exactly() {
        let of = |u: &str| Origin::of(&u.parse::<http::Uri>().unwrap()).unwrap();
        let api = origin("https://api.example.com");
        assert!(api.allows(&of("https://api.example.com/v2/droplets?x=1")));
        assert!(api.allows(&of("https://API.example.com:443/")));
        assert!(
            !api.allows(&of("http://api.example.com/")),
            "the scheme counts"
        );
        assert!(
            !api.allows(&of("https://api.example.com:8443/")),
            "the port counts"
        );
        assert!(!api.allows(&of("https://api.example.com.evil.net/")));
        assert!(!api.allows(&of("https://eu.api.example.com/")));
        let any = origin("https://*.example.com");
        assert!(any.allows(&of("https://eu.api.example.com/")));
        assert!(any.allows(&of("https://api.example.com/")));
        assert!(
            !any.allows(&of("https://example.com/")),
            "not the domain itself"
        );
        assert!(!any.allows(&of("https://badexample.com/")));
        let local = origin("http://127.0.0.1:9400");
        assert!(local.allows(&of("http://127.0.0.1:9400/x")));
        assert!(!local.allows(&of("http://127.0.0.1:9401/x")));
    }
}
