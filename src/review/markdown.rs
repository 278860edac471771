//! The report as Markdown: a summary, then steps, approvals, failures, sessions and the log —
//! tables that paste into an incident document.

use super::{clock, offset, value_text, RunReport};
use crate::report::human_ms;

/// A table cell: no pipe or line break may end it early.
fn cell(s: &str) -> String {
    s.replace('|', "\\|").replace('\n', "<br>")
}

fn row(out: &mut String, cells: &[String]) {
    out.push_str("| ");
    out.push_str(&cells.join(" | "));
    out.push_str(" |\n");
}

fn header(out: &mut String, names: &[&str]) {
    row(
        out,
        &names.iter().map(|s| s.to_string()).collect::<Vec<_>>(),
    );
    row(
        out,
        &names.iter().map(|_| "---".to_string()).collect::<Vec<_>>(),
    );
}

/// The summary's fields, shared with the HTML: (label, value).
pub(crate) fn summary(rep: &RunReport) -> Vec<(&'static str, String)> {
    let mut out = vec![
        ("Runbook", rep.runbook.clone()),
        (
            "Parameters",
            if rep.params.is_empty() {
                "(defaults)".into()
            } else {
                rep.params
                    .iter()
                    .map(|(k, v)| format!("{k}={}", value_text(v)))
                    .collect::<Vec<_>>()
                    .join(", ")
            },
        ),
    ];
    if let Some(inv) = &rep.inventory_file {
        out.push(("Inventory", inv.clone()));
    }
    if let Some(t) = &rep.trigger {
        let signals: Vec<String> = t["signals"]
            .as_array()
            .map(|a| a.iter().map(value_text).collect())
            .unwrap_or_default();
        out.push((
            "Started by",
            format!(
                "{} when {}'s {}",
                t["by"].as_str().unwrap_or("a trigger"),
                t["region"].as_str().unwrap_or("?"),
                signals.join(", ")
            ),
        ));
    }
    out.push(("Operators", rep.operators.join(", ")));
    out.push(("Hosts", rep.hosts.join(", ")));
    out.push(("Status", rep.status.to_string()));
    out.push(("Started", rep.started_at.clone()));
    if let Some(end) = &rep.ended_at {
        out.push(("Ended", end.clone()));
    }
    let t = &rep.time;
    let mut split = vec![format!("actions {}", human_ms(t.actions_ms))];
    if t.waits_ms > 0 {
        split.push(format!("timed waits {}", human_ms(t.waits_ms)));
    }
    if t.approvals_ms > 0 {
        split.push(format!("waiting for approval {}", human_ms(t.approvals_ms)));
    }
    if t.stopped_ms > 0 {
        split.push(format!(
            "stopped between sessions {}",
            human_ms(t.stopped_ms)
        ));
    }
    out.push((
        "Wall time",
        format!("{} ({})", human_ms(rep.wall_ms), split.join(", ")),
    ));
    if let Some(bound) = data_loss(rep) {
        out.push(("Data-loss bound", bound));
    }
    out
}

/// The data-loss bound the runbook recorded (`result("data_loss_bound", ..)`, else the bytes).
pub(crate) fn data_loss(rep: &RunReport) -> Option<String> {
    let find = |name: &str| rep.results.iter().rev().find(|r| r.name == name);
    find("data_loss_bound")
        .map(|r| value_text(&r.value))
        .or_else(|| {
            find("data_loss_bound_bytes").map(|r| format!("{} bytes", value_text(&r.value)))
        })
}

