//! Crash injection, for the crash-safety tests: the process kills itself (SIGKILL, as a power
//! cut or an OOM kill would) right after its Nth journal write, right after the Nth side
//! effect returns and before its result is journaled, or at a named point inside an action.
//!
//! RUNBOOK_CRASH_AFTER_WRITE=N    kill after the Nth record this process appends
//! RUNBOOK_CRASH_AFTER_EFFECT=N   kill after the Nth action returns, before it is journaled
//! RUNBOOK_CRASH_AT=NAME          kill the first time the point NAME is reached
//!                                (`rewind-copied`: pg::rewind's copy made, pg_rewind not run;
//!                                `basebackup-made`: pg::basebackup's fresh directory whole,
//!                                not yet swapped with the server's)
//!
//! Each is read once; unset, they cost one relaxed atomic load per event. Compiled only with
//! the `crash-injection` feature (the test suite's); otherwise every call is empty.

#[cfg(feature = "crash-injection")]
pub use injected::{after_effect, after_write, at};

#[cfg(feature = "crash-injection")]
mod injected {
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::sync::OnceLock;

    static WRITES: AtomicU64 = AtomicU64::new(0);
    static EFFECTS: AtomicU64 = AtomicU64::new(0);

    fn limit(name: &str, cell: &'static OnceLock<Option<u64>>) -> Option<u64> {
        *cell.get_or_init(|| std::env::var(name).ok().and_then(|v| v.parse().ok()))
    }

    fn die() -> ! {
        unsafe {
            libc::kill(libc::getpid(), libc::SIGKILL);
        }
        std::process::abort()
    }

    /// Called after each journal record is written.
    pub fn after_write() {
        static LIMIT: OnceLock<Option<u64>> = OnceLock::new();
        if let Some(n) = limit("RUNBOOK_CRASH_AFTER_WRITE", &LIMIT) {
            if WRITES.fetch_add(1, Ordering::SeqCst) + 1 == n {
                die();
            }
        }
    }

    /// Called after each action's side effect, before its result is journaled.
    pub fn after_effect() {
        static LIMIT: OnceLock<Option<u64>> = OnceLock::new();
        if let Some(n) = limit("RUNBOOK_CRASH_AFTER_EFFECT", &LIMIT) {
            if EFFECTS.fetch_add(1, Ordering::SeqCst) + 1 == n {
                die();
            }
        }
    }

    /// Called where an action has done part of its work and not the rest.
    pub fn at(point: &str) {
        static NAME: OnceLock<Option<String>> = OnceLock::new();
        if NAME
            .get_or_init(|| std::env::var("RUNBOOK_CRASH_AT").ok())
            .as_deref()
            == Some(point)
        {
            die();
        }
    }
}

/// Without the feature: nothing to do.
#[cfg(not(feature = "crash-injection"))]
#[inline(always)]
pub fn after_write() {}

/// Without the feature: nothing to do.
#[cfg(not(feature = "crash-injection"))]
#[inline(always)]
pub fn after_effect() {}

/// Without the feature: nothing to do.
#[cfg(not(feature = "crash-injection"))]
#[inline(always)]
pub fn at(_point: &str) {}
