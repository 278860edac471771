use crate::support::{assert_says, Server, Test};

#[test]
fn steps_run_in_order_and_report_their_tree() {
    let server = Server::start();
    let t = Test::new()
        .script(&format!(
            r#"
            step("outer", || {{
                step("first", || http::post(#{{ url: "{a}", body: "1" }}));
                step("second", || http::post(#{{ url: "{b}", body: "2" }}));
            }});
            log("done");
            "#,
            a = server.url("/a"),
            b = server.url("/b")
        ))
        .run(&[])
        .code(0)
        .stdout("▶ outer")
        .stdout("  ▶ first")
        .stdout("✓ second")
        .stdout("run finished");
    t.check();
    let paths: Vec<String> = server.requests().iter().map(|r| r.path.clone()).collect();
    assert_eq!(paths, ["/a", "/b"]);
}

#[test]
fn params_are_typed_and_defaulted() {
    let server = Server::start();
    let t = Test::new()
        .script(&format!(
            r#"
            let p = params(#{{
                count: #{{ type: "int", default: 2, doc: "how many" }},
                target: #{{ type: "string", choices: ["eu-west-1", "ap-southeast-1"] }},
                force: #{{ type: "bool", default: false }},
            }});
            for i in 0..p.count {{
                step(`post ${{i}}`, || http::post(#{{ url: "{u}" + p.target, json: #{{ i: i, force: p.force }} }}));
            }}
            "#,
            u = server.url("/t/")
        ))
        .run(&["--var", "count=3", "--var", "target=eu-west-1"])
        .code(0);
    t.check();
    assert_eq!(server.count("POST", "/t/eu-west-1"), 3);
    let bodies: Vec<String> = server.requests().iter().map(|r| r.body.clone()).collect();
    assert_eq!(bodies[2], r#"{"force":false,"i":2}"#);
}

#[test]
fn inventory_values_reach_actions() {
    let server = Server::start();
    let t = Test::new()
        .inventory(&format!(
            r#"
            [regions.us-east-1]
            health_url = "{h}"
            [regions.eu-west-1]
            health_url = "{h2}"
            "#,
            h = server.url("/health/us"),
            h2 = server.url("/health/eu")
        ))
        .script(
            r#"
            for name in inventory.regions.keys() {
                step(`check ${name}`, || {
                    let r = http::get(inventory.regions[name].health_url);
                    log(`${name}: ${r.status}`);
                });
            }
            "#,
        )
        .run(&[])
        .code(0)
        .stdout("us-east-1: 200")
        .stdout("eu-west-1: 200");
    t.check();
    assert_eq!(server.count("GET", "/health/"), 2);
}

#[test]
fn parallel_branches_are_their_own_steps() {
    let server = Server::start();
    server.reply("/slow", 200, "ok", std::time::Duration::from_millis(300));
    let t = Test::new()
        .script(&format!(
            r#"
            let out = parallel(["a", "b", "c", "d"], |r| {{
                step("call", || http::get("{u}" + r));
                r
            }});
            log(`results ${{out}}`);
            "#,
            u = server.url("/slow/")
        ))
        .run(&["--output", "json"])
        .code(0);
    let ran = t.check();
    assert_eq!(server.count("GET", "/slow/"), 4);
    for line in ran.stdout.lines() {
        let event: serde_json::Value = serde_json::from_str(line).expect("one JSON event per line");
        assert!(
            event["event"].is_string() && event["at"].is_string(),
            "{line}"
        );
    }
    let timing: serde_json::Value =
        serde_json::from_str(ran.stdout.lines().last().unwrap()).unwrap();
    assert_eq!(timing["event"], "timing");
    let (wall, inside) = (
        timing["wall_ms"].as_u64().unwrap(),
        timing["action_ms"].as_u64().unwrap(),
    );
    assert!(
        inside >= 300 && inside <= wall,
        "overlapping branches count once: {timing}"
    );
    assert!(ran.stdout.contains(r#"["[a]","call"]"#), "{}", ran.stdout);
    assert!(
        ran.stdout
            .contains(r#"results [\"a\", \"b\", \"c\", \"d\"]"#),
        "{}",
        ran.stdout
    );
    // The four branches ran at once: the journal shows all four calls started before any finished.
    let events = t.call_sequence(&t.only_run());
    assert_eq!(&events[..4], ["s", "s", "s", "s"], "{events:?}");
}

#[test]
fn parallel_limit_bounds_concurrency() {
    let server = Server::start();
    server.reply("/slow", 200, "ok", std::time::Duration::from_millis(100));
    let t = Test::new()
        .script(&format!(
            r#"parallel([1, 2, 3, 4], #{{ limit: 1 }}, |i| http::get("{u}" + i));"#,
            u = server.url("/slow/")
        ))
        .run(&[])
        .code(0);
    t.check();
    let events = t.call_sequence(&t.only_run());
    assert_eq!(events, ["s", "f", "s", "f", "s", "f", "s", "f"]);
}

#[test]
fn step_retries_rerun_the_body_until_it_passes() {
    let server = Server::start();
    server.reply("/flaky", 503, "down", std::time::Duration::ZERO);
    let url = server.url("/flaky");
    let t = Test::new()
        .script(&format!(
            r#"
            step("wait for it", #{{ retries: 5, backoff: "100ms" }}, || {{
                http::get(#{{ url: "{url}", retries: 0 }});
            }});
            "#
        ))
        .run(&[]);
    let mut child = t.spawn(&["run", "runbook.rhai"]);
    assert!(crate::support::wait_for(
        std::time::Duration::from_secs(10),
        || server.count("GET", "/flaky") >= 2
    ));
    server.reply("/flaky", 200, "up", std::time::Duration::ZERO);
    let status = child.wait().unwrap();
    assert!(status.success());
    let journal = t.journal(&t.only_run());
    assert!(journal.contains(r#""will_retry":true"#));
    assert!(journal.contains("wait for it (attempt 2)"));
}

#[test]
fn a_failing_action_fails_the_run_with_where_and_what_next() {
    let server = Server::start();
    server.reply("/bad", 500, "boom", std::time::Duration::ZERO);
    let t = Test::new()
        .script(&format!(
            "step(\"call\", || {{\n    http::post(#{{ url: \"{u}\" }});\n}});\n",
            u = server.url("/bad")
        ))
        .run(&[])
        .code(1)
        .stderr("http::post failed")
        .stderr("answered 500 (expected 2xx): boom")
        .stderr("in step 'call'")
        .stderr("--> runbook.rhai:2:11")
        .stderr("next: fix the cause, then `runbook resume");
    t.check();
    // A write is not retried on a 5xx: it may have been applied.
    assert_eq!(server.count("POST", "/bad"), 1);
}

#[test]
fn try_catch_sees_action_failures() {
    let t = Test::new()
        .script(
            r#"
            let reachable = true;
            try { http::get(#{ url: "http://127.0.0.1:9/", retries: 0 }); } catch (e) { reachable = false; log(`unreachable: ${e}`); }
            log(`reachable=${reachable}`);
            "#,
        )
        .run(&[])
        .code(0)
        .stdout("reachable=false")
        .stdout("cannot connect");
    t.check();
}

/// Branches and undo closures see the modules and functions of the script that declared them.
#[test]
fn parallel_branches_and_undo_closures_see_imports() {
    let server = Server::start();
    let t = Test::new()
        .file(
            "lib/post.rhai",
            "fn to(url, what) { http::post(#{ url: url + what }) }",
        )
        .script(&format!(
            r#"
            import "./lib/post" as post;
            step("fan out", #{{ undo: || post::to("{u}", "undo") }}, || {{
                parallel(["a", "b"], |x| post::to("{u}", x));
            }});
            fail("stop here");
            "#,
            u = server.url("/")
        ));
    assert_eq!(t.exec(&["run", "runbook.rhai"]).code, 1);
    assert_eq!(
        (server.count("POST", "/a"), server.count("POST", "/b")),
        (1, 1)
    );
    let undone = t.exec(&["resume", &t.only_run(), "--undo"]);
    assert_eq!(undone.code, 0, "{}", undone.all());
    assert_eq!(server.count("POST", "/undo"), 1);
}

/// `runbook log RUN | head -1`: the reader goes away after one line; the command ends quietly.
#[test]
fn a_closed_output_pipe_ends_log_runs_and_actions_quietly() {
    use std::io::{BufRead, BufReader};
    let t = Test::new().script(r#"for i in 0..3000 { log(`line ${i} of a long journal`); }"#);
    assert_eq!(t.exec(&["run", "runbook.rhai"]).code, 0);
    let run = t.only_run();
    for args in [vec!["log", run.as_str()], vec!["runs"], vec!["actions"]] {
        let mut child = t.spawn(&args);
        let mut first = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut first)
            .unwrap();
        // The reader is gone now; the command keeps writing into a closed pipe.
        let out = child.wait_with_output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(0), "{args:?}: {stderr}");
        assert!(
            !stderr.contains("panicked") && !stderr.contains("Broken pipe"),
            "{args:?}: {stderr}"
        );
        assert!(!first.is_empty());
    }
}

/// `runbook log RUN --follow` from another terminal: what the run journals, as it goes, until
/// it stops; on a run that has stopped, the journal and no wait.
#[test]
fn log_follow_prints_a_run_as_it_goes_until_it_stops() {
    let t = Test::new().script(
        r#"step("first", || log("before the wait"));
step("wait", || sleep("2s"));
step("last", || log("after the wait"));
step("gate", || approve("go on?"));"#,
    );
    let run = t.spawn_until_sleeping(&["run", "runbook.rhai"]);
    let id = t.only_run();
    let follow = t.spawn(&["log", &id, "--follow"]);
    let followed = follow.wait_with_output().unwrap();
    let ran = run.wait_with_output().unwrap();
    assert_eq!(ran.status.code(), Some(3), "the run pauses at its approval");
    let text = String::from_utf8_lossy(&followed.stdout);
    assert_eq!(followed.status.code(), Some(0), "{text}");
    let order: Vec<usize> = [
        "first: before the wait",
        "wait #1 timer fired",
        "last: after the wait",
        "approval asked: go on?",
        "paused: waiting for approval",
    ]
    .iter()
    .map(|line| {
        text.find(line)
            .unwrap_or_else(|| panic!("no {line:?} in\n{text}"))
    })
    .collect();
    assert!(order.windows(2).all(|w| w[0] < w[1]), "{text}");
    // Each record once: the follow reads only what came since it last looked.
    assert_eq!(
        text.lines().count(),
        t.journal(&id).lines().count(),
        "{text}"
    );

    // Stopped already: the journal as it is, at once (as JSON lines too).
    let again = t.exec(&["log", &id, "-f", "--json"]);
    assert_eq!(again.code, 0, "{}", again.all());
    assert_eq!(again.stdout.lines().count(), t.journal(&id).lines().count());
}

/// `runbook run X 2>&1 | head -1`: a run whose reader went away runs to its end as it would
/// have: its journal holds all of it and its exit code says how it ended (no panic writing
/// its last message into the closed pipe).
#[test]
fn a_run_whose_reader_went_away_ends_as_it_would_have() {
    use std::os::fd::{FromRawFd, OwnedFd};
    let lines = r#"for i in 0..200 { log(`line ${i}`); }"#;
    for (end, code, last) in [
        ("", 0, "run_finished"),
        (r#"step("s", || fail("boom"));"#, 1, "run_failed"),
        (r#"step("s", || approve("go?"));"#, 3, "run_paused"),
    ] {
        let t = Test::new().script(&format!("{lines}\n{end}"));
        let mut fds = [0; 2];
        assert_eq!(unsafe { libc::pipe(fds.as_mut_ptr()) }, 0);
        let (reader, writer) =
            unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
        drop(reader);
        let status = t
            .command(&["run".into(), "runbook.rhai".into()])
            .stdout(writer.try_clone().unwrap())
            .stderr(writer)
            .status()
            .unwrap();
        assert_eq!(status.code(), Some(code), "{end}");
        let journal = t.journal(&t.only_run());
        let final_event = journal.lines().last().unwrap_or("");
        assert!(final_event.contains(last), "{end}: {final_event}");
        assert!(journal.contains("line 199"), "{end}");
    }
}

/// `join` makes a list readable in a message: the shipped runbooks tell Slack the regions as
/// `eu-west-1, us-east-1`, not as an array's `["eu-west-1", "us-east-1"]`.
#[test]
fn join_writes_a_list_as_text() {
    Test::new()
        .script(
            r#"let regions = ["eu-west-1", "us-east-1", 3];
log(`order: ${regions.join(", ")}`);
log(`none: [${join([], ", ")}]`);
log(`one: ${["a"].join(" / ")}`);"#,
        )
        .run(&[])
        .code(0)
        .stdout("order: eu-west-1, us-east-1, 3\n")
        .stdout("none: []\n")
        .stdout("one: a\n")
        .check();
    Test::new()
        .script(r#"log(join(["a"]));"#)
        .args(&["check", "runbook.rhai"])
        .code(2)
        .stderr("join takes 2 arguments, not 1")
        .check();
}

/// A failure of several lines (a command's output, a table) is printed in full once where the
/// reader sees the progress and the error together, and the error keeps it in full where they
/// part: a step that failed because its action did, or an inner step did, only names it.
#[test]
fn a_long_failure_is_printed_once_where_progress_and_error_meet() {
    let t = Test::new()
        .script(
            r#"
step("outer", || {
    step("inner", || {
        shell::run(#{ cmd: "cat problems.txt >&2; exit 3" });
    });
});
"#,
        )
        .file("problems.txt", "first problem\nsecond problem\n");
    let detail = ["first problem", "second problem"];
    // One file for both, as a terminal is, or `2>&1` into a log.
    let both = t.path("both.log");
    let file = std::fs::File::create(&both).unwrap();
    let status = t
        .command(&["run".into(), "runbook.rhai".into()])
        .stdout(file.try_clone().unwrap())
        .stderr(file)
        .status()
        .unwrap();
    assert_eq!(status.code(), Some(1));
    let text = std::fs::read_to_string(&both).unwrap();
    for line in detail {
        assert_eq!(text.matches(line).count(), 1, "{line:?} once in\n{text}");
    }
    assert_says(
        &text,
        &[
            // The action's failure, its lines under it…
            "    ✗ shell::run: `cat problems.txt >&2; exit 3` exited with code 3:\n      first problem\n      second problem",
            // …named by the steps around it and by the error.
            "  ✗ inner: shell::run failed: `cat problems.txt >&2; exit 3` exited with code 3 (in full above)",
            "✗ outer: shell::run failed: `cat problems.txt >&2; exit 3` exited with code 3 (in full above)",
            "error: in step 'outer › inner': shell::run failed: `cat problems.txt >&2; exit 3` exited with code 3 (in full above)\n  --> runbook.rhai:4:16",
            "next: fix the cause, then `runbook resume",
        ],
    );
    // Apart (stdout to one place, stderr to another), each keeps the whole failure.
    let apart = t.exec(&["run", "runbook.rhai", "--state-dir", "apart"]);
    assert_eq!(apart.code, 1, "{}", apart.all());
    for line in detail {
        assert_eq!(apart.stdout.matches(line).count(), 1, "{}", apart.stdout);
        assert_eq!(apart.stderr.matches(line).count(), 1, "{}", apart.stderr);
    }
    assert_says(
        &apart.stderr,
        &["error: in step 'outer › inner': shell::run failed: `cat problems.txt >&2; exit 3` exited with code 3:\n    first problem\n    second problem\n  --> runbook.rhai:4:16"],
    );
    // The run's log prints it once too.
    let log = t.exec(&["log", &t.newest_run()]);
    for line in detail {
        assert_eq!(log.stdout.matches(line).count(), 1, "{}", log.stdout);
    }
    assert_says(&log.stdout, &["(in full above)"]);
}
