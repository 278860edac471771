//! Every kind of bad input: a clear message naming the thing at fault, exit code 2, and
//! nothing done.

use crate::support::{assert_says, Server, Test};

fn refused(script: &str, args: &[&str], message: &str) {
    let server = Server::start();
    let script = script.replace("URL", &server.url("/w"));
    let t = Test::new()
        .script(&script)
        .run(args)
        .code(2)
        .stderr(message);
    t.check();
    assert_eq!(
        server.count("POST", "/w"),
        0,
        "a refused runbook changed something"
    );
}

#[test]
fn malformed_rhai_points_at_the_line() {
    refused(
        "http::post(#{ url: \"URL\" });\nlet x = ;\n",
        &[],
        "runbook.rhai:2:9",
    );
    refused(
        "http::post(#{ url: \"URL\" });\nlet x = ;\n",
        &[],
        "does not compile: Unexpected ';'",
    );
}

#[test]
fn unknown_namespace_and_action_are_named() {
    refused(
        "http::post(#{ url: \"URL\" });\nhtpp::get(\"x\");",
        &[],
        "unknown namespace `htpp` (did you mean `http`?)",
    );
    refused(
        "http::post(#{ url: \"URL\" });\nhttp::gett(\"x\");",
        &[],
        "unknown action http::gett (did you mean `get`?)",
    );
}

#[test]
fn a_built_in_given_the_wrong_kinds_of_arguments_says_how_it_is_called() {
    // A literal where a closure goes: lint sees it before anything runs.
    refused(
        "http::post(#{ url: \"URL\" });\nstep(\"a\", \"x\");",
        &[],
        "step(..) needs a closure as its last argument, not a string: it is called as step(name, || { .. }) or step(name, #{ retries, backoff, timeout, undo }, || { .. })",
    );
    refused(
        "on_failure(3);\nhttp::post(#{ url: \"URL\" });",
        &[],
        "on_failure(..) needs a closure as its last argument, not a number",
    );
    // Through a variable only the run sees it: the same advice, from Rhai's "not found".
    refused(
        "let body = \"x\";\nstep(\"a\", body);\nhttp::post(#{ url: \"URL\" });",
        &[],
        "step(..) was given (string, string); it is called as step(name, || { .. }) or step(name, #{ retries, backoff, timeout, undo }, || { .. })",
    );
    refused(
        "let page = \"me\";\non_failure(page);\nhttp::post(#{ url: \"URL\" });",
        &[],
        "on_failure(..) was given (string); it is called as on_failure(|f| { .. })",
    );
}

#[test]
fn unknown_and_missing_fields_are_named() {
    refused(
        "http::post(#{ url: \"URL\", jsn: 1 });",
        &[],
        "http::post has no field `jsn` (did you mean `json`?)",
    );
    // The fields every action takes are named too: a suggestion is always in the list.
    refused(
        "pg::query(#{ url: \"postgres://a@127.0.0.1:1/d\", sql: \"select 1\", timout: \"3s\" });",
        &[],
        "pg::query has no field `timout` (did you mean `timeout`?); its fields are name, params, sql, url, and those every action takes: timeout, retries, backoff",
    );
    refused(
        "http::post(#{ url: \"URL\" });\nnotify::slack(#{ text: \"x\" });",
        &[],
        "notify::slack needs the field `webhook`",
    );
}

#[test]
fn a_field_of_the_wrong_type_names_action_field_and_line() {
    // Computed at run time, so only the run can see it.
    refused(
        "let n = 5;\nstep(\"s\", || http::post(#{ url: \"URL\", expect_status: \"two hundred\" + n }));",
        &[],
        "http::post: field `expect_status`",
    );
    refused(
        "let n = 5;\nstep(\"s\", || http::post(#{ url: n }));",
        &[],
        "--> runbook.rhai:2:",
    );
    refused(
        "let t = \"soon\";\nsleep(t);",
        &[],
        "sleep: 'soon' is not a duration",
    );
}

