//! `--output json`: one JSON object per line, with the time it was reported.

use std::io::Write;
use std::sync::Mutex;

use super::{Progress, Reporter};
use crate::secret::Redactor;

pub struct JsonReporter {
    out: Mutex<Box<dyn Write + Send>>,
    redactor: Redactor,
    /// The command line's store options, for the commands a next step names.
    flag: String,
}

impl JsonReporter {
    pub fn new(out: Box<dyn Write + Send>, redactor: Redactor, flag: String) -> Self {
        JsonReporter {
            out: Mutex::new(out),
            redactor,
            flag,
        }
    }
}

impl Reporter for JsonReporter {
    fn report(&self, event: &Progress) {
        let mut value = serde_json::to_value(event).unwrap_or_default();
        if let serde_json::Value::Object(m) = &mut value {
            m.insert("at".into(), crate::journal::timestamp().into());
            if let Progress::RunEnded { next, .. } = event {
                m.insert(
                    "next".into(),
                    next.as_ref().map(|n| n.render(&self.flag)).into(),
                );
            }
        }
        let line = self.redactor.redact(&value.to_string());
        let mut out = self.out.lock().unwrap();
        let _ = writeln!(out, "{line}");
        let _ = out.flush();
    }
}
