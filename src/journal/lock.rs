//! Exclusive run locks, and the claims that outlive a process.
//!
//! A lock has two parts. The *hold* is what a live process keeps (`flock` on a file in the
//! directory store, a session advisory lock in the PostgreSQL store): the kernel or the server
//! releases it when the process dies. The *claim* is the holder record (which run, who, where)
//! written beside it: it stays after the process ends, and is cleared only when the run ends
//! for good (finished, undone, abandoned) or stopped having changed nothing. So a run paused at
//! an approval, interrupted, or cut off mid-change keeps the deployment: the next run of
//! another procedure is refused (exit 4) and told to resume it or abandon it.

use std::fs::{self, File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::fd::AsRawFd;
use std::path::Path;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use super::{Event, Record, RunStatus, Store};
use crate::error::{Awaiting, Error, Next};

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct LockHolder {
    pub run_id: String,
    pub runbook: String,
    pub operator: String,
    pub host: String,
    pub pid: u32,
    pub since: String,
}

impl LockHolder {
    /// The process, without its run: "pid 4242 on host-a, by alice, since 2026-…".
    pub fn process(&self) -> String {
        format!(
            "pid {} on {}, by {}, since {}",
            self.pid, self.host, self.operator, self.since
        )
    }

    pub fn describe(&self) -> String {
        format!(
            "run {} ({}, by {} on {}, pid {}, since {})",
            self.run_id, self.runbook, self.operator, self.host, self.pid, self.since
        )
    }
}

/// The store's side of a held lock: writes or clears the claim while holding it.
pub trait Held: Send {
    fn set_claim(&mut self, holder: Option<&LockHolder>) -> Result<(), Error>;
}

/// Held while alive; the process dying releases the hold, never the claim.
pub struct LockGuard {
    pub name: String,
    /// The claim found when the lock was taken (a run that did not release it), if any.
    pub previous: Option<LockHolder>,
    /// Set when that claim was taken over: its run is over, or changed nothing.
    pub took_over: Option<LockHolder>,
    pub(super) held: Box<dyn Held>,
}

impl LockGuard {
    /// Ends the claim: the run is over (or changed nothing), nobody needs to be told about it.
    pub fn release(mut self) {
        let _ = self.held.set_claim(None);
    }
}

/// Whether a run, as its journal records it, still claims its locks: it was paused or
/// interrupted, or it stopped (failed, or cut off) after starting a change. Returns how it
/// stands ("paused at step 'approval'") when it does.
pub fn claim_of(records: &[Record]) -> Option<String> {
    let status = RunStatus::of(records);
    let mut wrote = false;
    let mut last_step = String::new();
    for r in records {
        match &r.event {
            Event::StepStarted { step } if !super::in_handler_step(step) => {
                last_step = super::show_path(step)
            }
            Event::ActionStarted {
                write: true,
                notice: false,
                ..
            } => wrote = true,
            _ => {}
        }
    }
    use RunStatus::*;
    let holds = match status {
        Paused | Interrupted => true,
        Failed | Running => wrote,
        _ => false,
    };
    let status = if status == Running {
        "cut off"
    } else {
        status.as_str()
    };
    holds.then(|| {
        if last_step.is_empty() {
            status.to_string()
        } else {
            format!("{status} at step '{last_step}'")
        }
    })
}

/// Takes the lock `name` for `holder`'s run: refused while a live process holds it, or while
/// another run that has not ended claims it. Resuming the claiming run is what continues it.
pub fn take(store: &dyn Store, name: &str, holder: &LockHolder) -> Result<LockGuard, Error> {
    let mut guard = hold(store, name, holder)?;
    if let Some(prev) = guard.previous.clone() {
        if prev.run_id != holder.run_id {
            let standing = match store.read(&prev.run_id) {
                Ok(loaded) => claim_of(&loaded.records)
                    .map(|standing| (standing, super::awaiting(&loaded.records))),
                // Its journal is gone: nothing can continue it.
                Err(_) => None,
            };
            if let Some((standing, awaiting)) = standing {
                return Err(claimed(name, &prev, &standing, awaiting));
            }
            guard.took_over = Some(prev);
        } else if prev.pid != holder.pid || prev.host != holder.host {
            guard.took_over = Some(prev);
        }
    }
    guard.held.set_claim(Some(holder))?;
    Ok(guard)
}

/// Holds the lock `name` (without claiming it) for `taker`, who acts on run `taker.run_id`:
/// refused while a live process holds it, except that a process of that very run on its way
/// out is waited for (see `leaving`).
pub fn hold(store: &dyn Store, name: &str, taker: &LockHolder) -> Result<LockGuard, Error> {
    match store.lock(name) {
        Err(held @ Error::Locked { .. }) => match own_claim(store, name, taker) {
            // Another run holds it: refused at once, saying what that run is doing.
            None => Err(held_by_run(store, name).unwrap_or(held)),
            // A process of this very run holds it: it is exiting, or it still runs the run.
            Some((own, records)) => {
                let taken = if leaving(&own, taker, &records) {
                    wait_for_release(store, name, EXIT_GRACE)
                } else {
                    Err(held)
                };
                taken.map_err(|e| match e {
                    Error::Locked { .. } => already_running(&own),
                    e => e,
                })
            }
        },
        taken => taken,
    }
}

/// How long taking a lock waits for a process that is on its way out (see `leaving`).
const EXIT_GRACE: Duration = Duration::from_secs(5);

/// Whether the live process holding a lock is another session of the very run taking it
/// that has recorded how its work ended (paused, interrupted, failed, …): it is exiting and
/// lets go within moments. A resume typed, or sent by a bot, the instant a run pauses waits
/// for it rather than being refused as "locked" — and so does each `lock(..)` its script
/// takes again while replaying.
fn leaving(claim: &LockHolder, taker: &LockHolder, records: &[Record]) -> bool {
    claim.run_id == taker.run_id
        && (claim.host != taker.host || claim.pid != taker.pid)
        && session_ended(records, &claim.host, claim.pid)
}

/// Whether the session that process `pid` on `host` ran of a run recorded an ending after it
/// started or resumed the run.
fn session_ended(records: &[Record], host: &str, pid: u32) -> bool {
    let mut theirs = false;
    let mut ended = false;
    for r in records {
        match &r.event {
            Event::RunStarted {
                host: h, pid: p, ..
            }
            | Event::RunResumed {
                host: h, pid: p, ..
            } => {
                theirs = h == host && *p == pid;
                if theirs {
                    ended = false;
                }
            }
            e if theirs && e.ending().is_some() => ended = true,
            _ => {}
        }
    }
    ended
}

/// The claim on lock `name` when it is the taker's own run, with that run's journal. None
/// for a taker that is not a journaled run (a new run, a watcher's election).
fn own_claim(
    store: &dyn Store,
    name: &str,
    taker: &LockHolder,
) -> Option<(LockHolder, Vec<Record>)> {
    let claims = store.claims().ok()?;
    let (_, own) = claims
        .into_iter()
        // Claims written before they named their lock go by their file names.
        .find(|(n, h)| sanitize(n) == sanitize(name) && h.run_id == taker.run_id)?;
    let loaded = store.read(&taker.run_id).ok()?;
    Some((own, loaded.records))
}

/// The refusal for a run that a live process still runs.
fn already_running(own: &LockHolder) -> Error {
    Error::Locked {
        message: format!(
            "run {} is still running in another process (pid {} on {}, by {}, since {}); one process at a time continues a run",
            own.run_id, own.pid, own.host, own.operator, own.since
        ),
        holder: own.process(),
        next: Next::StopThenResume {
            run: own.run_id.clone(),
            pid: own.pid,
            host: own.host.clone(),
        },
    }
}

/// Takes the lock once its holder lets go, or gives the holder's refusal after `limit`. The
/// pause between tries grows from 25 ms to 250 ms: each try of the PostgreSQL store opens a
/// session, so a holder that takes the whole limit costs a few dozen, not hundreds.
fn wait_for_release(store: &dyn Store, name: &str, limit: Duration) -> Result<LockGuard, Error> {
    let deadline = Instant::now() + limit;
    let mut pause = Duration::from_millis(25);
    loop {
        std::thread::sleep(pause);
        pause = (pause * 2).min(Duration::from_millis(250));
        match store.lock(name) {
            Err(Error::Locked { .. }) if Instant::now() < deadline => continue,
            taken => return taken,
        }
    }
}

/// The refusal for a lock claimed by a run that has not ended.
fn claimed(name: &str, prev: &LockHolder, standing: &str, awaiting: Awaiting) -> Error {
    Error::Claimed(Box::new(crate::error::Claim {
        lock: name.to_string(),
        run: prev.run_id.clone(),
        runbook: prev.runbook.clone(),
        operator: prev.operator.clone(),
        host: prev.host.clone(),
        standing: standing.to_string(),
        awaiting,
    }))
}

/// The lock's file name.
fn sanitize(name: &str) -> String {
    name.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_' | '@') {
                c
            } else {
                '_'
            }
        })
        .collect()
}

