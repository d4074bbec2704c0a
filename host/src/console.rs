//! The web console at `/ui/`: sagas (filters, pages, live), one saga (a
//! timeline picture of every call, the ledger with logs, resources,
//! context, and the actions the viewer's role allows), plugins (drag to
//! upload, grants), templates, secrets (names only) and resources.
//!
//! Pages are rendered by the server (maud: HTML checked at compile time,
//! no template files and no build step), so they read fine with
//! JavaScript off; one small plain script (`assets/console.js`, embedded)
//! keeps them live from the SSE routes and sends actions to the same `/v1`
//! API the CLI uses. Nothing is fetched from elsewhere.
//!
//! Authentication: with tokens on, a login form (from this server's own
//! page only: its `Origin` is checked) makes a server-side session
//! (`api::session`) whose random id is all the HttpOnly, SameSite=Strict
//! cookie holds, never the token; logout revokes it. The `/v1` API accepts
//! that cookie too, but a state-changing request authenticated by it must
//! come from this server's page and carry the page's CSRF token
//! (`X-CSRF-Token`, an HMAC bound to the session). A page shows only what
//! the API would show its viewer: the secrets page is for admins, as
//! `GET /v1/secrets` is. Every answer forbids framing and inline script
//! (`Content-Security-Policy`, set for the whole server in `api`).

use crate::api::cursor;
use crate::api::guard::{Peer, Throttle};
use crate::api::session;
use crate::api::{AppState, Caller, Role};
use crate::model::{
    ActionKind, CallRecord, PluginInfo, Resource, SagaDetail, SagaId, SagaStatus, SagaSummary,
    StepResult, Timestamp,
};
use crate::store::{ResourceFilter, SagaFilter};
use axum::Router;
use axum::extract::{Extension, Form, FromRequestParts, Path, Query, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use maud::{DOCTYPE, Markup, html};
use serde::Deserialize;

const SCRIPT: &str = include_str!("../assets/console.js");
const STYLE: &str = include_str!("../assets/console.css");

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/ui", get(|| async { Redirect::permanent("/ui/") }))
        .route("/ui/", get(sagas_page))
        .route("/ui/fragment/sagas", get(saga_rows_fragment))
        .route("/ui/sagas/{id}", get(saga_page))
        .route("/ui/sagas/{id}/fragment", get(saga_fragment))
        .route("/ui/plugins", get(plugins_page))
        .route("/ui/fragment/plugins", get(plugin_rows_fragment))
        .route("/ui/templates", get(templates_page))
        .route("/ui/secrets", get(secrets_page))
        .route("/ui/resources", get(resources_page))
        .route("/ui/login", get(login_page).post(login))
        .route("/ui/logout", post(logout))
        .route("/ui/assets/console.js", get(script))
        .route("/ui/assets/console.css", get(style))
}

/// A console page's viewer (an extractor): without one, the answer is
/// the login page.
struct Viewer {
    caller: Caller,
    /// The session's CSRF token (empty without tokens: there is no
    /// session, and the API takes no cookie).
    csrf: String,
    /// Tokens are on (show logout).
    signed_in: bool,
}

impl FromRequestParts<AppState> for Viewer {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Viewer, Response> {
        let Some(tokens) = state.server.tokens.as_ref() else {
            return Ok(Viewer {
                caller: Caller::anonymous(),
                csrf: String::new(),
                signed_in: false,
            });
        };
        let Some(id) = session::session_id(&parts.headers) else {
            return Err(Redirect::to("/ui/login").into_response());
        };
        match session::caller(state.store.as_ref(), tokens, &id).await {
            Ok(Some(caller)) => Ok(Viewer {
                caller,
                csrf: session::csrf_token(&id),
                signed_in: true,
            }),
            Ok(None) => Err(Redirect::to("/ui/login").into_response()),
            Err(e) => Err(error_page(
                None,
                StatusCode::SERVICE_UNAVAILABLE,
                "Unavailable",
                &format!("reading the session failed: {e}"),
            )),
        }
    }
}

async fn script() -> Response {
    (
        [(header::CONTENT_TYPE, "text/javascript; charset=utf-8")],
        SCRIPT,
    )
        .into_response()
}

async fn style() -> Response {
    ([(header::CONTENT_TYPE, "text/css; charset=utf-8")], STYLE).into_response()
}

