//! The HTTP client the tests talk to servers with. It is reqwest, with one
//! addition: every answer from `/v1` is checked against the OpenAPI
//! document the server publishes (the same `wasaga::api::openapi_document`)
//! before the test sees it: the status must be documented for the route,
//! and a JSON body must match the documented schema (a JSON Schema
//! validator, 2020-12, as OpenAPI 3.1 uses). So the document and the wire
//! cannot drift apart: any test that meets an undocumented answer fails,
//! naming the route, the status and what did not match.

use jsonschema::Validator;
use reqwest::Method;
use serde_json::Value;
use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

/// A reqwest client whose `/v1` answers are checked against the contract.
#[derive(Clone, Default)]
pub struct Http {
    client: reqwest::Client,
}

impl Http {
    pub fn new() -> Http {
        Http::default()
    }

    /// A client that sends `Authorization: Bearer <token>` with every
    /// request.
    pub fn with_token(token: &str) -> Http {
        let mut headers = reqwest::header::HeaderMap::new();
        headers.insert(
            reqwest::header::AUTHORIZATION,
            format!("Bearer {token}").parse().expect("a header value"),
        );
        Http {
            client: reqwest::Client::builder()
                .default_headers(headers)
                .build()
                .expect("a client"),
        }
    }

    pub fn get(&self, url: impl AsRef<str>) -> Request {
        self.request(Method::GET, url)
    }

    pub fn post(&self, url: impl AsRef<str>) -> Request {
        self.request(Method::POST, url)
    }

    pub fn put(&self, url: impl AsRef<str>) -> Request {
        self.request(Method::PUT, url)
    }

    pub fn delete(&self, url: impl AsRef<str>) -> Request {
        self.request(Method::DELETE, url)
    }

    pub fn request(&self, method: Method, url: impl AsRef<str>) -> Request {
        let url = url.as_ref().to_string();
        Request {
            inner: self.client.request(method.clone(), &url),
            method,
            url,
        }
    }
}

/// A request being built (reqwest's builder, kept whole).
pub struct Request {
    inner: reqwest::RequestBuilder,
    method: Method,
    url: String,
}

impl Request {
    pub fn json<T: serde::Serialize + ?Sized>(self, json: &T) -> Request {
        Request {
            inner: self.inner.json(json),
            ..self
        }
    }

    pub fn body(self, body: impl Into<reqwest::Body>) -> Request {
        Request {
            inner: self.inner.body(body),
            ..self
        }
    }

    pub fn header(self, key: &str, value: impl AsRef<str>) -> Request {
        Request {
            inner: self.inner.header(key, value.as_ref()),
            ..self
        }
    }

    pub fn bearer_auth(self, token: impl std::fmt::Display) -> Request {
        Request {
            inner: self.inner.bearer_auth(token),
            ..self
        }
    }

    pub fn query<T: serde::Serialize + ?Sized>(self, query: &T) -> Request {
        Request {
            inner: self.inner.query(query),
            ..self
        }
    }

    pub fn timeout(self, timeout: Duration) -> Request {
        Request {
            inner: self.inner.timeout(timeout),
            ..self
        }
    }

    /// Sends the request; a `/v1` answer that breaks the contract panics
    /// with what it broke. Event streams pass through unread.
    pub async fn send(self) -> reqwest::Result<reqwest::Response> {
        let response = self.inner.send().await?;
        let Some(path) = v1_path(&self.url) else {
            return Ok(response);
        };
        let content_type = response
            .headers()
            .get(reqwest::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_string();
        if content_type.starts_with("text/event-stream") || path == "/openapi.json" {
            return Ok(response);
        }
        let status = response.status();
        let headers = response.headers().clone();
        let version = response.version();
        let bytes = response.bytes().await?;
        if let Err(why) =
            contract().check(&self.method, &path, status.as_u16(), &content_type, &bytes)
        {
            panic!(
                "{} {path} answered {status}, which the OpenAPI document does not allow: {why}\nbody: {}",
                self.method,
                String::from_utf8_lossy(&bytes)
                    .chars()
                    .take(2000)
                    .collect::<String>()
            );
        }
        let mut rebuilt = http::Response::new(bytes);
        *rebuilt.status_mut() = status;
        *rebuilt.headers_mut() = headers;
        *rebuilt.version_mut() = version;
        Ok(reqwest::Response::from(rebuilt))
    }
}

/// The part of a URL after `/v1`, when it is an API route.
fn v1_path(url: &str) -> Option<String> {
    let parsed = url::Url::parse(url).ok()?;
    let path = parsed.path().strip_prefix("/v1")?;
    path.starts_with('/').then(|| path.to_string())
}

/// The contract, built once per test binary from the library's document.
fn contract() -> &'static Contract {
    static CONTRACT: OnceLock<Contract> = OnceLock::new();
    CONTRACT.get_or_init(|| {
        let doc = serde_json::to_value(wasaga::api::openapi_document()).expect("the document");
        Contract::new(doc)
    })
}

/// The documented operations and their response schemas.
pub struct Contract {
    doc: Value,
    operations: Vec<Operation>,
    /// Compiled validators, by schema text.
    validators: Mutex<HashMap<String, Arc<Validator>>>,
}

