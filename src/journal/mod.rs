//! The execution journal: what a run did, event by event, durable before the engine moves on.
//!
//! Vocabulary:
//! - a **record** is one line of the journal: format version, sequence number, time, event;
//! - a **call** is one action (or built-in: `now`, `sleep`, `approve`) the script made; its
//!   **identity** is the step path it ran in plus its ordinal within that step;
//! - **replay** re-executes the script and answers each call whose identity is recorded as
//!   finished with the recorded output, after checking the action name and input hash.
//!
//! The format is versioned: records carry `v`; an engine refuses records newer than it knows.
//! Event names written to disk are never reused for another meaning.

mod dir;
mod lock;
mod pg;

use serde::{Deserialize, Serialize};
use serde_json::Value;

pub use dir::DirStore;
pub use lock::{claim_of, hold as hold_lock, take as take_lock, LockGuard, LockHolder};
pub use pg::PgStore;

use crate::error::{Awaiting, Error};

/// The journal format this engine writes and the newest it reads.
pub const FORMAT_VERSION: u32 = 1;

/// A step path: the names of the enclosing steps, outermost first.
pub type StepPath = Vec<String>;

/// The first segment of the step path of undo closures (`undo › stop writes`).
pub const UNDO: &str = "undo";

/// The step a failure handler runs as, in the `session`-th session of its run: each failing
/// session has its own, so that an earlier session's calls are never replayed in its place.
pub fn failure_step(session: usize) -> StepPath {
    vec![format!("on failure (session {session})")]
}

/// The step the undo handler runs as, once `resume --undo` in the `session`-th session of its
/// run has undone it.
pub fn undone_step(session: usize) -> StepPath {
    vec![format!("on undone (session {session})")]
}

/// Whether `path` is in a failure handler's step.
pub fn in_failure_step(path: &[String]) -> bool {
    in_session_step(path, "on failure (session ")
}

/// Whether `path` is in a handler's step (`on_failure`, `on_undone`): what it does is telling
/// someone, never a change of the run's, and never where the run stopped.
pub fn in_handler_step(path: &[String]) -> bool {
    in_failure_step(path) || in_session_step(path, "on undone (session ")
}

fn in_session_step(path: &[String], prefix: &str) -> bool {
    path.first().is_some_and(|s| {
        s.strip_prefix(prefix)
            .and_then(|n| n.strip_suffix(')'))
            .is_some_and(|n| n.parse::<usize>().is_ok())
    })
}

