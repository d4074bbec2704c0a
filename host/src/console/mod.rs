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

mod catalog;
mod login;
mod saga;
use catalog::*;
use login::*;
use saga::*;

const SCRIPT: &str = include_str!("../../assets/console.js");
const STYLE: &str = include_str!("../../assets/console.css");

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
        .route("/ui/budgets", get(budgets_page))
        .route("/ui/schedules", get(schedules_page))
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
        ("/ui/budgets", "Budgets"),
        ("/ui/schedules", "Schedules"),
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
            slots: Vec::new(),
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
