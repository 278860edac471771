//! The options of `step(name, #{ .. }, || ..)` and `parallel(items, #{ .. }, |item| ..)`:
//! read here once, by the run as it reaches the call and by `runbook check` from the options a
//! runbook writes as literals, so both say the same of the same mistake.

use std::time::Duration;

use rhai::{Dynamic, FnPtr};

use crate::action::Dur;
use crate::suggest::suggest;

/// The options a step takes.
pub const STEP_OPTIONS: &[&str] = &["retries", "backoff", "timeout", "undo"];
/// The options `parallel` takes.
pub const PARALLEL_OPTIONS: &[&str] = &["limit"];

/// A step's options, as given or by default.
pub struct StepOptions {
    pub retries: u32,
    pub backoff: Duration,
    pub timeout: Option<Duration>,
    pub undo: Option<FnPtr>,
}

impl Default for StepOptions {
    fn default() -> Self {
        StepOptions {
            retries: 0,
            backoff: Duration::from_secs(1),
            timeout: None,
            undo: None,
        }
    }
}

/// What is wrong with one option: the message says what, after "option `NAME`" or as a whole
/// for an option there is not.
#[derive(Debug, PartialEq)]
pub enum OptionError {
    Unknown(String),
    Value(String, String),
}

impl OptionError {
    /// The message, after "step 'x': " or "parallel: ".
    pub fn message(&self, options: &[&str]) -> String {
        match self {
            OptionError::Unknown(key) => format!(
                "unknown option `{key}`{}; {} {}",
                suggest(key, options.iter().copied()),
                if options.len() == 1 {
                    "the option is"
                } else {
                    "the options are"
                },
                options.join(", ")
            ),
            OptionError::Value(key, what) => format!("option `{key}`: {what}"),
        }
    }
}

/// A duration as the actions take one: text such as "5m", or a number of seconds.
fn duration(key: &str, v: &Dynamic) -> Result<Duration, OptionError> {
    crate::value::dynamic_to_json(v)
        .and_then(|json| serde_json::from_value::<Dur>(json).map_err(|e| e.to_string()))
        .map(|d| d.0)
        .map_err(|e| OptionError::Value(key.into(), e))
}

/// What a value is, in words ("a number").
fn kind(v: &Dynamic) -> &'static str {
    if v.is_int() || v.is_float() {
        "a number"
    } else if v.is_string() {
        "a string"
    } else if v.is_bool() {
        "a bool"
    } else if v.is_array() {
        "an array"
    } else if v.is_map() {
        "a map"
    } else if v.is_unit() {
        "()"
    } else {
        "something else"
    }
}

/// Sets one of a step's options.
pub fn step_option(o: &mut StepOptions, key: &str, v: Dynamic) -> Result<(), OptionError> {
    let bad = |what: String| OptionError::Value(key.into(), what);
    match key {
        "retries" => {
            o.retries = v
                .as_int()
                .ok()
                .filter(|n| (0..=100).contains(n))
                .ok_or_else(|| bad(format!("expected a number from 0 to 100, got {v}")))?
                as u32
        }
        "backoff" => o.backoff = duration(key, &v)?,
        "timeout" => o.timeout = Some(duration(key, &v)?),
        "undo" => {
            let what = kind(&v);
            o.undo =
                Some(v.try_cast::<FnPtr>().ok_or_else(|| {
                    bad(format!("expected a closure, e.g. || {{ .. }}, got {what}"))
                })?)
        }
        other => return Err(OptionError::Unknown(other.into())),
    }
    Ok(())
}

/// `parallel`'s one option: at most this many branches at once.
pub fn parallel_option(key: &str, v: Dynamic) -> Result<usize, OptionError> {
    match key {
        "limit" => v
            .as_int()
            .ok()
            .filter(|n| *n > 0)
            .map(|n| n as usize)
            .ok_or_else(|| {
                OptionError::Value(key.into(), format!("expected a positive number, got {v}"))
            }),
        other => Err(OptionError::Unknown(other.into())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_option_is_read_or_named_with_what_is_wrong() {
        let closure = Dynamic::from(FnPtr::new("f").unwrap());
        // (option, value, what is wrong — or None: taken)
        let table: Vec<(&str, Dynamic, Option<&str>)> = vec![
            ("retries", Dynamic::from(3_i64), None),
            ("retries", Dynamic::from(101_i64), Some("option `retries`: expected a number from 0 to 100, got 101")),
            ("retries", Dynamic::from("3"), Some("option `retries`: expected a number from 0 to 100, got 3")),
            ("backoff", Dynamic::from("5s"), None),
            ("timeout", Dynamic::from(90_i64), None),
            ("timeout", Dynamic::from(1.5_f64), None),
            ("timeout", Dynamic::from("2 minuts"), Some("option `timeout`: '2 minuts' is not a duration")),
            ("backoff", Dynamic::from(-1_i64), Some("option `backoff`: expected a duration such as \"5s\" or a number of seconds")),
            ("undo", closure, None),
            ("undo", Dynamic::from(5_i64), Some("option `undo`: expected a closure, e.g. || { .. }, got a number")),
            ("retires", Dynamic::from(3_i64), Some("unknown option `retires` (did you mean `retries`?); the options are retries, backoff, timeout, undo")),
            ("idempotent", Dynamic::TRUE, Some("unknown option `idempotent`; the options are")),
        ];
        for (key, value, wrong) in table {
            let mut o = StepOptions::default();
            let found = step_option(&mut o, key, value.clone()).err();
            match (wrong, found) {
                (None, None) => {}
                (Some(expected), Some(e)) => {
                    let message = e.message(STEP_OPTIONS);
                    assert!(message.starts_with(expected), "{key} = {value}: {message}");
                }
                (wrong, found) => panic!("{key} = {value}: {found:?}, expected {wrong:?}"),
            }
        }
        let mut o = StepOptions::default();
        step_option(&mut o, "timeout", Dynamic::from(90_i64)).unwrap();
        step_option(&mut o, "backoff", Dynamic::from("250ms")).unwrap();
        assert_eq!(o.timeout, Some(Duration::from_secs(90)));
        assert_eq!(o.backoff, Duration::from_millis(250));

        assert_eq!(parallel_option("limit", Dynamic::from(2_i64)), Ok(2));
        let zero = parallel_option("limit", Dynamic::from(0_i64)).unwrap_err();
        assert_eq!(
            zero.message(PARALLEL_OPTIONS),
            "option `limit`: expected a positive number, got 0"
        );
        let limt = parallel_option("limt", Dynamic::from(2_i64)).unwrap_err();
        assert_eq!(
            limt.message(PARALLEL_OPTIONS),
            "unknown option `limt` (did you mean `limit`?); the option is limit"
        );
    }
}
