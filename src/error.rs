//! Errors the binary reports, each with its exit code and one rendering.

use std::fmt;
use std::path::PathBuf;

/// Exit codes, documented in the README.
pub mod exit {
    pub const SUCCESS: i32 = 0;
    pub const RUN_FAILED: i32 = 1;
    pub const INVALID_INPUT: i32 = 2;
    pub const PAUSED: i32 = 3;
    pub const LOCKED: i32 = 4;
    pub const INTERRUPTED: i32 = 130;
}

/// A position in a script file, for messages that point at a line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScriptPos {
    pub file: String,
    pub line: usize,
    pub column: usize,
}

impl fmt::Display for ScriptPos {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.column > 0 {
            write!(f, "{}:{}:{}", self.file, self.line, self.column)
        } else {
            write!(f, "{}:{}", self.file, self.line)
        }
    }
}

/// What the operator does next. The engine says which; the command line spells it, with the
/// store options the command was given (`flag`: " --store ...", " --state-dir ...", or "").
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Next {
    /// Paused at an approval.
    Approve { run: String },
    /// A non-idempotent action was in flight: run it again, or record that it took effect.
    DecideInflight { run: String },
    /// Interrupted: continue where it stopped.
    Continue { run: String },
    /// A mistake in the runbook: fix it, then resume.
    FixRunbook { run: String },
    /// The journal could not be written mid-run (a full disk, a store that stayed away): the
    /// run stopped before anything went unrecorded; resume once it can be written again.
    JournalWritable { run: String },
    /// A failure: fix the cause, then resume (`undo`: the run was undoing); `undoable` steps
    /// declare an undo, offered as the other way.
    FixCause {
        run: String,
        undo: bool,
        undoable: usize,
    },
    /// The state directory (runs and locks) cannot be written: nothing was started.
    StateWritable { dir: String },
    /// A new run whose PostgreSQL store did not answer: nothing was started. Run it again once
    /// the store answers, or, when it cannot now, with a journal on this host.
    StoreAway,
    /// Nothing was changed: run it again, `command` (`runbook run FILE -i INVENTORY --var ..`,
    /// the store options added when rendered).
    RunAgain { command: String },
    /// A run left mid-way claims a lock: continue it (as it awaits), or give it up.
    ResumeOrAbandon { run: String, awaiting: Awaiting },
    /// A resume refused because the runbook changed (RB-REPLAY-001): put back the runbook the
    /// run started with, then resume as asked (with --approve, --undo), or give the run up.
    RestoreRunbook {
        run: String,
        approve: bool,
        undo: bool,
    },
    /// A resume refused because the inventory changed a value a finished change was made with
    /// (RB-REPLAY-001): put those `keys` back, then resume as asked, or give the run up.
    RestoreInventory {
        run: String,
        keys: Vec<String>,
        approve: bool,
        undo: bool,
    },
    /// The run is over: a new run of the runbook, `command` (`runbook run FILE -i INVENTORY`,
    /// the store options added when rendered).
    NewRun { command: String },
    /// A live process holds a lock and nothing says which run: wait for it.
    WaitForHolder,
    /// Another run's live process holds a lock: wait for it, or stop it when this cannot wait.
    WaitOrStop { run: String, pid: u32, host: String },
    /// A live process still runs this very run: wait for it, or stop it and resume again.
    StopThenResume { run: String, pid: u32, host: String },
    /// A live process still runs the run to abandon: stop it first.
    StopThenAbandon { run: String, pid: u32, host: String },
}

/// What a resume of a run left mid-way must be told, as its journal shows (see
/// `journal::awaiting`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Awaiting {
    /// Nothing: a plain resume continues it.
    #[default]
    Nothing,
    /// It paused at an approval: `--approve`.
    Approval,
    /// It paused over a non-idempotent call that was in flight: `--retry-inflight` or
    /// `--skip-inflight`.
    InflightChoice,
}

