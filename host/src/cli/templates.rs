//! `wasaga template`: put, list, show and delete saga templates. A
//! template is a JSON file, the body of `PUT /v1/templates/{name}`:
//! `{"description"?, "steps": [...], "inputs_schema"?}`.

use super::{CliError, ServerArgs, client, print_json, read_json};
use crate::model::Template;
use clap::Subcommand;
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Debug, Subcommand)]
pub(super) enum TemplateCommand {
    /// Put a template from a JSON file (a new version when it changed).
    Put {
        name: String,
        /// The template: {"description"?, "steps": [...], "inputs_schema"?}; `-` reads stdin.
        #[arg(long)]
        file: PathBuf,
        #[command(flatten)]
        server: ServerArgs,
    },
    /// List templates (the latest version of each).
    List {
        #[command(flatten)]
        server: ServerArgs,
    },
    /// Show a template, its latest version or one version.
    #[command(disable_version_flag = true)]
    Show {
        name: String,
        /// This version instead of the latest.
        #[arg(long)]
        version: Option<u32>,
        #[command(flatten)]
        server: ServerArgs,
    },
    /// Delete a template (sagas started from it are not affected).
    Delete {
        name: String,
        #[command(flatten)]
        server: ServerArgs,
    },
}

fn print_template(t: &Template) {
    println!("template {}  version {}", t.name, t.version);
    if let Some(description) = &t.description {
        println!("description: {description}");
    }
    for (i, step) in t.steps.iter().enumerate() {
        let plugin = step
            .as_str()
            .or_else(|| step.get("plugin").and_then(|p| p.as_str()))
            .unwrap_or("?");
        println!("  step {i}: {plugin}");
    }
    if let Some(schema) = &t.inputs_schema {
        println!("inputs schema: {schema}");
    }
}

pub(super) async fn run(command: TemplateCommand) -> Result<ExitCode, CliError> {
    match command {
        TemplateCommand::Put { name, file, server } => {
            let body = read_json(&file)?;
            let (template, created) = client(&server).put_template(&name, &body).await?;
            if server.json {
                print_json(&template);
            } else if created {
                println!(
                    "created template {} version {}",
                    template.name, template.version
                );
            } else {
                println!(
                    "template {} is at version {}",
                    template.name, template.version
                );
            }
        }
        TemplateCommand::List { server } => {
            let templates = client(&server).templates().await?;
            if server.json {
                print_json(&templates);
            } else if templates.is_empty() {
                println!("no templates");
            } else {
                for t in templates {
                    println!(
                        "{:<32} v{:<4} {} step{}  {}",
                        t.name,
                        t.version,
                        t.steps.len(),
                        if t.steps.len() == 1 { "" } else { "s" },
                        t.description.as_deref().unwrap_or("")
                    );
                }
            }
        }
        TemplateCommand::Show {
            name,
            version,
            server,
        } => {
            let template = client(&server).template(&name, version).await?;
            if server.json {
                print_json(&template);
            } else {
                print_template(&template);
            }
        }
        TemplateCommand::Delete { name, server } => {
            client(&server).delete_template(&name).await?;
            if !server.json {
                println!("deleted template {name}");
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}
