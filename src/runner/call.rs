//! One action call, in the stages a reader can name: decode the script's map into the
//! action's typed input; decide, from the journal, whether it replays, is predicted or runs;
//! record its start; attempt it, retrying what may be retried; record how it ended and report.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rhai::{Dynamic, Position};
use serde_json::Value;

use super::ctx::{compact, field_diff, runtime_error, RhaiResult, RunCtx, Stop};
use super::frames;
use super::replay::{self, Answer, Call, Decision, Expected, Key, Resumed};
use crate::action::{ActionError, DynAction, Effect, ErrorKind, Prepared, Spec};
use crate::error::Next;
use crate::journal::{show_path, Event};
use crate::report::{PlanEntry, Progress};
use crate::value::{dynamic_to_json, json_to_dynamic};

/// What the engine reads from a call's map besides the action's own fields.
struct CallOpts {
    timeout: Duration,
    retries: u32,
    backoff: Duration,
}

/// A call decoded: the action, its typed input, and its identity in the journal.
struct ActionCall {
    spec: Spec,
    full: String,
    prepared: Prepared,
    opts: CallOpts,
    key: Key,
    write: bool,
    idempotent: bool,
    pos: Position,
    /// Attempts that failed and were retried (for the journal and the run's report).
    retried: std::cell::Cell<u32>,
}

impl ActionCall {
    fn path(&self) -> &[String] {
        &self.key.0
    }
    fn seq(&self) -> u32 {
        self.key.1
    }
}

/// After the decision: answered from the journal, predicted, or to be run.
enum Proceed {
    Answered(Dynamic),
    Predict,
    Run,
}

impl RunCtx {
    /// Runs (or replays, or predicts) one action call from the script.
    pub fn call_action(
        &self,
        action: &Arc<dyn DynAction>,
        arg: Dynamic,
        pos: Position,
    ) -> RhaiResult {
        self.check_stop(pos)?;
        self.check_params_declared(pos)?;
        let call = self.decode(action, arg, pos)?;
        match self.decide_call(&call)? {
            Proceed::Answered(value) => Ok(value),
            Proceed::Predict => self.predict(call),
            Proceed::Run => {
                self.record_start(&call)?;
                let started = Instant::now();
                let outcome = self.attempt(&call);
                self.record_end(call, started, outcome)
            }
        }
    }

    /// The script's map (or single value) as the action's typed input, with the engine's
    /// own fields (timeout, retries, backoff) taken out; a mistake names the field.
    fn decode(
        &self,
        action: &Arc<dyn DynAction>,
        arg: Dynamic,
        pos: Position,
    ) -> RhaiResult<ActionCall> {
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
        Ok(ActionCall {
            write: spec.effect == Effect::Write,
            idempotent: prepared.idempotent,
            spec,
            full,
            prepared,
            opts,
            key: frames::next_call(),
            pos,
            retried: Default::default(),
        })
    }

    fn call_opts(
        &self,
        full: &str,
        spec: &Spec,
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
        let given = crate::action::take_common(map).map_err(|e| {
            self.invalid(format!("{full}: field `{}`: {}", e.field, e.message), pos)
        })?;
        opts.timeout = given.timeout.unwrap_or(opts.timeout);
        opts.backoff = given.backoff.unwrap_or(opts.backoff);
        opts.retries = given.retries.unwrap_or(opts.retries);
        Ok(opts)
    }

