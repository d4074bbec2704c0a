//! The console's catalog pages: plugins (with the upload form), templates,
//! secrets (names and origins, never values), the resource ledger, budgets
//! and schedules.

use super::*;

pub(super) fn plugin_rows(plugins: &[PluginInfo]) -> Markup {
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

pub(super) async fn plugins_page(State(state): State<AppState>, v: Viewer) -> Response {
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

pub(super) async fn plugin_rows_fragment(
    State(state): State<AppState>,
    _viewer: Viewer,
) -> Response {
    plugin_rows(&state.store.list_plugins().await.unwrap_or_default()).into_response()
}

pub(super) async fn templates_page(State(state): State<AppState>, v: Viewer) -> Response {
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

pub(super) async fn secrets_page(State(state): State<AppState>, v: Viewer) -> Response {
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
pub(super) struct ResourceQuery {
    kind: Option<String>,
    state: Option<String>,
    drift: Option<String>,
}

pub(super) async fn resources_page(
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
        drift: q
            .drift
            .as_deref()
            .and_then(|d| crate::model::Drift::parse(d).ok()),
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
            p.muted { "What sagas provisioned, one row per kind and external id, as last recorded. "
                "Drift is what the last scan (" code { "POST /v1/resources/scan" } ") found: "
                a href="/ui/resources?drift=changed" { "changed" } ", "
                a href="/ui/resources?drift=missing" { "missing" } "." }
            table { thead { tr { th { "Kind" } th { "External id" } th { "State" } th { "Drift" } th { "Version" } th { "Saga" } th { "Deployment" } th { "Spec" } } }
                tbody { @for r in &resources {
                    @let drifted = matches!(r.drift, Some(crate::model::Drift::Changed | crate::model::Drift::Missing));
                    tr class=[drifted.then_some("drifted")] {
                    td { (r.kind) } td.mono { (r.external_id) } td { (badge(r.state)) }
                    td {
                        @if let Some(d) = r.drift { (badge(d)) }
                        @if let Some(diff) = &r.diff { pre.mono { (json(diff)) } }
                    }
                    td { (r.spec_version) }
                    td.mono { a href=(format!("/ui/sagas/{}", r.saga_id)) { (r.saga_id) } " step " (r.step_index) }
                    td { (r.deployment_id.as_deref().unwrap_or("")) }
                    td { pre.mono { (json(&r.spec)) } }
                } } } }
        },
    )
    .into_response()
}

pub(super) async fn budgets_page(State(state): State<AppState>, v: Viewer) -> Response {
    let budgets = state.store.list_budgets().await.unwrap_or_default();
    page(
        Some(&v),
        "/ui/budgets",
        "Budgets",
        html! {
            h1 { "Provider budgets" }
            p.muted { "The rate every host keeps to a provider's origins; a 429 or Retry-After pauses a budget for every host. Put one with `PUT /v1/budgets/NAME`." }
            @if budgets.is_empty() { p.muted { "No budgets: steps' requests go out unmetered." } }
            table #budgets { thead { tr { th { "Name" } th { "Origins" } th { "Rate" } th { "Burst" } th { "Tokens now" } th { "Paused until" } th { "Waiting here" } } }
                tbody { @for (b, tat, now) in &budgets { tr {
                    td { (b.name) }
                    td.mono { (json(&b.origins)) }
                    td { (b.rate) " per " (b.per) }
                    td { (b.burst) }
                    td { (b.tokens(*tat, *now)) }
                    td { @match b.paused_until.filter(|t| t.millis() * 1000 > *now) { Some(t) => { (t) }, None => { "" } } }
                    td { (state.budgets.waiting(&b.name)) }
                } } } }
        },
    )
    .into_response()
}

/// Fires each schedule row shows.
const SCHEDULE_FIRES_LISTED: usize = 5;

pub(super) async fn schedules_page(State(state): State<AppState>, v: Viewer) -> Response {
    let schedules = state.store.list_schedules().await.unwrap_or_default();
    let mut rows = Vec::new();
    for stored in schedules {
        let fires = state
            .store
            .schedule_fires(&stored.schedule.name, SCHEDULE_FIRES_LISTED)
            .await
            .unwrap_or_default();
        rows.push((stored, fires));
    }
    page(
        Some(&v),
        "/ui/schedules",
        "Schedules",
        html! {
            h1 { "Schedules" }
            p.muted { "Templates fired once per nominal time by whichever host claims it. Put one with `PUT /v1/schedules/NAME` or `wasaga schedule put`." }
            @if rows.is_empty() { p.muted { "No schedules." } }
            table #schedules { thead { tr { th { "Name" } th { "Template" } th { "When" } th { "Overlap" } th { "Next run" } th { "Latest fires" } } }
                tbody { @for (stored, fires) in &rows { tr data-name=(stored.schedule.name) {
                    td { (stored.schedule.name) @if stored.schedule.paused { " " span.badge { "paused" } } }
                    td { (stored.schedule.spec.template) }
                    td.mono { @match (&stored.schedule.spec.cron, &stored.schedule.spec.every) {
                        (Some(cron), _) => { (cron) " " (stored.schedule.spec.timezone) },
                        (_, Some(every)) => { "every " (every) },
                        _ => {},
                    } }
                    td { (stored.schedule.spec.overlap) }
                    td { @match stored.next_fire_at { Some(at) => { (at) }, None => { "" } } }
                    td { ul.fires { @for f in fires { li {
                        (f.nominal_at) " "
                        span.badge { (f.outcome.map_or("firing", |o| o.as_str())) }
                        @if let Some(id) = f.saga_id { " " a.mono href=(format!("/ui/sagas/{id}")) { (id) } }
                        @if let Some(reason) = &f.reason { " " span.muted { (reason) } }
                        @if f.manual { " " span.muted { "(by hand)" } }
                    } } } }
                } } } }
        },
    )
    .into_response()
}

// ---- login