pub fn markdown(rep: &RunReport) -> String {
    let mut out = String::new();
    let name = rep
        .runbook
        .rsplit('/')
        .next()
        .unwrap_or(&rep.runbook)
        .to_string();
    out.push_str(&format!(
        "# Run {} — {name}: {}\n\n",
        rep.run_id, rep.status
    ));
    header(&mut out, &["", ""]);
    for (k, v) in summary(rep) {
        row(&mut out, &[format!("**{k}**"), cell(&v)]);
    }

    if !rep.results.is_empty() {
        out.push_str("\n## Results\n\n");
        header(&mut out, &["Result", "Value", "Step"]);
        for r in &rep.results {
            row(
                &mut out,
                &[cell(&r.name), cell(&value_text(&r.value)), cell(&r.step)],
            );
        }
    }

    out.push_str("\n## Steps\n\n");
    if rep.steps.is_empty() {
        out.push_str("No step started.\n");
    } else {
        header(
            &mut out,
            &["Step", "Start", "Duration", "Status", "Retries", "Actions"],
        );
        for s in &rep.steps {
            let actions = rep.actions.iter().filter(|a| a.step == s.name).count();
            let indent = "&nbsp;&nbsp;".repeat(s.depth);
            let leaf = s.path.last().cloned().unwrap_or_default();
            row(
                &mut out,
                &[
                    format!("{indent}{}", cell(&leaf)),
                    format!("{} ({})", offset(s.start_ms), clock_at(rep, s.start_ms)),
                    human_ms(s.duration_ms),
                    s.status.clone(),
                    s.retries.to_string(),
                    actions.to_string(),
                ],
            );
        }
    }

    if !rep.approvals.is_empty() {
        out.push_str("\n## Approvals\n\n");
        header(
            &mut out,
            &[
                "Step", "Question", "Asked", "Answered", "By", "How", "Waited",
            ],
        );
        for a in &rep.approvals {
            row(
                &mut out,
                &[
                    cell(&a.step),
                    cell(&a.message),
                    clock(&a.asked_at),
                    a.answered_at
                        .as_deref()
                        .map(clock)
                        .unwrap_or_else(|| "not answered".into()),
                    a.by.clone().unwrap_or_default(),
                    a.via.clone().unwrap_or_default(),
                    a.answered_ms
                        .map(|t| human_ms(t.saturating_sub(a.asked_ms)))
                        .unwrap_or_default(),
                ],
            );
        }
    }

    if !rep.failures.is_empty() {
        out.push_str("\n## Failures\n\n");
        header(&mut out, &["When", "Where", "Message", "Then"]);
        for f in &rep.failures {
            let place = match &f.action {
                Some(a) => format!("{} ({a})", f.step),
                None => f.step.clone(),
            };
            row(
                &mut out,
                &[
                    format!("{} ({})", offset(f.at_ms), clock(&f.at)),
                    cell(&place),
                    cell(&f.message),
                    then(f).into(),
                ],
            );
        }
    }

    out.push_str("\n## Sessions\n\n");
    out.push_str("Each process that worked on the run; a resume continues after the last step the journal shows finished.\n\n");
    header(
        &mut out,
        &["#", "Started", "By", "Host", "PID", "Ran for", "Ended"],
    );
    for s in &rep.sessions {
        row(
            &mut out,
            &[
                s.n.to_string(),
                cell(&s.started_text()),
                cell(&s.operator),
                cell(&s.host),
                s.pid.to_string(),
                human_ms(s.end_ms.saturating_sub(s.start_ms)),
                cell(&s.ended_text()),
            ],
        );
    }

    if !rep.logs.is_empty() {
        out.push_str("\n## Log\n\n```text\n");
        for line in log_lines(rep) {
            out.push_str(&line.replace("```", "'''"));
            out.push('\n');
        }
        out.push_str("```\n");
    }
    out
}

/// The log, a line of text per line, each message's lines after the first indented under it.
pub(crate) fn log_lines(rep: &RunReport) -> Vec<String> {
    let mut out = Vec::new();
    for l in &rep.logs {
        let prefix = format!("{:>9}  {}: ", offset(l.at_ms), l.step);
        let pad = " ".repeat(prefix.chars().count());
        for (i, line) in l.message.lines().enumerate() {
            out.push(format!("{}{line}", if i == 0 { &prefix } else { &pad }));
        }
    }
    out
}

/// What came of a failure.
pub(crate) fn then(f: &super::Failure) -> &'static str {
    match (&f.action, f.handled) {
        (None, _) => "the run stopped",
        (Some(_), true) => "handled: the step went on",
        (Some(_), false) => "the step failed",
    }
}

/// The time of day at an offset from the run's start.
fn clock_at(rep: &RunReport, ms: u64) -> String {
    let Ok(t0) = humantime::parse_rfc3339_weak(&rep.started_at) else {
        return String::new();
    };
    let t = t0 + std::time::Duration::from_millis(ms);
    clock(&humantime::format_rfc3339_seconds(t).to_string())
}
