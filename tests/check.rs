use crate::support::{assert_says, Ran, Test};

/// Runs `runbook check runbook.rhai`, which must refuse it (exit 2) saying each of `says`.
fn check_refuses(t: &Test, says: &[&str]) -> Ran {
    let ran = t.exec(&["check", "runbook.rhai"]);
    assert_eq!(ran.code, 2, "{}", ran.all());
    assert_says(&ran.stderr, says);
    ran
}

/// How many problems `runbook check` reported (its summary line aside).
fn problems(stderr: &str) -> usize {
    stderr
        .lines()
        .filter(|l| l.starts_with("error: ") && !l.contains("runbooks have problems"))
        .count()
}

#[test]
fn check_reports_every_problem_with_its_position_and_runs_nothing() {
    let t = Test::new().script(
        "step(\"a\", || { http::gett(#{ url: \"x\" }) });\nstep(\"a\", || {});\nhttp::get(#{urll: \"x\"});\nparams(#{ a: #{ tpye: \"int\" }, w: #{ type: \"duration\", default: \"soon\" }, z: #{ type: \"size\", default: \"16 megs\" }, y: #{ type: \"size\", default: \"16MB\" } });\nfor r in [1,2] { step(\"x\", || {}) }\nhttp::get(1, 2);\napprove();\nshell::run(#{ cmd: \"touch ran\" });\n",
    );
    let ran = t.exec(&["check", "runbook.rhai"]);
    assert_eq!(ran.code, 2);
    assert_says(
        &ran.stderr,
        &[
            "unknown action http::gett (did you mean `get`?)",
            "--> runbook.rhai:1:22",
            "step 'a' is already defined in this scope (line 1)",
            "http::get has no field `urll` (did you mean `url`?)",
            "parameter 'a': unknown key `tpye`",
            "parameter 'w': its default 'soon' is not a duration",
            "parameter 'z': its default '16 megs' is not a size; write bytes (16777216) or a number with a unit",
            "step 'x' has a fixed name inside a loop",
            "http::get takes one argument",
            "approve takes 1 argument, not 0",
        ],
    );
    assert!(
        !ran.stderr.contains("parameter 'y'"),
        "16MB is a size: {}",
        ran.stderr
    );
    assert!(!t.path("ran").exists());
    assert!(t.run_ids().is_empty());
}

#[test]
fn check_accepts_good_runbooks_and_stdlib_imports() {
    let t = Test::new()
        .script("import \"health\" as health;\nstep(\"wait\", || health::wait_healthy(\"http://127.0.0.1:9/\", \"5s\"));\n")
        .file("lib/util.rhai", "fn twice(x) { x * 2 }")
        .file("b.rhai", "import \"./lib/util\" as util;\nlog(util::twice(2));\n")
        .file("c.rhai", "fn one() { 1 }\n");
    let ran = t.exec(&["check", "runbook.rhai", "b.rhai", "c.rhai"]);
    assert_eq!(ran.code, 0, "{}", ran.all());
    assert!(
        ran.stdout
            .contains("ok: runbook.rhai (2 lines, 0 functions)"),
        "{}",
        ran.all()
    );
    assert!(
        ran.stdout.contains("ok: c.rhai (1 line, 1 function)"),
        "{}",
        ran.all()
    );
    let ran = t.exec(&["run", "b.rhai"]);
    assert_eq!(ran.code, 0, "{}", ran.all());
    assert!(
        ran.stdout.contains("\n4\n")
            || ran.stdout.contains("  4")
            || ran.stdout.lines().any(|l| l.trim() == "4"),
        "{}",
        ran.stdout
    );
}