/// Whether `path` is in a step the engine runs after the script itself: an undo closure of
/// `resume --undo` or a handler. A replay of the script never reaches their calls.
pub fn after_the_script(path: &[String]) -> bool {
    path.first().map(String::as_str) == Some(UNDO) || in_handler_step(path)
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum Event {
    RunStarted {
        run_id: String,
        runbook: String,
        runbook_sha256: String,
        params: serde_json::Map<String, Value>,
        inventory_file: Option<String>,
        /// The inventory as loaded, secrets as references.
        inventory: Value,
        engine_version: String,
        operator: String,
        host: String,
        pid: u32,
        /// What started it when no person did: `runbook watch`'s observations.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        trigger: Option<Box<Value>>,
        /// How it was started (the runbook's folder and its siblings, the inventory and store
        /// options as given): the commands the runbook spells read the same when it resumes.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        invocation: Option<Box<Value>>,
    },
    RunResumed {
        runbook_sha256: String,
        engine_version: String,
        operator: String,
        host: String,
        pid: u32,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        inflight: Option<String>,
        /// The inventory this session read, secrets as references, when it differs from the
        /// one the run last had (the file fixed before the resume): its calls are made with it.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        inventory: Option<Value>,
    },
    StepStarted {
        step: StepPath,
    },
    StepFinished {
        step: StepPath,
        elapsed_ms: u64,
    },
    StepFailed {
        step: StepPath,
        error: String,
        will_retry: bool,
    },
    ActionStarted {
        step: StepPath,
        seq: u32,
        action: String,
        input: Value,
        input_hash: String,
        write: bool,
        idempotent: bool,
        /// A write that only tells people (a Slack message, or any call of a failure
        /// handler): it changes no system, so a run that sent only notices has changed nothing.
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        notice: bool,
    },
    ActionFinished {
        step: StepPath,
        seq: u32,
        output: Value,
        elapsed_ms: u64,
        /// Set when the operator chose --skip-inflight: the output is the prediction.
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        skipped: bool,
        /// Attempts that failed with a transient error before this one (0: the first worked).
        #[serde(default, skip_serializing_if = "is_zero")]
        retries: u32,
    },
    ActionFailed {
        step: StepPath,
        seq: u32,
        error: String,
        elapsed_ms: u64,
        /// Attempts retried before the last one failed.
        #[serde(default, skip_serializing_if = "is_zero")]
        retries: u32,
    },
    /// `result(name, value)`: something the run found out, for its report (the data-loss
    /// bound, the new primary).
    Result {
        step: StepPath,
        name: String,
        value: Value,
    },
    TimerStarted {
        step: StepPath,
        seq: u32,
        duration_ms: u64,
        /// Wall-clock end, Unix milliseconds.
        until_ms: u64,
    },
    TimerFired {
        step: StepPath,
        seq: u32,
    },
    ApprovalRequested {
        step: StepPath,
        seq: u32,
        message: String,
    },
    Approved {
        step: StepPath,
        seq: u32,
        by: String,
        /// "terminal", "--yes" or "resume --approve".
        via: String,
    },
    Log {
        step: StepPath,
        message: String,
    },
    RunPaused {
        reason: String,
    },
    RunInterrupted {
        reason: String,
    },
    RunFailed {
        error: String,
        /// The innermost steps that failed; resuming runs their checks again.
        failed_steps: Vec<StepPath>,
    },
    RunFinished {
        elapsed_ms: u64,
    },
    /// `resume --undo` ran the undo closures of these finished steps (latest first).
    RunUndone {
        undone_steps: Vec<StepPath>,
    },
    /// `runbook watch --ack`: a person has looked at this automatic failover; the watcher may
    /// act again after its cooldown.
    WatchAcknowledged {
        by: String,
    },
    /// `runbook abandon`: the run will not be continued, and its claims on locks are released.
    RunAbandoned {
        by: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        reason: Option<String>,
    },
}

impl Event {
    /// How a process's work on the run ended, in words ("paused: …", "finished", …); None for
    /// the events that do not end it.
    pub fn ending(&self) -> Option<String> {
        Some(match self {
            Event::RunPaused { reason } => format!("paused: {reason}"),
            Event::RunInterrupted { reason } => format!("interrupted: {reason}"),
            Event::RunFailed { error, .. } => format!("failed: {error}"),
            Event::RunFinished { .. } => "finished".into(),
            Event::RunUndone { undone_steps } => format!(
                "undone: {}",
                undone_steps
                    .iter()
                    .map(|s| show_path(s))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
            Event::RunAbandoned { by, reason } => format!(
                "abandoned by {by}{}",
                reason
                    .as_ref()
                    .map(|r| format!(": {r}"))
                    .unwrap_or_default()
            ),
            _ => return None,
        })
    }
}

fn is_zero(n: &u32) -> bool {
    *n == 0
}

/// How a run stands, as its journal shows it (and, for one without an end, its process).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RunStatus {
    /// No end recorded and its process alive (or on another host).
    Running,
    /// No end recorded and its process gone: killed, or the host lost.
    Crashed,
    Paused,
    Interrupted,
    Failed,
    /// A resume refused before running anything (the script no longer matches the journal).
    Refused,
    Finished,
    /// A dry-run ended (never journaled).
    FinishedDryRun,
    Undone,
    Abandoned,
    /// A journal without a start record.
    Unknown,
}

impl RunStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            RunStatus::Running => "running",
            RunStatus::Crashed => "crashed",
            RunStatus::Paused => "paused",
            RunStatus::Interrupted => "interrupted",
            RunStatus::Failed => "failed",
            RunStatus::Refused => "refused",
            RunStatus::Finished => "finished",
            RunStatus::FinishedDryRun => "finished (dry-run)",
            RunStatus::Undone => "undone",
            RunStatus::Abandoned => "abandoned",
            RunStatus::Unknown => "unknown",
        }
    }

    /// Over for good: nothing to resume, nothing claimed.
    pub fn is_over(self) -> bool {
        matches!(
            self,
            RunStatus::Finished
                | RunStatus::FinishedDryRun
                | RunStatus::Undone
                | RunStatus::Abandoned
        )
    }

    /// The status the journal's own records give (without looking at processes).
    pub fn of(records: &[Record]) -> RunStatus {
        let mut status = RunStatus::Unknown;
        for r in records {
            status = match &r.event {
                Event::RunStarted { .. } | Event::RunResumed { .. } => RunStatus::Running,
                Event::RunFinished { .. } => RunStatus::Finished,
                Event::RunUndone { .. } => RunStatus::Undone,
                Event::RunAbandoned { .. } => RunStatus::Abandoned,
                Event::RunFailed { .. } => RunStatus::Failed,
                Event::RunPaused { .. } => RunStatus::Paused,
                Event::RunInterrupted { .. } => RunStatus::Interrupted,
                _ => continue,
            };
        }
        status
    }
}

