//! How a run reports: the engine sends [`Progress`] events to a [`Reporter`] and never prints.
//! Three reporters: a step tree on a terminal, plain lines without one, JSON lines.

mod json;
mod plain;
mod tty;

use std::sync::atomic::AtomicBool;

use serde::Serialize;

pub use json::JsonReporter;
pub use plain::PlainReporter;
pub use tty::TtyReporter;

use crate::error::Next;
use crate::journal::{RunStatus, StepPath};

/// A change a dry-run would make.
#[derive(Debug, Clone, Serialize)]
pub struct PlanEntry {
    pub step: StepPath,
    pub action: String,
    pub change: String,
    /// Offline, in an assumed world: why the call would fail (it is then not a change).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fails: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum Progress {
    RunStarted {
        run_id: Option<String>,
        runbook: String,
        dry_run: bool,
        offline: bool,
        resumed: bool,
        /// An offline dry-run's world: the scenario it assumes, or the inventory's.
        #[serde(skip_serializing_if = "Option::is_none")]
        world: Option<String>,
    },
    Warning {
        message: String,
    },
    /// `runbook watch`: what it decided after an observation (said when it changes).
    Watch {
        /// "quiet", "watching", "hold" or "failover".
        decision: String,
        message: String,
    },
    StepStarted {
        step: StepPath,
        replayed: bool,
    },
    StepFinished {
        step: StepPath,
        elapsed_ms: u64,
        replayed: bool,
    },
    StepFailed {
        step: StepPath,
        error: String,
        will_retry: bool,
        /// The same error was just printed in full (by the action that failed, or a step
        /// inside this one): a reporter for people prints it once.
        #[serde(skip_serializing_if = "std::ops::Not::not")]
        shown_above: bool,
    },
    ActionStarted {
        step: StepPath,
        seq: u32,
        action: String,
        describe: String,
        write: bool,
    },
    ActionProgress {
        step: StepPath,
        seq: u32,
        message: String,
    },
    ActionFinished {
        step: StepPath,
        seq: u32,
        action: String,
        describe: String,
        elapsed_ms: u64,
        /// "ran", "replayed" (recorded earlier; "replayed: made with the inventory as it was"
        /// when the inventory changed since), "predicted" (dry-run) or "skipped".
        how: &'static str,
    },
    ActionFailed {
        step: StepPath,
        seq: u32,
        action: String,
        error: String,
        retry_in_ms: Option<u64>,
    },
    Waiting {
        step: StepPath,
        seq: u32,
        message: String,
        until_ms: u64,
    },
    Log {
        step: StepPath,
        message: String,
    },
    Approval {
        step: StepPath,
        message: String,
        outcome: String,
    },
    Plan {
        entries: Vec<PlanEntry>,
        /// The dry-run failed: these are the changes a real run would make before it stops
        /// at the same place.
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        failed: bool,
    },
    /// Where a run's time went: inside actions or waiting as asked (timers, approvals), or in
    /// the engine (script, journal, output).
    Timing {
        wall_ms: u64,
        action_ms: u64,
        engine_ms: u64,
        /// PostgreSQL connections the actions opened, and how many times one was reused.
        pg_opened: u64,
        pg_reused: u64,
    },
    RunEnded {
        run_id: Option<String>,
        status: RunStatus,
        elapsed_ms: u64,
        message: Option<String>,
        /// Spelled by the reporter, with the command line's store options.
        #[serde(skip)]
        next: Option<Next>,
    },
}

pub trait Reporter: Send + Sync {
    fn report(&self, event: &Progress);

    /// Asks the operator on a terminal; `stop` is set by a Ctrl-C (or another signal) while
    /// it waits for the answer.
    fn ask_approval(&self, _message: &str, _stop: &AtomicBool) -> Reply {
        Reply::Nobody
    }
}

/// What an approval prompt got.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reply {
    Yes,
    No,
    /// No terminal to ask on, or it went away (end of input): the run pauses for the approval.
    Nobody,
    /// A Ctrl-C (or SIGTERM, SIGHUP) while asking: the run stops as it would between actions.
    Stopped,
}