/// The frame of every page.
fn page(viewer: Option<&Viewer>, here: &str, title: &str, body: Markup) -> Markup {
    let nav = [
        ("/ui/", "Sagas"),
        ("/ui/plugins", "Plugins"),
        ("/ui/templates", "Templates"),
        ("/ui/resources", "Resources"),
        ("/ui/secrets", "Secrets"),
    ];
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                @if let Some(v) = viewer { meta name="csrf" content=(v.csrf); }
                title { (title) " · wasaga" }
                link rel="stylesheet" href="/ui/assets/console.css";
            }
            body {
                header.top {
                    a.brand href="/ui/" { "wasaga" }
                    @if let Some(v) = viewer {
                        @for (href, label) in nav {
                            @if href != "/ui/secrets" || v.caller.role >= Role::Admin {
                                a class=[(href == here).then_some("here")] href=(href) { (label) }
                            }
                        }
                    }
                    @if let Some(v) = viewer.filter(|v| v.signed_in) {
                        form method="post" action="/ui/logout" {
                            input type="hidden" name="csrf" value=(v.csrf);
                            span.muted { (v.caller.label.as_deref().unwrap_or("")) " (" (v.caller.role) ") " }
                            button.secondary type="submit" { "Log out" }
                        }
                    }
                }
                main {
                    div #flash {}
                    (body)
                }
                script src="/ui/assets/console.js" defer {}
            }
        }
    }
}

/// Who started a saga, as authenticated (not as its request said).
fn started_by(saga: &crate::model::SagaRun) -> Option<&str> {
    saga.actions
        .iter()
        .find(|a| a.action == crate::model::ActionKind::Start)
        .and_then(|a| a.actor.as_deref())
}

fn badge(status: impl std::fmt::Display) -> Markup {
    let s = status.to_string();
    html! { span class=(format!("badge s-{s}")) { (s) } }
}

/// "3 s ago", "2 h ago".
fn age(at: Timestamp, now: Timestamp) -> String {
    let secs = at.until(now).as_secs();
    match secs {
        0..60 => format!("{secs} s ago"),
        60..3600 => format!("{} min ago", secs / 60),
        3600..86400 => format!("{} h ago", secs / 3600),
        _ => format!("{} d ago", secs / 86400),
    }
}

fn json(value: &impl serde::Serialize) -> String {
    serde_json::to_string_pretty(value).unwrap_or_default()
}

fn error_page(viewer: Option<&Viewer>, status: StatusCode, title: &str, message: &str) -> Response {
    (
        status,
        page(
            viewer,
            "",
            title,
            html! { h1 { (title) } p { (message) } p { a href="/ui/" { "Back to the sagas" } } },
        ),
    )
        .into_response()
}

// ---- sagas

#[derive(Debug, Default, Deserialize)]
struct SagaQuery {
    status: Option<String>,
    kind: Option<String>,
    deployment_id: Option<String>,
    cursor: Option<String>,
}

const PAGE: u32 = 50;

async fn saga_list(
    state: &AppState,
    q: &SagaQuery,
) -> Result<(Vec<SagaSummary>, Option<String>), String> {
    let blank = |v: &Option<String>| v.clone().filter(|s| !s.is_empty());
    let status = blank(&q.status)
        .map(|s| SagaStatus::parse(&s))
        .transpose()?;
    let (kind, deployment_id) = (blank(&q.kind), blank(&q.deployment_id));
    let filters = (status, &kind, &deployment_id);
    let before = blank(&q.cursor)
        .map(|c| {
            cursor::decode::<(i64, SagaId)>(&c, &filters, "status, kind and deployment")
                .map_err(|e| e.message)
        })
        .transpose()?
        .map(|(t, id)| (Timestamp(t), id));
    let filter = SagaFilter {
        status,
        kind: kind.clone(),
        deployment_id: deployment_id.clone(),
        template: None,
        limit: PAGE,
        before,
    };
    let sagas = state
        .store
        .list_sagas(&filter)
        .await
        .map_err(|e| format!("reading sagas failed: {e}"))?;
    let next = (sagas.len() == PAGE as usize)
        .then(|| sagas.last())
        .flatten()
        .map(|s| cursor::encode((s.created_at.millis(), s.id), &filters));
    Ok((sagas, next))
}