/// A folder is every runbook below it, in name order; hidden folders (the state directory,
/// .git) and other files are left alone, and a folder with none is refused.
#[test]
fn check_of_a_folder_checks_every_runbook_below_it() {
    let t = Test::new()
        .file("books/b.rhai", "log(1);\n")
        .file("books/a.rhai", "fn one() { 1 }\n")
        .file("books/nested/c.rhai", "log(2);\n")
        .file("books/README.md", "not a runbook")
        .file("books/.runbook/old.rhai", "let x = ;")
        .file("books/empty/notes.txt", "");
    let ran = t.exec(&["check", "books"]);
    assert_eq!(ran.code, 0, "{}", ran.all());
    let checked: Vec<&str> = ran.stdout.lines().collect();
    assert_eq!(
        checked,
        [
            "ok: books/a.rhai (1 line, 1 function)",
            "ok: books/b.rhai (1 line, 0 functions)",
            "ok: books/nested/c.rhai (1 line, 0 functions)",
        ],
        "{}",
        ran.all()
    );
    let t = t.file("books/nested/bad.rhai", "let y = ;");
    let ran = t.exec(&["check", "books", "books/empty"]);
    assert_eq!(ran.code, 2, "{}", ran.all());
    assert_says(
        &ran.stderr,
        &[
            "books/nested/bad.rhai does not compile",
            "error: 1 of 4 runbooks have problems; the folder books/empty holds no runbook (.rhai file)",
        ],
    );
    assert!(!ran.all().contains("old.rhai"), "{}", ran.all());
}

#[test]
fn a_local_stdlib_folder_overrides_the_shipped_one() {
    let t = Test::new()
        .file(
            "mystd/health.rhai",
            "fn wait_healthy(url, within) { log(`local health ${url}`); }",
        )
        .script("import \"health\" as health;\nhealth::wait_healthy(\"u\", \"1s\");\n")
        .env("RUNBOOK_STDLIB", "mystd");
    let ran = t.exec(&["run", "runbook.rhai"]);
    assert_eq!(ran.code, 0, "{}", ran.all());
    assert!(ran.stdout.contains("local health u"), "{}", ran.stdout);
}

#[test]
fn check_knows_what_imported_modules_offer() {
    let t = Test::new()
        .file("lib/util.rhai", "fn twice(x) { x * 2 }")
        .script(
            "import \"health\" as health;\nimport \"./lib/util\" as util;\nimport \"nosuch\" as n;\nhealth::wait_healthy(\"u\");\nhealth::wait_helthy(\"u\", \"1s\");\nutil::twice(1);\n",
        );
    let ran = t.exec(&["check", "runbook.rhai"]);
    assert_eq!(ran.code, 2);
    assert_says(
        &ran.stderr,
        &[
        "no module 'nosuch': the stdlib has backup, cdn, cluster, database, health, incident, mesh, regions, replication, standby, traffic",
        // Written for two counts (the interval is optional): both are named, the name once.
        "health::wait_healthy takes 2 or 3 arguments, not 1",
        "module `health` has no function wait_helthy (did you mean `wait_healthy`?); it has ",
        ],
    );
    let listed = ran
        .stderr
        .lines()
        .find(|l| l.contains("no function wait_helthy"))
        .unwrap();
    assert_eq!(listed.matches("wait_healthy").count(), 2, "{listed}");
    assert!(!ran.stderr.contains("twice"), "{}", ran.stderr);
}

/// A module that cannot be imported is one mistake, reported at the import, not again at every
/// call through it.
#[test]
fn a_module_that_does_not_compile_is_reported_once() {
    let t = Test::new()
        .file("lib/util.rhai", "fn twice(x) { x * }")
        .script(
            "import \"./lib/util\" as util;\nimport \"nosuch\" as n;\nutil::twice(1);\nutil::twice(2);\nn::f();\n",
        );
    let ran = check_refuses(
        &t,
        &[
            "module lib/util.rhai does not compile",
            "no module 'nosuch'",
        ],
    );
    assert!(!ran.stderr.contains("unknown namespace"), "{}", ran.stderr);
}

