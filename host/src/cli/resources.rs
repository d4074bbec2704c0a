//! `wasaga resource list`: the desired-state ledger, what sagas provisioned
//! and whether it is still meant to exist, following the server's pages;
//! `wasaga resource scan`: a drift scan of it (docs/recovery.md).

use super::{CliError, ServerArgs, client, print_json};
use clap::Subcommand;
use std::process::ExitCode;

#[derive(Debug, Subcommand)]
pub(super) enum ResourceCommand {
    /// List resources, by kind and external id.
    List {
        #[arg(long)]
        kind: Option<String>,
        #[arg(long)]
        deployment_id: Option<String>,
        /// Only what this saga recorded last.
        #[arg(long)]
        saga: Option<String>,
        /// present or removed.
        #[arg(long)]
        state: Option<String>,
        /// What the last drift scan found: none, changed, missing or unknown.
        #[arg(long)]
        drift: Option<String>,
        /// At most this many (all pages are followed up to it).
        #[arg(long, default_value_t = 100)]
        limit: u32,
        #[command(flatten)]
        server: ServerArgs,
    },
    /// Scan present resources for drift: each one's plugin observes it.
    Scan {
        #[arg(long)]
        kind: Option<String>,
        /// Only what this saga recorded last.
        #[arg(long)]
        saga: Option<String>,
        #[command(flatten)]
        server: ServerArgs,
    },
}

pub(super) async fn run(command: ResourceCommand) -> Result<ExitCode, CliError> {
    let (kind, deployment_id, saga, state, drift, limit, server) = match command {
        ResourceCommand::List {
            kind,
            deployment_id,
            saga,
            state,
            drift,
            limit,
            server,
        } => (kind, deployment_id, saga, state, drift, limit, server),
        ResourceCommand::Scan { kind, saga, server } => return scan(kind, saga, server).await,
    };
    let client = client(&server);
    let mut filters: Vec<(&str, String)> = [
        ("kind", kind),
        ("deployment_id", deployment_id),
        ("saga_id", saga),
        ("state", state),
        ("drift", drift),
    ]
    .into_iter()
    .filter_map(|(k, v)| v.map(|v| (k, v)))
    .collect();
    filters.push(("limit", limit.clamp(1, 1000).to_string()));
    let mut resources = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let mut query = filters.clone();
        if let Some(c) = &cursor {
            query.push(("cursor", c.clone()));
        }
        let page = client.resources(&query).await?;
        resources.extend(page.resources);
        cursor = page.next_cursor;
        if cursor.is_none() || resources.len() >= limit as usize {
            break;
        }
    }
    resources.truncate(limit as usize);
    if server.json {
        print_json(&resources);
    } else if resources.is_empty() {
        println!("no resources");
    } else {
        for r in &resources {
            let drift = r.drift.map(|d| format!(" drift {d}")).unwrap_or_default();
            println!(
                "{:<12} {:<40} v{:<3} {:<8} saga {} step {}{drift}",
                r.kind, r.external_id, r.spec_version, r.state, r.saga_id, r.step_index
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// `wasaga resource scan`: prints the counts, then each drifted resource.
async fn scan(
    kind: Option<String>,
    saga: Option<String>,
    server: ServerArgs,
) -> Result<ExitCode, CliError> {
    let mut body = serde_json::Map::new();
    if let Some(kind) = kind {
        body.insert("kind".into(), kind.into());
    }
    if let Some(saga) = saga {
        body.insert("saga_id".into(), saga.into());
    }
    let report = client(&server)
        .scan_resources(&serde_json::Value::Object(body))
        .await?;
    if server.json {
        print_json(&report);
        return Ok(ExitCode::SUCCESS);
    }
    println!(
        "scanned {} resources in {} ms ({} observe calls): {} as recorded, {} changed, {} missing, {} unknown",
        report.scanned,
        report.took_ms,
        report.observe_calls,
        report.none,
        report.changed,
        report.missing,
        report.unknown
    );
    for r in &report.drifted {
        let drift = r.drift.map(|d| d.to_string()).unwrap_or_default();
        let diff = r.diff.as_ref().map(|d| format!(" {d}")).unwrap_or_default();
        println!("{drift:<8} {:<12} {}{diff}", r.kind, r.external_id);
    }
    Ok(ExitCode::SUCCESS)
}
