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

    /// Keep runs and locks in a PostgreSQL database instead of --state-dir, so a run started on
    /// one host can be resumed from another (postgres://USER[:PASSWORD]@HOST:PORT/DATABASE;
    /// PGPASSWORD is read when the URL has no password)
    #[arg(
        long,
        global = true,
        env = "RUNBOOK_STORE",
        hide_env_values = true,
        value_name = "URL"
    )]
    pub store: Option<String>,

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
        /// With --dry-run --offline: the world the reads answer from, a scenario (TOML) saying
        /// per region what is primary, standby, fenced or down (runbooks/scenarios/)
        #[arg(long, value_name = "SCENARIO.toml")]
        assume: Option<PathBuf>,
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
        /// The run's id (`runbook runs` lists them), or a part only its id begins or ends with; left out, the runs that can be resumed are listed
        run_id: Option<String>,
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
        /// A parameter the run started with whose URL password the journal does not keep,
        /// given again (the same value), as name=value
        #[arg(long = "var", value_name = "NAME=VALUE")]
        vars: Vec<String>,
        /// This host's copy of the inventory the run started with, where the path the run
        /// recorded does not reach it (the run started on another host, or the file moved);
        /// compared with the journal's copy: a value fixed since is used from here on, and a
        /// finished change made with the old value stops the resume
        #[arg(long, short = 'i', value_name = "FILE")]
        inventory: Option<PathBuf>,
        /// How to report progress
        #[arg(long, value_enum, default_value = "text")]
        output: Output,
    },
    /// Give up on a paused, interrupted or failed run: recorded in its journal (who, why), its
    /// claims on locks released so other procedures may run. Nothing is undone: check the
    /// deployment first (runbooks/status.rhai)
    Abandon {
        /// The run's id (`runbook runs` lists them), or a part only its id begins or ends with; left out, the runs still open are listed
        run_id: Option<String>,
        /// Why, for the journal and the team
        #[arg(long)]
        reason: Option<String>,
    },
    /// Remove old runs that are over — finished, undone, abandoned, or failed before changing
    /// anything — from the store, for good, to keep it small. Never removed: a run still open
    /// (running, paused, interrupted, stopped part-way through its changes), and each
    /// deployment's last automatic failover, which `runbook watch` holds on until acknowledged
    Prune {
        /// Remove the runs that started longer ago than this ("90d", "12w", "1year")
        #[arg(long, value_name = "AGE")]
        older_than: String,
        /// List what would be removed, and remove nothing
        #[arg(long)]
        dry_run: bool,
    },
    /// Stop a run that is running, from any host that shares its store: it stops after its
    /// current action, as Ctrl-C where it runs would, and stays resumable
    Stop {
        /// The run's id (`runbook runs` lists them), or a part only its id begins or ends with; left out, the runs running now are listed
        run_id: Option<String>,
        /// Why, for the journal and whoever runs it
        #[arg(long)]
        reason: Option<String>,
        /// How long to wait for it to stop before returning (it stops all the same)
        #[arg(long, value_name = "DURATION", default_value = "60s", value_parser = duration)]
        wait: std::time::Duration,
    },
    /// Compile and lint runbooks without running anything
    Check {
        /// The runbooks (.rhai) to check; a folder: every .rhai file below it (hidden folders
        /// left out)
        #[arg(required = true)]
        files: Vec<PathBuf>,
        /// Also list the parameters each one declares: --var name=<type>, its default or
        /// whether it is required, and what it is for
        #[arg(long)]
        params: bool,
    },
    /// List runs: id, runbook, status, start, last step. The newest ones, and every run still
    /// open (running, paused, interrupted, or stopped part-way through its changes) whatever
    /// its age
    Runs {
        /// One JSON object a line, with the locks each run claims (the same runs as the table;
        /// the count of those not listed on stderr)
        #[arg(long)]
        json: bool,
        /// How many of the newest runs to list, besides those still open
        #[arg(long, short = 'n', value_name = "N", default_value_t = 20)]
        limit: usize,
        /// List every run the store holds
        #[arg(long, conflicts_with = "limit")]
        all: bool,
    },
    /// Show a run's journal
    Log {
        /// The run's id (`runbook runs` lists them), or a part only its id begins or ends with
        run_id: String,
        /// The journal's JSON lines as recorded
        #[arg(long)]
        json: bool,
        /// Instead of the journal, the runbook as the run started it (to put it back after an
        /// edit the journal refuses: `runbook log RUN --runbook > FILE`)
        #[arg(long, conflicts_with = "json")]
        runbook: bool,
        /// Keep printing what the run journals as it goes (from another terminal, or another
        /// host sharing the --store), until it stops: finished, failed, paused or interrupted
        #[arg(long, short = 'f', conflicts_with = "runbook")]
        follow: bool,
    },
    /// Automatic failover: observe every region each interval and, when the
    /// inventory's [watch] rules fire for the primary's region (3 failed health checks and the
    /// database unreachable, by default), run the failover runbook — once, until --ack
    Watch {
        /// The inventory (TOML); its [watch] table holds the rules
        #[arg(long, short = 'i', value_name = "FILE")]
        inventory: PathBuf,
        /// The runbook to run when the rule fires (with --var from=REGION)
        #[arg(
            long,
            value_name = "FILE",
            default_value = "runbooks/emergency-failover.rhai"
        )]
        runbook: PathBuf,
        /// Time between observations
        #[arg(long, value_name = "DURATION", default_value = "1s", value_parser = duration)]
        interval: std::time::Duration,
        /// Decide, and dry-run the runbook when the rule fires; change nothing
        #[arg(long)]
        dry_run: bool,
        /// One observation and its decision, then exit
        #[arg(long)]
        once: bool,
        /// Acknowledge the last automatic failover, so the watcher may act again after its
        /// cooldown
        #[arg(long, conflicts_with_all = ["once", "dry_run"])]
        ack: bool,
        /// How to report progress
        #[arg(long, value_enum, default_value = "text")]
        output: Output,
    },
    /// A run's report for the post-incident review: summary, results (the data-loss bound),
    /// steps with start, duration, status and retries, approvals, failures and the sessions
    /// that worked on it. Markdown by default
    Report {
        /// The run's id, or a part only its id begins or ends with (default: the run started last)
        run_id: Option<String>,
        /// Write one self-contained HTML file with a timeline instead
        #[arg(long, value_name = "FILE", conflicts_with = "json")]
        html: Option<PathBuf>,
        /// The report as JSON
        #[arg(long)]
        json: bool,
    },
    /// List every action with its fields, output, effect and idempotency
    Actions {
        /// The actions as JSON, with each input's and output's JSON schema and the fields every
        /// call takes
        #[arg(long)]
        json: bool,
        /// Instead, write Rhai definition files (*.d.rhai) for editors and the Rhai language
        /// server into DIR: every built-in and action with its documentation
        #[arg(long, value_name = "DIR", conflicts_with = "json")]
        definitions: Option<PathBuf>,
    },
    /// The local multi-region stack for drills and tests: PostgreSQL, Redis, Route53 (moto),
    /// Kubernetes (fake API servers), health endpoints and a message sink, on loopback
    #[cfg(feature = "stack")]
    Stack {
        #[command(subcommand)]
        action: StackCommand,
    },
}