    /// What the journal says of this call (see `replay::decide`), acted upon: a recorded
    /// answer, a mismatch, the undo frontier, a pause for the operator, or on to run it.
    fn decide_call(&self, call: &ActionCall) -> RhaiResult<Proceed> {
        let (full, pos) = (&call.full, call.pos);
        let recorded = self.journal.replay.calls.get(&call.key);
        if recorded.is_some() {
            self.journal
                .consumed
                .lock()
                .unwrap()
                .insert(call.key.clone());
        }
        // Where the input differs from the record's, the inventory's edit since the run
        // started may be all that differs (a URL fixed before the resume).
        let edited = match recorded {
            Some(Call::Action {
                action,
                input,
                input_hash,
                ..
            }) if action == full && *input_hash != call.prepared.input_hash => {
                self.journal.replay.inventory_edits.iter().find_map(|e| {
                    e.explains(input, &call.prepared.input)
                        .map(|keys| (e, keys))
                })
            }
            _ => None,
        };
        let expected = Expected::Action {
            name: full,
            input_hash: &call.prepared.input_hash,
            write: call.write,
            idempotent: call.idempotent,
            edited: edited.is_some(),
        };
        let path = call.path().to_vec();
        match replay::decide(recorded, expected, self.mode(&path)) {
            Decision::Replay(Answer::Output(out)) => {
                let how = if edited.is_some() {
                    "replayed: made with the inventory as it was"
                } else {
                    "replayed"
                };
                self.report_finished(call, 0, how);
                Ok(Proceed::Answered(json_to_dynamic(out)))
            }
            Decision::Replay(Answer::Failure(err)) => {
                self.report(Progress::ActionFailed {
                    step: path,
                    seq: call.seq(),
                    action: full.clone(),
                    error: err.to_string(),
                    retry_in_ms: None,
                });
                Err(runtime_error(format!("{full} failed: {err}"), pos))
            }
            Decision::Mismatch if edited.is_some() => {
                let (edit, keys) = edited.expect("matched on is_some");
                let (path, seq) = &call.key;
                let made = match recorded {
                    Some(Call::Action {
                        outcome: replay::Outcome::InFlight,
                        ..
                    }) => "began (it may have taken effect)",
                    _ => "made",
                };
                let message = format!(
                    "run {} {made} the change {full} at step '{}', call #{seq}, with the inventory as it was then:\n  {}\na resume never makes a finished change again, nor counts it as made with the new value",
                    self.opts.run_id.as_deref().unwrap_or("?"),
                    show_path(path),
                    edit.describe(&keys).join("\n  "),
                );
                Err(self.stop_with(Stop::Edited { message, keys }, pos))
            }
            Decision::Mismatch => {
                let (was, detail) = match recorded {
                    Some(Call::Action {
                        action: name,
                        input: rec_input,
                        ..
                    }) => (
                        format!("{name} {}", compact(rec_input)),
                        field_diff(rec_input, &call.prepared.input),
                    ),
                    Some(other) => (other.kind(), String::new()),
                    None => (String::new(), String::new()),
                };
                Err(self.mismatch(
                    &call.key,
                    was,
                    format!("{full} {}", compact(&call.prepared.input)),
                    detail,
                    pos,
                ))
            }
            Decision::Frontier => Err(self.stop_with(Stop::Frontier, pos)),
            Decision::SkipInflight => {
                self.journal_or_stop(
                    Event::ActionFinished {
                        step: path,
                        seq: call.seq(),
                        output: call.prepared.predicted.clone(),
                        elapsed_ms: 0,
                        skipped: true,
                        retries: 0,
                    },
                    true,
                    pos,
                )?;
                self.report_finished(call, 0, "skipped");
                Ok(Proceed::Answered(json_to_dynamic(&call.prepared.predicted)))
            }
            Decision::AskOperator => {
                let run = self.opts.run_id.clone().unwrap_or_default();
                Err(self.stop_with(
                    Stop::Paused {
                        reason: format!(
                            "{full} ({}) at step '{}' was in flight when the run stopped, and it is not idempotent: \
                             it may or may not have taken effect. Check the target, then choose",
                            call.prepared.describe,
                            show_path(&path)
                        ),
                        next: Next::DecideInflight { run },
                    },
                    pos,
                ))
            }
            Decision::Resume(Resumed::Action { retry_chosen: true }) => {
                self.report(Progress::Warning {
                    message: format!(
                        "running {full} at step '{}' again (--retry-inflight)",
                        show_path(&path)
                    ),
                });
                Ok(Proceed::Run)
            }
            Decision::Resume(_) => {
                self.report(Progress::Warning {
                    message: format!(
                        "{full} at step '{}' was in flight when the run stopped; running it again ({})",
                        show_path(&path),
                        if call.write { "idempotent" } else { "a read" }
                    ),
                });
                Ok(Proceed::Run)
            }
            Decision::Predict => Ok(Proceed::Predict),
            Decision::Replay(_) | Decision::Fresh => Ok(Proceed::Run),
        }
    }

