//! `runbook stop`: a run stopped from any host that shares its store, as Ctrl-C where it runs
//! would stop it — after the current action, resumable. The command leaves a request in the
//! store; the running process looks for one addressed to it while its script runs.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use super::ctx::RunCtx;
use super::{summarize, Operator};
use crate::error::{Error, Next};
use crate::journal::{self, RunStatus, StopRequest, Store};
use crate::report::Progress;

/// The signal that asked this process to stop (0: none yet), for the journal's reason.
static SIGNAL: std::sync::atomic::AtomicI32 = std::sync::atomic::AtomicI32::new(0);

/// Records the signal that stops the run (the first one), before its stop flag is set.
pub fn stopped_by_signal(signal: i32) {
    let _ = SIGNAL.compare_exchange(0, signal, Ordering::SeqCst, Ordering::SeqCst);
}

/// Why a run stopped on a signal, in the operator's words.
pub(super) fn signal_reason() -> String {
    match SIGNAL.load(Ordering::SeqCst) {
        libc::SIGINT => "Ctrl-C (SIGINT)".into(),
        libc::SIGTERM => "SIGTERM".into(),
        libc::SIGHUP => "the terminal went away (SIGHUP)".into(),
        _ => "interrupted by a signal".into(),
    }
}

/// How often a running run looks for a stop request.
const POLL: Duration = Duration::from_millis(250);

/// Looks for a stop request addressed to this process while a run's script runs; stops the
/// run as Ctrl-C does when it finds one. Ends (and is joined) when dropped.
pub(super) struct StopWatch {
    done: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl StopWatch {
    /// None for a run that keeps no journal (a dry-run): nothing can address it.
    pub(super) fn start(ctx: &Arc<RunCtx>) -> Option<StopWatch> {
        let (Some(store), Some(run)) = (ctx.store.clone(), ctx.opts.run_id.clone()) else {
            return None;
        };
        if ctx.opts.dry_run {
            return None;
        }
        let done = Arc::new(AtomicBool::new(false));
        let (ctx, stop) = (ctx.clone(), done.clone());
        let (pid, host) = (std::process::id(), Operator::current().host);
        let thread = std::thread::spawn(move || {
            // Stopping already (Ctrl-C), it has nothing to take.
            while !stop.load(Ordering::SeqCst) && !ctx.cancel.load(Ordering::SeqCst) {
                // A store that cannot be read now is asked again at the next poll; the run
                // itself notices a store that is gone.
                if let Ok(Some(request)) = store.stop_request(&run) {
                    if request.is_for(pid, &host) {
                        let by = request.describe();
                        *ctx.state.stopped_by.lock().unwrap() = Some(by.clone());
                        ctx.cancel.store(true, Ordering::SeqCst);
                        let _ = store.request_stop(&run, None);
                        ctx.report(Progress::Warning {
                            message: format!(
                                "asked to stop {by}: stopping after the current action (the run stays resumable)"
                            ),
                        });
                        return;
                    }
                }
                std::thread::park_timeout(POLL);
            }
        });
        Some(StopWatch {
            done,
            thread: Some(thread),
        })
    }
}

impl Drop for StopWatch {
    fn drop(&mut self) {
        self.done.store(true, Ordering::SeqCst);
        if let Some(thread) = self.thread.take() {
            thread.thread().unpark();
            let _ = thread.join();
        }
    }
}

/// `runbook stop RUN`: asks the process running `run_id` to stop after its current action,
/// then waits up to `wait` for it to. Refused for a run no process is running.
pub fn stop(
    store: &dyn Store,
    run_id: &str,
    reason: Option<String>,
    op: &Operator,
    wait: Duration,
) -> Result<String, Error> {
    let loaded = store.read(run_id)?;
    let summary = summarize(run_id, &loaded.records);
    if summary.status != RunStatus::Running {
        let message = format!(
            "run {run_id} ({}) is not running: it is {}; there is nothing to stop",
            summary.runbook,
            summary.standing()
        );
        if summary.status.is_over() {
            return Err(Error::Usage(message));
        }
        return Err(Error::Refused {
            message,
            next: Next::ResumeOrAbandon {
                run: run_id.to_string(),
                awaiting: journal::awaiting(&loaded.records),
            },
        });
    }
    // On another host: the store says whether its process is gone without a word (killed,
    // its host lost), which the journal cannot.
    if super::gone_elsewhere(store, &summary, &loaded.records) {
        return Err(Error::Refused {
            message: format!(
                "run {run_id} ({}) is not running: its process is gone without a word (it was {}); there is nothing to stop",
                summary.runbook,
                summary.standing()
            ),
            next: Next::ResumeOrAbandon {
                run: run_id.to_string(),
                awaiting: journal::awaiting(&loaded.records),
            },
        });
    }
    let (pid, host) = (summary.pid, summary.host.clone());
    let request = StopRequest {
        by: op.name.clone(),
        host: op.host.clone(),
        reason,
        at: journal::timestamp(),
        pid,
        process_host: host.clone(),
    };
    store.request_stop(run_id, Some(&request))?;
    let asked = Instant::now();
    while asked.elapsed() < wait {
        std::thread::sleep(Duration::from_millis(100));
        let now = store.read(run_id)?;
        let s = summarize(run_id, &now.records);
        if s.status != RunStatus::Running {
            return Ok(format!(
                "run {run_id} ({}) stopped: {}",
                s.runbook,
                s.standing()
            ));
        }
    }
    Ok(format!(
        "asked run {run_id} (pid {pid} on {host}) to stop; it has not yet: it stops after its current action (`runbook runs` shows when)"
    ))
}
