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
use crate::action::{Cx, Dur, DynAction, Effect, ErrorKind};
use crate::error::{Error, Next};
use crate::journal::{self, show_path, Event, JournalWriter, LockGuard, Record, StepPath, Store};
use crate::report::{PlanEntry, Progress, Reporter};
use crate::secret::Redactor;
use crate::value::{dynamic_to_json, json_to_dynamic};

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

/// What the engine reads from a call's map besides the action's own fields.
struct CallOpts {
    timeout: Duration,
    retries: u32,
    backoff: Duration,
}

pub struct RunCtx {
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
    journal: Mutex<Option<Box<dyn JournalWriter>>>,
    /// A new run's journal is created with its first event, so a run stopped by bad
    /// parameters before doing anything leaves no trace.
    journal_init: Mutex<Option<JournalInit>>,
    journal_path: String,
    record_no: AtomicU64,
    pub replay: Replay,
    consumed: Mutex<HashSet<Key>>,
    pub reporter: Arc<dyn Reporter>,
    pub registry: Arc<crate::action::Registry>,
    pub rt: tokio::runtime::Handle,
    http: OnceLock<reqwest::Client>,
    pub redactor: Redactor,
    pub cancel: Arc<AtomicBool>,
    stop: Mutex<Option<Stop>>,
    pub plan: Mutex<Vec<PlanEntry>>,
    pub vars: BTreeMap<String, String>,
    pub params_declared: AtomicBool,
    pub engine: OnceLock<Arc<rhai::Engine>>,
    pub store: Option<Arc<dyn Store>>,
    pub locks: Mutex<Vec<LockGuard>>,
    pub failed_steps: Mutex<Vec<StepPath>>,
    /// Undo closures of finished steps, with the runtime state (imports) they were declared in.
    #[allow(deprecated)] // NativeCallContextStore is "volatile", not deprecated
    pub undo: Mutex<Vec<(StepPath, FnPtr, rhai::NativeCallContextStore)>>,
    /// Nanoseconds spent inside actions (the rest of a run's time is the engine's).
    pub action_time: ActionClock,
    /// Whether the run (this process or an earlier one) started a change: a run that did not
    /// has nothing to resume, only to run again.
    pub wrote: AtomicBool,
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
    fn enter(&self) {
        let mut s = self.state.lock().unwrap();
        if s.0 == 0 {
            s.1 = Some(Instant::now());
        }
        s.0 += 1;
    }