/// A misspelt required field is one mistake: it is named with the field meant, and not
/// reported a second time as missing. A field really missing still is.
#[test]
fn a_misspelt_required_field_is_reported_once() {
    let t = Test::new().script(
        "notify::slack(#{ webhok: \"https://hooks.example/x\", text: \"hi\" });\nnotify::slack(#{ text: \"hi\" });\n",
    );
    let ran = check_refuses(
        &t,
        &[
            "notify::slack has no field `webhok` (did you mean `webhook`?)",
            "--> runbook.rhai:1:18",
            "notify::slack needs the field `webhook`",
            "--> runbook.rhai:2:9",
        ],
    );
    assert_eq!(
        ran.stderr.matches("needs the field").count(),
        1,
        "{}",
        ran.stderr
    );
}

/// A named function that reads `inventory` without being given it compiles, but fails with
/// "Variable not found" when first called — in a run, perhaps after its first changes; so
/// does an assignment to it. Check names both, and a run is refused before anything runs. A
/// function given it as a parameter (or a closure, which captures it) is fine, gets what it
/// is given, and a runbook whose only `inventory` is a function's parameter runs without `-i`.
#[test]
fn a_function_reading_the_inventory_it_is_not_given_is_refused_before_running() {
    let t = Test::new()
        .inventory("[regions.a]\nurl = \"http://127.0.0.1:9/\"\n")
        .script(
            "step(\"first\", || shell::run(#{ argv: [\"touch\", \"ran\"] }));\n\
             fn url_of(region) {\n    inventory.regions[region].url\n}\n\
             step(\"second\", || log(url_of(\"a\")));\n",
        )
        .file(
            "given.rhai",
            "fn url_of(inventory, region) { inventory.regions[region].url }\n\
             step(\"in a closure\", || log(inventory.regions.a.url));\n\
             log(url_of(inventory, \"a\"));\n",
        )
        .file(
            "own.rhai",
            "fn twice(inventory) { inventory * 2 }\nlog(twice(21));\n",
        )
        .file(
            "assigns.rhai",
            "step(\"a\", || log(1));\nstep(\"b\", || { inventory = #{}; });\n",
        );
    let checked = t.exec(&[
        "check",
        "runbook.rhai",
        "given.rhai",
        "own.rhai",
        "assigns.rhai",
    ]);
    assert_eq!(checked.code, 2, "{}", checked.all());
    assert_says(
        &checked.stderr,
        &[
            "error: function `url_of` reads `inventory`, which a function does not see (only its parameters and its own variables): declare it as a parameter, `fn url_of(inventory, ..)`, and pass it where `url_of` is called",
            "--> runbook.rhai:3:5",
            "error: `inventory` is read-only (the inventory file as loaded): keep what you change in a variable of your own",
            "--> assigns.rhai:2:16",
            "error: 2 of 4 runbooks have problems",
        ],
    );
    assert_says(&checked.stdout, &["ok: given.rhai", "ok: own.rhai"]);

    let ran = t.exec(&["run", "runbook.rhai", "-i", "inventory.toml"]);
    assert_eq!(ran.code, 2, "{}", ran.all());
    assert_says(&ran.stderr, &["function `url_of` reads `inventory`"]);
    assert!(!t.path("ran").exists(), "a step ran");
    assert!(t.run_ids().is_empty());

    let given = t.exec(&["run", "given.rhai", "-i", "inventory.toml"]);
    assert_eq!(given.code, 0, "{}", given.all());
    let own = t.exec(&["run", "own.rhai"]);
    assert_eq!(own.code, 0, "{}", own.all());
    assert_says(&own.stdout, &["42"]);
    // With an inventory given, the function still gets its argument, not the run's inventory.
    let own = t.exec(&["run", "own.rhai", "-i", "inventory.toml"]);
    assert_eq!(own.code, 0, "{}", own.all());
    assert_says(&own.stdout, &["42"]);
}

