//! The run context: everything a script's calls go through. It numbers each call, answers it
//! from the journal when replaying, predicts it in a dry-run, or runs it and journals it.

use std::collections::{BTreeMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use rhai::{Dynamic, EvalAltResult, FnPtr, Position};
use serde_json::Value;

use super::frames::{self, Frame};
use super::replay::{self, Answer, Call, Decision, Expected, Key, Outcome, Replay, Resumed};
use crate::action::{Cx, Dur};
use crate::error::{Error, Next};
use crate::journal::{self, show_path, Event, JournalWriter, LockGuard, Record, StepPath, Store};
use crate::report::{PlanEntry, Progress, Reply, Reporter};
use crate::secret::Redactor;

pub type RhaiResult<T = Dynamic> = Result<T, Box<EvalAltResult>>;

/// Why the script was stopped from outside its own logic.
#[derive(Debug, Clone)]
pub enum Stop {
    /// Waiting for a person: approval, or a decision on an in-flight action.
    Paused { reason: String, next: Next },
    /// Ctrl-C or SIGTERM.
    Interrupted,
    /// The script does not match the journal.
    Mismatch(String),
    /// A finished change was made with inventory values (`keys`) the inventory no longer has.
    Edited { message: String, keys: Vec<String> },
    /// With `resume --undo`: the replay reached the point where the run stopped.
    Frontier,
    /// Refused while running (parameters, a lock, a journal that cannot be written): the
    /// run ends with this error.
    Refused(Error),
    /// A mistake in the script found while running: a field of the wrong type, a missing
    /// inventory key. Exit code 2; the run can be resumed once the script is fixed.
    Invalid {
        message: String,
        pos: Position,
        step: StepPath,
        /// The module the mistake is in, when it is not the runbook.
        source: Option<String>,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Inflight {
    Retry,
    Skip,
}

/// What a run was asked to do: fixed for its whole life.
pub struct RunOptions {
    pub run_id: Option<String>,
    pub runbook: String,
    pub dry_run: bool,
    pub offline: bool,
    pub auto_approve: bool,
    /// Who approves pending approvals on `resume --approve`.
    pub resume_approver: Option<String>,
    pub inflight: Option<Inflight>,
    /// `resume --undo`: replay up to where the run stopped, then run the undo closures.
    pub undo_mode: bool,
    pub operator: String,
    pub host: String,
    pub vars: BTreeMap<String, String>,
    /// The inventory's regions, which `region` parameters name (None: the run has none).
    pub regions: Option<crate::script::Regions>,
    /// What an offline dry-run's reads answer (`--assume`, else the inventory's world); set only
    /// for an offline dry-run.
    pub world: Option<std::sync::Arc<crate::action::world::World>>,
    /// How this session was started, for the commands actions suggest.
    pub invocation: Arc<crate::action::Invocation>,
    /// How the run was first started, as its journal keeps it: the commands the runbook
    /// spells (`runbook_command`), the same in every session, so that a message sent as an
    /// action's input replays as recorded.
    pub started_as: Arc<crate::action::Invocation>,
}

/// The journal the run appends to, and the one it replays.
pub struct RunJournal {
    writer: Mutex<Option<Box<dyn JournalWriter>>>,
    /// A new run's journal is created with its first event, so a run stopped by bad
    /// parameters before doing anything leaves no trace.
    init: Mutex<Option<JournalInit>>,
    path: String,
    record_no: AtomicU64,
    pub replay: Replay,
    /// Recorded calls the script reached this time.
    pub(super) consumed: Mutex<HashSet<Key>>,
}

/// What changes as the script runs.
#[derive(Default)]
pub struct RunState {
    stop: Mutex<Option<Stop>>,
    pub plan: Mutex<Vec<PlanEntry>>,
    pub params_declared: AtomicBool,
    pub locks: Mutex<Vec<LockGuard>>,
    pub failed_steps: Mutex<Vec<StepPath>>,
    /// The last failure the progress printed in full: a step, or the run, that fails with the
    /// same text only names it.
    pub shown_failure: Mutex<Option<String>>,
    /// Undo closures of finished steps, with the runtime state (imports) they were declared in.
    #[allow(deprecated)] // NativeCallContextStore is "volatile", not deprecated
    pub undo: Mutex<Vec<(StepPath, FnPtr, rhai::NativeCallContextStore)>>,
    /// `on_failure(..)`'s closure, with the runtime state it was declared in.
    #[allow(deprecated)]
    pub on_failure: Mutex<Option<(FnPtr, rhai::NativeCallContextStore)>>,
    /// `on_undone(..)`'s closure, likewise.
    #[allow(deprecated)]
    pub on_undone: Mutex<Option<(FnPtr, rhai::NativeCallContextStore)>>,
    /// Nanoseconds spent inside actions (the rest of a run's time is the engine's).
    pub action_time: ActionClock,
    /// Whether the run (this process or an earlier one) started a change: a run that did not
    /// has nothing to resume, only to run again.
    pub wrote: AtomicBool,
    /// Who asked it to stop (`runbook stop`), when someone did: its interruption says so.
    pub stopped_by: Mutex<Option<String>>,
}

impl RunState {
    /// Where the closure of `which` is kept.
    #[allow(deprecated)] // NativeCallContextStore is "volatile", not deprecated
    pub fn handler(
        &self,
        which: crate::script::Handler,
    ) -> &Mutex<Option<(FnPtr, rhai::NativeCallContextStore)>> {
        match which {
            crate::script::Handler::Failure => &self.on_failure,
            crate::script::Handler::Undone => &self.on_undone,
        }
    }
}

/// A run: its options, its journal, its state, and the services its calls use.
pub struct RunCtx {
    pub opts: RunOptions,
    pub journal: RunJournal,
    pub state: RunState,
    pub reporter: Arc<dyn Reporter>,
    pub registry: Arc<crate::action::Registry>,
    pub rt: tokio::runtime::Handle,
    http: OnceLock<reqwest::Client>,
    pub redactor: Redactor,
    pub cancel: Arc<AtomicBool>,
    pub engine: OnceLock<Arc<rhai::Engine>>,
    pub store: Option<Arc<dyn Store>>,
}

pub struct JournalInit {
    pub store: Arc<dyn Store>,
    pub run_id: String,
    pub script: String,
    pub first: Event,
}

/// Wall time during which at least one action was running (parallel branches overlap, so
/// their durations do not simply add up).
#[derive(Default)]
pub struct ActionClock {
    state: Mutex<(u32, Option<Instant>, Duration)>,
}

impl ActionClock {
    pub(super) fn enter(&self) {
        let mut s = self.state.lock().unwrap();
        if s.0 == 0 {
            s.1 = Some(Instant::now());
        }
        s.0 += 1;
    }

    pub(super) fn leave(&self) {
        let mut s = self.state.lock().unwrap();
        s.0 = s.0.saturating_sub(1);
        if s.0 == 0 {
            if let Some(since) = s.1.take() {
                s.2 += since.elapsed();
            }
        }
    }

    pub fn total(&self) -> Duration {
        self.state.lock().unwrap().2
    }
}

pub struct CtxInit {
    pub opts: RunOptions,
    pub journal: Option<Box<dyn JournalWriter>>,
    pub journal_init: Option<JournalInit>,
    pub journal_path: String,
    pub next_record: u64,
    pub replay: Replay,
    pub reporter: Arc<dyn Reporter>,
    pub rt: tokio::runtime::Handle,
    pub redactor: Redactor,
    pub cancel: Arc<AtomicBool>,
    pub store: Option<Arc<dyn Store>>,
}

pub(super) fn runtime_error(message: impl Into<String>, pos: Position) -> Box<EvalAltResult> {
    Box::new(EvalAltResult::ErrorRuntime(
        Dynamic::from(message.into()),
        pos,
    ))
}

fn terminated(pos: Position) -> Box<EvalAltResult> {
    Box::new(EvalAltResult::ErrorTerminated(Dynamic::UNIT, pos))
}

pub fn http_client() -> reqwest::Client {
    reqwest::Client::builder()
        .user_agent(concat!("runbook/", env!("CARGO_PKG_VERSION")))
        .build()
        .expect("the HTTP client builds with its defaults")
}

impl RunCtx {
    pub fn new(init: CtxInit) -> RunCtx {
        RunCtx {
            opts: init.opts,
            journal: RunJournal {
                writer: Mutex::new(init.journal),
                init: Mutex::new(init.journal_init),
                path: init.journal_path,
                record_no: AtomicU64::new(init.next_record),
                replay: init.replay,
                consumed: Mutex::default(),
            },
            state: RunState::default(),
            reporter: init.reporter,
            registry: Arc::new(crate::action::Registry::standard()),
            rt: init.rt,
            http: OnceLock::new(),
            redactor: init.redactor,
            cancel: init.cancel,
            engine: OnceLock::new(),
            store: init.store,
        }
    }

    // ---- journal and report -------------------------------------------------------------

    /// Appends an event; `sync` makes it durable before returning. Every record is written at
    /// once — into the file, or out on the PostgreSQL store's connection — so a killed process
    /// loses nothing; the wait (an fsync, a commit's answer) is reserved for the records that
    /// guard a side effect, which also make every earlier record durable.
    pub fn journal(&self, event: Event, sync: bool) -> Result<(), Error> {
        let mut guard = self.journal.writer.lock().unwrap();
        if guard.is_none() {
            if let Some(init) = self.journal.init.lock().unwrap().take() {
                let writer = init.store.create(&init.run_id, &init.script)?;
                *guard = Some(writer);
                drop(guard);
                self.journal(init.first, true)?;
                guard = self.journal.writer.lock().unwrap();
            }
        }
        let Some(writer) = guard.as_mut() else {
            return Ok(());
        };
        let record = Record {
            v: journal::FORMAT_VERSION,
            n: self.journal.record_no.fetch_add(1, Ordering::SeqCst),
            at: journal::timestamp(),
            event,
        };
        let line = serde_json::to_string(&record).map_err(|e| Error::Io(e.to_string()))?;
        // Always: a password typed into a URL is masked even when no secret is known.
        let line = self.redactor.redact(&line);
        writer
            .append(&line, sync)
            .map_err(|e| Error::Journal {
                path: self.journal.path.clone().into(),
                message: format!(
                    "cannot write: {e}; the run stopped here, so that nothing would happen unrecorded"
                ),
            })
            .map(|()| crate::crash::after_write())
    }

    pub fn journal_started(&self) -> bool {
        self.journal.writer.lock().unwrap().is_some()
    }

    /// A new run refused before its first record: its journal was never created.
    pub fn never_recorded(&self) -> bool {
        self.journal.init.lock().unwrap().is_some()
    }

    pub fn sync_journal(&self) {
        if let Some(w) = self.journal.writer.lock().unwrap().as_mut() {
            let _ = w.sync();
        }
    }

    pub(super) fn journal_or_stop(
        &self,
        event: Event,
        sync: bool,
        pos: Position,
    ) -> RhaiResult<()> {
        self.journal(event, sync).map_err(|e| {
            self.set_stop(Stop::Refused(e));
            terminated(pos)
        })
    }

    pub fn report(&self, event: Progress) {
        self.reporter.report(&event);
    }

    // ---- stopping -----------------------------------------------------------------------

    pub fn set_stop(&self, stop: Stop) {
        let mut s = self.state.stop.lock().unwrap();
        if s.is_none() {
            *s = Some(stop);
        }
    }

    pub fn take_stop(&self) -> Option<Stop> {
        self.state.stop.lock().unwrap().clone()
    }

    pub fn check_stop(&self, pos: Position) -> RhaiResult<()> {
        if self.state.stop.lock().unwrap().is_some() {
            return Err(terminated(pos));
        }
        if self.cancel.load(Ordering::SeqCst) {
            self.set_stop(Stop::Interrupted);
            return Err(terminated(pos));
        }
        Ok(())
    }

    /// How a call at `path` is decided (see `replay::decide`). In `resume --undo`, calls past
    /// where the run stopped are the frontier; calls inside undo closures, and in the failure
    /// handler of an undo that failed, run normally.
    pub(super) fn mode(&self, path: &[String]) -> replay::Mode {
        replay::Mode {
            dry_run: self.opts.dry_run,
            offline: self.opts.offline,
            undo_frontier: self.opts.undo_mode && !journal::after_the_script(path),
            rerun_step: self.journal.replay.in_rerun_step(path),
            inflight: self.opts.inflight,
        }
    }

    pub fn clear_stop(&self) {
        *self.state.stop.lock().unwrap() = None;
    }

    /// Stops the run for a mistake in the script (not catchable by `try`).
    pub fn invalid(&self, message: impl Into<String>, pos: Position) -> Box<EvalAltResult> {
        self.stop_with(
            Stop::Invalid {
                message: message.into(),
                pos,
                step: frames::current_path(),
                source: frames::source(),
            },
            pos,
        )
    }

    pub(super) fn stop_with(&self, stop: Stop, pos: Position) -> Box<EvalAltResult> {
        self.set_stop(stop);
        terminated(pos)
    }

    /// `--var` given to a runbook that never declares `params`.
    pub(super) fn check_params_declared(&self, pos: Position) -> RhaiResult<()> {
        if !self.opts.vars.is_empty() && !self.state.params_declared.load(Ordering::SeqCst) {
            let names: Vec<_> = self
                .opts
                .vars
                .keys()
                .map(|k| format!("--var {k}"))
                .collect();
            return Err(self.stop_with(
                Stop::Refused(Error::Param(format!(
                    "invalid parameters:\n  {} given, but the runbook has not declared it with params(#{{..}}) before its first step",
                    names.join(", ")
                ))),
                pos,
            ));
        }
        Ok(())
    }

    // ---- calls --------------------------------------------------------------------------

    pub(super) fn mismatch(
        &self,
        key: &Key,
        recorded: String,
        now: String,
        detail: String,
        pos: Position,
    ) -> Box<EvalAltResult> {
        let (path, seq) = key;
        let message = format!(
            "the runbook no longer matches what run {} did at step '{}', call #{seq}:\n  recorded: {recorded}\n  script:   {now}{detail}",
            self.opts.run_id.as_deref().unwrap_or("?"),
            show_path(path),
        );
        self.stop_with(Stop::Mismatch(message), pos)
    }

    /// The context an action runs in, reporting its progress under its call identity.
    pub(super) fn cx(&self, path: &StepPath, seq: u32, timeout: Duration) -> Cx {
        let reporter = self.reporter.clone();
        let p_path = path.clone();
        Cx {
            http: self.http.get_or_init(http_client).clone(),
            invocation: self.opts.invocation.clone(),
            redactor: self.redactor.clone(),
            timeout,
            cancel: self.cancel.clone(),
            progress: Arc::new(move |message| {
                reporter.report(&Progress::ActionProgress {
                    step: p_path.clone(),
                    seq,
                    message,
                })
            }),
        }
    }

    /// Recorded changes the script did not reach this time.
    pub fn unreplayed_writes(&self) -> Vec<String> {
        self.unreplayed_writes_in(|_| true)
    }

    /// The same, in steps the journal records as finished: every one of them is reached by a
    /// replay of the same script (a failed step's later writes are not, by design).
    pub fn unreplayed_writes_in_finished_steps(&self) -> Vec<String> {
        self.unreplayed_writes_in(|path| self.journal.replay.finished_steps.contains(path))
    }

    fn unreplayed_writes_in(&self, keep: impl Fn(&StepPath) -> bool) -> Vec<String> {
        let consumed = self.journal.consumed.lock().unwrap();
        let mut out: Vec<String> = self
            .finished_writes()
            .filter(|(k, _)| !consumed.contains(*k) && keep(&k.0))
            .map(|((path, seq), c)| {
                format!("{} at step '{}', call #{seq}", c.kind(), show_path(path))
            })
            .collect();
        out.sort();
        out
    }

    /// The steps whose changes (finished writes) the journal records, sorted. A message sent
    /// (a notice) is not among them: there is nothing of it to keep or to undo.
    pub fn steps_with_changes(&self) -> Vec<StepPath> {
        let mut out: Vec<StepPath> = self
            .finished_writes()
            .filter(|(_, c)| !matches!(c, Call::Action { notice: true, .. }))
            .map(|((path, _), _)| path.clone())
            .collect();
        out.sort();
        out.dedup();
        out
    }

    /// The finished writes the journal records, outside an earlier `resume --undo`'s own steps
    /// (those are replayed only as it undoes) and outside failure handlers (each session's
    /// is its own, never replayed).
    fn finished_writes(&self) -> impl Iterator<Item = (&Key, &Call)> {
        self.journal.replay.calls.iter().filter(|((path, _), c)| {
            !journal::after_the_script(path)
                && matches!(
                    c,
                    Call::Action {
                        write: true,
                        outcome: Outcome::Finished(_),
                        ..
                    }
                )
        })
    }

    // ---- built-ins ----------------------------------------------------------------------

    /// `sleep("30m")`: a durable timer. A resumed run waits only for what is left.
    pub fn sleep(&self, text: &str, pos: Position) -> RhaiResult<()> {
        self.check_stop(pos)?;
        self.check_params_declared(pos)?;
        let dur = Dur::parse(text)
            .map_err(|e| self.invalid(format!("sleep: {e}"), pos))?
            .0;
        let key = frames::next_call();
        let (path, seq) = key.clone();
        let describe = format!("wait {}", humantime::format_duration(dur));
        let recorded = self.journal.replay.calls.get(&key);
        if recorded.is_some() {
            self.journal.consumed.lock().unwrap().insert(key.clone());
        }
        let until_ms = match replay::decide(recorded, Expected::Timer, self.mode(&path)) {
            Decision::Replay(_) => {
                self.report(Progress::ActionFinished {
                    step: path,
                    seq,
                    action: "sleep".into(),
                    describe,
                    elapsed_ms: 0,
                    how: "replayed",
                });
                return Ok(());
            }
            Decision::Frontier => return Err(self.stop_with(Stop::Frontier, pos)),
            Decision::Resume(Resumed::Timer(until_ms)) => until_ms,
            Decision::Predict => {
                self.report(Progress::ActionFinished {
                    step: path,
                    seq,
                    action: "sleep".into(),
                    describe,
                    elapsed_ms: 0,
                    how: "predicted",
                });
                return Ok(());
            }
            Decision::Fresh => {
                let until_ms = journal::unix_ms() + dur.as_millis() as u64;
                self.journal_or_stop(
                    Event::TimerStarted {
                        step: path.clone(),
                        seq,
                        duration_ms: dur.as_millis() as u64,
                        until_ms,
                    },
                    true,
                    pos,
                )?;
                until_ms
            }
            _ => {
                return Err(self.mismatch(
                    &key,
                    recorded.map(Call::kind).unwrap_or_default(),
                    format!("sleep(\"{text}\")"),
                    String::new(),
                    pos,
                ));
            }
        };
        self.report(Progress::ActionStarted {
            step: path.clone(),
            seq,
            action: "sleep".into(),
            describe: describe.clone(),
            write: false,
        });
        self.report(Progress::Waiting {
            step: path.clone(),
            seq,
            message: describe.clone(),
            until_ms,
        });
        let started = Instant::now();
        // Time the runbook asked to wait is not the engine's.
        self.state.action_time.enter();
        loop {
            let now = journal::unix_ms();
            if now >= until_ms {
                break;
            }
            if self.cancel.load(Ordering::SeqCst) {
                self.state.action_time.leave();
                return Err(self.stop_with(Stop::Interrupted, pos));
            }
            std::thread::sleep(Duration::from_millis((until_ms - now).min(100)));
        }
        self.state.action_time.leave();
        self.journal_or_stop(
            Event::TimerFired {
                step: path.clone(),
                seq,
            },
            // Lost in a crash, the timer is simply found expired on resume.
            false,
            pos,
        )?;
        self.report(Progress::ActionFinished {
            step: path,
            seq,
            action: "sleep".into(),
            describe,
            elapsed_ms: started.elapsed().as_millis() as u64,
            how: "ran",
        });
        Ok(())
    }

    /// `approve("..")`: asks on a terminal, takes `--yes`, or pauses the run.
    pub fn approve(&self, message: &str, pos: Position) -> RhaiResult<bool> {
        self.check_stop(pos)?;
        self.check_params_declared(pos)?;
        let key = frames::next_call();
        let (path, seq) = key.clone();
        let recorded = self.journal.replay.calls.get(&key);
        if recorded.is_some() {
            self.journal.consumed.lock().unwrap().insert(key.clone());
        }
        // `resume --approve` answers the approval the run paused at, not one it reaches later.
        let mut paused_here = false;
        match replay::decide(recorded, Expected::Approval, self.mode(&path)) {
            Decision::Replay(Answer::ApprovedBy(by)) => {
                self.report(Progress::Approval {
                    step: path,
                    message: message.into(),
                    outcome: format!("approved earlier by {by}"),
                });
                return Ok(true);
            }
            Decision::Frontier => return Err(self.stop_with(Stop::Frontier, pos)),
            Decision::Resume(Resumed::Approval) => paused_here = true,
            Decision::Predict => {
                self.state.plan.lock().unwrap().push(PlanEntry {
                    step: path.clone(),
                    action: "approve".into(),
                    change: format!("ask for approval: \"{message}\""),
                    fails: None,
                });
                self.report(Progress::Approval {
                    step: path,
                    message: message.into(),
                    outcome: "noted (dry-run: not asked)".into(),
                });
                return Ok(true);
            }
            Decision::Fresh => {
                self.journal_or_stop(
                    Event::ApprovalRequested {
                        step: path.clone(),
                        seq,
                        message: message.into(),
                    },
                    true,
                    pos,
                )?;
            }
            _ => {
                return Err(self.mismatch(
                    &key,
                    recorded.map(Call::kind).unwrap_or_default(),
                    format!("approve(\"{message}\")"),
                    String::new(),
                    pos,
                ));
            }
        }
        let (by, via) = if let Some(by) = self.opts.resume_approver.as_ref().filter(|_| paused_here)
        {
            (by.clone(), "resume --approve")
        } else if self.opts.auto_approve {
            (self.opts.operator.clone(), "--yes")
        } else {
            self.state.action_time.enter();
            let answer = self.reporter.ask_approval(message, &self.cancel);
            self.state.action_time.leave();
            match answer {
                Reply::Yes => (self.opts.operator.clone(), "terminal"),
                Reply::Stopped => return Err(self.stop_with(Stop::Interrupted, pos)),
                Reply::No => {
                    self.report(Progress::Approval {
                        step: path,
                        message: message.into(),
                        outcome: format!("declined by {}", self.opts.operator),
                    });
                    return Err(runtime_error(
                        format!("approval declined by {}: {message}", self.opts.operator),
                        pos,
                    ));
                }
                Reply::Nobody => {
                    let run = self.opts.run_id.clone().unwrap_or_default();
                    self.report(Progress::Approval {
                        step: path,
                        message: message.into(),
                        outcome: "waiting (no terminal)".into(),
                    });
                    return Err(self.stop_with(
                        Stop::Paused {
                            reason: format!("waiting for approval: \"{message}\""),
                            next: Next::Approve { run },
                        },
                        pos,
                    ));
                }
            }
        };
        self.journal_or_stop(
            Event::Approved {
                step: path.clone(),
                seq,
                by: by.clone(),
                via: via.into(),
            },
            true,
            pos,
        )?;
        self.report(Progress::Approval {
            step: path,
            message: message.into(),
            outcome: format!("approved by {by} ({via})"),
        });
        Ok(true)
    }

    pub fn log(&self, message: String) {
        let message = message.trim_end().to_string();
        let step = frames::current_path();
        if !self.opts.dry_run && !frames::in_replayed_step() {
            let _ = self.journal(
                Event::Log {
                    step: step.clone(),
                    message: message.clone(),
                },
                false,
            );
        }
        self.report(Progress::Log { step, message });
    }

    /// `result(name, value)`: journaled for the run's report, and shown as a line.
    pub fn result(&self, name: &str, value: serde_json::Value) {
        let step = frames::current_path();
        let value: serde_json::Value =
            serde_json::from_str(&self.redactor.redact(&value.to_string())).unwrap_or_default();
        if !self.opts.dry_run && !frames::in_replayed_step() {
            let _ = self.journal(
                Event::Result {
                    step: step.clone(),
                    name: name.to_string(),
                    value: value.clone(),
                },
                false,
            );
        }
        let shown = match &value {
            serde_json::Value::String(s) => s.clone(),
            other => other.to_string(),
        };
        self.report(Progress::Log {
            step,
            message: format!("result {name}: {shown}"),
        });
    }

    // ---- steps --------------------------------------------------------------------------

    /// Runs `body` as the step at `path`: journals and reports its start and its end. A failure
    /// is recorded with `will_retry`; one that is not retried marks the step for the next
    /// resume to check again. `body` is told whether the step finished in an earlier session.
    pub fn scoped(
        &self,
        path: StepPath,
        will_retry: bool,
        pos: Position,
        body: impl FnOnce(bool) -> RhaiResult,
    ) -> RhaiResult {
        let replayed = self.journal.replay.finished_steps.contains(&path);
        let journaled = !replayed && !self.opts.dry_run;
        if journaled {
            self.journal_or_stop(Event::StepStarted { step: path.clone() }, false, pos)?;
        }
        self.report(Progress::StepStarted {
            step: path.clone(),
            replayed,
        });
        let started = Instant::now();
        let result = body(replayed);
        match &result {
            Ok(_) => {
                let elapsed_ms = started.elapsed().as_millis() as u64;
                if journaled {
                    self.journal_or_stop(
                        Event::StepFinished {
                            step: path.clone(),
                            elapsed_ms,
                        },
                        false,
                        pos,
                    )?;
                }
                self.report(Progress::StepFinished {
                    step: path,
                    elapsed_ms,
                    replayed,
                });
            }
            Err(e) if e.is_catchable() => {
                let (message, _, _) = crate::script::describe_error(e);
                if !self.opts.dry_run {
                    self.journal_or_stop(
                        Event::StepFailed {
                            step: path.clone(),
                            error: message.clone(),
                            will_retry,
                        },
                        false,
                        pos,
                    )?;
                }
                let shown_above = self.shown_before(&message);
                self.report(Progress::StepFailed {
                    step: path.clone(),
                    error: message,
                    will_retry,
                    shown_above,
                });
                if !will_retry {
                    let mut failed = self.state.failed_steps.lock().unwrap();
                    if !failed.iter().any(|f| f.starts_with(&path)) {
                        failed.push(path);
                    }
                }
            }
            Err(_) => {}
        }
        result
    }

    /// Whether the progress printed `failure` in full just before; if not, it is about to, and
    /// is remembered as printed.
    pub fn shown_before(&self, failure: &str) -> bool {
        let mut shown = self.state.shown_failure.lock().unwrap();
        if shown.as_deref() == Some(failure) {
            return true;
        }
        *shown = Some(failure.to_string());
        false
    }

    /// Runs a step's body in its own scope, with retries, a time limit and an undo.
    pub fn step(
        &self,
        ncx: &rhai::NativeCallContext,
        name: &str,
        options: Option<rhai::Map>,
        body: FnPtr,
    ) -> RhaiResult {
        let pos = ncx.call_position();
        self.check_stop(pos)?;
        self.check_params_declared(pos)?;
        if name.trim().is_empty() {
            return Err(self.invalid("a step needs a name", pos));
        }
        let (parent, fresh) =
            frames::with_top(|top| (top.path.clone(), top.names.insert(name.to_string())));
        if !fresh {
            return Err(self.invalid(
                format!(
                    "step '{name}' already ran in {}; step names must be unique in their scope — in a loop, put the item in the name, e.g. step(`{name} ${{region}}`, ..)",
                    if parent.is_empty() { "the top level".to_string() } else { format!("step '{}'", show_path(&parent)) }
                ),
                pos,
            ));
        }
        let mut o = crate::script::options::StepOptions::default();
        for (k, v) in options.unwrap_or_default() {
            crate::script::options::step_option(&mut o, &k, v).map_err(|e| {
                let message = e.message(crate::script::options::STEP_OPTIONS);
                self.invalid(format!("step '{name}': {message}"), pos)
            })?;
        }
        let crate::script::options::StepOptions {
            retries,
            backoff,
            timeout,
            undo,
        } = o;
        for attempt in 1..=retries + 1 {
            let mut path = parent.clone();
            path.push(if attempt == 1 {
                name.to_string()
            } else {
                format!("{name} (attempt {attempt})")
            });
            let will_retry = attempt <= retries;
            let deadline = timeout.map(|t| Instant::now() + t);
            let result = self.scoped(path.clone(), will_retry, pos, |replayed| {
                frames::push(Frame::new(path.clone(), deadline, replayed));
                let r = body.call_within_context::<Dynamic>(ncx, ());
                frames::pop();
                r
            });
            match result {
                Ok(value) => {
                    if let Some(undo) = undo {
                        #[allow(deprecated)] // "volatile", not deprecated
                        self.state
                            .undo
                            .lock()
                            .unwrap()
                            .push((path, undo, ncx.store_data()));
                    }
                    return Ok(value);
                }
                Err(e) if will_retry && e.is_catchable() => {
                    let wait = backoff.saturating_mul(1 << (attempt - 1).min(16));
                    let until = Instant::now() + wait;
                    while Instant::now() < until {
                        self.check_stop(pos)?;
                        std::thread::sleep(Duration::from_millis(50).min(until - Instant::now()));
                    }
                }
                Err(e) => return Err(e),
            }
        }
        unreachable!("the last attempt returns")
    }

    /// `parallel(items, |item| ..)`: one branch per item, each its own step scope.
    pub fn parallel(
        &self,
        ncx: &rhai::NativeCallContext,
        items: rhai::Array,
        limit: Option<usize>,
        body: FnPtr,
    ) -> RhaiResult {
        let pos = ncx.call_position();
        self.check_stop(pos)?;
        self.check_params_declared(pos)?;
        let Some(engine) = self.engine.get().cloned() else {
            return Err(runtime_error("parallel is not available here", pos));
        };
        let (parent, nth) = frames::with_top(|top| {
            top.parallels += 1;
            (top.path.clone(), top.parallels)
        });
        let mut seen = HashSet::new();
        let labels: Vec<String> = items
            .iter()
            .enumerate()
            .map(|(i, item)| {
                let label = if item.is_string() || item.is_int() {
                    item.to_string()
                } else {
                    i.to_string()
                };
                let label = if seen.insert(label.clone()) {
                    label
                } else {
                    i.to_string()
                };
                if nth == 1 {
                    format!("[{label}]")
                } else {
                    format!("[{label}]#{nth}")
                }
            })
            .collect();
        let limit = limit.unwrap_or(items.len()).max(1);
        let next = std::sync::atomic::AtomicUsize::new(0);
        let results: Vec<Mutex<Option<RhaiResult>>> =
            items.iter().map(|_| Mutex::new(None)).collect();
        // A step time limit around the parallel applies inside every branch.
        let deadline = frames::deadline();
        // The caller's runtime state (its imports above all), recreated in each branch.
        #[allow(deprecated)] // "volatile", not deprecated
        let caller = ncx.store_data();
        std::thread::scope(|scope| {
            for _ in 0..limit.min(items.len()) {
                scope.spawn(|| loop {
                    let i = next.fetch_add(1, Ordering::SeqCst);
                    if i >= items.len() {
                        break;
                    }
                    let mut path = parent.clone();
                    path.push(labels[i].clone());
                    let outcome = self.check_stop(pos).and_then(|()| {
                        self.scoped(path.clone(), false, pos, |replayed| {
                            frames::reset(Frame::new(path.clone(), deadline, replayed));
                            #[allow(deprecated)] // "volatile", not deprecated
                            let context = caller.create_context(&engine);
                            body.call_within_context::<Dynamic>(&context, (items[i].clone(),))
                        })
                    });
                    *results[i].lock().unwrap() = Some(outcome);
                });
            }
        });
        let mut values = rhai::Array::new();
        let mut failures = Vec::new();
        for (i, slot) in results.into_iter().enumerate() {
            match slot.into_inner().unwrap() {
                Some(Ok(v)) => values.push(v),
                Some(Err(e)) if !e.is_catchable() => return Err(e),
                Some(Err(e)) => {
                    let (message, _, _) = crate::script::describe_error(&e);
                    failures.push(format!("{}: {message}", labels[i]));
                    values.push(Dynamic::UNIT);
                }
                None => values.push(Dynamic::UNIT),
            }
        }
        if !failures.is_empty() {
            return Err(runtime_error(
                format!(
                    "{} of {} parallel branches failed: {}",
                    failures.len(),
                    labels.len(),
                    failures.join("; ")
                ),
                pos,
            ));
        }
        Ok(values.into())
    }
}

/// The input as one short line.
pub(super) fn compact(v: &Value) -> String {
    let s = v.to_string();
    if s.len() > 200 {
        format!(
            "{}…",
            &s[..s
                .char_indices()
                .take_while(|(i, _)| *i < 200)
                .last()
                .map(|(i, c)| i + c.len_utf8())
                .unwrap_or(0)]
        )
    } else {
        s
    }
}

/// The values that differ between a recorded input and the script's, by their paths
/// (`inventory.dns.endpoint_url`), so a difference deep in a large input is seen.
pub(super) fn field_diff(recorded: &Value, now: &Value) -> String {
    const SHOWN: usize = 8;
    let side = |v: &Option<Value>| v.as_ref().map_or("(absent)".to_string(), compact);
    let diffs = crate::inventory::differences(recorded, now);
    let mut out = String::new();
    for (path, was, now) in diffs.iter().take(SHOWN) {
        out.push_str(&format!(
            "\n    field `{path}`: {} → {}",
            side(was),
            side(now)
        ));
    }
    if diffs.len() > SHOWN {
        out.push_str(&format!("\n    … and {} more", diffs.len() - SHOWN));
    }
    out
}
