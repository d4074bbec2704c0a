//! `wasaga plugin`: upload, list, show and delete step plugins, and grant
//! what a plugin name may reach.

use super::{CliError, ServerArgs, client, print_json};
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
    }
    Ok(ExitCode::SUCCESS)
}

fn print_grants(name: &str, grants: &crate::grants::Grants) {
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