/// `runbook check --params`: what each runbook takes, as an operator passes it, the required
/// parameters first; a runbook whose declarations are built when it runs says so.
#[test]
fn check_lists_the_parameters_a_runbook_declares() {
    let root = env!("CARGO_MANIFEST_DIR");
    let t = Test::new().file(
        "built.rhai",
        "let d = #{};\nd.n = #{ type: \"int\" };\nlet p = params(d);\n",
    );
    let planned = format!("{root}/runbooks/planned-failover.rhai");
    let ran = t.exec(&["check", "--params", &planned, "built.rhai"]);
    assert_eq!(ran.code, 0, "{}", ran.all());
    let lines: Vec<&str> = ran.stdout.lines().collect();
    assert!(
        lines[0].starts_with(&format!("ok: {planned} (")),
        "{}",
        ran.stdout
    );
    assert_eq!(
        lines[1],
        "  --var target=<region>            required       the region to become primary"
    );
    assert_says(
        &ran.stdout,
        &[
            "  --var health_within=<duration>   default 2m     how long the target's application",
            "  --var from=<region>              default \"\"     the current primary region",
            "  --var max_lag_bytes=<size>       default 100MB  refuse to start when the target is further behind than this (bytes, or e.g. 1GB",
            "ok: built.rhai (",
            "  parameters built when it runs: not listed",
        ],
    );
    // Without --params, the one line a file.
    let plain = t.exec(&["check", &planned]);
    assert_eq!(plain.stdout.lines().count(), 1, "{}", plain.stdout);
}