/// A word as a command line a person pastes needs it: as it is when it is plain, else in
/// single quotes.
pub fn shell_word(s: &str) -> String {
    if !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_./:@=%+,".contains(c))
    {
        s.to_string()
    } else {
        format!("'{}'", s.replace('\'', r"'\''"))
    }
}

impl Next {
    /// The command that continues run `run`, as it awaits.
    pub fn resume(run: &str, awaiting: Awaiting) -> Next {
        let run = run.to_string();
        match awaiting {
            Awaiting::Nothing => Next::Continue { run },
            Awaiting::Approval => Next::Approve { run },
            Awaiting::InflightChoice => Next::DecideInflight { run },
        }
    }

    /// The hint as the operator reads it, commands spelled with `flag`.
    pub fn render(&self, flag: &str) -> String {
        self.render_for(flag, "")
    }

    /// The same, each `runbook resume` also given `again`: the `--var`s a resume must be given
    /// again (a URL whose password the journal does not keep, `***` where it goes).
    pub fn render_for(&self, flag: &str, again: &str) -> String {
        let resume = format!("{again}{flag}");
        match self {
            Next::Approve { run } => format!("runbook resume {run} --approve{resume}"),
            Next::DecideInflight { run } => format!(
                "runbook resume {run} --retry-inflight{resume}   (run it again)\n      runbook resume {run} --skip-inflight{resume}    (it took effect; go on)"
            ),
            Next::Continue { run } => format!("runbook resume {run}{resume}"),
            Next::FixRunbook { run } => {
                format!("fix the runbook (or the inventory: resume reads both again), then `runbook resume {run}{resume}`")
            }
            Next::StateWritable { dir } => format!(
                "nothing was started: {dir} keeps the runs and their locks, and must be writable with room on its file system; make it so, or keep them elsewhere with --state-dir DIR, then run it again"
            ),
            Next::StoreAway => "nothing was started: run it again once the store answers. If it cannot answer now (its database is in the region that is down), `--state-dir DIR` in place of `--store` (and RUNBOOK_STORE unset) keeps this run's journal and locks on this host: only this host can resume the run then, and no host that uses the store sees it or its locks, so make sure nobody starts a procedure on this deployment beside it".to_string(),
            Next::JournalWritable { run } => format!(
                "once the journal can be written again (room on its file system, the store reachable), `runbook resume {run}{resume}` goes on from its last record: finished changes are not repeated, and a change that was in flight is asked about"
            ),
            Next::FixCause {
                run,
                undo,
                undoable,
            } => {
                let mut text = format!(
                    "fix the cause, then `runbook resume {run}{}{resume}`: finished changes are not repeated, the failed step's checks run again",
                    if *undo { " --undo" } else { "" }
                );
                if *undoable > 0 && !undo {
                    let which = if *undoable == 1 {
                        "the finished step that declares one".to_string()
                    } else {
                        format!("the {undoable} finished steps that declare one")
                    };
                    text.push_str(&format!(
                        "\n        or `runbook resume {run} --undo{resume}` runs the undo of {which}"
                    ));
                }
                text
            }
            Next::RunAgain { command } => format!(
                "nothing was changed; once the cause is fixed, run it again: `{command}{flag}`"
            ),
            Next::ResumeOrAbandon { run, awaiting } => format!(
                "continue it with {}, or, once you have checked the deployment, release it with `runbook abandon {run}{flag}`",
                match awaiting {
                    Awaiting::Nothing => format!("`runbook resume {run}{resume}`"),
                    Awaiting::Approval => format!("`runbook resume {run} --approve{resume}`"),
                    Awaiting::InflightChoice => format!(
                        "`runbook resume {run} --retry-inflight{resume}` (or `--skip-inflight` once you have checked that its call in flight took effect)"
                    ),
                }
            ),
            Next::RestoreRunbook { run, approve, undo } => format!(
                "put the runbook back as the run started it (`runbook log {run} --runbook{flag}` prints it), then `runbook resume {run}{}{}{resume}`; or, once you have checked the deployment, `runbook abandon {run}{flag}` and start a new run",
                if *approve { " --approve" } else { "" },
                if *undo { " --undo" } else { "" }
            ),
            Next::RestoreInventory {
                run,
                keys,
                approve,
                undo,
            } => format!(
                "put {} back in the inventory as the run started with {}, then `runbook resume {run}{}{}{resume}`; or, once you have checked the deployment, `runbook abandon {run}{flag}` and start a new run, which reads the servers as they are now",
                keys.iter().map(|k| format!("`{k}`")).collect::<Vec<_>>().join(", "),
                if keys.len() == 1 { "it" } else { "them" },
                if *approve { " --approve" } else { "" },
                if *undo { " --undo" } else { "" }
            ),
            Next::NewRun { command } => format!("`{command}{flag}` starts a new run"),
            Next::WaitForHolder => {
                format!("wait for it to finish (`runbook runs{flag}` shows its state)")
            }
            Next::WaitOrStop { run, pid, host } => format!(
                "wait for it to finish (`runbook log {run} --follow{flag}` shows it as it goes), or, if this cannot wait, stop it from here with `runbook stop {run}{flag}` (or Ctrl-C where it runs, `kill {pid}` on {host}): it stops after its current action and stays resumable, and running this again then says how to take over"
            ),
            Next::StopThenResume { run, pid, host } => format!(
                "wait for it to finish, or stop it with `runbook stop {run}{flag}` (or Ctrl-C where it runs, `kill {pid}` on {host}) and resume it again: `runbook resume {run}{resume}`"
            ),
            Next::StopThenAbandon { run, pid, host } => format!(
                "stop it first with `runbook stop {run}{flag}` (or Ctrl-C where it runs, `kill {pid}` on {host}), then `runbook abandon {run}{flag}`"
            ),
        }
    }
}

