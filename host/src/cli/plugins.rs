//! `wasaga plugin`: upload, list, show and delete step plugins, grant what
//! a plugin name may reach, and, with no server, start a new one (`new`),
//! call one (`run`) or check it (`test`) on this machine.

use super::{CliError, ServerArgs, client, print_json};
use crate::local::{CallReport, Local, json_object};
use crate::model::Phase;
use crate::scaffold::{Lang, new_project};
use clap::Subcommand;
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Debug, Subcommand)]
pub(super) enum PluginCommand {
    /// Upload a component (.wasm).
    Push {
        file: PathBuf,
        #[command(flatten)]
        server: ServerArgs,
    },
    /// List plugins, newest first.
    List {
        #[command(flatten)]
        server: ServerArgs,
    },
    /// Show a plugin by digest or name.
    Show {
        reference: String,
        #[command(flatten)]
        server: ServerArgs,
    },
    /// Delete a plugin (refused while an unfinished saga pins it).
    Delete {
        digest: String,
        #[command(flatten)]
        server: ServerArgs,
    },
    /// Replace what a plugin name may reach (a name may be granted before
    /// it is uploaded); with nothing given, it may reach nothing.
    Grant {
        name: String,
        /// An origin it may send requests to (https://api.example.com). Repeat.
        #[arg(long = "http")]
        http: Vec<String>,
        /// A secret it may use or read: NAME=use|read. Repeat.
        #[arg(long = "secret", value_parser = parse_secret_grant)]
        secrets: Vec<(String, String)>,
        #[command(flatten)]
        server: ServerArgs,
    },
    /// Show what a plugin name may reach.
    Grants {
        name: String,
        #[command(flatten)]
        server: ServerArgs,
    },
    /// Start a step project: the WIT, a skeleton that builds and passes
    /// `plugin test`, a build script and a README.
    New {
        /// The step's name (lowercase letters, digits and dashes).
        name: String,
        /// The language it is written in.
        #[arg(long, value_enum)]
        lang: Lang,
        /// Where to write it (default: ./NAME); refused unless empty.
        #[arg(long)]
        dir: Option<PathBuf>,
    },
    /// Call a component once, here, with the server's runtime and limits
    /// (no server; nothing granted). Exit 0 on success, 3 when the call
    /// failed retryably, 4 when it failed for good.
    Run {
        file: PathBuf,
        #[arg(long, value_enum)]
        phase: RunPhase,
        /// The saga's inputs, a JSON object.
        #[arg(long, default_value = "{}")]
        inputs: String,
        /// The context (what earlier steps output), a JSON object.
        #[arg(long, default_value = "{}")]
        context: String,
        /// The payload (JSON) the wait the step opened received (contract
        /// 0.3.0): the call after a `wait-for` is answered.
        #[arg(long)]
        received: Option<String>,
        #[arg(long, default_value_t = 1)]
        attempt: u32,
        /// Print the call's report as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Check a component for the classic saga bugs, here: one line per
    /// check; exit 0 only when all pass.
    Test {
        file: PathBuf,
        /// The inputs its calls get, a JSON object.
        #[arg(long, default_value = "{}")]
        inputs: String,
        #[arg(long)]
        json: bool,
    },
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub(super) enum RunPhase {
    Execute,
    Compensate,
}

/// `NAME=use|read`.
fn parse_secret_grant(text: &str) -> Result<(String, String), String> {
    match text.split_once('=') {
        Some((name, mode)) if !name.is_empty() && ["use", "read"].contains(&mode) => {
            Ok((name.to_string(), mode.to_string()))
        }
        _ => Err(format!("`{text}`: expected NAME=use or NAME=read")),
    }
}

pub(super) async fn run(command: PluginCommand) -> Result<ExitCode, CliError> {
    match command {
        PluginCommand::Push { file, server } => {
            let bytes = std::fs::read(&file)
                .map_err(|e| CliError::Usage(format!("reading {}: {e}", file.display())))?;
            let (info, created) = client(&server).push_plugin(bytes).await?;
            if server.json {
                print_json(&info);
            } else {
                let verb = if created { "uploaded" } else { "already there" };
                println!(
                    "{verb}: {} {} ({} bytes)",
                    info.plugin.name, info.plugin.digest, info.plugin.size
                );
            }
        }
        PluginCommand::List { server } => {
            let plugins = client(&server).plugins().await?;
            if server.json {
                print_json(&serde_json::json!({ "plugins": plugins }));
            } else {
                println!("{:<24} {:<20} {:>10}  CREATED", "NAME", "DIGEST", "SIZE");
                for p in plugins {
                    println!(
                        "{:<24} sha256:{:<13} {:>10}  {}",
                        p.name,
                        p.digest.short(),
                        p.size,
                        p.created_at
                    );
                }
            }
        }
        PluginCommand::Show { reference, server } => {
            let info = client(&server).plugin(&reference).await?;
            if server.json {
                print_json(&info);
            } else {
                println!(
                    "name:    {}\ndigest:  {}\nsize:    {} bytes\ncreated: {}",
                    info.name, info.digest, info.size, info.created_at
                );
            }
        }
        PluginCommand::Delete { digest, server } => {
            client(&server).delete_plugin(&digest).await?;
            if !server.json {
                println!("deleted {digest}");
            }
        }
        PluginCommand::Grant {
            name,
            http,
            secrets,
            server,
        } => {
            let body = serde_json::json!({
                "http": http,
                "secrets": secrets.into_iter().collect::<std::collections::BTreeMap<_, _>>(),
            });
            let grants = client(&server).put_grants(&name, &body).await?;
            if server.json {
                print_json(&grants);
            } else {
                print_grants(&name, &grants);
            }
        }
        PluginCommand::Grants { name, server } => {
            let grants = client(&server).grants(&name).await?;
            if server.json {
                print_json(&grants);
            } else {
                print_grants(&name, &grants);
            }
        }
        PluginCommand::New { name, lang, dir } => {
            let project = new_project(&name, lang, dir.as_deref())
                .map_err(|e| CliError::Usage(e.to_string()))?;
            println!(
                "created {name} ({lang}) in {}: {} files",
                project.dir.display(),
                project.files.len()
            );
            println!("next:");
            for command in &project.next {
                println!("  {command}");
            }
        }
        PluginCommand::Run {
            file,
            phase,
            inputs,
            context,
            received,
            attempt,
            json,
        } => {
            let inputs = json_object("--inputs", &inputs).map_err(CliError::Usage)?;
            let context = json_object("--context", &context).map_err(CliError::Usage)?;
            if let Some(text) = &received {
                serde_json::from_str::<serde_json::Value>(text)
                    .map_err(|e| CliError::Usage(format!("--received is not JSON: {e}")))?;
            }
            let local = Local::load(&file)
                .await
                .map_err(|e| CliError::Usage(e.to_string()))?;
            let phase = match phase {
                RunPhase::Execute => Phase::Execute,
                RunPhase::Compensate => Phase::Compensate,
            };
            let key = format!("local:0:{phase}");
            let report = local
                .call_received(phase, &inputs, &context, attempt, &key, received)
                .await;
            if json {
                print_json(&report);
            } else {
                print_report(local.name(), &report);
            }
            return Ok(ExitCode::from(match report.outcome {
                "ok" | "poll" | "wait" => 0,
                "retryable" => EXIT_RETRYABLE,
                _ => EXIT_FATAL,
            }));
        }
        PluginCommand::Test { file, inputs, json } => {
            let inputs = json_object("--inputs", &inputs).map_err(CliError::Usage)?;
            let local = Local::load(&file)
                .await
                .map_err(|e| CliError::Usage(e.to_string()))?;
            let checks = local.conformance(&inputs).await;
            let passed = checks.iter().all(|c| c.ok);
            if json {
                print_json(&checks);
            } else {
                for c in &checks {
                    let mark = if c.ok { "ok  " } else { "FAIL" };
                    println!("{mark} {}: {}", c.check, c.detail);
                }
                let failed = checks.iter().filter(|c| !c.ok).count();
                if failed == 0 {
                    println!("{}: all {} checks pass", local.name(), checks.len());
                } else {
                    println!("{}: {failed} of {} checks fail", local.name(), checks.len());
                }
            }
            return Ok(if passed {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            });
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// `plugin run`'s exit codes when the call failed.
pub const EXIT_RETRYABLE: u8 = 3;
pub const EXIT_FATAL: u8 = 4;

fn print_report(name: &str, r: &CallReport) {
    println!(
        "{name} {} (attempt {}): {} in {:.2} ms",
        r.phase, r.attempt, r.outcome, r.elapsed_ms
    );
    if let Some(out) = &r.output {
        println!(
            "output: {}",
            serde_json::to_string_pretty(out).unwrap_or_default()
        );
    }
    if let Some(ms) = r.poll_after_ms {
        println!("call again after {ms} ms");
    }
    if let Some(wait) = &r.wait_for {
        println!("opened wait `{wait}`: run it again with --received PAYLOAD");
    }
    if let Some(e) = &r.error {
        println!("error: {e}");
    }
    for l in &r.logs {
        println!("log {}: {}", l.level, l.message);
    }
    for res in &r.resources {
        println!("resource {} {}: {}", res.kind, res.external_id, res.spec);
    }
}

fn print_grants(name: &str, grants: &crate::model::Grants) {
    let http: Vec<String> = grants.http.iter().map(ToString::to_string).collect();
    println!(
        "{name} may send HTTP to: {}",
        if http.is_empty() {
            "nowhere".to_string()
        } else {
            http.join(", ")
        }
    );
    if grants.secrets.is_empty() {
        println!("{name} may use no secret");
    }
    for (secret, mode) in &grants.secrets {
        println!("{name} may {mode} secret {secret}");
    }
}