#[test]
fn parameters_are_checked_before_anything_runs() {
    let decl = "let p = params(#{ n: #{ type: \"int\", doc: \"replicas\" } });\nhttp::post(#{ url: \"URL\" });";
    refused(decl, &[], "missing parameter: --var n=<int> (replicas)");
    refused(
        decl,
        &["--var", "n=many"],
        "--var n=many: expected a whole number",
    );
    refused(
        decl,
        &["--var", "n=1", "--var", "colour=2"],
        "unknown parameter --var colour: it declares n",
    );
    refused(
        "let p = params(#{ replicas: #{ type: \"int\", default: 1 } });",
        &["--var", "replcias=2"],
        "unknown parameter --var replcias (did you mean `replicas`?): it declares replicas",
    );
    refused(
        "http::post(#{ url: \"URL\" });",
        &["--var", "x=1"],
        "--var x given, but the runbook has not declared it",
    );
    refused(
        decl,
        &["--var", "novalue"],
        "--var novalue: write it as NAME=VALUE",
    );
    // A duration is checked before the run starts, not when a step, perhaps after the first
    // change, hands it to an action.
    refused(
        "let p = params(#{ wait: #{ type: \"duration\", default: \"2m\" } });\nhttp::post(#{ url: \"URL\" });",
        &["--var", "wait=soon"],
        "--var wait=soon: 'soon' is not a duration",
    );
    refused(
        "params(#{ n: #{ tpye: \"int\" } });",
        &[],
        "parameter 'n': unknown key `tpye` (did you mean `type`?)",
    );

    // Declarations in a literal map are checked before the run is announced or its lock
    // taken: nothing on stdout, no run kept.
    let t = Test::new().script(decl).run(&[]).code(2);
    let ran = t.check();
    assert_eq!(ran.stdout, "", "announced: {}", ran.all());
    assert_eq!(t.run_ids(), Vec::<String>::new());

    // Declarations built at run time are read when the script runs: the run was announced,
    // its end says it is not kept, and indeed no run is left to look for.
    let built = "let d = #{};\nd.n = #{ type: \"int\" };\nlet p = params(d);";
    let t = Test::new()
        .script(built)
        .run(&[])
        .code(2)
        .stderr("missing parameter: --var n=<int>");
    let ran = t.check();
    assert_says(
        &ran.stdout,
        &[
            "starting run ",
            "run refused after ",
            ": nothing ran, and the run is not kept",
        ],
    );
    assert_eq!(t.run_ids(), Vec::<String>::new());
    assert!(!ran.stdout.contains("resume"), "{}", ran.stdout);
}

#[test]
fn inventory_problems_are_named() {
    let server = Server::start();
    Test::new()
        .inventory("[regions\nbroken")
        .script("log(1);")
        .run(&[])
        .code(2)
        .stderr("inventory inventory.toml: not valid TOML: line 1")
        .check();
    Test::new()
        .script("log(1);")
        .args(&["run", "runbook.rhai", "-i", "missing.toml"])
        .code(2)
        .stderr("inventory missing.toml: cannot read it")
        .check();
    // A misspelt name is named as it is in its folder, for the runbook and the inventory.
    Test::new()
        .inventory("")
        .script("log(1);")
        .args(&["run", "runbok.rhai", "-i", "inventory.toml"])
        .code(2)
        .stderr("cannot read runbook runbok.rhai: No such file or directory (os error 2) (did you mean `runbook.rhai`?)")
        .check();
    Test::new()
        .inventory("")
        .script("log(1);")
        .args(&["run", "runbook.rhai", "-i", "inventroy.toml"])
        .code(2)
        .stderr("inventory inventroy.toml: cannot read it: No such file or directory (os error 2) (did you mean `inventory.toml`?)")
        .check();
    let t = Test::new()
        .inventory("[regions.us-east-1]\nurl = \"x\"\n")
        .script(&format!(
            "step(\"a\", || http::post(#{{ url: \"{u}\" }}));\nlet r = inventory.regions[\"eu-west-1\"];\nstep(\"b\", || http::post(#{{ url: \"{u}\" }}));",
            u = server.url("/w")
        ))
        .run(&[])
        .code(2)
        .stderr("inventory inventory.toml has no key 'regions.eu-west-1' under 'regions'; it has: us-east-1")
        .stderr("runbook.rhai:2:26");
    t.check();
    assert_eq!(server.count("POST", "/w"), 1, "stopped at the missing key");
    // A key the runbook reads, misspelt in the file: the error names the likely culprit.
    Test::new()
        .inventory("[regions.eu]\nowner_tem = \"sre\"\n")
        .script("log(inventory.regions.eu.owner_team);")
        .run(&[])
        .code(2)
        .stderr("inventory inventory.toml has no key 'regions.eu.owner_team' under 'regions.eu' (is `owner_tem` a misspelling of it?); it has: owner_tem")
        .check();
    // How far apart health checks go, read only by the step that waits: refused at the start.
    let t = Test::new()
        .inventory("health_interval = \"a second\"\n[regions.eu]\n")
        .script(&format!(
            "step(\"a\", || http::post(#{{ url: \"{}\" }}));",
            server.url("/w")
        ))
        .run(&[])
        .code(2)
        .stderr("inventory inventory.toml: health_interval: 'a second' is not a duration")
        .stderr("nothing was run");
    t.check();
    assert!(t.run_ids().is_empty(), "no run is kept");
    assert_eq!(server.count("POST", "/w"), 1, "only the first case posted");
}

