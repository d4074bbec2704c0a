//! Outbound HTTP from a step, over `wasi:http`: build a [`Request`], `send`
//! it, read the [`Response`]. Calls block the step until the answer is in;
//! the host bounds each one by the step's deadline.
//!
//! The host lets a request out only to an origin granted to the plugin, and
//! replaces `{{secret:NAME}}` in a header value with a secret granted to it,
//! so a step can authenticate without ever seeing its token:
//!
//! ```no_run
//! # fn demo(state: &wasaga_step::SagaState) -> wasaga_step::StepResult<()> {
//! use wasaga_step::http::Request;
//! let response = Request::post("https://api.example.com/v2/droplets")
//!     .header("authorization", "Bearer {{secret:do-token}}")
//!     .header("idempotency-key", &state.idempotency_key)
//!     .json(&serde_json::json!({"name": "web-1"}))?
//!     .send()?;
//! let created: serde_json::Value = response.json()?;
//! # Ok(())
//! # }
//! ```
//!
//! A refused request (not granted, a secret the host would not send there,
//! the per-call limit) is a [`HttpError::Denied`], which converts to a fatal
//! step error: retrying cannot change a grant. Anything else (no connection,
//! a timeout) is [`HttpError::Failed`], retryable.

use crate::__bindings::wasi::http::outgoing_handler;
use crate::__bindings::wasi::http::types::{
    ErrorCode, Fields, IncomingBody, Method, OutgoingBody, OutgoingRequest, Scheme,
};
use crate::__bindings::wasi::io::streams::StreamError;
use crate::{StepError, fatal, retryable};
use serde::Serialize;
use serde::de::DeserializeOwned;

/// Why a request did not get an answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HttpError {
    /// The host refused it (see the step's log for which rule).
    Denied(String),
    /// It was sent, or tried, and failed (connection, timeout, protocol).
    Failed(String),
    /// The request itself is malformed (a URL that does not parse).
    Invalid(String),
}

impl std::fmt::Display for HttpError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            HttpError::Denied(m) => write!(f, "the host refused the request: {m}"),
            HttpError::Failed(m) => write!(f, "the request failed: {m}"),
            HttpError::Invalid(m) => write!(f, "invalid request: {m}"),
        }
    }
}

impl std::error::Error for HttpError {}

impl From<HttpError> for StepError {
    fn from(e: HttpError) -> StepError {
        match e {
            HttpError::Failed(_) => retryable(e.to_string()),
            HttpError::Denied(_) | HttpError::Invalid(_) => fatal(e.to_string()),
        }
    }
}

fn from_code(e: ErrorCode) -> HttpError {
    match e {
        ErrorCode::HttpRequestDenied => HttpError::Denied(format!("{e:?}")),
        other => HttpError::Failed(format!("{other:?}")),
    }
}