fn read_holder(file: &mut File) -> Option<LockHolder> {
    read_claim(file).map(|claim| claim.holder)
}

/// A directory store's lock file as read back: `lock` is missing from a claim written before
/// claims named their lock.
#[derive(Deserialize)]
struct StoredClaim {
    lock: Option<String>,
    #[serde(flatten)]
    holder: LockHolder,
}

fn read_claim(file: &mut File) -> Option<StoredClaim> {
    let mut text = String::new();
    file.seek(SeekFrom::Start(0)).ok()?;
    file.read_to_string(&mut text).ok()?;
    serde_json::from_str(&text).ok()
}

/// The directory store's locks: `<state>/locks/<name>.lock`, held with flock, the claim inside.
pub(super) fn acquire_file(dir: &Path, name: &str) -> Result<LockGuard, Error> {
    let state = dir.parent().unwrap_or(dir);
    fs::create_dir_all(dir).map_err(|e| {
        Error::state_unwritable(format!("cannot create {}: {e}", dir.display()), state)
    })?;
    let path = dir.join(format!("{}.lock", sanitize(name)));
    let mut file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(&path)
        .map_err(|e| {
            Error::state_unwritable(format!("cannot open lock {}: {e}", path.display()), state)
        })?;
    let rc = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
    if rc != 0 {
        // The holder writes its name right after taking the lock: give it a moment.
        let mut current = None;
        for _ in 0..50 {
            current = read_holder(&mut file);
            if current.is_some() {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        return Err(held_by(name, current));
    }
    let previous = read_holder(&mut file);
    Ok(LockGuard {
        name: name.to_string(),
        previous,
        took_over: None,
        held: Box::new(HeldFile {
            file,
            path,
            name: name.to_string(),
        }),
    })
}

/// Whether a process holds the directory store's lock `name`: a shared hold is tried and let go
/// at once (flock has no way to ask without trying; the try lasts microseconds, and a run on
/// this host is known by its process id instead, so only a store shared between hosts asks).
pub(super) fn file_held(dir: &Path, name: &str) -> Result<bool, Error> {
    let path = dir.join(format!("{}.lock", sanitize(name)));
    let file = match File::open(&path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(false),
        Err(e) => {
            return Err(Error::Io(format!(
                "cannot open lock {}: {e}",
                path.display()
            )))
        }
    };
    let rc = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_SH | libc::LOCK_NB) };
    // Closing the file lets go of a hold taken.
    if rc == 0 {
        return Ok(false);
    }
    match std::io::Error::last_os_error() {
        e if e.raw_os_error() == Some(libc::EWOULDBLOCK) => Ok(true),
        e => Err(Error::Io(format!(
            "cannot ask lock {}: {e}",
            path.display()
        ))),
    }
}