fn saga_rows(sagas: &[SagaSummary]) -> Markup {
    let now = Timestamp::now();
    html! {
        @if sagas.is_empty() {
            tr { td colspan="7" .muted { "No sagas match." } }
        }
        @for s in sagas {
            tr data-id=(s.id) data-status=(s.status) {
                td.mono { a href=(format!("/ui/sagas/{}", s.id)) { (s.id) } }
                td { (badge(s.status)) @if s.pause_requested { " " span.muted { "pausing" } } }
                td { (s.kind) }
                td { @if let Some(t) = &s.template { (t) " v" (s.template_version.unwrap_or(0)) } }
                td { "step " (s.current_step_index.min(s.steps_total.saturating_sub(1)) + 1) " of " (s.steps_total) }
                td { (s.deployment_id.as_deref().unwrap_or("")) }
                td title=(s.created_at) { (age(s.created_at, now)) }
            }
        }
    }
}

async fn sagas_page(
    State(state): State<AppState>,
    v: Viewer,
    Query(q): Query<SagaQuery>,
) -> Response {
    let (sagas, next) = match saga_list(&state, &q).await {
        Ok(found) => found,
        Err(e) => return error_page(Some(&v), StatusCode::BAD_REQUEST, "Sagas", &e),
    };
    let statuses = SagaStatus::ALL;
    let next_link = next.map(|c| {
        let mut url = url::Url::parse("http://x/ui/").expect("a URL");
        url.query_pairs_mut()
            .append_pair("status", q.status.as_deref().unwrap_or(""))
            .append_pair("kind", q.kind.as_deref().unwrap_or(""))
            .append_pair("deployment_id", q.deployment_id.as_deref().unwrap_or(""))
            .append_pair("cursor", &c);
        format!("/ui/?{}", url.query().unwrap_or(""))
    });
    page(
        Some(&v),
        "/ui/",
        "Sagas",
        html! {
            h1 { "Sagas" }
            form.filters method="get" action="/ui/" {
                select name="status" {
                    option value="" { "any status" }
                    @for s in statuses {
                        option value=(s) selected[q.status.as_deref() == Some(s.as_str())] { (s) }
                    }
                }
                input name="kind" placeholder="kind" value=(q.kind.as_deref().unwrap_or(""));
                input name="deployment_id" placeholder="deployment" value=(q.deployment_id.as_deref().unwrap_or(""));
                button type="submit" { "Filter" }
            }
            table {
                thead { tr { th { "Saga" } th { "Status" } th { "Kind" } th { "Template" } th { "Progress" } th { "Deployment" } th { "Age" } } }
                tbody #saga-rows { (saga_rows(&sagas)) }
            }
            @if let Some(link) = next_link {
                p.pager { a href=(link) { "Older sagas →" } }
            }
        },
    )
    .into_response()
}

async fn saga_rows_fragment(
    State(state): State<AppState>,
    _viewer: Viewer,
    Query(q): Query<SagaQuery>,
) -> Response {
    match saga_list(&state, &q).await {
        Ok((sagas, _)) => saga_rows(&sagas).into_response(),
        Err(e) => (StatusCode::BAD_REQUEST, e).into_response(),
    }
}

// ---- one saga

/// Lane height and the plot's geometry, in SVG units.
const LANE: f64 = 26.0;
const LABEL: f64 = 150.0;
const WIDTH: f64 = 900.0;