/// A lock claimed by a run that stopped mid-way.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Claim {
    pub lock: String,
    pub run: String,
    pub runbook: String,
    pub operator: String,
    pub host: String,
    /// How the run stands: "paused at step 'approval'", "failed at step 'promote'".
    pub standing: String,
    /// What its resume must be told.
    pub awaiting: Awaiting,
}

impl fmt::Display for Claim {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "the lock '{}' is claimed by run {} ({}, by {} on {}), which is {}: it may have left the deployment mid-way",
            self.lock, self.run, self.runbook, self.operator, self.host, self.standing
        )
    }
}

/// The stable code of a replay mismatch, listed in the README.
pub const REPLAY_MISMATCH: &str = "RB-REPLAY-001";

#[derive(Debug, Clone, thiserror::Error)]
pub enum Error {
    /// Bad command-line use.
    #[error("{0}")]
    Usage(String),

    /// A script that does not compile or fails lint, or a mistake found while running.
    #[error("{message}")]
    Script {
        message: String,
        pos: Option<Box<ScriptPos>>,
        /// The offending source line, drawn under the message.
        source_line: Option<String>,
        next: Option<Next>,
        /// The run's progress printed the message in full already (see [`Error::brief`]).
        shown: bool,
    },

    /// On resume, the script no longer does what the journal recorded: nothing was run.
    #[error("{message}")]
    ReplayMismatch { message: String, next: Next },

    /// A request refused as it stands (exit 2), with what to do instead.
    #[error("{message}")]
    Refused { message: String, next: Next },

    /// The inventory file or a value in it.
    #[error("inventory {path}: {message}")]
    Inventory { path: String, message: String },

    /// A what-if scenario (`--assume FILE`).
    #[error("scenario {message}")]
    Scenario { message: String },

    /// A parameter declared with `params` or given with `--var`.
    #[error("{0}")]
    Param(String),

    /// The PostgreSQL store did not answer (it is down, or unreachable from here).
    #[error("{0}")]
    StoreUnreachable(String),

    /// A journal that cannot be read or written.
    #[error("journal {}: {message}", path.display())]
    Journal { path: PathBuf, message: String },

