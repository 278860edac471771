//! The report as one self-contained HTML file: no script, no external style or font. A
//! timeline (an SVG Gantt: a row per step — parallel branches are steps of their own — and
//! under it a lane with its actions, timed waits and approvals, each shaded differently; the
//! time a run was stopped between sessions drawn as a short break), then the tables.

use super::markdown::summary;
use super::{clock, offset, value_text, RunReport};
use crate::report::human_ms;

fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

const STYLE: &str = r#"
body { font-family: -apple-system, "Segoe UI", "DejaVu Sans", Helvetica, Arial, sans-serif; margin: 24px 32px; color: #1d1d1f; background: #fff; }
h1 { font-size: 22px; margin: 0 0 4px 0; }
h2 { font-size: 17px; margin: 28px 0 8px 0; border-bottom: 1px solid #ddd; padding-bottom: 4px; }
.status { display: inline-block; padding: 2px 10px; border-radius: 10px; color: #fff; font-size: 14px; vertical-align: middle; }
.s-finished { background: #2e7d32; } .s-failed, .s-refused { background: #c62828; }
.s-paused, .s-interrupted, .s-crashed { background: #ef6c00; } .s-running { background: #1565c0; }
.s-undone, .s-abandoned, .s-unknown { background: #616161; }
table { border-collapse: collapse; font-size: 13px; margin: 4px 0; }
th, td { border: 1px solid #ddd; padding: 4px 8px; text-align: left; vertical-align: top; }
th { background: #f5f5f7; }
table.summary th { width: 140px; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
.failed { color: #c62828; font-weight: 600; } .stopped, .running, .retrying { color: #ef6c00; font-weight: 600; }
pre { background: #f5f5f7; padding: 10px; font-size: 12px; overflow-x: auto; line-height: 1.35; }
.legend { font-size: 12px; margin: 6px 0 10px 0; }
.legend span { display: inline-block; margin-right: 16px; }
.legend i { display: inline-block; width: 14px; height: 10px; margin-right: 5px; vertical-align: middle; border-radius: 2px; }
svg text { font-family: inherit; }
"#;

/// A time → x mapping that draws each session at scale and each stop between sessions as a
/// short break.
struct Scale {
    /// (from ms, to ms, from x, to x); the gaps are pieces too.
    pieces: Vec<(u64, u64, f64, f64, bool)>,
}

const GAP_PX: f64 = 36.0;

impl Scale {
    fn new(rep: &RunReport, width: f64) -> Scale {
        let mut active: Vec<(u64, u64)> = rep
            .sessions
            .iter()
            .map(|s| (s.start_ms, s.end_ms.max(s.start_ms)))
            .collect();
        if active.is_empty() {
            active.push((0, rep.wall_ms));
        }
        let gaps: Vec<(u64, u64)> = active
            .windows(2)
            .filter(|w| w[1].0 > w[0].1)
            .map(|w| (w[0].1, w[1].0))
            .collect();
        let total: u64 = active.iter().map(|(a, b)| b - a).sum::<u64>().max(1);
        // A stop drawn at scale unless that makes it wider than GAP_PX: then a break of GAP_PX.
        let all = (total + gaps.iter().map(|(a, b)| b - a).sum::<u64>()) as f64;
        let long = |g: &(u64, u64)| (g.1 - g.0) as f64 * width / all > GAP_PX;
        let fixed = gaps.iter().filter(|g| long(g)).count() as f64;
        let scaled: u64 = total
            + gaps
                .iter()
                .filter(|g| !long(g))
                .map(|(a, b)| b - a)
                .sum::<u64>();
        let per_ms = (width - GAP_PX * fixed).max(100.0) / scaled.max(1) as f64;
        let mut pieces = Vec::new();
        let mut x = 0.0;
        for (i, (a, b)) in active.iter().enumerate() {
            let w = (b - a) as f64 * per_ms;
            pieces.push((*a, *b, x, x + w, false));
            x += w;
            if let Some(next) = active.get(i + 1) {
                if next.0 > *b {
                    let g = (*b, next.0);
                    let w = if long(&g) {
                        GAP_PX
                    } else {
                        (g.1 - g.0) as f64 * per_ms
                    };
                    pieces.push((g.0, g.1, x, x + w, true));
                    x += w;
                }
            }
        }
        Scale { pieces }
    }

    fn x(&self, ms: u64) -> f64 {
        for (a, b, xa, xb, _) in &self.pieces {
            if ms <= *b {
                if ms <= *a {
                    return *xa;
                }
                let f = (ms - a) as f64 / (b - a).max(1) as f64;
                return xa + f * (xb - xa);
            }
        }
        self.pieces.last().map(|p| p.3).unwrap_or(0.0)
    }

    /// Milliseconds per pixel in the sessions.
    fn ms_per_px(&self) -> f64 {
        self.pieces
            .iter()
            .find(|p| !p.4 && p.3 > p.2)
            .map(|(a, b, xa, xb, _)| (b - a) as f64 / (xb - xa))
            .unwrap_or(1.0)
    }
}

fn tick_step(ms_per_px: f64) -> u64 {
    let want = ms_per_px * 90.0;
    for s in [
        1u64, 2, 5, 10, 20, 50, 100, 200, 500, 1_000, 2_000, 5_000, 10_000, 15_000, 30_000, 60_000,
        120_000, 300_000, 600_000, 900_000, 1_800_000, 3_600_000,
    ] {
        if s as f64 >= want {
            return s;
        }
    }
    7_200_000
}

fn timeline(rep: &RunReport) -> String {
    const LABEL: f64 = 260.0;
    const CHART: f64 = 960.0;
    const STEP_H: f64 = 18.0;
    const LANE_H: f64 = 12.0;
    const TOP: f64 = 34.0;
    let scale = Scale::new(rep, CHART);
    let rows_h: f64 = rep.steps.len() as f64 * (STEP_H + LANE_H + 6.0);
    let height = TOP + rows_h + 22.0;
    let width = LABEL + CHART + 20.0;
    let mut svg = format!(
        r##"<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" viewBox="0 0 {width} {height}" role="img" aria-label="timeline">
<defs><pattern id="hatch" width="6" height="6" patternUnits="userSpaceOnUse" patternTransform="rotate(45)"><rect width="6" height="6" fill="#e0e0e0"/><line x1="0" y1="0" x2="0" y2="6" stroke="#9e9e9e" stroke-width="3"/></pattern>
<pattern id="gap" width="8" height="8" patternUnits="userSpaceOnUse" patternTransform="rotate(-45)"><rect width="8" height="8" fill="#fafafa"/><line x1="0" y1="0" x2="0" y2="8" stroke="#e0e0e0" stroke-width="4"/></pattern></defs>
"##
    );
    let x = |ms: u64| LABEL + scale.x(ms);
    // Time axis.
    let step = tick_step(scale.ms_per_px());
    for (a, b, _, _, gap) in &scale.pieces {
        if *gap {
            let (xa, xb) = (x(*a), x(*b));
            if xb - xa < GAP_PX - 0.5 {
                // A short stop, drawn at scale: shaded, named in its tooltip.
                svg.push_str(&format!(
                    r#"<rect x="{xa:.1}" y="{TOP}" width="{:.1}" height="{rows_h}" fill="url(#gap)"><title>stopped for {}</title></rect>
"#,
                    (xb - xa).max(1.0),
                    human_ms(b - a)
                ));
                continue;
            }
            svg.push_str(&format!(
                r##"<rect x="{xa:.1}" y="{TOP}" width="{:.1}" height="{rows_h}" fill="url(#gap)"><title>stopped for {}</title></rect>
<text x="{:.1}" y="{:.1}" font-size="10" fill="#757575" text-anchor="middle">stopped {}</text>
"##,
                xb - xa,
                human_ms(b - a),
                (xa + xb) / 2.0,
                TOP + rows_h + 14.0,
                human_ms(b - a)
            ));
            continue;
        }
        let mut t = a.div_ceil(step) * step;
        while t <= *b {
            let tx = x(t);
            svg.push_str(&format!(
                r##"<line x1="{tx:.1}" y1="{TOP}" x2="{tx:.1}" y2="{:.1}" stroke="#eeeeee"/><text x="{tx:.1}" y="{:.1}" font-size="10" fill="#616161" text-anchor="middle">{}</text>
"##,
                TOP + rows_h,
                TOP - 8.0,
                esc(&offset(t))
            ));
            t += step;
        }
    }
    // Resume boundaries.
    for s in rep.sessions.iter().skip(1) {
        let sx = x(s.start_ms);
        // Near the right edge the label goes to the line's left.
        let (tx, anchor) = if sx > LABEL + CHART * 0.7 {
            (sx - 3.0, "end")
        } else {
            (sx + 3.0, "start")
        };
        svg.push_str(&format!(
            r##"<line x1="{sx:.1}" y1="{:.1}" x2="{sx:.1}" y2="{:.1}" stroke="#1565c0" stroke-dasharray="4 3"/><text x="{tx:.1}" y="12" font-size="10" fill="#1565c0" text-anchor="{anchor}">resumed by {} ({})</text>
"##,
            TOP - 4.0,
            TOP + rows_h,
            esc(&s.operator),
            esc(&clock(&s.started_at))
        ));
    }
    let bar = |svg: &mut String, a: u64, b: u64, y: f64, h: f64, fill: &str, title: &str| {
        let xa = x(a);
        let w = (x(b) - xa).max(2.0);
        svg.push_str(&format!(
            r#"<rect x="{xa:.1}" y="{y:.1}" width="{w:.1}" height="{h}" fill="{fill}" rx="2"><title>{}</title></rect>
"#,
            esc(title)
        ));
    };
    let mut y = TOP + 4.0;
    for (i, s) in rep.steps.iter().enumerate() {
        if i % 2 == 0 {
            svg.push_str(&format!(
                r##"<rect x="0" y="{:.1}" width="{width}" height="{:.1}" fill="#fafafa"/>
"##,
                y - 3.0,
                STEP_H + LANE_H + 6.0
            ));
        }
        let leaf = s.path.last().cloned().unwrap_or_default();
        let label: String = if leaf.chars().count() > 40 {
            format!("{}…", leaf.chars().take(39).collect::<String>())
        } else {
            leaf
        };
        svg.push_str(&format!(
            r##"<text x="{:.1}" y="{:.1}" font-size="12" fill="#1d1d1f"><title>{}</title>{}</text>
"##,
            6.0 + 14.0 * s.depth as f64,
            y + 13.0,
            esc(&s.name),
            esc(&label)
        ));
        let fill = match s.status.as_str() {
            "finished" => "#43a047",
            "failed" => "#e53935",
            "running" => "#1e88e5",
            _ => "#fb8c00",
        };
        bar(
            &mut svg,
            s.start_ms,
            s.end_ms,
            y,
            STEP_H - 4.0,
            fill,
            &format!(
                "{} — {} ({}){}",
                s.name,
                human_ms(s.duration_ms),
                s.status,
                if s.retries > 0 {
                    format!(", {} retries", s.retries)
                } else {
                    String::new()
                }
            ),
        );
        let lane = y + STEP_H - 1.0;
        for a in rep.actions.iter().filter(|a| a.step == s.name) {
            let fill = match (a.status.as_str(), a.write) {
                ("failed", _) => "#e53935",
                ("in flight", _) => "#ffb300",
                (_, true) => "#5e35b1",
                _ => "#64b5f6",
            };
            let target = a
                .target
                .as_deref()
                .map(|t| format!(" {t}"))
                .unwrap_or_default();
            bar(
                &mut svg,
                a.start_ms,
                a.end_ms,
                lane,
                LANE_H - 2.0,
                fill,
                &format!(
                    "{}{target}: {} ({}){}",
                    a.action,
                    human_ms(a.end_ms.saturating_sub(a.start_ms)),
                    a.status,
                    if a.retries > 0 {
                        format!(", {} retries", a.retries)
                    } else {
                        String::new()
                    }
                ),
            );
        }
        for w in rep.waits.iter().filter(|w| w.step == s.name) {
            bar(
                &mut svg,
                w.start_ms,
                w.end_ms,
                lane,
                LANE_H - 2.0,
                "url(#hatch)",
                &format!("timed wait {}", human_ms(w.duration_ms)),
            );
        }
        for a in rep.approvals.iter().filter(|a| a.step == s.name) {
            let end = a.answered_ms.unwrap_or(rep.wall_ms);
            let who =
                a.by.as_deref()
                    .map(|b| format!(", approved by {b}"))
                    .unwrap_or_else(|| ", not answered".into());
            bar(
                &mut svg,
                a.asked_ms,
                end,
                lane,
                LANE_H - 2.0,
                "#fdd835",
                &format!(
                    "approval: {} — waited {}{who}",
                    a.message,
                    human_ms(end.saturating_sub(a.asked_ms))
                ),
            );
        }
        y += STEP_H + LANE_H + 6.0;
    }
    svg.push_str("</svg>");
    svg
}

fn table(head: &[&str], rows: Vec<Vec<String>>) -> String {
    let mut out = String::from("<table><tr>");
    for h in head {
        out.push_str(&format!("<th>{}</th>", esc(h)));
    }
    out.push_str("</tr>\n");
    for r in rows {
        out.push_str("<tr>");
        for c in r {
            out.push_str(&c);
        }
        out.push_str("</tr>\n");
    }
    out.push_str("</table>\n");
    out
}

fn td(s: &str) -> String {
    format!("<td>{}</td>", esc(s))
}

fn num(s: &str) -> String {
    format!("<td class=\"num\">{}</td>", esc(s))
}

pub fn html(rep: &RunReport) -> String {
    let name = rep.runbook.rsplit('/').next().unwrap_or(&rep.runbook);
    let status = rep.status.as_str();
    let class = status.split_whitespace().next().unwrap_or("unknown");
    let mut body = format!(
        "<h1>Run {} — {} <span class=\"status s-{}\">{}</span></h1>\n",
        esc(&rep.run_id),
        esc(name),
        esc(class),
        esc(status)
    );
    body.push_str("<table class=\"summary\">\n");
    for (k, v) in summary(rep) {
        body.push_str(&format!(
            "<tr><th>{}</th><td>{}</td></tr>\n",
            esc(k),
            esc(&v)
        ));
    }
    body.push_str("</table>\n");
    if !rep.results.is_empty() {
        body.push_str("<h2>Results</h2>\n");
        body.push_str(&table(
            &["Result", "Value", "Step"],
            rep.results
                .iter()
                .map(|r| vec![td(&r.name), td(&value_text(&r.value)), td(&r.step)])
                .collect(),
        ));
    }
    body.push_str(
        "<h2>Timeline</h2>\n<div class=\"legend\">\
<span><i style=\"background:#43a047\"></i>step finished</span>\
<span><i style=\"background:#e53935\"></i>failed</span>\
<span><i style=\"background:#fb8c00\"></i>stopped / retrying</span>\
<span><i style=\"background:#64b5f6\"></i>read</span>\
<span><i style=\"background:#5e35b1\"></i>change</span>\
<span><i style=\"background:#ffb300\"></i>in flight when stopped</span>\
<span><i style=\"background:#e0e0e0;border:1px solid #9e9e9e\"></i>timed wait</span>\
<span><i style=\"background:#fdd835\"></i>waiting for approval</span>\
<span><i style=\"border-left:2px dashed #1565c0;width:4px\"></i>resumed</span>\
</div>\n<div style=\"overflow-x:auto\">",
    );
    body.push_str(&timeline(rep));
    body.push_str("</div>\n<h2>Steps</h2>\n");
    body.push_str(&table(
        &["Step", "Start", "Duration", "Status", "Retries", "Actions"],
        rep.steps
            .iter()
            .map(|s| {
                let n = rep.actions.iter().filter(|a| a.step == s.name).count();
                vec![
                    format!(
                        "<td style=\"padding-left:{}px\">{}</td>",
                        8 + 16 * s.depth,
                        esc(s.path.last().map(String::as_str).unwrap_or(""))
                    ),
                    td(&offset(s.start_ms)),
                    num(&human_ms(s.duration_ms)),
                    format!("<td class=\"{}\">{}</td>", esc(&s.status), esc(&s.status)),
                    num(&s.retries.to_string()),
                    num(&n.to_string()),
                ]
            })
            .collect(),
    ));
    if !rep.approvals.is_empty() {
        body.push_str("<h2>Approvals</h2>\n");
        body.push_str(&table(
            &[
                "Step", "Question", "Asked", "Answered", "By", "How", "Waited",
            ],
            rep.approvals
                .iter()
                .map(|a| {
                    vec![
                        td(&a.step),
                        td(&a.message),
                        td(&clock(&a.asked_at)),
                        td(&a
                            .answered_at
                            .as_deref()
                            .map(clock)
                            .unwrap_or_else(|| "not answered".into())),
                        td(a.by.as_deref().unwrap_or("")),
                        td(a.via.as_deref().unwrap_or("")),
                        num(&a
                            .answered_ms
                            .map(|t| human_ms(t.saturating_sub(a.asked_ms)))
                            .unwrap_or_default()),
                    ]
                })
                .collect(),
        ));
    }
    if !rep.failures.is_empty() {
        body.push_str("<h2>Failures</h2>\n");
        body.push_str(&table(
            &["When", "Where", "Message", "Then"],
            rep.failures
                .iter()
                .map(|f| {
                    let place = match &f.action {
                        Some(a) => format!("{} ({a})", f.step),
                        None => f.step.clone(),
                    };
                    let class = if f.handled { "" } else { " class=\"failed\"" };
                    vec![
                        td(&format!("{} ({})", offset(f.at_ms), clock(&f.at))),
                        td(&place),
                        format!("<td{class}>{}</td>", esc(&f.message)),
                        td(super::markdown::then(f)),
                    ]
                })
                .collect(),
        ));
    }
    body.push_str("<h2>Sessions</h2>\n");
    body.push_str(&table(
        &["#", "Started", "By", "Host", "PID", "Ran for", "Ended"],
        rep.sessions
            .iter()
            .map(|s| {
                vec![
                    num(&s.n.to_string()),
                    td(&s.started_text()),
                    td(&s.operator),
                    td(&s.host),
                    num(&s.pid.to_string()),
                    num(&human_ms(s.end_ms.saturating_sub(s.start_ms))),
                    td(&s.ended_text()),
                ]
            })
            .collect(),
    ));
    if !rep.logs.is_empty() {
        body.push_str("<h2>Log</h2>\n<pre>");
        for line in super::markdown::log_lines(rep) {
            body.push_str(&esc(&line));
            body.push('\n');
        }
        body.push_str("</pre>\n");
    }
    format!(
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>Run {} — {}</title><style>{STYLE}</style></head>\n<body>\n{body}</body></html>\n",
        esc(&rep.run_id),
        esc(name)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_is_escaped_and_nothing_is_fetched() {
        assert_eq!(
            esc("<a href=\"x\">&'"),
            "&lt;a href=&quot;x&quot;&gt;&amp;&#39;"
        );
        let rep = super::super::build("r<1>", &[], crate::journal::RunStatus::Unknown);
        let page = html(&rep);
        assert!(page.contains("Run r&lt;1&gt;"));
        for external in ["<script", "<link", "src=\"http", "url(http", "@import"] {
            assert!(!page.contains(external), "{external}");
        }
    }

    #[test]
    fn ticks_are_round_and_about_ninety_pixels_apart() {
        let cases = [
            (0.01, 1),
            (1.0, 100),
            (10.0, 1_000),
            (100.0, 10_000),
            (1_000.0, 120_000),
        ];
        for (ms_per_px, want) in cases {
            assert_eq!(tick_step(ms_per_px), want, "{ms_per_px}");
        }
    }
}
