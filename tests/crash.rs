//! Crash safety, systematically: each runbook is killed (SIGKILL) right after its Nth journal
//! write, for a sample of N (every third, and the last) of a full run of the emergency failover
//! and a smaller sample for the others (every N of each with RUNBOOK_CRASH_ALL=1), then resumed
//! until it finishes; the emergency failover also with its journal in PostgreSQL. The end state
//! must equal an uninterrupted run's, and the side effects counted at the servers must show no
//! completed write done twice: at most the one
//! action that was in flight runs again, and only if it is idempotent (a non-idempotent one is
//! decided by the operator: skipped when its effect is seen to have happened, retried when not).

use std::collections::BTreeMap;
use std::process::Command;

use runbook_stack::postgres::PgCluster;
use runbook_stack::redis::info_field;
use runbook_stack::web::Health;

use crate::runbooks::{drill, kept_archives, Drill, REGIONS};

/// The servers' write counts: Kubernetes writes per kind and region, and messages sent.
/// Evictions are left out: how many pods sit on a node when a drain runs depends on when the
/// scheduler placed the ones evicted from the previous node, so the count differs between two
/// uninterrupted runs too; each eviction is of a different pod, never a repeat.
fn effects(d: &Drill) -> BTreeMap<String, usize> {
    let mut out = BTreeMap::new();
    for k in &d.stack.kube {
        for (what, n) in k.writes() {
            if what != "POST pods/eviction" {
                out.insert(format!("{} {what}", k.region), n);
            }
        }
    }
    out.insert("messages".into(), d.stack.web.messages().len());
    out
}

fn run_with_crash(d: &Drill, runbook: &str, extra: &[&str], n: usize) -> Option<i32> {
    let args = d.args(runbook, extra);
    let out =
        d.t.command(&args)
            .env("RUNBOOK_CRASH_AFTER_WRITE", n.to_string())
            .output()
            .unwrap();
    out.status.code()
}

