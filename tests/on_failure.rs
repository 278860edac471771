//! `on_failure(|f| ..)`: a run that fails tells whoever its handler tells (here a webhook on
//! loopback), once per failing session, with what failed and where; a run that pauses, is
//! interrupted or refused does not; the handler never hides or changes the run's own failure,
//! and its calls are never replayed nor taken for the run's changes.

use crate::support::{assert_says, Server, Test};

/// A runbook that announces, changes something, then checks a health endpoint: failing while
/// it answers 503. Its handler posts what it is given to /alert.
fn announced(server: &Server, extra: &str) -> String {
    format!(
        r#"
        step("announce", || http::post(#{{ url: "{u}/announce" }}));
        on_failure(|f| http::post(#{{ url: "{u}/alert", json: f }}));
        step("change", || http::post(#{{ url: "{u}/change" }}));
        step("verify", || {{
            let h = http::get(#{{ url: "{u}/health", expect_status: [200, 503], retries: 0 }});
            if h.status != 200 {{ fail(`health is ${{h.status}}`); }}
        }});
        {extra}
        step("done", || http::post(#{{ url: "{u}/done" }}));
        "#,
        u = server.url("")
    )
}

/// A change with an undo (posting to /revert), then a check of /health; its handlers post
/// what they are given to /alert and /undone.
fn undoable(server: &Server) -> String {
    format!(
        r#"
        on_failure(|f| http::post(#{{ url: "{u}/alert", json: f }}));
        on_undone(|u| http::post(#{{ url: "{u}/undone", json: u }}));
        step("change", #{{ undo: || http::post(#{{ url: "{u}/revert", retries: 0 }}) }}, || http::post(#{{ url: "{u}/change" }}));
        step("verify", || {{
            let h = http::get(#{{ url: "{u}/health", expect_status: [200, 503], retries: 0 }});
            if h.status != 200 {{ fail(`health is ${{h.status}}`); }}
        }});
        "#,
        u = server.url("")
    )
}

fn alerts(server: &Server) -> Vec<serde_json::Value> {
    server
        .requests()
        .into_iter()
        .filter(|r| r.method == "POST" && r.path == "/alert")
        .map(|r| serde_json::from_str(&r.body).unwrap())
        .collect()
}

#[test]
fn each_failing_session_tells_once_and_the_failure_stays_the_runs() {
    let server = Server::start();
    server.reply("/health", 503, "down", std::time::Duration::ZERO);
    let t = Test::new().script(&announced(&server, ""));

    let first = t.exec(&["run", "runbook.rhai"]);
    assert_eq!(first.code, 1, "{}", first.all());
    let run = t.only_run();
    let told = alerts(&server);
    assert_eq!(told.len(), 1, "{told:?}");
    assert_eq!(told[0]["run"], run.as_str());
    assert_eq!(told[0]["step"], "verify");
    assert_eq!(told[0]["error"], "health is 503");
    assert_eq!(told[0]["changed"], true);
    assert_eq!(told[0]["resume"], format!("runbook resume {run}"));
    // The run's own failure is as it would be without a handler.
    assert_says(
        &first.stdout,
        &["▶ on failure (session 1)", "✓ on failure (session 1)"],
    );
    assert_says(
        &first.stderr,
        &[
            "error: in step 'verify': health is 503",
            &format!("runbook resume {run}"),
        ],
    );
    let runs = t.exec(&["runs"]);
    assert_says(&runs.stdout, &["failed", "verify"]);
    assert!(!runs.stdout.contains("on failure"), "{}", runs.stdout);

    // Resumed and failing again: told again (a new session's handler is not a replay), with
    // the command as this session was given its store.
    let second = t.exec(&["--state-dir", "./.runbook", "resume", &run]);
    assert_eq!(second.code, 1, "{}", second.all());
    assert_eq!(alerts(&server).len(), 2);
    assert_eq!(
        alerts(&server)[1]["resume"],
        format!("runbook resume {run} --state-dir ./.runbook")
    );
    assert_says(&second.stdout, &["▶ on failure (session 2)"]);
    assert_eq!(server.count("POST", "/change"), 1, "no change repeated");

    // Fixed: the run finishes, nobody is told, and the earlier handlers' posts are not
    // reported as changes the run no longer makes.
    server.reply("/health", 200, "up", std::time::Duration::ZERO);
    let third = t.exec(&["resume", &run]);
    assert_eq!(third.code, 0, "{}", third.all());
    assert_eq!(alerts(&server).len(), 2);
    assert!(!third.all().contains("no longer makes"), "{}", third.all());
    assert_eq!(server.count("POST", "/done"), 1);
    assert_eq!(server.count("POST", "/announce"), 1);
}

#[test]
fn a_pause_a_refusal_or_a_finished_run_tells_nobody() {
    let server = Server::start();
    server.reply("/health", 200, "up", std::time::Duration::ZERO);
    let t = Test::new().script(&announced(
        &server,
        "step(\"gate\", || approve(\"go on?\"));",
    ));
    assert_eq!(t.exec(&["run", "runbook.rhai"]).code, 3);
    // A second run is refused by the first one's lock: not a failure of either.
    assert_eq!(t.exec(&["run", "runbook.rhai"]).code, 4);
    let run = t.only_run();
    assert_eq!(t.exec(&["resume", &run, "--approve"]).code, 0);
    assert_eq!(alerts(&server), Vec::<serde_json::Value>::new());
}

#[test]
fn a_failing_handler_is_a_warning_and_a_runbook_mistake_is_told_too() {
    let server = Server::start();
    server.reply("/alert", 500, "slack is down", std::time::Duration::ZERO);
    server.reply("/health", 503, "down", std::time::Duration::ZERO);
    let t = Test::new().script(&announced(&server, ""));
    let ran = t.exec(&["run", "runbook.rhai"]);
    assert_eq!(ran.code, 1, "{}", ran.all());
    assert_says(
        &ran.all(),
        &[
            "warning: the on_failure handler failed: http::post",
            "error: in step 'verify': health is 503",
        ],
    );
    assert!(t
        .journal(&t.only_run())
        .contains("\"failed_steps\":[[\"verify\"]]"));

    // A mistake in the runbook found as it runs (a value only the run computes, which the
    // action cannot take) stops it with exit 2: told as well.
    let server = Server::start();
    let t = Test::new().script(&format!(
        r#"
        let p = params(#{{ tries: #{{ type: "string", default: "many" }} }});
        on_failure(|f| http::post(#{{ url: "{u}/alert", json: f }}));
        step("change", || http::post(#{{ url: "{u}/change" }}));
        step("typo", || http::post(#{{ url: "{u}/x", retries: p.tries }}));
        "#,
        u = server.url("")
    ));
    let ran = t.exec(&["run", "runbook.rhai"]);
    assert_eq!(ran.code, 2, "{}", ran.all());
    let told = alerts(&server);
    assert_eq!(told.len(), 1, "{told:?}");
    assert_eq!(told[0]["step"], "typo");
    assert!(
        told[0]["error"].as_str().unwrap().contains("retries"),
        "{told:?}"
    );
}

#[test]
fn a_dry_run_plans_the_handler_and_undo_is_not_blocked_by_it() {
    let server = Server::start();
    server.reply("/health", 503, "down", std::time::Duration::ZERO);
    let t = Test::new().script(&announced(&server, ""));
    let dry = t.exec(&["run", "runbook.rhai", "--dry-run"]);
    assert_eq!(dry.code, 1, "{}", dry.all());
    // The post is predicted, not sent: #{ changed, error, resume: (), run: (), step, undoing }
    // is 98 bytes.
    assert_says(
        &dry.stdout,
        &[
            "▶ on failure (session 1)",
            "/alert (JSON, 98 bytes) (predicted)",
        ],
    );
    assert_eq!(alerts(&server).len(), 0, "a dry-run posts nothing");

    // A real run with an undo: `resume --undo` after the handler ran undoes the change, and
    // does not take the handler's post for a change the runbook no longer reaches.
    let server = Server::start();
    server.reply("/health", 503, "down", std::time::Duration::ZERO);
    let t = Test::new().script(&undoable(&server));
    assert_eq!(t.exec(&["run", "runbook.rhai"]).code, 1);
    assert_eq!(alerts(&server).len(), 1);
    let undone = t.exec(&["resume", &t.only_run(), "--undo"]);
    assert_eq!(undone.code, 0, "{}", undone.all());
    assert_eq!(server.count("POST", "/revert"), 1);
    assert_eq!(alerts(&server).len(), 1, "undoing is not a new failure");
    assert_eq!(server.count("POST", "/undone"), 1);
}

/// A run that changed nothing still says "run it again" and claims no lock, though its
/// handler posted (a handler's calls tell; they are not the run's changes).
#[test]
fn a_handler_does_not_make_a_run_that_changed_nothing_hold_its_lock() {
    let server = Server::start();
    server.reply("/health", 503, "down", std::time::Duration::ZERO);
    let t = Test::new().script(&format!(
        r#"
        on_failure(|f| http::post(#{{ url: "{u}/alert", json: f }}));
        step("verify", || {{
            let h = http::get(#{{ url: "{u}/health", expect_status: [200, 503], retries: 0 }});
            if h.status != 200 {{ fail(`health is ${{h.status}}`); }}
        }});
        "#,
        u = server.url("")
    ));
    let ran = t.exec(&["run", "runbook.rhai"]);
    assert_eq!(ran.code, 1, "{}", ran.all());
    assert_eq!(alerts(&server)[0]["changed"], false);
    assert_eq!(alerts(&server)[0]["resume"], serde_json::Value::Null);
    assert!(!ran.stderr.contains("runbook resume"), "{}", ran.stderr);
    let runs = t.exec(&["runs"]);
    assert!(!runs.stdout.contains("claims"), "{}", runs.stdout);
    // The next run is not refused by the first one's lock.
    assert_eq!(t.exec(&["run", "runbook.rhai"]).code, 1);
    assert_eq!(alerts(&server).len(), 2);
}

/// The team heard the run failed; when the undo the operator chose fails too, it hears that,
/// with `undoing` set so the message can name `resume --undo`.
#[test]
fn an_undo_that_fails_is_told_too() {
    let server = Server::start();
    server.reply("/health", 503, "down", std::time::Duration::ZERO);
    server.reply("/revert", 500, "cannot", std::time::Duration::ZERO);
    let t = Test::new().script(&undoable(&server));
    assert_eq!(t.exec(&["run", "runbook.rhai"]).code, 1);
    assert_eq!(alerts(&server)[0]["undoing"], false);
    let undo = t.exec(&["resume", &t.only_run(), "--undo"]);
    assert_eq!(undo.code, 1, "{}", undo.all());
    let told = alerts(&server);
    assert_eq!(told.len(), 2, "{told:?}\n{}", undo.all());
    assert_eq!(told[1]["undoing"], true);
    assert_eq!(
        told[1]["resume"],
        format!("runbook resume {} --undo", t.only_run())
    );
    assert_eq!(told[1]["step"], "undo › change");
    assert!(
        told[1]["error"].as_str().unwrap().contains("500"),
        "{told:?}"
    );
    assert_says(&undo.stderr, &["in step 'undo › change'", "--undo"]);
    assert_eq!(server.count("POST", "/undone"), 0, "nothing was undone");
}

/// `on_undone(|u| ..)`: once `resume --undo` has reversed the run, its handler tells which
/// steps were undone (latest first) and which changes were left as they are. Its post is not
/// a change of the run, and the run reads as undone at its undo, not at the handler. A
/// handler that fails is a warning: the run is undone all the same.
#[test]
fn an_undone_run_tells_what_was_reversed_and_what_was_left() {
    let server = Server::start();
    server.reply("/health", 503, "down", std::time::Duration::ZERO);
    let script = |handler: &str| {
        format!(
            r#"
            on_undone({handler});
            step("announce", || http::post(#{{ url: "{u}/announce" }}));
            step("first", #{{ undo: || http::post(#{{ url: "{u}/revert-first" }}) }}, || http::post(#{{ url: "{u}/first" }}));
            step("second", #{{ undo: || http::post(#{{ url: "{u}/revert-second" }}) }}, || http::post(#{{ url: "{u}/second" }}));
            step("verify", || {{
                let h = http::get(#{{ url: "{u}/health", expect_status: [200, 503], retries: 0 }});
                if h.status != 200 {{ fail(`health is ${{h.status}}`); }}
            }});
            "#,
            u = server.url("")
        )
    };
    let t = Test::new().script(&script(&format!(
        r#"|u| http::post(#{{ url: "{}/undone", json: u }})"#,
        server.url("")
    )));
    assert_eq!(t.exec(&["run", "runbook.rhai"]).code, 1);
    assert_eq!(
        server.count("POST", "/undone"),
        0,
        "a failure is not an undo"
    );
    let run = t.only_run();
    let undo = t.exec(&["resume", &run, "--undo"]);
    assert_eq!(undo.code, 0, "{}", undo.all());
    assert_says(&undo.stdout, &["▶ on undone (session 2)"]);
    let told: Vec<serde_json::Value> = server
        .requests()
        .into_iter()
        .filter(|r| r.path == "/undone")
        .map(|r| serde_json::from_str(&r.body).unwrap())
        .collect();
    assert_eq!(
        told,
        [serde_json::json!({ "run": run, "undone": ["second", "first"], "left": ["announce"] })]
    );
    let runs = t.exec(&["runs"]);
    let line = runs.stdout.lines().find(|l| l.contains(&run)).unwrap();
    assert!(line.contains("undone"), "{line}");
    assert!(!line.contains("on undone"), "{line}");

    let t = Test::new().script(&script(r#"|u| fail(`no channel for ${u.run}`)"#));
    assert_eq!(t.exec(&["run", "runbook.rhai"]).code, 1);
    let undo = t.exec(&["resume", &t.only_run(), "--undo"]);
    assert_eq!(undo.code, 0, "{}", undo.all());
    assert_says(
        &undo.all(),
        &["the on_undone handler failed: no channel for", "run undone"],
    );
}

#[test]
fn a_second_handler_is_a_mistake() {
    Test::new()
        .script("on_failure(|f| log(f));\non_failure(|f| log(f));\nstep(\"s\", || log(1));")
        .run(&[])
        .code(2)
        .stderr("on_failure(..) is declared twice; one handler per run")
        .check();
    Test::new()
        .script("on_undone(|u| log(u));\non_failure(|f| log(f));\non_undone(|u| log(u));")
        .run(&[])
        .code(2)
        .stderr("on_undone(..) is declared twice; one handler per run")
        .check();
}

/// A failure of several lines reaches the team's channel with its first line and what comes
/// next on top (a notification's preview shows them), and the rest below as a block that keeps
/// its columns.
#[test]
fn the_team_reads_a_long_failure_first_line_first() {
    let server = Server::start();
    let t = Test::new()
        .script(&format!(
            r#"import "incident" as incident;
on_failure(|f| incident::failed("{slack}", "drill", f));
step("check", || shell::run(#{{ cmd: "cat table.txt >&2; exit 1" }}));
"#,
            slack = server.url("/slack")
        ))
        .file("table.txt", "REGION     DATABASE\neu-west-1  primary\n")
        .run(&[])
        .code(1);
    t.check();
    let requests = server.requests();
    let sent = requests
        .iter()
        .find(|r| r.path == "/slack")
        .expect("a message");
    let text = serde_json::from_str::<serde_json::Value>(&sent.body).unwrap()["text"]
        .as_str()
        .unwrap()
        .to_string();
    let run = t.only_run();
    assert_eq!(
        text,
        format!(
            ":x: drill FAILED at step 'check': shell::run failed: `cat table.txt >&2; exit 1` exited with code 1. run {run} stopped mid-way; once the cause is fixed, `runbook resume {run}` goes on without repeating finished changes\n```\nREGION     DATABASE\neu-west-1  primary\n```"
        )
    );
}
