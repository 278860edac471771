//! Plain lines, for logs and pipes: one line per event, indented by step depth.

use std::io::Write;
use std::sync::Mutex;

use super::{ended_text, human_ms, plan_text, Progress, Reporter};
use crate::error::{hang, once_above};
use crate::secret::Redactor;

pub struct PlainReporter {
    out: Mutex<Box<dyn Write + Send>>,
    redactor: Redactor,
    /// When each running call last printed progress: at most one line per 10 s per call.
    last_progress: Mutex<std::collections::HashMap<(Vec<String>, u32), std::time::Instant>>,
}

impl PlainReporter {
    pub fn new(out: Box<dyn Write + Send>, redactor: Redactor) -> Self {
        PlainReporter {
            out: Mutex::new(out),
            redactor,
            last_progress: Mutex::default(),
        }
    }
}

fn indent(depth: usize) -> String {
    "  ".repeat(depth)
}

/// A step's label and depth: an undo step shows as `undo › drain` at the top level.
fn label(step: &[String]) -> Option<(String, usize)> {
    if step.first().map(String::as_str) == Some(crate::journal::UNDO) {
        return Some((crate::journal::show_path(step), 0));
    }
    Some((step.last()?.clone(), step.len().saturating_sub(1)))
}

pub(crate) fn line_for(event: &Progress) -> Option<String> {
    Some(match event {
        Progress::RunStarted {
            run_id,
            runbook,
            dry_run,
            offline,
            resumed,
            world,
        } => {
            let mode = match (dry_run, offline) {
                (true, true) => " (dry-run, offline: nothing is changed or contacted)",
                (true, false) => " (dry-run: reads run, nothing is changed)",
                _ => "",
            };
            let verb = if *resumed { "resuming" } else { "starting" };
            let world = world
                .as_ref()
                .map(|w| format!("\n  world: {w}"))
                .unwrap_or_default();
            match run_id {
                Some(id) => format!("{verb} run {id}: {runbook}{mode}{world}"),
                None => format!("{verb} {runbook}{mode}{world}"),
            }
        }
        Progress::Warning { message } => format!("warning: {message}"),
        Progress::Watch { message, .. } => {
            let now = crate::journal::timestamp();
            format!("{} watch: {message}", now.get(11..19).unwrap_or(&now))
        }
        Progress::StepStarted { step, replayed } => {
            let note = if *replayed {
                " (done earlier, replaying)"
            } else {
                ""
            };
            {
                let (name, depth) = label(step)?;
                format!("{}▶ {name}{note}", indent(depth))
            }
        }
        Progress::StepFinished {
            step,
            elapsed_ms,
            replayed,
        } => {
            let t = if *replayed {
                "replayed".to_string()
            } else {
                human_ms(*elapsed_ms)
            };
            {
                let (name, depth) = label(step)?;
                format!("{}✓ {name} ({t})", indent(depth))
            }
        }
        Progress::StepFailed {
            step,
            error,
            will_retry,
            shown_above,
        } => {
            let retry = if *will_retry { " — retrying" } else { "" };
            let (name, depth) = label(step)?;
            let error = if *shown_above {
                once_above(error)
            } else {
                hang(error, &indent(depth + 1))
            };
            format!("{}✗ {name}: {error}{retry}", indent(depth))
        }
        Progress::ActionStarted { .. } | Progress::Timing { .. } => return None,
        Progress::ActionProgress { step, message, .. } => {
            format!("{}  … {message}", indent(step.len()))
        }
        Progress::ActionFinished {
            step,
            action,
            describe,
            elapsed_ms,
            how,
            ..
        } => {
            let tail = match *how {
                "ran" => human_ms(*elapsed_ms),
                other => other.to_string(),
            };
            format!("{}· {action} {describe} ({tail})", indent(step.len()))
        }
        Progress::ActionFailed {
            step,
            action,
            error,
            retry_in_ms,
            ..
        } => {
            let retry = retry_in_ms
                .map(|ms| format!(" — retrying in {}", human_ms(ms)))
                .unwrap_or_default();
            format!(
                "{}✗ {action}: {}{retry}",
                indent(step.len()),
                hang(error, &indent(step.len() + 1))
            )
        }
        Progress::Waiting {
            step,
            message,
            until_ms,
            ..
        } => {
            let left = until_ms.saturating_sub(crate::journal::unix_ms());
            format!(
                "{}⏳ {message} ({} left)",
                indent(step.len()),
                human_ms(left)
            )
        }
        // Every line of a message at the step's depth: a table's rows stay under its header.
        Progress::Log { step, message } => {
            let pad = indent(step.len());
            // A blank first line stays blank, as hang leaves the others.
            let first = if message.starts_with('\n') || message.is_empty() {
                ""
            } else {
                &pad
            };
            format!("{first}{}", hang(message, &pad))
        }
        Progress::Approval {
            step,
            message,
            outcome,
        } => {
            format!("{}? approve \"{message}\": {outcome}", indent(step.len()))
        }
        Progress::Plan { entries, failed } => plan_text(entries, *failed).trim_end().to_string(),
        Progress::RunEnded {
            status,
            elapsed_ms,
            message,
            ..
        } => ended_text(*status, *elapsed_ms, message),
    })
}

impl Reporter for PlainReporter {
    fn report(&self, event: &Progress) {
        if let Progress::ActionProgress { step, seq, .. } = event {
            let mut last = self.last_progress.lock().unwrap();
            let key = (step.clone(), *seq);
            let now = std::time::Instant::now();
            match last.get(&key) {
                Some(t) if now.duration_since(*t) < std::time::Duration::from_secs(10) => return,
                _ => {
                    last.insert(key, now);
                }
            }
        }
        if let Some(line) = line_for(event) {
            let line = self.redactor.redact(&line);
            let mut out = self.out.lock().unwrap();
            let _ = writeln!(out, "{line}");
            let _ = out.flush();
        }
    }
}
