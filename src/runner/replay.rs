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
}

impl Replay {
    pub fn from_records(records: &[Record]) -> Replay {
        let mut r = Replay::default();
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
