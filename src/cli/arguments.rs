//! The command line, as clap sees it. Nothing here does work.

use std::path::PathBuf;

use clap::{Parser, Subcommand, ValueEnum};

#[derive(Debug, Parser)]
#[command(
    name = "runbook",
    version,
    about = "Run operational procedures written as Rhai runbooks: typed actions, a durable journal, resume and dry-run",
    after_help = "Exit codes: 0 success, 1 run failed, 2 invalid input, 3 paused (approval or in-flight decision), 4 lock held, 130 interrupted"
)]
pub struct Arguments {
    /// Where runs and locks are kept
    #[arg(
        long,
        global = true,
        env = "RUNBOOK_STATE_DIR",
        default_value = ".runbook",
        value_name = "DIR"
    )]
    pub state_dir: PathBuf,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Output {
    Text,
    Json,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run a runbook
    Run {
        /// The runbook (.rhai)
        file: PathBuf,
        /// Follow the same branches, run the reads, predict the writes and print the plan
        #[arg(long)]
        dry_run: bool,
        /// With --dry-run: predict the reads too, contacting nothing
        #[arg(long, requires = "dry_run")]
        offline: bool,
        /// A parameter declared by the runbook's params(..), as name=value
        #[arg(long = "var", value_name = "NAME=VALUE")]
        vars: Vec<String>,
        /// The inventory (TOML) describing the targets
        #[arg(long, short = 'i', value_name = "FILE")]
        inventory: Option<PathBuf>,
        /// Approve every approve(..) up front
        #[arg(long, short = 'y')]
        yes: bool,
        /// How to report progress
        #[arg(long, value_enum, default_value = "text")]
        output: Output,
    },
    /// Continue a run that was interrupted, paused or failed
    Resume {
        run_id: String,
        /// Approve the approval the run is waiting for
        #[arg(long)]
        approve: bool,
        /// Approve every later approve(..) too
        #[arg(long, short = 'y')]
        yes: bool,
        /// Run the action that was in flight again
        #[arg(long, conflicts_with = "skip_inflight")]
        retry_inflight: bool,
        /// Treat the action that was in flight as done (after checking it took effect)
        #[arg(long)]
        skip_inflight: bool,
        /// Instead of continuing, run the undo of every finished step that declares one,
        /// latest first
        #[arg(long, conflicts_with_all = ["retry_inflight", "skip_inflight"])]
        undo: bool,
        /// How to report progress
        #[arg(long, value_enum, default_value = "text")]
        output: Output,
    },
    /// Compile and lint runbooks without running anything
    Check {
        #[arg(required = true)]
        files: Vec<PathBuf>,
    },
    /// List runs: id, runbook, status, start, last step
    Runs {
        #[arg(long)]
        json: bool,
    },
    /// Show a run's journal
    Log {
        run_id: String,
        /// The journal's JSON lines as recorded
        #[arg(long)]
        json: bool,
    },
    /// List every action with its fields, output, effect and idempotency
    Actions {
        #[arg(long)]
        json: bool,
    },
}
