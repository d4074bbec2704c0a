//! `wasaga saga`: start, list, show, cancel, pause, resume, retry,
//! resolve, redrive and watch sagas.

use super::{CliError, ServerArgs, client, print_json};
use crate::cli::Client;
use crate::model::{RedrivePlan, SagaDetail, SagaRun, SagaStatus, StepStatus};
use clap::Subcommand;
use std::collections::BTreeMap;
use std::process::ExitCode;
use std::time::Duration;

/// Exit codes of `saga watch` and `saga start --wait`.
pub const EXIT_ROLLED_BACK: u8 = 3;
pub const EXIT_FAILED: u8 = 4;

#[derive(Debug, Subcommand)]
pub(super) enum SagaCommand {
    /// Start a saga, from its steps or from a template.
    Start {
        /// What the saga does, e.g. provision (with a template, defaults to
        /// its name).
        #[arg(long)]
        kind: Option<String>,
        /// A step: a plugin name or digest. Repeat, in order.
        #[arg(
            long = "step",
            required_unless_present = "template",
            conflicts_with = "template"
        )]
        steps: Vec<String>,
        /// Start from this template's latest version instead of steps.
        #[arg(long, conflicts_with_all = ["max_attempts", "timeout", "max_wait"])]
        template: Option<String>,
        /// The saga's inputs, a JSON object.
        #[arg(long, default_value = "{}")]
        inputs: String,
        /// Attempts per step (default: the server's).
        #[arg(long)]
        max_attempts: Option<u32>,
        /// Deadline of each step call, e.g. 30s.
        #[arg(long, value_parser = humantime::parse_duration)]
        timeout: Option<Duration>,
        /// The longest each step may wait by asking to be called again
        /// (`poll-after`), in total, e.g. 10m (default: the server's).
        #[arg(long, value_parser = humantime::parse_duration)]
        max_wait: Option<Duration>,
        #[arg(long)]
        deployment_id: Option<String>,
        #[arg(long)]
        triggered_by: Option<String>,
        /// Makes retrying this command safe: the same key and request give the same saga.
        #[arg(long)]
        idempotency_key: Option<String>,
        /// Watch it until it ends.
        #[arg(long)]
        wait: bool,
        #[command(flatten)]
        server: ServerArgs,
    },
    /// List sagas, newest first.
    List {
        #[arg(long)]
        status: Option<String>,
        #[arg(long)]
        kind: Option<String>,
        #[arg(long)]
        deployment_id: Option<String>,
        /// Only sagas started from this template.
        #[arg(long)]
        template: Option<String>,
        #[arg(long, default_value_t = 50)]
        limit: u32,
        #[command(flatten)]
        server: ServerArgs,
    },
    /// Show a saga with its ledger and resources.
    Show {
        id: String,
        #[command(flatten)]
        server: ServerArgs,
    },
    /// Cancel a saga: interrupt its step in flight and compensate.
    Cancel {
        id: String,
        #[command(flatten)]
        server: ServerArgs,
    },
    /// Pause a saga between steps.
    Pause {
        id: String,
        #[command(flatten)]
        server: ServerArgs,
    },
    /// Resume a paused saga.
    Resume {
        id: String,
        #[command(flatten)]
        server: ServerArgs,
    },
    /// Compensate a failed saga's failed compensations again, with fresh
    /// attempts.
    Retry {
        id: String,
        #[command(flatten)]
        server: ServerArgs,
    },
    /// Mark a step whose compensation failed as undone by hand (the saga
    /// ends rolled_back when no such step is left), or say whether an
    /// in_doubt step's call happened (--resolution).
    Resolve {
        id: String,
        /// The step's index.
        #[arg(long)]
        step: u32,
        /// What was done by hand, kept on the saga's actions.
        #[arg(long)]
        note: Option<String>,
        /// For an in_doubt saga: applied or not_applied.
        #[arg(long)]
        resolution: Option<String>,
        /// With applied: the step's output (a JSON object).
        #[arg(long)]
        output: Option<String>,
        #[command(flatten)]
        server: ServerArgs,
    },
    /// Drive a failed or rolled_back saga forward again (docs/recovery.md):
    /// one saga by ID, or every one the filter flags find.
    Redrive {
        /// The saga; leave out to redrive every saga the filter finds.
        id: Option<String>,
        /// resume (from the first step not in effect), rerun or rewind.
        #[arg(long, default_value = "resume")]
        mode: String,
        /// Where rerun and rewind start: a step's index or name.
        #[arg(long = "from")]
        from_step: Option<String>,
        /// pinned (the digests it started with) or current (the newest uploads).
        #[arg(long, default_value = "pinned")]
        plugins: String,
        /// A JSON merge patch on the saga's inputs.
        #[arg(long)]
        inputs_patch: Option<String>,
        /// Kept on the saga's actions.
        #[arg(long)]
        note: Option<String>,
        /// Show the plan; change nothing.
        #[arg(long)]
        dry_run: bool,
        /// Filter (without ID): sagas of this kind.
        #[arg(long)]
        kind: Option<String>,
        /// Filter: sagas started from this template.
        #[arg(long)]
        template: Option<String>,
        /// Filter: failed or rolled_back (both when not given).
        #[arg(long)]
        status: Option<String>,
        /// Filter: sagas whose error message contains this.
        #[arg(long)]
        error_contains: Option<String>,
        /// Filter: started at or after (RFC 3339).
        #[arg(long)]
        started_after: Option<String>,
        /// Filter: started before (RFC 3339).
        #[arg(long)]
        started_before: Option<String>,
        #[command(flatten)]
        server: ServerArgs,
    },
    /// Approve (complete) a saga's open wait.
    Approve {
        id: String,
        /// The wait's name.
        wait: String,
        /// The payload (JSON); `{}` when not given.
        #[arg(long)]
        payload: Option<String>,
        /// Kept on the saga's actions.
        #[arg(long)]
        note: Option<String>,
        #[command(flatten)]
        server: ServerArgs,
    },
    /// Reject a saga's open wait: it fails and the saga compensates.
    Reject {
        id: String,
        /// The wait's name.
        wait: String,
        #[arg(long)]
        note: Option<String>,
        #[command(flatten)]
        server: ServerArgs,
    },
    /// Follow a saga's progress until it ends.
    Watch {
        id: String,
        #[command(flatten)]
        server: ServerArgs,
    },
}

