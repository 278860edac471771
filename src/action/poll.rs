//! The one way an action waits for something to hold: check, and between checks a pause
//! that ends the wait with the action's own message when the next check would come after
//! the time limit, and at once when the operator presses Ctrl-C.

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use super::{ActionError, Cx, ErrorKind};

/// How often a pause looks at Ctrl-C, so that a long interval does not delay it.
const CANCEL_CHECK: Duration = Duration::from_millis(50);

/// A wait for a condition, checked every `interval` within a time limit.
pub struct Poll {
    started: Instant,
    within: Duration,
    interval: Duration,
}

impl Poll {
    /// Checks every `interval` within the attempt's time limit, from now.
    pub fn new(cx: &Cx, interval: Duration) -> Poll {
        Poll {
            started: Instant::now(),
            within: cx.timeout,
            interval,
        }
    }

    /// Another time limit than the attempt's (a postcondition's own `within`).
    pub fn within(self, within: Duration) -> Poll {
        Poll { within, ..self }
    }

    /// Milliseconds since the wait began (what a `waited_ms` output field reports).
    pub fn waited_ms(&self) -> u64 {
        self.started.elapsed().as_millis() as u64
    }

    /// The pause before the next check. When that check would come after the time limit,
    /// fails with `gave_up(limit)`, where `limit` reads like "30s"; on Ctrl-C, fails as
    /// interrupted (the call stays in flight for resume to decide).
    pub async fn pause(
        &self,
        cx: &Cx,
        gave_up: impl FnOnce(String) -> String,
    ) -> Result<(), ActionError> {
        if self.started.elapsed() + self.interval > self.within {
            return Err(ActionError::permanent(gave_up(limit_text(self.within))));
        }
        let until = Instant::now() + self.interval;
        loop {
            if cx.cancel.load(Ordering::SeqCst) {
                return Err(ActionError {
                    message: "interrupted".into(),
                    kind: ErrorKind::Interrupted,
                });
            }
            let left = until.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Ok(());
            }
            tokio::time::sleep(left.min(CANCEL_CHECK)).await;
        }
    }
}

/// A time limit as messages give it: whole seconds from one second up ("1m 30s"), else
/// milliseconds.
pub(crate) fn limit_text(limit: Duration) -> String {
    let shown = if limit >= Duration::from_secs(1) {
        Duration::from_secs(limit.as_secs())
    } else {
        Duration::from_millis(limit.as_millis() as u64)
    };
    humantime::format_duration(shown).to_string()
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::AtomicBool;
    use std::sync::Arc;

    use super::*;

    fn cx(timeout: Duration) -> Cx {
        Cx {
            http: reqwest::Client::new(),
            invocation: Default::default(),
            redactor: crate::secret::Redactor::default(),
            timeout,
            cancel: Arc::new(AtomicBool::new(false)),
            progress: Arc::new(|_| {}),
        }
    }

    #[tokio::test]
    async fn a_pause_waits_one_interval() {
        let cx = cx(Duration::from_secs(5));
        let poll = Poll::new(&cx, Duration::from_millis(120));
        let t = Instant::now();
        poll.pause(&cx, |_| unreachable!()).await.unwrap();
        assert!(
            t.elapsed() >= Duration::from_millis(120),
            "{:?}",
            t.elapsed()
        );
    }

    #[tokio::test]
    async fn a_check_past_the_limit_gives_up_with_the_actions_message() {
        let cx = cx(Duration::from_millis(100));
        let poll = Poll::new(&cx, Duration::from_millis(200));
        let e = poll
            .pause(&cx, |limit| format!("not ready within {limit}"))
            .await
            .unwrap_err();
        assert_eq!(e.kind, ErrorKind::Permanent);
        assert_eq!(e.message, "not ready within 100ms");
        let poll = Poll::new(&cx, Duration::from_millis(10)).within(Duration::from_secs(2));
        poll.pause(&cx, |_| unreachable!()).await.unwrap();
    }

    #[tokio::test]
    async fn ctrl_c_ends_a_long_pause_at_once() {
        let cx = cx(Duration::from_secs(60));
        let poll = Poll::new(&cx, Duration::from_secs(30));
        let cancel = cx.cancel.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(100)).await;
            cancel.store(true, Ordering::SeqCst);
        });
        let t = Instant::now();
        let e = poll.pause(&cx, |_| unreachable!()).await.unwrap_err();
        assert_eq!(e.kind, ErrorKind::Interrupted);
        assert!(t.elapsed() < Duration::from_secs(2), "{:?}", t.elapsed());
    }

    #[test]
    fn limits_read_in_whole_seconds_or_milliseconds() {
        for (limit, text) in [
            (Duration::from_millis(250), "250ms"),
            (Duration::from_millis(1500), "1s"),
            (Duration::from_secs(30), "30s"),
            (Duration::from_secs(90), "1m 30s"),
            (Duration::from_secs(3600), "1h"),
        ] {
            assert_eq!(limit_text(limit), text, "{limit:?}");
        }
    }
}