    #[error("no run with id '{0}' in {1}; `runbook runs` lists the runs")]
    UnknownRun(String, String),

    /// A live process holds a lock (`holder`: that process, "pid 4242 on host-a, by alice,
    /// since …"), with what to do about it.
    #[error("{message}")]
    Locked {
        message: String,
        holder: String,
        next: Next,
    },

    /// A run that stopped mid-way claims the lock.
    #[error("{0}")]
    Claimed(Box<Claim>),

    /// The run needs a decision (approval, in-flight action) and was paused.
    #[error("{reason}")]
    Paused { reason: String, next: Next },

    /// The run stopped on Ctrl-C / SIGTERM, or as `runbook stop` asked (`asked`: by whom),
    /// and can be resumed.
    #[error("{message}")]
    Interrupted {
        message: String,
        next: Next,
        asked: Option<String>,
    },

    /// The run failed.
    #[error("{message}")]
    RunFailed {
        message: String,
        pos: Option<Box<ScriptPos>>,
        source_line: Option<String>,
        next: Option<Next>,
        /// As for `Script`.
        shown: bool,
    },

    #[error("{0}")]
    Io(String),

    /// Whoever read our output went away (`runbook log RUN | head -1`): stop quietly.
    #[error("the output was closed")]
    ClosedOutput,
}

impl Error {
    pub fn exit_code(&self) -> i32 {
        match self {
            Error::Usage(_)
            | Error::Script { .. }
            | Error::Inventory { .. }
            | Error::Scenario { .. }
            | Error::Param(_)
            | Error::Journal { .. }
            | Error::ReplayMismatch { .. }
            | Error::Refused { .. }
            | Error::UnknownRun(..) => exit::INVALID_INPUT,
            Error::Locked { .. } | Error::Claimed(_) => exit::LOCKED,
            Error::Paused { .. } => exit::PAUSED,
            Error::Interrupted { .. } => exit::INTERRUPTED,
            Error::RunFailed { .. } | Error::Io(_) | Error::StoreUnreachable(_) => exit::RUN_FAILED,
            Error::ClosedOutput => exit::SUCCESS,
        }
    }

    pub fn script(
        message: impl Into<String>,
        pos: Option<ScriptPos>,
        source: Option<&str>,
    ) -> Self {
        let source_line = match (&pos, source) {
            (Some(p), Some(src)) if p.line > 0 => src.lines().nth(p.line - 1).map(str::to_string),
            _ => None,
        };
        Error::Script {
            message: message.into(),
            pos: pos.map(Box::new),
            source_line,
            next: None,
            shown: false,
        }
    }

    /// The same error, its message printed in full by the run's progress already (`shown`).
    pub fn shown_above(mut self, was: bool) -> Self {
        if let Error::Script { shown, .. } | Error::RunFailed { shown, .. } = &mut self {
            *shown = was;
        }
        self
    }

    /// The error for a reader who has just seen its message in full: where the progress went
    /// to the same place as the error (a terminal, or `2>&1`), a message the progress printed
    /// is named by its first line, and the position and next step follow as always.
    pub fn brief(mut self) -> Self {
        if let Error::Script {
            message,
            shown: true,
            ..
        }
        | Error::RunFailed {
            message,
            shown: true,
            ..
        } = &mut self
        {
            *message = once_above(message);
        }
        self
    }

    /// The same error with a next step for the operator.
    pub fn with_next(mut self, then: Option<Next>) -> Self {
        match &mut self {
            Error::Script { next, .. } | Error::RunFailed { next, .. } => *next = then,
            _ => {}
        }
        self
    }

    /// The state directory `dir` could not be written before anything started.
    pub fn state_unwritable(message: String, dir: &std::path::Path) -> Self {
        Error::RunFailed {
            message,
            pos: None,
            source_line: None,
            next: Some(Next::StateWritable {
                dir: dir.display().to_string(),
            }),
            shown: false,
        }
    }