/// The timeline: one lane per step, a bar per call (execute or
/// compensate) on a shared time axis, coloured by outcome; a dashed line
/// for each wait between a `poll-after` and the next call; a pale bar for
/// a call in flight.
fn timeline(detail: &SagaDetail, now: Timestamp) -> Markup {
    let rows: Vec<&StepResult> = detail.steps.iter().collect();
    let start = detail.saga.created_at.millis();
    let mut end = start + 1;
    for r in &rows {
        for c in &r.calls {
            end = end.max(c.finished_at.millis());
        }
        if let Some(w) = r.waiting_until {
            end = end.max(w.millis());
        }
        if matches!(
            r.status,
            crate::model::StepStatus::Running | crate::model::StepStatus::Compensating
        ) && !detail.saga.status.is_final()
        {
            end = end.max(now.millis());
        }
    }
    if detail.saga.status.is_final() {
        end = end.max(detail.saga.updated_at.millis());
    }
    let span = (end - start).max(1) as f64;
    let x = |t: i64| LABEL + (t - start) as f64 / span * (WIDTH - LABEL - 10.0);
    let lanes = detail.saga.plan.len();
    let height = LANE * lanes as f64 + 24.0;
    let bar = |c: &CallRecord, lane: usize| {
        let x0 = x(c.started_at.millis());
        let w = (x(c.finished_at.millis()) - x0).max(3.0);
        let phase = c.phase.as_str();
        let ms = c.started_at.until(c.finished_at).as_millis();
        html! {
            rect class=(format!("bar {phase} {}", c.outcome)) x=(format!("{x0:.1}")) y=(format!("{:.1}", lane as f64 * LANE + 5.0))
                width=(format!("{w:.1}")) height=(format!("{:.1}", LANE - 10.0)) rx="2"
                data-step=(lane) data-phase=(phase) data-outcome=(c.outcome) {
                title { (phase) " attempt " (c.attempt) ": " (c.outcome) " (" (ms) " ms)" }
            }
        }
    };
    let ticks = 5;
    html! {
        div.timeline {
            svg #timeline xmlns="http://www.w3.org/2000/svg" width=(WIDTH) height=(height) viewBox=(format!("0 0 {WIDTH} {height}")) role="img" aria-label="timeline of the saga's calls" {
                @for (i, spec) in detail.saga.plan.iter().enumerate() {
                    text.lane-label x="4" y=(format!("{:.1}", i as f64 * LANE + LANE / 2.0 + 4.0)) { (i) " " (spec.name) }
                    line x1=(LABEL) x2=(WIDTH - 10.0) y1=(format!("{:.1}", (i + 1) as f64 * LANE)) y2=(format!("{:.1}", (i + 1) as f64 * LANE)) stroke="#eef0f3" {}
                }
                @for r in &rows {
                    @let lane = r.index as usize;
                    @for c in &r.calls { (bar(c, lane)) }
                    @for pair in r.calls.windows(2) {
                        @if pair[0].outcome == "poll" {
                            line.wait x1=(format!("{:.1}", x(pair[0].finished_at.millis()))) x2=(format!("{:.1}", x(pair[1].started_at.millis())))
                                y1=(format!("{:.1}", lane as f64 * LANE + LANE / 2.0)) y2=(format!("{:.1}", lane as f64 * LANE + LANE / 2.0)) {}
                        }
                    }
                    @if let (Some(last), Some(until)) = (r.calls.last(), r.waiting_until) {
                        line.wait x1=(format!("{:.1}", x(last.finished_at.millis()))) x2=(format!("{:.1}", x(until.millis())))
                            y1=(format!("{:.1}", lane as f64 * LANE + LANE / 2.0)) y2=(format!("{:.1}", lane as f64 * LANE + LANE / 2.0)) {}
                    }
                    @if r.waiting_until.is_none() && !detail.saga.status.is_final()
                        && matches!(r.status, crate::model::StepStatus::Running | crate::model::StepStatus::Compensating) {
                        @let from = r.calls.last().map_or(r.started_at.unwrap_or(now), |c| c.finished_at);
                        rect class="bar running" x=(format!("{:.1}", x(from.millis()))) y=(format!("{:.1}", lane as f64 * LANE + 5.0))
                            width=(format!("{:.1}", (x(now.millis()) - x(from.millis())).max(3.0))) height=(format!("{:.1}", LANE - 10.0)) rx="2" {
                            title { "in flight" }
                        }
                    }
                }
                @for t in 0..=ticks {
                    @let at = start + (span as i64) * t / ticks;
                    text.axis x=(format!("{:.1}", x(at))) y=(format!("{:.1}", height - 6.0))
                        text-anchor=(if t == ticks { "end" } else if t == 0 { "start" } else { "middle" }) {
                        "+" (format_ms(at - start))
                    }
                }
            }
            div.legend {
                span { i.key-ok {} "execute" }
                span { i.key-comp {} "compensate" }
                span { i.key-retry {} "retryable failure" }
                span { i.key-fatal {} "failed" }
                span { i.key-poll {} "poll / wait" }
                span { i.key-run {} "in flight" }
            }
        }
    }
}

fn format_ms(ms: i64) -> String {
    if ms < 1000 {
        format!("{ms} ms")
    } else if ms < 120_000 {
        format!("{:.1} s", ms as f64 / 1000.0)
    } else {
        format!("{:.1} min", ms as f64 / 60_000.0)
    }
}