/// A field read from an action's output that the output does not have, or a parameter the
/// runbook did not declare (either would read as `()`), is found by `check`: on the call
/// itself, or through a variable the runbook binds once to the call. A variable whose fields
/// the runbook changes, or whose name is also a loop variable or a parameter, could hold other
/// fields and is left alone.
#[test]
fn check_names_a_field_an_action_does_not_return() {
    let t = Test::new().script(
        r#"let t = time::now();
log(t.mss);
log(time::now().iso2);
step("read", || {
    let s = pg::status(#{ url: "postgres://u@127.0.0.1:1/db" });
    if s.in_recovry { log("standby"); }
    let got = k8s::get(#{ context: "c", kind: "pods" });
    log(got.items.len());
    log(got.itemz.len());
});
let m = time::now();
m.extra = 1;
log(m.extra);
let n = time::now();
n.mixin(#{ more: 2 });
log(n.more);
let o = time::now();
o = #{ other: 3 };
log(o.other);
for v in [#{ a: 1 }] { log(v.a); }
let v = time::now();
log(v.ms);
let p = time::now();
log(p.iso);
parallel([#{ region: "x" }], |p| log(p.region));
let q = params(#{ target: #{ type: "string", default: "eu" }, force: #{ type: "bool", default: false } });
log(q.target);
log(q.forse);
"#,
    );
    let ran = check_refuses(
        &t,
        &[
            "time::now returns no field `mss` (did you mean `ms`?); its fields are iso, ms\n  --> runbook.rhai:2:7",
            "time::now returns no field `iso2` (did you mean `iso`?)",
            "--> runbook.rhai:3:17",
            "pg::status returns no field `in_recovry` (did you mean `in_recovery`?)",
            "k8s::get returns no field `itemz` (did you mean `items`?); its fields are count, items",
            "no parameter `forse` is declared (did you mean `force`?); params(..) declares target, force",
        ],
    );
    assert_eq!(
        ran.stderr.matches("returns no field").count() + ran.stderr.matches("no parameter").count(),
        5,
        "only the five misspelt fields: {}",
        ran.stderr
    );
    assert!(t.run_ids().is_empty());
}

#[test]
fn check_names_a_call_of_a_function_that_is_not_there() {
    let t = Test::new()
        .file(
            "lib/util.rhai",
            "fn twice(x) { x * 2 }\nfn shout(s) { s.to_upper() }\n",
        )
        .script(
            r#"import "./lib/util" as util;
fn helper(a) { later(a) + 1 }
fn later(a) { a }
fn pick(a) { a }
fn pick(a, b) { b }
let f = |x| x + 1;
let n = 2;
let add = |x| x + n;
let items = [3, 1, 2];
step("calls", || {
    log(helpr(2));
    log(helper(1, 2));
    log(f(2));
    log(parse_int("1", 2, 3, 4));
    log(helper(1) + pick(1) + pick(1, 2) + f.call(1) + add.call(1) + Fn("later").call(3));
    log(len(items) + items.len() + parse_int("12") + max(1, 2) + util::twice(2));
    log(`${type_of(n)} ${is_def_var("n")} ${is_def_fn("helper", 1)} ${2 in items} ${util::shout("a")}`);
    for i in range(0, 2) { print(i); debug(i); }
    log(timestamp().elapsed >= 0.0);
    log(join(items.map(|i| i.to_string()), ", "));
    is_dry_run();
    let o = #{ greet: |n| `hi ${n}` };
    log(o.greet("x") + "abc".to_upper() + items.map(|i| i + 1).len());
    log(items.lenght());
    lock(5);
    result(5, n);
    lock("ours");
    result("named", n);
});
"#,
        );
    let ran = check_refuses(
        &t,
        &[
            "unknown function `helpr` (did you mean `helper`?)",
            "--> runbook.rhai:11:9",
            "helper(..) takes 1 argument, not 2\n  --> runbook.rhai:12:9",
            "no function `f`: `f` is a variable, and a closure it holds is called as f.call(..)",
            "--> runbook.rhai:13:9",
            "parse_int(..) takes 1 or 2 arguments, not 4\n  --> runbook.rhai:14:9",
            "unknown method `.lenght(..)`: no function of that name",
            "--> runbook.rhai:24:15",
            "lock(..) was given (int); it is called as lock(\"name\")\n  --> runbook.rhai:25:5",
            "result(..) was given (int, value); it is called as result(\"name\", value)\n  --> runbook.rhai:26:5",
        ],
    );
    assert_eq!(
        problems(&ran.stderr),
        7,
        "the seven wrong calls: {}",
        ran.stderr
    );
    assert!(t.run_ids().is_empty());
}

#[test]
fn check_names_a_value_an_action_cannot_take() {
    let t = Test::new().script(
        r#"const DB = "postgres://u@127.0.0.1:1/db";
step("calls", || {
    shell::run(#{ cmd: ["touch", "a"] });
    pg::fence(#{ url: DB, method: "shutdwon" });
    http::wait_healthy(#{ url: "http://127.0.0.1:1/", timeout: "2 minuts" });
    http::get(#{ url: "http://127.0.0.1:1/", retries: 500 });
    http::post(#{ url: "http://127.0.0.1:1/", expect_status: "200" });
    http::get(42);
    let r = "eu";
    http::get(#{ url: `http://${r}.example/`, timeout: 5, backoff: "1s" });
    http::post(#{ url: secret("HOOK"), expect_status: [200, 204], json: #{ any: ["thing", 1] } });
    http::get("http://127.0.0.1:1/");
    pg::fence(#{ url: DB, method: "read_only" });
    shell::run(#{ cmd: "touch a", retries: 0 });
});
"#,
    );
    let ran = check_refuses(
        &t,
        &[
            "shell::run: field `cmd`: invalid type: sequence, expected a string\n  --> runbook.rhai:3:19",
            "pg::fence: field `method`: unknown variant `shutdwon`, expected `read_only` or `shutdown`\n  --> runbook.rhai:4:27",
            "http::wait_healthy: field `timeout`: '2 minuts' is not a duration",
            "--> runbook.rhai:5:55",
            "http::get: field `retries`: expected a number from 0 to 100, got 500\n  --> runbook.rhai:6:46",
            "http::post: field `expect_status`: expected a status code such as 200, or a list of them such as [200, 204]\n  --> runbook.rhai:7:47",
            "http::get: field `url`: expected a string or a secret\n  --> runbook.rhai:8:11",
        ],
    );
    assert_eq!(
        problems(&ran.stderr),
        6,
        "the six wrong values: {}",
        ran.stderr
    );
}

#[test]
fn check_and_the_run_name_a_step_or_parallel_option_there_is_not_or_cannot_be() {
    let t = Test::new().script(
        r#"step("a", #{ retires: 3, backof: "5s", timeout: "2 minuts" }, || log(1));
parallel([1, 2], #{ limt: 2 }, |i| log(i));
step("b", #{ undo: 5 }, || log(2));
step("c", #{ retries: 2, backoff: "250ms", timeout: 90, undo: || log("undo") }, || log(3));
parallel([1, 2], #{ limit: 1 }, |i| step(`d ${i}`, #{ timeout: 1.5 }, || log(i)));
sleep("2 minuts");
sleep(1.5);
sleep("1s");
sleep(0);
"#,
    );
    let ran = check_refuses(
        &t,
        &[
            "step 'a': unknown option `retires` (did you mean `retries`?); the options are retries, backoff, timeout, undo\n  --> runbook.rhai:1:14",
            "step 'a': unknown option `backof` (did you mean `backoff`?)",
            "--> runbook.rhai:1:26",
            "step 'a': option `timeout`: '2 minuts' is not a duration",
            "--> runbook.rhai:1:40",
            "parallel: unknown option `limt` (did you mean `limit`?); the option is limit\n  --> runbook.rhai:2:21",
            "step 'b': option `undo`: expected a closure, e.g. || { .. }, got a number\n  --> runbook.rhai:3:14",
            "sleep: '2 minuts' is not a duration",
            "--> runbook.rhai:6:1",
            "sleep(..) was given (float); it is called as sleep(\"30m\") or sleep(seconds)\n  --> runbook.rhai:7:1",
        ],
    );
    assert_eq!(
        problems(&ran.stderr),
        7,
        "the five wrong options and two sleeps: {}",
        ran.stderr
    );

    // A value only the run computes is read where the run reaches it, with the same words.
    let t = Test::new().script(
        r#"let p = params(#{ limit: #{ type: "string", default: "2 minuts" } });
step("first", || log("first ran"));
step("second", #{ timeout: p.limit }, || log("second ran"));
"#,
    );
    let ran = t.exec(&["run", "runbook.rhai"]);
    assert_eq!(ran.code, 2, "{}", ran.all());
    assert_says(
        &ran.all(),
        &[
            "first ran",
            "step 'second': option `timeout`: '2 minuts' is not a duration",
            "--> runbook.rhai:3:1",
        ],
    );
    assert!(!ran.stdout.contains("second ran"), "{}", ran.stdout);
}

/// A default of the wrong type would reach the script as it is (a text where a number was
/// declared), and one outside the choices was told as if the operator had passed it.
#[test]
fn check_and_the_run_name_a_default_that_does_not_fit_its_parameter() {
    let script = r#"let p = params(#{
    count: #{ type: "int", default: "three" },
    region: #{ choices: ["eu-west-1", "ap-southeast-1"], default: "us-east-1" },
    force: #{ type: "bool", default: false },
    weights: #{ type: "list", default: ["70", "30"] },
});
step("first", || log(`first ran ${p.count} ${p.region} ${p.force} ${p.weights}`));
"#;
    let t = Test::new().script(script);
    let ran = check_refuses(
        &t,
        &[
            "parameter 'count': its default \"three\" is not a whole number (its type is int)",
            "--> runbook.rhai:2:28",
            "parameter 'region': its default us-east-1 is not one of its choices, eu-west-1, ap-southeast-1",
            "--> runbook.rhai:3:58",
        ],
    );
    assert_eq!(
        ran.stderr.matches("its default").count(),
        2,
        "{}",
        ran.stderr
    );

    let ran = t.exec(&["run", "runbook.rhai"]);
    assert_eq!(ran.code, 2, "{}", ran.all());
    assert_says(&ran.stderr, &["parameter 'count': its default \"three\""]);
    assert!(!ran.stdout.contains("first ran"), "{}", ran.stdout);
    assert!(t.run_ids().is_empty(), "nothing ran");
}
