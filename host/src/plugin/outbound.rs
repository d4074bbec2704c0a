//! Outbound connections for steps' `wasi:http` requests: one connection
//! pool per plugin name, inside which hyper keeps idle connections per
//! origin (scheme, host and port). A step's next request to an origin reuses
//! a warm connection (on HTTPS, no new handshake) instead of paying a
//! connect per request, while no two plugins ever share a connection (one
//! plugin cannot read what another left on a socket, nor ride its TLS
//! session). HTTPS verifies servers against the webpki roots (Mozilla's
//! list, inside the binary, so it works the same in a scratch container).
//!
//! What a request may do (grants, secrets, limits) is decided before it
//! reaches this module, in `sandbox::HttpPolicy`; this module only carries
//! it. Redirects are never followed (hyper's client does not), so a grant
//! cannot be left through a `Location` header.

use crate::config::OutboundConfig;
use crate::model::{Budget, Origin, Timestamp};
use bytes::Bytes;
use http_body_util::BodyExt;
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, ready};
use std::time::{Duration, Instant};
use wasmtime_wasi_http::{Error, WasiBody};

type Pool = Client<HttpsConnector<HttpConnector>, WasiBody>;

/// What stands between a step's request and a provider with a budget
/// (`crate::budgets` on the database): which budget covers an origin, a
/// token (waiting for one within a bound), a pause for every host.
#[async_trait::async_trait]
pub trait BudgetGate: Send + Sync {
    /// The budget covering `origin`, if any.
    async fn covering(&self, origin: &Origin) -> Option<Budget>;
    /// Takes a token of `budget`, waiting at most `max_wait` for it; how
    /// long it waited, or why it may not go out.
    async fn take(&self, budget: &Budget, max_wait: Duration) -> Result<Duration, String>;
    /// No request to `budget`'s origins before `until`, from any host.
    async fn pause(&self, budget: &Budget, until: Timestamp);
}

/// The pools of one host, by plugin name.
pub struct Outbound {
    config: OutboundConfig,
    tls: rustls::ClientConfig,
    pools: Mutex<HashMap<Arc<str>, Pool>>,
    budgets: std::sync::OnceLock<Arc<dyn BudgetGate>>,
}

impl std::fmt::Debug for Outbound {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Outbound")
            .field("config", &self.config)
            .field("plugins", &self.pools.lock().map(|p| p.len()).unwrap_or(0))
            .finish()
    }
}

impl Outbound {
    pub fn new(config: OutboundConfig) -> Outbound {
        let roots = rustls::RootCertStore {
            roots: webpki_roots::TLS_SERVER_ROOTS.into(),
        };
        let tls = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .expect("ring supports the default TLS versions")
        .with_root_certificates(roots)
        .with_no_client_auth();
        Outbound {
            config,
            tls,
            pools: Mutex::new(HashMap::new()),
            budgets: std::sync::OnceLock::new(),
        }
    }

    /// Puts every request to a budgeted origin through `gate` (once, when
    /// the host starts; later calls are ignored).
    pub fn set_budgets(&self, gate: Arc<dyn BudgetGate>) {
        let _ = self.budgets.set(gate);
    }

    /// The budgets' gate, when this host has one.
    pub fn budgets(&self) -> Option<Arc<dyn BudgetGate>> {
        self.budgets.get().cloned()
    }

    /// The pool of `plugin` (made on its first request).
    fn pool(&self, plugin: &Arc<str>) -> Pool {
        let mut pools = self.pools.lock().expect("outbound pools lock");
        if let Some(pool) = pools.get(plugin) {
            return pool.clone();
        }
        let mut http = HttpConnector::new();
        http.enforce_http(false);
        http.set_nodelay(true);
        http.set_connect_timeout(Some(self.config.connect_timeout));
        let https = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(self.tls.clone())
            .https_or_http()
            .enable_http1()
            .wrap_connector(http);
        let pool = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(self.config.idle_timeout)
            .pool_max_idle_per_host(self.config.max_idle_per_origin)
            .build(https);
        pools.insert(plugin.clone(), pool.clone());
        pool
    }