/// The live part of a saga's page: header facts, actions, timeline,
/// ledger, resources, context.
fn saga_live(detail: &SagaDetail, v: &Viewer) -> Markup {
    let s = &detail.saga;
    let now = Timestamp::now();
    let can_act = v.caller.role >= Role::Operator;
    // What the runner would do (one rule for both): a button only for an
    // action that changes the saga.
    let offers =
        |kind: ActionKind| crate::runner::permits(s, kind) == crate::runner::Permit::Change;
    let id = s.id;
    let post = |action: &str| format!("/v1/sagas/{id}/{action}");
    html! {
        dl.facts {
            dt { "Status" } dd #saga-status data-status=(s.status) { (badge(s.status))
                @if s.cancel_requested && !s.status.is_final() { " " span.muted { "cancelling" } }
                @if s.pause_requested { " " span.muted { "pausing" } } }
            dt { "Kind" } dd { (s.kind) }
            @if let Some(t) = &s.template { dt { "Template" } dd { (t) " version " (s.template_version.unwrap_or(0)) } }
            dt { "Started" } dd #started-by { (s.created_at) " by "
                @match started_by(s) {
                    Some(label) => { strong { (label) } @if let Some(t) = s.triggered_by.as_deref().filter(|t| *t != label) { " (for " (t) ", as the request said)" } }
                    None => { (s.triggered_by.as_deref().unwrap_or("—")) @if s.triggered_by.is_some() { " " span.muted { "(as the request said)" } } }
                } }
            @if let Some(d) = &s.deployment_id { dt { "Deployment" } dd { (d) } }
            @if let Some(e) = &s.error { dt { "Error" } dd.error #saga-error { (e.message) } }
        }
        @if can_act {
            div.actions {
                @if offers(ActionKind::Cancel) { button.danger data-post=(post("cancel")) data-confirm="Cancel this saga and compensate what it did?" { "Cancel" } }
                @if offers(ActionKind::Pause) { button.secondary data-post=(post("pause")) { "Pause" } }
                @if offers(ActionKind::Resume) { button data-post=(post("resume")) { "Resume" } }
                @if offers(ActionKind::Retry) { button data-post=(post("retry")) { "Retry compensation" } }
            }
        }
        h2 { "Timeline" }
        (timeline(detail, now))
        h2 { "Steps" }
        table #ledger {
            thead { tr { th { "#" } th { "Step" } th { "Status" } th { "Attempts" } th { "Error" } th { "Output and logs" } } }
            tbody {
                @for (i, spec) in s.plan.iter().enumerate() {
                    @let row = detail.steps.iter().find(|r| r.index as usize == i);
                    tr data-step=(i) data-status=(row.map_or("not_started".to_string(), |r| r.status.to_string())) {
                        td { (i) }
                        td { (spec.name) br; span.mono.muted { (&spec.plugin.as_str()[..15]) "…" } }
                        td { @if let Some(r) = row { (badge(r.status)) } @else { span.muted { "not started" } } }
                        td { @if let Some(r) = row { (r.attempts) @if r.compensate_attempts > 0 { " + " (r.compensate_attempts) " undo" } @if r.polls > 0 { br; span.muted { (r.polls) " polls" } } } }
                        td.error { @if let Some(r) = row { (r.error.as_deref().unwrap_or("")) } }
                        td {
                            @if let Some(r) = row {
                                @if let Some(out) = &r.output { pre.mono { (json(out)) } }
                                @if let Some(bytes) = r.output_omitted {
                                    a href=(format!("/v1/sagas/{id}/steps/{i}/output")) { "output (" (crate::plugin::format_bytes(bytes)) ")" }
                                }
                                @if !r.logs.is_empty() {
                                    details { summary { (r.logs.len()) " log lines" }
                                        pre.mono { @for l in &r.logs { (l.phase) "#" (l.attempt) " " (l.level) " " (l.message) "\n" } } }
                                }
                                @if can_act && r.status == crate::model::StepStatus::CompensationFailed && offers(ActionKind::Resolve) {
                                    button.secondary data-post=(format!("/v1/sagas/{id}/steps/{i}/resolve")) data-confirm="Mark this step undone by hand?" { "Resolve by hand" }
                                }
                            }
                        }
                    }
                }
            }
        }
        @if !detail.resources.is_empty() {
            h2 { "Resources" }
            table { thead { tr { th { "Step" } th { "Kind" } th { "External id" } th { "Version" } th { "Spec" } } }
                tbody { @for r in &detail.resources { tr { td { (r.step_index) } td { (r.kind) } td.mono { (r.external_id) } td { (r.spec_version) } td { pre.mono { (json(&r.spec)) } } } } } }
        }
        h2 { "Inputs" } pre.mono { (json(&s.inputs)) }
        h2 { "Context" } pre.mono #context { (json(&s.context)) }
        @if !s.actions.is_empty() {
            h2 { "Actions" }
            table { tbody { @for a in &s.actions { tr { td { (a.at) } td { (a.action) @if let Some(i) = a.step_index { " step " (i) } } td { (a.actor.as_deref().unwrap_or("—")) } td { (a.note.as_deref().unwrap_or("")) } } } } }
        }
    }
}