/// The claims recorded in the directory store: lock name → holder.
pub(super) fn file_claims(dir: &Path) -> Result<Vec<(String, LockHolder)>, Error> {
    let entries = match fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(vec![]),
        Err(e) => return Err(Error::Io(format!("cannot read {}: {e}", dir.display()))),
    };
    let mut out = Vec::new();
    for e in entries.flatten() {
        let path = e.path();
        if path.extension().is_none_or(|x| x != "lock") {
            continue;
        }
        let Ok(mut file) = File::open(&path) else {
            continue;
        };
        if let Some(claim) = read_claim(&mut file) {
            // The lock's own name, as its claim records it, else the file's.
            let name = claim.lock.unwrap_or_else(|| {
                path.file_stem()
                    .map(|s| s.to_string_lossy().into_owned())
                    .unwrap_or_default()
            });
            out.push((name, claim.holder));
        }
    }
    out.sort_by(|a, b| a.0.cmp(&b.0));
    Ok(out)
}

/// What a directory store's lock file holds: the claim, and the lock's name (its file name
/// is that name made safe for a file system). Read back as `StoredClaim`.
#[derive(Serialize)]
struct ClaimFile<'a> {
    lock: &'a str,
    #[serde(flatten)]
    holder: &'a LockHolder,
}

