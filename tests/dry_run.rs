use crate::support::{assert_says, Server, Test};

#[test]
fn dry_run_makes_no_change_and_prints_the_plan() {
    let server = Server::start();
    let t = Test::new()
        .inventory(&format!(
            "[notify]\nslack = \"{s}\"\n[regions.us-east-1]\nhealth = \"{h}\"\n",
            s = server.url("/slack"),
            h = server.url("/health")
        ))
        .script(
            r#"
            let p = params(#{ target: #{ default: "eu-west-1" } });
            step("check", || {
                let h = http::get(inventory.regions["us-east-1"].health);
                if h.status == 200 { log("primary healthy"); }
            });
            step("change", || {
                notify::slack(#{ webhook: inventory.notify.slack, text: `failing over to ${p.target}` });
                shell::run(#{ cmd: "touch made-by-runbook" });
                approve("shift traffic?");
                sleep("30m");
                http::post(#{ url: inventory.regions["us-east-1"].health, json: #{ weight: 0 } });
            });
            "#,
        )
        .run(&["--dry-run"])
        .code(0)
        .stdout("dry-run")
        .stdout("primary healthy")
        .stdout("Plan: 4 changes")
        .stdout("~ notify::slack: Slack: \"failing over to eu-west-1\"")
        .stdout("~ shell::run: run `touch made-by-runbook`")
        .stdout("~ approve: ask for approval: \"shift traffic?\"")
        .stdout("~ http::post: POST http://127.0.0.1:");
    t.check();
    assert_eq!(server.count("GET", "/health"), 1, "reads run for real");
    assert_eq!(server.count("POST", "/"), 0, "no write reached the server");
    assert!(!t.path("made-by-runbook").exists(), "no command ran");
    assert!(t.run_ids().is_empty(), "a dry-run leaves no run behind");
}

#[test]
fn offline_dry_run_contacts_nothing() {
    let server = Server::start();
    let t = Test::new()
        .script(&format!(
            r#"
            let h = http::get("{h}");
            log(`predicted status ${{h.status}}`);
            http::post(#{{ url: "{h}" }});
            "#,
            h = server.url("/health")
        ))
        .run(&["--dry-run", "--offline"])
        .code(0)
        .stdout("predicted status 200")
        .stdout("Plan: 1 change");
    t.check();
    assert!(server.requests().is_empty());
}

#[test]
fn dry_run_follows_the_branch_a_real_run_would() {
    let server = Server::start();
    server.reply("/primary", 503, "down", std::time::Duration::ZERO);
    let script = format!(
        r#"
        let h = http::get(#{{ url: "{p}", expect_status: [200, 503], retries: 0 }});
        if h.status == 503 {{
            step("failover", || http::post(#{{ url: "{f}" }}));
        }} else {{
            step("nothing to do", || log("healthy"));
        }}
        "#,
        p = server.url("/primary"),
        f = server.url("/failover")
    );
    let t = Test::new()
        .script(&script)
        .run(&["--dry-run"])
        .code(0)
        .stdout("failover")
        .stdout("Plan: 1 change");
    t.check();
    server.reply("/primary", 200, "up", std::time::Duration::ZERO);
    let t = Test::new()
        .script(&script)
        .run(&["--dry-run"])
        .code(0)
        .stdout("nothing to do")
        .stdout("Plan: no changes");
    t.check();
    assert_eq!(server.count("POST", "/"), 0);
}

/// A dry-run that fails (a check the servers do not pass) still shows what a real run would
/// have changed before failing there, and changes nothing.
#[test]
fn a_failing_dry_run_plans_the_changes_before_the_failure() {
    let server = Server::start();
    server.reply("/health", 503, "down", std::time::Duration::ZERO);
    let t = Test::new()
        .script(&format!(
            r#"
            step("announce", || http::post(#{{ url: "{u}/announce" }}));
            step("check target", || {{
                let h = http::get(#{{ url: "{u}/health", expect_status: [200, 503], retries: 0 }});
                if h.status != 200 {{ fail("the target's health fails"); }}
            }});
            step("promote", || http::post(#{{ url: "{u}/promote" }}));
            "#,
            u = server.url("")
        ))
        .run(&["--dry-run"])
        .code(1)
        .stdout("Plan up to the failure (a real run would make these changes, then fail as below): 1 change\n  announce\n    ~ http::post: POST http://127.0.0.1:")
        .stderr("in step 'check target': the target's health fails");
    let ran = t.check();
    assert!(!ran.stdout.contains("promote\n    ~"), "{}", ran.stdout);
    assert_eq!(server.count("POST", "/"), 0, "no write reached the server");
    assert_eq!(server.count("GET", "/health"), 1, "the read ran for real");
}

/// shell::read is a read: a dry-run runs it for real, so a branch on what it finds is the
/// branch a real run takes; shell::run beside it is only planned. A run that fails after
/// nothing but reads changed nothing, and says so.
#[test]
fn a_shell_read_runs_in_a_dry_run_and_is_not_a_change() {
    let t = Test::new().script(
        r#"
        let found = shell::read(#{ argv: ["test", "-e", "present"], check: false });
        let listed = shell::read("ls");
        if found.code == 0 && listed.stdout.contains("present") {
            step("act", || shell::run(#{ cmd: "touch made-by-runbook" }));
        } else {
            step("nothing", || log("nothing there"));
        }
        "#,
    );
    std::fs::write(t.path("present"), "x").unwrap();
    let found = t.exec(&["run", "runbook.rhai", "--dry-run"]);
    assert_eq!(found.code, 0, "{}", found.all());
    assert_says(
        &found.stdout,
        &[
            "· shell::read read `test -e present`",
            "Plan: 1 change",
            "~ shell::run: run `touch made-by-runbook`",
        ],
    );
    assert!(!found.stdout.contains("~ shell::read"), "{}", found.stdout);
    assert!(!t.path("made-by-runbook").exists(), "no write ran");

    std::fs::remove_file(t.path("present")).unwrap();
    let gone = t.exec(&["run", "runbook.rhai", "--dry-run"]);
    assert_eq!(gone.code, 0, "{}", gone.all());
    assert_says(&gone.stdout, &["nothing there", "Plan: no changes"]);

    // A failure after reads only: nothing changed, nothing to resume.
    Test::new()
        .script(r#"shell::read(#{ cmd: "echo gone >&2; exit 3" });"#)
        .run(&[])
        .code(1)
        .stderr("`echo gone >&2; exit 3` exited with code 3:\n    gone\n  -->")
        .stderr("next: nothing was changed; once the cause is fixed, run it again")
        .check();
}