async fn load_saga(state: &AppState, v: &Viewer, id: &str) -> Result<SagaDetail, Response> {
    let not_found = || {
        error_page(
            Some(v),
            StatusCode::NOT_FOUND,
            "No such saga",
            &format!(
                "There is no saga `{}`.",
                id.chars().take(64).collect::<String>()
            ),
        )
    };
    let Ok(saga_id) = id.parse() else {
        return Err(not_found());
    };
    match state
        .store
        .saga_shown(saga_id, state.server.shown_output_bytes)
        .await
    {
        Ok(Some(detail)) => Ok(detail),
        Ok(None) => Err(not_found()),
        Err(e) => Err(error_page(
            Some(v),
            StatusCode::SERVICE_UNAVAILABLE,
            "Unavailable",
            &format!("reading the saga failed: {e}"),
        )),
    }
}

async fn saga_page(State(state): State<AppState>, v: Viewer, Path(id): Path<String>) -> Response {
    let detail = match load_saga(&state, &v, &id).await {
        Ok(d) => d,
        Err(page) => return page,
    };
    page(
        Some(&v),
        "/ui/",
        &format!("Saga {}", detail.saga.kind),
        html! {
            h1 { "Saga " span.mono { (detail.saga.id) } }
            div #saga-live data-id=(detail.saga.id) { (saga_live(&detail, &v)) }
        },
    )
    .into_response()
}

async fn saga_fragment(
    State(state): State<AppState>,
    v: Viewer,
    Path(id): Path<String>,
) -> Response {
    match load_saga(&state, &v, &id).await {
        Ok(detail) => saga_live(&detail, &v).into_response(),
        Err(page) => page,
    }
}

// ---- plugins, templates, secrets, resources

fn plugin_rows(plugins: &[PluginInfo]) -> Markup {
    html! {
        @for p in plugins {
            tr data-name=(p.name) {
                td { (p.name) @if p.current { " " span.badge { "current" } } }
                td.mono { (p.digest) }
                td { (p.contract) }
                td { (crate::plugin::format_bytes(p.size)) }
                td { (p.created_at) }
            }
        }
    }
}

async fn plugins_page(State(state): State<AppState>, v: Viewer) -> Response {
    let plugins = state.store.list_plugins().await.unwrap_or_default();
    let mut grants = Vec::new();
    let mut names: Vec<&str> = plugins
        .iter()
        .filter(|p| p.current)
        .map(|p| p.name.as_str())
        .collect();
    names.dedup();
    for name in names {
        if let Ok(Some(g)) = state.store.grants(name).await {
            grants.push((name.to_string(), g));
        }
    }
    page(
        Some(&v),
        "/ui/plugins",
        "Plugins",
        html! {
            h1 { "Plugins" }
            @if v.caller.role >= Role::Admin {
                label #drop.drop for="upload-file" {
                    "Drop a component here, or choose one: "
                    input #upload-file type="file" accept=".wasm,application/wasm";
                }
            }
            table {
                thead { tr { th { "Name" } th { "Digest" } th { "Contract" } th { "Size" } th { "Uploaded" } } }
                tbody #plugin-rows { (plugin_rows(&plugins)) }
            }
            h2 { "Grants" }
            @if grants.is_empty() { p.muted { "No plugin is granted anything: none can reach the network or a secret." } }
            @else {
                table { thead { tr { th { "Plugin" } th { "HTTP origins" } th { "Secrets" } } }
                    tbody { @for (name, g) in &grants { tr { td { (name) } td.mono { (json(&g.http)) } td.mono { (json(&g.secrets)) } } } } }
            }
        },
    )
    .into_response()
}