#[derive(Debug, Subcommand)]
pub enum StackCommand {
    /// Start the stack and write inventory.toml and kubeconfig into its folder (--dir)
    Up {
        /// Where the servers keep their data and the stack its files
        #[arg(long, default_value = ".runbook/stack")]
        dir: PathBuf,
        /// Return once it is up, leaving it running in the background
        #[arg(long)]
        detach: bool,
        /// PostgreSQL and Redis accept TLS only, with certificates from a CA of the stack's
        /// own; the inventory's URLs name the CA (sslrootcert=, cacert=)
        #[arg(long)]
        tls: bool,
        /// Also start Prometheus scraping each region's /metrics (requests and latency that
        /// follow `stack health`); the inventory gets prometheus_url
        #[arg(long)]
        prometheus: bool,
        /// The moto_server program (default: ./.venv/bin/moto_server, then PATH)
        #[arg(long, env = "RUNBOOK_MOTO_SERVER")]
        moto_server: Option<PathBuf>,
    },
    /// Stop a stack started with `up`, every process by its own id
    Down {
        /// The stack's folder, as given to `up`
        #[arg(long, default_value = ".runbook/stack")]
        dir: PathBuf,
    },
    /// Switch a region's health endpoint: ok, fail, slow (11 s), down or flap (503 and 200 by turns)
    Health {
        /// The region, as the inventory names it (us-east-1, eu-west-1, ap-southeast-1)
        region: String,
        /// ok, fail (503), slow (answers after 11 s), down (refuses connections) or flap (503 and 200 by turns, one answer each)
        mode: String,
        /// The stack's folder, as given to `up`
        #[arg(long, default_value = ".runbook/stack")]
        dir: PathBuf,
    },
    /// Stop or start one region's PostgreSQL: stop (a fast shutdown), crash (an immediate
    /// one, as a power cut leaves it) or start (as it is: a primary comes back writable)
    Db {
        /// The region, as the inventory names it
        region: String,
        /// stop, crash or start
        #[arg(value_parser = ["stop", "crash", "start"])]
        action: String,
        /// The stack's folder, as given to `up`
        #[arg(long, default_value = ".runbook/stack")]
        dir: PathBuf,
    },
    /// Print the messages the sink received (Slack and webhooks), one JSON object a line
    Messages {
        /// The stack's folder, as given to `up`
        #[arg(long, default_value = ".runbook/stack")]
        dir: PathBuf,
    },
}

fn duration(text: &str) -> Result<std::time::Duration, String> {
    let d = humantime::parse_duration(text).map_err(|e| format!("{e} (e.g. 1s, 500ms)"))?;
    if d < std::time::Duration::from_millis(100) {
        return Err("at least 100ms".into());
    }
    Ok(d)
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    /// Every argument of every command says what it is in `--help`.
    #[test]
    fn every_argument_is_documented() {
        fn walk(cmd: &clap::Command, path: &str, missing: &mut Vec<String>) {
            for arg in cmd.get_arguments() {
                let id = arg.get_id().as_str();
                if id != "help" && id != "version" && arg.get_help().is_none() {
                    missing.push(format!("{path} {id}"));
                }
            }
            for sub in cmd.get_subcommands() {
                if sub.get_about().is_none() {
                    missing.push(format!("{path} {} (the command)", sub.get_name()));
                }
                walk(sub, &format!("{path} {}", sub.get_name()), missing);
            }
        }
        let mut missing = Vec::new();
        walk(&super::Arguments::command(), "runbook", &mut missing);
        assert!(missing.is_empty(), "without help: {missing:?}");
    }
}