/// What a resume of a run must be told, read from its records: a run paused at an approval
/// nobody has given awaits `--approve`; a run paused otherwise paused over a non-idempotent call
/// that was in flight, and awaits the operator's choice; any other run, nothing.
pub fn awaiting(records: &[Record]) -> Awaiting {
    if RunStatus::of(records) != RunStatus::Paused {
        return Awaiting::Nothing;
    }
    if unanswered_approval(records) {
        Awaiting::Approval
    } else {
        Awaiting::InflightChoice
    }
}

/// Whether the run asked for an approval nobody has given: paused there, or stopped while its
/// prompt waited on a terminal. `resume --approve` answers it.
pub fn unanswered_approval(records: &[Record]) -> bool {
    let approved = |step: &StepPath, seq: u32| {
        records.iter().any(|r| {
            matches!(&r.event, Event::Approved { step: s, seq: q, .. } if s == step && *q == seq)
        })
    };
    records.iter().any(
        |r| matches!(&r.event, Event::ApprovalRequested { step, seq, .. } if !approved(step, *seq)),
    )
}

impl std::fmt::Display for RunStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.pad(self.as_str())
    }
}

impl Serialize for RunStatus {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

/// One journal line.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Record {
    pub v: u32,
    pub n: u64,
    /// RFC 3339, UTC, milliseconds.
    pub at: String,
    #[serde(flatten)]
    pub event: Event,
}

/// A journal read back.
#[derive(Debug, Default)]
pub struct Loaded {
    pub records: Vec<Record>,
    /// A last line cut short by a crash, dropped (its text, for the report).
    pub torn_tail: Option<String>,
    /// Byte length of the intact part, for truncating the torn tail before appending.
    pub intact_len: u64,
}

/// What `all` (the whole journal, read now) holds past the records `known` holds.
pub fn since(mut all: Loaded, known: &Loaded) -> Loaded {
    let new = all
        .records
        .split_off(known.records.len().min(all.records.len()));
    Loaded {
        records: new,
        ..all
    }
}

/// Parses journal text. Only the last line may be torn; anything else unreadable is an error.
pub fn parse(path: &std::path::Path, text: &str) -> Result<Loaded, Error> {
    let mut loaded = Loaded::default();
    let mut offset = 0usize;
    let ends_clean = text.ends_with('\n') || text.is_empty();
    let lines: Vec<&str> = text.split_inclusive('\n').collect();
    for (i, raw) in lines.iter().enumerate() {
        let is_last = i + 1 == lines.len();
        let line = raw.trim_end_matches('\n');
        let lineno = i + 1;
        if line.trim().is_empty() {
            offset += raw.len();
            continue;
        }
        // A last line without its newline was cut by a crash even when it parses: its record
        // may not be durable, and appending after it would glue two records together.
        if is_last && !ends_clean {
            loaded.torn_tail = Some(line.chars().take(120).collect());
            break;
        }
        #[derive(Deserialize)]
        struct Version {
            v: u32,
        }
        let parsed: Result<Record, String> = match serde_json::from_str::<Version>(line) {
            Ok(Version { v }) if v > FORMAT_VERSION => {
                return Err(Error::Journal {
                    path: path.into(),
                    message: format!(
                        "line {lineno} was written by a newer engine (journal format {v}; this engine reads up to {FORMAT_VERSION}); \
                         resume it with runbook {} or later",
                        "a newer version of"
                    ),
                })
            }
            Ok(_) => serde_json::from_str::<Record>(line).map_err(|e| e.to_string()),
            Err(e) => Err(e.to_string()),
        };
        match parsed {
            Ok(record) => {
                loaded.records.push(record);
                offset += raw.len();
            }
            Err(_) if is_last && !ends_clean => {
                loaded.torn_tail = Some(line.chars().take(120).collect());
                break;
            }
            Err(e) => {
                return Err(Error::Journal {
                    path: path.into(),
                    message: format!(
                        "line {lineno} is corrupt ({e}); the journal cannot be trusted past it. \
                         Nothing was changed; inspect the file, or start a new run"
                    ),
                })
            }
        }
    }
    loaded.intact_len = offset as u64;
    Ok(loaded)
}

/// Where journals live. The directory store is the default; a PostgreSQL store can take its
/// place so a run started on one host can be resumed on another.
/// A request that the process running a run stop at its next safe point, as Ctrl-C there
/// would (`runbook stop`, from any host that shares the store).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StopRequest {
    /// Who asked, and on which host.
    pub by: String,
    pub host: String,
    pub reason: Option<String>,
    pub at: String,
    /// The process it is for: a later session of the run (another process) is not stopped
    /// by a request left behind.
    pub pid: u32,
    pub process_host: String,
}

impl StopRequest {
    /// Whether this request is for the process `pid` on `host`.
    pub fn is_for(&self, pid: u32, host: &str) -> bool {
        self.pid == pid && self.process_host == host
    }