pub(super) async fn run(command: SagaCommand) -> Result<ExitCode, CliError> {
    match command {
        SagaCommand::Start {
            kind,
            steps,
            template,
            inputs,
            max_attempts,
            timeout,
            max_wait,
            deployment_id,
            triggered_by,
            idempotency_key,
            wait,
            server,
        } => {
            let inputs: serde_json::Value = serde_json::from_str(&inputs)
                .map_err(|e| CliError::Usage(format!("--inputs is not JSON: {e}")))?;
            let steps: Vec<serde_json::Value> = steps
                .into_iter()
                .map(|plugin| {
                    if max_attempts.is_none() && timeout.is_none() && max_wait.is_none() {
                        serde_json::Value::String(plugin)
                    } else {
                        let mut step = serde_json::json!({ "plugin": plugin });
                        if let Some(n) = max_attempts {
                            step["max_attempts"] = n.into();
                        }
                        if let Some(t) = timeout {
                            step["timeout_ms"] = (t.as_millis() as u64).into();
                        }
                        if let Some(t) = max_wait {
                            step["max_wait_ms"] = (t.as_millis() as u64).into();
                        }
                        step
                    }
                })
                .collect();
            let mut body = match template {
                Some(template) => serde_json::json!({ "template": template, "inputs": inputs }),
                None => serde_json::json!({ "steps": steps, "inputs": inputs }),
            };
            match kind {
                Some(kind) => body["kind"] = kind.into(),
                None if body.get("steps").is_some() => {
                    return Err(CliError::Usage(
                        "--kind is needed when the steps are given (--step)".into(),
                    ));
                }
                None => {}
            }
            if let Some(d) = deployment_id {
                body["deployment_id"] = d.into();
            }
            if let Some(t) = triggered_by {
                body["triggered_by"] = t.into();
            }
            let client = client(&server);
            let (saga, created) = client.start_saga(&body, idempotency_key.as_deref()).await?;
            if server.json && !wait {
                print_json(&saga);
            } else if !server.json {
                let verb = if created {
                    "started"
                } else {
                    "already started"
                };
                println!(
                    "{verb} saga {} ({}, {} steps)",
                    saga.id,
                    saga.kind,
                    saga.plan.len()
                );
            }
            if wait {
                return watch(&client, &saga.id.to_string(), server.json).await;
            }
        }
        SagaCommand::List {
            status,
            kind,
            deployment_id,
            template,
            limit,
            server,
        } => {
            let mut query = vec![("limit", limit.to_string())];
            for (key, value) in [
                ("status", status),
                ("kind", kind),
                ("deployment_id", deployment_id),
                ("template", template),
            ] {
                if let Some(value) = value {
                    query.push((key, value));
                }
            }
            let sagas = client(&server).sagas(&query).await?;
            if server.json {
                print_json(&sagas);
            } else {
                println!(
                    "{:<36}  {:<16} {:<13} {:>5}  CREATED",
                    "ID", "KIND", "STATUS", "STEP"
                );
                for s in sagas.sagas {
                    println!(
                        "{:<36}  {:<16} {:<13} {:>5}  {}",
                        s.id,
                        s.kind,
                        s.status,
                        format!(
                            "{}/{}",
                            s.current_step_index.min(s.steps_total),
                            s.steps_total
                        ),
                        s.created_at
                    );
                }
            }
        }
        SagaCommand::Show { id, server } => {
            let detail = client(&server).saga(&id).await?;
            if server.json {
                print_json(&detail);
            } else {
                print_saga(&detail);
            }
        }
        SagaCommand::Cancel { id, server } => {
            let saga = client(&server).saga_action(&id, "cancel").await?;
            if server.json {
                print_json(&saga);
            } else {
                println!(
                    "cancel requested for saga {} (status {})",
                    saga.id, saga.status
                );
            }
        }
        SagaCommand::Pause { id, server } => {
            let saga = client(&server).saga_action(&id, "pause").await?;
            if server.json {
                print_json(&saga);
            } else {
                println!(
                    "pause requested for saga {} (status {})",
                    saga.id, saga.status
                );
            }
        }
        SagaCommand::Resume { id, server } => {
            let saga = client(&server).saga_action(&id, "resume").await?;
            if server.json {
                print_json(&saga);
            } else {
                println!("resumed saga {} (status {})", saga.id, saga.status);
            }
        }
        SagaCommand::Retry { id, server } => {
            let saga = client(&server).saga_action(&id, "retry").await?;
            if server.json {
                print_json(&saga);
            } else {
                println!(
                    "retrying saga {}: compensating again (status {})",
                    saga.id, saga.status
                );
            }
        }
        SagaCommand::Resolve {
            id,
            step,
            note,
            resolution,
            output,
            server,
        } => {
            let output: Option<serde_json::Value> = output
                .map(|text| serde_json::from_str(&text))
                .transpose()
                .map_err(|e| CliError::Usage(format!("--output is not JSON: {e}")))?;
            let body =
                serde_json::json!({ "note": note, "resolution": resolution, "output": output });
            let saga = client(&server).resolve_step(&id, step, &body).await?;
            if server.json {
                print_json(&saga);
            } else {
                println!(
                    "resolved step {step} of saga {} (status {})",
                    saga.id, saga.status
                );
            }
        }
        SagaCommand::Redrive {
            id,
            mode,
            from_step,
            plugins,
            inputs_patch,
            note,
            dry_run,
            kind,
            template,
            status,
            error_contains,
            started_after,
            started_before,
            server,
        } => {
            let inputs_patch: Option<serde_json::Value> = inputs_patch
                .map(|text| serde_json::from_str(&text))
                .transpose()
                .map_err(|e| CliError::Usage(format!("--inputs-patch is not JSON: {e}")))?;
            // An index, or a step's name.
            let from_step = from_step.map(|step| match step.parse::<u32>() {
                Ok(index) => serde_json::json!(index),
                Err(_) => serde_json::json!(step),
            });
            let mut body = serde_json::json!({
                "mode": mode, "plugins": plugins, "note": note, "dry_run": dry_run,
                "from_step": from_step, "inputs_patch": inputs_patch,
            });
            let filter = serde_json::json!({
                "kind": kind, "template": template, "status": status,
                "error_contains": error_contains, "started_after": started_after,
                "started_before": started_before,
            });
            let filtered = filter
                .as_object()
                .is_some_and(|f| f.values().any(|v| !v.is_null()));
            match id {
                Some(_) if filtered => {
                    return Err(CliError::Usage(
                        "give a saga ID or filter flags (--kind, --status, ...), not both".into(),
                    ));
                }
                Some(id) => {
                    let plan = client(&server).redrive(&id, &body).await?;
                    if server.json {
                        print_json(&plan);
                    } else {
                        print_redrive_plan(&plan);
                    }
                }
                None if !filtered => {
                    return Err(CliError::Usage(
                        "give a saga ID, or filter flags (--kind, --template, --status, \
                         --error-contains, --started-after, --started-before) to redrive many"
                            .into(),
                    ));
                }
                None => {
                    body["filter"] = filter;
                    let answer = client(&server).redrive_many(&body).await?;
                    if server.json {
                        print_json(&answer);
                    } else {
                        let verb = if dry_run { "would redrive" } else { "redrove" };
                        println!("{verb} {} saga(s)", answer.redriven.len());
                        for plan in &answer.plans {
                            print_redrive_plan(plan);
                        }
                        for refused in &answer.refused {
                            println!("refused {}: {}", refused.saga_id, refused.error);
                        }
                    }
                }
            }
        }
        SagaCommand::Approve {
            id,
            wait,
            payload,
            note,
            server,
        } => {
            let payload: serde_json::Value = match payload {
                Some(text) => serde_json::from_str(&text)
                    .map_err(|e| CliError::Usage(format!("--payload is not JSON: {e}")))?,
                None => serde_json::json!({}),
            };
            let body = serde_json::json!({ "payload": payload, "note": note });
            let saga = client(&server)
                .answer_wait(&id, &wait, "complete", &body)
                .await?;
            if server.json {
                print_json(&saga);
            } else {
                println!(
                    "approved wait {wait} of saga {} (status {})",
                    saga.id, saga.status
                );
            }
        }
        SagaCommand::Reject {
            id,
            wait,
            note,
            server,
        } => {
            let body = serde_json::json!({ "note": note });
            let saga = client(&server)
                .answer_wait(&id, &wait, "reject", &body)
                .await?;
            if server.json {
                print_json(&saga);
            } else {
                println!(
                    "rejected wait {wait} of saga {} (status {})",
                    saga.id, saga.status
                );
            }
        }
        SagaCommand::Watch { id, server } => {
            return watch(&client(&server), &id, server.json).await;
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn print_saga(d: &SagaDetail) {
    let s = &d.saga;
    println!("saga {}  kind {}  status {}", s.id, s.kind, s.status);
    if let Some(e) = &s.error {
        println!("error: {}", e.message);
    }
    for (i, spec) in s.plan.iter().enumerate() {
        let row = d.steps.iter().find(|r| r.index as usize == i);
        let status = row.map_or("not started".to_string(), |r| r.status.to_string());
        let attempts = row.map_or(String::new(), |r| {
            let mut counts = format!("attempts {}", r.attempts);
            if r.compensate_attempts > 0 {
                counts += &format!(", compensations {}", r.compensate_attempts);
            }
            if r.polls > 0 {
                counts += &format!(", polls {}", r.polls);
            }
            match r.waiting_until {
                Some(at) => format!(" ({counts}; waiting until {at})"),
                None => format!(" ({counts})"),
            }
        });
        println!("  {i:>3}  {:<20} {status}{attempts}", spec.name);
        if let Some(error) = row.and_then(|r| r.error.as_deref()) {
            println!("       error: {error}");
        }
    }
    if !d.resources.is_empty() {
        println!("resources:");
        for r in &d.resources {
            println!(
                "  step {}  {} {}  {}",
                r.step_index, r.kind, r.external_id, r.spec
            );
        }
    }
    println!("context: {}", serde_json::Value::Object(s.context.clone()));
}

fn exit_for(status: SagaStatus) -> ExitCode {
    match status {
        SagaStatus::RolledBack => ExitCode::from(EXIT_ROLLED_BACK),
        SagaStatus::Failed => ExitCode::from(EXIT_FAILED),
        _ => ExitCode::SUCCESS,
    }
}

/// Polls the saga and prints each change until it ends.
/// What `saga watch` has printed so far.
#[derive(Default)]
struct Progress {
    seen: BTreeMap<u32, (StepStatus, u32, u32, u32)>,
    last_status: Option<SagaStatus>,
}

impl Progress {
    /// Prints what changed since the last call.
    fn show(&mut self, detail: &SagaDetail) {
        let saga: &SagaRun = &detail.saga;
        if self.last_status != Some(saga.status) {
            println!("saga {} {}", saga.id, saga.status);
            self.last_status = Some(saga.status);
        }
        for row in &detail.steps {
            let now = (row.status, row.attempts, row.compensate_attempts, row.polls);
            if self.seen.get(&row.index) == Some(&now) {
                continue;
            }
            self.seen.insert(row.index, now);
            let attempt = match row.status {
                StepStatus::Compensating
                | StepStatus::Compensated
                | StepStatus::CompensationFailed => row.compensate_attempts,
                _ => row.attempts,
            };
            let error = row
                .error
                .as_deref()
                .map(|e| format!(": {e}"))
                .unwrap_or_default();
            let waiting = row
                .waiting_until
                .map(|at| format!(", waiting until {at} (poll {})", row.polls))
                .unwrap_or_default();
            println!(
                "  step {} {} {} (attempt {attempt}){waiting}{error}",
                row.index, row.name, row.status
            );
        }
    }
}

/// Follows a saga until it ends: from its event stream, or by polling
/// when the server has none (an older server) or the stream breaks off.
async fn watch(client: &Client, id: &str, json: bool) -> Result<ExitCode, CliError> {
    let mut progress = Progress::default();
    if let Some(detail) = follow_events(client, id, json, &mut progress).await
        && detail.saga.status.is_final()
    {
        // The full saga (resources included) as it ended.
        let detail = client.saga(id).await.unwrap_or(detail);
        return Ok(finish(&detail, json));
    }
    let mut interval = tokio::time::interval(Duration::from_millis(200));
    loop {
        interval.tick().await;
        let detail = client.saga(id).await?;
        if !json {
            progress.show(&detail);
        }
        if detail.saga.status.is_final() {
            return Ok(finish(&detail, json));
        }
    }
}

/// Follows the saga's event stream while it lasts; the saga as last seen,
/// or `None` when there is no stream to follow.
async fn follow_events(
    client: &Client,
    id: &str,
    json: bool,
    progress: &mut Progress,
) -> Option<SagaDetail> {
    let mut events = client.saga_events(id).await.ok()?;
    let mut detail: Option<SagaDetail> = None;
    while let Some((name, data)) = events.next().await {
        match (name.as_str(), detail.as_mut()) {
            ("snapshot", _) => detail = serde_json::from_str(&data).ok(),
            ("step", Some(d)) => {
                let Ok(row) = serde_json::from_str::<crate::model::StepResult>(&data) else {
                    continue;
                };
                match d.steps.iter_mut().find(|r| r.index == row.index) {
                    Some(old) => *old = row,
                    None => {
                        d.steps.push(row);
                        d.steps.sort_by_key(|r| r.index);
                    }
                }
            }
            ("saga", Some(d)) => {
                if let Ok(saga) = serde_json::from_str::<SagaRun>(&data) {
                    d.saga = saga;
                }
            }
            // "error" (this client fell behind) or an unknown event: poll.
            _ => return detail,
        }
        if let Some(d) = &detail {
            if !json {
                progress.show(d);
            }
            if d.saga.status.is_final() {
                break;
            }
        }
    }
    detail
}

/// Prints how the saga ended; the exit code says how.
fn finish(detail: &SagaDetail, json: bool) -> ExitCode {
    let saga = &detail.saga;
    if json {
        print_json(detail);
    } else if let Some(error) = &saga.error {
        println!("{}: {}", saga.status, error.message);
    } else {
        println!(
            "{}: context {}",
            saga.status,
            serde_json::Value::Object(saga.context.clone())
        );
    }
    exit_for(saga.status)
}

/// A redrive's plan, a line per step.
fn print_redrive_plan(plan: &RedrivePlan) {
    let done = if plan.dry_run {
        "would redrive"
    } else {
        "redriven:"
    };
    println!(
        "{done} saga {} ({}, from step {})",
        plan.saga_id, plan.mode, plan.from_step
    );
    for step in &plan.steps {
        let status = step.status.map_or("-".to_string(), |s| s.to_string());
        let changed = if step.plugin_changed {
            " (new plugin)"
        } else {
            ""
        };
        println!(
            "  {:>3}  {:<24} {:<20} {}  {}{changed}",
            step.index, step.name, status, step.does, step.plugin
        );
    }
}