    fn leave(&self) {
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
    pub run_id: Option<String>,
    pub runbook: String,
    pub dry_run: bool,
    pub offline: bool,
    pub auto_approve: bool,
    pub resume_approver: Option<String>,
    pub inflight: Option<Inflight>,
    pub undo_mode: bool,
    pub operator: String,
    pub host: String,
    pub journal: Option<Box<dyn JournalWriter>>,
    pub journal_init: Option<JournalInit>,
    pub journal_path: String,
    pub next_record: u64,
    pub replay: Replay,
    pub reporter: Arc<dyn Reporter>,
    pub rt: tokio::runtime::Handle,
    pub redactor: Redactor,
    pub cancel: Arc<AtomicBool>,
    pub vars: BTreeMap<String, String>,
    pub store: Option<Arc<dyn Store>>,
}

fn runtime_error(message: impl Into<String>, pos: Position) -> Box<EvalAltResult> {
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
            run_id: init.run_id,
            runbook: init.runbook,
            dry_run: init.dry_run,
            offline: init.offline,
            auto_approve: init.auto_approve,
            resume_approver: init.resume_approver,
            inflight: init.inflight,
            undo_mode: init.undo_mode,
            operator: init.operator,
            host: init.host,
            journal: Mutex::new(init.journal),
            journal_init: Mutex::new(init.journal_init),
            journal_path: init.journal_path,
            record_no: AtomicU64::new(init.next_record),
            replay: init.replay,
            consumed: Mutex::default(),
            reporter: init.reporter,
            registry: Arc::new(crate::action::Registry::standard()),
            rt: init.rt,
            http: OnceLock::new(),
            redactor: init.redactor,
            cancel: init.cancel,
            stop: Mutex::new(None),
            plan: Mutex::default(),
            vars: init.vars,
            params_declared: AtomicBool::new(false),
            engine: OnceLock::new(),
            store: init.store,
            locks: Mutex::default(),
            failed_steps: Mutex::default(),
            undo: Mutex::default(),
            action_time: ActionClock::default(),
            wrote: AtomicBool::new(false),
        }
    }

    // ---- journal and report -------------------------------------------------------------

    /// Appends an event; `sync` makes it durable before returning. Every record is written at
    /// once (a killed process loses nothing); fsync is reserved for the records that guard a
    /// side effect, which also make every earlier record durable.
    pub fn journal(&self, event: Event, sync: bool) -> Result<(), Error> {
        let mut guard = self.journal.lock().unwrap();
        if guard.is_none() {
            if let Some(init) = self.journal_init.lock().unwrap().take() {
                let writer = init.store.create(&init.run_id, &init.script)?;
                *guard = Some(writer);
                drop(guard);
                self.journal(init.first, true)?;
                guard = self.journal.lock().unwrap();
            }
        }
        let Some(writer) = guard.as_mut() else {
            return Ok(());
        };
        let record = Record {
            v: journal::FORMAT_VERSION,
            n: self.record_no.fetch_add(1, Ordering::SeqCst),
            at: journal::timestamp(),
            event,
        };
        let line = serde_json::to_string(&record).map_err(|e| Error::Io(e.to_string()))?;
        // Always: a password typed into a URL is masked even when no secret is known.
        let line = self.redactor.redact(&line);
        writer
            .append(&line, sync)
            .map_err(|e| Error::Journal {
                path: self.journal_path.clone().into(),
                message: format!(
                    "cannot write: {e}; the run stops here so that nothing happens unrecorded"
                ),
            })
            .map(|()| super::crash::after_write())
    }

    pub fn journal_started(&self) -> bool {
        self.journal.lock().unwrap().is_some()
    }

    pub fn sync_journal(&self) {
        if let Some(w) = self.journal.lock().unwrap().as_mut() {
            let _ = w.sync();
        }
    }

    fn journal_or_stop(&self, event: Event, sync: bool, pos: Position) -> RhaiResult<()> {
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
        let mut s = self.stop.lock().unwrap();
        if s.is_none() {
            *s = Some(stop);
        }
    }

    pub fn take_stop(&self) -> Option<Stop> {
        self.stop.lock().unwrap().clone()
    }

    pub fn check_stop(&self, pos: Position) -> RhaiResult<()> {
        if self.stop.lock().unwrap().is_some() {
            return Err(terminated(pos));
        }
        if self.cancel.load(Ordering::SeqCst) {
            self.set_stop(Stop::Interrupted);
            return Err(terminated(pos));
        }
        Ok(())
    }

    /// How a call at `path` is decided (see `replay::decide`). In `resume --undo`, calls past
    /// where the run stopped are the frontier; calls inside undo closures run normally.
    fn mode(&self, path: &[String]) -> replay::Mode {
        replay::Mode {
            dry_run: self.dry_run,
            offline: self.offline,
            undo_frontier: self.undo_mode
                && path.first().map(String::as_str) != Some(crate::journal::UNDO),
            rerun_step: self.replay.in_rerun_step(path),
            inflight: self.inflight,
        }
    }

    pub fn clear_stop(&self) {
        *self.stop.lock().unwrap() = None;
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

    fn stop_with(&self, stop: Stop, pos: Position) -> Box<EvalAltResult> {
        self.set_stop(stop);
        terminated(pos)
    }

    /// `--var` given to a runbook that never declares `params`.
    fn check_params_declared(&self, pos: Position) -> RhaiResult<()> {
        if !self.vars.is_empty() && !self.params_declared.load(Ordering::SeqCst) {
            let names: Vec<_> = self.vars.keys().map(|k| format!("--var {k}")).collect();
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

    fn mismatch(
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
            self.run_id.as_deref().unwrap_or("?"),
            show_path(path),
        );
        self.stop_with(Stop::Mismatch(message), pos)
    }

    /// Runs (or replays, or predicts) one action call from the script.
    pub fn call_action(
        &self,
        action: &Arc<dyn DynAction>,
        arg: Dynamic,
        pos: Position,
    ) -> RhaiResult {
        self.check_stop(pos)?;
        self.check_params_declared(pos)?;
        let spec = action.spec().clone();
        let full = spec.full_name();
        let mut input = if arg.is_map() {
            dynamic_to_json(&arg).map_err(|e| self.invalid(format!("{full}: {e}"), pos))?
        } else if let Some(primary) = spec.primary {
            let v = dynamic_to_json(&arg).map_err(|e| self.invalid(format!("{full}: {e}"), pos))?;
            let mut m = serde_json::Map::new();
            m.insert(primary.into(), v);
            Value::Object(m)
        } else {
            return Err(self.invalid(
                format!("{full} takes a map of fields, e.g. {full}(#{{ .. }}); `runbook actions` lists them"),
                pos,
            ));
        };
        let opts = self.call_opts(&full, &spec, &mut input, pos)?;
        let prepared = action.prepare(input).map_err(|e| {
            let field = if e.field.is_empty() {
                String::new()
            } else {
                format!(" field `{}`:", e.field)
            };
            self.invalid(format!("{full}:{field} {}", e.message), pos)
        })?;
        let key = frames::next_call();
        let (path, seq) = key.clone();
        let write = spec.effect == Effect::Write;
        let idempotent = prepared.idempotent;

        let recorded = self.replay.calls.get(&key);
        if recorded.is_some() {
            self.consumed.lock().unwrap().insert(key.clone());
        }
        let expected = Expected::Action {
            name: &full,
            input_hash: &prepared.input_hash,
            write,
            idempotent,
        };
        let decision = replay::decide(recorded, expected, self.mode(&path));
        match decision {
            Decision::Replay(Answer::Output(out)) => {
                self.report(Progress::ActionFinished {
                    step: path,
                    seq,
                    action: full,
                    describe: prepared.describe,
                    elapsed_ms: 0,
                    how: "replayed",
                });
                return Ok(json_to_dynamic(out));
            }
            Decision::Replay(Answer::Failure(err)) => {
                self.report(Progress::ActionFailed {
                    step: path,
                    seq,
                    action: full.clone(),
                    error: err.to_string(),
                    retry_in_ms: None,
                });
                return Err(runtime_error(format!("{full} failed: {err}"), pos));
            }
            Decision::Mismatch => {
                let (was, detail) = match recorded {
                    Some(Call::Action {
                        action: name,
                        input: rec_input,
                        ..
                    }) => (
                        format!("{name} {}", compact(rec_input)),
                        field_diff(rec_input, &prepared.input),
                    ),
                    Some(other) => (other.kind(), String::new()),
                    None => (String::new(), String::new()),
                };
                return Err(self.mismatch(
                    &key,
                    was,
                    format!("{full} {}", compact(&prepared.input)),
                    detail,
                    pos,
                ));
            }
            Decision::Frontier => return Err(self.stop_with(Stop::Frontier, pos)),
            Decision::SkipInflight => {
                self.journal_or_stop(
                    Event::ActionFinished {
                        step: path.clone(),
                        seq,
                        output: prepared.predicted.clone(),
                        elapsed_ms: 0,
                        skipped: true,
                    },
                    true,
                    pos,
                )?;
                self.report(Progress::ActionFinished {
                    step: path,
                    seq,
                    action: full,
                    describe: prepared.describe,
                    elapsed_ms: 0,
                    how: "skipped",
                });
                return Ok(json_to_dynamic(&prepared.predicted));
            }
            Decision::AskOperator => {
                let run = self.run_id.clone().unwrap_or_default();
                return Err(self.stop_with(
                    Stop::Paused {
                        reason: format!(
                            "{full} ({}) at step '{}' was in flight when the run stopped, and it is not idempotent: \
                             it may or may not have taken effect. Check the target, then choose",
                            prepared.describe,
                            show_path(&path)
                        ),
                        next: Next::DecideInflight { run },
                    },
                    pos,
                ));
            }
            Decision::Resume(Resumed::Action { retry_chosen: true }) => {
                self.report(Progress::Warning {
                    message: format!(
                        "running {full} at step '{}' again (--retry-inflight)",
                        show_path(&path)
                    ),
                });
            }
            Decision::Resume(_) => {
                self.report(Progress::Warning {
                    message: format!(
                        "{full} at step '{}' was in flight when the run stopped; running it again ({})",
                        show_path(&path),
                        if write { "idempotent" } else { "a read" }
                    ),
                });
            }
            Decision::Replay(_) | Decision::Predict | Decision::Fresh => {}
        }

        if decision == Decision::Predict {
            if write {
                let mut change = prepared.describe.clone();
                if !self.offline {
                    // The target's state now, read for the plan; a slow target does not hold it up.
                    let cx = self.cx(&path, seq, Duration::from_secs(5));
                    let preview = (prepared.preview)(cx);
                    let note = self.rt.block_on(async {
                        tokio::time::timeout(Duration::from_secs(6), preview)
                            .await
                            .ok()
                            .flatten()
                    });
                    if let Some(note) = note {
                        change = format!("{change}; {note}");
                    }
                }
                self.plan.lock().unwrap().push(PlanEntry {
                    step: path.clone(),
                    action: full.clone(),
                    change,
                });
            }
            self.report(Progress::ActionFinished {
                step: path,
                seq,
                action: full,
                describe: prepared.describe,
                elapsed_ms: 0,
                how: "predicted",
            });
            return Ok(json_to_dynamic(&prepared.predicted));
        }

        self.journal_or_stop(
            Event::ActionStarted {
                step: path.clone(),
                seq,
                action: full.clone(),
                input: prepared.input.clone(),
                input_hash: prepared.input_hash.clone(),
                write,
                idempotent,
                notice: spec.is_notice(),
            },
            // Durable before the side effect, so that resume knows it may have happened and
            // asks. An idempotent write needs no such care: resume runs an idempotent call
            // left in flight again — exactly what it does with a call it never heard of.
            write && !idempotent,
            pos,
        )?;
        if write && !spec.is_notice() {
            self.wrote.store(true, Ordering::SeqCst);
        }
        self.report(Progress::ActionStarted {
            step: path.clone(),
            seq,
            action: full.clone(),
            describe: prepared.describe.clone(),
            write,
        });

        let started = Instant::now();
        let mut attempt = 0u32;
        loop {
            let mut timeout = opts.timeout;
            if let Some(deadline) = frames::deadline() {
                let left = deadline.saturating_duration_since(Instant::now());
                if left.is_zero() {
                    let error = "the step's time limit ran out".to_string();
                    self.journal_or_stop(
                        Event::ActionFailed {
                            step: path.clone(),
                            seq,
                            error: error.clone(),
                            elapsed_ms: 0,
                        },
                        write,
                        pos,
                    )?;
                    return Err(runtime_error(format!("{full} failed: {error}"), pos));
                }
                timeout = timeout.min(left);
            }
            let cx = self.cx(&path, seq, timeout);
            let fut = (prepared.run)(cx);
            self.action_time.enter();
            // A grace second past the limit: actions that honour the limit report it better.
            let result = self.rt.block_on(async {
                match tokio::time::timeout(timeout + Duration::from_secs(1), fut).await {
                    Ok(r) => r,
                    Err(_) => Err(crate::action::ActionError::maybe_applied(format!(
                        "did not finish within {}",
                        humantime::format_duration(timeout)
                    ))),
                }
            });
            self.action_time.leave();
            super::crash::after_effect();
            match result {
                Ok(output) => {
                    let elapsed_ms = started.elapsed().as_millis() as u64;
                    self.journal_or_stop(
                        Event::ActionFinished {
                            step: path.clone(),
                            seq,
                            output: output.clone(),
                            elapsed_ms,
                            skipped: false,
                        },
                        write,
                        pos,
                    )?;
                    self.report(Progress::ActionFinished {
                        step: path,
                        seq,
                        action: full,
                        describe: prepared.describe,
                        elapsed_ms,
                        how: "ran",
                    });
                    return Ok(json_to_dynamic(&output));
                }
                Err(e) if e.kind == ErrorKind::Interrupted => {
                    // Left in flight on purpose: resume decides by its idempotency.
                    return Err(self.stop_with(Stop::Interrupted, pos));
                }
                Err(e) => {
                    let retryable = match e.kind {
                        ErrorKind::TransientNotSent => true,
                        ErrorKind::TransientMaybeApplied => !write || idempotent,
                        _ => false,
                    };
                    let message = self.redactor.redact(&e.message);
                    if retryable && attempt < opts.retries && !self.cancel.load(Ordering::SeqCst) {
                        let delay = opts.backoff.saturating_mul(1 << attempt.min(16));
                        self.report(Progress::ActionFailed {
                            step: path.clone(),
                            seq,
                            action: full.clone(),
                            error: message,
                            retry_in_ms: Some(delay.as_millis() as u64),
                        });
                        std::thread::sleep(delay);
                        attempt += 1;
                        continue;
                    }
                    let elapsed_ms = started.elapsed().as_millis() as u64;
                    self.journal_or_stop(
                        Event::ActionFailed {
                            step: path.clone(),
                            seq,
                            error: message.clone(),
                            elapsed_ms,
                        },
                        write,
                        pos,
                    )?;
                    self.report(Progress::ActionFailed {
                        step: path,
                        seq,
                        action: full.clone(),
                        error: message.clone(),
                        retry_in_ms: None,
                    });
                    return Err(runtime_error(format!("{full} failed: {message}"), pos));
                }
            }
        }
    }

    /// The context an action runs in, reporting its progress under its call identity.
    fn cx(&self, path: &StepPath, seq: u32, timeout: Duration) -> Cx {
        let reporter = self.reporter.clone();
        let p_path = path.clone();
        Cx {
            http: self.http.get_or_init(http_client).clone(),
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

    fn call_opts(
        &self,
        full: &str,
        spec: &crate::action::Spec,
        input: &mut Value,
        pos: Position,
    ) -> RhaiResult<CallOpts> {
        let mut opts = CallOpts {
            timeout: spec.default_timeout,
            retries: spec.default_retries,
            backoff: Duration::from_millis(500),
        };
        let Value::Object(map) = input else {
            return Ok(opts);
        };
        let bad =
            |field: &str, e: String| self.invalid(format!("{full}: field `{field}`: {e}"), pos);
        if let Some(v) = map.remove("timeout") {
            opts.timeout = serde_json::from_value::<Dur>(v)
                .map_err(|e| bad("timeout", e.to_string()))?
                .0;
        }
        if let Some(v) = map.remove("backoff") {
            opts.backoff = serde_json::from_value::<Dur>(v)
                .map_err(|e| bad("backoff", e.to_string()))?
                .0;
        }
        if let Some(v) = map.remove("retries") {
            opts.retries = v.as_u64().filter(|n| *n <= 100).ok_or_else(|| {
                bad(
                    "retries",
                    format!("expected a number from 0 to 100, got {v}"),
                )
            })? as u32;
        }
        Ok(opts)
    }

    /// Recorded changes the script did not reach this time.
    pub fn unreplayed_writes(&self) -> Vec<String> {
        let consumed = self.consumed.lock().unwrap();
        let mut out: Vec<String> = self
            .replay
            .calls
            .iter()
            .filter(|(k, c)| {
                !consumed.contains(*k)
                    && matches!(
                        c,
                        Call::Action {
                            write: true,
                            outcome: Outcome::Finished(_),
                            ..
                        }
                    )
            })
            .map(|((path, seq), c)| {
                format!("{} at step '{}', call #{seq}", c.kind(), show_path(path))
            })
            .collect();
        out.sort();
        out
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
        let recorded = self.replay.calls.get(&key);
        if recorded.is_some() {
            self.consumed.lock().unwrap().insert(key.clone());
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
        self.action_time.enter();
        loop {
            let now = journal::unix_ms();
            if now >= until_ms {
                break;
            }
            if self.cancel.load(Ordering::SeqCst) {
                self.action_time.leave();
                return Err(self.stop_with(Stop::Interrupted, pos));
            }
            std::thread::sleep(Duration::from_millis((until_ms - now).min(100)));
        }
        self.action_time.leave();
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
        let recorded = self.replay.calls.get(&key);
        if recorded.is_some() {
            self.consumed.lock().unwrap().insert(key.clone());
        }
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
            Decision::Resume(Resumed::Approval) => {}
            Decision::Predict => {
                self.plan.lock().unwrap().push(PlanEntry {
                    step: path.clone(),
                    action: "approve".into(),
                    change: format!("ask for approval: \"{message}\""),
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
        let (by, via) = if let Some(by) = &self.resume_approver {
            (by.clone(), "resume --approve")
        } else if self.auto_approve {
            (self.operator.clone(), "--yes")
        } else {
            self.action_time.enter();
            let answer = self.reporter.ask_approval(message);
            self.action_time.leave();
            match answer {
                Some(true) => (self.operator.clone(), "terminal"),
                Some(false) => {
                    self.report(Progress::Approval {
                        step: path,
                        message: message.into(),
                        outcome: format!("declined by {}", self.operator),
                    });
                    return Err(runtime_error(
                        format!("approval declined by {}: {message}", self.operator),
                        pos,
                    ));
                }
                None => {
                    let run = self.run_id.clone().unwrap_or_default();
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
        if !self.dry_run && !frames::in_replayed_step() {
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
        let replayed = self.replay.finished_steps.contains(&path);
        let journaled = !replayed && !self.dry_run;
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
                if !self.dry_run {
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
                self.report(Progress::StepFailed {
                    step: path.clone(),
                    error: message,
                    will_retry,
                });
                if !will_retry {
                    let mut failed = self.failed_steps.lock().unwrap();
                    if !failed.iter().any(|f| f.starts_with(&path)) {
                        failed.push(path);
                    }
                }
            }
            Err(_) => {}
        }
        result
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
        let mut retries = 0u32;
        let mut backoff = Duration::from_secs(1);
        let mut timeout = None;
        let mut undo = None;
        for (k, v) in options.unwrap_or_default() {
            let bad = |what: &str| {
                self.invalid(format!("step '{name}': option `{k}` must be {what}"), pos)
            };
            match k.as_str() {
                "retries" => retries = v.as_int().ok().filter(|n| (0..=100).contains(n)).ok_or_else(|| bad("a number from 0 to 100"))? as u32,
                "backoff" => backoff = Dur::parse(&v.into_string().map_err(|_| bad("a duration such as \"5s\""))?).map_err(|e| bad(&e))?.0,
                "timeout" => timeout = Some(Dur::parse(&v.into_string().map_err(|_| bad("a duration such as \"5m\""))?).map_err(|e| bad(&e))?.0),
                "undo" => undo = Some(v.try_cast::<FnPtr>().ok_or_else(|| bad("a closure, e.g. || { .. }"))?),
                other => {
                    return Err(self.invalid(
                        format!("step '{name}': unknown option `{other}`; the options are retries, backoff, timeout, undo"),
                        pos,
                    ))
                }
            }
        }
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
                        self.undo
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
fn compact(v: &Value) -> String {
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

/// Field-by-field differences between a recorded input and the script's.
fn field_diff(recorded: &Value, now: &Value) -> String {
    let (Value::Object(a), Value::Object(b)) = (recorded, now) else {
        return String::new();
    };
    let mut keys: Vec<&String> = a.keys().chain(b.keys()).collect();
    keys.dedup();
    let mut seen = HashSet::new();
    let mut out = String::new();
    for k in keys {
        if !seen.insert(k) {
            continue;
        }
        match (a.get(k), b.get(k)) {
            (Some(x), Some(y)) if x != y => out.push_str(&format!(
                "\n    field `{k}`: {} → {}",
                compact(x),
                compact(y)
            )),
            (Some(x), None) => {
                out.push_str(&format!("\n    field `{k}`: {} → (absent)", compact(x)))
            }
            (None, Some(y)) => {
                out.push_str(&format!("\n    field `{k}`: (absent) → {}", compact(y)))
            }
            _ => {}
        }
    }
    out
}