/// A request to send.
#[derive(Debug, Clone)]
pub struct Request {
    method: ::http::Method,
    url: String,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Request {
    pub fn new(method: ::http::Method, url: impl Into<String>) -> Request {
        Request {
            method,
            url: url.into(),
            headers: Vec::new(),
            body: Vec::new(),
        }
    }

    pub fn get(url: impl Into<String>) -> Request {
        Request::new(::http::Method::GET, url)
    }

    pub fn post(url: impl Into<String>) -> Request {
        Request::new(::http::Method::POST, url)
    }

    pub fn put(url: impl Into<String>) -> Request {
        Request::new(::http::Method::PUT, url)
    }

    pub fn delete(url: impl Into<String>) -> Request {
        Request::new(::http::Method::DELETE, url)
    }

    /// Adds a header. `{{secret:NAME}}` in its value is replaced by the
    /// host with a secret granted to this plugin.
    pub fn header(mut self, name: &str, value: &str) -> Request {
        self.headers.push((name.to_string(), value.to_string()));
        self
    }

    /// The body, as bytes.
    pub fn body(mut self, body: impl Into<Vec<u8>>) -> Request {
        self.body = body.into();
        self
    }

    /// The body, as JSON (and `content-type: application/json`).
    pub fn json(self, value: &impl Serialize) -> Result<Request, StepError> {
        let body = serde_json::to_vec(value).map_err(|e| fatal(format!("request body: {e}")))?;
        Ok(self.header("content-type", "application/json").body(body))
    }

    /// Sends it and reads the whole answer.
    pub fn send(self) -> Result<Response, HttpError> {
        let uri: ::http::Uri = self
            .url
            .parse()
            .map_err(|e| HttpError::Invalid(format!("`{}` is not a URL: {e}", self.url)))?;
        let scheme = match uri.scheme_str() {
            Some("https") => Scheme::Https,
            Some("http") => Scheme::Http,
            _ => {
                return Err(HttpError::Invalid(format!(
                    "`{}` is not an http(s) URL",
                    self.url
                )));
            }
        };
        let authority = uri
            .authority()
            .ok_or_else(|| HttpError::Invalid(format!("`{}` has no host", self.url)))?
            .as_str()
            .to_string();
        let path = uri
            .path_and_query()
            .map_or("/".to_string(), |p| p.as_str().to_string());
        let mut entries: Vec<(String, Vec<u8>)> = self
            .headers
            .iter()
            .map(|(k, v)| (k.to_ascii_lowercase(), v.as_bytes().to_vec()))
            .collect();
        // A declared length, so the body is not chunked: a server that
        // answers without reading an empty chunked body may close the
        // connection under the answer.
        if !entries.iter().any(|(k, _)| k == "content-length") {
            entries.push((
                "content-length".into(),
                self.body.len().to_string().into_bytes(),
            ));
        }
        let fields = Fields::from_list(&entries)
            .map_err(|e| HttpError::Invalid(format!("headers: {e:?}")))?;
        let request = OutgoingRequest::new(fields);
        let method = match self.method.as_str() {
            "GET" => Method::Get,
            "POST" => Method::Post,
            "PUT" => Method::Put,
            "DELETE" => Method::Delete,
            "PATCH" => Method::Patch,
            "HEAD" => Method::Head,
            "OPTIONS" => Method::Options,
            other => Method::Other(other.to_string()),
        };
        let invalid = |what: &str| HttpError::Invalid(format!("bad {what} in `{}`", self.url));
        request
            .set_method(&method)
            .map_err(|()| invalid("method"))?;
        request
            .set_scheme(Some(&scheme))
            .map_err(|()| invalid("scheme"))?;
        request
            .set_authority(Some(&authority))
            .map_err(|()| invalid("authority"))?;
        request
            .set_path_with_query(Some(&path))
            .map_err(|()| invalid("path"))?;
        let outgoing = request
            .body()
            .map_err(|()| HttpError::Failed("the request body was taken".into()))?;
        let pending = outgoing_handler::handle(request, None).map_err(from_code)?;
        write_body(&outgoing, &self.body)?;
        OutgoingBody::finish(outgoing, None).map_err(from_code)?;
        pending.subscribe().block();
        let response = pending
            .get()
            .ok_or_else(|| HttpError::Failed("no response".into()))?
            .map_err(|()| HttpError::Failed("the response was taken".into()))?
            .map_err(from_code)?;
        let status = response.status();
        let headers = response
            .headers()
            .entries()
            .into_iter()
            .map(|(k, v)| (k, String::from_utf8_lossy(&v).into_owned()))
            .collect();
        let incoming = response
            .consume()
            .map_err(|()| HttpError::Failed("the response body was taken".into()))?;
        let body = read_body(&incoming)?;
        drop(incoming);
        Ok(Response {
            status,
            headers,
            body,
        })
    }
}

fn write_body(body: &OutgoingBody, bytes: &[u8]) -> Result<(), HttpError> {
    if bytes.is_empty() {
        return Ok(());
    }
    let stream = body
        .write()
        .map_err(|()| HttpError::Failed("the request body stream was taken".into()))?;
    for chunk in bytes.chunks(4096) {
        stream
            .blocking_write_and_flush(chunk)
            .map_err(|e| HttpError::Failed(format!("writing the request body: {e:?}")))?;
    }
    drop(stream);
    Ok(())
}

fn read_body(body: &IncomingBody) -> Result<Vec<u8>, HttpError> {
    let stream = body
        .stream()
        .map_err(|()| HttpError::Failed("the response body stream was taken".into()))?;
    let mut out = Vec::new();
    loop {
        match stream.blocking_read(64 * 1024) {
            Ok(chunk) => out.extend_from_slice(&chunk),
            Err(StreamError::Closed) => break,
            Err(StreamError::LastOperationFailed(e)) => {
                return Err(HttpError::Failed(format!(
                    "reading the response body: {}",
                    e.to_debug_string()
                )));
            }
        }
    }
    drop(stream);
    Ok(out)
}

/// An answer.
#[derive(Debug, Clone)]
pub struct Response {
    pub status: u16,
    /// Header names in lowercase.
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Response {
    /// Whether the status is 2xx.
    pub fn is_success(&self) -> bool {
        (200..300).contains(&self.status)
    }

    /// The first value of a header.
    pub fn header(&self, name: &str) -> Option<&str> {
        let name = name.to_ascii_lowercase();
        self.headers
            .iter()
            .find(|(k, _)| *k == name)
            .map(|(_, v)| v.as_str())
    }

    /// The body as text (invalid UTF-8 replaced).
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// The body as JSON. A body that is not the expected JSON is fatal.
    pub fn json<T: DeserializeOwned>(&self) -> Result<T, StepError> {
        serde_json::from_slice(&self.body).map_err(|e| {
            fatal(format!(
                "the response ({}) is not the expected JSON: {e}",
                self.status
            ))
        })
    }
}