/// The locked file of the directory store.
struct HeldFile {
    file: File,
    path: std::path::PathBuf,
    name: String,
}

impl Held for HeldFile {
    fn set_claim(&mut self, holder: Option<&LockHolder>) -> Result<(), Error> {
        let text = holder
            .map(|holder| {
                serde_json::to_string(&ClaimFile {
                    lock: &self.name,
                    holder,
                })
                .unwrap_or_default()
            })
            .unwrap_or_default();
        self.file
            .set_len(0)
            .and_then(|_| self.file.seek(SeekFrom::Start(0)))
            .and_then(|_| self.file.write_all(text.as_bytes()))
            .and_then(|_| self.file.sync_data())
            .map_err(|e| {
                let state = self
                    .path
                    .parent()
                    .and_then(Path::parent)
                    .unwrap_or(&self.path);
                Error::state_unwritable(
                    format!("cannot write lock {}: {e}", self.path.display()),
                    state,
                )
            })
    }
}

/// The refusal for a lock a live process holds.
pub(super) fn held_by(name: &str, holder: Option<LockHolder>) -> Error {
    let (who, process) = holder
        .map(|h| (h.describe(), h.process()))
        .unwrap_or_else(|| ("another process".into(), "a process".into()));
    Error::Locked {
        message: format!(
            "the lock '{name}' is held by {who}; two runs of conflicting procedures must not overlap"
        ),
        holder: process,
        next: Next::WaitForHolder,
    }
}

/// The refusal for a lock the live process of another run holds, with what that run is doing
/// now and how to stop it when this cannot wait (a maintenance window of 30 minutes while the
/// primary region is down). None when the claim or its journal cannot be read.
fn held_by_run(store: &dyn Store, name: &str) -> Option<Error> {
    let (_, holder) = store
        .claims()
        .ok()?
        .into_iter()
        .find(|(n, _)| sanitize(n) == sanitize(name))?;
    let records = store.read(&holder.run_id).ok()?.records;
    let doing = doing_now(&records, super::unix_ms())
        .map(|d| format!(", now {d}"))
        .unwrap_or_default();
    Some(Error::Locked {
        message: format!(
            "the lock '{name}' is held by {}{doing}; two runs of conflicting procedures must not overlap",
            holder.describe()
        ),
        holder: holder.process(),
        next: Next::WaitOrStop {
            run: holder.run_id.clone(),
            pid: holder.pid,
            host: holder.host,
        },
    })
}

