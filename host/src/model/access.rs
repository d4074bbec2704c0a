//! What a plugin may reach, as values: origins (`scheme://host[:port]`,
//! maybe `*.domain`), secret names, a plugin's grants, and secrets as
//! stored (sealed) and as listed. They live here, below the store and the
//! sandbox, so that storing them needs nothing of how they are enforced
//! (`crate::grants`) or sealed (`crate::secrets`).

use super::Timestamp;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;
use utoipa::ToSchema;

super::string_enum! {
    /// How a plugin may use a secret.
    pub enum SecretMode {
        /// Substituted into outbound request headers (`{{secret:NAME}}`);
        /// the step never sees it.
        Use,
        /// `use`, and readable by the step (`secrets.get`, contract 0.2.0).
        Read,
    }
}

/// A granted origin: `scheme://host[:port]`, the host maybe `*.domain`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Origin {
    https: bool,
    /// Lowercase; without the `*.` of a wildcard.
    host: String,
    /// `*.host`: any subdomain of `host`.
    wildcard: bool,
    port: u16,
}

/// Why a text is not an origin.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "`{text}` is not an origin: {why} (an origin is scheme://host[:port], scheme https or http, no path)"
)]
pub struct BadOrigin {
    text: String,
    why: String,
}

impl FromStr for Origin {
    type Err = BadOrigin;

    fn from_str(text: &str) -> Result<Origin, BadOrigin> {
        let bad = |why: &str| BadOrigin {
            text: text.chars().take(200).collect(),
            why: why.to_string(),
        };
        let (scheme, rest) = text.split_once("://").ok_or_else(|| bad("no scheme"))?;
        let https = match scheme {
            "https" => true,
            "http" => false,
            _ => return Err(bad("the scheme must be https or http")),
        };
        // `*.` is not a URL's: parse what follows it.
        let (wildcard, rest) = match rest.strip_prefix("*.") {
            Some(rest) => (true, rest),
            None => (false, rest),
        };
        let url =
            url::Url::parse(&format!("{scheme}://{rest}")).map_err(|e| bad(&e.to_string()))?;
        if !url.username().is_empty() || url.password().is_some() {
            return Err(bad("it holds a user name or password"));
        }
        if url.path() != "/" || rest.ends_with('/') {
            return Err(bad("it has a path"));
        }
        if url.query().is_some() || url.fragment().is_some() {
            return Err(bad("it has a query or fragment"));
        }
        let host = match url.host() {
            Some(url::Host::Domain(d)) => d.to_ascii_lowercase(),
            Some(url::Host::Ipv4(ip)) if !wildcard => ip.to_string(),
            Some(url::Host::Ipv6(ip)) if !wildcard => format!("[{ip}]"),
            Some(_) => return Err(bad("`*.` goes before a domain name, not an address")),
            None => return Err(bad("no host")),
        };
        if wildcard && !host.contains('.') {
            return Err(bad("`*.` must be followed by a domain with a dot"));
        }
        let port = url.port_or_known_default().ok_or_else(|| bad("no port"))?;
        Ok(Origin {
            https,
            host,
            wildcard,
            port,
        })
    }
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let scheme = if self.https { "https" } else { "http" };
        let star = if self.wildcard { "*." } else { "" };
        let default = if self.https { 443 } else { 80 };
        write!(f, "{scheme}://{star}{}", self.host)?;
        if self.port != default {
            write!(f, ":{}", self.port)?;
        }
        Ok(())
    }
}

impl Serialize for Origin {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Origin {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d)?
            .parse()
            .map_err(serde::de::Error::custom)
    }
}

impl Origin {
    /// The origin of a request's URI (scheme, host, port), if it has one.
    pub fn of(uri: &http::Uri) -> Option<Origin> {
        let https = match uri.scheme_str()? {
            "https" => true,
            "http" => false,
            _ => return None,
        };
        let host = uri.host()?.to_ascii_lowercase();
        let port = uri.port_u16().unwrap_or(if https { 443 } else { 80 });
        Some(Origin {
            https,
            host,
            wildcard: false,
            port,
        })
    }

    /// Whether this (granted) origin allows the request origin `other`.
    pub fn allows(&self, other: &Origin) -> bool {
        if self.https != other.https || self.port != other.port {
            return false;
        }
        if self.wildcard {
            other
                .host
                .strip_suffix(&self.host)
                .is_some_and(|sub| sub.len() > 1 && sub.ends_with('.'))
        } else {
            self.host == other.host
        }
    }
}

/// What one plugin name is granted (`PUT /v1/plugins/{name}/grants`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Grants {
    /// Origins it may send HTTP requests to.
    #[serde(default)]
    #[schema(value_type = Vec<String>, example = json!(["https://api.example.com"]))]
    pub http: Vec<Origin>,
    /// Secrets it may use (in request headers) or read.
    #[serde(default)]
    #[schema(value_type = BTreeMap<String, SecretMode>)]
    pub secrets: BTreeMap<SecretName, SecretMode>,
}

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