    pub fn run_failed(
        message: impl Into<String>,
        pos: Option<ScriptPos>,
        source: Option<&str>,
    ) -> Self {
        match Error::script(message, pos, source) {
            Error::Script {
                message,
                pos,
                source_line,
                next,
                shown,
            } => Error::RunFailed {
                message,
                pos,
                source_line,
                next,
                shown,
            },
            other => other,
        }
    }

    /// `--var`s a runbook's `params(..)` refuses, one problem a line.
    pub fn invalid_params(problems: &[String]) -> Error {
        Error::Param(format!("invalid parameters:\n  {}", problems.join("\n  ")))
    }

    /// What the operator does next, where the error says.
    pub fn next(&self) -> Option<Next> {
        match self {
            Error::Script { next, .. } | Error::RunFailed { next, .. } => next.clone(),
            Error::ReplayMismatch { next, .. }
            | Error::Refused { next, .. }
            | Error::Locked { next, .. }
            | Error::Paused { next, .. }
            | Error::Interrupted { next, .. } => Some(next.clone()),
            Error::Claimed(claim) => Some(Next::ResumeOrAbandon {
                run: claim.run.clone(),
                awaiting: claim.awaiting,
            }),
            _ => None,
        }
    }

    /// The message and the next step on one line, for a chat message ("…; next: …").
    pub fn one_line(&self, flag: &str) -> String {
        match self.next() {
            Some(next) => format!("{self}; next: {}", next.render(flag)),
            None => self.to_string(),
        }
    }

    /// The full message as printed on stderr, with the script line drawn under it and the next
    /// step last, its commands spelled with `flag` (the store options the command was given).
    pub fn render(&self, flag: &str) -> String {
        self.render_for(flag, "")
    }

    /// The same, this run's `runbook resume` commands also given `again` (see
    /// [`Next::render_for`]); a lock claimed by another run is spelled without it.
    pub fn render_for(&self, flag: &str, again: &str) -> String {
        match self {
            Error::Script {
                message,
                pos,
                source_line,
                next,
                ..
            }
            | Error::RunFailed {
                message,
                pos,
                source_line,
                next,
                ..
            } => {
                let mut out = format!("error: {}", hang(message, "    "));
                if let Some(pos) = pos {
                    out.push_str(&format!("\n  --> {pos}"));
                    if let Some(line) = source_line {
                        let num = pos.line.to_string();
                        let pad = " ".repeat(num.len());
                        out.push_str(&format!("\n {pad} |\n {num} | {line}"));
                        if pos.column > 0 {
                            out.push_str(&format!("\n {pad} | {}^", " ".repeat(pos.column - 1)));
                        }
                    }
                }
                if let Some(n) = next {
                    out.push_str(&format!("\n  next: {}", n.render_for(flag, again)));
                }
                out
            }
            Error::ReplayMismatch { message, next } => format!(
                "error[{REPLAY_MISMATCH}]: {message}\n  next: {}",
                next.render_for(flag, again)
            ),
            Error::UnknownRun(id, store) => format!(
                "error: no run with id '{id}' in {store}; `runbook runs{flag}` lists the runs"
            ),
            Error::Refused { message, next } | Error::Locked { message, next, .. } => {
                format!("error: {message}\n  next: {}", next.render_for(flag, again))
            }
            Error::Claimed(claim) => format!(
                "error: {claim}; {}",
                self.next().map(|n| n.render(flag)).unwrap_or_default()
            ),
            Error::Paused { reason, next } => {
                format!("paused: {reason}\n  next: {}", next.render_for(flag, again))
            }
            Error::Interrupted { message, next, .. } => {
                format!(
                    "interrupted: {message}; continue with: {}",
                    next.render_for(flag, again)
                )
            }
            other => format!("error: {other}"),
        }
    }
}

