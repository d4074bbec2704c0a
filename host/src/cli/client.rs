//! A small client of HTTP API v1, for the command line (and anyone who
//! wants one in Rust). Errors carry the server's own message.

use crate::api::{
    ErrorBody, PluginList, ResourceList, SagaList, ScheduleList, TemplateList, UploadedPlugin,
};
use crate::model::{Fire, PluginInfo, SagaDetail, SagaRun, ScheduleStatus, Template};
use reqwest::{Method, RequestBuilder, StatusCode};
use serde::de::DeserializeOwned;
use std::time::Duration;

/// Why a client call failed.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The server answered with an error body.
    #[error("{message} ({status}, {code})")]
    Api {
        status: StatusCode,
        code: String,
        message: String,
    },
    /// No answer, or not one we understand.
    #[error("cannot reach the server at {url}: {source}")]
    Transport {
        url: String,
        #[source]
        source: reqwest::Error,
    },
    #[error("the server's answer was not what this client expects: {0}")]
    Decode(String),
}

/// A client of one server.
#[derive(Debug, Clone)]
pub struct Client {
    http: reqwest::Client,
    base: String,
    token: Option<String>,
}

impl Client {
    pub fn new(base: &str, token: Option<String>) -> Client {
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(5))
            .timeout(Duration::from_secs(600))
            .build()
            .expect("a reqwest client");
        Client {
            http,
            base: base.trim_end_matches('/').to_string(),
            token,
        }
    }

    /// A request to the server's `/v1` route made of `segments`, each
    /// percent-encoded as one path segment (an id or a name from the user
    /// can hold `/`, `?` or `#`).
    fn request(&self, method: Method, segments: &[&str]) -> RequestBuilder {
        let url = match url::Url::parse(&self.base) {
            Ok(mut url) => {
                if let Ok(mut path) = url.path_segments_mut() {
                    path.pop_if_empty().push("v1").extend(segments);
                }
                url.to_string()
            }
            // Not a URL: let reqwest say why when the request is sent.
            Err(_) => format!("{}/v1/{}", self.base, segments.join("/")),
        };
        let mut request = self.http.request(method, url);
        if let Some(token) = &self.token {
            request = request.bearer_auth(token);
        }
        request
    }

    async fn send<T: DeserializeOwned>(
        &self,
        request: RequestBuilder,
    ) -> Result<(StatusCode, T), ClientError> {
        let transport = |source| ClientError::Transport {
            url: self.base.clone(),
            source,
        };
        let response = request.send().await.map_err(transport)?;
        let status = response.status();
        let bytes = response.bytes().await.map_err(transport)?;
        if !status.is_success() {
            return Err(match serde_json::from_slice::<ErrorBody>(&bytes) {
                Ok(body) => ClientError::Api {
                    status,
                    code: body.error.code,
                    message: body.error.message,
                },
                Err(_) => ClientError::Api {
                    status,
                    code: "unknown".into(),
                    message: String::from_utf8_lossy(&bytes).chars().take(300).collect(),
                },
            });
        }
        let value = if bytes.is_empty() {
            b"null".as_slice()
        } else {
            &bytes
        };
        serde_json::from_slice(value)
            .map(|v| (status, v))
            .map_err(|e| ClientError::Decode(e.to_string()))
    }

    /// Uploads a component; `true` when it was new.
    pub async fn push_plugin(&self, bytes: Vec<u8>) -> Result<(UploadedPlugin, bool), ClientError> {
        let request = self
            .request(Method::POST, &["plugins"])
            .header("content-type", "application/wasm")
            .body(bytes);
        let (status, info) = self.send(request).await?;
        Ok((info, status == StatusCode::CREATED))
    }

    pub async fn plugins(&self) -> Result<Vec<PluginInfo>, ClientError> {
        let (_, list): (_, PluginList) = self.send(self.request(Method::GET, &["plugins"])).await?;
        Ok(list.plugins)
    }

    pub async fn plugin(&self, reference: &str) -> Result<PluginInfo, ClientError> {
        Ok(self
            .send(self.request(Method::GET, &["plugins", reference]))
            .await?
            .1)
    }

    pub async fn delete_plugin(&self, digest: &str) -> Result<(), ClientError> {
        let _: (_, serde_json::Value) = self
            .send(self.request(Method::DELETE, &["plugins", digest]))
            .await?;
        Ok(())
    }

    /// Starts a saga; `true` when it was new (not an idempotent repeat).
    pub async fn start_saga(
        &self,
        body: &serde_json::Value,
        idempotency_key: Option<&str>,
    ) -> Result<(SagaRun, bool), ClientError> {
        let mut request = self.request(Method::POST, &["sagas"]).json(body);
        if let Some(key) = idempotency_key {
            request = request.header("idempotency-key", key);
        }
        let (status, saga) = self.send(request).await?;
        Ok((saga, status == StatusCode::CREATED))
    }

    pub async fn sagas(&self, query: &[(&str, String)]) -> Result<SagaList, ClientError> {
        let (_, list): (_, SagaList) = self
            .send(self.request(Method::GET, &["sagas"]).query(query))
            .await?;
        Ok(list)
    }

    pub async fn saga(&self, id: &str) -> Result<SagaDetail, ClientError> {
        Ok(self
            .send(self.request(Method::GET, &["sagas", id]))
            .await?
            .1)
    }

    /// `PUT /v1/plugins/{name}/grants`.
    pub async fn put_grants(
        &self,
        name: &str,
        body: &serde_json::Value,
    ) -> Result<crate::model::Grants, ClientError> {
        Ok(self
            .send(
                self.request(Method::PUT, &["plugins", name, "grants"])
                    .json(body),
            )
            .await?
            .1)
    }

    pub async fn grants(&self, name: &str) -> Result<crate::model::Grants, ClientError> {
        Ok(self
            .send(self.request(Method::GET, &["plugins", name, "grants"]))
            .await?
            .1)
    }

    /// `PUT /v1/secrets/{name}`.
    pub async fn put_secret(
        &self,
        name: &str,
        value: &str,
        origins: &[String],
    ) -> Result<(), ClientError> {
        let body = serde_json::json!({"value": value, "origins": origins});
        let _: (_, serde_json::Value) = self
            .send(self.request(Method::PUT, &["secrets", name]).json(&body))
            .await?;
        Ok(())
    }

    pub async fn secrets(&self) -> Result<crate::api::SecretList, ClientError> {
        Ok(self.send(self.request(Method::GET, &["secrets"])).await?.1)
    }

    pub async fn delete_secret(&self, name: &str) -> Result<(), ClientError> {
        let _: (_, serde_json::Value) = self
            .send(self.request(Method::DELETE, &["secrets", name]))
            .await?;
        Ok(())
    }

    /// Resolves a `compensation_failed` step, or an `in_doubt` one, by hand.
    pub async fn resolve_step(
        &self,
        id: &str,
        index: u32,
        body: &serde_json::Value,
    ) -> Result<SagaRun, ClientError> {
        let index = index.to_string();
        let request = self
            .request(Method::POST, &["sagas", id, "steps", &index, "resolve"])
            .json(body);
        Ok(self.send(request).await?.1)
    }

    /// `POST /v1/sagas/{id}/waits/{wait}/{answer}` (complete, reject).
    pub async fn answer_wait(
        &self,
        id: &str,
        wait: &str,
        answer: &str,
        body: &serde_json::Value,
    ) -> Result<SagaRun, ClientError> {
        let request = self
            .request(Method::POST, &["sagas", id, "waits", wait, answer])
            .json(body);
        Ok(self.send(request).await?.1)
    }

    /// `POST /v1/messages`, with an `Idempotency-Key` when given.
    pub async fn send_message(
        &self,
        body: &serde_json::Value,
        idempotency_key: Option<&str>,
    ) -> Result<serde_json::Value, ClientError> {
        let mut request = self.request(Method::POST, &["messages"]).json(body);
        if let Some(key) = idempotency_key {
            request = request.header("Idempotency-Key", key);
        }
        Ok(self.send(request).await?.1)
    }

    /// `POST /v1/sagas/{id}/redrive`.
    pub async fn redrive(
        &self,
        id: &str,
        body: &serde_json::Value,
    ) -> Result<crate::model::RedrivePlan, ClientError> {
        let request = self
            .request(Method::POST, &["sagas", id, "redrive"])
            .json(body);
        Ok(self.send(request).await?.1)
    }

    /// `POST /v1/sagas/redrive`.
    pub async fn redrive_many(
        &self,
        body: &serde_json::Value,
    ) -> Result<crate::model::BulkRedrive, ClientError> {
        let request = self.request(Method::POST, &["sagas", "redrive"]).json(body);
        Ok(self.send(request).await?.1)
    }

    /// `POST /v1/sagas/{id}/{action}` (cancel, pause, resume, retry).
    pub async fn saga_action(&self, id: &str, action: &str) -> Result<SagaRun, ClientError> {
        Ok(self
            .send(self.request(Method::POST, &["sagas", id, action]))
            .await?
            .1)
    }

    /// `PUT /v1/templates/{name}`; `true` when it was created.
    pub async fn put_template(
        &self,
        name: &str,
        body: &serde_json::Value,
    ) -> Result<(Template, bool), ClientError> {
        let request = self.request(Method::PUT, &["templates", name]).json(body);
        let (status, template) = self.send(request).await?;
        Ok((template, status == StatusCode::CREATED))
    }

    pub async fn templates(&self) -> Result<Vec<Template>, ClientError> {
        let (_, list): (_, TemplateList) =
            self.send(self.request(Method::GET, &["templates"])).await?;
        Ok(list.templates)
    }

    pub async fn template(
        &self,
        name: &str,
        version: Option<u32>,
    ) -> Result<Template, ClientError> {
        let mut request = self.request(Method::GET, &["templates", name]);
        if let Some(version) = version {
            request = request.query(&[("version", version)]);
        }
        Ok(self.send(request).await?.1)
    }

    pub async fn delete_template(&self, name: &str) -> Result<(), ClientError> {
        let _: (_, serde_json::Value) = self
            .send(self.request(Method::DELETE, &["templates", name]))
            .await?;
        Ok(())
    }

    pub async fn put_schedule(
        &self,
        name: &str,
        body: &serde_json::Value,
    ) -> Result<(ScheduleStatus, bool), ClientError> {
        let request = self.request(Method::PUT, &["schedules", name]).json(body);
        let (status, schedule) = self.send(request).await?;
        Ok((schedule, status == StatusCode::CREATED))
    }

    pub async fn schedules(&self) -> Result<Vec<ScheduleStatus>, ClientError> {
        let (_, list): (_, ScheduleList) =
            self.send(self.request(Method::GET, &["schedules"])).await?;
        Ok(list.schedules)
    }

    pub async fn schedule(&self, name: &str) -> Result<ScheduleStatus, ClientError> {
        Ok(self
            .send(self.request(Method::GET, &["schedules", name]))
            .await?
            .1)
    }

    /// `POST /v1/schedules/{name}/pause` or `/resume`.
    pub async fn schedule_action(
        &self,
        name: &str,
        action: &str,
    ) -> Result<ScheduleStatus, ClientError> {
        Ok(self
            .send(self.request(Method::POST, &["schedules", name, action]))
            .await?
            .1)
    }

    pub async fn trigger_schedule(&self, name: &str) -> Result<Fire, ClientError> {
        Ok(self
            .send(self.request(Method::POST, &["schedules", name, "trigger"]))
            .await?
            .1)
    }

    pub async fn delete_schedule(&self, name: &str) -> Result<(), ClientError> {
        let _: (_, serde_json::Value) = self
            .send(self.request(Method::DELETE, &["schedules", name]))
            .await?;
        Ok(())
    }

    /// `POST /v1/resources/scan`.
    pub async fn scan_resources(
        &self,
        body: &serde_json::Value,
    ) -> Result<crate::runner::drift::ScanReport, ClientError> {
        let request = self
            .request(Method::POST, &["resources", "scan"])
            .json(body);
        Ok(self.send(request).await?.1)
    }

    pub async fn resources(&self, query: &[(&str, String)]) -> Result<ResourceList, ClientError> {
        Ok(self
            .send(self.request(Method::GET, &["resources"]).query(query))
            .await?
            .1)
    }

    /// A saga's event stream (`GET /v1/sagas/{id}/events`).
    pub async fn saga_events(&self, id: &str) -> Result<EventStream, ClientError> {
        self.event_stream(self.request(Method::GET, &["sagas", id, "events"]))
            .await
    }

    /// Every saga's changes (`GET /v1/events`, with its filters).
    pub async fn events(&self, query: &[(&str, String)]) -> Result<EventStream, ClientError> {
        self.event_stream(self.request(Method::GET, &["events"]).query(query))
            .await
    }

    async fn event_stream(&self, request: RequestBuilder) -> Result<EventStream, ClientError> {
        let request = request
            .header("accept", "text/event-stream")
            .timeout(Duration::from_secs(24 * 3600));
        let response = request
            .send()
            .await
            .map_err(|source| ClientError::Transport {
                url: self.base.clone(),
                source,
            })?;
        let status = response.status();
        let is_stream = response
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.starts_with("text/event-stream"));
        if !status.is_success() || !is_stream {
            return Err(ClientError::Api {
                status,
                code: "no_stream".into(),
                message: "the server has no event stream for this saga".into(),
            });
        }
        Ok(EventStream {
            response,
            buffer: Vec::new(),
        })
    }
}

/// Server-sent events as they arrive: `(event name, data)`.
pub struct EventStream {
    response: reqwest::Response,
    /// Bytes (a chunk may end inside a character).
    buffer: Vec<u8>,
}

impl EventStream {
    /// The next event; `None` when the stream ends (or breaks).
    pub async fn next(&mut self) -> Option<(String, String)> {
        loop {
            if let Some(end) = self.buffer.windows(2).position(|w| w == b"\n\n") {
                let bytes: Vec<u8> = self.buffer.drain(..end + 2).collect();
                let block = String::from_utf8_lossy(&bytes);
                let mut name = String::from("message");
                let mut data: Vec<&str> = Vec::new();
                for line in block.lines() {
                    if let Some(v) = line.strip_prefix("event:") {
                        name = v.trim().to_string();
                    } else if let Some(v) = line.strip_prefix("data:") {
                        data.push(v.strip_prefix(' ').unwrap_or(v));
                    }
                }
                // A comment (keep-alive) has no data.
                if data.is_empty() {
                    continue;
                }
                return Some((name, data.join("\n")));
            }
            let chunk = self.response.chunk().await.ok()??;
            self.buffer.extend_from_slice(&chunk);
        }
    }
}
