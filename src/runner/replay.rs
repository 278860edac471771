//! What a journal says was done, indexed by call identity, for replay on resume.

use std::collections::{HashMap, HashSet};

use serde_json::Value;

use crate::journal::{Event, Record, StepPath};

#[derive(Debug, Clone)]
pub enum Outcome {
    /// Started and never finished: the crash happened during it.
    InFlight,
    Finished(Value),
    Failed(String),
}

#[derive(Debug, Clone)]
pub enum Call {
    Action {
        action: String,
        input: Value,
        input_hash: String,
        write: bool,
        idempotent: bool,
        /// A message sent (notify::, or anything a handler did): it changes no system.
        notice: bool,
        outcome: Outcome,
    },
    Timer {
        until_ms: u64,
        fired: bool,
    },
    Approval {
        message: String,
        approved_by: Option<String>,
    },
}

impl Call {
    pub fn kind(&self) -> String {
        match self {
            Call::Action { action, .. } => action.clone(),
            Call::Timer { .. } => "sleep".into(),
            Call::Approval { .. } => "approve".into(),
        }
    }
}

pub type Key = (StepPath, u32);

#[derive(Debug, Default)]
pub struct Replay {
    pub calls: HashMap<Key, Call>,
    pub finished_steps: HashSet<StepPath>,
    /// Steps that failed when the run last stopped: their reads and failures run again.
    pub rerun_steps: Vec<StepPath>,
    /// How the last session ended, when it ended resumable (paused, failed, interrupted): a
    /// resume that is refused writes it again, so the run reads as it did before.
    pub last_end: Option<Event>,
    /// How many sessions (processes) the run has had: its start and each resume.
    pub sessions: usize,
    /// What a resume of the run, as it stood, had to be told (an approval, an in-flight choice).
    pub awaiting: crate::error::Awaiting,
    /// How the inventory this resume reads differs from each the run had (see
    /// `resume_inventory`).
    pub inventory_edits: Vec<crate::inventory::InventoryEdit>,
}

impl Replay {
    pub fn from_records(records: &[Record]) -> Replay {
        let mut r = Replay {
            awaiting: crate::journal::awaiting(records),
            ..Replay::default()
        };
        for rec in records {
            match &rec.event {
                Event::ActionStarted {
                    step,
                    seq,
                    action,
                    input,
                    input_hash,
                    write,
                    idempotent,
                    notice,
                    ..
                } => {
                    r.calls.insert(
                        (step.clone(), *seq),
                        Call::Action {
                            action: action.clone(),
                            input: input.clone(),
                            input_hash: input_hash.clone(),
                            write: *write,
                            idempotent: *idempotent,
                            notice: *notice,
                            outcome: Outcome::InFlight,
                        },
                    );
                }
                Event::ActionFinished {
                    step, seq, output, ..
                } => {
                    if let Some(Call::Action { outcome, .. }) =
                        r.calls.get_mut(&(step.clone(), *seq))
                    {
                        *outcome = Outcome::Finished(output.clone());
                    }
                }
                Event::ActionFailed {
                    step, seq, error, ..
                } => {
                    if let Some(Call::Action { outcome, .. }) =
                        r.calls.get_mut(&(step.clone(), *seq))
                    {
                        *outcome = Outcome::Failed(error.clone());
                    }
                }
                Event::TimerStarted {
                    step,
                    seq,
                    until_ms,
                    ..
                } => {
                    r.calls.insert(
                        (step.clone(), *seq),
                        Call::Timer {
                            until_ms: *until_ms,
                            fired: false,
                        },
                    );
                }
                Event::TimerFired { step, seq } => {
                    if let Some(Call::Timer { fired, .. }) = r.calls.get_mut(&(step.clone(), *seq))
                    {
                        *fired = true;
                    }
                }
                Event::ApprovalRequested { step, seq, message } => {
                    r.calls.insert(
                        (step.clone(), *seq),
                        Call::Approval {
                            message: message.clone(),
                            approved_by: None,
                        },
                    );
                }
                Event::Approved { step, seq, by, .. } => {
                    if let Some(Call::Approval { approved_by, .. }) =
                        r.calls.get_mut(&(step.clone(), *seq))
                    {
                        *approved_by = Some(by.clone());
                    }
                }
                Event::StepFinished { step, .. } => {
                    r.finished_steps.insert(step.clone());
                }
                Event::RunFailed { failed_steps, .. } => r.rerun_steps = failed_steps.clone(),
                Event::RunFinished { .. }
                | Event::RunUndone { .. }
                | Event::RunPaused { .. }
                | Event::RunInterrupted { .. } => r.rerun_steps.clear(),
                _ => {}
            }
            match &rec.event {
                Event::RunFailed { .. }
                | Event::RunPaused { .. }
                | Event::RunInterrupted { .. } => r.last_end = Some(rec.event.clone()),
                Event::RunStarted { .. } | Event::RunResumed { .. } => {
                    r.last_end = None;
                    r.sessions += 1;
                }
                _ => {}
            }
        }
        r
    }

