//! What-if drills: every shipped runbook's offline dry-run against the example inventory, and
//! every shipped scenario (runbooks/scenarios/) with the decision its plan must show.

use crate::support::{Ran, Test};

const ROOT: &str = env!("CARGO_MANIFEST_DIR");

/// `runbook run runbooks/NAME.rhai -i INVENTORY --dry-run --offline [--assume S] ARGS` from
/// the repository's root, with no secret set.
fn drill(inventory: &str, runbook: &str, scenario: Option<&str>, args: &[&str]) -> Ran {
    let t = Test::new();
    let mut all: Vec<String> = vec![
        "run".into(),
        format!("{ROOT}/runbooks/{runbook}.rhai"),
        "-i".into(),
        inventory.into(),
        "--dry-run".into(),
        "--offline".into(),
    ];
    if let Some(s) = scenario {
        all.extend([
            "--assume".into(),
            format!("{ROOT}/runbooks/scenarios/{s}.toml"),
        ]);
    }
    all.extend(args.iter().map(|s| s.to_string()));
    let mut cmd = t.command(&all);
    for var in [
        "US_EAST_1_DATABASE_URL",
        "EU_WEST_1_DATABASE_URL",
        "AP_SOUTHEAST_1_DATABASE_URL",
        "SLACK_WEBHOOK_URL",
    ] {
        cmd.env_remove(var);
    }
    let out = cmd.output().expect("runbook starts");
    Ran {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

fn example() -> String {
    format!("{ROOT}/runbooks/inventory.example.toml")
}

/// The example inventory with each region's data directory on this host (rejoin and the
/// planned failover's rewind need it).
fn with_data_dirs(t: &Test) -> String {
    let text = std::fs::read_to_string(example()).unwrap().replace(
        "# pg_data_dir = \"/var/lib/postgresql/15/main\"",
        "pg_data_dir = \"/var/lib/postgresql/15/main\"",
    );
    assert!(
        text.contains("\npg_data_dir ="),
        "the example inventory shows pg_data_dir"
    );
    let text = text.replace(
        "[regions.eu-west-1]\n",
        "[regions.eu-west-1]\npg_data_dir = \"/var/lib/postgresql/15/eu\"\n",
    );
    let text = text.replace(
        "[regions.ap-southeast-1]\n",
        "[regions.ap-southeast-1]\npg_data_dir = \"/var/lib/postgresql/15/ap\"\n",
    );
    let path = t.path("inventory.toml");
    std::fs::write(&path, text).unwrap();
    path.display().to_string()
}

/// The plan's section: what follows "Plan:".
fn plan(ran: &Ran) -> &str {
    ran.stdout
        .find("Plan:")
        .map(|i| &ran.stdout[i..])
        .unwrap_or("")
}

fn has(ran: &Ran, texts: &[&str]) {
    let all = ran.all();
    for t in texts {
        assert!(all.contains(t), "output lacks {t:?}\n{all}");
    }
}

fn lacks(ran: &Ran, texts: &[&str]) {
    let all = ran.all();
    for t in texts {
        assert!(!all.contains(t), "output has {t:?}\n{all}");
    }
}

#[test]
fn every_shipped_runbook_dry_runs_offline_in_the_inventorys_world() {
    // The example inventory's world: us-east-1 primary, the others streaming at lag 0, all
    // healthy. Each runbook goes through with its required parameters.
    let cases: &[(&str, &[&str], &[&str])] = &[
        ("initial-setup", &[], &["~ dns::upsert"]),
        ("status", &[], &["primary: us-east-1", "no anomalies"]),
        ("maintenance", &[], &["~ k8s::drain", "~ dns::set_weights"]),
        (
            "planned-failover",
            &["--var", "target=eu-west-1", "--var", "rejoin=false"],
            &["~ pg::promote: promote <secret EU_WEST_1_DATABASE_URL> (eu-west-1)"],
        ),
        ("rollback", &[], &["~ k8s::rollout_undo"]),
        (
            "upgrade",
            &["--var", "image=orchestrator:1.1"],
            &["\"image\":\"orchestrator:1.1\""],
        ),
    ];
    for (runbook, args, want) in cases {
        let ran = drill(&example(), runbook, None, args);
        assert_eq!(ran.code, 0, "{runbook}:\n{}", ran.all());
        has(
            &ran,
            &["world: the inventory's (", "run finished (dry-run)"],
        );
        has(&ran, want);
    }
    // A rejoin of a region that already streams from the primary needs no rewind (so no data
    // directory) and does not take it out of rotation first.
    let ran = drill(&example(), "rejoin", None, &["--var", "region=eu-west-1"]);
    assert_eq!(ran.code, 0, "{}", ran.all());
    has(&ran, &["eu-west-1 already streams from us-east-1"]);
    lacks(&ran, &["pg::rewind", "to 0 replicas", "eu-west-1 0"]);
    // The emergency failover of a healthy primary is refused, as on real servers: the
    // default world has no incident in it.
    let ran = drill(&example(), "emergency-failover", None, &[]);
    assert_eq!(ran.code, 1, "{}", ran.all());
    has(
        &ran,
        &["us-east-1 is healthy: its health check passes", "--assume"],
    );
    lacks(&ran, &["pg::promote"]);
}

#[test]
fn region_down_fails_over_to_the_most_advanced_standby_and_reports_the_unfenced_primary() {
    let ran = drill(&example(), "emergency-failover", Some("region-down"), &[]);
    assert_eq!(ran.code, 0, "{}", ran.all());
    has(
        &ran,
        &[
            "world: assumed by",
            "us-east-1: database unreachable; its health check failed when observed: does not answer (assumed by",
            "target eu-west-1 received",
            "data-loss bound 0 bytes, at least",
            "us-east-1's database is UNFENCED",
        ],
    );
    let plan = plan(&ran);
    for want in [
        "! pg::fence: fence <secret US_EAST_1_DATABASE_URL> (us-east-1)",
        "~ k8s::scale: scale deployment llm-orchestrator/orchestrator in us-east-1 to 0 replicas",
        "~ pg::promote: promote <secret EU_WEST_1_DATABASE_URL> (eu-west-1)",
        "~ pg::repoint: make <secret AP_SOUTHEAST_1_DATABASE_URL> (ap-southeast-1) stream from <secret EU_WEST_1_DATABASE_URL>",
        "~ dns::set_weights: set weights of orchestrator.example.com A: ap-southeast-1 0 / eu-west-1 100 / us-east-1 0",
    ] {
        assert!(plan.contains(want), "plan lacks {want:?}\n{plan}");
    }
    assert!(!plan.contains("promote <secret AP_SOUTHEAST_1"), "{plan}");
}

#[test]
fn service_down_fences_the_answering_primary_first_with_an_exact_bound() {
    let ran = drill(&example(), "emergency-failover", Some("service-down"), &[]);
    assert_eq!(ran.code, 0, "{}", ran.all());
    has(
        &ran,
        &[
            "answered 503 (expected 2xx)",
            "health failed 3 checks in a row; database a writable primary",
            "us-east-1's database is fenced (read-only) at 0/3000060",
            "data-loss bound 0 bytes, exact (the old primary was fenced at 0/3000060)",
        ],
    );
    let plan = plan(&ran);
    assert!(plan.starts_with("Plan: 15 changes\n"), "{plan}");
    let fence = plan.find("~ pg::fence").expect("the fence is planned");
    let promote = plan
        .find("~ pg::promote: promote <secret EU_WEST_1")
        .expect("eu-west-1 promoted");
    assert!(fence < promote, "fenced before the promotion:\n{plan}");
}

#[test]
fn complete_region_loss_picks_the_standby_with_the_most_wal() {
    let ran = drill(
        &example(),
        "emergency-failover",
        Some("complete-region-loss"),
        &[],
    );
    assert_eq!(ran.code, 0, "{}", ran.all());
    has(
        &ran,
        &[
            "target ap-southeast-1 received",
            "us-east-1's application could not be scaled to 0",
            "failover from us-east-1 to ap-southeast-1",
        ],
    );
    let plan = plan(&ran);
    for want in [
        "~ pg::promote: promote <secret AP_SOUTHEAST_1_DATABASE_URL> (ap-southeast-1)",
        "! k8s::scale: scale deployment llm-orchestrator/orchestrator in us-east-1 to 0 replicas (fails: cannot connect: us-east-1's Kubernetes API does not answer",
        "~ pg::repoint: make <secret EU_WEST_1_DATABASE_URL> (eu-west-1) stream from <secret AP_SOUTHEAST_1_DATABASE_URL>",
    ] {
        assert!(plan.contains(want), "plan lacks {want:?}\n{plan}");
    }
    // Asking for eu-west-1 anyway: 50 MB behind ap-southeast-1 is more than max_lag_bytes.
    let ran = drill(
        &example(),
        "emergency-failover",
        Some("complete-region-loss"),
        &["--var", "target=eu-west-1"],
    );
    assert_eq!(ran.code, 1, "{}", ran.all());
    has(
        &ran,
        &["eu-west-1 is 52428800 bytes (50.0 MB) behind, more than max_lag_bytes 16777216 bytes (16.0 MB); pick another target with --var target, or rerun with --var force=true to accept the loss"],
    );
    // A limit written with a unit (64MB = 67108864 bytes) lets it through; one that is not a
    // size stops the run before it starts.
    let ran = drill(
        &example(),
        "emergency-failover",
        Some("complete-region-loss"),
        &["--var", "target=eu-west-1", "--var", "max_lag_bytes=64MB"],
    );
    assert_eq!(ran.code, 0, "{}", ran.all());
    has(&ran, &["data-loss bound 52428800 bytes (50.0 MB)"]);
    let ran = drill(
        &example(),
        "emergency-failover",
        Some("complete-region-loss"),
        &[
            "--var",
            "target=eu-west-1",
            "--var",
            "max_lag_bytes=64 megs",
        ],
    );
    assert_eq!(ran.code, 2, "{}", ran.all());
    has(
        &ran,
        &["--var max_lag_bytes=64 megs: '64 megs' is not a size; write bytes (16777216) or a number with a unit: \"16MB\", \"512kB\", \"1.5GB\""],
    );
}

/// The primary's region lost while a maintenance left every node of the best standby's region
/// cordoned: the failover passes over it for the other standby, and says so; forced, it takes
/// the cordoned one. The same world without the cordon picks eu-west-1, so the cordon decided.
#[test]
fn region_down_while_cordoned_passes_over_the_cordoned_region() {
    let ran = drill(
        &example(),
        "emergency-failover",
        Some("region-down-while-cordoned"),
        &[],
    );
    assert_eq!(ran.code, 0, "{}", ran.all());
    has(
        &ran,
        &[
            "WARNING   every Kubernetes node in eu-west-1 is cordoned (3 of 3)",
            "eu-west-1: not a candidate (every Kubernetes node there is cordoned",
            "target ap-southeast-1 received",
        ],
    );
    let planned = plan(&ran);
    assert!(
        planned.contains(
            "~ pg::promote: promote <secret AP_SOUTHEAST_1_DATABASE_URL> (ap-southeast-1)"
        ),
        "{planned}"
    );
    assert!(!planned.contains("promote <secret EU_WEST_1"), "{planned}");

    let forced = drill(
        &example(),
        "emergency-failover",
        Some("region-down-while-cordoned"),
        &["--var", "force=true"],
    );
    assert_eq!(forced.code, 0, "{}", forced.all());
    assert!(
        plan(&forced)
            .contains("~ pg::promote: promote <secret EU_WEST_1_DATABASE_URL> (eu-west-1)"),
        "{}",
        forced.all()
    );
    let uncordoned = drill(&example(), "emergency-failover", Some("region-down"), &[]);
    has(&uncordoned, &["target eu-west-1 received"]);
}

#[test]
fn a_standby_too_far_behind_is_refused_before_any_change_unless_forced() {
    let ran = drill(
        &example(),
        "emergency-failover",
        Some("standby-too-far-behind"),
        &[],
    );
    assert_eq!(ran.code, 1, "{}", ran.all());
    has(
        &ran,
        &[
            "ap-southeast-1: not a candidate (unreachable)",
            // The old primary answers: what eu-west-1 lacks is not lost yet, and the refusal
            // says what forcing does.
            "eu-west-1 is 52428800 bytes (50.0 MB) behind us-east-1, more than max_lag_bytes 16777216 bytes (16.0 MB). us-east-1 still answers, so that is not yet lost: --var force=true fences it first and gives eu-west-1 up to 30s (--var catch_up) to replay the rest",
            "Nothing was changed",
        ],
    );
    lacks(&ran, &["pg::fence", "pg::promote"]);
    let ran = drill(
        &example(),
        "emergency-failover",
        Some("standby-too-far-behind"),
        &["--var", "force=true"],
    );
    assert_eq!(ran.code, 0, "{}", ran.all());
    assert!(
        plan(&ran).contains("~ pg::promote: promote <secret EU_WEST_1_DATABASE_URL> (eu-west-1)")
    );
    has(
        &ran,
        &["data-loss bound 0 bytes, exact (the old primary was fenced at 0/6200060)"],
    );
}

/// A switchover while a standby other than the target lags: refused before any change, naming
/// the standby and how far behind it is; the same world without the lag goes through.
#[test]
fn a_switchover_waits_for_every_standby_and_names_the_one_behind() {
    let args = ["--var", "target=eu-west-1", "--var", "rejoin=false"];
    let ran = drill(
        &example(),
        "planned-failover",
        Some("standby-lagging"),
        &args,
    );
    assert_eq!(ran.code, 1, "{}", ran.all());
    has(
        &ran,
        &[
            "replication lag from us-east-1 is warning: ap-southeast-1 600000000 bytes (572.2 MB) behind (warning). A switchover waits until every standby is within 500 MB",
            "in step 'preflight': ",
        ],
    );
    lacks(&ran, &["~ k8s::scale", "~ pg::fence"]);
    let ran = drill(&example(), "planned-failover", None, &args);
    assert_eq!(ran.code, 0, "{}", ran.all());
    let ran = drill(
        &example(),
        "emergency-failover",
        Some("standby-lagging"),
        &[],
    );
    assert_eq!(ran.code, 1, "{}", ran.all());
    has(&ran, &["us-east-1 is healthy: its health check passes"]);
}

#[test]
fn an_old_primary_back_and_writable_is_refused_by_the_failovers_and_rejoined() {
    let ran = drill(&example(), "status", Some("old-primary-back"), &[]);
    assert_eq!(ran.code, 1, "{}", ran.all());
    has(
        &ran,
        &[
            "primary: eu-west-1 (newest of eu-west-1, us-east-1)",
            "CRITICAL  us-east-1's database is a writable primary on timeline 1, while eu-west-1 is the primary on timeline 2",
        ],
    );
    // The fix is spelled as this run was started, offline too: pasted, it runs.
    has(
        &ran,
        &[&format!(
            "next: stop its writes now: runbook run {ROOT}/runbooks/fence.rhai -i {inv} --var region=us-east-1; then make it a standby: runbook run {ROOT}/runbooks/rejoin.rhai -i {inv} --var region=us-east-1",
            inv = example()
        )],
    );
    for (runbook, args) in [
        ("emergency-failover", &[][..]),
        (
            "planned-failover",
            &["--var", "target=ap-southeast-1", "--var", "rejoin=false"][..],
        ),
    ] {
        let ran = drill(&example(), runbook, Some("old-primary-back"), args);
        assert_eq!(ran.code, 1, "{runbook}: {}", ran.all());
        has(
            &ran,
            &[
                "the servers report 2 writable primaries",
                "Nothing was changed",
            ],
        );
        lacks(&ran, &["pg::promote"]);
    }
    // Without its data directory on this host, the rewind cannot run: said before the
    // approval is asked, not after it was given.
    let ran = drill(
        &example(),
        "rejoin",
        Some("old-primary-back"),
        &["--var", "region=us-east-1"],
    );
    assert_eq!(ran.code, 1, "{}", ran.all());
    has(
        &ran,
        &[
            "us-east-1's database is a writable primary",
            "the inventory gives no pg_data_dir for us-east-1. Run this on us-east-1's database host, with pg_data_dir under [regions.us-east-1]. Nothing was changed",
            "in step 'find the primary': ",
        ],
    );
    lacks(&ran, &["approve"]);
    let t = Test::new();
    let ran = drill(
        &with_data_dirs(&t),
        "rejoin",
        Some("old-primary-back"),
        &["--var", "region=us-east-1"],
    );
    assert_eq!(ran.code, 0, "{}", ran.all());
    let plan = plan(&ran);
    for want in [
        "~ approve: ask for approval: \"us-east-1's database is a writable primary on timeline 1",
        "~ pg::create_replication_slot: create replication slot us_east_1 on <secret EU_WEST_1_DATABASE_URL>",
        "~ pg::rewind: make <secret US_EAST_1_DATABASE_URL> (us-east-1) a standby of <secret EU_WEST_1_DATABASE_URL>",
        "~ redis::replicate: make <secret US_EAST_1_REDIS_URL> (us-east-1) a replica of redis.eu-west-1.internal:6379",
    ] {
        assert!(plan.contains(want), "plan lacks {want:?}\n{plan}");
    }
}

/// fence.rhai fences a former primary that came back, and only that: the servers decide.
#[test]
fn the_fence_takes_a_former_primary_out_of_the_writes_and_refuses_anything_else() {
    let ran = drill(
        &example(),
        "fence",
        Some("old-primary-back"),
        &["--var", "region=us-east-1"],
    );
    assert_eq!(ran.code, 0, "{}", ran.all());
    let plan = plan(&ran);
    assert!(plan.contains("Plan: 2 changes"), "{plan}");
    assert!(
        plan.contains("~ pg::fence: fence <secret US_EAST_1_DATABASE_URL> (us-east-1) (read-only, ending its client sessions)"),
        "{plan}"
    );
    has(
        &ran,
        &[
            "us-east-1's database is a writable primary on timeline 1, while eu-west-1 is the primary on timeline 2: us-east-1 is a former primary that came back",
            &format!("result next: runbook run {ROOT}/runbooks/rejoin.rhai -i {} --var region=us-east-1", example()),
        ],
    );
    lacks(&ran, &["k8s::", "dns::", "redis::"]);
    let refusals: [(Option<&str>, &str, &str); 3] = [
        (Some("old-primary-back"), "eu-west-1", "eu-west-1's database is the primary, on the newest timeline (2): the former primaries that came back are us-east-1. Nothing was changed"),
        (None, "us-east-1", "us-east-1's database is the only writable primary: fencing it would stop every write. Nothing was changed"),
        (Some("old-primary-back"), "ap-southeast-1", ""),
    ];
    for (world, region, refusal) in refusals {
        let ran = drill(
            &example(),
            "fence",
            world,
            &["--var", &format!("region={region}")],
        );
        if refusal.is_empty() {
            // A standby: nothing to fence, nothing done.
            assert_eq!(ran.code, 0, "{}", ran.all());
            has(
                &ran,
                &[
                    "it takes no writes, so there is nothing to fence",
                    "Plan: no changes",
                ],
            );
        } else {
            assert_eq!(ran.code, 1, "{region}: {}", ran.all());
            has(&ran, &[refusal]);
        }
        lacks(&ran, &["~ pg::fence"]);
    }
    // Two writable primaries on one timeline: nothing says which is current.
    let t = Test::new().file(
        "one-timeline.toml",
        "description = \"two writable primaries on timeline 1\"\n[regions.us-east-1]\ndatabase = \"primary\"\ntimeline = 1\n[regions.eu-west-1]\ndatabase = \"primary\"\ntimeline = 1\n",
    );
    let world = t.path("one-timeline.toml");
    let ran = drill(
        &example(),
        "fence",
        None,
        &[
            "--var",
            "region=us-east-1",
            "--assume",
            world.to_str().unwrap(),
        ],
    );
    assert_eq!(ran.code, 1, "{}", ran.all());
    has(
        &ran,
        &[
            "2 writable primaries (",
            ") on one timeline: nothing says which is current. Nothing was changed",
        ],
    );
}

#[test]
fn a_scenario_that_is_wrong_is_refused_naming_the_file_and_key() {
    let t = Test::new()
        .script("log(\"hello\");")
        .inventory("primary_region = \"a\"\n[regions.a]\nhealth_url = \"http://127.0.0.1:9/h\"\n")
        .file("bad-region.toml", "[regions.mars]\ndatabase = \"down\"\n")
        .file("bad-value.toml", "[regions.a]\nhealth = \"sad\"\n")
        .file("bad-key.toml", "[regions.a]\nlag = 3\n")
        .file("bad-nodes.toml", "[regions.a]\nnodes = 2\ncordoned = 3\n");
    let cases = [
        ("bad-region.toml", "scenario bad-region.toml: regions.mars: no such region in the inventory (a)"),
        ("bad-value.toml", "scenario bad-value.toml: line 2: unknown variant `sad`, expected one of `ok`, `failing`, `slow`, `down`"),
        ("bad-key.toml", "scenario bad-key.toml: line 2: unknown field `lag`"),
        ("bad-nodes.toml", "regions.a.cordoned: 3 of 2 nodes; at most all of them"),
        ("missing.toml", "scenario missing.toml: cannot read it"),
    ];
    for (file, want) in cases {
        let ran = t.exec(&[
            "run",
            "runbook.rhai",
            "-i",
            "inventory.toml",
            "--dry-run",
            "--offline",
            "--assume",
            file,
        ]);
        assert_eq!(ran.code, 2, "{file}: {}", ran.all());
        assert!(ran.stderr.contains(want), "{file}: {}", ran.stderr);
        assert!(!ran.stdout.contains("hello"), "nothing ran");
    }
    // Only an offline dry-run reads an assumed world.
    for flags in [&["--dry-run"][..], &[][..]] {
        let mut args = vec![
            "run",
            "runbook.rhai",
            "-i",
            "inventory.toml",
            "--assume",
            "bad-key.toml",
        ];
        args.extend(flags);
        let ran = t.exec(&args);
        assert_eq!(ran.code, 2, "{flags:?}: {}", ran.all());
        assert!(
            ran.stderr.contains("add --dry-run --offline"),
            "{}",
            ran.stderr
        );
        assert!(t.run_ids().is_empty(), "no run was started");
    }
}

#[test]
fn reads_answer_from_the_assumed_world_in_any_runbook() {
    // A runbook of the team's own reads the world through the same actions.
    let t = Test::new()
        .script(
            r#"
            let s = pg::status(inventory.regions.b.database_url);
            log(`b in recovery: ${s.in_recovery}, receive ${s.receive_lsn}`);
            let p = pg::status(inventory.regions.a.database_url);
            log(`a current ${p.current_lsn}`);
            try { pg::status(inventory.regions.c.database_url); } catch (e) { log(`c: ${e}`); }
            let r = http::get(#{ url: inventory.regions.b.health_url, expect_status: [200, 503] });
            log(`b health ${r.status}`);
            let d = k8s::get(#{ context: "ctx-b", kind: "deployment", name: "web" }).items[0];
            log(`b replicas ${d.spec.replicas}, ready ${d.status.readyReplicas}`);
            "#,
        )
        .inventory(
            r#"primary_region = "a"
[regions.a]
database_url = { env = "A_DB" }
[regions.b]
database_url = { env = "B_DB" }
health_url = "http://127.0.0.1:9/b"
context = "ctx-b"
deployment = "web"
app_replicas = 5
[regions.c]
database_url = "postgresql://u:hunter2@127.0.0.1:9/db"
"#,
        )
        .file(
            "world.toml",
            "[regions.b]\nlag_bytes = 4096\nhealth = \"failing\"\nready_replicas = 2\n[regions.c]\ndatabase = \"down\"\n",
        )
        .run(&["--dry-run", "--offline", "--assume", "world.toml"])
        .code(0)
        .stdout("b in recovery: true, receive 0/3000060")
        .stdout("a current 0/3001060")
        .stdout("c: pg::status failed: cannot connect: c's database does not answer (assumed by world.toml)")
        .stdout("b health 503")
        .stdout("b replicas 5, ready 2");
    let ran = t.check();
    assert!(!ran.all().contains("hunter2"), "{}", ran.all());
}

/// A switchover to the region that is the primary already plans nothing: the postcondition
/// is checked once, and it holds in the inventory's own world.
#[test]
fn a_switchover_to_the_primary_there_is_has_nothing_to_do() {
    let ran = drill(
        &example(),
        "planned-failover",
        None,
        &["--var", "target=us-east-1"],
    );
    assert_eq!(ran.code, 0, "{}", ran.all());
    has(
        &ran,
        &[
            "▶ already done",
            "us-east-1 is the primary already, and the standbys, Redis, traffic and applications follow it: nothing to do",
            "Plan: no changes",
        ],
    );
    lacks(&ran, &["approve", "announce"]);
}

#[test]
fn a_region_the_inventory_does_not_have_is_refused_before_any_change() {
    // Every variable of a shipped runbook that names a region, misspelt: refused as bad input
    // (exit 2) before anything runs, with the regions there are and the one most likely meant;
    // a list with one good region first must not change that one before the bad one is found.
    let has_regions = ", which has us-east-1, eu-west-1, ap-southeast-1";
    let cases: &[(&str, Option<&str>, &[&str], &str)] = &[
        (
            "emergency-failover",
            Some("region-down"),
            &["--var", "target=eu-wset-1"],
            "--var target=eu-wset-1: no such region in the inventory ",
        ),
        (
            "emergency-failover",
            Some("region-down"),
            &["--var", "from=us-eats-1"],
            "--var from=us-eats-1: no such region in the inventory ",
        ),
        (
            "planned-failover",
            None,
            &["--var", "target=eu-wset-1"],
            "--var target=eu-wset-1: no such region in the inventory ",
        ),
        (
            "planned-failover",
            None,
            &["--var", "target=eu-west-1", "--var", "from=us-eats-1"],
            "--var from=us-eats-1: no such region in the inventory ",
        ),
        (
            "rejoin",
            None,
            &["--var", "region=eu-wset-1"],
            "--var region=eu-wset-1: no such region in the inventory ",
        ),
        (
            "fence",
            Some("old-primary-back"),
            &["--var", "region=eu-wset-1"],
            "--var region=eu-wset-1: no such region in the inventory ",
        ),
        (
            "drain",
            None,
            &["--var", "region=eu-wset-1"],
            "--var region=eu-wset-1: no such region in the inventory ",
        ),
        (
            "rollback",
            None,
            &["--var", "regions=eu-west-1,eu-wset-1"],
            "--var regions=eu-west-1,eu-wset-1: no region eu-wset-1 in the inventory ",
        ),
        (
            "rollback",
            None,
            &[
                "--var",
                "mode=database",
                "--var",
                "backup=/tmp/x.dump",
                "--var",
                "region=eu-wset-1",
            ],
            "--var region=eu-wset-1: no such region in the inventory ",
        ),
        (
            "maintenance",
            None,
            &["--var", "regions=eu-west-1,eu-wset-1"],
            "--var regions=eu-west-1,eu-wset-1: no region eu-wset-1 in the inventory ",
        ),
        (
            "upgrade",
            None,
            &[
                "--var",
                "image=orchestrator:1.1",
                "--var",
                "regions=eu-wset-1",
            ],
            "--var regions=eu-wset-1: no region eu-wset-1 in the inventory ",
        ),
    ];
    for (runbook, scenario, args, says) in cases {
        let ran = drill(&example(), runbook, *scenario, args);
        assert_eq!(ran.code, 2, "{runbook} {args:?}:\n{}", ran.all());
        let meant = if says.contains("us-eats-1") {
            "us-east-1"
        } else {
            "eu-west-1"
        };
        has(
            &ran,
            &[
                "error: invalid parameters:",
                says,
                &format!("{has_regions} (did you mean `{meant}`?)"),
            ],
        );
        // Refused before it starts: no "starting …", no plan.
        assert!(!ran.stdout.contains("starting "), "{}", ran.all());
        lacks(&ran, &[" ~ ", "Plan:"]);
    }
    // A region named twice would be maintained, upgraded or rolled back twice.
    let ran = drill(
        &example(),
        "maintenance",
        None,
        &["--var", "regions=eu-west-1,us-east-1,eu-west-1"],
    );
    assert_eq!(ran.code, 2, "{}", ran.all());
    has(
        &ran,
        &["--var regions=eu-west-1,us-east-1,eu-west-1: eu-west-1 is named twice"],
    );
    // A mistake the servers, not the inventory, reveal stays the runbook's refusal (exit 1).
    let ran = drill(
        &example(),
        "upgrade",
        None,
        &["--var", "image=orchestrator:1.1", "--var", "container=web"],
    );
    assert_eq!(ran.code, 1, "{}", ran.all());
    has(
        &ran,
        &["the deployment has no container web (it has orchestrator); --var container=NAME names the one to upgrade. Nothing was changed"],
    );
    lacks(&ran, &[" ~ "]);
}

#[test]
fn a_cdn_in_the_inventory_is_planned_after_traffic_and_checked_before_any_change() {
    let t = Test::new();
    let base = std::fs::read_to_string(example()).unwrap();
    let path = t.path("inventory.toml").display().to_string();
    std::fs::write(
        &path,
        format!("{base}\n[cdn]\nprovider = \"cloudfront\"\ndistribution_id = \"EDIST1\"\n"),
    )
    .unwrap();
    for (runbook, scenario, args) in [
        ("emergency-failover", Some("region-down"), &[][..]),
        (
            "planned-failover",
            None,
            &["--var", "target=eu-west-1", "--var", "rejoin=false"][..],
        ),
        ("rollback", None, &[][..]),
    ] {
        let ran = drill(&path, runbook, scenario, args);
        assert_eq!(ran.code, 0, "{runbook}:\n{}", ran.all());
        let plan = plan(&ran);
        let purge = plan
            .find("~ cloudfront::invalidate: invalidate /* in CloudFront distribution EDIST1")
            .unwrap_or_else(|| panic!("{runbook}: no purge planned\n{plan}"));
        if runbook != "rollback" {
            let traffic = plan.find("~ dns::set_weights").expect("traffic moves");
            assert!(traffic < purge, "{runbook}: purge after traffic\n{plan}");
        }
    }
    std::fs::write(&path, format!("{base}\n[cdn]\nprovider = \"fastly\"\n")).unwrap();
    for runbook in ["emergency-failover", "rollback"] {
        let ran = drill(&path, runbook, Some("region-down"), &[]);
        assert_eq!(ran.code, 1, "{runbook}:\n{}", ran.all());
        has(
            &ran,
            &["inventory [cdn]: provider 'fastly' is not one of cloudfront, cloudflare. Nothing was changed"],
        );
        lacks(&ran, &["~ "]);
    }
}

/// A restore of the data empties Redis after the restore and before the applications start
/// (a cached value must not outlive the data it was read from), unless told not to; a Redis
/// that does not answer is named, not silently passed over.
#[test]
fn a_database_restore_empties_redis_before_the_applications_start() {
    let restore = [
        "--var",
        "mode=database",
        "--var",
        "backup=/backups/app.dump",
    ];
    let ran = drill(&example(), "rollback", None, &restore);
    assert_eq!(ran.code, 0, "{}", ran.all());
    has(
        &ran,
        &[
            "; Redis is emptied on us-east-1 (its replicas follow).",
            "result redis emptied: us-east-1",
        ],
    );
    let plan = plan(&ran);
    let at = |text: &str| {
        plan.find(text)
            .unwrap_or_else(|| panic!("no {text:?} in\n{plan}"))
    };
    assert!(at("\n  restore\n") < at("~ redis::flush: empty the database its URL names on <secret US_EAST_1_REDIS_URL> (us-east-1)"));
    assert!(at("~ redis::flush") < at("\n  start writes\n"));
    assert_eq!(
        plan.matches("~ redis::flush").count(),
        1,
        "only the primary\n{plan}"
    );

    let kept = drill(
        &example(),
        "rollback",
        None,
        &[&restore[..], &["--var", "flush_cache=false"]].concat(),
    );
    assert_eq!(kept.code, 0, "{}", kept.all());
    has(
        &kept,
        &["; Redis is left as it is (--var flush_cache=false)."],
    );
    lacks(&kept, &["redis::flush", "empty caches", "redis emptied"]);

    let t = Test::new().file(
        "redis-down.toml",
        "description = \"us-east-1's Redis does not answer\"\n[regions.us-east-1]\nredis = \"down\"\n",
    );
    let world = t.path("redis-down.toml");
    let silent = drill(
        &example(),
        "rollback",
        None,
        &[&restore[..], &["--assume", world.to_str().unwrap()]].concat(),
    );
    assert_eq!(silent.code, 0, "{}", silent.all());
    has(
        &silent,
        &[
            "; no Redis primary answered to be emptied (us-east-1 did not answer).",
            "warning: the Redis of us-east-1 did not answer, so it was not emptied: when it is back, empty it (redis::flush) if it is a primary",
            "result redis not emptied: us-east-1 (did not answer)",
        ],
    );
    lacks(&silent, &["~ redis::flush"]);
}

/// drain.rhai in assumed worlds: a failing region's users go to the regions in rotation that
/// serve them, only DNS changes, and each refusal changes nothing and says why.
#[test]
fn a_drain_moves_users_only_to_regions_that_serve_them() {
    let t = Test::new()
        .file(
            "eu-fails.toml",
            "[regions.eu-west-1]\nhealth = \"down\"\nready_replicas = 0\n",
        )
        .file(
            "eu-ap-fail.toml",
            "[regions.eu-west-1]\nhealth = \"down\"\n[regions.ap-southeast-1]\nhealth = \"failing\"\nready_replicas = 0\n",
        )
        .file(
            "eu-out.toml",
            "[regions.eu-west-1]\ndns_weight = 0\n",
        )
        .file(
            "eu-fails-ap-kube-down.toml",
            "[regions.eu-west-1]\nhealth = \"down\"\n[regions.ap-southeast-1]\nkubernetes = \"down\"\n",
        )
        .file(
            "eu-out-failing.toml",
            "[regions.eu-west-1]\ndns_weight = 0\nhealth = \"failing\"\n",
        );
    let world = |name: &str| t.path(name).display().to_string();
    let inv = example();
    let back = format!("runbook run {ROOT}/runbooks/drain.rhai -i {inv} --var region=eu-west-1 --var restore=true --var weight=30");
    // (world, args, exit code, what it says, the weights it sets or "" for none)
    type Case<'a> = (&'a str, Vec<&'a str>, i32, Vec<String>, &'a str);
    let cases: Vec<Case> = vec![
        ("eu-fails.toml", vec!["region=eu-west-1"], 0,
            vec![format!("result next: {back}")],
            "ap-southeast-1 0 / eu-west-1 0 / us-east-1 100"),
        ("eu-fails.toml", vec!["region=us-east-1"], 0,
            vec!["ap-southeast-1 passes its health check and has 4 ready replica(s): it takes us-east-1's users (weight 0 → 100)".into(),
                 "eu-west-1 stays in rotation though its health check fails and its application has no ready replicas (4 wanted): its users are not moved".into(),
                 "us-east-1's database stays the primary".into()],
            "ap-southeast-1 100 / eu-west-1 30 / us-east-1 0"),
        // A Kubernetes API that does not answer says nothing: the health check decides.
        ("eu-fails-ap-kube-down.toml", vec!["region=us-east-1"], 0,
            vec!["ap-southeast-1 passes its health check (its Kubernetes API does not answer): it takes us-east-1's users (weight 0 → 100)".into()],
            "ap-southeast-1 100 / eu-west-1 30 / us-east-1 0"),
        ("eu-ap-fail.toml", vec!["region=us-east-1"], 1,
            vec!["no other region can take us-east-1's users (ap-southeast-1: its health check fails and its application has no ready replicas (4 wanted); eu-west-1: its health check fails and its application has no ready replicas (4 wanted)): us-east-1 keeps its weight 100".into()],
            ""),
        ("eu-out.toml", vec!["region=eu-west-1", "restore=true"], 0,
            vec!["eu-west-1 passes its health check and has 4 ready replica(s)".into()],
            "eu-west-1 30"),
        ("eu-out-failing.toml", vec!["region=eu-west-1", "restore=true"], 1,
            vec!["eu-west-1 cannot take users back: its health check fails. Nothing was changed".into()],
            ""),
        ("eu-out.toml", vec!["region=ap-southeast-1", "restore=true"], 1,
            vec!["the inventory gives ap-southeast-1 no dns_weight: say the weight to put it back at with --var weight=N".into()],
            ""),
        ("eu-out.toml", vec!["region=ap-southeast-1", "restore=true", "weight=20"], 0,
            vec![],
            "ap-southeast-1 20"),
        ("eu-out.toml", vec!["region=eu-west-1"], 0,
            vec!["eu-west-1 is out of rotation already (DNS weight 0): nothing to do".into(), "Plan: no changes".into()],
            ""),
        ("eu-out.toml", vec!["region=eu-west-1", "weight=5"], 1,
            vec!["--var weight=5 goes with --var restore=true (a drain sets eu-west-1's weight to 0). Nothing was changed".into()],
            ""),
        ("eu-out.toml", vec!["region=mars"], 2,
            vec!["--var region=mars: no such region in the inventory ".into(), ", which has us-east-1, eu-west-1, ap-southeast-1\n".into()],
            ""),
    ];
    for (file, vars, code, says, weights) in cases {
        let w = world(file);
        let mut args = vec!["--assume", w.as_str()];
        for v in &vars {
            args.extend(["--var", v]);
        }
        let ran = drill(&inv, "drain", None, &args);
        assert_eq!(ran.code, code, "{file} {vars:?}: {}", ran.all());
        let says: Vec<&str> = says.iter().map(String::as_str).collect();
        has(&ran, &says);
        let plan = plan(&ran);
        if weights.is_empty() {
            assert!(
                !plan.contains("~ dns::set_weights"),
                "{file} {vars:?}: {plan}"
            );
        } else {
            assert!(
                plan.contains(&format!(
                    "~ dns::set_weights: set weights of orchestrator.example.com A: {weights}"
                )),
                "{file} {vars:?}: {plan}"
            );
        }
        // Only DNS changes (and the message that says so).
        lacks(&ran, &["~ k8s::", "~ pg::", "~ redis::"]);
    }

    // An inventory without [dns]: nothing to drain; one that says nothing of how to check a
    // region: put back, saying that nothing confirmed it serves users.
    let text = std::fs::read_to_string(&inv).unwrap();
    let dns = text.find("\n[dns]\n").unwrap();
    let after = dns + 1 + text[dns + 1..].find("\n[").unwrap();
    let no_dns = t.path("no-dns.toml");
    std::fs::write(&no_dns, format!("{}{}", &text[..dns], &text[after..])).unwrap();
    let ran = drill(
        no_dns.to_str().unwrap(),
        "drain",
        None,
        &["--var", "region=eu-west-1"],
    );
    assert_eq!(ran.code, 1, "{}", ran.all());
    has(&ran, &["the inventory has no [dns] table (zone and record): no weighted DNS record sends users to eu-west-1. Nothing was changed"]);
    let ap = text.find("[regions.ap-southeast-1]").unwrap();
    let end = ap + text[ap..].find("\n[").unwrap();
    let block: String = text[ap..end]
        .lines()
        .filter(|l| {
            !["context", "deployment", "health_url"]
                .iter()
                .any(|k| l.starts_with(k))
        })
        .map(|l| format!("{l}\n"))
        .collect();
    let unchecked = t.path("unchecked.toml");
    std::fs::write(
        &unchecked,
        format!("{}{block}{}", &text[..ap], &text[end..]),
    )
    .unwrap();
    let ran = drill(
        unchecked.to_str().unwrap(),
        "drain",
        None,
        &[
            "--var",
            "region=ap-southeast-1",
            "--var",
            "restore=true",
            "--var",
            "weight=20",
        ],
    );
    assert_eq!(ran.code, 0, "{}", ran.all());
    has(&ran, &["ap-southeast-1 is not checked: the inventory gives it no health_url and no application (context and deployment)"]);
    assert!(plan(&ran).contains("A: ap-southeast-1 20"), "{}", ran.all());
}