/// A key written close to one the engine reads, where that one is missing (`databse_url`),
/// would leave a region's database unseen by the topology: a failover that cannot tell
/// whether it takes writes. The inventory is refused before anything runs — at the start and
/// at a resume, which reads it again — and once the key is renamed the resume goes on.
#[test]
fn a_misspelt_inventory_key_is_refused_at_run_and_at_resume() {
    let server = Server::start();
    let good = "[regions.eu]\ndatabase_url = \"postgres://a@127.0.0.1:1/d\"\n";
    let typo = "[regions.eu]\ndatabse_url = \"postgres://a@127.0.0.1:1/d\"\n";
    let said = "inventory.toml: the key `regions.eu.databse_url` (did you mean `database_url`?): not a key the engine or the shipped runbooks read";
    let t = Test::new()
        .inventory(typo)
        .script(&format!(
            "step(\"a\", || http::post(#{{ url: \"{u}\" }}));\napprove(\"go on?\");\nstep(\"b\", || http::post(#{{ url: \"{u}\" }}));",
            u = server.url("/w")
        ))
        .run(&[])
        .code(2)
        .stderr(said);
    t.check();
    assert!(t.run_ids().is_empty(), "no run is kept");
    assert_eq!(server.count("POST", "/w"), 0);

    // The shipped runbooks, offline too.
    let failover = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/runbooks/emergency-failover.rhai"
    );
    let ran = t.exec(&[
        "run",
        failover,
        "-i",
        "inventory.toml",
        "--dry-run",
        "--offline",
    ]);
    assert_eq!(ran.code, 2, "{}", ran.stderr);
    assert!(ran.stderr.contains(said), "{}", ran.stderr);

    std::fs::write(t.path("inventory.toml"), good).unwrap();
    let ran = t.exec(&["run", "runbook.rhai", "-i", "inventory.toml"]);
    assert_eq!(ran.code, 3, "paused for approval: {}", ran.stderr);
    let run = t.only_run();
    std::fs::write(t.path("inventory.toml"), typo).unwrap();
    let ran = t.exec(&["resume", &run, "--approve"]);
    assert_eq!(ran.code, 2, "{}", ran.stderr);
    assert!(ran.stderr.contains(said), "{}", ran.stderr);
    assert_eq!(
        server.count("POST", "/w"),
        1,
        "the refused resume ran nothing"
    );
    // A broken edit is refused the same, not taken for a file that is gone.
    std::fs::write(t.path("inventory.toml"), "[regions\nbroken").unwrap();
    let ran = t.exec(&["resume", &run, "--approve"]);
    assert_eq!(ran.code, 2, "{}", ran.stderr);
    assert!(
        ran.stderr
            .contains("inventory.toml: not valid TOML: line 1"),
        "{}",
        ran.stderr
    );
    assert!(!ran.stderr.contains("is gone"), "{}", ran.stderr);
    std::fs::write(t.path("inventory.toml"), good).unwrap();
    let ran = t.exec(&["resume", &run, "--approve"]);
    assert_eq!(ran.code, 0, "{}", ran.stderr);
    assert_eq!(
        server.count("POST", "/w"),
        2,
        "step b ran once, step a not again"
    );
}

