//! Where deliveries may go: the same rules as a step's grants (no
//! redirects followed, no credentials in URLs), and no private, loopback or
//! link-local address unless the URL's origin is allowed by
//! `--webhook-allow`. Names are checked when they are resolved, at every
//! attempt, so a name that later points inside the network (DNS rebinding)
//! is refused too.

use crate::model::Origin;
use reqwest::dns::{Addrs, Name, Resolve, Resolving};
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;
use url::Url;

/// Whether `ip` is on the public internet: not private, loopback,
/// link-local, shared (CGNAT), documentation, benchmarking, multicast,
/// broadcast, reserved or unspecified.
pub fn is_public(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => {
            let [a, b, c, _] = v4.octets();
            !(v4.is_private()
                || v4.is_loopback()
                || v4.is_link_local()
                || v4.is_broadcast()
                || v4.is_documentation()
                || v4.is_unspecified()
                || v4.is_multicast()
                || a == 0
                || (a == 100 && (64..128).contains(&b))
                || (a == 192 && b == 0 && c == 0)
                || (a == 198 && (18..20).contains(&b))
                || a >= 240)
        }
        IpAddr::V6(v6) => {
            if let Some(v4) = v6.to_ipv4_mapped() {
                return is_public(IpAddr::V4(v4));
            }
            let first = v6.segments()[0];
            !(v6.is_loopback()
                || v6.is_unspecified()
                || v6.is_multicast()
                || (first & 0xfe00) == 0xfc00
                || (first & 0xffc0) == 0xfe80
                || (first == 0x2001 && v6.segments()[1] == 0x0db8))
        }
    }
}

/// Why a delivery URL is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct BadUrl(String);

/// The HTTP clients deliveries go through.
pub struct Egress {
    allow: Vec<Origin>,
    /// For allowed origins: any address.
    open: reqwest::Client,
    /// For the rest: public addresses only.
    guarded: reqwest::Client,
}

impl Egress {
    pub fn new(allow: Vec<Origin>, timeout: Duration) -> Egress {
        let builder = || {
            reqwest::Client::builder()
                .redirect(reqwest::redirect::Policy::none())
                .timeout(timeout)
                .user_agent(concat!("wasaga-webhooks/", env!("CARGO_PKG_VERSION")))
        };
        Egress {
            allow,
            open: builder().build().expect("a plain client builds"),
            guarded: builder()
                .dns_resolver(Arc::new(PublicOnly))
                .build()
                .expect("a plain client builds"),
        }
    }

    /// [`check_url`] against this host's allow list.
    pub fn check(&self, text: &str) -> Result<Url, BadUrl> {
        check_url(&self.allow, text)
    }

    fn allowed(&self, url: &Url) -> bool {
        allowed(&self.allow, url)
    }

    /// Posts `body` with `headers` to `url` (checked again: the allow list
    /// may have changed since the endpoint was made).
    pub async fn post(
        &self,
        url: &str,
        headers: reqwest::header::HeaderMap,
        body: String,
    ) -> Result<reqwest::Response, String> {
        let url = self.check(url).map_err(|e| e.to_string())?;
        let client = if self.allowed(&url) {
            &self.open
        } else {
            &self.guarded
        };
        client
            .post(url)
            .headers(headers)
            .body(body)
            .send()
            .await
            .map_err(|e| error_chain(&e))
    }
}

/// Checks a URL given for an endpoint: `http` or `https`, a host, no
/// credentials or fragment, and not an address that is not public unless
/// its origin is in `allow`. Answers it parsed.
pub fn check_url(allow: &[Origin], text: &str) -> Result<Url, BadUrl> {
    let url = Url::parse(text).map_err(|e| BadUrl(format!("`url` is not a URL: {e}")))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(BadUrl(format!(
            "`url` must be http or https, not `{}`",
            url.scheme()
        )));
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err(BadUrl(
            "`url` must not carry credentials; the signature authenticates deliveries".into(),
        ));
    }
    if url.fragment().is_some() {
        return Err(BadUrl("`url` must not have a fragment".into()));
    }
    let Some(host) = url.host() else {
        return Err(BadUrl("`url` has no host".into()));
    };
    if allowed(allow, &url) {
        return Ok(url);
    }
    let literal = match host {
        url::Host::Ipv4(ip) => Some(IpAddr::V4(ip)),
        url::Host::Ipv6(ip) => Some(IpAddr::V6(ip)),
        url::Host::Domain(_) => None,
    };
    if let Some(ip) = literal.filter(|ip| !is_public(*ip)) {
        return Err(BadUrl(format!(
            "`url` is at {ip}, which is not a public address; start wasaga with \
             --webhook-allow {} to deliver there",
            origin_text(&url)
        )));
    }
    Ok(url)
}

fn allowed(allow: &[Origin], url: &Url) -> bool {
    origin_text(url)
        .parse::<Origin>()
        .is_ok_and(|o| allow.iter().any(|a| a.allows(&o)))
}

/// `scheme://host[:port]` of `url`.
fn origin_text(url: &Url) -> String {
    url.origin().ascii_serialization()
}

/// An error and its causes, `: `-joined (reqwest's own message says only
/// that sending failed).
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.contains(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
}

/// Resolves names to their public addresses only.
struct PublicOnly;

impl Resolve for PublicOnly {
    fn resolve(&self, name: Name) -> Resolving {
        Box::pin(async move {
            let host = name.as_str().to_string();
            let all: Vec<SocketAddr> = tokio::net::lookup_host((host.as_str(), 0)).await?.collect();
            let public: Vec<SocketAddr> =
                all.iter().copied().filter(|a| is_public(a.ip())).collect();
            if public.is_empty() {
                let shown = all.first().map(|a| a.ip().to_string()).unwrap_or_default();
                return Err(format!(
                    "{host} resolves to {shown}, which is not a public address; \
                     allow its origin with --webhook-allow to deliver there"
                )
                .into());
            }
            Ok(Box::new(public.into_iter()) as Addrs)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_public_addresses_are_public() {
        for private in [
            "127.0.0.1",
            "10.1.2.3",
            "172.16.0.1",
            "192.168.1.1",
            "169.254.169.254",
            "100.64.0.1",
            "0.0.0.0",
            "255.255.255.255",
            "::1",
            "fd00::1",
            "fe80::1",
            "::ffff:127.0.0.1",
            "2001:db8::1",
        ] {
            assert!(!is_public(private.parse().unwrap()), "{private}");
        }
        for public in ["1.1.1.1", "8.8.8.8", "2606:4700::1111"] {
            assert!(is_public(public.parse().unwrap()), "{public}");
        }
    }

    #[test]
    fn urls_are_checked_before_they_are_stored() {
        let egress = Egress::new(
            vec!["http://127.0.0.1:9000".parse().unwrap()],
            Duration::from_secs(1),
        );
        assert!(egress.check("https://hooks.example.com/x").is_ok());
        assert!(egress.check("http://127.0.0.1:9000/in").is_ok());
        for (bad, says) in [
            (
                "http://127.0.0.1:9001/in",
                "--webhook-allow http://127.0.0.1:9001",
            ),
            ("http://[::1]/", "not a public address"),
            ("ftp://example.com/", "http or https"),
            ("https://u:p@example.com/", "credentials"),
            ("https://example.com/#x", "fragment"),
            ("not a url", "not a URL"),
        ] {
            let e = egress.check(bad).unwrap_err().to_string();
            assert!(e.contains(says), "{bad}: {e}");
        }
    }
}