    /// Whether a call in `path` is inside a step that failed last time.
    pub fn in_rerun_step(&self, path: &[String]) -> bool {
        self.rerun_steps
            .iter()
            .any(|failed| path.starts_with(failed))
    }
}

/// The call the script makes now, at an identity (step path, ordinal).
#[derive(Debug, Clone, Copy)]
pub enum Expected<'a> {
    Action {
        name: &'a str,
        input_hash: &'a str,
        write: bool,
        idempotent: bool,
        /// The input differs from the record's only by the inventory's edit since the run
        /// started (see `InventoryEdit::explains`).
        edited: bool,
    },
    Timer,
    Approval,
}

/// How this process runs the script.
#[derive(Debug, Clone, Copy, Default)]
pub struct Mode {
    pub dry_run: bool,
    /// A dry-run that predicts reads too.
    pub offline: bool,
    /// `resume --undo`, and the call is not inside an undo closure: the replay stops where the
    /// run had stopped.
    pub undo_frontier: bool,
    /// The call is inside a step that failed when the run last stopped: its reads and its
    /// failures run again.
    pub rerun_step: bool,
    /// The operator's choice for a non-idempotent action left in flight.
    pub inflight: Option<super::Inflight>,
}

/// What a journaled answer was.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Answer<'a> {
    Output(&'a Value),
    Failure(&'a str),
    TimerFired,
    ApprovedBy(&'a str),
}

/// A call started earlier and not done, to be continued.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Resumed {
    /// A durable timer: wait for what is left, until this Unix time in milliseconds.
    Timer(u64),
    /// An approval asked and not yet given: ask again, without recording a new request.
    Approval,
    /// An action left in flight, run again: a read or an idempotent write, or a non-idempotent
    /// one the operator chose to retry (`--retry-inflight`).
    Action { retry_chosen: bool },
}

/// The replay decision for one call.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Decision<'a> {
    /// Done earlier: answer from the journal, run nothing.
    Replay(Answer<'a>),
    /// The script no longer does what the journal recorded at this identity.
    Mismatch,
    /// `resume --undo` reached the point where the run had stopped.
    Frontier,
    Resume(Resumed),
    /// A non-idempotent action was in flight and the operator has not chosen: pause and ask.
    AskOperator,
    /// A non-idempotent action was in flight and took effect (`--skip-inflight`): record it
    /// as done with its predicted output.
    SkipInflight,
    /// A dry-run: the call is predicted, not run.
    Predict,
    /// Nothing recorded: run it, journaling as it goes.
    Fresh,
}

/// Decides what a call does, from what the journal recorded at its identity. Pure: no I/O.
pub fn decide<'a>(recorded: Option<&'a Call>, expected: Expected<'_>, mode: Mode) -> Decision<'a> {
    let fresh = || {
        if mode.undo_frontier {
            return Decision::Frontier;
        }
        let predicted = match expected {
            Expected::Action { write, .. } => write || mode.offline,
            Expected::Timer | Expected::Approval => true,
        };
        if mode.dry_run && predicted {
            Decision::Predict
        } else {
            Decision::Fresh
        }
    };
    let Some(call) = recorded else {
        return fresh();
    };
    match (expected, call) {
        (
            Expected::Action {
                name,
                input_hash,
                write,
                idempotent,
                edited,
            },
            Call::Action {
                action,
                input_hash: recorded_hash,
                outcome,
                write: wrote,
                notice,
                ..
            },
        ) => {
            if mode.undo_frontier && matches!(outcome, Outcome::InFlight) {
                return Decision::Frontier;
            }
            // In a step being retried, a call that failed may have been fixed, and a read
            // changed nothing: each runs anew, with the input it has now (a read before it
            // may have seen something new). Only a finished write is held to its record.
            let superseded = mode.rerun_step
                && match outcome {
                    Outcome::Failed(_) => true,
                    Outcome::Finished(_) => !*wrote,
                    Outcome::InFlight => false,
                };
            // An inventory fixed before the resume (a wrong URL the run stopped at): a read
            // or a message the run finished with the old value is what it saw or said then,
            // and replays as recorded; a change made with the old value is held to it.
            let same_input = recorded_hash == input_hash || (edited && (!*wrote || *notice));
            if !superseded && (action != name || !same_input) {
                return Decision::Mismatch;
            }
            match outcome {
                // In a step being retried, reads run again; finished writes never do.
                Outcome::Finished(out) if !mode.rerun_step || *wrote => {
                    Decision::Replay(Answer::Output(out))
                }
                Outcome::Failed(err) if !mode.rerun_step => Decision::Replay(Answer::Failure(err)),
                Outcome::InFlight if write && !idempotent => match mode.inflight {
                    Some(super::Inflight::Retry) => {
                        Decision::Resume(Resumed::Action { retry_chosen: true })
                    }
                    Some(super::Inflight::Skip) => Decision::SkipInflight,
                    None => Decision::AskOperator,
                },
                Outcome::InFlight => Decision::Resume(Resumed::Action {
                    retry_chosen: false,
                }),
                _ => fresh(),
            }
        }
        (Expected::Timer, Call::Timer { fired: true, .. }) => Decision::Replay(Answer::TimerFired),
        (Expected::Timer, Call::Timer { .. }) if mode.undo_frontier => Decision::Frontier,
        (Expected::Timer, Call::Timer { until_ms, .. }) => {
            Decision::Resume(Resumed::Timer(*until_ms))
        }
        (
            Expected::Approval,
            Call::Approval {
                approved_by: Some(by),
                ..
            },
        ) => Decision::Replay(Answer::ApprovedBy(by)),
        (Expected::Approval, Call::Approval { .. }) if mode.undo_frontier => Decision::Frontier,
        (Expected::Approval, Call::Approval { .. }) => Decision::Resume(Resumed::Approval),
        _ => Decision::Mismatch,
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::super::Inflight;
    use super::*;
    use crate::journal::Event;

    /// A journal history, written as the engine would write it.
    #[derive(Default)]
    struct History(Vec<Event>);

    fn path(p: &str) -> Vec<String> {
        p.split(" › ").map(str::to_string).collect()
    }

    impl History {
        fn started(
            mut self,
            at: &str,
            seq: u32,
            action: &str,
            hash: &str,
            write: bool,
            idempotent: bool,
        ) -> Self {
            self.0.push(Event::ActionStarted {
                step: path(at),
                seq,
                action: action.into(),
                input: json!({}),
                input_hash: hash.into(),
                write,
                idempotent,
                notice: false,
            });
            self
        }
        /// A message sent (a write that changes no system).
        fn sent(mut self, at: &str, seq: u32, action: &str) -> Self {
            self.0.push(Event::ActionStarted {
                step: path(at),
                seq,
                action: action.into(),
                input: json!({}),
                input_hash: "h1".into(),
                write: true,
                idempotent: false,
                notice: true,
            });
            self
        }
        fn finished(mut self, at: &str, seq: u32, output: serde_json::Value) -> Self {
            self.0.push(Event::ActionFinished {
                step: path(at),
                seq,
                output,
                elapsed_ms: 1,
                skipped: false,
                retries: 0,
            });
            self
        }
        fn failed(mut self, at: &str, seq: u32, error: &str) -> Self {
            self.0.push(Event::ActionFailed {
                step: path(at),
                seq,
                error: error.into(),
                elapsed_ms: 1,
                retries: 0,
            });
            self
        }
        fn run_failed(mut self, steps: &[&str]) -> Self {
            self.0.push(Event::RunFailed {
                error: "x".into(),
                failed_steps: steps.iter().map(|s| path(s)).collect(),
            });
            self
        }
        fn timer(mut self, at: &str, seq: u32, until_ms: u64, fired: bool) -> Self {
            self.0.push(Event::TimerStarted {
                step: path(at),
                seq,
                duration_ms: 1000,
                until_ms,
            });
            if fired {
                self.0.push(Event::TimerFired {
                    step: path(at),
                    seq,
                });
            }
            self
        }
        fn asked(mut self, at: &str, seq: u32, by: Option<&str>) -> Self {
            self.0.push(Event::ApprovalRequested {
                step: path(at),
                seq,
                message: "go?".into(),
            });
            if let Some(by) = by {
                self.0.push(Event::Approved {
                    step: path(at),
                    seq,
                    by: by.into(),
                    via: "terminal".into(),
                });
            }
            self
        }
        fn records(&self) -> Vec<Record> {
            self.0
                .iter()
                .enumerate()
                .map(|(i, e)| Record {
                    v: 1,
                    n: i as u64 + 1,
                    at: String::new(),
                    event: e.clone(),
                })
                .collect()
        }
        fn replay(&self) -> Replay {
            Replay::from_records(&self.records())
        }
    }

    fn action(
        name: &'static str,
        hash: &'static str,
        write: bool,
        idempotent: bool,
    ) -> Expected<'static> {
        Expected::Action {
            name,
            input_hash: hash,
            write,
            idempotent,
            edited: false,
        }
    }

    /// A call whose input differs from the record's only by the inventory's edit.
    fn edited(name: &'static str, write: bool) -> Expected<'static> {
        Expected::Action {
            name,
            input_hash: "h2",
            write,
            idempotent: true,
            edited: true,
        }
    }

    const PROMOTE: Expected = Expected::Action {
        name: "pg::promote",
        input_hash: "h1",
        write: true,
        idempotent: true,
        edited: false,
    };
    const POST: Expected = Expected::Action {
        name: "http::post",
        input_hash: "h1",
        write: true,
        idempotent: false,
        edited: false,
    };
    const STATUS: Expected = Expected::Action {
        name: "pg::status",
        input_hash: "h1",
        write: false,
        idempotent: true,
        edited: false,
    };

    #[test]
    fn replay_decisions_as_a_table() {
        let out = json!({"timeline": 2});
        let none = History::default();
        let promoted = History::default()
            .started("promote", 1, "pg::promote", "h1", true, true)
            .finished("promote", 1, out.clone());
        let promoting = History::default().started("promote", 1, "pg::promote", "h1", true, true);
        let posting = History::default().started("promote", 1, "http::post", "h1", true, false);
        let reading = History::default().started("promote", 1, "pg::status", "h1", false, true);
        let read = History::default()
            .started("promote", 1, "pg::status", "h1", false, true)
            .finished("promote", 1, out.clone());
        let failed = History::default()
            .started("promote", 1, "pg::promote", "h1", true, true)
            .failed("promote", 1, "refused");
        let failed_then_resumed = History::default()
            .started("promote", 1, "pg::promote", "h1", true, true)
            .failed("promote", 1, "refused")
            .run_failed(&["promote"]);
        let read_then_failed = History::default()
            .started("promote", 1, "pg::status", "h1", false, true)
            .finished("promote", 1, out.clone())
            .run_failed(&["promote"]);
        let wrote_then_failed = History::default()
            .started("promote", 1, "pg::promote", "h1", true, true)
            .finished("promote", 1, out.clone())
            .run_failed(&["promote"]);
        let slacked = History::default()
            .sent("promote", 1, "notify::slack")
            .finished("promote", 1, out.clone());
        let waited = History::default().timer("promote", 1, 5_000, true);
        let waiting = History::default().timer("promote", 1, 5_000, false);
        let approved = History::default().asked("promote", 1, Some("ann"));
        let asking = History::default().asked("promote", 1, None);

        let dry = Mode {
            dry_run: true,
            ..Mode::default()
        };
        let offline = Mode {
            dry_run: true,
            offline: true,
            ..Mode::default()
        };
        let undo = Mode {
            undo_frontier: true,
            ..Mode::default()
        };
        let retry = Mode {
            inflight: Some(Inflight::Retry),
            ..Mode::default()
        };
        let skip = Mode {
            inflight: Some(Inflight::Skip),
            ..Mode::default()
        };
        let rerun = Mode {
            rerun_step: true,
            ..Mode::default()
        };
        let run = Mode::default();

        let cases: Vec<(&str, &History, Expected, Mode, Decision)> = vec![
            ("a new write runs", &none, PROMOTE, run, Decision::Fresh),
            (
                "a new write in a dry-run is predicted",
                &none,
                PROMOTE,
                dry,
                Decision::Predict,
            ),
            (
                "a new read in a dry-run runs for real",
                &none,
                STATUS,
                dry,
                Decision::Fresh,
            ),
            (
                "a new read offline is predicted",
                &none,
                STATUS,
                offline,
                Decision::Predict,
            ),
            (
                "a new timer in a dry-run does not wait",
                &none,
                Expected::Timer,
                dry,
                Decision::Predict,
            ),
            (
                "a new approval in a dry-run is noted",
                &none,
                Expected::Approval,
                dry,
                Decision::Predict,
            ),
            (
                "a finished write replays its output",
                &promoted,
                PROMOTE,
                run,
                Decision::Replay(Answer::Output(&out)),
            ),
            (
                "a finished read replays its output",
                &read,
                STATUS,
                run,
                Decision::Replay(Answer::Output(&out)),
            ),
            (
                "a finished write replays in undo too",
                &promoted,
                PROMOTE,
                undo,
                Decision::Replay(Answer::Output(&out)),
            ),
            (
                "changed input is a mismatch",
                &promoted,
                action("pg::promote", "h2", true, true),
                run,
                Decision::Mismatch,
            ),
            (
                "a finished read whose input differs only by the inventory's edit replays",
                &read,
                edited("pg::status", false),
                run,
                Decision::Replay(Answer::Output(&out)),
            ),
            (
                "a message sent with the inventory as it was replays",
                &slacked,
                edited("notify::slack", true),
                run,
                Decision::Replay(Answer::Output(&out)),
            ),
            (
                "a finished write made with the inventory as it was is held to it",
                &promoted,
                edited("pg::promote", true),
                run,
                Decision::Mismatch,
            ),
            (
                "the inventory's edit never excuses another action",
                &read,
                edited("pg::query", false),
                run,
                Decision::Mismatch,
            ),
            (
                "an edited read in a step being retried runs anew",
                &read_then_failed,
                edited("pg::status", false),
                rerun,
                Decision::Fresh,
            ),
            (
                "another action is a mismatch",
                &promoted,
                action("pg::fence", "h1", true, true),
                run,
                Decision::Mismatch,
            ),
            (
                "a timer where an action was is a mismatch",
                &promoted,
                Expected::Timer,
                run,
                Decision::Mismatch,
            ),
            (
                "an action where an approval was is a mismatch",
                &approved,
                PROMOTE,
                run,
                Decision::Mismatch,
            ),
            (
                "an idempotent write in flight runs again",
                &promoting,
                PROMOTE,
                run,
                Decision::Resume(Resumed::Action {
                    retry_chosen: false,
                }),
            ),
            (
                "a read in flight runs again",
                &reading,
                STATUS,
                run,
                Decision::Resume(Resumed::Action {
                    retry_chosen: false,
                }),
            ),
            (
                "a non-idempotent write in flight asks",
                &posting,
                POST,
                run,
                Decision::AskOperator,
            ),
            (
                "... --retry-inflight runs it again",
                &posting,
                POST,
                retry,
                Decision::Resume(Resumed::Action { retry_chosen: true }),
            ),
            (
                "... --skip-inflight records it as done",
                &posting,
                POST,
                skip,
                Decision::SkipInflight,
            ),
            (
                "in flight at the undo frontier stops there",
                &promoting,
                PROMOTE,
                undo,
                Decision::Frontier,
            ),
            (
                "nothing recorded at the undo frontier stops there",
                &none,
                PROMOTE,
                undo,
                Decision::Frontier,
            ),
            (
                "a failed call fails again the same way",
                &failed,
                PROMOTE,
                run,
                Decision::Replay(Answer::Failure("refused")),
            ),
            (
                "a failed call in the step being retried runs again",
                &failed_then_resumed,
                PROMOTE,
                rerun,
                Decision::Fresh,
            ),
            (
                "... even with its input fixed",
                &failed_then_resumed,
                action("pg::promote", "h2", true, true),
                rerun,
                Decision::Fresh,
            ),
            (
                "a finished read in the step being retried runs again",
                &read_then_failed,
                STATUS,
                rerun,
                Decision::Fresh,
            ),
            (
                "... also when an earlier read there saw something new (its input changed)",
                &read_then_failed,
                action("pg::status", "h2", false, true),
                rerun,
                Decision::Fresh,
            ),
            (
                "... or the step now reads something else there",
                &read_then_failed,
                action("k8s::get", "h3", false, true),
                rerun,
                Decision::Fresh,
            ),
            (
                "... or now writes there: the read changed nothing, the write is new",
                &read_then_failed,
                PROMOTE,
                rerun,
                Decision::Fresh,
            ),
            (
                "a finished write in the step being retried, now with another input, is a mismatch",
                &wrote_then_failed,
                action("pg::promote", "h2", true, true),
                rerun,
                Decision::Mismatch,
            ),
            (
                "a finished write in the step being retried does not",
                &wrote_then_failed,
                PROMOTE,
                rerun,
                Decision::Replay(Answer::Output(&out)),
            ),
            (
                "a fired timer is done",
                &waited,
                Expected::Timer,
                run,
                Decision::Replay(Answer::TimerFired),
            ),
            (
                "a started timer waits what is left",
                &waiting,
                Expected::Timer,
                run,
                Decision::Resume(Resumed::Timer(5_000)),
            ),
            (
                "a started timer at the undo frontier stops there",
                &waiting,
                Expected::Timer,
                undo,
                Decision::Frontier,
            ),
            (
                "a given approval is done",
                &approved,
                Expected::Approval,
                run,
                Decision::Replay(Answer::ApprovedBy("ann")),
            ),
            (
                "an approval asked earlier is asked again",
                &asking,
                Expected::Approval,
                run,
                Decision::Resume(Resumed::Approval),
            ),
            (
                "an approval where a timer was is a mismatch",
                &waiting,
                Expected::Approval,
                run,
                Decision::Mismatch,
            ),
        ];
        for (name, history, expected, mode, want) in cases {
            let replay = history.replay();
            let got = decide(replay.calls.get(&(path("promote"), 1)), expected, mode);
            assert_eq!(got, want, "{name}");
        }
    }

    /// Each parallel branch is its own step scope: what one branch did says nothing of another.
    #[test]
    fn parallel_branches_replay_by_their_own_identity() {
        let out = json!({"ok": true});
        let h = History::default()
            .started("repoint › [eu-west-1]", 1, "pg::repoint", "h1", true, true)
            .finished("repoint › [eu-west-1]", 1, out.clone())
            .started(
                "repoint › [ap-southeast-1]",
                1,
                "pg::repoint",
                "h1",
                true,
                true,
            );
        let replay = h.replay();
        let repoint = action("pg::repoint", "h1", true, true);
        assert_eq!(
            decide(
                replay.calls.get(&(path("repoint › [eu-west-1]"), 1)),
                repoint,
                Mode::default()
            ),
            Decision::Replay(Answer::Output(&out))
        );
        assert_eq!(
            decide(
                replay.calls.get(&(path("repoint › [ap-southeast-1]"), 1)),
                repoint,
                Mode::default()
            ),
            Decision::Resume(Resumed::Action {
                retry_chosen: false
            })
        );
        assert_eq!(
            decide(
                replay.calls.get(&(path("repoint › [us-east-1]"), 1)),
                repoint,
                Mode::default()
            ),
            Decision::Fresh
        );
    }

    /// A crash mid-write tears the last line: the call it finished is in flight again, and
    /// decided by its idempotency.
    #[test]
    fn a_torn_finish_leaves_the_call_in_flight() {
        for (write, idempotent, want) in [
            (
                true,
                true,
                Decision::Resume(Resumed::Action {
                    retry_chosen: false,
                }),
            ),
            (true, false, Decision::AskOperator),
        ] {
            let h = History::default()
                .started("promote", 1, "pg::promote", "h1", write, idempotent)
                .finished("promote", 1, json!({"timeline": 2}));
            let text: String = h
                .records()
                .iter()
                .map(|r| serde_json::to_string(r).unwrap() + "\n")
                .collect();
            // The finish record cut before its newline.
            let torn = &text[..text.len() - 10];
            let loaded = crate::journal::parse(std::path::Path::new("j"), torn).unwrap();
            assert!(loaded.torn_tail.is_some());
            let replay = Replay::from_records(&loaded.records);
            let got = decide(
                replay.calls.get(&(path("promote"), 1)),
                action("pg::promote", "h1", write, idempotent),
                Mode::default(),
            );
            assert_eq!(got, want, "write {write}, idempotent {idempotent}");
        }
    }
}