async fn plugin_rows_fragment(State(state): State<AppState>, _viewer: Viewer) -> Response {
    plugin_rows(&state.store.list_plugins().await.unwrap_or_default()).into_response()
}

async fn templates_page(State(state): State<AppState>, v: Viewer) -> Response {
    let templates = state.store.list_templates().await.unwrap_or_default();
    page(
        Some(&v),
        "/ui/templates",
        "Templates",
        html! {
            h1 { "Templates" }
            @if templates.is_empty() { p.muted { "No templates. Put one with `wasaga template put NAME --file F`." } }
            table { thead { tr { th { "Name" } th { "Version" } th { "Description" } th { "Steps" } th { "Inputs schema" } } }
                tbody { @for t in &templates { tr {
                    td { a href=(format!("/ui/?kind={}", t.name)) { (t.name) } }
                    td { (t.version) }
                    td { (t.description.as_deref().unwrap_or("")) }
                    td.mono { (json(&t.steps)) }
                    td { @if let Some(s) = &t.inputs_schema { details { summary { "schema" } pre.mono { (json(s)) } } } }
                } } } }
        },
    )
    .into_response()
}

async fn secrets_page(State(state): State<AppState>, v: Viewer) -> Response {
    if let Err(refused) = v.caller.require(Role::Admin) {
        return error_page(Some(&v), StatusCode::FORBIDDEN, "Secrets", &refused.message);
    }
    let secrets = state.store.list_secrets().await.unwrap_or_default();
    page(
        Some(&v),
        "/ui/secrets",
        "Secrets",
        html! {
            h1 { "Secrets" }
            p.muted { "Names and the origins each may be sent to. Values are never shown; set them with `wasaga secret set`." }
            table { thead { tr { th { "Name" } th { "Origins" } th { "Updated" } } }
                tbody { @for s in &secrets { tr { td { (s.name) } td.mono { (json(&s.origins)) } td { (s.updated_at) } } } } }
        },
    )
    .into_response()
}

#[derive(Debug, Default, Deserialize)]
struct ResourceQuery {
    kind: Option<String>,
    state: Option<String>,
}

async fn resources_page(
    State(state): State<AppState>,
    v: Viewer,
    Query(q): Query<ResourceQuery>,
) -> Response {
    let filter = ResourceFilter {
        kind: q.kind.clone().filter(|k| !k.is_empty()),
        state: q
            .state
            .as_deref()
            .and_then(|s| crate::model::ResourceState::parse(s).ok()),
        limit: 1000,
        ..ResourceFilter::default()
    };
    let resources: Vec<Resource> = state
        .store
        .list_resources(&filter)
        .await
        .unwrap_or_default();
    page(
        Some(&v),
        "/ui/resources",
        "Resources",
        html! {
            h1 { "Resources" }
            p.muted { "What sagas provisioned, one row per kind and external id, as last recorded." }
            table { thead { tr { th { "Kind" } th { "External id" } th { "State" } th { "Version" } th { "Saga" } th { "Deployment" } th { "Spec" } } }
                tbody { @for r in &resources { tr {
                    td { (r.kind) } td.mono { (r.external_id) } td { (badge(r.state)) } td { (r.spec_version) }
                    td.mono { a href=(format!("/ui/sagas/{}", r.saga_id)) { (r.saga_id) } " step " (r.step_index) }
                    td { (r.deployment_id.as_deref().unwrap_or("")) }
                    td { pre.mono { (json(&r.spec)) } }
                } } } }
        },
    )
    .into_response()
}

// ---- login

async fn login_page(State(state): State<AppState>) -> Response {
    if state.server.tokens.is_none() {
        return Redirect::to("/ui/").into_response();
    }
    login_form(None).into_response()
}

fn login_form(message: Option<&str>) -> Markup {
    page(
        None,
        "",
        "Log in",
        html! {
            form.login method="post" action="/ui/login" {
                h1 { "Log in to wasaga" }
                @if let Some(m) = message { p.error { (m) } }
                label for="token" { "Token" }
                input #token type="password" name="token" autocomplete="current-password" autofocus;
                button type="submit" { "Log in" }
                p.muted { "The token is kept in an HttpOnly cookie for this site only." }
            }
        },
    )
}

#[derive(Deserialize)]
struct LoginForm {
    token: String,
}

