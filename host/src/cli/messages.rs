//! `wasaga message send`: a message for the wait with its correlation key,
//! delivered at once or kept for a wait that opens later.

use super::{CliError, ServerArgs, client, print_json};
use clap::Subcommand;
use std::process::ExitCode;

#[derive(Debug, Subcommand)]
pub(super) enum MessageCommand {
    /// Send a message: `wasaga message send order:42 '{"paid": true}'`.
    Send {
        /// The correlation key of the wait it is for.
        key: String,
        /// The payload (JSON).
        payload: String,
        /// Its id: sending it again under the same key delivers it once.
        #[arg(long)]
        idempotency_key: Option<String>,
        #[command(flatten)]
        server: ServerArgs,
    },
}

pub(super) async fn run(command: MessageCommand) -> Result<ExitCode, CliError> {
    let MessageCommand::Send {
        key,
        payload,
        idempotency_key,
        server,
    } = command;
    let payload: serde_json::Value = serde_json::from_str(&payload)
        .map_err(|e| CliError::Usage(format!("the payload is not JSON: {e}")))?;
    let body = serde_json::json!({ "key": key, "payload": payload });
    let posted = client(&server)
        .send_message(&body, idempotency_key.as_deref())
        .await?;
    if server.json {
        print_json(&posted);
    } else if posted["status"] == "delivered" {
        println!(
            "message {} delivered to saga {} (step {})",
            posted["id"].as_str().unwrap_or_default(),
            posted["saga_id"].as_str().unwrap_or_default(),
            posted["step_index"]
        );
    } else {
        println!(
            "message {} kept until {} for a wait on `{key}` to open",
            posted["id"].as_str().unwrap_or_default(),
            posted["expires_at"].as_str().unwrap_or_default()
        );
    }
    Ok(ExitCode::SUCCESS)
}
