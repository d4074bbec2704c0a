//! Live events over SSE: `GET /v1/sagas/{id}/events` (a snapshot, then the
//! saga's `step` and `saga` events until its terminal `saga` event) and
//! `GET /v1/events` (every saga's `saga` events, filtered by kind and
//! status). Events come from this host's `EventHub`, which on PostgreSQL
//! also carries what other hosts write.
//!
//! A subscriber reads from one bounded buffer: one that falls too far
//! behind gets an `error` event and the stream ends (reconnecting starts
//! with a fresh snapshot), so a client that stops reading holds no memory
//! beyond that buffer. Keep-alive comments every 15 s keep proxies from
//! closing an idle stream.

use super::AppState;
use super::error::{ApiError, ErrorBody};
use crate::events::Event;
use crate::model::{SagaDetail, SagaId, SagaStatus};
use axum::body::Body;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderName, header};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use futures::StreamExt;
use serde::Deserialize;
use std::convert::Infallible;
use std::time::Duration;
use tokio::sync::broadcast;
use tokio::sync::broadcast::error::RecvError;
use utoipa::IntoParams;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

pub(super) fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(saga_events))
        .routes(routes!(all_events))
}

/// How often an idle stream sends a comment.
const KEEP_ALIVE: Duration = Duration::from_secs(15);

/// Frames sent in one write at most.
const BATCH: usize = 512;

/// How long `/v1/events` gathers frames after the first before writing
/// them: every saga's changes come in bursts on a busy host, and one write
/// per event to each of many subscribers would cost the host more than
/// the events themselves. A saga's own stream writes at once.
const GATHER: Duration = Duration::from_millis(25);

fn lagged(missed: u64) -> Bytes {
    crate::events::frame(
        "error",
        0,
        &serde_json::json!({
            "message": format!(
                "this client fell {missed} events behind and was dropped; reconnect for a fresh snapshot"
            )
        }),
    )
}

/// What a subscriber's next read found.
enum Next {
    Frame(Bytes, bool),
    Skip,
    End(Option<Bytes>),
}

fn next_of(
    got: Result<Event, RecvError>,
    keep: &(impl Fn(&Event) -> bool + Send),
    last: &(impl Fn(&Event) -> bool + Send),
) -> Next {
    match got {
        Ok(e) if keep(&e) => Next::Frame(e.frame.clone(), last(&e)),
        Ok(_) => Next::Skip,
        Err(RecvError::Lagged(missed)) => Next::End(Some(lagged(missed))),
        Err(RecvError::Closed) => Next::End(None),
    }
}

/// An SSE response: `first` (a snapshot), then the frames of the events
/// `keep` selects, several at a time when they are ready, until one that
/// `last` says ends the stream, or the subscriber lags (an `error` frame).
/// A comment every [`KEEP_ALIVE`] when nothing happens.
fn sse(
    first: Option<Bytes>,
    rx: broadcast::Receiver<Event>,
    done: bool,
    gather: Option<Duration>,
    keep: impl Fn(&Event) -> bool + Send + Sync + 'static,
    last: impl Fn(&Event) -> bool + Send + Sync + 'static,
) -> Response {
    let keep = std::sync::Arc::new((keep, last));
    let rest = futures::stream::unfold((rx, done), move |(mut rx, done)| {
        let keep = keep.clone();
        async move {
            if done {
                return None;
            }
            let (keep, last) = (&keep.0, &keep.1);
            let mut out: Vec<u8> = Vec::new();
            let mut ended;
            // Wait for the first frame (or send a keep-alive comment).
            loop {
                match tokio::time::timeout(KEEP_ALIVE, rx.recv()).await {
                    Err(_) => return Some((Bytes::from_static(b":\n\n"), (rx, false))),
                    Ok(got) => match next_of(got, keep, last) {
                        Next::Frame(f, is_last) => {
                            out.extend_from_slice(&f);
                            ended = is_last;
                            break;
                        }
                        Next::Skip => {}
                        Next::End(Some(f)) => return Some((f, (rx, true))),
                        Next::End(None) => return None,
                    },
                }
            }
            // Then whatever else is ready (after a moment, for a firehose),
            // up to a batch.
            if let Some(pause) = gather
                && !ended
            {
                tokio::time::sleep(pause).await;
            }
            let mut taken = 1;
            while !ended && taken < BATCH {
                let got = match rx.try_recv() {
                    Ok(e) => Ok(e),
                    Err(broadcast::error::TryRecvError::Empty) => break,
                    Err(broadcast::error::TryRecvError::Lagged(n)) => Err(RecvError::Lagged(n)),
                    Err(broadcast::error::TryRecvError::Closed) => Err(RecvError::Closed),
                };
                match next_of(got, keep, last) {
                    Next::Frame(f, is_last) => {
                        out.extend_from_slice(&f);
                        ended = is_last;
                        taken += 1;
                    }
                    Next::Skip => {}
                    Next::End(f) => {
                        if let Some(f) = f {
                            out.extend_from_slice(&f);
                        }
                        ended = true;
                    }
                }
            }
            Some((Bytes::from(out), (rx, ended)))
        }
    });
    let stream = futures::stream::iter(first)
        .chain(rest)
        .map(Ok::<_, Infallible>);
    (
        [
            (header::CONTENT_TYPE, "text/event-stream"),
            (header::CACHE_CONTROL, "no-cache"),
            (HeaderName::from_static("x-accel-buffering"), "no"),
        ],
        Body::from_stream(stream),
    )
        .into_response()
}

