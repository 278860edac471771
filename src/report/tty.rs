//! The terminal view: the step tree as it runs, a spinner with elapsed time on each running
//! step and action, a countdown on waits. Finished lines stay above the live area.

use std::collections::HashMap;
use std::io::{BufRead, Write};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};

use super::plain::line_for;
use super::{Progress, Reply, Reporter};
use crate::journal::{unix_ms, StepPath};
use crate::secret::Redactor;

pub struct TtyReporter {
    multi: MultiProgress,
    bars: Mutex<HashMap<(StepPath, Option<u32>), ProgressBar>>,
    waits: Arc<Mutex<Vec<(ProgressBar, u64, String)>>>,
    redactor: Redactor,
}

/// A countdown's time left in whole seconds, rounded up: a wait of 1 s shows "1.0 s left" until
/// it ends, not "0 ms left" from its start.
fn left(until_ms: u64, now_ms: u64) -> String {
    super::human_ms(until_ms.saturating_sub(now_ms).div_ceil(1000) * 1000)
}

fn spinner_style() -> ProgressStyle {
    ProgressStyle::with_template("{prefix}{spinner} {msg} {elapsed:.dim}")
        .unwrap()
        .tick_chars("⠋⠙⠹⠸⠼⠴⠦⠧⠇⠏ ")
}

impl TtyReporter {
    pub fn new(redactor: Redactor) -> Self {
        let multi = MultiProgress::with_draw_target(ProgressDrawTarget::stdout());
        let waits: Arc<Mutex<Vec<(ProgressBar, u64, String)>>> = Arc::default();
        let ticker = waits.clone();
        std::thread::spawn(move || loop {
            std::thread::sleep(Duration::from_millis(250));
            let now = unix_ms();
            for (bar, until, message) in ticker.lock().unwrap().iter() {
                bar.set_message(format!("{message} — {} left", left(*until, now)));
            }
        });
        TtyReporter {
            multi,
            bars: Mutex::default(),
            waits,
            redactor,
        }
    }

    fn add_bar(&self, key: (StepPath, Option<u32>), depth: usize, message: String) {
        // Whole before it is shown: a bar added first and dressed after draws a frame without
        // its name.
        let bar = self.multi.add(
            ProgressBar::new_spinner()
                .with_style(spinner_style())
                .with_prefix("  ".repeat(depth))
                .with_message(self.redactor.redact(&message)),
        );
        bar.enable_steady_tick(Duration::from_millis(100));
        self.bars.lock().unwrap().insert(key, bar);
    }

    fn remove_bar(&self, key: &(StepPath, Option<u32>)) {
        if let Some(bar) = self.bars.lock().unwrap().remove(key) {
            bar.finish_and_clear();
            self.waits
                .lock()
                .unwrap()
                .retain(|(b, _, _)| !b.is_finished());
            self.multi.remove(&bar);
        }
    }

    fn print(&self, event: &Progress) {
        if let Some(line) = line_for(event) {
            let _ = self.multi.println(self.redactor.redact(&line));
        }
    }
}

impl Reporter for TtyReporter {
    fn report(&self, event: &Progress) {
        match event {
            Progress::StepStarted {
                step,
                replayed: false,
            } => {
                self.add_bar(
                    (step.clone(), None),
                    step.len() - 1,
                    step.last().cloned().unwrap_or_default(),
                );
            }
            Progress::StepStarted { replayed: true, .. } => {}
            Progress::StepFinished { step, .. } | Progress::StepFailed { step, .. } => {
                self.remove_bar(&(step.clone(), None));
                self.print(event);
            }
            Progress::ActionStarted {
                step,
                seq,
                action,
                describe,
                ..
            } => {
                self.add_bar(
                    (step.clone(), Some(*seq)),
                    step.len(),
                    format!("{action} {describe}"),
                );
            }
            Progress::ActionProgress { step, seq, message } => {
                if let Some(bar) = self.bars.lock().unwrap().get(&(step.clone(), Some(*seq))) {
                    let base = bar.message();
                    let base = base.split(" — ").next().unwrap_or("").to_string();
                    bar.set_message(self.redactor.redact(&format!("{base} — {message}")));
                }
            }
            Progress::Waiting {
                step,
                seq,
                message,
                until_ms,
            } => {
                if let Some(bar) = self.bars.lock().unwrap().get(&(step.clone(), Some(*seq))) {
                    self.waits.lock().unwrap().push((
                        bar.clone(),
                        *until_ms,
                        self.redactor.redact(message),
                    ));
                }
            }
            Progress::ActionFinished { step, seq, .. }
            | Progress::ActionFailed { step, seq, .. } => {
                self.remove_bar(&(step.clone(), Some(*seq)));
                self.print(event);
            }
            other => self.print(other),
        }
    }

    fn ask_approval(&self, message: &str, stop: &AtomicBool) -> Reply {
        let message = self.redactor.redact(message);
        // The bars make way for the question and come back after it. Not `suspend`: it
        // panics when the terminal is gone by the time it redraws (a hung-up SSH session).
        let _ = self.multi.clear();
        self.multi.set_draw_target(ProgressDrawTarget::hidden());
        let mut out = std::io::stdout().lock();
        let _ = write!(out, "? {message}\n  approve? [y/N] ");
        let _ = out.flush();
        drop(out);
        let answer = read_answer(stop);
        if answer == Reply::Stopped {
            let _ = writeln!(std::io::stdout());
        }
        self.multi.set_draw_target(ProgressDrawTarget::stdout());
        answer
    }
}

/// Waits for a line on stdin, looking every 100 ms whether the run was asked to stop (a read
/// alone would hold a Ctrl-C until Enter).
fn read_answer(stop: &AtomicBool) -> Reply {
    loop {
        if stop.load(Ordering::SeqCst) {
            return Reply::Stopped;
        }
        let mut fd = libc::pollfd {
            fd: libc::STDIN_FILENO,
            events: libc::POLLIN,
            revents: 0,
        };
        let ready = unsafe { libc::poll(&mut fd, 1, 100) };
        if ready < 0 && std::io::Error::last_os_error().kind() != std::io::ErrorKind::Interrupted {
            return Reply::Nobody;
        }
        if ready > 0 {
            let mut line = String::new();
            return match std::io::stdin().lock().read_line(&mut line) {
                // The terminal went away (or Ctrl-D): nobody answered.
                Ok(0) | Err(_) => {
                    if stop.load(Ordering::SeqCst) {
                        Reply::Stopped
                    } else {
                        Reply::Nobody
                    }
                }
                Ok(_) if matches!(line.trim().to_ascii_lowercase().as_str(), "y" | "yes") => {
                    Reply::Yes
                }
                Ok(_) => Reply::No,
            };
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_countdown_rounds_up_to_the_second() {
        let cases = [
            (1_000, 3, "1.0 s"),
            (1_000, 0, "1.0 s"),
            (1_000, 999, "1.0 s"),
            (1_000, 1_000, "0 ms"),
            (1_000, 5_000, "0 ms"),
            (30 * 60_000, 1, "30m 00s"),
            (125_000, 400, "2m 05s"),
        ];
        for (until, now, want) in cases {
            assert_eq!(super::left(until, now), want, "{until} {now}");
        }
    }
}