/// A failure's text where the same text was printed in full just above (a step that failed
/// because its action did, the run that failed because its step did): a one-line text stays as
/// it is, a longer one gives its first line and says where the rest is. The same table three
/// times is scrolling an operator does not need at 3 a.m.
pub fn once_above(text: &str) -> String {
    match text.split_once('\n') {
        None => text.to_string(),
        Some((first, _)) => format!("{} (in full above)", first.trim_end().trim_end_matches(':')),
    }
}

/// A text of several lines under the line it starts on: the lines after the first indented by
/// `pad` (blank ones left blank), so a table in a failure or a log stays under its step.
pub fn hang(text: &str, pad: &str) -> String {
    let mut lines = text.split('\n');
    let mut out = lines.next().unwrap_or_default().to_string();
    for l in lines {
        out.push('\n');
        if !l.is_empty() {
            out.push_str(pad);
            out.push_str(l);
        }
    }
    out
}

/// An error and its causes on one line, each cause once ("error connecting to server:
/// Connection refused (os error 111)").
pub fn with_causes(e: &(dyn std::error::Error + 'static)) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let more = s.to_string();
        if !text.contains(&more) {
            text = format!("{text}: {more}");
        }
        source = s.source();
    }
    text
}

impl From<std::io::Error> for Error {
    fn from(e: std::io::Error) -> Self {
        Error::Io(e.to_string())
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn next_steps_are_spelled_with_the_store_options() {
        let run = || "20261122-0312-ab12".to_string();
        let cases = [
            (Next::Approve { run: run() }, "", "runbook resume 20261122-0312-ab12 --approve"),
            (
                Next::Approve { run: run() },
                " --state-dir /srv/rb",
                "runbook resume 20261122-0312-ab12 --approve --state-dir /srv/rb",
            ),
            (Next::Continue { run: run() }, " --store 'postgres://u:***@h/db'", "runbook resume 20261122-0312-ab12 --store 'postgres://u:***@h/db'"),
            (
                Next::JournalWritable { run: run() },
                " --state-dir /full",
                "once the journal can be written again (room on its file system, the store reachable), `runbook resume 20261122-0312-ab12 --state-dir /full` goes on from its last record: finished changes are not repeated, and a change that was in flight is asked about",
            ),
            (Next::FixRunbook { run: run() }, "", "fix the runbook (or the inventory: resume reads both again), then `runbook resume 20261122-0312-ab12`"),
            (
                Next::FixCause { run: run(), undo: false, undoable: 0 },
                "",
                "fix the cause, then `runbook resume 20261122-0312-ab12`: finished changes are not repeated, the failed step's checks run again",
            ),
            (
                Next::FixCause { run: run(), undo: true, undoable: 2 },
                "",
                "fix the cause, then `runbook resume 20261122-0312-ab12 --undo`: finished changes are not repeated, the failed step's checks run again",
            ),
            (
                Next::RunAgain { command: "runbook run r.rhai -i 'my prod.toml' --var target=eu-west-1".into() },
                " --state-dir x",
                "nothing was changed; once the cause is fixed, run it again: `runbook run r.rhai -i 'my prod.toml' --var target=eu-west-1 --state-dir x`",
            ),
            (Next::WaitForHolder, " --state-dir x", "wait for it to finish (`runbook runs --state-dir x` shows its state)"),
            (
                Next::WaitOrStop { run: run(), pid: 42, host: "h".into() },
                "",
                "wait for it to finish (`runbook log 20261122-0312-ab12 --follow` shows it as it goes), or, if this cannot wait, stop it from here with `runbook stop 20261122-0312-ab12` (or Ctrl-C where it runs, `kill 42` on h): it stops after its current action and stays resumable, and running this again then says how to take over",
            ),
            (
                Next::StopThenResume { run: run(), pid: 42, host: "h".into() },
                " --store 'postgres://u:***@h/db'",
                "wait for it to finish, or stop it with `runbook stop 20261122-0312-ab12 --store 'postgres://u:***@h/db'` (or Ctrl-C where it runs, `kill 42` on h) and resume it again: `runbook resume 20261122-0312-ab12 --store 'postgres://u:***@h/db'`",
            ),
            (
                Next::ResumeOrAbandon { run: run(), awaiting: Awaiting::Nothing },
                " --state-dir x",
                "continue it with `runbook resume 20261122-0312-ab12 --state-dir x`, or, once you have checked the deployment, release it with `runbook abandon 20261122-0312-ab12 --state-dir x`",
            ),
            (
                Next::ResumeOrAbandon { run: run(), awaiting: Awaiting::Approval },
                "",
                "continue it with `runbook resume 20261122-0312-ab12 --approve`, or, once you have checked the deployment, release it with `runbook abandon 20261122-0312-ab12`",
            ),
            (
                Next::ResumeOrAbandon { run: run(), awaiting: Awaiting::InflightChoice },
                "",
                "continue it with `runbook resume 20261122-0312-ab12 --retry-inflight` (or `--skip-inflight` once you have checked that its call in flight took effect), or, once you have checked the deployment, release it with `runbook abandon 20261122-0312-ab12`",
            ),
            (
                Next::StopThenAbandon { run: run(), pid: 42, host: "h".into() },
                " --state-dir x",
                "stop it first with `runbook stop 20261122-0312-ab12 --state-dir x` (or Ctrl-C where it runs, `kill 42` on h), then `runbook abandon 20261122-0312-ab12 --state-dir x`",
            ),
        ];
        for (next, flag, want) in cases {
            assert_eq!(next.render(flag), want, "{next:?}");
        }
        let both = Next::FixCause {
            run: run(),
            undo: false,
            undoable: 2,
        }
        .render("");
        assert!(both.ends_with("or `runbook resume 20261122-0312-ab12 --undo` runs the undo of the 2 finished steps that declare one"), "{both}");
        let inflight = Next::DecideInflight { run: run() }.render(" --state-dir x");
        assert!(
            inflight.contains("--retry-inflight --state-dir x")
                && inflight.contains("--skip-inflight --state-dir x"),
            "{inflight}"
        );
        // The --vars a resume must be given again go into this run's resume commands only.
        let again = " --var 'db=postgres://u:***@h/db'";
        assert_eq!(
            Next::Approve { run: run() }.render_for(" --state-dir x", again),
            "runbook resume 20261122-0312-ab12 --approve --var 'db=postgres://u:***@h/db' --state-dir x"
        );
        let claimed = Error::Claimed(Box::new(Claim {
            lock: "l".into(),
            run: "other".into(),
            runbook: "r.rhai".into(),
            operator: "o".into(),
            host: "h".into(),
            standing: "failed at step 's'".into(),
            awaiting: Awaiting::Nothing,
        }))
        .render_for("", again);
        assert!(
            !claimed.contains("--var"),
            "another run's commands: {claimed}"
        );
        let paused = Error::Paused {
            reason: "waiting for approval".into(),
            next: Next::Approve { run: run() },
        }
        .render_for("", again);
        assert!(paused.ends_with(&format!("--approve{again}")), "{paused}");
    }

    #[test]
    fn errors_carry_their_exit_code_and_render_their_next_step() {
        let claim = Error::Claimed(Box::new(Claim {
            lock: "deployment prod".into(),
            run: "r1".into(),
            runbook: "planned-failover.rhai".into(),
            operator: "ann".into(),
            host: "ops1".into(),
            standing: "paused at step 'approval'".into(),
            awaiting: Awaiting::Approval,
        }));
        assert_eq!(claim.exit_code(), exit::LOCKED);
        let text = claim.render(" --state-dir s");
        assert!(text.starts_with("error: the lock 'deployment prod' is claimed by run r1 (planned-failover.rhai, by ann on ops1), which is paused at step 'approval'"), "{text}");
        assert!(
            text.contains("`runbook resume r1 --approve --state-dir s`")
                && text.contains("`runbook abandon r1 --state-dir s`"),
            "{text}"
        );
        let mismatch = Error::ReplayMismatch {
            message: "the runbook no longer matches".into(),
            next: Next::RestoreRunbook {
                run: "r1".into(),
                approve: false,
                undo: true,
            },
        };
        assert_eq!(mismatch.exit_code(), exit::INVALID_INPUT);
        assert_eq!(
            mismatch.render(" --store postgres://u:***@h/db"),
            "error[RB-REPLAY-001]: the runbook no longer matches\n  next: put the runbook back as the run started it (`runbook log r1 --runbook --store postgres://u:***@h/db` prints it), then `runbook resume r1 --undo --store postgres://u:***@h/db`; or, once you have checked the deployment, `runbook abandon r1 --store postgres://u:***@h/db` and start a new run"
        );
        let over = Error::Refused {
            message: "run r1 already finished".into(),
            next: Next::NewRun {
                command: "runbook run x.rhai -i prod.toml".into(),
            },
        };
        assert_eq!(over.exit_code(), exit::INVALID_INPUT);
        assert_eq!(
            over.render(" --state-dir s"),
            "error: run r1 already finished\n  next: `runbook run x.rhai -i prod.toml --state-dir s` starts a new run"
        );
        let paused = Error::Paused {
            reason: "waiting for approval".into(),
            next: Next::Approve { run: "r1".into() },
        };
        assert_eq!(paused.exit_code(), exit::PAUSED);
        assert_eq!(
            paused.render(""),
            "paused: waiting for approval\n  next: runbook resume r1 --approve"
        );
        assert_eq!(Error::ClosedOutput.exit_code(), exit::SUCCESS);
        let failed = Error::run_failed(
            "in step 'x': boom",
            Some(ScriptPos {
                file: "r.rhai".into(),
                line: 2,
                column: 5,
            }),
            Some("a\n    fail(\"boom\");\n"),
        )
        .with_next(Some(Next::RunAgain {
            command: "runbook run r.rhai".into(),
        }));
        assert_eq!(
            failed.render(""),
            "error: in step 'x': boom\n  --> r.rhai:2:5\n   |\n 2 |     fail(\"boom\");\n   |     ^\n  next: nothing was changed; once the cause is fixed, run it again: `runbook run r.rhai`"
        );
        // A message of several lines hangs under its first; where the progress printed it in
        // full beside the error, the error names it by its first line, and only then.
        let long = |shown: bool| {
            Error::run_failed("in step 'x': it does not hold:\n  - a\nTABLE", None, None)
                .shown_above(shown)
                .with_next(Some(Next::Continue { run: "r1".into() }))
        };
        let full =
            "error: in step 'x': it does not hold:\n      - a\n    TABLE\n  next: runbook resume r1";
        for (error, text) in [
            (long(false), full),
            (long(false).brief(), full),
            (long(true), full),
            (
                long(true).brief(),
                "error: in step 'x': it does not hold (in full above)\n  next: runbook resume r1",
            ),
            (
                Error::Usage("two\nlines".into()).brief(),
                "error: two\nlines",
            ),
        ] {
            assert_eq!(error.render(""), text);
        }
    }

    #[test]
    fn a_failure_printed_above_is_named_by_its_first_line() {
        for (text, brief) in [
            ("health is 503", "health is 503"),
            (
                "topology::verify failed: the postcondition does not hold:\n  - x\nREGION",
                "topology::verify failed: the postcondition does not hold (in full above)",
            ),
            ("two lines\nsecond", "two lines (in full above)"),
            ("", ""),
        ] {
            assert_eq!(once_above(text), brief, "{text:?}");
        }
    }

    #[test]
    fn the_lines_of_a_long_failure_hang_under_its_first() {
        for (text, pad, hung) in [
            ("one line", "    ", "one line"),
            ("a:\nREGION\n\nx", "  ", "a:\n  REGION\n\n  x"),
            ("a:\n  - b", "    ", "a:\n      - b"),
        ] {
            assert_eq!(hang(text, pad), hung, "{text:?} by {pad:?}");
        }
    }
}