/// A runbook that reads the inventory, run without one, is refused before anything runs and
/// before a run is kept, pointing at where it reads it (here inside a step's closure): it
/// would only see an empty deployment ("no database accepts writes"). An inventory that names
/// no region is refused by the topology actions for the same reason.
#[test]
fn a_runbook_that_reads_the_inventory_is_not_run_without_one() {
    let status = concat!(env!("CARGO_MANIFEST_DIR"), "/runbooks/status.rhai");
    let t = Test::new();
    for dry in [&[][..], &["--dry-run"], &["--dry-run", "--offline"]] {
        let mut args = vec!["run", status];
        args.extend(dry);
        let out = t.exec(&args);
        assert_eq!(out.code, 2, "{dry:?}: {}", out.all());
        assert_says(
            &out.stderr,
            &[
                "status.rhai reads the inventory, and none was given: add -i FILE",
                "status.rhai:16:60",
            ],
        );
        assert!(!out.stdout.contains("observe"), "{}", out.all());
    }
    assert!(t.run_ids().is_empty(), "no run was kept");

    let t = Test::new().inventory("primary_region = \"us-east-1\"\n");
    let out = t.exec(&["run", status, "-i", "inventory.toml", "--dry-run"]);
    assert_eq!(out.code, 2, "{}", out.all());
    assert_says(
        &out.stderr,
        &["topology::observe: field `inventory`: the inventory names no region (no [regions.NAME] table)"],
    );
    assert!(
        !out.all().contains("no database accepts writes"),
        "{}",
        out.all()
    );

    // A runbook that does not read it needs none.
    Test::new()
        .script("log(`hello`);")
        .run(&[])
        .code(0)
        .stdout("hello")
        .check();
}

#[test]
fn usage_errors_are_exit_2() {
    let t = Test::new();
    let ran = t.exec(&["run"]);
    assert_eq!(ran.code, 2);
    let ran = t.exec(&["resume", "20990101-0000-ffff"]);
    assert_eq!(ran.code, 2);
    assert!(
        ran.stderr.contains("no run with id '20990101-0000-ffff'"),
        "{}",
        ran.stderr
    );
    let ran = t.exec(&["log", "20990101-0000-ffff", "--runbook"]);
    assert_eq!(ran.code, 2);
    assert!(
        ran.stderr.contains("no run with id '20990101-0000-ffff'"),
        "{}",
        ran.stderr
    );
    // In another state directory, the command that lists its runs names it.
    let ran = t.exec(&["--state-dir", "ops", "log", "20990101-0000-ffff"]);
    assert_eq!(ran.code, 2);
    assert!(
        ran.stderr
            .contains("in ops; `runbook runs --state-dir ops` lists the runs"),
        "{}",
        ran.stderr
    );
    let ran = t.exec(&["run", "nope.rhai"]);
    assert_eq!(ran.code, 2);
    assert!(
        ran.stderr.contains("cannot read runbook nope.rhai"),
        "{}",
        ran.stderr
    );
    let ran = t.exec(&["run", "x.rhai", "--offline"]);
    assert_eq!(ran.code, 2, "--offline needs --dry-run");
    let ran = t.exec(&["resume", "x", "--retry-inflight", "--skip-inflight"]);
    assert_eq!(ran.code, 2);
}