    /// Sends `request` (an absolute URI) on a pooled connection of
    /// `plugin`'s: the response head must come within `head_timeout`
    /// (connect included when a new connection is needed), and each piece
    /// of the body within `between_bytes` of the one before.
    pub async fn send(
        &self,
        plugin: &Arc<str>,
        request: http::Request<WasiBody>,
        head_timeout: Duration,
        between_bytes: Duration,
    ) -> Result<http::Response<WasiBody>, Error> {
        let pool = self.pool(plugin);
        let response = match tokio::time::timeout(head_timeout, pool.request(request)).await {
            Err(_) => return Err(Error::ConnectionReadTimeout),
            Ok(Err(e)) => return Err(error_of(&e)),
            Ok(Ok(response)) => response,
        };
        let between_bytes = between_bytes.max(Duration::from_nanos(1));
        Ok(response.map(|incoming| {
            TimedBody {
                incoming,
                between_bytes,
                timer: Box::pin(tokio::time::sleep(between_bytes)),
            }
            .boxed_unsync()
        }))
    }

    /// The longest wait for a new connection when the guest does not ask.
    pub fn connect_timeout(&self) -> Duration {
        self.config.connect_timeout
    }

    /// Plugins that have a pool (what a test can see of the isolation).
    pub fn plugins(&self) -> usize {
        self.pools.lock().expect("outbound pools lock").len()
    }
}

/// What `wasi:http` tells the guest of a failed request: the kind of
/// failure (refused, timed out, TLS), read from the error's causes.
fn error_of(e: &hyper_util::client::legacy::Error) -> Error {
    let mut cause: Option<&(dyn std::error::Error + 'static)> = std::error::Error::source(e);
    while let Some(c) = cause {
        if let Some(io) = c.downcast_ref::<std::io::Error>() {
            if let Some(inner) = io.get_ref()
                && let Some(tls) = inner.downcast_ref::<rustls::Error>()
            {
                return tls_error(tls);
            }
            return match io.kind() {
                std::io::ErrorKind::ConnectionRefused => Error::ConnectionRefused,
                std::io::ErrorKind::TimedOut => Error::ConnectionTimeout,
                std::io::ErrorKind::ConnectionReset | std::io::ErrorKind::BrokenPipe => {
                    Error::ConnectionTerminated
                }
                kind => Error::Connect(std::io::Error::new(kind, io.to_string())),
            };
        }
        if let Some(tls) = c.downcast_ref::<rustls::Error>() {
            return tls_error(tls);
        }
        if let Some(h) = c.downcast_ref::<hyper::Error>() {
            return if h.is_timeout() {
                Error::HttpResponseTimeout
            } else if h.is_incomplete_message() || h.is_closed() || h.is_canceled() {
                Error::HttpResponseIncomplete
            } else {
                Error::HttpProtocolError
            };
        }
        cause = c.source();
    }
    if e.is_connect() {
        Error::Connect(std::io::Error::other(e.to_string()))
    } else {
        Error::InternalError(Some(e.to_string()))
    }
}

fn tls_error(e: &rustls::Error) -> Error {
    match e {
        rustls::Error::InvalidCertificate(_) => Error::TlsCertificateError,
        rustls::Error::AlertReceived(alert) => Error::TlsAlertReceived {
            alert_id: Some(u8::from(*alert)),
            alert_message: Some(format!("{alert:?}")),
        },
        _ => Error::TlsProtocolError,
    }
}

/// A response body whose pieces must each come within `between_bytes`.
struct TimedBody {
    incoming: hyper::body::Incoming,
    between_bytes: Duration,
    timer: Pin<Box<tokio::time::Sleep>>,
}

impl http_body::Body for TimedBody {
    type Data = Bytes;
    type Error = Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Bytes>, Error>>> {
        match Pin::new(&mut self.incoming).poll_frame(cx) {
            Poll::Ready(None) => Poll::Ready(None),
            Poll::Ready(Some(Err(e))) => Poll::Ready(Some(Err(if e.is_timeout() {
                Error::HttpResponseTimeout
            } else {
                Error::from(e)
            }))),
            Poll::Ready(Some(Ok(frame))) => {
                let next = tokio::time::Instant::from_std(Instant::now() + self.between_bytes);
                self.timer.as_mut().reset(next);
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Pending => {
                ready!(self.timer.as_mut().poll(cx));
                Poll::Ready(Some(Err(Error::ConnectionReadTimeout)))
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.incoming.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.incoming.size_hint()
    }
}