/// Resumes until the run finishes, deciding in-flight actions as an operator would. Returns
/// the number of resumes, or a reason it could not finish.
fn resume_to_the_end(d: &Drill) -> Result<usize, String> {
    let Some(run) = d.t.run_ids().first().cloned() else {
        return Err("no run was recorded".into());
    };
    for attempt in 1..=6 {
        let ran = d.t.exec(&["resume", &run, "--yes", "--approve"]);
        match ran.code {
            0 => return Ok(attempt),
            3 if ran.stderr.contains("was in flight") => {
                // What an operator checks: did the message arrive?
                let journal = d.t.journal(&run);
                let last_started = journal
                    .lines()
                    .rev()
                    .find(|l| l.contains(r#""event":"action_started""#))
                    .unwrap_or("");
                let text = serde_json::from_str::<serde_json::Value>(last_started)
                    .ok()
                    .and_then(|v| v["input"]["text"].as_str().map(str::to_string));
                let arrived =
                    text.is_some_and(|t| format!("{:?}", d.stack.web.messages()).contains(&t));
                let choice = if arrived {
                    "--skip-inflight"
                } else {
                    "--retry-inflight"
                };
                let again = d.t.exec(&["resume", &run, "--yes", "--approve", choice]);
                if again.code == 0 {
                    return Ok(attempt + 1);
                }
                if again.code != 3 {
                    return Err(format!(
                        "resume {choice} ended with {}: {}",
                        again.code, again.stderr
                    ));
                }
            }
            2 if ran.stderr.contains("already finished") => return Ok(attempt),
            code => return Err(format!("resume ended with {code}: {}", ran.stderr)),
        }
    }
    Err("the run did not finish after 6 resumes".into())
}

struct Case {
    runbook: &'static str,
    extra: Vec<&'static str>,
    prepare: fn(&Drill),
    check: fn(&Drill) -> Result<(), String>,
}

fn primary_fails(d: &Drill) {
    d.stack.web.set_health("us-east-1", Health::Fail);
    d.stack.pg.stop_node(d.stack.pg.node("us-east-1"));
}

fn nothing(_: &Drill) {}

fn eu_is_primary(d: &Drill) -> Result<(), String> {
    let checks = [
        (
            d.psql("eu-west-1", "SELECT pg_is_in_recovery()"),
            "f".to_string(),
            "eu-west-1 database primary",
        ),
        (
            info_field(d.stack.redis.node("eu-west-1"), "role").unwrap_or_default(),
            "master".into(),
            "eu-west-1 Redis primary",
        ),
        (
            format!("{:?}", d.stack.moto.weights()),
            r#"[("ap-southeast-1", 0), ("eu-west-1", 100), ("us-east-1", 0)]"#.into(),
            "DNS weights",
        ),
        (d.replicas("eu-west-1"), "3".into(), "eu-west-1 replicas"),
    ];
    for (got, want, what) in checks {
        if got != want {
            return Err(format!("{what}: {got} (want {want})"));
        }
    }
    Ok(())
}

fn maintained(d: &Drill) -> Result<(), String> {
    for region in ["eu-west-1", "ap-southeast-1"] {
        let cordoned = d.kubectl(
            region,
            &[
                "get",
                "nodes",
                "-o",
                "jsonpath={.items[*].spec.unschedulable}",
            ],
        );
        if cordoned.contains("true") {
            return Err(format!("{region} still has cordoned nodes"));
        }
    }
    let w = format!("{:?}", d.stack.moto.weights());
    if w != r#"[("ap-southeast-1", 0), ("eu-west-1", 0), ("us-east-1", 100)]"# {
        return Err(format!("weights not restored: {w}"));
    }
    Ok(())
}

/// Runs the sweep for one case over the crash points `points` (all of them when None).
/// A PostgreSQL server for journal stores: each drill its own database in it, so that each
/// crash point starts from an empty store.
struct Stores {
    _dir: tempfile::TempDir,
    cluster: PgCluster,
    made: std::cell::Cell<usize>,
}

impl Stores {
    fn start() -> Stores {
        let dir = tempfile::tempdir().unwrap();
        let cluster =
            PgCluster::start(&dir.path().join("pg"), &["store"]).expect("PostgreSQL starts");
        Stores {
            _dir: dir,
            cluster,
            made: Default::default(),
        }
    }

    /// The URL of a new, empty database.
    fn fresh(&self) -> String {
        let n = self.made.get() + 1;
        self.made.set(n);
        let node = &self.cluster.nodes[0];
        self.cluster
            .psql(node, &format!("CREATE DATABASE journal_{n}"))
            .expect("a database for the store");
        let url = node.url();
        format!("{}/journal_{n}", url.trim_end_matches("/postgres"))
    }
}

/// A drill whose runs keep their journal in `stores` (a database of their own), or in the
/// test's directory.
fn drill_in(stores: Option<&Stores>) -> Drill {
    let mut d = drill();
    if let Some(stores) = stores {
        d.t.set_env("RUNBOOK_STORE", &stores.fresh());
    }
    d
}

fn sweep(case: &Case, points: Option<&[usize]>) -> Vec<String> {
    sweep_in(case, points, None)
}

fn sweep_in(case: &Case, points: Option<&[usize]>, stores: Option<&Stores>) -> Vec<String> {
    // The reference: an uninterrupted run, its journal length and its side effects.
    let reference = drill_in(stores);
    (case.prepare)(&reference);
    let ran = reference.run(case.runbook, &case.extra);
    assert_eq!(
        ran.code,
        0,
        "{}: the uninterrupted run failed\n{}",
        case.runbook,
        ran.all()
    );
    (case.check)(&reference)
        .unwrap_or_else(|e| panic!("{}: the uninterrupted run's end state: {e}", case.runbook));
    let writes = reference.t.journal(&reference.t.only_run()).lines().count();
    let clean = effects(&reference);
    drop(reference);

    let all: Vec<usize> = (1..=writes).collect();
    // RUNBOOK_CRASH_ALL=1: every crash point of the sampled cases too (the long sweep).
    let points = match points {
        Some(p) if std::env::var_os("RUNBOOK_CRASH_ALL").is_none() => {
            // A sample always ends with the last write (the run's end record).
            let mut sample: Vec<usize> = p.iter().copied().filter(|n| *n < writes).collect();
            sample.push(writes);
            sample
        }
        _ => all,
    };
    let mut failures = Vec::new();
    println!(
        "{}: {} journal writes in a full run; crash points tried: {}",
        case.runbook,
        writes,
        points.len()
    );
    for n in points {
        let d = drill_in(stores);
        (case.prepare)(&d);
        let code = run_with_crash(&d, case.runbook, &case.extra, n);
        let outcome = if code == Some(0) {
            Ok(0)
        } else {
            resume_to_the_end(&d)
        };
        let verdict = outcome.and_then(|resumes| {
            (case.check)(&d)?;
            let got = effects(&d);
            for (what, count) in &got {
                let before = clean.get(what).copied().unwrap_or(0);
                if *count > before + 1 || (what == "messages" && *count != before) {
                    return Err(format!(
                        "{what}: {count} after the crash, {before} in an uninterrupted run"
                    ));
                }
            }
            let repeated: usize = got
                .iter()
                .map(|(w, c)| c.saturating_sub(clean.get(w).copied().unwrap_or(0)))
                .sum();
            if repeated > 1 {
                return Err(format!("{repeated} writes repeated: {got:?} vs {clean:?}"));
            }
            Ok(resumes)
        });
        match verdict {
            Ok(resumes) => println!(
                "  {} × crash after write {n:>3} → pass ({resumes} resume(s))",
                case.runbook
            ),
            Err(e) => {
                println!("  {} × crash after write {n:>3} → FAIL: {e}", case.runbook);
                failures.push(format!("{} at write {n}: {e}", case.runbook));
            }
        }
    }
    failures
}

fn emergency() -> Case {
    Case {
        runbook: "emergency-failover",
        extra: vec!["--var", "check_interval=20ms"],
        prepare: primary_fails,
        check: eu_is_primary,
    }
}

/// Every third crash point (1, 4, 7, ...: a step's start, an action's start and its finish
/// records all come up, since the stride is odd) and the last write: about a third of the full sweep's
/// time in CI. `RUNBOOK_CRASH_ALL=1` tries every point.
#[test]
fn crash_sweep_emergency_failover() {
    let points: Vec<usize> = (1..=400).step_by(3).collect();
    let failures = sweep(&emergency(), Some(&points));
    assert!(failures.is_empty(), "{failures:#?}");
}

/// The same with the journal in PostgreSQL, where the records that guard nothing go out
/// pipelined, unanswered: killed after any write, the run resumes from what the store holds
/// and ends as an uninterrupted one, no completed change done twice. Every seventh point.
#[test]
fn crash_sample_emergency_failover_with_the_journal_in_postgres() {
    let stores = Stores::start();
    let points: Vec<usize> = (2..=400).step_by(7).collect();
    let failures = sweep_in(&emergency(), Some(&points), Some(&stores));
    assert!(failures.is_empty(), "{failures:#?}");
}

#[test]
fn crash_sample_planned_failover() {
    let case = Case {
        runbook: "planned-failover",
        extra: vec!["--var", "target=eu-west-1", "--yes"],
        prepare: nothing,
        check: eu_is_primary,
    };
    let failures = sweep(
        &case,
        Some(&[
            1, 5, 9, 13, 17, 21, 25, 29, 33, 37, 41, 45, 49, 53, 57, 61, 65,
        ]),
    );
    assert!(failures.is_empty(), "{failures:#?}");
}

#[test]
fn crash_sample_maintenance() {
    let case = Case {
        runbook: "maintenance",
        extra: vec![
            "--var",
            "window=100ms",
            "--var",
            "settle=100ms",
            "--var",
            "regions=eu-west-1,ap-southeast-1",
        ],
        prepare: nothing,
        check: maintained,
    };
    let failures = sweep(&case, Some(&[2, 7, 12, 17, 22, 27, 32, 37, 42, 47, 52, 57]));
    assert!(failures.is_empty(), "{failures:#?}");
}

/// The deployment's first container's `field` (a jsonpath below it) in a region.
fn container(d: &Drill, region: &str, field: &str) -> String {
    d.deployment(region, &format!("spec.template.spec.containers[0].{field}"))
}

/// A release that went wrong everywhere: a new revision in every region.
fn bad_release(d: &Drill) {
    for region in REGIONS {
        d.kubectl(
            region,
            &["set", "env", "deploy/orchestrator", "FEATURE=broken"],
        );
    }
}

fn rolled_back(d: &Drill) -> Result<(), String> {
    for region in REGIONS {
        let env = container(d, region, "env[*].name");
        if env.contains("FEATURE") {
            return Err(format!("{region} still runs the bad release ({env})"));
        }
    }
    Ok(())
}

fn upgraded(d: &Drill) -> Result<(), String> {
    for region in REGIONS {
        let image = container(d, region, "image");
        if image != "orchestrator:1.1" {
            return Err(format!("{region} runs {image}"));
        }
    }
    Ok(())
}

/// rollout_undo is not idempotent: a crash with it in flight is the operator's decision,
/// and a crash anywhere must not roll a region back twice (back onto the bad release).
#[test]
fn crash_sample_rollback() {
    let case = Case {
        runbook: "rollback",
        extra: vec![],
        prepare: bad_release,
        check: rolled_back,
    };
    let failures = sweep(&case, Some(&[2, 8, 14, 20, 26, 32, 38, 44]));
    assert!(failures.is_empty(), "{failures:#?}");
}

/// A data rollback: 50 rows archived, 40 of them deleted since.
fn damaged_data(d: &Drill) {
    d.damaged_data(&d.t.path("app.dump"));
}

fn restored(d: &Drill) -> Result<(), String> {
    for region in REGIONS {
        let rows = d.psql(region, "SELECT count(*) FROM accounts");
        if rows != "50" {
            return Err(format!("{region} has {rows} rows"));
        }
    }
    let fenced = d.psql("us-east-1", "SHOW default_transaction_read_only");
    if fenced != "off" {
        return Err(format!("the primary is still read-only ({fenced})"));
    }
    let replicas: Vec<String> = REGIONS.iter().map(|r| d.replicas(r)).collect();
    if replicas != ["3", "2", "2"] {
        return Err(format!("replicas {replicas:?}"));
    }
    let kept = kept_archives(&d.t.path(""));
    if kept.len() != 1 {
        return Err(format!("kept: {kept:?}"));
    }
    Ok(())
}

/// A database restore killed anywhere — around the write stop, the dump of what it replaces,
/// the restore itself (one transaction: run again without asking) — resumes to the archive's
/// rows in every region, writes let in again, every application back, one kept archive.
#[test]
fn crash_sample_database_rollback() {
    let case = Case {
        runbook: "rollback",
        extra: vec![
            "--var",
            "mode=database",
            "--var",
            "backup=app.dump",
            "--yes",
        ],
        prepare: damaged_data,
        check: restored,
    };
    let failures = sweep(&case, Some(&[33, 37, 41, 43, 46, 47, 54, 79]));
    assert!(failures.is_empty(), "{failures:#?}");
}

/// A crash during an upgrade, around its patches and its durable bakes, resumes to every
/// region on the new image, none patched twice.
#[test]
fn crash_sample_upgrade() {
    let case = Case {
        runbook: "upgrade",
        extra: vec!["--var", "image=orchestrator:1.1", "--var", "bake=200ms"],
        prepare: nothing,
        check: upgraded,
    };
    let failures = sweep(&case, Some(&[3, 11, 19, 27, 35, 43, 51, 59]));
    assert!(failures.is_empty(), "{failures:#?}");
}

/// Also kill right after a side effect returned but before its result was journaled: the
/// action is then in flight on resume although it took effect.
#[test]
fn crash_after_each_side_effect_of_the_emergency_failover() {
    let mut failures = Vec::new();
    for n in 1..=12 {
        let d = drill();
        primary_fails(&d);
        let args = d.args("emergency-failover", &["--var", "check_interval=20ms"]);
        let out =
            d.t.command(&args)
                .env("RUNBOOK_CRASH_AFTER_EFFECT", n.to_string())
                .output()
                .unwrap();
        let verdict = if out.status.code() == Some(0) {
            Ok(0)
        } else {
            resume_to_the_end(&d)
        }
        .and_then(|r| eu_is_primary(&d).map(|()| r));
        let messages = d.stack.web.messages().len();
        match verdict {
            Ok(r) if messages == 2 => {
                println!("  emergency-failover × crash after effect {n:>2} → pass ({r} resume(s))")
            }
            Ok(_) => failures.push(format!("effect {n}: {messages} messages, want 2")),
            Err(e) => failures.push(format!("effect {n}: {e}")),
        }
    }
    assert!(failures.is_empty(), "{failures:#?}");
    let _ = Command::new("true").status();
}