    /// "by alice on ops-2 (`runbook stop`): the primary region is down".
    pub fn describe(&self) -> String {
        format!(
            "by {} on {} (`runbook stop`){}",
            self.by,
            self.host,
            self.reason
                .as_ref()
                .map(|r| format!(": {r}"))
                .unwrap_or_default()
        )
    }
}

/// A run's id and its journal, or why it cannot be read.
pub type RunRead = (String, Result<Loaded, Error>);

pub trait Store: Send + Sync {
    /// Creates a new run's journal, with a copy of its script.
    fn create(&self, run_id: &str, script: &str) -> Result<Box<dyn JournalWriter>, Error>;
    /// Opens an existing run's journal for appending (a torn tail is cut off first).
    fn append_to(&self, run_id: &str) -> Result<Box<dyn JournalWriter>, Error>;
    fn read(&self, run_id: &str) -> Result<Loaded, Error>;
    /// The script as it was when the run started.
    fn script(&self, run_id: &str) -> Result<String, Error>;
    /// Run ids, oldest first.
    fn list(&self) -> Result<Vec<String>, Error>;
    /// The records appended after those `known` holds (a `Loaded` from `read`, grown with what
    /// this returned before), with the journal's torn tail and intact length as they are now:
    /// what a follow reads each tick, rather than the whole journal again.
    fn read_since(&self, run_id: &str, known: &Loaded) -> Result<Loaded, Error> {
        Ok(since(self.read(run_id)?, known))
    }
    /// Every run with its journal (or why it cannot be read), in the order of `list`: what
    /// listings read. A store a round trip away reads them all at once.
    fn read_all(&self) -> Result<Vec<RunRead>, Error> {
        Ok(self
            .list()?
            .into_iter()
            .map(|id| {
                let loaded = self.read(&id);
                (id, loaded)
            })
            .collect())
    }
    /// These runs with their journals (or why one cannot be read), in the order given.
    fn read_runs(&self, ids: &[String]) -> Result<Vec<RunRead>, Error> {
        Ok(ids.iter().map(|id| (id.clone(), self.read(id))).collect())
    }
    /// Every run, oldest first (the minute its id names, then the order the store created them
    /// in), with whether its journal's last record closes it (`closes`), found without reading
    /// the rest: what lets a listing read only the runs it shows and those that may still need
    /// a person, in a store that keeps a year of runs.
    fn closed(&self) -> Result<Vec<(String, bool)>, Error>;
    /// Every run with its first record — how it started: runbook, inventory, what triggered
    /// it — or None where that cannot be read, without reading the rest.
    fn starts(&self) -> Result<Vec<(String, Option<Record>)>, Error>;
    /// Removes these runs, their journals and what else the store keeps of them, for good.
    fn remove(&self, run_ids: &[String]) -> Result<(), Error>;
    /// Takes an exclusive hold on a lock, or says which live process holds it. The guard
    /// carries the claim found in it; `lock::take` decides whether that claim still stands.
    fn lock(&self, name: &str) -> Result<LockGuard, Error>;
    /// Whether a live process holds lock `name` now, found without keeping it: what tells,
    /// from anywhere, that the process of a run on another host is gone.
    fn held(&self, name: &str) -> Result<bool, Error>;
    /// Every claim recorded: lock name → the run that claims it.
    fn claims(&self) -> Result<Vec<(String, LockHolder)>, Error>;
    /// A description for messages ("directory .runbook").
    fn describe(&self) -> String;
    /// Leaves (or, None, takes back) a request that the process running `run_id` stop.
    fn request_stop(&self, run_id: &str, request: Option<&StopRequest>) -> Result<(), Error>;
    /// The stop request left for `run_id`, if any.
    fn stop_request(&self, run_id: &str) -> Result<Option<StopRequest>, Error>;
}

/// Whether a record ends its run for good: it finished, was undone or was abandoned. Nothing
/// that changes a run's status can follow one, so a journal that ends with one is a run that
/// is over (one that ends otherwise may be over too: a watcher's acknowledgement comes after).
pub fn closes(record: &Record) -> bool {
    matches!(
        record.event,
        Event::RunFinished { .. } | Event::RunUndone { .. } | Event::RunAbandoned { .. }
    )
}

/// A journal line, as stored, as a record, if it is a whole one.
pub fn record_of(line: &str) -> Option<Record> {
    serde_json::from_str::<Record>(line.trim_end()).ok()
}

/// Whether a journal line, as stored, is a record that closes its run; a line that is not a
/// whole record is not one.
pub fn closing_line(line: &str) -> bool {
    record_of(line).is_some_and(|r| closes(&r))
}