/// Milliseconds as the operator reads them.
pub fn human_ms(ms: u64) -> String {
    if ms < 1000 {
        format!("{ms} ms")
    } else if ms < 60_000 {
        format!("{:.1} s", ms as f64 / 1000.0)
    } else {
        let s = ms / 1000;
        if s < 3600 {
            format!("{}m {:02}s", s / 60, s % 60)
        } else {
            format!("{}h {:02}m", s / 3600, (s % 3600) / 60)
        }
    }
}

/// The plan of a dry-run, grouped by step; `failed`: the dry-run failed, so these are what a
/// real run would change before it fails at the same place.
pub(crate) fn plan_text(entries: &[PlanEntry], failed: bool) -> String {
    let changes = entries.iter().filter(|e| e.fails.is_none()).count();
    let failing = entries.len() - changes;
    let title = if failed {
        "Plan up to the failure (a real run would make these changes, then fail as below)"
    } else {
        "Plan"
    };
    if entries.is_empty() {
        return format!("{title}: no changes.\n");
    }
    let mut out = format!(
        "{title}: {changes} change{}",
        if changes == 1 { "" } else { "s" }
    );
    if failing > 0 {
        out.push_str(&format!(
            ", {failing} that would fail in this world (marked !)"
        ));
    }
    out.push('\n');
    let mut last: Option<&StepPath> = None;
    for e in entries {
        if last != Some(&e.step) {
            out.push_str(&format!("  {}\n", crate::journal::show_path(&e.step)));
            last = Some(&e.step);
        }
        match &e.fails {
            None => out.push_str(&format!("    ~ {}: {}\n", e.action, e.change)),
            Some(why) => out.push_str(&format!(
                "    ! {}: {} (fails: {why})\n",
                e.action, e.change
            )),
        }
    }
    out
}

/// The last line of a run. Details of a failure or pause go to stderr with the error, so
/// they are not repeated here.
pub(crate) fn ended_text(status: RunStatus, elapsed_ms: u64, message: &Option<String>) -> String {
    let mut out = format!("run {status} after {}", human_ms(elapsed_ms));
    if !matches!(
        status,
        RunStatus::Finished | RunStatus::FinishedDryRun | RunStatus::Undone | RunStatus::Refused
    ) {
        return out;
    }
    if let Some(m) = message {
        out.push_str(&format!(": {m}"));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_plan_groups_its_changes_by_step() {
        assert_eq!(plan_text(&[], false), "Plan: no changes.\n");
        let entry = |step: &[&str], action: &str, change: &str| PlanEntry {
            step: step.iter().map(|s| s.to_string()).collect(),
            action: action.into(),
            change: change.into(),
            fails: None,
        };
        let entries = [
            entry(&["stop writes"], "k8s::scale", "scale to 0; now 3"),
            entry(&["stop writes"], "pg::fence", "fence us"),
            entry(&["promote"], "pg::promote", "promote eu"),
        ];
        assert_eq!(
            plan_text(&entries, false),
            "Plan: 3 changes\n  stop writes\n    ~ k8s::scale: scale to 0; now 3\n    ~ pg::fence: fence us\n  promote\n    ~ pg::promote: promote eu\n"
        );
        assert_eq!(
            plan_text(&entries[..1], true),
            "Plan up to the failure (a real run would make these changes, then fail as below): 1 change\n  stop writes\n    ~ k8s::scale: scale to 0; now 3\n"
        );
        assert_eq!(
            plan_text(&[], true),
            "Plan up to the failure (a real run would make these changes, then fail as below): no changes.\n"
        );
        assert_eq!(human_ms(950), "950 ms");
        assert_eq!(human_ms(1500), "1.5 s");
        assert_eq!(human_ms(125_000), "2m 05s");
    }

    #[test]
    fn every_line_of_a_log_stands_at_its_steps_depth() {
        let log = |depth: usize, message: &str| {
            plain::line_for(&Progress::Log {
                step: vec!["s".to_string(); depth],
                message: message.into(),
            })
        };
        let cases: Vec<(usize, &str, &str)> = vec![
            (0, "one", "one"),
            (1, "one", "  one"),
            (
                1,
                "REGION  DB\nus-east  primary",
                "  REGION  DB\n  us-east  primary",
            ),
            (2, "a\n\nb", "    a\n\n    b"),
            (1, "", ""),
        ];
        for (depth, message, want) in cases {
            assert_eq!(log(depth, message).as_deref(), Some(want), "{message:?}");
        }
    }
}