/// What a running run is doing, by its journal: waiting on a durable timer (with the time
/// left), asking for approval, running an action, or in a step. Of parallel branches, the one
/// that wrote last. None before its first step.
fn doing_now(records: &[Record], now_ms: u64) -> Option<String> {
    enum Doing {
        Step,
        Action(String),
        Timer(u64),
        Approval,
    }
    let mut at: Option<(Vec<String>, Doing)> = None;
    for r in records {
        at = match &r.event {
            Event::StepStarted { step } => Some((step.clone(), Doing::Step)),
            Event::ActionStarted { step, action, .. } => {
                Some((step.clone(), Doing::Action(action.clone())))
            }
            Event::TimerStarted { step, until_ms, .. } => {
                Some((step.clone(), Doing::Timer(*until_ms)))
            }
            Event::ApprovalRequested { step, .. } => Some((step.clone(), Doing::Approval)),
            Event::ActionFinished { step, .. }
            | Event::ActionFailed { step, .. }
            | Event::TimerFired { step, .. }
            | Event::Approved { step, .. } => Some((step.clone(), Doing::Step)),
            // Back in the step around it, if any.
            Event::StepFinished { step, .. } | Event::StepFailed { step, .. } => step
                .split_last()
                .filter(|(_, parent)| !parent.is_empty())
                .map(|(_, parent)| (parent.to_vec(), Doing::Step)),
            e if e.ending().is_some() => None,
            _ => continue,
        };
    }
    let (step, doing) = at?;
    let step = super::show_path(&step);
    Some(match doing {
        Doing::Step => format!("in step '{step}'"),
        Doing::Action(action) => format!("running {action} in step '{step}'"),
        Doing::Timer(until) => {
            let left = Duration::from_secs(until.saturating_sub(now_ms).div_ceil(1000));
            format!(
                "waiting in step '{step}' ({} left)",
                humantime::format_duration(left)
            )
        }
        Doing::Approval => format!("asking for approval in step '{step}'"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn rec(event: Event) -> Record {
        Record {
            v: 1,
            n: 0,
            at: String::new(),
            event,
        }
    }

    fn started() -> Event {
        Event::RunStarted {
            run_id: "r".into(),
            runbook: "x.rhai".into(),
            runbook_sha256: String::new(),
            params: Default::default(),
            inventory_file: None,
            inventory: json!({}),
            engine_version: String::new(),
            operator: String::new(),
            host: String::new(),
            pid: 1,
            trigger: None,
            invocation: None,
        }
    }

    fn step(name: &str) -> Event {
        Event::StepStarted {
            step: vec![name.into()],
        }
    }

    fn action(write: bool) -> Event {
        Event::ActionStarted {
            step: vec!["s".into()],
            seq: 1,
            action: "k8s::scale".into(),
            input: json!({}),
            input_hash: String::new(),
            write,
            idempotent: true,
            notice: false,
        }
    }

    fn notice() -> Event {
        Event::ActionStarted {
            step: vec!["alert".into()],
            seq: 1,
            action: "notify::slack".into(),
            input: json!({}),
            input_hash: String::new(),
            write: true,
            idempotent: false,
            notice: true,
        }
    }

    #[test]
    fn what_a_running_run_is_doing_by_its_journal() {
        let path = |p: &[&str]| p.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        let timer = |until_ms| Event::TimerStarted {
            step: path(&["eu-west-1", "maintenance window"]),
            seq: 1,
            duration_ms: 300_000,
            until_ms,
        };
        let now = 1_000_000;
        let cases: Vec<(Vec<Event>, Option<&str>)> = vec![
            (vec![], None),
            (vec![started()], None),
            (vec![started(), step("observe")], Some("in step 'observe'")),
            (
                vec![
                    started(),
                    step("observe"),
                    Event::StepFinished {
                        step: path(&["observe"]),
                        elapsed_ms: 1,
                    },
                ],
                None,
            ),
            (
                vec![
                    started(),
                    timer(now + 1_000),
                    Event::StepFinished {
                        step: path(&["eu-west-1", "maintenance window"]),
                        elapsed_ms: 1,
                    },
                ],
                Some("in step 'eu-west-1'"),
            ),
            (
                vec![started(), step("s"), action(true)],
                Some("running k8s::scale in step 's'"),
            ),
            (
                vec![started(), timer(now + 280_000)],
                Some("waiting in step 'eu-west-1 › maintenance window' (4m 40s left)"),
            ),
            // A part of a second left counts as a second; a timer past its end, as none.
            (
                vec![started(), timer(now + 1_500)],
                Some("waiting in step 'eu-west-1 › maintenance window' (2s left)"),
            ),
            (
                vec![started(), timer(now - 5)],
                Some("waiting in step 'eu-west-1 › maintenance window' (0s left)"),
            ),
            (
                vec![
                    started(),
                    timer(now + 1_000),
                    Event::TimerFired {
                        step: path(&["eu-west-1", "maintenance window"]),
                        seq: 1,
                    },
                ],
                Some("in step 'eu-west-1 › maintenance window'"),
            ),
            (
                vec![
                    started(),
                    Event::ApprovalRequested {
                        step: path(&["approval"]),
                        seq: 1,
                        message: "go?".into(),
                    },
                ],
                Some("asking for approval in step 'approval'"),
            ),
            // Ended: nothing running (a claim of a stopped run is another message).
            (
                vec![
                    started(),
                    step("a"),
                    Event::RunPaused { reason: "x".into() },
                ],
                None,
            ),
        ];
        for (events, want) in cases {
            let records: Vec<Record> = events.into_iter().map(rec).collect();
            assert_eq!(
                doing_now(&records, now).as_deref(),
                want,
                "{:?}",
                records.iter().map(|r| &r.event).collect::<Vec<_>>()
            );
        }
    }

    #[test]
    fn which_runs_keep_their_claim() {
        let failed = Event::RunFailed {
            error: "x".into(),
            failed_steps: vec![],
        };
        let cases: Vec<(&str, Vec<Event>, Option<&str>)> = vec![
            (
                "finished",
                vec![
                    started(),
                    action(true),
                    Event::RunFinished { elapsed_ms: 1 },
                ],
                None,
            ),
            (
                "undone",
                vec![
                    started(),
                    action(true),
                    Event::RunUndone {
                        undone_steps: vec![],
                    },
                ],
                None,
            ),
            (
                "abandoned",
                vec![
                    started(),
                    action(true),
                    Event::RunPaused { reason: "r".into() },
                    Event::RunAbandoned {
                        by: "ann".into(),
                        reason: None,
                    },
                ],
                None,
            ),
            (
                "paused before any change",
                vec![
                    started(),
                    step("approval"),
                    Event::RunPaused { reason: "r".into() },
                ],
                Some("paused at step 'approval'"),
            ),
            (
                "interrupted",
                vec![
                    started(),
                    step("wait"),
                    Event::RunInterrupted { reason: "r".into() },
                ],
                Some("interrupted at step 'wait'"),
            ),
            (
                "failed after a change",
                vec![started(), step("stop writes"), action(true), failed.clone()],
                Some("failed at step 'stop writes'"),
            ),
            (
                "failed having only read",
                vec![started(), step("observe"), action(false), failed.clone()],
                None,
            ),
            (
                "failed having only sent a message",
                vec![started(), step("alert"), notice(), failed.clone()],
                None,
            ),
            (
                "cut off mid-change (killed)",
                vec![started(), step("promote"), action(true)],
                Some("cut off at step 'promote'"),
            ),
            (
                "cut off having only read",
                vec![started(), step("observe"), action(false)],
                None,
            ),
            (
                "resumed, then finished",
                vec![
                    started(),
                    action(true),
                    Event::RunPaused { reason: "r".into() },
                    crate::journal::tests::resumed_event(),
                    Event::RunFinished { elapsed_ms: 1 },
                ],
                None,
            ),
        ];
        for (name, events, want) in cases {
            let records: Vec<Record> = events.into_iter().map(rec).collect();
            assert_eq!(claim_of(&records).as_deref(), want, "{name}");
        }
    }

    #[test]
    fn a_directory_stores_claims_go_by_the_locks_names() {
        let dir = tempfile::tempdir().unwrap();
        let holder = LockHolder {
            run_id: "r1".into(),
            runbook: "failover.rhai".into(),
            operator: "ann".into(),
            host: "h".into(),
            pid: 1,
            since: String::new(),
        };
        let mut guard = acquire_file(dir.path(), "deployment prod").unwrap();
        guard.held.set_claim(Some(&holder)).unwrap();
        // A claim written before claims named their lock: it goes by its file's name.
        fs::write(
            dir.path().join("old_one.lock"),
            serde_json::to_string(&holder).unwrap(),
        )
        .unwrap();
        let names: Vec<String> = file_claims(dir.path())
            .unwrap()
            .into_iter()
            .map(|(name, h)| {
                assert_eq!(h, holder);
                name
            })
            .collect();
        assert_eq!(names, ["deployment prod", "old_one"]);
    }

    #[test]
    fn which_holders_a_lock_waits_for() {
        let who = |run: &str, pid: u32| LockHolder {
            run_id: run.into(),
            runbook: "failover.rhai".into(),
            operator: "ann".into(),
            host: "h".into(),
            pid,
            since: String::new(),
        };
        let session = |pid: u32| {
            let mut e = started();
            if let Event::RunStarted { pid: p, host, .. } = &mut e {
                *p = pid;
                *host = "h".into();
            }
            e
        };
        let resumed = |pid: u32| Event::RunResumed {
            runbook_sha256: String::new(),
            engine_version: String::new(),
            operator: String::new(),
            host: "h".into(),
            pid,
            inflight: None,
            inventory: None,
        };
        let paused = || Event::RunPaused { reason: "r".into() };
        let failed = || Event::RunFailed {
            error: "x".into(),
            failed_steps: vec![],
        };
        // (case, journal, the claim's holder, the taker, waits)
        type Case = (&'static str, Vec<Event>, LockHolder, LockHolder, bool);
        let cases: Vec<Case> = vec![
            (
                "the run just paused; a resume takes its lock",
                vec![session(1), step("approval"), paused()],
                who("r1", 1),
                who("r1", 2),
                true,
            ),
            (
                "the resume, replaying, takes a lock its script took before",
                vec![session(1), paused(), resumed(2), step("approval")],
                who("r1", 1),
                who("r1", 2),
                true,
            ),
            (
                "the run failed; a resume retries",
                vec![session(1), step("x"), failed()],
                who("r1", 1),
                who("r1", 2),
                true,
            ),
            (
                "an earlier resume was interrupted",
                vec![
                    session(1),
                    paused(),
                    resumed(3),
                    Event::RunInterrupted { reason: "r".into() },
                ],
                who("r1", 3),
                who("r1", 4),
                true,
            ),
            (
                "the run is still running in its process",
                vec![session(1), step("wait")],
                who("r1", 1),
                who("r1", 2),
                false,
            ),
            (
                "another resume of it is running",
                vec![session(1), paused(), resumed(3), step("approval")],
                who("r1", 3),
                who("r1", 4),
                false,
            ),
            (
                "another run holds it",
                vec![session(1), paused()],
                who("r2", 1),
                who("r1", 2),
                false,
            ),
            (
                "the holder is the taker's own process",
                vec![session(1), paused()],
                who("r1", 1),
                who("r1", 1),
                false,
            ),
        ];
        for (name, events, claim, taker, want) in cases {
            let records: Vec<Record> = events.into_iter().map(rec).collect();
            assert_eq!(leaving(&claim, &taker, &records), want, "{name}");
        }
    }
}
