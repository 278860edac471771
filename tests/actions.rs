use std::time::Duration;

use crate::support::{Server, Test};

#[test]
fn actions_lists_every_action_from_its_types() {
    let t = Test::new();
    let ran = t.exec(&["actions", "--json"]);
    assert_eq!(ran.code, 0);
    let v: serde_json::Value = serde_json::from_str(&ran.stdout).unwrap();
    let actions = v["actions"].as_array().unwrap();
    let names: Vec<&str> = actions
        .iter()
        .map(|a| a["action"].as_str().unwrap())
        .collect();
    for n in [
        "http::get",
        "http::post",
        "http::wait_healthy",
        "notify::slack",
        "notify::webhook",
        "shell::run",
        "time::now",
    ] {
        assert!(names.contains(&n), "{n} missing from {names:?}");
    }
    let post = actions
        .iter()
        .find(|a| a["action"] == "http::post")
        .unwrap();
    assert_eq!(post["effect"], "write");
    assert_eq!(post["idempotency"], "not_idempotent");
    let url = post["fields"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["name"] == "url")
        .unwrap();
    assert_eq!(url["required"], true);
    assert_eq!(url["type"], "secret");
    assert!(url["doc"].as_str().unwrap().contains("URL"));
    for a in actions {
        for f in a["fields"].as_array().unwrap() {
            assert!(
                !f["doc"].as_str().unwrap().is_empty(),
                "{} field {} has no doc",
                a["action"],
                f["name"]
            );
        }
    }
    let text = t.exec(&["actions"]);
    assert!(
        text.stdout
            .contains("http::wait_healthy  [read, idempotent]"),
        "{}",
        text.stdout
    );
    assert!(text.stdout.contains("Every action also takes:"));
}

/// The doc comment right above `fn <sig>` in a definition file, or None.
fn doc_above(text: &str, sig: &str) -> Option<String> {
    let lines: Vec<&str> = text.lines().collect();
    let at = lines.iter().position(|l| l.starts_with(sig))?;
    let doc: Vec<&str> = lines[..at]
        .iter()
        .rev()
        .take_while(|l| l.starts_with("///"))
        .copied()
        .collect();
    (!doc.is_empty()).then(|| doc.into_iter().rev().collect::<Vec<_>>().join("\n"))
}

#[test]
fn definitions_for_editors_document_every_action_and_built_in() {
    let t = Test::new();
    let ran = t.exec(&["actions", "--definitions", "defs"]);
    assert_eq!(ran.code, 0, "{}", ran.all());
    let listed: serde_json::Value =
        serde_json::from_str(&t.exec(&["actions", "--json"]).stdout).unwrap();
    for a in listed["actions"].as_array().unwrap() {
        let (ns, name) = (
            a["namespace"].as_str().unwrap(),
            a["name"].as_str().unwrap(),
        );
        let file = t.path(&format!("defs/{ns}.d.rhai"));
        assert!(
            ran.stdout.contains(&format!("wrote defs/{ns}.d.rhai")),
            "{}",
            ran.stdout
        );
        assert!(file.exists());
        let text = std::fs::read_to_string(&file).unwrap();
        assert!(text.starts_with(&format!("module {ns};")), "{text}");
        let doc = doc_above(&text, &format!("fn {name}(input: ?) -> map;"))
            .unwrap_or_else(|| panic!("{ns}::{name} has no documented definition:\n{text}"));
        assert!(doc.contains(a["doc"].as_str().unwrap()), "{doc}");
        for f in a["fields"].as_array().unwrap() {
            let line = format!(
                "/// * `{}` ({}{}): {}",
                f["name"].as_str().unwrap(),
                f["type"].as_str().unwrap(),
                if f["required"] == true {
                    ", required"
                } else {
                    ""
                },
                f["doc"].as_str().unwrap().replace('\n', " ")
            );
            assert!(doc.contains(&line), "{ns}::{name} lacks {line:?}:\n{doc}");
        }
    }
    let pg = std::fs::read_to_string(t.path("defs/pg.d.rhai")).unwrap();
    let promote = doc_above(&pg, "fn promote(input: ?) -> map;").unwrap();
    assert!(promote.contains("/// write, idempotent;"), "{promote}");
    assert!(promote.contains("/// Returns `#{ "), "{promote}");

    let global = std::fs::read_to_string(t.path("defs/__static__.d.rhai")).unwrap();
    for sig in [
        "fn step(name: string, body: Fn) -> ?;",
        "fn step(name: string, options: map, body: Fn) -> ?;",
        "fn parallel(items: array, body: Fn) -> array;",
        "fn approve(message: string) -> ();",
        "fn sleep(duration: string) -> ();",
        "fn params(declarations: map) -> map;",
        "fn secret(name: string) -> Secret;",
        "fn lock(name: string) -> ();",
        "fn now() -> map;",
        "fn log(value: ?) -> ();",
        "fn fail(message: string) -> ();",
        "fn is_dry_run() -> bool;",
        "fn get(inventory: Inventory, key: string, default: ?) -> ?;",
    ] {
        assert!(
            doc_above(&global, sig).is_some(),
            "{sig} undocumented:\n{global}"
        );
    }
    let scope = std::fs::read_to_string(t.path("defs/__scope__.d.rhai")).unwrap();
    assert!(scope.contains("const inventory: map;"), "{scope}");

    // A place that cannot be a directory: a usage error naming it.
    std::fs::write(t.path("taken"), "").unwrap();
    let bad = t.exec(&["actions", "--definitions", "taken"]);
    assert_eq!(bad.code, 2, "{}", bad.all());
    assert!(bad.stderr.contains("cannot create taken"), "{}", bad.stderr);
}

