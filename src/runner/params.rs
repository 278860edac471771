//! The parameters a resumed run continues with.
//!
//! A run's `--var` values are journaled when it starts, but a URL's password never is (the
//! journal keeps `postgres://app:***@db:5432/orders`). A resume therefore continues with the
//! journal's values, and asks again, with `--var`, for each one whose password was kept out;
//! anything else given on resume must be what the run started with: a resume continues a run,
//! it does not change what the run was asked to do.

use std::collections::BTreeMap;

use serde_json::{Map, Value};

use crate::error::Error;
use crate::secret::mask_url_passwords;

/// A journaled value whose URL password was masked when it was written.
pub(super) fn masked(journaled: &str) -> bool {
    journaled.contains(":***@") && mask_url_passwords(journaled) == journaled
}

fn text(v: &Value) -> String {
    v.as_str()
        .map(str::to_string)
        .unwrap_or_else(|| v.to_string())
}

/// The journal's parameters, each masked password filled in from `given` (checked against
/// what the journal kept); a problem per parameter otherwise, none of which shows a secret.
pub(super) fn for_resume(
    run: &str,
    journaled: &Map<String, Value>,
    given: &BTreeMap<String, String>,
) -> Result<BTreeMap<String, String>, Error> {
    let mut out = BTreeMap::new();
    let mut problems = Vec::new();
    for (name, value) in journaled {
        let kept = text(value);
        // The masked form itself, typed back, is no password either.
        let again = given.get(name).filter(|a| !(masked(&kept) && **a == kept));
        match again {
            Some(again) if *again == kept => {
                out.insert(name.clone(), kept);
            }
            Some(again) if masked(&kept) && mask_url_passwords(again) == kept => {
                out.insert(name.clone(), again.clone());
            }
            Some(again) => problems.push(format!(
                "--var {name}={}: run {run} was started with {name}={kept}; a resume continues a run with the parameters it started with (start a new run for others)",
                mask_url_passwords(again)
            )),
            None if masked(&kept) => problems.push(format!(
                "run {run} was started with --var {name}={kept}, a URL whose password the journal does not keep: resume with --var {name}=<the same URL, password included>"
            )),
            None => {
                out.insert(name.clone(), kept);
            }
        }
    }
    for name in given.keys().filter(|n| !journaled.contains_key(*n)) {
        let started: Vec<&str> = journaled.keys().map(String::as_str).collect();
        let with = if started.is_empty() {
            "no --var".to_string()
        } else {
            format!("--var {}", started.join(", "))
        };
        problems.push(format!(
            "--var {name}: run {run} was started without it ({with}); a resume continues a run with the parameters it started with"
        ));
    }
    if problems.is_empty() {
        Ok(out)
    } else {
        Err(Error::Param(format!(
            "invalid parameters for resume:\n  {}",
            problems.join("\n  ")
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEPT: &str = "postgres://app:***@db:5432/orders";
    const URL: &str = "postgres://app:hunter2@db:5432/orders";

    fn map(pairs: &[(&str, Value)]) -> Map<String, Value> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.clone()))
            .collect()
    }

    fn given(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn a_resume_continues_with_the_journals_parameters_and_asks_for_kept_out_passwords() {
        type Case<'a> = (
            &'a str,
            Vec<(&'a str, Value)>,
            Vec<(&'a str, &'a str)>,
            Result<Vec<(&'a str, &'a str)>, Vec<&'a str>>,
        );
        let cases: Vec<Case> = vec![
            (
                "nothing given: the journal's values, numbers as text",
                vec![("target", "eu-west-1".into()), ("max", 5.into())],
                vec![],
                Ok(vec![("max", "5"), ("target", "eu-west-1")]),
            ),
            (
                "a masked password given again",
                vec![("db", KEPT.into()), ("target", "eu-west-1".into())],
                vec![("db", URL)],
                Ok(vec![("db", URL), ("target", "eu-west-1")]),
            ),
            (
                "the same value given again changes nothing",
                vec![("target", "eu-west-1".into())],
                vec![("target", "eu-west-1")],
                Ok(vec![("target", "eu-west-1")]),
            ),
            (
                "a URL without a password is kept whole: nothing to ask",
                vec![("db", "postgres://app@db:5432/orders".into())],
                vec![],
                Ok(vec![("db", "postgres://app@db:5432/orders")]),
            ),
            (
                "a masked password not given",
                vec![("db", KEPT.into())],
                vec![],
                Err(vec!["run R was started with --var db=postgres://app:***@db:5432/orders, a URL whose password the journal does not keep: resume with --var db=<the same URL, password included>"]),
            ),
            (
                "the masked form typed back",
                vec![("db", KEPT.into())],
                vec![("db", KEPT)],
                Err(vec!["run R was started with --var db=postgres://app:***@db:5432/orders, a URL whose password the journal does not keep: resume with --var db=<the same URL, password included>"]),
            ),
            (
                "another URL in its place, shown masked",
                vec![("db", KEPT.into())],
                vec![("db", "postgres://app:other@db2:5432/orders")],
                Err(vec!["--var db=postgres://app:***@db2:5432/orders: run R was started with db=postgres://app:***@db:5432/orders; a resume continues a run with the parameters it started with (start a new run for others)"]),
            ),
            (
                "another value",
                vec![("target", "eu-west-1".into())],
                vec![("target", "ap-southeast-1")],
                Err(vec!["--var target=ap-southeast-1: run R was started with target=eu-west-1; a resume continues a run with the parameters it started with (start a new run for others)"]),
            ),
            (
                "a parameter the run did not start with",
                vec![("target", "eu-west-1".into())],
                vec![("force", "true")],
                Err(vec!["--var force: run R was started without it (--var target); a resume continues a run with the parameters it started with"]),
            ),
            (
                "a run started with no --var",
                vec![],
                vec![("force", "true")],
                Err(vec!["--var force: run R was started without it (no --var); a resume continues a run with the parameters it started with"]),
            ),
        ];
        for (what, journaled, on_resume, want) in cases {
            let got = for_resume("R", &map(&journaled), &given(&on_resume));
            match (got, want) {
                (Ok(got), Ok(want)) => assert_eq!(got, given(&want), "{what}"),
                (Err(Error::Param(message)), Err(want)) => assert_eq!(
                    message,
                    format!("invalid parameters for resume:\n  {}", want.join("\n  ")),
                    "{what}"
                ),
                (got, want) => panic!("{what}: got {got:?}, want {want:?}"),
            }
        }
    }
}
