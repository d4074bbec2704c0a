//! The `wasaga` command line: `serve`, `migrate`, and client subcommands that talk to a
//! server over HTTP API v1 (`plugin push|list|show|delete|grant|grants`, and
//! `plugin new|run|test`, which need no server,
//! `saga start|list|show|cancel|pause|resume|retry|resolve|redrive|watch`, `secret
//! set|list|delete`, `template put|list|show|delete`, `resource list`). One
//! module per family of commands.
//!
//! Every flag of `serve` has an environment variable, and its default comes
//! from `config`, so `--help`, README and the code agree. Client errors print
//! the server's message and exit 1; `saga watch` and `saga start --wait`
//! exit 0 when the saga completes, 3 when it is rolled back and 4 when it
//! failed (needs a human), so scripts can branch on the outcome.

mod client;
mod messages;
mod migrate;
mod plugins;
mod resources;
mod sagas;
mod schedules;
mod secrets;
mod serve;
mod templates;

pub use client::{Client, ClientError, EventStream};
pub use sagas::{EXIT_FAILED, EXIT_ROLLED_BACK};

use crate::server::ServeError;
use clap::{Args, Parser, Subcommand};
use messages::MessageCommand;
use migrate::MigrateArgs;
use plugins::PluginCommand;
use resources::ResourceCommand;
use sagas::SagaCommand;
use schedules::ScheduleCommand;
use secrets::SecretCommand;
use serve::ServeArgs;
use std::process::ExitCode;
use templates::TemplateCommand;

#[derive(Debug, Parser)]
#[command(
    name = "wasaga",
    version,
    about = "A WebAssembly saga step host",
    propagate_version = true
)]
pub struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run a host: HTTP API, runner and plugin runtime.
    Serve(Box<ServeArgs>),
    /// Bring the database's schema to this binary's migrations and exit
    /// (for hosts started with `--migrations require`).
    Migrate(MigrateArgs),
    /// Upload, list, show, delete and grant step plugins; run and test one
    /// locally.
    #[command(subcommand)]
    Plugin(PluginCommand),
    /// Start, list, show, cancel, pause, resume, retry, resolve, redrive and watch sagas.
    #[command(subcommand)]
    Saga(SagaCommand),
    /// Set, list and delete secrets (values are never shown).
    #[command(subcommand)]
    Secret(SecretCommand),
    /// Put, list, show and delete saga templates.
    #[command(subcommand)]
    Template(TemplateCommand),
    /// Put, list, show, trigger, pause, resume and delete schedules.
    #[command(subcommand)]
    Schedule(ScheduleCommand),
    /// List the desired-state resource ledger.
    #[command(subcommand)]
    Resource(ResourceCommand),
    /// Send a message to the wait with its correlation key (or keep it for
    /// one that opens later).
    #[command(subcommand)]
    Message(MessageCommand),
}

/// Where the server is, for the client subcommands.
#[derive(Debug, Args, Clone)]
pub(crate) struct ServerArgs {
    /// The server's base URL.
    #[arg(long, env = "WASAGA_SERVER", default_value = "http://127.0.0.1:8080")]
    pub(crate) server: String,
    /// Bearer token, when the server needs one.
    #[arg(long, env = "WASAGA_TOKEN", hide_env_values = true)]
    pub(crate) token: Option<String>,
    /// Print the server's JSON instead of text.
    #[arg(long)]
    pub(crate) json: bool,
}

#[derive(Debug, thiserror::Error)]
pub(crate) enum CliError {
    #[error("{0}")]
    Client(#[from] ClientError),
    #[error("{0}")]
    Serve(#[from] ServeError),
    #[error("{0}")]
    Usage(String),
    #[error("{0}")]
    Io(#[from] std::io::Error),
}

/// The binary's entry point.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli) -> Result<ExitCode, CliError> {
    match cli.command {
        Command::Serve(args) => serve::run(*args).await,
        Command::Migrate(args) => migrate::run(args).await,
        Command::Plugin(command) => plugins::run(command).await,
        Command::Saga(command) => sagas::run(command).await,
        Command::Secret(command) => secrets::run(command).await,
        Command::Template(command) => templates::run(command).await,
        Command::Schedule(command) => schedules::run(command).await,
        Command::Resource(command) => resources::run(command).await,
        Command::Message(command) => messages::run(command).await,
    }
}

pub(crate) fn client(args: &ServerArgs) -> Client {
    Client::new(&args.server, args.token.clone())
}

/// A JSON document from a file (`-`: stdin), for the commands that put one.
pub(crate) fn read_json(file: &std::path::Path) -> Result<serde_json::Value, CliError> {
    let text = if file.as_os_str() == "-" {
        std::io::read_to_string(std::io::stdin())?
    } else {
        std::fs::read_to_string(file)
            .map_err(|e| CliError::Usage(format!("reading {}: {e}", file.display())))?
    };
    serde_json::from_str(&text)
        .map_err(|e| CliError::Usage(format!("{} is not JSON: {e}", file.display())))
}

pub(crate) fn print_json(value: &impl serde::Serialize) {
    println!(
        "{}",
        serde_json::to_string_pretty(value).expect("serializable")
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_command_line_is_well_formed() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
    }
}