/// One saga's events: `snapshot` (the saga as `GET /v1/sagas/{id}`
/// returns it), then `step` (a ledger row) and `saga` (the saga without
/// its ledger) events, each with an `id`; the stream ends after the
/// terminal `saga` event (at once, for a saga that has already ended).
#[utoipa::path(
    get,
    path = "/sagas/{id}/events",
    tag = "events",
    params(("id" = String, Path, description = "the saga's id")),
    responses(
        (status = 200, description = "an event stream", content_type = "text/event-stream", body = String),
        (status = 404, body = ErrorBody),
    )
)]
async fn saga_events(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let id: SagaId = id.parse().map_err(|_| {
        ApiError::not_found(format!(
            "no saga `{}` (saga ids are UUIDs)",
            id.chars().take(64).collect::<String>()
        ))
    })?;
    // Subscribed before the snapshot is read: nothing falls between them.
    let rx = state.runner.hub().subscribe();
    let mut detail: SagaDetail = state
        .store
        .saga_shown(id, state.server.shown_output_bytes)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("no saga {id}")))?;
    super::waits::with_callback_urls(&state, &mut detail);
    let ended = detail.saga.status.is_final();
    let snapshot = crate::events::frame("snapshot", 0, &detail);
    Ok(sse(
        Some(snapshot),
        rx,
        ended,
        None,
        move |e| e.saga_id == id,
        Event::is_final,
    ))
}

/// `GET /v1/events` filters.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct EventsQuery {
    /// Only sagas of this kind.
    kind: Option<String>,
    /// Only changes to this status.
    status: Option<String>,
}

/// Every saga's changes, as `saga` events (the saga's summary, as
/// `GET /v1/sagas` lists it).
#[utoipa::path(
    get,
    path = "/events",
    tag = "events",
    params(EventsQuery),
    responses(
        (status = 200, description = "an event stream", content_type = "text/event-stream", body = String),
        (status = 400, body = ErrorBody),
    )
)]
async fn all_events(
    State(state): State<AppState>,
    query: Result<Query<EventsQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, ApiError> {
    let Query(query) = query.map_err(|e| ApiError::bad_request(e.body_text()))?;
    let status = query
        .status
        .as_deref()
        .map(SagaStatus::parse)
        .transpose()
        .map_err(ApiError::bad_request)?;
    let kind = query.kind;
    let rx = state.runner.hub().subscribe_sagas();
    Ok(sse(
        None,
        rx,
        false,
        Some(GATHER),
        move |e| {
            e.name == "saga"
                && status.is_none_or(|s| e.status == Some(s))
                && kind.as_deref().is_none_or(|k| e.kind.as_deref() == Some(k))
        },
        |_| false,
    ))
}
