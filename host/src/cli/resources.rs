//! `wasaga resource list`: the desired-state ledger, what sagas provisioned
//! and whether it is still meant to exist, following the server's pages.

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
        /// At most this many (all pages are followed up to it).
        #[arg(long, default_value_t = 100)]
        limit: u32,
        #[command(flatten)]
        server: ServerArgs,
    },
}

pub(super) async fn run(command: ResourceCommand) -> Result<ExitCode, CliError> {
    let ResourceCommand::List {
        kind,
        deployment_id,
        saga,
        state,
        limit,
        server,
    } = command;
    let client = client(&server);
    let mut filters: Vec<(&str, String)> = [
        ("kind", kind),
        ("deployment_id", deployment_id),
        ("saga_id", saga),
        ("state", state),
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
            println!(
                "{:<12} {:<40} v{:<3} {:<8} saga {} step {}",
                r.kind, r.external_id, r.spec_version, r.state, r.saga_id, r.step_index
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}