/// The runs a listing reads, of all a store holds (oldest first, each with whether its last
/// record closes it): every one not closed, whatever its age — running, paused, failed: it
/// may need a person — and the `newest` last ones (all of them with None).
pub fn worth_reading(runs: &[(String, bool)], newest: Option<usize>) -> Vec<String> {
    let from = newest.map_or(0, |n| runs.len().saturating_sub(n));
    runs.iter()
        .enumerate()
        .filter(|(i, (_, over))| *i >= from || !over)
        .map(|(_, (id, _))| id.clone())
        .collect()
}

/// What `runbook prune` knows of a run before reading its journal: when it started (its first
/// record), whether its last record closes it, and the deployment whose watcher started it.
#[derive(Debug, Clone)]
pub struct RunAge {
    pub id: String,
    pub started_ms: Option<u64>,
    pub over: bool,
    pub watched: Option<String>,
}

/// What a prune does with the runs started before its cutoff.
#[derive(Debug, Default, PartialEq)]
pub struct PrunePlan {
    /// Over: removed.
    pub remove: Vec<String>,
    /// Their journals tell: one that failed before changing anything goes, any other still
    /// open stays.
    pub check: Vec<String>,
    /// Each deployment's last automatic failover, as (deployment, run): kept.
    pub watched: Vec<(String, String)>,
}

/// Which runs started before `cutoff_ms` a prune may remove. Kept whatever their age: a run
/// whose start cannot be read, and each deployment's last automatic failover, on which
/// `runbook watch` holds until a person acknowledges it.
pub fn prune_plan(runs: &[RunAge], cutoff_ms: u64) -> PrunePlan {
    let mut last_watched: std::collections::BTreeMap<&str, (u64, &str)> = Default::default();
    for r in runs {
        if let (Some(deployment), Some(at)) = (&r.watched, r.started_ms) {
            let newest = last_watched.entry(deployment).or_insert((at, &r.id));
            if at > newest.0 {
                *newest = (at, &r.id);
            }
        }
    }
    let kept: std::collections::BTreeSet<&str> = last_watched.values().map(|(_, id)| *id).collect();
    let mut plan = PrunePlan::default();
    for r in runs {
        if r.started_ms.is_none_or(|at| at >= cutoff_ms) {
            continue;
        }
        match (&r.watched, kept.contains(r.id.as_str())) {
            (Some(deployment), true) => plan.watched.push((deployment.clone(), r.id.clone())),
            _ if r.over => plan.remove.push(r.id.clone()),
            _ => plan.check.push(r.id.clone()),
        }
    }
    plan
}

/// Appends records. `sync` asks for the record to be on stable storage before returning.
pub trait JournalWriter: Send {
    fn append(&mut self, line: &str, sync: bool) -> std::io::Result<()>;
    fn sync(&mut self) -> std::io::Result<()>;
}

/// Appends one event, durably, after `records` (the run's journal as just read): what
/// `runbook abandon` and `runbook watch --ack` add to a run no process is running.
pub fn append_event(
    store: &dyn Store,
    run_id: &str,
    records: &[Record],
    event: Event,
) -> Result<(), Error> {
    let record = Record {
        v: FORMAT_VERSION,
        n: records.last().map(|r| r.n + 1).unwrap_or(1),
        at: timestamp(),
        event,
    };
    let line = serde_json::to_string(&record).map_err(|e| Error::Io(e.to_string()))?;
    store
        .append_to(run_id)?
        .append(&line, true)
        .map_err(|e| Error::Journal {
            path: store.describe().into(),
            message: format!("cannot write run {run_id}: {e}"),
        })
}

/// Now as RFC 3339 with milliseconds.
pub fn timestamp() -> String {
    humantime::format_rfc3339_millis(std::time::SystemTime::now()).to_string()
}

/// An RFC 3339 time, as a record's `at`, in Unix milliseconds.
pub fn unix_ms_of(at: &str) -> Option<u64> {
    humantime::parse_rfc3339_weak(at)
        .ok()
        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
        .map(|d| d.as_millis() as u64)
}