#[test]
fn wait_healthy_waits_for_consecutive_successes_and_detects_failure() {
    let server = Server::start();
    server.reply("/h", 503, "starting", Duration::ZERO);
    let t = Test::new().script(&format!(
        r#"
        let r = http::wait_healthy(#{{ url: "{u}", consecutive: 2, interval: "50ms" }});
        log(`healthy=${{r.healthy}} checks=${{r.checks}}`);
        let d = http::wait_healthy(#{{ url: "{slow}", wait_for: "unhealthy", consecutive: 3, interval: "10ms", max_latency: "100ms" }});
        log(`down healthy=${{d.healthy}} error=${{d.last_error}}`);
        "#,
        u = server.url("/h"),
        slow = server.url("/slow")
    ));
    server.reply("/slow", 200, "late", Duration::from_millis(300));
    let mut child = t.spawn(&["run", "runbook.rhai"]);
    if !crate::support::wait_for(Duration::from_secs(10), || server.count("GET", "/h") >= 3) {
        crate::support::kill9(&mut child);
        let out = child.wait_with_output().unwrap();
        panic!(
            "no health checks arrived: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    server.reply("/h", 200, "up", Duration::ZERO);
    let out = child.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}");
    assert!(stdout.contains("healthy=true"), "{stdout}");
    assert!(
        stdout.contains("down healthy=false error=no answer within 100ms"),
        "{stdout}"
    );
}

#[test]
fn wait_healthy_gives_up_with_the_last_answers() {
    let server = Server::start();
    server.reply("/h", 503, "nope", Duration::ZERO);
    Test::new()
        .script(&format!(
            r#"http::wait_healthy(#{{ url: "{u}", interval: "100ms", timeout: "1s" }});"#,
            u = server.url("/h")
        ))
        .run(&[])
        .code(1)
        .stderr("was not healthy for 3 checks in a row within 1s")
        .stderr("last: status 503")
        .check();
}

/// The shipped runbooks check a region's health `health_interval` apart (the inventory's,
/// default 1 s): the wait is journaled as asked, and 3 good answers in a row end it.
#[test]
fn a_regions_health_is_checked_as_often_as_the_inventory_says() {
    let server = Server::start();
    for (line, want) in [("health_interval = \"300ms\"\n", "300ms"), ("", "1s")] {
        let t = Test::new()
            .inventory(&format!(
                "{line}[regions.eu]\nhealth_url = \"{}\"\n",
                server.url("/health")
            ))
            .script("import \"health\" as health;\nstep(\"wait\", || health::wait_region(inventory, \"eu\", \"10s\"));\n")
            .run(&[])
            .code(0);
        t.check();
        let journal = t.journal(&t.only_run());
        let asked = format!(r#""interval":"{want}""#);
        assert!(journal.contains(&asked), "{want}: {journal}");
    }
    assert_eq!(server.count("GET", "/health"), 6, "3 checks a wait");
}

#[test]
fn transient_errors_are_retried_for_reads_only() {
    let server = Server::start();
    server.reply("/x", 502, "bad gateway", Duration::ZERO);
    let t = Test::new()
        .script(&format!(
            r#"
            try {{ http::get(#{{ url: "{u}", retries: 2, backoff: "10ms" }}); }} catch {{ log("get gave up"); }}
            try {{ http::post(#{{ url: "{u}", retries: 2, backoff: "10ms" }}); }} catch {{ log("post gave up"); }}
            "#,
            u = server.url("/x")
        ))
        .run(&[])
        .code(0)
        .stdout("get gave up")
        .stdout("post gave up");
    t.check();
    assert_eq!(server.count("GET", "/x"), 3, "a read is retried");
    assert_eq!(
        server.count("POST", "/x"),
        1,
        "a write that may have applied is not"
    );
}

#[test]
fn shell_output_is_bounded() {
    let t = Test::new()
        .script(r#"let r = shell::run(#{ cmd: "head -c 50000000 /dev/zero | tr '\\0' x" }); log(`kept ${r.stdout.len()} truncated ${r.truncated}`);"#)
        .run(&[])
        .code(0)
        .stdout("kept 1048576 truncated true");
    t.check();
}

#[test]
fn shell_failures_show_the_exit_code_and_stderr() {
    Test::new()
        .script(r#"shell::run(#{ cmd: "echo boom >&2; exit 7" });"#)
        .run(&[])
        .code(1)
        .stderr("exited with code 7:\n    boom\n  -->")
        .check();
}

#[test]
fn shell_timeout_kills_the_command() {
    Test::new()
        .script(r#"shell::run(#{ cmd: "sleep 30", timeout: "200ms" });"#)
        .run(&[])
        .code(1)
        .stderr("did not finish within 200ms; it was killed")
        .check();
}

#[test]
fn slack_and_webhook_send_json() {
    let server = Server::start();
    let t = Test::new()
        .script(&format!(
            r##"
            notify::slack(#{{ webhook: "{s}", text: "hello", channel: "#ops" }});
            notify::webhook(#{{ url: "{w}", json: #{{ event: "failover", region: "eu-west-1" }} }});
            "##,
            s = server.url("/slack"),
            w = server.url("/hook")
        ))
        .run(&[])
        .code(0);
    t.check();
    let reqs = server.requests();
    let slack: serde_json::Value = serde_json::from_str(&reqs[0].body).unwrap();
    assert_eq!(
        slack,
        serde_json::json!({"text": "hello", "channel": "#ops"})
    );
    let hook: serde_json::Value = serde_json::from_str(&reqs[1].body).unwrap();
    assert_eq!(hook["region"], "eu-west-1");
    assert_eq!(reqs[1].headers["content-type"], "application/json");
}

#[test]
fn stdlib_cdn_purge_and_incident_messages_reach_their_endpoints() {
    let server = Server::start();
    server.reply("/down", 500, "slack is down", Duration::ZERO);
    let t = Test::new()
        .script(&format!(
            r#"
            import "cdn" as cdn;
            import "incident" as incident;
            cdn::cloudflare_purge("zone123", "Bearer cf-token", "{api}");
            incident::critical("{slack}", "region down");
            incident::slack("{down}", "this one fails");
            log("went on");
            "#,
            api = server.url("/cf"),
            slack = server.url("/slack"),
            down = server.url("/down")
        ))
        .run(&[])
        .code(0)
        .stdout("Slack message not sent")
        .stdout("went on");
    t.check();
    let requests = server.requests();
    let purge = requests
        .iter()
        .find(|r| r.path == "/cf/zones/zone123/purge_cache")
        .expect("the purge request");
    assert_eq!(purge.headers["authorization"], "Bearer cf-token");
    assert_eq!(purge.body, r#"{"purge_everything":true}"#);
    let slack = requests.iter().find(|r| r.path == "/slack").unwrap();
    assert!(slack
        .body
        .contains(":rotating_light: CRITICAL: region down"));
}
