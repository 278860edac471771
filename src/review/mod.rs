//! `runbook report`: a run read back from its journal for the people who were not watching —
//! the post-incident review. [`build`] turns the records into a [`RunReport`] (pure: no clock,
//! no store), which renders as Markdown (pasteable into an incident document), as one
//! self-contained HTML file with a timeline, or as JSON.
//!
//! The journal holds no secret values (secrets are references, free text was masked when it
//! was written); every text shown is passed through the URL password mask once more.

mod html;
mod markdown;

use serde::Serialize;
use serde_json::Value;

pub use html::html;
pub use markdown::markdown;

use crate::inventory::InventoryEdit;
use crate::journal::{show_path, Event, Record, RunStatus, StepPath};
use crate::secret::mask_url_passwords;

/// A run, as its report shows it. Times are milliseconds from the run's first record.
#[derive(Debug, Clone, Serialize)]
pub struct RunReport {
    pub run_id: String,
    pub runbook: String,
    pub runbook_sha256: String,
    pub status: RunStatus,
    /// RFC 3339, UTC.
    pub started_at: String,
    pub ended_at: Option<String>,
    /// From the first record to the last.
    pub wall_ms: u64,
    pub params: serde_json::Map<String, Value>,
    pub inventory_file: Option<String>,
    /// What started it when no person did (`runbook watch`: the signals and the observation).
    pub trigger: Option<Value>,
    /// Who worked on the run, in order, each once.
    pub operators: Vec<String>,
    /// Where, in order, each once.
    pub hosts: Vec<String>,
    /// What the runbook recorded with `result(name, value)`.
    pub results: Vec<ResultEntry>,
    pub steps: Vec<StepRow>,
    pub actions: Vec<ActionRow>,
    pub waits: Vec<WaitRow>,
    pub approvals: Vec<ApprovalRow>,
    pub failures: Vec<Failure>,
    /// Each process that worked on the run: the first, then each resume.
    pub sessions: Vec<Session>,
    pub logs: Vec<LogLine>,
    pub time: TimeSplit,
}

#[derive(Debug, Clone, Serialize)]
pub struct ResultEntry {
    pub name: String,
    pub value: Value,
    pub step: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct StepRow {
    pub path: StepPath,
    /// The path as the operator reads it ("maintain us-east-1 › drain").
    pub name: String,
    pub depth: usize,
    pub start_ms: u64,
    /// When it last ended (or was cut off).
    pub end_ms: u64,
    /// Time it ran, summed over the sessions it ran in.
    pub duration_ms: u64,
    /// "finished", "failed", "running" (the run still runs) or "stopped" (cut off).
    pub status: String,
    /// Failed attempts retried: of the step, and of its actions.
    pub retries: u32,
    /// The sessions it ran in (1 = the first process).
    pub sessions: Vec<usize>,
}

#[derive(Debug, Clone, Serialize)]
pub struct ActionRow {
    pub step: String,
    pub seq: u32,
    pub action: String,
    /// The region or target it was about, when its input names one.
    pub target: Option<String>,
    pub write: bool,
    pub start_ms: u64,
    pub end_ms: u64,
    /// "ok", "failed", "skipped" or "in flight" (no end recorded).
    pub status: String,
    pub retries: u32,
}

#[derive(Debug, Clone, Serialize)]
pub struct WaitRow {
    pub step: String,
    pub start_ms: u64,
    pub end_ms: u64,
    pub duration_ms: u64,
}

#[derive(Debug, Clone, Serialize)]
pub struct ApprovalRow {
    pub step: String,
    pub message: String,
    pub asked_at: String,
    pub asked_ms: u64,
    /// None: still waiting (or never answered).
    pub answered_at: Option<String>,
    pub answered_ms: Option<u64>,
    pub by: Option<String>,
    /// "terminal", "--yes" or "resume --approve".
    pub via: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Failure {
    pub at: String,
    pub at_ms: u64,
    /// The step, and the action when one failed.
    pub step: String,
    pub action: Option<String>,
    pub message: String,
    /// The runbook caught it and its step finished.
    pub handled: bool,
}

#[derive(Debug, Clone, Serialize)]
pub struct Session {
    pub n: usize,
    /// "started" or "resumed".
    pub kind: String,
    pub operator: String,
    pub host: String,
    pub pid: u32,
    pub engine_version: String,
    pub started_at: String,
    pub start_ms: u64,
    pub end_ms: u64,
    /// How it ended: "finished", "failed: …", "paused: …", "interrupted: …", "stopped without
    /// a record (killed or the host lost)", or "running".
    pub ended: String,
    /// A resume's decision about the action left in flight.
    pub inflight: Option<String>,
    /// The inventory keys a resume read changed from what the run had (a value fixed before
    /// it): what was changed in the middle of the run.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub inventory_changed: Vec<String>,
}

impl Session {
    /// How it started, as the sessions tables show it: "resumed 06:01:02", and what of the
    /// inventory that resume read changed.
    pub fn started_text(&self) -> String {
        let mut text = format!("{} {}", self.kind, clock(&self.started_at));
        if !self.inventory_changed.is_empty() {
            text.push_str(&format!(
                " with the inventory's {} changed",
                self.inventory_changed.join(", ")
            ));
        }
        text
    }

