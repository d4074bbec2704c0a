//! A step's request to an origin that a provider budget covers
//! (docs/flow-control.md): it takes a token first, waiting for one within
//! the call's deadline (the wait is a line of the call's log); a `429`, or
//! a `503` with `Retry-After`, pauses the budget for every host until then
//! and the host sends the request again after the pause, at most
//! [`MAX_HOST_RETRIES`] times, without the step's knowing or an attempt
//! counted. The request's body is kept so that it can be sent again.

use super::outbound::{BudgetGate, Outbound};
use super::sandbox::CallLog;
use crate::model::{Budget, LogLevel, Timestamp, retry_after};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use wasmtime_wasi_http::{Error, WasiBody};

/// Times the host sends a request again after the provider pushed back.
pub const MAX_HOST_RETRIES: usize = 3;

/// What the request needs besides itself.
pub(super) struct Budgeted<'a> {
    pub outbound: &'a Outbound,
    pub gate: &'a dyn BudgetGate,
    pub budget: &'a Budget,
    pub plugin: &'a Arc<str>,
    pub log: &'a Arc<Mutex<CallLog>>,
    /// The call's deadline: no wait goes past it.
    pub deadline: Instant,
    pub head: Duration,
    pub between_bytes: Duration,
}

impl Budgeted<'_> {
    fn note(&self, level: LogLevel, line: &str) {
        self.log.lock().expect("call log lock").push(level, line);
    }

    /// Sends `request` within the budget; the response the step gets.
    pub(super) async fn send(
        &self,
        request: http::Request<WasiBody>,
        target: &str,
    ) -> Result<http::Response<WasiBody>, Error> {
        let name = &self.budget.name;
        let (parts, body) = request.into_parts();
        let body: Bytes = body.collect().await?.to_bytes();
        let mut retry = 0;
        loop {
            let left = self.deadline.saturating_duration_since(Instant::now());
            let waited = match self.gate.take(self.budget, left).await {
                Ok(waited) => waited,
                Err(why) => {
                    self.note(LogLevel::Warn, &format!("[host] http {target}: {why}"));
                    return Err(Error::HttpRequestDenied);
                }
            };
            crate::metrics::global().budget_waited(name, waited);
            if !waited.is_zero() {
                self.note(
                    LogLevel::Info,
                    &format!("[host] waited {} ms for budget {name}", waited.as_millis()),
                );
            }
            let mut again = http::Request::new(
                Full::new(body.clone())
                    .map_err(|never| match never {})
                    .boxed_unsync(),
            );
            *again.method_mut() = parts.method.clone();
            *again.uri_mut() = parts.uri.clone();
            *again.version_mut() = parts.version;
            *again.headers_mut() = parts.headers.clone();
            let left = self.deadline.saturating_duration_since(Instant::now());
            let response = self
                .outbound
                .send(self.plugin, again, self.head.min(left), self.between_bytes)
                .await?;
            let status = response.status().as_u16();
            let until = response
                .headers()
                .get(http::header::RETRY_AFTER)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| retry_after(v, Timestamp::now()));
            let pushed_back = match (status, until) {
                (429, until) => {
                    Some(until.unwrap_or_else(|| Timestamp::now().plus(Duration::from_secs(1))))
                }
                (503, Some(until)) => Some(until),
                _ => None,
            };
            let Some(until) = pushed_back else {
                return Ok(response);
            };
            self.gate.pause(self.budget, until).await;
            if retry == MAX_HOST_RETRIES {
                self.note(
                    LogLevel::Warn,
                    &format!("[host] http {target} -> {status}: budget {name} paused until {until}; {MAX_HOST_RETRIES} retries by the host spent, the step gets the answer"),
                );
                return Ok(response);
            }
            self.note(
                LogLevel::Info,
                &format!("[host] http {target} -> {status}: budget {name} paused until {until} for every host; sent again after it ({} of {MAX_HOST_RETRIES}, no attempt counted)", retry + 1),
            );
            retry += 1;
        }
    }
}