#[test]
fn resuming_a_finished_run_is_refused() {
    let t = Test::new().script("log(1);").run(&[]).code(0);
    t.check();
    let ran = t.exec(&["resume", &t.only_run()]);
    assert_eq!(ran.code, 2);
    assert!(ran.stderr.contains("already finished"), "{}", ran.stderr);
}

#[test]
fn duplicate_step_names_are_refused() {
    refused(
        "step(\"a\", || http::post(#{ url: \"URL\" }));\nstep(\"a\", || {});",
        &[],
        "step 'a' is already defined in this scope",
    );
    // Computed names are checked when they run.
    refused(
        "for r in [\"x\", \"x\"] { step(`s ${r}`, || {}); }",
        &[],
        "step 's x' already ran in the top level",
    );
}

#[test]
fn a_runaway_script_is_stopped_by_the_operation_limit() {
    let ran = Test::new()
        .script("let i = 0; loop { i += 1; }")
        .env("RUNBOOK_MAX_OPERATIONS", "100000")
        .run(&[])
        .check();
    assert_eq!(ran.code, 2, "{}", ran.all());
    assert!(
        ran.stderr.contains("ran more than 100000 operations"),
        "{}",
        ran.stderr
    );
    assert!(ran.stderr.contains("--> runbook.rhai:1:"), "{}", ran.stderr);
}

/// A mistake in a branch the run may take only mid-incident — a misspelt field of an
/// action's output or an undeclared parameter (read as `()`, so `() > 0` or `() == "eu"`
/// quietly take the other branch), a misspelt helper, a value the action cannot take — is
/// refused before the first step, where the operator can still fix it, naming what there is.
#[test]
fn a_mistake_in_a_branch_not_taken_yet_is_refused_before_the_run_starts() {
    let cases = [
        (
            r#"
        step("read", || {
            let t = time::now();
            if t.mss > 0 { log("took the late branch"); } else { log("took the early branch"); }
        });"#,
            "time::now returns no field `mss` (did you mean `ms`?); its fields are iso, ms",
            "--> runbook.rhai:4:18",
        ),
        (
            r#"
        let p = params(#{ region: #{ type: "string", default: "eu" } });
        step("read", || {
            if p.regoin == "eu" { log("took the eu branch"); } else { log("took the other branch"); }
        });"#,
            "no parameter `regoin` is declared (did you mean `region`?); params(..) declares region",
            "--> runbook.rhai:4:18",
        ),
        (
            r#"
        fn fence_old(region) { log(`fencing ${region}`); }
        step("decide", || {
            if time::now().ms < 0 { fence_olds("us-east-1"); } else { log("took the usual branch"); }
        });"#,
            "unknown function `fence_olds` (did you mean `fence_old`?)",
            "--> runbook.rhai:4:37",
        ),
        (
            r#"
        step("decide", || {
            if time::now().ms < 0 {
                pg::fence(#{ url: "postgres://u@127.0.0.1:1/db", method: "shutdwon" });
            } else { log("took the usual branch"); }
        });"#,
            "pg::fence: field `method`: unknown variant `shutdwon`, expected `read_only` or `shutdown`",
            "--> runbook.rhai:4:66",
        ),
        (
            r#"
        step("decide", || {
            if time::now().ms < 0 {
                step("fence", #{ retires: 3 }, || log("fenced"));
            } else { log("took the usual branch"); }
        });"#,
            "step 'fence': unknown option `retires` (did you mean `retries`?)",
            "--> runbook.rhai:4:34",
        ),
    ];
    for (script, message, at) in cases {
        let t = Test::new().script(&format!(
            "step(\"write\", || shell::run(#{{ cmd: \"touch written\" }}));{script}"
        ));
        let ran = t.exec(&["run", "runbook.rhai"]);
        assert_eq!(ran.code, 2, "{}", ran.all());
        assert_says(&ran.stderr, &[message, at]);
        assert!(!ran.stdout.contains("took the"), "{}", ran.stdout);
        assert!(
            !t.dir.path().join("written").exists(),
            "the first step did not run"
        );
        assert!(t.run_ids().is_empty(), "nothing ran");
    }
}
