use std::collections::BTreeMap;
use std::time::Duration;

use crate::support::{assert_says, kill9, wait_for, Ran, Server, Test};

fn five_writes(server: &Server) -> String {
    let mut s = String::new();
    for i in 1..=5 {
        s.push_str(&format!(
            "step(\"write {i}\", || http::post(#{{ url: \"{}\", body: \"{i}\" }}));\n",
            server.url(&format!("/w{i}"))
        ));
    }
    s
}

fn counts(server: &Server) -> Vec<usize> {
    (1..=5)
        .map(|i| server.count("POST", &format!("/w{i}")))
        .collect()
}

/// SIGKILL between two writes (during a durable wait), then resume: every write once.
#[test]
fn killed_between_writes_resumes_without_repeating_any() {
    let server = Server::start();
    let mut script = five_writes(&server);
    script = script.replace(
        "step(\"write 3\"",
        "step(\"pause\", || sleep(\"1s\"));\nstep(\"write 3\"",
    );
    let t = Test::new().script(&script);
    let mut child = t.spawn_until_sleeping(&["run", "runbook.rhai"]);
    kill9(&mut child);
    assert_eq!(counts(&server), [1, 1, 0, 0, 0]);
    let run = t.only_run();
    let ran = t.exec(&["resume", &run]);
    assert_eq!(ran.code, 0, "{}", ran.all());
    assert_eq!(counts(&server), [1, 1, 1, 1, 1]);
    assert!(ran.stdout.contains("replayed"), "{}", ran.stdout);
    assert_eq!(
        t.exec(&["runs"])
            .stdout
            .lines()
            .nth(1)
            .unwrap()
            .split_whitespace()
            .nth(1),
        Some("finished")
    );
}