struct Operation {
    method: Method,
    /// Path segments; `None` is a `{parameter}`.
    segments: Vec<Option<String>>,
    responses: serde_json::Map<String, Value>,
}

impl Contract {
    pub fn new(doc: Value) -> Contract {
        let mut operations = Vec::new();
        for (path, item) in doc["paths"].as_object().expect("paths") {
            let segments: Vec<Option<String>> = path
                .trim_start_matches('/')
                .split('/')
                .map(|s| (!s.starts_with('{')).then(|| s.to_string()))
                .collect();
            for (method, operation) in item.as_object().expect("a path item") {
                let Ok(method) = method.to_uppercase().parse::<Method>() else {
                    continue;
                };
                operations.push(Operation {
                    method,
                    segments: segments.clone(),
                    responses: operation["responses"]
                        .as_object()
                        .cloned()
                        .unwrap_or_default(),
                });
            }
        }
        Contract {
            doc,
            operations,
            validators: Mutex::new(HashMap::new()),
        }
    }

    fn operation(&self, method: &Method, path: &str) -> Option<&Operation> {
        let parts: Vec<&str> = path.trim_start_matches('/').split('/').collect();
        // A literal segment wins over a parameter (`/sagas/x/cancel`).
        self.operations
            .iter()
            .filter(|op| op.method == *method && op.segments.len() == parts.len())
            .filter(|op| {
                op.segments
                    .iter()
                    .zip(&parts)
                    .all(|(s, p)| s.as_deref().is_none_or(|s| s == *p))
            })
            .max_by_key(|op| op.segments.iter().filter(|s| s.is_some()).count())
    }

    /// Whether an answer is one the document allows.
    pub fn check(
        &self,
        method: &Method,
        path: &str,
        status: u16,
        content_type: &str,
        body: &[u8],
    ) -> Result<(), String> {
        // HEAD is GET without the body (HTTP's rule, which axum follows).
        let head = *method == Method::HEAD;
        let method = if head { &Method::GET } else { method };
        let Some(operation) = self.operation(method, path) else {
            // Routes the document does not describe answer 404 or 405 (or
            // are refused by the gate before routing: 401, 403 for another
            // origin, 408, 413, 415, 421, 429), in the error body.
            return match status {
                401 | 403 | 404 | 405 | 408 | 413 | 415 | 421 | 429 => self.check_error(body, head),
                _ => Err(format!("no documented operation for {method} {path}")),
            };
        };
        let response = match operation.responses.get(&status.to_string()) {
            Some(response) => response,
            None => {
                return Err(format!(
                    "status {status} is not documented (documented: {})",
                    operation
                        .responses
                        .keys()
                        .cloned()
                        .collect::<Vec<_>>()
                        .join(", ")
                ));
            }
        };
        let schema = response["content"]
            .as_object()
            .and_then(|content| {
                content
                    .get("application/json")
                    .or_else(|| content.values().next())
            })
            .map(|media| media["schema"].clone());
        match schema {
            None => {
                if body.is_empty() {
                    Ok(())
                } else {
                    Err(format!("a body where none is documented ({content_type})"))
                }
            }
            Some(_) if head => Ok(()),
            Some(schema) => {
                if !content_type.starts_with("application/json") {
                    return Err(format!("content type `{content_type}`, not JSON"));
                }
                let value: Value = serde_json::from_slice(body)
                    .map_err(|e| format!("the body is not JSON: {e}"))?;
                self.validate(&schema, &value)
            }
        }
    }

    fn check_error(&self, body: &[u8], head: bool) -> Result<(), String> {
        if head {
            return Ok(());
        }
        if body.is_empty() {
            return Err("an error without the error body".into());
        }
        let value: Value =
            serde_json::from_slice(body).map_err(|e| format!("the error body is not JSON: {e}"))?;
        self.validate(
            &serde_json::json!({"$ref": "#/components/schemas/ErrorBody"}),
            &value,
        )
    }

    fn validate(&self, schema: &Value, value: &Value) -> Result<(), String> {
        let validator = self.validator(schema)?;
        let errors: Vec<String> = validator
            .iter_errors(value)
            .map(|e| format!("at `{}`: {e}", e.instance_path))
            .take(5)
            .collect();
        if errors.is_empty() {
            Ok(())
        } else {
            Err(errors.join("; "))
        }
    }

    /// A validator for `schema`, whose `$ref`s point into the document.
    fn validator(&self, schema: &Value) -> Result<Arc<Validator>, String> {
        let key = schema.to_string();
        if let Some(v) = self.validators.lock().unwrap().get(&key) {
            return Ok(v.clone());
        }
        let mut root = schema.clone();
        if let Some(object) = root.as_object_mut() {
            object.insert("components".into(), self.doc["components"].clone());
            object.insert(
                "$schema".into(),
                "https://json-schema.org/draft/2020-12/schema".into(),
            );
        }
        let validator = Arc::new(
            jsonschema::options()
                .should_validate_formats(false)
                .build(&root)
                .map_err(|e| format!("the document's schema does not compile: {e}"))?,
        );
        self.validators
            .lock()
            .unwrap()
            .insert(key, validator.clone());
        Ok(validator)
    }
}
