//! `wasaga migrate`: brings a database's schema to this binary's migrations
//! and exits. For deployments that migrate as a step of their own (a
//! Kubernetes job that runs before the hosts roll) and start their hosts
//! with `--migrations require`, so that no host changes the schema under
//! another. `--check` changes nothing and exits 1 when the schema is not
//! current, for scripts.

use super::CliError;
use crate::config::{Migrations, StoreConfig};
use crate::server::ServeOptions;
use crate::store::{self, StoreError};
use clap::Args;
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Debug, Args)]
pub(super) struct MigrateArgs {
    /// Where the embedded database lives (as for `serve`).
    #[arg(long, env = "WASAGA_DATA_DIR", default_value = "./wasaga-data")]
    data_dir: PathBuf,
    /// sqlite://PATH or postgres://USER@HOST/DB (as for `serve`).
    #[arg(long, env = "WASAGA_DATABASE_URL", hide_env_values = true)]
    database: Option<String>,
    /// Change nothing: exit 0 when the schema is current, 1 when not.
    #[arg(long)]
    check: bool,
}

pub(super) async fn run(args: MigrateArgs) -> Result<ExitCode, CliError> {
    let url = ServeOptions {
        database_url: args.database.clone(),
        ..ServeOptions::new(&args.data_dir)
    }
    .database_url();
    let settings = StoreConfig {
        migrations: if args.check {
            Migrations::Require
        } else {
            Migrations::Apply
        },
        ..StoreConfig::default()
    };
    let store = match store::open_with(&url, &settings).await {
        Ok(store) => store,
        Err(StoreError::SchemaNotCurrent(why)) if args.check => {
            println!("schema: {why}");
            return Ok(ExitCode::from(1));
        }
        Err(e) => return Err(CliError::Usage(e.to_string())),
    };
    let schema = store
        .schema()
        .await
        .map_err(|e| CliError::Usage(e.to_string()))?;
    println!("schema: {}", schema.describe());
    Ok(if schema.is_current() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}
