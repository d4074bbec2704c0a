//! `wasaga secret`: set, list and delete secrets. A value is read from
//! stdin (a pipe, or a prompt that does not echo on a terminal), never from
//! an argument, where it would end up in the shell's history and in every
//! process listing.

use super::{CliError, ServerArgs, client, print_json};
use clap::Subcommand;
use std::io::{IsTerminal, Read};
use std::process::ExitCode;
use zeroize::Zeroizing;

#[derive(Debug, Subcommand)]
pub(super) enum SecretCommand {
    /// Set a secret; its value is read from stdin.
    Set {
        name: String,
        /// An origin the value may be sent to (https://api.example.com). Repeat.
        #[arg(long = "origin", required = true)]
        origins: Vec<String>,
        #[command(flatten)]
        server: ServerArgs,
    },
    /// List secrets: names, origins and times, never values.
    List {
        #[command(flatten)]
        server: ServerArgs,
    },
    /// Delete a secret.
    Delete {
        name: String,
        #[command(flatten)]
        server: ServerArgs,
    },
}

/// The value: a prompt without echo on a terminal, else all of stdin
/// (one trailing newline removed).
fn read_value(name: &str) -> Result<Zeroizing<String>, CliError> {
    if std::io::stdin().is_terminal() {
        let value = rpassword::prompt_password(format!("value of secret {name}: "))?;
        return Ok(Zeroizing::new(value));
    }
    let mut value = Zeroizing::new(String::new());
    std::io::stdin().read_to_string(&mut value)?;
    let trimmed = value
        .strip_suffix('\n')
        .map(|v| v.strip_suffix('\r').unwrap_or(v))
        .unwrap_or(&value);
    if trimmed.is_empty() {
        return Err(CliError::Usage(
            "no value on stdin: pipe the value in (`wasaga secret set NAME --origin ORIGIN < file`)"
                .into(),
        ));
    }
    Ok(Zeroizing::new(trimmed.to_string()))
}

pub(super) async fn run(command: SecretCommand) -> Result<ExitCode, CliError> {
    match command {
        SecretCommand::Set {
            name,
            origins,
            server,
        } => {
            let value = read_value(&name)?;
            client(&server).put_secret(&name, &value, &origins).await?;
            if !server.json {
                println!("secret {name} set (origins: {})", origins.join(", "));
            }
        }
        SecretCommand::List { server } => {
            let list = client(&server).secrets().await?;
            if server.json {
                print_json(&list);
            } else {
                println!("{:<32} {:<24}  ORIGINS", "NAME", "UPDATED");
                for s in list.secrets {
                    let origins: Vec<String> = s.origins.iter().map(ToString::to_string).collect();
                    println!(
                        "{:<32} {:<24}  {}",
                        s.name,
                        s.updated_at,
                        origins.join(", ")
                    );
                }
            }
        }
        SecretCommand::Delete { name, server } => {
            client(&server).delete_secret(&name).await?;
            if !server.json {
                println!("secret {name} deleted");
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}
