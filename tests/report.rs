//! `runbook report`: a run with parallel branches, a timed wait, an approval given on resume,
//! retries and a failure, read back as Markdown, JSON and HTML — the HTML rendered by a real
//! browser (Debian's chromium, headless).

use std::path::Path;
use std::process::Command;

use crate::support::{Server, Test};

const SCRIPT: &str = r#"
    step("observe", || {
        let r = http::get(#{ url: `${inventory.base}/health` });
        log(`health ${r.status}`);
    });
    step("sync", || {
        parallel(["eu-west-1", "ap-southeast-1"], |region| {
            step(`copy ${region}`, || sleep("300ms"));
        });
    });
    step("probe", || {
        try {
            http::get(#{ url: "http://127.0.0.1:9/unreachable", retries: 2, backoff: "20ms" });
        } catch (e) {
            log(`probe failed as expected`);
        }
    });
    step("gate", || approve("move traffic to eu-west-1?"));
    step("finish", || {
        result("new_primary", "eu-west-1");
        result("data_loss_bound", "at least 0 bytes (a test)");
        result("password_in_url", "postgres://app:hunter2@db.internal/app");
    });
"#;

/// A run paused at the approval, then resumed with --approve.
fn a_finished_run(server: &Server) -> (Test, String) {
    let t = Test::new()
        .script(SCRIPT)
        .inventory(&format!("base = \"{}\"\n", server.url("")));
    let paused = t.exec(&["run", "runbook.rhai", "-i", "inventory.toml"]);
    assert_eq!(paused.code, 3, "paused for approval\n{}", paused.all());
    let run = t.only_run();
    let done = t.exec(&["resume", &run, "--approve"]);
    assert_eq!(done.code, 0, "{}", done.all());
    (t, run)
}

#[test]
fn the_report_tells_what_happened_when_and_who_approved() {
    let server = Server::start();
    server.reply("/health", 200, "ok", std::time::Duration::ZERO);
    let (t, run) = a_finished_run(&server);

    let md = t.exec(&["report", &run]);
    assert_eq!(md.code, 0, "{}", md.all());
    let text = &md.stdout;
    for want in [
        &format!("# Run {run} — runbook.rhai: finished") as &str,
        "| **Status** | finished |",
        "| **Operators** | tester |",
        "| **Data-loss bound** | at least 0 bytes (a test) |",
        "| new_primary | eu-west-1 | finish |",
        // Steps: parallel branches are steps of their own, under the branch label.
        "| Step | Start | Duration | Status | Retries | Actions |",
        "| observe | +",
        "copy eu-west-1 | +",
        "copy ap-southeast-1 | +",
        // The probe's action was retried twice, then failed; the step went on.
        "| finished | 2 | 1 |",
        "## Failures",
        "| probe (http::get) | http://127.0.0.1:9/unreachable: cannot connect",
        "| handled: the step went on |",
        "## Approvals",
        "| gate | move traffic to eu-west-1? |",
        "| tester | resume --approve |",
        "## Sessions",
        "| 1 | started ",
        "| paused: ",
        "| 2 | resumed ",
        "health 200",
    ] {
        assert!(text.contains(want), "lacks {want:?}\n{text}");
    }
    assert!(
        !text.contains("hunter2"),
        "a password in the report\n{text}"
    );
    assert!(
        text.contains("postgres://app:***@db.internal/app"),
        "{text}"
    );

    let json = t.exec(&["report", &run, "--json"]);
    let v: serde_json::Value = serde_json::from_str(&json.stdout).expect("JSON");
    assert_eq!(v["status"], "finished");
    assert_eq!(v["sessions"].as_array().unwrap().len(), 2);
    let waits = v["waits"].as_array().unwrap();
    assert_eq!(waits.len(), 2, "a timed wait per branch");
    for w in waits {
        assert!(w["duration_ms"].as_u64().unwrap() >= 300, "{w}");
    }
    let probe = v["actions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["step"] == "probe")
        .unwrap();
    assert_eq!(probe["status"], "failed");
    assert_eq!(probe["retries"], 2);
    assert!(
        v["time"]["approvals_ms"].as_u64().is_some() && v["time"]["stopped_ms"].as_u64().is_some(),
        "{}",
        v["time"]
    );

    // Without a run id: the run started last.
    let latest = t.exec(&["report"]);
    assert_eq!(latest.stdout, md.stdout);
}

#[test]
fn a_report_of_no_run_names_what_is_wrong() {
    let t = Test::new();
    let none = t.exec(&["report"]);
    assert_eq!(none.code, 2, "{}", none.all());
    assert!(none.stderr.contains("no runs in"), "{}", none.stderr);
    let unknown = t.exec(&["report", "20260101-0000-dead"]);
    assert_eq!(unknown.code, 2, "{}", unknown.all());
    assert!(
        unknown
            .stderr
            .contains("no run with id '20260101-0000-dead'"),
        "{}",
        unknown.stderr
    );
    let server = Server::start();
    server.reply("/health", 200, "ok", std::time::Duration::ZERO);
    let (t, run) = a_finished_run(&server);
    let bad = t.exec(&["report", &run, "--html", "/nonexistent/dir/r.html"]);
    assert_eq!(bad.code, 2, "{}", bad.all());
    assert!(
        bad.stderr
            .contains("cannot write the report to /nonexistent/dir/r.html"),
        "{}",
        bad.stderr
    );
}

fn chromium(args: &[&str], page: &Path) -> std::process::Output {
    Command::new("chromium")
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--hide-scrollbars",
        ])
        .args(args)
        .arg(format!("file://{}", page.display()))
        .env("HOME", page.parent().unwrap())
        .output()
        .expect("chromium starts (scripts/setup installs it)")
}

#[test]
fn the_html_report_renders_in_a_real_browser() {
    let server = Server::start();
    server.reply("/health", 200, "ok", std::time::Duration::ZERO);
    let (t, run) = a_finished_run(&server);
    let page = t.path("report.html");
    let ran = t.exec(&["report", &run, "--html", page.to_str().unwrap()]);
    assert_eq!(ran.code, 0, "{}", ran.all());

    // The browser's own parse of the page: the timeline is an SVG with a row per step, and
    // nothing was fetched (the page refers to no other file).
    let dom = chromium(&["--dump-dom"], &page);
    assert!(
        dom.status.success(),
        "{}",
        String::from_utf8_lossy(&dom.stderr)
    );
    let dom = String::from_utf8_lossy(&dom.stdout);
    assert!(dom.contains("<svg"), "{dom}");
    for label in [
        "observe",
        "copy eu-west-1",
        "copy ap-southeast-1",
        "probe",
        "gate",
        "finish",
    ] {
        assert!(
            dom.contains(&format!(">{label}</text>")),
            "no row for {label}"
        );
    }
    assert!(
        dom.contains("resumed by tester"),
        "the resume boundary is drawn"
    );
    assert!(
        dom.contains("approval: move traffic to eu-west-1?"),
        "the approval is shaded"
    );
    assert!(dom.contains("timed wait"), "the waits are shaded");

    let png = t.path("report.png");
    let shot = chromium(
        &[
            &format!("--screenshot={}", png.display()),
            "--window-size=1400,900",
        ],
        &page,
    );
    assert!(
        shot.status.success(),
        "{}",
        String::from_utf8_lossy(&shot.stderr)
    );
    let bytes = std::fs::read(&png).expect("a screenshot");
    assert_eq!(&bytes[..8], b"\x89PNG\r\n\x1a\n", "a PNG");
    // A blank 1400x900 page compresses to a few kB; tables, text and bars do not.
    assert!(
        bytes.len() > 30_000,
        "the screenshot is nearly empty: {} bytes",
        bytes.len()
    );
    if let Ok(dir) = std::env::var("RUNBOOK_REPORT_SCREENSHOT") {
        std::fs::copy(&png, Path::new(&dir).join("report.png")).unwrap();
        std::fs::copy(&page, Path::new(&dir).join("report.html")).unwrap();
    }
}