pub fn unix_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// Shows a step path as the operator reads it.
pub fn show_path(path: &[String]) -> String {
    if path.is_empty() {
        "(top level)".into()
    } else {
        path.join(" › ")
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use proptest::prelude::*;

    use super::*;

    /// A resume's record, as the tables of journal histories need one.
    pub(crate) fn resumed_event() -> Event {
        Event::RunResumed {
            runbook_sha256: String::new(),
            engine_version: String::new(),
            operator: String::new(),
            host: String::new(),
            pid: 2,
            inflight: None,
            inventory: None,
        }
    }

    fn sample_journal() -> String {
        let events = [
            Event::StepStarted {
                step: vec!["a".into()],
            },
            Event::ActionStarted {
                step: vec!["a".into()],
                seq: 1,
                action: "http::post".into(),
                input: serde_json::json!({"url": "http://x/é"}),
                input_hash: "00".into(),
                write: true,
                idempotent: false,
                notice: false,
            },
            Event::ActionFinished {
                step: vec!["a".into()],
                seq: 1,
                output: serde_json::json!({"status": 200}),
                elapsed_ms: 3,
                skipped: false,
                retries: 0,
            },
            Event::StepFinished {
                step: vec!["a".into()],
                elapsed_ms: 4,
            },
        ];
        events
            .into_iter()
            .enumerate()
            .map(|(i, event)| {
                serde_json::to_string(&Record {
                    v: 1,
                    n: i as u64 + 1,
                    at: "2026-11-21T00:00:00Z".into(),
                    event,
                })
                .unwrap()
                    + "\n"
            })
            .collect()
    }

    /// A prune removes old runs that are over, reads the old ones still open to tell, and
    /// keeps new runs, runs whose start is unknown, and each deployment's last automatic
    /// failover.
    #[test]
    fn a_prune_takes_old_runs_that_are_over_and_keeps_the_watchers_last() {
        let run = |id: &str, started: Option<u64>, over: bool, watched: Option<&str>| RunAge {
            id: id.into(),
            started_ms: started,
            over,
            watched: watched.map(str::to_string),
        };
        let cutoff = 100;
        /// A case: its name, the runs, those removed, those read to tell.
        type Case<'a> = (&'a str, Vec<RunAge>, &'a [&'a str], &'a [&'a str]);
        let cases: [Case; 7] = [
            (
                "old and over",
                vec![run("a", Some(10), true, None)],
                &["a"],
                &[],
            ),
            (
                "old, not over",
                vec![run("a", Some(10), false, None)],
                &[],
                &["a"],
            ),
            (
                "new",
                vec![
                    run("a", Some(100), true, None),
                    run("b", Some(150), false, None),
                ],
                &[],
                &[],
            ),
            ("start unknown", vec![run("a", None, true, None)], &[], &[]),
            (
                "the watcher's last of each deployment",
                vec![
                    run("w1", Some(10), true, Some("shop")),
                    run("w2", Some(20), true, Some("shop")),
                    run("x1", Some(15), true, Some("blog")),
                ],
                &["w1"],
                &[],
            ),
            (
                "the last is new: the older ones go",
                vec![
                    run("w1", Some(10), true, Some("shop")),
                    run("w2", Some(200), true, Some("shop")),
                ],
                &["w1"],
                &[],
            ),
            (
                "a mixed store",
                vec![
                    run("a", Some(1), true, None),
                    run("b", Some(2), false, None),
                    run("c", Some(3), true, Some("shop")),
                    run("d", Some(120), true, None),
                ],
                &["a"],
                &["b"],
            ),
        ];
        for (name, runs, remove, check) in cases {
            let plan = prune_plan(&runs, cutoff);
            assert_eq!(plan.remove, remove, "{name}: removed");
            assert_eq!(plan.check, check, "{name}: read to tell");
        }
        // The watcher's last failovers kept are named, each with its deployment.
        let plan = prune_plan(
            &[
                run("w1", Some(10), true, Some("shop")),
                run("w2", Some(20), true, Some("shop")),
                run("x1", Some(15), false, Some("blog")),
                run("w3", Some(500), true, Some("web")),
            ],
            cutoff,
        );
        let watched = [("shop", "w2"), ("blog", "x1")].map(|(d, r)| (d.to_string(), r.to_string()));
        assert_eq!(plan.watched, watched);
    }

    /// A listing reads every run not closed, however old, and the newest ones.
    #[test]
    fn a_listing_reads_the_runs_not_closed_and_the_newest() {
        let runs: Vec<(String, bool)> = [
            ("r1", true),
            ("r2", false),
            ("r3", true),
            ("r4", true),
            ("r5", false),
            ("r6", true),
        ]
        .iter()
        .map(|(id, over)| (id.to_string(), *over))
        .collect();
        let cases: [(&str, Option<usize>, &[&str]); 5] = [
            ("all", None, &["r1", "r2", "r3", "r4", "r5", "r6"]),
            (
                "the newest two, and the old open one",
                Some(2),
                &["r2", "r5", "r6"],
            ),
            ("only the open ones", Some(0), &["r2", "r5"]),
            (
                "more than there are",
                Some(10),
                &["r1", "r2", "r3", "r4", "r5", "r6"],
            ),
            ("the newest four", Some(4), &["r2", "r3", "r4", "r5", "r6"]),
        ];
        for (name, newest, want) in cases {
            assert_eq!(worth_reading(&runs, newest), want, "{name}");
        }
        assert!(worth_reading(&[], Some(3)).is_empty());
    }

    /// Only a whole record that finishes, undoes or abandons its run closes it.
    #[test]
    fn a_line_closes_its_run_only_when_it_ends_it_for_good() {
        let line = |event: Event| {
            serde_json::to_string(&Record {
                v: 1,
                n: 9,
                at: "2026-12-07T00:00:00Z".into(),
                event,
            })
            .unwrap()
        };
        let finished = line(Event::RunFinished { elapsed_ms: 5 });
        let cases = [
            ("finished", finished.clone(), true),
            ("finished, with its newline", format!("{finished}\n"), true),
            (
                "abandoned",
                line(Event::RunAbandoned {
                    by: "ops".into(),
                    reason: None,
                }),
                true,
            ),
            (
                "undone",
                line(Event::RunUndone {
                    undone_steps: vec![],
                }),
                true,
            ),
            (
                "failed",
                line(Event::RunFailed {
                    error: "x".into(),
                    failed_steps: vec![],
                }),
                false,
            ),
            (
                "paused",
                line(Event::RunPaused { reason: "r".into() }),
                false,
            ),
            ("resumed", line(resumed_event()), false),
            ("torn", finished[..finished.len() - 3].to_string(), false),
            ("not a record", "{}".into(), false),
        ];
        for (name, text, want) in cases {
            assert_eq!(closing_line(&text), want, "{name}");
        }
    }

    #[test]
    fn a_runs_status_is_its_last_ending_record() {
        let ev = |e: Event| Record {
            v: 1,
            n: 1,
            at: String::new(),
            event: e,
        };
        let started = || {
            ev(Event::RunStarted {
                run_id: "r".into(),
                runbook: "x".into(),
                runbook_sha256: String::new(),
                params: Default::default(),
                inventory_file: None,
                inventory: serde_json::json!({}),
                engine_version: String::new(),
                operator: String::new(),
                host: String::new(),
                pid: 1,
                trigger: None,
                invocation: None,
            })
        };
        let resumed = || ev(resumed_event());
        let paused = || ev(Event::RunPaused { reason: "r".into() });
        let cases: Vec<(Vec<Record>, RunStatus)> = vec![
            (vec![], RunStatus::Unknown),
            (vec![started()], RunStatus::Running),
            (vec![started(), paused()], RunStatus::Paused),
            (vec![started(), paused(), resumed()], RunStatus::Running),
            (
                vec![
                    started(),
                    ev(Event::RunFailed {
                        error: "e".into(),
                        failed_steps: vec![],
                    }),
                ],
                RunStatus::Failed,
            ),
            (
                vec![started(), ev(Event::RunInterrupted { reason: "s".into() })],
                RunStatus::Interrupted,
            ),
            (
                vec![started(), ev(Event::RunFinished { elapsed_ms: 1 })],
                RunStatus::Finished,
            ),
            (
                vec![
                    started(),
                    ev(Event::RunUndone {
                        undone_steps: vec![],
                    }),
                ],
                RunStatus::Undone,
            ),
            (
                vec![
                    started(),
                    paused(),
                    ev(Event::RunAbandoned {
                        by: "ann".into(),
                        reason: None,
                    }),
                ],
                RunStatus::Abandoned,
            ),
        ];
        for (records, want) in cases {
            assert_eq!(RunStatus::of(&records), want, "{records:?}");
        }
        assert!(RunStatus::Abandoned.is_over() && !RunStatus::Paused.is_over());
        assert_eq!(format!("{:<10}|", RunStatus::Paused), "paused    |");
    }

    #[test]
    fn what_a_resume_must_be_told_follows_the_pause() {
        let ev = |e: Event| Record {
            v: 1,
            n: 1,
            at: String::new(),
            event: e,
        };
        let step = || vec!["confirm".to_string()];
        let started = || ev(resumed_event());
        let asked = |seq| {
            ev(Event::ApprovalRequested {
                step: step(),
                seq,
                message: "go?".into(),
            })
        };
        let approved = |seq| {
            ev(Event::Approved {
                step: step(),
                seq,
                by: "ann".into(),
                via: "--yes".into(),
            })
        };
        let paused = || ev(Event::RunPaused { reason: "r".into() });
        let write = || {
            ev(Event::ActionStarted {
                step: step(),
                seq: 3,
                action: "shell::run".into(),
                input: serde_json::json!({}),
                input_hash: String::new(),
                write: true,
                idempotent: false,
                notice: false,
            })
        };
        use Awaiting::*;
        let cases: Vec<(&str, Vec<Record>, Awaiting)> = vec![
            ("running", vec![started()], Nothing),
            (
                "paused at an approval",
                vec![started(), asked(1), paused()],
                Approval,
            ),
            (
                "paused again at it by a resume without --approve",
                vec![started(), asked(1), paused(), started(), paused()],
                Approval,
            ),
            (
                "approved, then paused at the next one",
                vec![started(), asked(1), approved(1), asked(2), paused()],
                Approval,
            ),
            (
                "approved, then paused over a call in flight",
                vec![
                    started(),
                    asked(1),
                    approved(1),
                    write(),
                    started(),
                    paused(),
                ],
                InflightChoice,
            ),
            (
                "paused with no approval asked",
                vec![started(), write(), started(), paused()],
                InflightChoice,
            ),
            (
                "an approval still open, but the run was interrupted",
                vec![
                    started(),
                    asked(1),
                    paused(),
                    started(),
                    ev(Event::RunInterrupted { reason: "s".into() }),
                ],
                Nothing,
            ),
            (
                "failed",
                vec![
                    started(),
                    ev(Event::RunFailed {
                        error: "e".into(),
                        failed_steps: vec![],
                    }),
                ],
                Nothing,
            ),
        ];
        for (what, records, want) in cases {
            assert_eq!(awaiting(&records), want, "{what}");
        }
    }

    /// Which steps are the engine's own, after the script: never where a run stopped, their
    /// calls never a change of the run's.
    #[test]
    fn handler_and_undo_steps_are_told_apart_from_the_script_s() {
        let p = |s: &[&str]| s.iter().map(|x| x.to_string()).collect::<StepPath>();
        let cases: &[(StepPath, bool, bool, bool)] = &[
            // (path, in a failure handler, in a handler, after the script)
            (failure_step(1), true, true, true),
            (failure_step(12), true, true, true),
            (undone_step(2), false, true, true),
            (p(&["on undone (session 2)", "tell"]), false, true, true),
            (p(&[UNDO, "stop writes"]), false, false, true),
            (p(&["on failure (session x)"]), false, false, false),
            (p(&["on undone"]), false, false, false),
            (
                p(&["report", "on failure (session 1)"]),
                false,
                false,
                false,
            ),
            (p(&["stop writes"]), false, false, false),
            (p(&[]), false, false, false),
        ];
        for (path, failure, handler, after) in cases {
            assert_eq!(in_failure_step(path), *failure, "{path:?}");
            assert_eq!(in_handler_step(path), *handler, "{path:?}");
            assert_eq!(after_the_script(path), *after, "{path:?}");
        }
    }

    /// Found by the property below: a crash between a record and its newline.
    #[test]
    fn a_complete_last_record_without_its_newline_is_torn() {
        let full = sample_journal();
        let text = full.trim_end_matches('\n');
        let loaded = parse(std::path::Path::new("j"), text).unwrap();
        assert_eq!(loaded.records.len(), 3);
        assert!(loaded.torn_tail.is_some());
        assert_eq!(loaded.intact_len as usize, text.rfind('\n').unwrap() + 1);
    }

    proptest! {
        /// Whatever the bytes, the reader answers (records or an error), never panics.
        #[test]
        fn arbitrary_text_never_panics(text in "\\PC*") {
            let _ = parse(std::path::Path::new("j"), &text);
        }

        /// A journal cut anywhere (a crash mid-write) reads back as its whole records, with the
        /// cut line reported as torn, never as an error.
        #[test]
        fn a_journal_cut_anywhere_is_its_intact_prefix(cut in 0usize..600) {
            let full = sample_journal();
            let mut cut = cut.min(full.len());
            while !full.is_char_boundary(cut) { cut -= 1; }
            let text = &full[..cut];
            let loaded = parse(std::path::Path::new("j"), text).expect("a torn tail is not an error");
            let whole_lines = text.matches('\n').count();
            prop_assert_eq!(loaded.records.len(), whole_lines);
            prop_assert_eq!(loaded.torn_tail.is_some(), !text.is_empty() && !text.ends_with('\n'));
            prop_assert_eq!(loaded.intact_len as usize, text.rfind('\n').map(|i| i + 1).unwrap_or(0));
        }

        /// Damage to a line other than the last is always an error naming its line.
        #[test]
        fn damage_in_the_middle_is_an_error(line in 0usize..3, garbage in "[^\\n]{1,20}") {
            let full = sample_journal();
            let mut lines: Vec<String> = full.lines().map(str::to_string).collect();
            lines[line] = format!("{{{garbage}");
            let text = lines.join("\n") + "\n";
            match parse(std::path::Path::new("j"), &text) {
                Err(Error::Journal { message, .. }) => {
                    let wanted = format!("line {} ", line + 1);
                    prop_assert!(message.contains(&wanted), "{}", message);
                }
                other => prop_assert!(false, "expected an error, got {:?}", other.map(|l| l.records.len())),
            }
        }
    }
}
