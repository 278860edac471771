//! `time::now` — the current time, journaled so a resumed run sees the same value.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::{Action, ActionError, Cx, Spec};

#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct NowInput {}

/// A moment in time.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct Moment {
    /// Unix time in milliseconds.
    pub ms: i64,
    /// RFC 3339, UTC.
    pub iso: String,
}

action! {
    /// The current time (also `now()`); recorded, so a resumed run gets the same value.
    Now(NowInput) -> Moment = Spec::read("time", "now").timeout(1).retries(0)
}

impl Action for Now {
    fn describe(_: &NowInput) -> String {
        "read the clock".into()
    }

    fn predict(_: &NowInput) -> Moment {
        moment()
    }

    async fn run(_: NowInput, _: Cx) -> Result<Moment, ActionError> {
        Ok(moment())
    }
}

fn moment() -> Moment {
    let now = std::time::SystemTime::now();
    let ms = now
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0);
    Moment {
        ms,
        iso: humantime::format_rfc3339_millis(now).to_string(),
    }
}