/// Logs in: a valid token makes a session (see `api::session`). The gate
/// already refused a login posted by another site's page; failed tokens
/// count against the address.
async fn login(
    State(state): State<AppState>,
    Extension(Peer(peer)): Extension<Peer>,
    Form(form): Form<LoginForm>,
) -> Response {
    let Some(tokens) = state.server.tokens.as_ref() else {
        return Redirect::to("/ui/").into_response();
    };
    if let Some(left) = state.throttle.refused_for(peer) {
        return Throttle::refusal(left);
    }
    let token = form.token.trim();
    let Some(caller) = tokens.check(token) else {
        state.throttle.failed(peer);
        return (
            StatusCode::UNAUTHORIZED,
            login_form(Some("That token is not valid.")),
        )
            .into_response();
    };
    let cookie = match session::create(
        state.store.as_ref(),
        &caller,
        token,
        state.server.session_ttl,
    )
    .await
    {
        Ok((_, cookie)) => cookie,
        Err(e) => {
            return error_page(
                None,
                StatusCode::SERVICE_UNAVAILABLE,
                "Unavailable",
                &format!("storing the session failed: {e}"),
            );
        }
    };
    let mut response = Redirect::to("/ui/").into_response();
    if let Ok(value) = HeaderValue::from_str(&cookie) {
        response.headers_mut().insert(header::SET_COOKIE, value);
    }
    response
}

#[derive(Deserialize)]
struct LogoutForm {
    #[serde(default)]
    csrf: String,
}

/// Logs out: revokes the session on every host, and clears the cookie.
async fn logout(
    State(state): State<AppState>,
    headers: HeaderMap,
    Form(form): Form<LogoutForm>,
) -> Response {
    let id = session::session_id(&headers);
    if !id
        .as_deref()
        .is_some_and(|id| session::csrf_ok(id, &form.csrf))
    {
        return error_page(
            None,
            StatusCode::FORBIDDEN,
            "Stale form",
            "This page is out of date (you logged out, or logged in again). Reload it and try again.",
        );
    }
    if let Some(id) = id
        && let Err(e) = session::revoke(state.store.as_ref(), &id).await
    {
        return error_page(
            None,
            StatusCode::SERVICE_UNAVAILABLE,
            "Unavailable",
            &format!("revoking the session failed: {e}; you are still logged in"),
        );
    }
    let mut response = Redirect::to("/ui/login").into_response();
    response.headers_mut().insert(
        header::SET_COOKIE,
        HeaderValue::from_static(session::CLEAR_COOKIE),
    );
    response
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::SagaRun;

    fn page_of(saga: SagaRun) -> String {
        let viewer = Viewer {
            caller: Caller::anonymous(),
            csrf: String::new(),
            signed_in: false,
        };
        let detail = SagaDetail {
            saga,
            steps: Vec::new(),
            resources: Vec::new(),
        };
        saga_live(&detail, &viewer).into_string()
    }

    /// The buttons are the runner's rule: a saga being cancelled offers no
    /// pause (the runner would refuse it), a pause not yet in effect can be
    /// withdrawn, an ended saga offers nothing.
    #[test]
    fn the_buttons_are_what_the_runner_allows() {
        let mut saga = SagaRun::pending(
            "k",
            Vec::new(),
            serde_json::json!({}),
            None,
            None,
            Timestamp(0),
        );
        saga.status = SagaStatus::Running;
        let page = page_of(saga.clone());
        assert!(
            page.contains(">Pause<") && page.contains(">Cancel<"),
            "{page}"
        );
        assert!(!page.contains(">Resume<"));

        saga.cancel_requested = true;
        let page = page_of(saga.clone());
        assert!(
            !page.contains(">Pause<"),
            "no pause while cancelling: {page}"
        );
        assert!(
            !page.contains(">Cancel<"),
            "the cancel is already asked for"
        );

        saga.cancel_requested = false;
        saga.pause_requested = true;
        let page = page_of(saga.clone());
        assert!(
            page.contains(">Resume<") && !page.contains(">Pause<"),
            "{page}"
        );

        saga.pause_requested = false;
        saga.status = SagaStatus::Completed;
        let page = page_of(saga);
        for button in [">Pause<", ">Cancel<", ">Resume<", ">Retry compensation<"] {
            assert!(!page.contains(button), "{button} on an ended saga");
        }
    }
}