    /// How it ended, with a resume's decision about the action left in flight.
    pub fn ended_text(&self) -> String {
        match &self.inflight {
            Some(i) => format!("{} (in-flight action: {i})", self.ended),
            None => self.ended.clone(),
        }
    }

    /// A process that started (or resumed) the run at record `r`.
    fn of(r: &Record, at: u64, operator: &str, host: &str, pid: u32, version: &str) -> Session {
        Session {
            n: 1,
            kind: "started".into(),
            operator: operator.into(),
            host: host.into(),
            pid,
            engine_version: version.into(),
            started_at: r.at.clone(),
            start_ms: at,
            end_ms: at,
            ended: String::new(),
            inflight: None,
            inventory_changed: vec![],
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct LogLine {
    pub at_ms: u64,
    pub step: String,
    pub message: String,
}

/// Where the wall time went.
#[derive(Debug, Clone, Default, Serialize)]
pub struct TimeSplit {
    /// In actions (top-level ones; parallel branches counted once per branch).
    pub actions_ms: u64,
    /// In timers (`sleep`).
    pub waits_ms: u64,
    /// Waiting for approvals.
    pub approvals_ms: u64,
    /// Between sessions: the run was stopped.
    pub stopped_ms: u64,
}

fn ms_of(at: &str) -> Option<u64> {
    let t = humantime::parse_rfc3339_weak(at).ok()?;
    t.duration_since(std::time::UNIX_EPOCH)
        .ok()
        .map(|d| d.as_millis() as u64)
}

/// How long before its record was stamped a timed wait began. The wait begins when its end is
/// set, a moment before the record is written; measured from the stamp, every wait would read a
/// few milliseconds short of what the runbook asked for. 0 when the record's end does not fit
/// (an end before the wait's own length, or a start a second or more away from the stamp).
fn began_before_stamp(stamped_ms: u64, until_ms: u64, duration_ms: u64) -> u64 {
    until_ms
        .checked_sub(duration_ms)
        .map(|began| stamped_ms.saturating_sub(began))
        .filter(|lead| *lead < 1000)
        .unwrap_or(0)
}

fn text(s: &str) -> String {
    mask_url_passwords(s)
}

/// What an action's input names: its region (`name`), else its context or zone.
fn target_of(input: &Value) -> Option<String> {
    ["name", "context", "zone", "deployment"]
        .iter()
        .find_map(|k| input.get(*k).and_then(Value::as_str))
        .map(text)
}

#[derive(Default)]
struct StepState {
    row: Option<StepRow>,
    open: Option<u64>,
}

/// The report of a run from its journal records. `status` is the run's status as the caller
/// knows it (a run whose process is gone shows as crashed).
pub fn build(run_id: &str, records: &[Record], status: RunStatus) -> RunReport {
    let t0 = records.first().and_then(|r| ms_of(&r.at)).unwrap_or(0);
    let off = |r: &Record| ms_of(&r.at).unwrap_or(t0).saturating_sub(t0);
    let mut rep = RunReport {
        run_id: run_id.to_string(),
        runbook: String::new(),
        runbook_sha256: String::new(),
        status,
        started_at: records.first().map(|r| r.at.clone()).unwrap_or_default(),
        ended_at: None,
        wall_ms: records.last().map(off).unwrap_or(0),
        params: Default::default(),
        inventory_file: None,
        trigger: None,
        operators: vec![],
        hosts: vec![],
        results: vec![],
        steps: vec![],
        actions: vec![],
        waits: vec![],
        approvals: vec![],
        failures: vec![],
        sessions: vec![],
        logs: vec![],
        time: TimeSplit::default(),
    };
    let mut order: Vec<String> = Vec::new();
    let mut steps: std::collections::HashMap<String, StepState> = Default::default();
    let mut open_actions: std::collections::HashMap<(String, u32), usize> = Default::default();
    let mut open_timers: std::collections::HashMap<(String, u32), (u64, u64)> = Default::default();
    let mut open_approvals: std::collections::HashMap<(String, u32), usize> = Default::default();
    let mut step_retries: std::collections::HashMap<String, u32> = Default::default();

    // The inventory as the run last had it, to name what a resume changed.
    let mut inventory_had = Value::Null;
    for r in records {
        let at = off(r);
        if !matches!(r.event, Event::RunStarted { .. } | Event::RunResumed { .. }) {
            if let Some(s) = rep.sessions.last_mut() {
                s.end_ms = at;
            }
        }
        match &r.event {
            Event::RunStarted {
                runbook,
                runbook_sha256,
                params,
                inventory_file,
                engine_version,
                operator,
                host,
                pid,
                trigger,
                inventory,
                ..
            } => {
                inventory_had = inventory.clone();
                rep.trigger = trigger.as_deref().cloned();
                rep.runbook = runbook.clone();
                rep.runbook_sha256 = runbook_sha256.clone();
                rep.params = params
                    .iter()
                    .map(|(k, v)| {
                        let v = match v {
                            Value::String(s) => Value::String(text(s)),
                            other => other.clone(),
                        };
                        (k.clone(), v)
                    })
                    .collect();
                rep.inventory_file = inventory_file.clone();
                let mut s = Session::of(r, at, operator, host, *pid, engine_version);
                s.n = rep.sessions.len() + 1;
                rep.sessions.push(s);
            }
            Event::RunResumed {
                engine_version,
                operator,
                host,
                pid,
                inflight,
                inventory,
                ..
            } => {
                // Steps the previous process left open ran until it stopped.
                let stopped = rep.sessions.last().map(|s| s.end_ms).unwrap_or(at);
                for st in steps.values_mut() {
                    if let (Some(row), Some(from)) = (st.row.as_mut(), st.open.take()) {
                        row.duration_ms += stopped.saturating_sub(from);
                        row.end_ms = stopped;
                        row.status = "stopped".into();
                    }
                }
                let mut s = Session::of(r, at, operator, host, *pid, engine_version);
                s.n = rep.sessions.len() + 1;
                s.kind = "resumed".into();
                s.inflight = inflight.clone();
                if let Some(read) = inventory {
                    s.inventory_changed = InventoryEdit::between(&inventory_had, read).keys();
                    inventory_had = read.clone();
                }
                rep.sessions.push(s);
            }
            Event::StepStarted { step } => {
                let key = show_path(step);
                let session = rep.sessions.len().max(1);
                let st = steps.entry(key.clone()).or_default();
                if st.row.is_none() {
                    order.push(key.clone());
                    st.row = Some(StepRow {
                        path: step.clone(),
                        name: key.clone(),
                        depth: step.len().saturating_sub(1),
                        start_ms: at,
                        end_ms: at,
                        duration_ms: 0,
                        status: "running".into(),
                        retries: 0,
                        sessions: vec![],
                    });
                }
                let row = st.row.as_mut().unwrap();
                if !row.sessions.contains(&session) {
                    row.sessions.push(session);
                }
                row.status = "running".into();
                st.open = Some(at);
            }
            Event::StepFinished { step, .. } | Event::StepFailed { step, .. } => {
                let key = show_path(step);
                let st = steps.entry(key.clone()).or_default();
                if let (Some(row), Some(from)) = (st.row.as_mut(), st.open.take()) {
                    row.duration_ms += at.saturating_sub(from);
                    row.end_ms = at;
                    row.status = match &r.event {
                        Event::StepFinished { .. } => "finished".into(),
                        Event::StepFailed {
                            will_retry: true, ..
                        } => {
                            *step_retries.entry(key.clone()).or_default() += 1;
                            "retrying".into()
                        }
                        _ => "failed".into(),
                    };
                }
            }
            Event::ActionStarted {
                step,
                seq,
                action,
                input,
                write,
                ..
            } => {
                let key = (show_path(step), *seq);
                open_actions.insert(key.clone(), rep.actions.len());
                rep.actions.push(ActionRow {
                    step: key.0,
                    seq: *seq,
                    action: action.clone(),
                    target: target_of(input),
                    write: *write,
                    start_ms: at,
                    end_ms: at,
                    status: "in flight".into(),
                    retries: 0,
                });
            }
            Event::ActionFinished {
                step,
                seq,
                skipped,
                retries,
                ..
            } => {
                if let Some(i) = open_actions.remove(&(show_path(step), *seq)) {
                    let a = &mut rep.actions[i];
                    a.end_ms = at;
                    a.status = if *skipped { "skipped" } else { "ok" }.into();
                    a.retries = *retries;
                }
            }
            Event::ActionFailed {
                step,
                seq,
                error,
                retries,
                ..
            } => {
                let key = (show_path(step), *seq);
                let mut action = None;
                if let Some(i) = open_actions.remove(&key) {
                    let a = &mut rep.actions[i];
                    a.end_ms = at;
                    a.status = "failed".into();
                    a.retries = *retries;
                    action = Some(a.action.clone());
                }
                rep.failures.push(Failure {
                    at: r.at.clone(),
                    at_ms: at,
                    step: key.0,
                    action,
                    message: text(error),
                    handled: false,
                });
            }
            Event::TimerStarted {
                step,
                seq,
                duration_ms,
                until_ms,
            } => {
                let lead = ms_of(&r.at)
                    .map(|stamped| began_before_stamp(stamped, *until_ms, *duration_ms))
                    .unwrap_or(0);
                let from = at.saturating_sub(lead);
                open_timers.insert((show_path(step), *seq), (from, *duration_ms));
            }
            Event::TimerFired { step, seq } => {
                let key = (show_path(step), *seq);
                if let Some((from, _)) = open_timers.remove(&key) {
                    rep.waits.push(WaitRow {
                        step: key.0,
                        start_ms: from,
                        end_ms: at,
                        duration_ms: at.saturating_sub(from),
                    });
                }
            }
            Event::ApprovalRequested { step, seq, message } => {
                let key = (show_path(step), *seq);
                open_approvals.insert(key.clone(), rep.approvals.len());
                rep.approvals.push(ApprovalRow {
                    step: key.0,
                    message: text(message),
                    asked_at: r.at.clone(),
                    asked_ms: at,
                    answered_at: None,
                    answered_ms: None,
                    by: None,
                    via: None,
                });
            }
            Event::Approved { step, seq, by, via } => {
                let key = (show_path(step), *seq);
                match open_approvals.remove(&key) {
                    Some(i) => {
                        let a = &mut rep.approvals[i];
                        a.answered_at = Some(r.at.clone());
                        a.answered_ms = Some(at);
                        a.by = Some(by.clone());
                        a.via = Some(via.clone());
                    }
                    None => rep.approvals.push(ApprovalRow {
                        step: key.0,
                        message: String::new(),
                        asked_at: r.at.clone(),
                        asked_ms: at,
                        answered_at: Some(r.at.clone()),
                        answered_ms: Some(at),
                        by: Some(by.clone()),
                        via: Some(via.clone()),
                    }),
                }
            }
            Event::Log { step, message } => rep.logs.push(LogLine {
                at_ms: at,
                step: show_path(step),
                message: text(message),
            }),
            Event::Result { step, name, value } => rep.results.push(ResultEntry {
                name: name.clone(),
                value: match value {
                    Value::String(s) => Value::String(text(s)),
                    other => other.clone(),
                },
                step: show_path(step),
            }),
            ending => {
                if let Event::RunFailed { error, .. } = ending {
                    rep.failures.push(Failure {
                        at: r.at.clone(),
                        at_ms: at,
                        step: "(run)".into(),
                        action: None,
                        message: text(error),
                        handled: false,
                    });
                }
                if let (Some(how), Some(s)) = (ending.ending(), rep.sessions.last_mut()) {
                    s.ended = text(&how);
                }
            }
        }
    }

    // What was left open when the records end.
    let last = rep.wall_ms;
    let still = status == RunStatus::Running;
    let n = rep.sessions.len();
    for (i, s) in rep.sessions.iter_mut().enumerate() {
        if s.ended.is_empty() {
            s.ended = if i + 1 == n && still {
                "running".into()
            } else {
                "stopped without a record (killed, or its host lost)".into()
            };
        }
    }
    for key in &order {
        let st = steps.get_mut(key).unwrap();
        let mut row = st.row.take().unwrap();
        if let Some(from) = st.open.take() {
            row.duration_ms += last.saturating_sub(from);
            row.end_ms = last;
            row.status = if still { "running" } else { "stopped" }.into();
        }
        row.retries = step_retries.get(key).copied().unwrap_or(0)
            + rep
                .actions
                .iter()
                .filter(|a| a.step == *key)
                .map(|a| a.retries)
                .sum::<u32>();
        rep.steps.push(row);
    }
    tree_order(&mut rep.steps);
    for f in rep.failures.iter_mut().filter(|f| f.action.is_some()) {
        f.handled = rep
            .steps
            .iter()
            .any(|s| s.name == f.step && s.status == "finished");
    }
    // An action left in flight ends where its session did: an interrupted one must not span
    // the time the run was stopped, nor count it as time in actions.
    for a in rep.actions.iter_mut().filter(|a| a.status == "in flight") {
        a.end_ms = rep
            .sessions
            .iter()
            .rev()
            .find(|s| s.start_ms <= a.start_ms)
            .map_or(last, |s| s.end_ms)
            .max(a.start_ms);
    }
    for ((step, _), (from, dur)) in open_timers {
        let end = (from + dur).min(last);
        rep.waits.push(WaitRow {
            step,
            start_ms: from,
            end_ms: end,
            duration_ms: end.saturating_sub(from),
        });
    }
    rep.waits.sort_by_key(|w| w.start_ms);

    for s in &rep.sessions {
        if !rep.operators.contains(&s.operator) {
            rep.operators.push(s.operator.clone());
        }
        if !rep.hosts.contains(&s.host) {
            rep.hosts.push(s.host.clone());
        }
    }
    rep.ended_at = if rep.status.is_over()
        || matches!(
            rep.status,
            RunStatus::Failed | RunStatus::Paused | RunStatus::Interrupted
        ) {
        records.last().map(|r| r.at.clone())
    } else {
        None
    };
    let approvals = || {
        rep.approvals
            .iter()
            .map(|a| (a.asked_ms, a.answered_ms.unwrap_or(last).max(a.asked_ms)))
    };
    let gaps = || {
        rep.sessions
            .windows(2)
            .map(|w| (w[0].end_ms, w[1].start_ms.max(w[0].end_ms)))
    };
    rep.time = TimeSplit {
        actions_ms: outermost(&rep.actions),
        waits_ms: union(rep.waits.iter().map(|w| (w.start_ms, w.end_ms))),
        approvals_ms: union(approvals()),
        // A run paused for an approval is stopped between sessions too: that time is the
        // approval's, so that the parts add up to no more than the wall time.
        stopped_ms: union(gaps().chain(approvals())) - union(approvals()),
    };
    rep
}

/// Steps as a tree: each step right after its parent (and its earlier siblings' subtrees),
/// siblings in the order they started — parallel branches start together and would
/// interleave otherwise.
fn tree_order(steps: &mut [StepRow]) {
    let first: std::collections::HashMap<Vec<String>, usize> = steps
        .iter()
        .enumerate()
        .rev()
        .flat_map(|(i, s)| (1..=s.path.len()).map(move |n| (s.path[..n].to_vec(), i)))
        .collect();
    let key = |s: &StepRow| -> Vec<usize> {
        (1..=s.path.len())
            .map(|n| first.get(&s.path[..n]).copied().unwrap_or(0))
            .collect()
    };
    steps.sort_by_key(key);
}

/// Time inside actions: the union of their intervals, so parallel branches' overlapping
/// actions count once.
fn outermost(actions: &[ActionRow]) -> u64 {
    union(actions.iter().map(|a| (a.start_ms, a.end_ms)))
}

/// The length of a union of intervals.
fn union(spans: impl Iterator<Item = (u64, u64)>) -> u64 {
    let mut spans: Vec<(u64, u64)> = spans.collect();
    spans.sort();
    let mut total = 0;
    let mut cur: Option<(u64, u64)> = None;
    for (s, e) in spans {
        match cur {
            Some((cs, ce)) if s <= ce => cur = Some((cs, ce.max(e))),
            Some((cs, ce)) => {
                total += ce - cs;
                cur = Some((s, e));
            }
            None => cur = Some((s, e)),
        }
    }
    if let Some((cs, ce)) = cur {
        total += ce - cs;
    }
    total
}

/// A result's value as text.
pub(crate) fn value_text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// "+1m 05s" from the run's start.
pub(crate) fn offset(ms: u64) -> String {
    format!("+{}", crate::report::human_ms(ms))
}

/// The time of day of an RFC 3339 timestamp ("06:12:02").
pub(crate) fn clock(at: &str) -> String {
    at.get(11..19).unwrap_or(at).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn rec(n: u64, secs: f64, event: Event) -> Record {
        let ms = (secs * 1000.0).round() as u64;
        Record {
            v: 1,
            n,
            at: format!(
                "2026-11-22T06:{:02}:{:02}.{:03}Z",
                ms / 60_000,
                (ms / 1000) % 60,
                ms % 1000
            ),
            event,
        }
    }

    fn path(s: &str) -> StepPath {
        s.split(" › ").map(str::to_string).collect()
    }

    fn started(op: &str, host: &str) -> Event {
        Event::RunStarted {
            run_id: "r1".into(),
            runbook: "/rb/failover.rhai".into(),
            runbook_sha256: "ab".into(),
            params: json!({"target": "eu", "url": "postgres://u:hunter2@h/db"})
                .as_object()
                .unwrap()
                .clone(),
            inventory_file: None,
            inventory: json!({}),
            engine_version: "0.1.0".into(),
            operator: op.into(),
            host: host.into(),
            pid: 7,
            trigger: None,
            invocation: None,
        }
    }

    /// A run interrupted in "promote" and resumed by someone else, who approves and finishes.
    fn interrupted_and_resumed() -> Vec<Record> {
        let mut n = 0;
        let mut r = |secs: f64, e: Event| {
            n += 1;
            rec(n, secs, e)
        };
        vec![
            r(0.0, started("alice", "ops-1")),
            r(
                0.1,
                Event::StepStarted {
                    step: path("observe"),
                },
            ),
            r(
                0.1,
                Event::ActionStarted {
                    step: path("observe"),
                    seq: 1,
                    action: "topology::observe".into(),
                    input: json!({}),
                    input_hash: "h".into(),
                    write: false,
                    idempotent: true,
                    notice: false,
                },
            ),
            r(
                0.6,
                Event::ActionFinished {
                    step: path("observe"),
                    seq: 1,
                    output: json!({}),
                    elapsed_ms: 500,
                    skipped: false,
                    retries: 2,
                },
            ),
            r(
                0.6,
                Event::StepFinished {
                    step: path("observe"),
                    elapsed_ms: 500,
                },
            ),
            r(
                0.7,
                Event::StepStarted {
                    step: path("promote"),
                },
            ),
            r(
                0.7,
                Event::ActionStarted {
                    step: path("promote"),
                    seq: 1,
                    action: "pg::promote".into(),
                    input: json!({"name": "eu"}),
                    input_hash: "h".into(),
                    write: true,
                    idempotent: true,
                    notice: false,
                },
            ),
            r(
                1.0,
                Event::RunInterrupted {
                    reason: "Ctrl-C".into(),
                },
            ),
            r(
                61.0,
                Event::RunResumed {
                    runbook_sha256: "ab".into(),
                    engine_version: "0.1.0".into(),
                    operator: "bob".into(),
                    host: "ops-2".into(),
                    pid: 9,
                    inflight: Some("retry".into()),
                    inventory: Some(json!({ "dns": { "endpoint_url": "http://fixed" } })),
                },
            ),
            r(
                61.0,
                Event::StepStarted {
                    step: path("promote"),
                },
            ),
            r(
                61.0,
                Event::ActionStarted {
                    step: path("promote"),
                    seq: 1,
                    action: "pg::promote".into(),
                    input: json!({"name": "eu"}),
                    input_hash: "h".into(),
                    write: true,
                    idempotent: true,
                    notice: false,
                },
            ),
            r(
                62.0,
                Event::ActionFinished {
                    step: path("promote"),
                    seq: 1,
                    output: json!({}),
                    elapsed_ms: 1000,
                    skipped: false,
                    retries: 0,
                },
            ),
            r(
                62.0,
                Event::Log {
                    step: path("promote"),
                    message: "eu is primary (postgres://u:hunter2@h/db)".into(),
                },
            ),
            r(
                62.0,
                Event::Result {
                    step: path("promote"),
                    name: "data_loss_bound_bytes".into(),
                    value: json!(0),
                },
            ),
            r(
                62.0,
                Event::StepFinished {
                    step: path("promote"),
                    elapsed_ms: 1000,
                },
            ),
            r(62.1, Event::StepStarted { step: path("bake") }),
            r(
                62.1,
                Event::TimerStarted {
                    step: path("bake"),
                    seq: 1,
                    duration_ms: 2000,
                    until_ms: 0,
                },
            ),
            r(
                64.1,
                Event::TimerFired {
                    step: path("bake"),
                    seq: 1,
                },
            ),
            r(
                64.1,
                Event::ApprovalRequested {
                    step: path("bake"),
                    seq: 2,
                    message: "move traffic?".into(),
                },
            ),
            r(
                70.1,
                Event::Approved {
                    step: path("bake"),
                    seq: 2,
                    by: "bob".into(),
                    via: "terminal".into(),
                },
            ),
            r(
                70.2,
                Event::StepFinished {
                    step: path("bake"),
                    elapsed_ms: 8100,
                },
            ),
            r(70.5, Event::RunFinished { elapsed_ms: 70500 }),
        ]
    }

    /// A run that paused for an approval (no terminal) and was resumed with `--approve` 4 s
    /// later: the wait is the approval's, not also time stopped between sessions.
    #[test]
    fn a_pause_for_approval_is_counted_once() {
        let mut n = 0;
        let mut r = |secs: f64, e: Event| {
            n += 1;
            rec(n, secs, e)
        };
        let records = vec![
            r(0.0, started("alice", "ops-1")),
            r(
                0.1,
                Event::StepStarted {
                    step: path("confirm"),
                },
            ),
            r(
                0.1,
                Event::ApprovalRequested {
                    step: path("confirm"),
                    seq: 1,
                    message: "go?".into(),
                },
            ),
            r(
                0.2,
                Event::RunPaused {
                    reason: "waiting for approval".into(),
                },
            ),
            r(
                4.2,
                Event::RunResumed {
                    runbook_sha256: "ab".into(),
                    engine_version: "0.1.0".into(),
                    operator: "alice".into(),
                    host: "ops-1".into(),
                    pid: 2,
                    inflight: None,
                    inventory: None,
                },
            ),
            r(
                4.2,
                Event::StepStarted {
                    step: path("confirm"),
                },
            ),
            r(
                4.2,
                Event::Approved {
                    step: path("confirm"),
                    seq: 1,
                    by: "alice".into(),
                    via: "resume --approve".into(),
                },
            ),
            r(
                4.3,
                Event::StepFinished {
                    step: path("confirm"),
                    elapsed_ms: 100,
                },
            ),
            r(4.3, Event::RunFinished { elapsed_ms: 4300 }),
        ];
        let rep = build("r1", &records, RunStatus::Finished);
        assert_eq!(rep.wall_ms, 4_300);
        assert_eq!(rep.sessions.len(), 2);
        assert_eq!(rep.time.approvals_ms, 4_100);
        assert_eq!(rep.time.stopped_ms, 0);
    }

    #[test]
    fn a_resumed_run_reads_as_two_sessions_with_the_gap_between_them() {
        let rep = build("r1", &interrupted_and_resumed(), RunStatus::Finished);
        assert_eq!(rep.operators, ["alice", "bob"]);
        assert_eq!(rep.hosts, ["ops-1", "ops-2"]);
        assert_eq!(rep.wall_ms, 70_500);
        assert_eq!(rep.sessions.len(), 2);
        assert_eq!(rep.sessions[0].ended, "interrupted: Ctrl-C");
        assert_eq!(rep.sessions[1].ended, "finished");
        assert_eq!(rep.sessions[1].inflight.as_deref(), Some("retry"));
        assert!(rep.sessions[0].inventory_changed.is_empty());
        assert_eq!(rep.sessions[1].inventory_changed, ["dns.endpoint_url"]);
        assert_eq!(rep.time.stopped_ms, 60_000);
        assert_eq!(rep.time.waits_ms, 2_000);
        assert_eq!(rep.time.approvals_ms, 6_000);
        // Steps: name, start, duration, status, retries, sessions.
        type Row<'a> = (&'a str, u64, u64, &'a str, u32, Vec<usize>);
        let table: Vec<Row> = rep
            .steps
            .iter()
            .map(|s| {
                (
                    s.name.as_str(),
                    s.start_ms,
                    s.duration_ms,
                    s.status.as_str(),
                    s.retries,
                    s.sessions.clone(),
                )
            })
            .collect();
        assert_eq!(
            table,
            vec![
                ("observe", 100, 500, "finished", 2, vec![1]),
                // 0.3 s in the first session (cut off by the interrupt), 1 s in the second.
                ("promote", 700, 1_300, "finished", 0, vec![1, 2]),
                ("bake", 62_100, 8_100, "finished", 0, vec![2]),
            ]
        );
        // The action left in flight by the interrupt, then run again.
        let promote: Vec<&str> = rep
            .actions
            .iter()
            .filter(|a| a.action == "pg::promote")
            .map(|a| a.status.as_str())
            .collect();
        assert_eq!(promote, ["in flight", "ok"]);
        // Cut off where its session ended: the time the run was stopped is nobody's action.
        let cut = rep
            .actions
            .iter()
            .find(|a| a.status == "in flight")
            .unwrap();
        assert_eq!((cut.start_ms, cut.end_ms), (700, rep.sessions[0].end_ms));
        let t = &rep.time;
        assert!(
            t.actions_ms + t.waits_ms + t.approvals_ms + t.stopped_ms <= rep.wall_ms,
            "{t:?} add up to more than {} ms",
            rep.wall_ms
        );
        assert_eq!(rep.approvals[0].by.as_deref(), Some("bob"));
        assert_eq!(rep.approvals[0].answered_ms, Some(70_100));
        assert_eq!(rep.results[0].name, "data_loss_bound_bytes");
        // No password in what is shown.
        let all = serde_json::to_string(&rep).unwrap();
        assert!(!all.contains("hunter2"), "{all}");
    }

    #[test]
    fn a_timed_wait_is_measured_from_when_its_end_was_set() {
        // (stamped, until, duration) → how long before the stamp the wait began.
        let cases = [
            (10_000, 12_000, 2_000, 0),   // stamped the moment it began
            (10_004, 12_000, 2_000, 4),   // stamped 4 ms late
            (10_000, 12_050, 2_000, 0),   // an end later than it could be: the stamp
            (10_000, 0, 2_000, 0),        // no end recorded
            (10_000, 1_000, 2_000, 0),    // an end before the wait's own length
            (500_000, 12_000, 2_000, 0),  // an end far from the stamp: the stamp
            (10_999, 12_000, 2_000, 999), // just under a second
        ];
        for (stamped, until, dur, want) in cases {
            assert_eq!(
                began_before_stamp(stamped, until, dur),
                want,
                "stamped {stamped}, until {until}, duration {dur}"
            );
        }

        // The bake step's 2 s wait, stamped 4 ms after its end was set, reads as 2 s.
        let mut records = interrupted_and_resumed();
        for r in &mut records {
            let stamped = ms_of(&r.at).unwrap();
            if let Event::TimerStarted { until_ms, .. } = &mut r.event {
                *until_ms = stamped - 4 + 2_000;
            }
        }
        let rep = build("r1", &records, RunStatus::Finished);
        assert_eq!(rep.waits.len(), 1);
        assert_eq!(rep.waits[0].duration_ms, 2_004);
        assert_eq!(rep.waits[0].end_ms - rep.waits[0].start_ms, 2_004);
    }

    #[test]
    fn a_run_cut_off_shows_what_was_open() {
        let mut records = interrupted_and_resumed();
        records.truncate(7); // killed while "promote" ran
        let rep = build("r1", &records, RunStatus::Crashed);
        assert_eq!(
            rep.sessions[0].ended,
            "stopped without a record (killed, or its host lost)"
        );
        let promote = rep.steps.iter().find(|s| s.name == "promote").unwrap();
        assert_eq!(promote.status, "stopped");
        assert_eq!(rep.actions.last().unwrap().status, "in flight");
        assert_eq!(rep.ended_at, None);
        let rep = build("r1", &records, RunStatus::Running);
        assert_eq!(rep.sessions[0].ended, "running");
        assert_eq!(rep.steps[1].status, "running");
    }

    #[test]
    fn parallel_branches_list_under_their_parent_in_start_order() {
        let row = |p: &str| StepRow {
            path: path(p),
            name: p.into(),
            depth: 0,
            start_ms: 0,
            end_ms: 0,
            duration_ms: 0,
            status: "finished".into(),
            retries: 0,
            sessions: vec![],
        };
        // As the journal has them: both branches start before either's inner step.
        let mut steps = vec![
            row("sync"),
            row("sync › [eu]"),
            row("sync › [ap]"),
            row("sync › [ap] › copy"),
            row("sync › [eu] › copy"),
            row("sync › [eu] › check"),
            row("after"),
        ];
        tree_order(&mut steps);
        let names: Vec<&str> = steps.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(
            names,
            [
                "sync",
                "sync › [eu]",
                "sync › [eu] › copy",
                "sync › [eu] › check",
                "sync › [ap]",
                "sync › [ap] › copy",
                "after"
            ]
        );
    }

    #[test]
    fn parallel_actions_count_once_in_the_time_split() {
        let row = |s: u64, e: u64| ActionRow {
            step: "x".into(),
            seq: 1,
            action: "a".into(),
            target: None,
            write: false,
            start_ms: s,
            end_ms: e,
            status: "ok".into(),
            retries: 0,
        };
        let cases: Vec<(Vec<ActionRow>, u64)> = vec![
            (vec![], 0),
            (vec![row(0, 10)], 10),
            (vec![row(0, 10), row(5, 20)], 20),
            (vec![row(0, 10), row(30, 40)], 20),
            (vec![row(0, 100), row(10, 20), row(50, 60)], 100),
        ];
        for (rows, want) in cases {
            assert_eq!(outermost(&rows), want);
        }
    }
}