    /// A dry-run's answer: the predicted output, and for a write a line in the plan with what
    /// the target is now. Offline, the assumed world answers: a read sees it, and a call to a
    /// part it says is down fails as it would for real (a write that fails is in the plan,
    /// marked so, not counted as a change).
    fn predict(&self, call: ActionCall) -> RhaiResult {
        let answer = match self.opts.world.as_deref() {
            Some(world) => (call.prepared.predict_in)(world),
            None => None,
        };
        if let Some(Err(e)) = answer {
            let message = self.redactor.redact(&e.message);
            if call.write {
                self.state.plan.lock().unwrap().push(PlanEntry {
                    step: call.key.0.clone(),
                    action: call.full.clone(),
                    change: call.prepared.describe.clone(),
                    fails: Some(message.clone()),
                });
            }
            return Err(self.failed(&call, message));
        }
        if call.write {
            let mut change = call.prepared.describe.clone();
            if !self.opts.offline {
                // The target's state now, read for the plan; a slow target does not hold it up.
                let cx = self.cx(&call.key.0, call.seq(), Duration::from_secs(5));
                let preview = (call.prepared.preview)(cx);
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
            self.state.plan.lock().unwrap().push(PlanEntry {
                step: call.key.0.clone(),
                action: call.full.clone(),
                change,
                fails: None,
            });
        }
        self.report_finished(&call, 0, "predicted");
        Ok(json_to_dynamic(match &answer {
            Some(Ok(out)) => out,
            _ => &call.prepared.predicted,
        }))
    }

    fn record_start(&self, call: &ActionCall) -> RhaiResult<()> {
        // What a handler does is telling someone: never a change of the run's.
        let notice = call.spec.is_notice() || crate::journal::in_handler_step(&call.key.0);
        self.journal_or_stop(
            Event::ActionStarted {
                step: call.key.0.clone(),
                seq: call.seq(),
                action: call.full.clone(),
                input: call.prepared.input.clone(),
                input_hash: call.prepared.input_hash.clone(),
                write: call.write,
                idempotent: call.idempotent,
                notice,
            },
            // Durable before the side effect, so that resume knows it may have happened and
            // asks. An idempotent write needs no such care: resume runs an idempotent call
            // left in flight again — exactly what it does with a call it never heard of.
            call.write && !call.idempotent,
            call.pos,
        )?;
        if call.write && !notice {
            self.state.wrote.store(true, Ordering::SeqCst);
        }
        self.report(Progress::ActionStarted {
            step: call.key.0.clone(),
            seq: call.seq(),
            action: call.full.clone(),
            describe: call.prepared.describe.clone(),
            write: call.write,
        });
        Ok(())
    }

    /// Runs the action within its time limit (and its step's), retrying transient failures
    /// that are safe to retry: any not sent, and sent ones of reads and idempotent writes.
    fn attempt(&self, call: &ActionCall) -> RhaiResult<Result<Value, String>> {
        let mut attempt = 0u32;
        loop {
            let mut timeout = call.opts.timeout;
            if let Some(deadline) = frames::deadline() {
                let left = deadline.saturating_duration_since(Instant::now());
                if left.is_zero() {
                    return Ok(Err("the step's time limit ran out".to_string()));
                }
                timeout = timeout.min(left);
            }
            let cx = self.cx(&call.key.0, call.seq(), timeout);
            let fut = (call.prepared.run)(cx);
            self.state.action_time.enter();
            // A grace second past the limit for actions that end themselves there: they say
            // better what did not answer.
            let grace = if call.spec.ends_at_limit {
                Duration::from_secs(1)
            } else {
                Duration::ZERO
            };
            let result = self.rt.block_on(async {
                match tokio::time::timeout(timeout + grace, fut).await {
                    Ok(r) => r,
                    Err(_) => Err(ActionError::maybe_applied(format!(
                        "did not finish within {}",
                        humantime::format_duration(timeout)
                    ))),
                }
            });
            self.state.action_time.leave();
            crate::crash::after_effect();
            let e = match result {
                Ok(output) => return Ok(Ok(output)),
                // Left in flight on purpose: resume decides by its idempotency.
                Err(e) if e.kind == ErrorKind::Interrupted => {
                    return Err(self.stop_with(Stop::Interrupted, call.pos))
                }
                Err(e) => e,
            };
            let retryable = match e.kind {
                ErrorKind::TransientNotSent => true,
                ErrorKind::TransientMaybeApplied => !call.write || call.idempotent,
                _ => false,
            };
            let message = self.redactor.redact(&e.message);
            if !retryable || attempt >= call.opts.retries || self.cancel.load(Ordering::SeqCst) {
                return Ok(Err(message));
            }
            let delay = call.opts.backoff.saturating_mul(1 << attempt.min(16));
            self.report(Progress::ActionFailed {
                step: call.key.0.clone(),
                seq: call.seq(),
                action: call.full.clone(),
                error: message,
                retry_in_ms: Some(delay.as_millis() as u64),
            });
            std::thread::sleep(delay);
            attempt += 1;
            call.retried.set(attempt);
        }
    }

    /// Journals how the call ended (durable for a write before the engine moves on), reports
    /// it, and gives the script its answer.
    fn record_end(
        &self,
        call: ActionCall,
        started: Instant,
        outcome: RhaiResult<Result<Value, String>>,
    ) -> RhaiResult {
        let elapsed_ms = started.elapsed().as_millis() as u64;
        match outcome? {
            Ok(output) => {
                self.journal_or_stop(
                    Event::ActionFinished {
                        step: call.key.0.clone(),
                        seq: call.seq(),
                        output: output.clone(),
                        elapsed_ms,
                        skipped: false,
                        retries: call.retried.get(),
                    },
                    call.write,
                    call.pos,
                )?;
                self.report_finished(&call, elapsed_ms, "ran");
                Ok(json_to_dynamic(&output))
            }
            Err(message) => {
                self.journal_or_stop(
                    Event::ActionFailed {
                        step: call.key.0.clone(),
                        seq: call.seq(),
                        error: message.clone(),
                        elapsed_ms,
                        retries: call.retried.get(),
                    },
                    call.write,
                    call.pos,
                )?;
                Err(self.failed(&call, message))
            }
        }
    }

    /// Reports a call's final failure and gives the script its error (which `try` catches).
    fn failed(&self, call: &ActionCall, message: String) -> Box<rhai::EvalAltResult> {
        self.report(Progress::ActionFailed {
            step: call.key.0.clone(),
            seq: call.seq(),
            action: call.full.clone(),
            error: message.clone(),
            retry_in_ms: None,
        });
        let failure = format!("{} failed: {message}", call.full);
        self.shown_before(&failure);
        runtime_error(failure, call.pos)
    }

    fn report_finished(&self, call: &ActionCall, elapsed_ms: u64, how: &'static str) {
        self.report(Progress::ActionFinished {
            step: call.key.0.clone(),
            seq: call.seq(),
            action: call.full.clone(),
            describe: call.prepared.describe.clone(),
            elapsed_ms,
            how,
        });
    }
}
