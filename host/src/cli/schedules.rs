//! `wasaga schedule`: put, list, show, trigger, pause, resume and delete
//! schedules (docs/schedules.md). A schedule is a JSON file, the body of
//! `PUT /v1/schedules/{name}`: `{"template", "inputs"?, "cron" | "every",
//! "timezone"?, "overlap"?, "catchup_window"?, "paused"?}`.

use super::{CliError, ServerArgs, client, print_json, read_json};
use crate::model::{Fire, ScheduleStatus};
use clap::Subcommand;
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Debug, Subcommand)]
pub(super) enum ScheduleCommand {
    /// Create or replace a schedule from a JSON file.
    Put {
        name: String,
        /// The schedule: {"template", "inputs"?, "cron" | "every", "timezone"?, "overlap"?,
        /// "catchup_window"?, "paused"?}; `-` reads stdin.
        #[arg(long)]
        file: PathBuf,
        #[command(flatten)]
        server: ServerArgs,
    },
    /// List schedules with their next run and latest fire.
    List {
        #[command(flatten)]
        server: ServerArgs,
    },
    /// Show a schedule: its next 5 runs and its latest fires.
    Show {
        name: String,
        #[command(flatten)]
        server: ServerArgs,
    },
    /// Fire a schedule now, under its overlap policy.
    Trigger {
        name: String,
        #[command(flatten)]
        server: ServerArgs,
    },
    /// Pause a schedule: nothing fires until it is resumed.
    Pause {
        name: String,
        #[command(flatten)]
        server: ServerArgs,
    },
    /// Resume a schedule from now.
    Resume {
        name: String,
        #[command(flatten)]
        server: ServerArgs,
    },
    /// Delete a schedule (the sagas it started stay).
    Delete {
        name: String,
        #[command(flatten)]
        server: ServerArgs,
    },
}

fn calendar(s: &ScheduleStatus) -> String {
    let s = &s.schedule.spec;
    match (&s.cron, &s.every) {
        (Some(cron), _) => format!("cron `{cron}` {}", s.timezone),
        (_, Some(every)) => format!("every {every}"),
        _ => String::new(),
    }
}

fn fire_line(f: &Fire) -> String {
    format!(
        "{}  {:<9} {}{}{}",
        f.nominal_at,
        f.outcome.map_or("firing", |o| o.as_str()),
        f.saga_id.map(|id| id.to_string()).unwrap_or_default(),
        f.reason
            .as_deref()
            .map(|r| format!("  {r}"))
            .unwrap_or_default(),
        if f.manual { "  (by hand)" } else { "" },
    )
}

fn print_schedule(s: &ScheduleStatus) {
    let schedule = &s.schedule;
    println!(
        "schedule {}  template {}  {}  overlap {}  catch-up {}{}",
        schedule.name,
        schedule.spec.template,
        calendar(s),
        schedule.spec.overlap,
        schedule.spec.catchup_window,
        if schedule.paused { "  PAUSED" } else { "" }
    );
    for at in &s.next_runs {
        println!("  next {at}");
    }
    for fire in &s.fires {
        println!("  {}", fire_line(fire));
    }
}

async fn pause_or_resume(name: &str, server: &ServerArgs, action: &str) -> Result<(), CliError> {
    let schedule = client(server).schedule_action(name, action).await?;
    if server.json {
        print_json(&schedule);
    } else {
        print_schedule(&schedule);
    }
    Ok(())
}

pub(super) async fn run(command: ScheduleCommand) -> Result<ExitCode, CliError> {
    match command {
        ScheduleCommand::Put { name, file, server } => {
            let body = read_json(&file)?;
            let (schedule, created) = client(&server).put_schedule(&name, &body).await?;
            if server.json {
                print_json(&schedule);
            } else {
                println!(
                    "{} schedule {name}",
                    if created { "created" } else { "replaced" }
                );
                print_schedule(&schedule);
            }
        }
        ScheduleCommand::List { server } => {
            let schedules = client(&server).schedules().await?;
            if server.json {
                print_json(&schedules);
            } else if schedules.is_empty() {
                println!("no schedules");
            } else {
                for s in schedules {
                    println!(
                        "{:<24} {:<32} next {}  {}",
                        s.schedule.name,
                        calendar(&s),
                        s.next_runs
                            .first()
                            .map_or("(paused)".to_string(), ToString::to_string),
                        s.fires.first().map(fire_line).unwrap_or_default()
                    );
                }
            }
        }
        ScheduleCommand::Show { name, server } => {
            let schedule = client(&server).schedule(&name).await?;
            if server.json {
                print_json(&schedule);
            } else {
                print_schedule(&schedule);
            }
        }
        ScheduleCommand::Trigger { name, server } => {
            let fire = client(&server).trigger_schedule(&name).await?;
            if server.json {
                print_json(&fire);
            } else {
                println!("{}", fire_line(&fire));
            }
        }
        ScheduleCommand::Pause { name, server } => pause_or_resume(&name, &server, "pause").await?,
        ScheduleCommand::Resume { name, server } => {
            pause_or_resume(&name, &server, "resume").await?
        }
        ScheduleCommand::Delete { name, server } => {
            client(&server).delete_schedule(&name).await?;
            if !server.json {
                println!("deleted schedule {name}");
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}
