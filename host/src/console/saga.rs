//! The console's saga pages: the list (filters, pages, live rows) and a
//! saga's own page (its facts, the actions the runner allows, the
//! timeline, the ledger, resources and context), refreshed live.

use super::*;
use crate::model::SlotState;

#[derive(Debug, Default, Deserialize)]
pub(super) struct SagaQuery {
    status: Option<String>,
    kind: Option<String>,
    deployment_id: Option<String>,
    cursor: Option<String>,
}

pub(super) const PAGE: u32 = 50;

pub(super) async fn saga_list(
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

pub(super) fn saga_rows(sagas: &[SagaSummary]) -> Markup {
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

pub(super) async fn sagas_page(
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

pub(super) async fn saga_rows_fragment(
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
pub(super) const LANE: f64 = 26.0;
pub(super) const LABEL: f64 = 150.0;
pub(super) const WIDTH: f64 = 900.0;

/// The timeline: one lane per step, a bar per call (execute or
/// compensate) on a shared time axis, coloured by outcome; a dashed line
/// for each wait between a `poll-after` and the next call; a pale bar for
/// a call in flight.
pub(super) fn timeline(detail: &SagaDetail, now: Timestamp) -> Markup {
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

pub(super) fn format_ms(ms: i64) -> String {
    if ms < 1000 {
        format!("{ms} ms")
    } else if ms < 120_000 {
        format!("{:.1} s", ms as f64 / 1000.0)
    } else {
        format!("{:.1} min", ms as f64 / 60_000.0)
    }
}

/// An open wait's answer form, for the roles that may answer it (an
/// operator, or one of its approvers): a field per top-level property of
/// its schema (or one JSON field), a note, Approve and Reject; and its
/// capability URL when the host has one.
fn wait_form(
    name: &str,
    wait: &crate::model::WaitSpec,
    row: &crate::model::StepResult,
    v: &Viewer,
    base: &str,
) -> Markup {
    let may = v.caller.role >= Role::Operator
        || v.caller
            .label
            .as_ref()
            .is_some_and(|l| wait.approvers.contains(l));
    let properties: Vec<(String, String)> = wait
        .schema
        .as_ref()
        .and_then(|s| s.get("properties"))
        .and_then(|p| p.as_object())
        .map(|p| {
            p.iter()
                .map(|(k, v)| {
                    let kind = v.get("type").and_then(|t| t.as_str()).unwrap_or("json");
                    (k.clone(), kind.to_string())
                })
                .collect()
        })
        .unwrap_or_default();
    html! {
        div.wait {
            p.muted { "Waits until " (row.waiting_until.map(|t| t.to_string()).unwrap_or_default())
                @if wait.approvals > 1 { " for " (wait.approvals) " approvals" }
                @if !wait.approvers.is_empty() { " by " (wait.approvers.join(", ")) " or an operator" } }
            @if let Some(url) = &row.callback_url {
                @if v.caller.role >= Role::Operator {
                    p { "Callback URL: " code.callback-url { (url) } }
                }
            }
            @if may {
                form.wait-answer data-complete=(format!("{base}/complete")) data-reject=(format!("{base}/reject")) data-wait=(name) {
                    @if properties.is_empty() {
                        label { "Payload (JSON) " textarea name="payload" data-type="json" rows="3" { "{}" } }
                    } @else {
                        @for (field, kind) in &properties {
                            label { (field) " "
                                @if kind == "boolean" { input type="checkbox" name=(field) data-type="boolean"; }
                                @else if kind == "number" || kind == "integer" { input type="number" name=(field) data-type="number"; }
                                @else if kind == "string" { input type="text" name=(field) data-type="string"; }
                                @else { input type="text" name=(field) data-type="json" placeholder="JSON"; }
                            }
                        }
                    }
                    label { "Note " input type="text" name="note"; }
                    button type="button" data-answer="complete" { "Approve" }
                    " "
                    button.danger type="button" data-answer="reject" data-confirm="Reject this wait? The saga compensates." { "Reject" }
                }
            }
        }
    }
}

/// The live part of a saga's page: header facts, actions, timeline,
/// ledger, resources, context.
pub(super) fn saga_live(detail: &SagaDetail, v: &Viewer) -> Markup {
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
                @if offers(ActionKind::Redrive) { button data-post=(post("redrive")) data-confirm="Drive this saga forward again, from the first step whose work is not in effect (docs/recovery.md)?" { "Redrive" } }
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
                                @if let Some(wait) = &spec.wait {
                                    @if r.status == crate::model::StepStatus::Waiting && r.received.is_none() && !s.cancel_requested {
                                        (wait_form(&spec.name, wait, r, v, &post(&format!("waits/{}", spec.name))))
                                    }
                                }
                                // A wait the step opened itself (`wait-for`).
                                @if let Some(opened) = &r.wait_for {
                                    @if r.status == crate::model::StepStatus::Waiting && r.received.is_none() && !s.cancel_requested {
                                        (wait_form(&opened.name, &opened.spec(), r, v, &post(&format!("waits/{}", opened.name))))
                                    }
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
        @if !detail.slots.is_empty() {
            h2 { "Concurrency keys" }
            table #slots { thead { tr { th { "Key" } th { "Limit" } th { "State" } th { "Since" } } }
                tbody { @for slot in &detail.slots { tr {
                    td.mono { (slot.key) }
                    td { (slot.limit) }
                    td.{ "slot-" (slot.state) } { (match slot.state {
                        SlotState::Holding => "holds it",
                        SlotState::Queued => "waits for it",
                        SlotState::Released => "gave it up",
                    }) }
                    td { (slot.since) }
                } } } }
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

pub(super) async fn load_saga(
    state: &AppState,
    v: &Viewer,
    id: &str,
) -> Result<SagaDetail, Response> {
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
        Ok(Some(mut detail)) => {
            if let Some(urls) = &state.callbacks {
                urls.fill(&detail.saga, &mut detail.steps);
            }
            Ok(detail)
        }
        Ok(None) => Err(not_found()),
        Err(e) => Err(error_page(
            Some(v),
            StatusCode::SERVICE_UNAVAILABLE,
            "Unavailable",
            &format!("reading the saga failed: {e}"),
        )),
    }
}

pub(super) async fn saga_page(
    State(state): State<AppState>,
    v: Viewer,
    Path(id): Path<String>,
) -> Response {
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

pub(super) async fn saga_fragment(
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