/// SIGKILL while a non-idempotent write is in flight: resume asks; each choice is honoured.
#[test]
fn killed_during_a_write_asks_the_operator_then_retries_or_skips() {
    for (choice, expected_w3) in [("--retry-inflight", 2), ("--skip-inflight", 1)] {
        let server = Server::start();
        server.reply("/w3", 200, "ok", Duration::from_secs(30));
        let t = Test::new().script(&five_writes(&server));
        let mut child = t.spawn(&["run", "runbook.rhai"]);
        assert!(wait_for(Duration::from_secs(10), || server
            .count("POST", "/w3")
            == 1));
        kill9(&mut child);
        server.reply("/w3", 200, "ok", Duration::ZERO);
        let run = t.only_run();

        let asked = t.exec(&["resume", &run]);
        assert_eq!(asked.code, 3, "{}", asked.all());
        assert!(asked.stderr.contains("was in flight"), "{}", asked.stderr);
        assert!(
            asked.stderr.contains("--retry-inflight"),
            "{}",
            asked.stderr
        );
        assert!(asked.stderr.contains("--skip-inflight"), "{}", asked.stderr);
        assert_eq!(
            counts(&server),
            [1, 1, 1, 0, 0],
            "asking must not run anything"
        );
        if choice == "--retry-inflight" {
            // Asked again elsewhere, it says the same: the listing of open runs and the
            // refusal of a run that the paused one's lock claim stops.
            let listed = t.exec(&["resume"]);
            assert_says(
                &listed.stderr,
                &[
                    format!("runbook resume {run} --retry-inflight   (run it again)"),
                    format!("runbook resume {run} --skip-inflight    (it took effect; go on)"),
                ],
            );
            let other = t.exec(&["run", "runbook.rhai"]);
            assert_eq!(other.code, 4, "{}", other.all());
            assert_says(
                &other.stderr,
                &[format!(
                    "continue it with `runbook resume {run} --retry-inflight` (or `--skip-inflight` once you have checked that its call in flight took effect)"
                )],
            );
            assert_eq!(counts(&server), [1, 1, 1, 0, 0], "a refusal ran something");
        }

        let done = t.exec(&["resume", &run, choice]);
        assert_eq!(done.code, 0, "{}", done.all());
        assert_eq!(counts(&server), [1, 1, expected_w3, 1, 1], "{choice}");
        if choice == "--skip-inflight" {
            assert!(t.journal(&run).contains(r#""skipped":true"#));
        }
    }
}

/// A shell command its author declares idempotent is run again after a crash, without asking.
#[test]
fn a_command_declared_idempotent_is_run_again_without_asking() {
    let t = Test::new().script(
        r#"step("converge", || shell::run(#{ argv: ["sh", "-c", "echo go >> marks.txt; [ $(wc -l < marks.txt) -ge 2 ] || sleep 30"], idempotent: true }));"#,
    );
    let mut child = t.spawn(&["run", "runbook.rhai"]);
    assert!(wait_for(Duration::from_secs(10), || {
        std::fs::read_to_string(t.path("marks.txt")).is_ok_and(|m| m.lines().count() == 1)
    }));
    kill9(&mut child);
    let run = t.only_run();
    assert!(t.journal(&run).contains(r#""idempotent":true"#));
    let ran = t.exec(&["resume", &run]);
    assert_eq!(ran.code, 0, "{}", ran.all());
    assert!(
        ran.stdout
            .contains("in flight when the run stopped; running it again (idempotent)"),
        "{}",
        ran.stdout
    );
    assert_eq!(
        std::fs::read_to_string(t.path("marks.txt"))
            .unwrap()
            .lines()
            .count(),
        2
    );
}

/// An idempotent read in flight is simply run again.
#[test]
fn a_read_in_flight_is_run_again_without_asking() {
    let server = Server::start();
    server.reply("/slow", 200, "ok", Duration::from_secs(30));
    let t = Test::new().script(&format!(
        "step(\"w\", || http::post(#{{ url: \"{w}\" }}));\nstep(\"r\", || http::get(\"{r}\"));\nstep(\"w2\", || http::post(#{{ url: \"{w2}\" }}));",
        w = server.url("/w1"),
        r = server.url("/slow"),
        w2 = server.url("/w2")
    ));
    let mut child = t.spawn(&["run", "runbook.rhai"]);
    assert!(wait_for(Duration::from_secs(10), || server
        .count("GET", "/slow")
        == 1));
    kill9(&mut child);
    server.reply("/slow", 200, "ok", Duration::ZERO);
    let ran = t.exec(&["resume", &t.only_run()]);
    assert_eq!(ran.code, 0, "{}", ran.all());
    assert!(
        ran.stdout
            .contains("in flight when the run stopped; running it again (a read)"),
        "{}",
        ran.stdout
    );
    assert_eq!(
        (
            server.count("POST", "/w1"),
            server.count("GET", "/slow"),
            server.count("POST", "/w2")
        ),
        (1, 2, 1)
    );
}

/// A script whose finished call now has another input is refused, with a diff.
#[test]
fn a_changed_script_is_refused_with_a_diff() {
    let server = Server::start();
    let url = server.url("/notify");
    let original = format!(
        "step(\"tell\", || http::post(#{{ url: \"{url}\", json: #{{ target: \"eu-west-1\" }} }}));\nstep(\"gate\", || approve(\"go on?\"));\n"
    );
    let t = Test::new().script(&original);
    assert_eq!(t.exec(&["run", "runbook.rhai"]).code, 3);
    let run = t.only_run();
    let t = t.script(&original.replace("eu-west-1", "ap-southeast-1"));
    let ran = t.exec(&["resume", &run, "--approve"]);
    assert_eq!(ran.code, 2, "{}", ran.all());
    assert!(
        ran.stderr
            .contains("error[RB-REPLAY-001]: the runbook no longer matches what run"),
        "{}",
        ran.stderr
    );
    assert!(
        ran.stderr.contains("at step 'tell', call #1"),
        "{}",
        ran.stderr
    );
    assert!(
        ran.stderr
            .contains(r#"field `json.target`: "eu-west-1" → "ap-southeast-1""#),
        "{}",
        ran.stderr
    );
    assert!(
        ran.stderr.contains(r#"- step("tell""#) && ran.stderr.contains(r#"+ step("tell""#),
        "{}",
        ran.stderr
    );
    assert_eq!(server.count("POST", "/notify"), 1, "nothing ran again");
    let runs = t.exec(&["runs"]).stdout;
    assert!(
        runs.contains(" paused "),
        "still paused, not crashed: {runs}"
    );
    // Restored, it resumes.
    let t = t.script(&original);
    let ran = t.exec(&["resume", &run, "--approve"]);
    assert_eq!(ran.code, 0, "{}", ran.all());
    assert_eq!(server.count("POST", "/notify"), 1);
}

/// A fix elsewhere in the script is fine: replay checks calls, not text.
#[test]
fn an_edit_that_keeps_finished_calls_resumes() {
    let server = Server::start();
    server.reply("/second", 500, "no", Duration::ZERO);
    let script = format!(
        "step(\"one\", || http::post(#{{ url: \"{a}\" }}));\nstep(\"two\", || http::post(#{{ url: \"{b}\" }}));\n",
        a = server.url("/first"),
        b = server.url("/second")
    );
    let t = Test::new().script(&script);
    assert_eq!(t.exec(&["run", "runbook.rhai"]).code, 1);
    let run = t.only_run();
    // The operator fixes the second call and resumes.
    let t = t.script(&script.replace("/second", "/fixed"));
    let ran = t.exec(&["resume", &run]);
    assert_eq!(ran.code, 0, "{}", ran.all());
    assert!(
        ran.stdout.contains("changed since the run started"),
        "{}",
        ran.stdout
    );
    assert_eq!(
        (
            server.count("POST", "/first"),
            server.count("POST", "/second"),
            server.count("POST", "/fixed")
        ),
        (1, 1, 1)
    );
}

/// A run stopped by a key its inventory lacks: the hint says the inventory may be what to fix,
/// the operator adds the key, and resume reads the file again and finishes without repeating
/// the finished write. Changing a value a finished call used is refused instead.
#[test]
fn a_key_added_to_the_inventory_lets_a_stopped_run_finish() {
    let server = Server::start();
    let script = r#"step("one", || http::post(#{ url: inventory.regions["us-east-1"].url }));
step("two", || http::post(#{ url: inventory.regions["eu-west-1"].url }));
"#;
    let us = format!("[regions.us-east-1]\nurl = \"{}\"\n", server.url("/us"));
    let t = Test::new().script(script).inventory(&us);
    let ran = t.exec(&["run", "runbook.rhai", "-i", "inventory.toml"]);
    assert_eq!(ran.code, 2, "{}", ran.all());
    let run = t.only_run();
    assert_says(
        &ran.stderr,
        &[
            "inventory inventory.toml has no key 'regions.eu-west-1' under 'regions'; it has: us-east-1".to_string(),
            format!("next: fix the runbook (or the inventory: resume reads both again), then `runbook resume {run}`"),
        ],
    );

    // A value a finished call used, changed: refused, nothing run.
    let moved = us.replace("/us", "/moved");
    let t = t.inventory(&format!(
        "{moved}[regions.eu-west-1]\nurl = \"{}\"\n",
        server.url("/eu")
    ));
    let refused = t.exec(&["resume", &run]);
    assert_eq!(refused.code, 2, "{}", refused.all());
    assert_says(
        &refused.stderr,
        &[
            format!("error[RB-REPLAY-001]: run {run} made the change http::post at step 'one', call #1, with the inventory as it was then:"),
            format!("  regions.us-east-1.url: \"{}\" → \"{}\"", server.url("/us"), server.url("/moved")),
            "a resume never makes a finished change again, nor counts it as made with the new value".to_string(),
            format!("next: put `regions.us-east-1.url` back in the inventory as the run started with it, then `runbook resume {run}`; or, once you have checked the deployment, `runbook abandon {run}` and start a new run"),
        ],
    );
    assert_eq!(
        server.count("POST", "/moved") + server.count("POST", "/eu"),
        0
    );

    // The key added, the rest as it was: the run finishes.
    let t = t.inventory(&format!(
        "{us}[regions.eu-west-1]\nurl = \"{}\"\n",
        server.url("/eu")
    ));
    let ran = t.exec(&["resume", &run]);
    assert_eq!(ran.code, 0, "{}", ran.all());
    assert_says(
        &ran.all(),
        &[
            "the inventory ",
            "inventory.toml changed since the run started",
        ],
    );
    assert_eq!(
        (server.count("POST", "/us"), server.count("POST", "/eu")),
        (1, 1)
    );
}

/// A run that failed on a wrong value in its inventory (a health URL) resumes once the value is
/// fixed: what it read with the old value before the failure stands as recorded (the branch it
/// took), its finished change is not made again, and the failed step runs with the new value.
/// An input that differs in anything but the inventory's edit is still refused.
#[test]
fn a_run_that_failed_on_a_wrong_inventory_value_resumes_once_it_is_fixed() {
    let server = Server::start();
    server.reply("/wrong", 404, "no such page", Duration::ZERO);
    server.reply("/health", 200, "ok", Duration::ZERO);
    let script = r#"step("look", || {
    let r = http::get(#{ url: inventory.regions["eu-west-1"].health_url, expect_status: [200, 404] });
    log(`health answered ${r.status}`);
});
step("change", || http::post(#{ url: inventory.change_url }));
step("check", || http::get(#{ url: inventory.regions["eu-west-1"].health_url }));
"#;
    let inventory = |health: &str| {
        format!(
            "change_url = \"{}\"\n[regions.eu-west-1]\nhealth_url = \"{}\"\n",
            server.url("/change"),
            server.url(health)
        )
    };
    let t = Test::new().script(script).inventory(&inventory("/wrong"));
    let ran = t.exec(&["run", "runbook.rhai", "-i", "inventory.toml"]);
    assert_eq!(ran.code, 1, "{}", ran.all());
    let run = t.only_run();
    assert_eq!(server.count("GET", "/wrong"), 2);

    // A script edit beside the inventory's: refused as a changed runbook, nothing run.
    let t = t.inventory(&inventory("/health"));
    let edited = t.path("edited.rhai");
    std::fs::write(&edited, script.replace("[200, 404]", "[200, 404, 410]")).unwrap();
    std::fs::copy(&edited, t.path("runbook.rhai")).unwrap();
    let refused = t.exec(&["resume", &run]);
    assert_eq!(refused.code, 2, "{}", refused.all());
    assert_says(
        &refused.stderr,
        &[
            "error[RB-REPLAY-001]: the runbook no longer matches what run",
            "field `expect_status`: [200,404] → [200,404,410]",
            // The difference is named by its path, deep or not.
            &format!(
                "field `url`: \"{}\" → \"{}\"",
                server.url("/wrong"),
                server.url("/health")
            ),
        ],
    );
    assert_eq!(server.count("GET", "/health"), 0);

    // The runbook as it was, the inventory fixed: the run finishes.
    std::fs::write(t.path("runbook.rhai"), script).unwrap();
    let ran = t.exec(&["resume", &run]);
    assert_eq!(ran.code, 0, "{}", ran.all());
    assert_says(
        &ran.all(),
        &[
            "inventory.toml changed since the run started: regions.eu-west-1.health_url. What the run read and said with the old values stands as recorded, the calls still to come use the new ones, and a finished change made with an old value stops the resume",
            "· http::get GET",
            "(replayed)",
            "run finished",
        ],
    );
    assert_eq!(
        (
            server.count("GET", "/wrong"),
            server.count("POST", "/change"),
            server.count("GET", "/health")
        ),
        (2, 1, 1),
        "the read before the failure is not made again, nor the change; the check is"
    );
}

/// Fixed twice: each resume records the inventory it read when it differs, so a third session
/// replays what the second read with the second inventory, and the report names what each
/// resume changed.
#[test]
fn an_inventory_fixed_at_two_resumes_is_checked_against_each() {
    let server = Server::start();
    for path in ["/health", "/health?v=3", "/confirmed"] {
        server.reply(path, 200, "ok", Duration::ZERO);
    }
    server.reply("/wrong", 404, "no such page", Duration::ZERO);
    let script = r#"step("check", || http::get(#{ url: inventory.health_url }));
step("change", || http::post(#{ url: inventory.change_url }));
step("confirm", || http::get(#{ url: inventory.confirm_url }));
"#;
    let inventory = |health: &str, confirm: &str| {
        format!(
            "health_url = \"{}\"\nchange_url = \"{}\"\nconfirm_url = \"{}\"\n",
            server.url(health),
            server.url("/change"),
            server.url(confirm)
        )
    };
    let t = Test::new()
        .script(script)
        .inventory(&inventory("/wrong", "/wrong"));
    let first = t.exec(&["run", "runbook.rhai", "-i", "inventory.toml"]);
    assert_eq!(first.code, 1, "{}", first.all());
    let run = t.only_run();

    let t = t.inventory(&inventory("/health", "/wrong"));
    let second = t.exec(&["resume", &run]);
    assert_eq!(second.code, 1, "{}", second.all());
    assert_says(&second.stderr, &["in step 'confirm'"]);

    // The check the second session made with `/health` is replayed though the URL changed
    // again: the edit from the second session's inventory explains it.
    let t = t.inventory(&inventory("/health?v=3", "/confirmed"));
    let third = t.exec(&["resume", &run]);
    assert_eq!(third.code, 0, "{}", third.all());
    assert_says(
        &third.all(),
        &[
            "changed since the run started: health_url, confirm_url.",
            "· http::get GET ",
            "/health?v=3 (replayed: made with the inventory as it was)",
        ],
    );
    assert_eq!(
        (
            server.count("GET", "/health"),
            server.count("GET", "/health?v=3"),
            server.count("POST", "/change"),
            server.count("GET", "/confirmed")
        ),
        (1, 0, 1, 1)
    );
    // Over: a resume says so, and how to start anew with the same inventory.
    let over = t.exec(&["resume", &run]);
    assert_eq!(over.code, 2, "{}", over.all());
    assert_says(
        &over.stderr,
        &[
            format!("error: run {run} already finished"),
            format!(
                "next: `runbook run {} -i {}` starts a new run",
                t.path("runbook.rhai").display(),
                t.path("inventory.toml").display()
            ),
        ],
    );
    let report = t.exec(&["report", &run]);
    assert_eq!(report.code, 0, "{}", report.all());
    assert_says(
        &report.stdout,
        &[
            "resumed ",
            " with the inventory's health_url changed",
            " with the inventory's health_url, confirm_url changed",
        ],
    );
}

/// Resuming a failed run runs the failed step's checks again, but not its finished writes.
#[test]
fn resume_after_failure_rechecks_the_failed_step() {
    let server = Server::start();
    server.reply("/health", 503, "down", Duration::ZERO);
    let t = Test::new().script(&format!(
        r#"
        step("announce", || http::post(#{{ url: "{n}" }}));
        step("verify", || {{
            http::post(#{{ url: "{m}" }});
            let h = http::get(#{{ url: "{h}", expect_status: [200, 503], retries: 0 }});
            if h.status != 200 {{ fail(`health is ${{h.status}}`); }}
        }});
        step("after", || http::post(#{{ url: "{d}" }}));
        "#,
        n = server.url("/announce"),
        m = server.url("/mark"),
        h = server.url("/health"),
        d = server.url("/done")
    ));
    let first = t.exec(&["run", "runbook.rhai"]);
    assert_eq!(first.code, 1, "{}", first.all());
    assert!(first.stderr.contains("health is 503"), "{}", first.stderr);
    server.reply("/health", 200, "up", Duration::ZERO);
    let ran = t.exec(&["resume", &t.only_run()]);
    assert_eq!(ran.code, 0, "{}", ran.all());
    assert_eq!(server.count("POST", "/announce"), 1);
    assert_eq!(
        server.count("POST", "/mark"),
        1,
        "the finished write in the failed step is not repeated"
    );
    assert_eq!(
        server.count("GET", "/health"),
        2,
        "the failed step's check runs again"
    );
    assert_eq!(server.count("POST", "/done"), 1);
}

#[test]
fn now_is_replayed_on_resume() {
    let t = Test::new().script(
        r#"
        let t = step("clock", || now());
        step("gate", || approve("go"));
        log(`started ${t.iso}`);
        "#,
    );
    assert_eq!(t.exec(&["run", "runbook.rhai"]).code, 3);
    let run = t.only_run();
    let journal = t.journal(&run);
    let iso = journal
        .split(r#""iso":""#)
        .nth(1)
        .unwrap()
        .split('"')
        .next()
        .unwrap()
        .to_string();
    std::thread::sleep(Duration::from_millis(20));
    let ran = t.exec(&["resume", &run, "--approve"]);
    assert_eq!(ran.code, 0);
    assert!(
        ran.stdout.contains(&format!("started {iso}")),
        "{}\n{iso}",
        ran.stdout
    );
}

/// `resume --undo` replays to where the run stopped, then runs the undo closures of the
/// finished steps, latest first; a finished undo is not repeated.
#[test]
fn resume_undo_runs_the_compensations_latest_first() {
    let server = Server::start();
    server.reply("/upgrade", 500, "broken", Duration::ZERO);
    let t = Test::new().script(&format!(
        r#"
        step("drain", #{{ undo: || http::post(#{{ url: "{u}restore" }}) }}, || http::post(#{{ url: "{u}drain" }}));
        step("cordon", #{{ undo: || http::post(#{{ url: "{u}uncordon" }}) }}, || http::post(#{{ url: "{u}cordon" }}));
        step("note", || log("no undo here"));
        step("announce", || http::post(#{{ url: "{u}announce" }}));
        step("upgrade", || http::post(#{{ url: "{u}upgrade" }}));
        "#,
        u = server.url("/")
    ));
    let failed = t.exec(&["run", "runbook.rhai"]);
    assert_eq!(failed.code, 1, "{}", failed.all());
    let run = t.only_run();
    assert!(
        failed
            .stderr
            .contains(&format!("runbook resume {run} --undo")),
        "{}",
        failed.stderr
    );

    let undone = t.exec(&["resume", &run, "--undo"]);
    assert_eq!(undone.code, 0, "{}", undone.all());
    assert!(
        undone.stdout.contains("▶ undo › cordon"),
        "{}",
        undone.stdout
    );
    // What no undo covers is said, not silently left.
    assert!(
        undone
            .all()
            .contains("undid 'cordon', 'drain'; left as they are (no undo declared): 'announce'"),
        "{}",
        undone.all()
    );
    let order: Vec<String> = server.requests().iter().map(|r| r.path.clone()).collect();
    assert_eq!(
        order,
        [
            "/drain",
            "/cordon",
            "/announce",
            "/upgrade",
            "/uncordon",
            "/restore"
        ]
    );
    assert!(t.exec(&["runs"]).stdout.contains("undone"));
    let again = t.exec(&["resume", &run, "--undo"]);
    assert_eq!(again.code, 2, "an undone run is final");
    assert_eq!(server.requests().len(), 6);
}

/// `resume --undo` of a run none of whose steps declares an undo is refused: the run is not
/// closed as "undone" with its changes in place, and it can still be resumed to the end.
#[test]
fn resume_undo_with_nothing_to_undo_leaves_the_run_resumable() {
    let server = Server::start();
    server.reply("/upgrade", 500, "broken", Duration::ZERO);
    let t = Test::new().script(&format!(
        r#"
        step("announce", || http::post(#{{ url: "{u}announce" }}));
        step("upgrade", || http::post(#{{ url: "{u}upgrade" }}));
        "#,
        u = server.url("/")
    ));
    assert_eq!(t.exec(&["run", "runbook.rhai"]).code, 1);
    let run = t.only_run();
    let refused = t.exec(&["resume", &run, "--undo"]);
    assert_eq!(refused.code, 2, "{}", refused.all());
    for want in [
        &format!("run {run} has nothing to undo: no finished step declares an undo, and its changes ('announce') stay as they are"),
        &format!("next: continue it with `runbook resume {run}`, or, once you have checked the deployment, release it with `runbook abandon {run}`"),
    ] {
        assert!(refused.stderr.contains(want.as_str()), "lacks {want:?}\n{}", refused.all());
    }
    assert!(t.exec(&["runs"]).stdout.contains(" failed "), "as it was");

    server.reply("/upgrade", 200, "ok", Duration::ZERO);
    let done = t.exec(&["resume", &run]);
    assert_eq!(done.code, 0, "{}", done.all());
    assert_eq!(server.count("POST", "/announce"), 1);

    // Paused at an approval, it is continued with --approve: the refusal says so.
    let t = Test::new().script(&format!(
        r#"
        step("announce", || http::post(#{{ url: "{u}announce" }}));
        step("gate", || approve("go on?"));
        "#,
        u = server.url("/")
    ));
    assert_eq!(t.exec(&["run", "runbook.rhai"]).code, 3);
    let run = t.only_run();
    let refused = t.exec(&["resume", &run, "--undo"]);
    assert_eq!(refused.code, 2, "{}", refused.all());
    assert_says(
        &refused.stderr,
        &[format!("next: continue it with `runbook resume {run} --approve`, or, once you have checked the deployment, release it with `runbook abandon {run}`")],
    );
}

/// A step added to the runbook before changes the run made: `resume --undo` cannot reach those
/// changes, so it undoes nothing and says why, instead of calling the run undone. Restored, the
/// undo runs.
#[test]
fn resume_undo_refuses_when_the_edited_runbook_no_longer_reaches_a_change() {
    let server = Server::start();
    server.reply("/upgrade", 500, "broken", Duration::ZERO);
    let original = format!(
        r#"
        step("approval", || log("asked"));
        step("drain", #{{ undo: || http::post(#{{ url: "{u}restore" }}) }}, || http::post(#{{ url: "{u}drain" }}));
        step("upgrade", || http::post(#{{ url: "{u}upgrade" }}));
        "#,
        u = server.url("/")
    );
    let t = Test::new().script(&original);
    assert_eq!(t.exec(&["run", "runbook.rhai"]).code, 1);
    let run = t.only_run();

    let edited = original.replace(
        "step(\"drain\"",
        &format!(
            "step(\"recheck\", || http::get(\"{}\"));\n        step(\"drain\"",
            server.url("/check")
        ),
    );
    let t = t.script(&edited);
    let refused = t.exec(&["resume", &run, "--undo"]);
    assert_eq!(refused.code, 2, "{}", refused.all());
    for want in [
        "RB-REPLAY-001",
        "cannot undo them: http::post at step 'drain', call #1",
        "the runbook changed since the run started",
        &format!("put the runbook back as the run started it (`runbook log {run} --runbook` prints it), then `runbook resume {run} --undo`"),
    ] {
        assert!(
            refused.stderr.contains(want),
            "lacks {want:?}\n{}",
            refused.all()
        );
    }
    assert_eq!(server.count("POST", "/restore"), 0, "nothing was undone");
    assert!(t.exec(&["runs"]).stdout.contains(" failed "), "as it was");

    // Put back as the message says: the runbook as the run started it, to the byte.
    let kept = t.exec(&["log", &run, "--runbook"]);
    assert_eq!(kept.code, 0, "{}", kept.all());
    assert_eq!(kept.stdout, original);
    let t = t.script(&kept.stdout);
    let undone = t.exec(&["resume", &run, "--undo"]);
    assert_eq!(undone.code, 0, "{}", undone.all());
    assert_eq!(server.count("POST", "/restore"), 1);
    assert!(t.exec(&["runs"]).stdout.contains("undone"));
}

/// SIGINT, SIGTERM or SIGHUP (the SSH session went away) during an action: the action
/// finishes and is journaled, the run stops before the next one (exit 130), and resume
/// continues without repeating it.
#[test]
fn a_signal_stops_after_the_current_action_and_leaves_a_resumable_run() {
    for signal in [libc::SIGINT, libc::SIGTERM, libc::SIGHUP] {
        let server = Server::start();
        server.reply("/slow", 200, "ok", Duration::from_millis(700));
        let t = Test::new().script(&format!(
            "step(\"a\", || http::post(#{{ url: \"{a}\" }}));\nstep(\"b\", || http::post(#{{ url: \"{b}\" }}));\n",
            a = server.url("/slow"),
            b = server.url("/b")
        ));
        let child = t.spawn(&["run", "runbook.rhai"]);
        assert!(wait_for(Duration::from_secs(10), || server
            .count("POST", "/slow")
            == 1));
        unsafe {
            libc::kill(child.id() as i32, signal);
        }
        let out = child.wait_with_output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(130), "signal {signal}: {stderr}");
        assert!(
            stderr.contains("stopping after the current action"),
            "{stderr}"
        );
        if signal == libc::SIGHUP {
            assert!(
                stderr.contains("the terminal went away (SIGHUP)"),
                "{stderr}"
            );
        }
        assert_eq!(server.count("POST", "/b"), 0);
        let run = t.only_run();
        assert!(
            t.journal(&run).contains("action_finished"),
            "the current action finished and was journaled"
        );
        // Why it stopped, for the review: which signal, in words.
        let why = match signal {
            libc::SIGINT => "Ctrl-C (SIGINT)",
            libc::SIGTERM => "SIGTERM",
            _ => "the terminal went away (SIGHUP)",
        };
        let journal = t.journal(&run);
        assert!(
            journal.contains(&format!(
                "\"event\":\"run_interrupted\",\"reason\":\"{why}\""
            )),
            "{journal}"
        );
        let ran = t.exec(&["resume", &run]);
        assert_eq!(ran.code, 0, "{}", ran.all());
        assert_eq!(
            (server.count("POST", "/slow"), server.count("POST", "/b")),
            (1, 1)
        );
    }
}

/// A `--var` URL's password is not journaled; a resume asks for it again (and only for it),
/// checks it is the same URL, and the resumed run reaches the target with the real password.
#[test]
fn a_resume_asks_again_for_a_var_whose_password_the_journal_does_not_keep() {
    const PASSWORD: &str = "var-pa55-77";
    let server = Server::start();
    let with_password =
        server
            .url("/status")
            .replacen("http://", &format!("http://ops:{PASSWORD}@"), 1);
    let t = Test::new().script(
        r#"
        let p = params(#{ url: #{ type: "string", doc: "the endpoint" }, region: #{ type: "string", default: "eu" } });
        step("ask", || approve("read it?"));
        step("read", || http::get(#{ url: p.url, retries: 0 }));
        "#,
    );
    let started = t.exec(&[
        "run",
        "runbook.rhai",
        "--var",
        &format!("url={with_password}"),
        "--var",
        "region=ap",
    ]);
    assert_eq!(started.code, 3, "{}", started.all());
    let run = t.only_run();
    let masked = with_password.replace(PASSWORD, "***");
    assert!(t.journal(&run).contains(&masked), "{}", t.journal(&run));
    // The pause's hint names the --var to give again, `***` where its password goes.
    assert_says(
        &started.stderr,
        &[format!(
            "next: runbook resume {run} --approve --var 'url={masked}'"
        )],
    );

    let url = format!("url={with_password}");
    let elsewhere = format!("url={}", with_password.replace("/status", "/elsewhere"));
    let refusals: [(&[&str], String); 3] = [
        (
            &[],
            format!("run {run} was started with --var url={masked}, a URL whose password the journal does not keep: resume with --var url=<the same URL, password included>"),
        ),
        (
            &["--var", &elsewhere],
            format!("--var url={}: run {run} was started with url={masked}; a resume continues a run with the parameters it started with", masked.replace("/status", "/elsewhere")),
        ),
        (
            &["--var", &url, "--var", "region=eu"],
            format!("--var region=eu: run {run} was started with region=ap"),
        ),
    ];
    let mut said = String::new();
    for (extra, says) in refusals {
        let mut args = vec!["resume", run.as_str(), "--approve"];
        args.extend(extra);
        let refused = t.exec(&args);
        assert_eq!(refused.code, 2, "{args:?}: {}", refused.all());
        assert_says(&refused.stderr, &[says]);
        said.push_str(&refused.all());
    }
    assert_eq!(server.count("GET", "/"), 0, "nothing ran while refused");
    assert!(
        !t.journal(&run).contains("run_resumed"),
        "{}",
        t.journal(&run)
    );

    let resumed = t.exec(&["resume", &run, "--approve", "--var", &url]);
    assert_eq!(resumed.code, 0, "{}", resumed.all());
    let reached = server.requests();
    assert_eq!(reached.len(), 1, "{reached:?}");
    let auth = reached[0]
        .headers
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case("authorization"))
        .map(|(_, v)| v.clone())
        .unwrap_or_default();
    // Basic base64("ops:var-pa55-77"): the real password, not the journal's ***.
    assert_eq!(auth, "Basic b3BzOnZhci1wYTU1LTc3", "{reached:?}");
    for text in [t.journal(&run), t.state_text(), said, resumed.all()] {
        assert!(!text.contains(PASSWORD), "a password shows: {text}");
    }
}

/// `resume` or `abandon` without a run never guesses: it lists the runs still open, each with
/// the command for it, and changes nothing. A run that failed before changing anything (a
/// check that found a problem) is not open: counted, not listed.
#[test]
fn resume_without_a_run_lists_the_open_ones() {
    let t = Test::new()
        .file("gate.rhai", "step(\"gate\", || approve(\"go on?\"));")
        .file(
            "broken.rhai",
            "step(\"mark\", || shell::run(#{ argv: [\"touch\", \"marked\"] }));\nstep(\"check\", || fail(\"not ready\"));",
        )
        .file("checks.rhai", "step(\"look\", || fail(\"a problem found\"));")
        .file("fine.rhai", "step(\"only\", || log(\"done\"));");
    let none = t.exec(&["resume"]);
    assert_eq!(none.code, 2, "{}", none.all());
    assert_says(
        &none.stderr,
        &["no run in directory .runbook is paused, interrupted, or stopped part-way through its changes; `runbook runs --all` lists them all"],
    );
    assert_eq!(t.exec(&["run", "checks.rhai"]).code, 1);
    let only_checks = t.exec(&["resume", "--state-dir", "./.runbook"]);
    assert_says(
        &only_checks.stderr,
        &["no run in directory ./.runbook is paused, interrupted, or stopped part-way through its changes; 1 run that failed before changing anything is not listed (run it again; `runbook runs --state-dir ./.runbook --all` shows it)"],
    );

    assert_eq!(t.exec(&["run", "gate.rhai"]).code, 3);
    assert_eq!(t.exec(&["run", "broken.rhai"]).code, 1);
    assert_eq!(t.exec(&["run", "fine.rhai"]).code, 0);
    let ids: BTreeMap<String, String> = t
        .run_ids()
        .into_iter()
        .map(|id| (t.runbook_of(&id).trim_end_matches(".rhai").to_string(), id))
        .collect();
    let before = t.state_text();

    let listed = t.exec(&["resume"]);
    assert_eq!(listed.code, 2, "{}", listed.all());
    assert_says(
        &listed.stderr,
        &[
            "which run? `runbook resume RUN`".to_string(),
            format!("{}  gate.rhai, started ", ids["gate"]),
            "paused at step 'gate': waiting for approval: \"go on?\"".to_string(),
            format!("runbook resume {} --approve\n", ids["gate"]),
            format!("{}  broken.rhai", ids["broken"]),
            "failed at step 'check'".to_string(),
            "; 1 run that failed before changing anything is not listed".to_string(),
        ],
    );
    assert!(!listed.stderr.contains(&ids["fine"]), "{}", listed.stderr);
    assert!(!listed.stderr.contains(&ids["checks"]), "{}", listed.stderr);

    let listed = t.exec(&["abandon"]);
    assert_eq!(listed.code, 2, "{}", listed.all());
    assert_says(
        &listed.stderr,
        &[format!(
            "runbook abandon {} --reason \"...\"",
            ids["broken"]
        )],
    );
    let elsewhere = t.exec(&["abandon", "--state-dir", "other"]);
    assert_says(
        &elsewhere.stderr,
        &["no run in directory other is paused, interrupted, or stopped part-way through its changes; `runbook runs --state-dir other --all` lists them all"],
    );
    assert_eq!(t.state_text(), before, "listing changed a run");
}

/// `runbook_command` spells the command of a runbook beside this one as the run was started:
/// a message sent before a pause is the same when the run resumes with its options spelled
/// otherwise (so the replay matches it), and one sent after reads the same way.
#[test]
fn a_runbook_command_reads_the_same_when_the_run_resumes() {
    let server = Server::start();
    let t = Test::new()
        .file("rejoin.rhai", "log(\"rejoin\");")
        .inventory("[regions.us-east-1]\nhealth_url = \"http://127.0.0.1:9/\"\n")
        .script(&format!(
            r#"
            let p = params(#{{ region: #{{ type: "string", default: "us-east-1" }} }});
            let health = inventory.regions[p.region].health_url;
            step("tell", || http::post(#{{ url: "{u}", json: #{{ text: runbook_command("rejoin", #{{ region: p.region }}) }} }}));
            step("gate", || approve("go on?"));
            step("after", || http::post(#{{ url: "{u}", json: #{{ text: runbook_command("status") }} }}));
            "#,
            u = server.url("/hook")
        ));
    let state = |args: &[&str]| {
        let mut all = vec!["--state-dir", "state"];
        all.extend(args);
        t.exec(&all)
    };
    let paused = state(&["run", "runbook.rhai", "-i", "inventory.toml"]);
    assert_eq!(paused.code, 3, "{}", paused.all());
    let run = std::fs::read_dir(t.path("state/runs"))
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .file_name()
        .into_string()
        .unwrap();
    // From elsewhere, the state directory spelled otherwise: this session would spell
    // `./state` and the runbook's absolute path.
    let done = t.exec(&["--state-dir", "./state", "resume", &run, "--approve"]);
    assert_eq!(done.code, 0, "{}", done.all());
    let texts: Vec<String> = server
        .requests()
        .iter()
        .filter(|r| r.path == "/hook")
        .map(|r| serde_json::from_str::<serde_json::Value>(&r.body).unwrap()["text"].to_string())
        .collect();
    assert_eq!(
        texts,
        [
            "\"runbook run rejoin.rhai -i inventory.toml --var region=us-east-1 --state-dir state\"",
            "\"runbook run runbooks/status.rhai -i inventory.toml --state-dir state\"",
        ],
        "{}",
        done.all()
    );
}

/// A name that is a path, or a value no `--var` carries, is a mistake in the runbook: the
/// run stops (exit 2) naming it, having changed nothing; `check` names a wrong argument count.
#[test]
fn a_runbook_command_of_a_path_or_a_map_is_refused() {
    for (call, says) in [
        (
            r#"runbook_command("../rejoin")"#,
            r#"runbook_command takes the name of a runbook beside this one, such as "rejoin", not "../rejoin""#,
        ),
        (
            r#"runbook_command("rejoin", #{ region: #{ a: 1 } })"#,
            "runbook_command: --var region takes a string, a number, a bool or a list, not map",
        ),
    ] {
        let t = Test::new().script(&format!("step(\"s\", || log({call}));"));
        let ran = t.exec(&["run", "runbook.rhai"]);
        assert_eq!(ran.code, 2, "{call}: {}", ran.all());
        assert!(ran.stderr.contains(says), "{call}: {}", ran.stderr);
    }
    let t = Test::new().script("log(runbook_command());");
    let checked = t.exec(&["check", "runbook.rhai"]);
    assert_eq!(checked.code, 2, "{}", checked.all());
    assert!(
        checked
            .stderr
            .contains("runbook_command takes 1 or 2 arguments, not 0"),
        "{}",
        checked.stderr
    );
}

/// A resume runs in the folder its run started in: a relative path among its --var values
/// names the same file as before, whichever folder the operator resumes from. A folder that
/// is not on this host is said, and the resume runs where it is.
#[test]
fn a_resume_runs_in_the_folder_its_run_started_in() {
    let script = r#"
        let p = params(#{ out: #{ type: "string" } });
        step("ask", || approve("write it?"));
        step("write", || shell::run(#{ argv: ["sh", "-c", "pwd > \"$1\"", "sh", p.out] }));
    "#;
    let resume_from = |t: &Test, dir: &std::path::Path| {
        let state = t.path(".runbook").display().to_string();
        let args: Vec<String> = [
            "resume",
            &t.newest_run(),
            "--approve",
            "--state-dir",
            &state,
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        Ran::from(t.command(&args).current_dir(dir).output().unwrap())
    };
    let started_in = |t: &Test| t.dir.path().display().to_string();

    let t = Test::new().script(script);
    assert_eq!(
        t.exec(&["run", "runbook.rhai", "--var", "out=where.txt"])
            .code,
        3
    );
    let elsewhere = tempfile::tempdir().unwrap();
    let resumed = resume_from(&t, elsewhere.path());
    assert_eq!(resumed.code, 0, "{}", resumed.all());
    assert_says(
        &resumed.all(),
        &[&format!(
            "the run started in {}: it resumes there",
            started_in(&t)
        )],
    );
    let written = std::fs::read_to_string(t.path("where.txt")).unwrap();
    assert_eq!(written.trim(), started_in(&t));
    assert!(!elsewhere.path().join("where.txt").exists());

    // Started in a folder this host does not have (a store shared between hosts).
    let t = Test::new().script(script);
    assert_eq!(
        t.exec(&["run", "runbook.rhai", "--var", "out=where.txt"])
            .code,
        3
    );
    let journal = t.journal_path(&t.newest_run());
    let text = std::fs::read_to_string(&journal).unwrap().replacen(
        &format!("\"cwd\":\"{}\"", started_in(&t)),
        "\"cwd\":\"/no/such/folder\"",
        1,
    );
    assert!(text.contains("/no/such/folder"), "{text}");
    std::fs::write(&journal, text).unwrap();
    let resumed = resume_from(&t, elsewhere.path());
    assert_eq!(resumed.code, 0, "{}", resumed.all());
    assert_says(
        &resumed.all(),
        &[&format!(
            "the run started in /no/such/folder, which cannot be entered here (No such file or directory (os error 2)): relative paths in its --var values now mean paths in {}",
            elsewhere.path().display()
        )],
    );
    assert!(elsewhere.path().join("where.txt").exists());
}

/// A step that failed is retried with fresh reads: a read whose input comes from an earlier
/// read (a WAL position, a count) runs with what that read sees now, not against its record
/// as a script change. A write the step finished is still held to its record.
#[test]
fn a_retried_step_reads_afresh_even_where_a_read_feeds_the_next() {
    let server = Server::start();
    server.reply("/position", 200, "100", Duration::ZERO);
    server.reply("/caught-up/100", 200, "yes", Duration::ZERO);
    server.reply("/caught-up/250", 200, "yes", Duration::ZERO);
    server.reply("/ready", 503, "not yet", Duration::ZERO);
    let t = Test::new().script(&format!(
        r#"
        step("change", || http::post(#{{ url: "{u}change" }}));
        step("verify", || {{
            let at = http::get(#{{ url: "{u}position" }}).body;
            http::get(#{{ url: `{u}caught-up/${{at}}` }});
            http::get(#{{ url: "{u}ready" }});
        }});
        "#,
        u = server.url("/")
    ));
    let failed = t.exec(&["run", "runbook.rhai"]);
    assert_eq!(failed.code, 1, "{}", failed.all());
    let run = t.only_run();
    // The primary moved on meanwhile; the standby is ready now.
    server.reply("/position", 200, "250", Duration::ZERO);
    server.reply("/ready", 200, "ok", Duration::ZERO);
    let done = t.exec(&["resume", &run]);
    assert_eq!(done.code, 0, "{}", done.all());
    assert_eq!(server.count("GET", "/caught-up/100"), 1);
    assert_eq!(
        server.count("GET", "/caught-up/250"),
        1,
        "read with what it sees now"
    );
    assert_eq!(
        server.count("POST", "/change"),
        1,
        "the finished write is not repeated"
    );
}

/// Where the inventory a run started with is no longer at the path it recorded (moved, or the
/// run started on another host): without passwords in its URLs, the journal's copy serves,
/// with a warning; `-i` names where it is now, a copy that differs is said to differ, and a
/// run started without an inventory refuses one.
#[test]
fn a_resume_takes_the_inventory_where_it_is_now() {
    let t = Test::new()
        .script(
            r#"
        step("first", || log(`region ${inventory.primary_region}`));
        step("gate", || approve("go on?"));
        step("second", || log(`then ${inventory.primary_region}`));
        step("last", || approve("and the rest?"));
        "#,
        )
        .inventory("primary_region = \"us-east-1\"\n");
    let paused = t.exec(&["run", "runbook.rhai", "-i", "inventory.toml"]);
    assert_eq!(paused.code, 3, "{}", paused.all());
    let run = t.only_run();
    std::fs::rename(t.path("inventory.toml"), t.path("moved.toml")).unwrap();

    let from_journal = t.exec(&["resume", &run, "--approve"]);
    assert_eq!(from_journal.code, 3, "{}", from_journal.all());
    assert_says(&from_journal.stdout, &["then us-east-1"]);
    assert_says(
        &from_journal.stdout,
        &[format!(
            "the inventory {} is gone; resuming with the copy in the journal",
            t.path("inventory.toml").display()
        )],
    );

    std::fs::write(t.path("moved.toml"), "primary_region = \"eu-west-1\"\n").unwrap();
    let moved = t.exec(&["resume", &run, "--approve", "-i", "moved.toml"]);
    assert_eq!(moved.code, 0, "{}", moved.all());
    assert_says(
        &moved.stdout,
        &[format!(
            "the inventory {} differs from the one run {run} started with ({}): primary_region. What the run read and said with the old values stands as recorded",
            t.path("moved.toml").display(),
            t.path("inventory.toml").display()
        )],
    );

    let plain = Test::new().script(r#"step("gate", || approve("go on?"));"#);
    let paused = plain.exec(&["run", "runbook.rhai"]);
    assert_eq!(paused.code, 3, "{}", paused.all());
    let run = plain.only_run();
    let journal = plain.journal(&run);
    std::fs::write(
        plain.path("inventory.toml"),
        "primary_region = \"us-east-1\"\n",
    )
    .unwrap();
    let refused = plain.exec(&["resume", &run, "--approve", "-i", "inventory.toml"]);
    assert_eq!(refused.code, 2, "{}", refused.all());
    assert_says(
        &refused.stderr,
        &[format!(
            "-i: run {run} was started without an inventory; a resume continues a run with what it started with"
        )],
    );
    assert_eq!(plain.journal(&run), journal, "nothing was journaled");
}
