//! `runbook watch` on the local stack: flapping triggers nothing, a real failure is failed over
//! once with the observations in the run's journal, a second failure before `--ack` (and within
//! the cooldown) only alerts, a standby too far behind is not promoted, `--dry-run` changes
//! nothing, and of two watchers exactly one acts — the other takes over when it dies.

use std::fs::File;
use std::process::{Child, Stdio};
use std::time::Duration;

use runbook_stack::web::Health;

use crate::runbooks::{drill, Drill};
use crate::support::{assert_says, kill9, wait_for};

const ROOT: &str = env!("CARGO_MANIFEST_DIR");

/// A watcher in the background, its output in `NAME.out`.
struct Watcher {
    child: Child,
    out: std::path::PathBuf,
}

impl Watcher {
    fn start(d: &Drill, name: &str, extra: &[&str]) -> Watcher {
        Watcher::start_with(d, name, extra, None)
    }

    /// With a journal store (`RUNBOOK_STORE`).
    fn start_with(d: &Drill, name: &str, extra: &[&str], store: Option<&str>) -> Watcher {
        let runbook = format!("{ROOT}/runbooks/emergency-failover.rhai");
        Watcher::start_runbook(d, name, &runbook, extra, store)
    }

    /// Running `runbook` when the rule fires.
    fn start_runbook(
        d: &Drill,
        name: &str,
        runbook: &str,
        extra: &[&str],
        store: Option<&str>,
    ) -> Watcher {
        let out = d.t.path(&format!("{name}.out"));
        let file = File::create(&out).unwrap();
        let mut args: Vec<String> = vec![
            "watch".into(),
            "-i".into(),
            d.inventory.display().to_string(),
            "--runbook".into(),
            runbook.into(),
            "--interval".into(),
            "300ms".into(),
        ];
        args.extend(extra.iter().map(|s| s.to_string()));
        let mut cmd = d.t.command(&args);
        if let Some(url) = store {
            cmd.env("RUNBOOK_STORE", url);
        }
        let child = cmd
            .stdout(Stdio::from(file.try_clone().unwrap()))
            .stderr(Stdio::from(file))
            .spawn()
            .expect("runbook watch starts");
        Watcher { child, out }
    }

    fn output(&self) -> String {
        std::fs::read_to_string(&self.out).unwrap_or_default()
    }

    fn wait_for(&self, text: &str, limit: Duration) {
        assert!(
            wait_for(limit, || self.output().contains(text)),
            "the watcher never said {text:?}:\n{}",
            self.output()
        );
    }

    /// SIGTERM, as a service manager stops it: it exits cleanly.
    fn stop(mut self) -> String {
        unsafe {
            libc::kill(self.child.id() as i32, libc::SIGTERM);
        }
        let ok = wait_for(Duration::from_secs(10), || {
            self.child.try_wait().ok().flatten().is_some()
        });
        if !ok {
            kill9(&mut self.child);
            panic!("the watcher did not stop on SIGTERM:\n{}", self.output());
        }
        let status = self.child.wait().unwrap();
        assert!(status.success(), "{status:?}\n{}", self.output());
        self.output()
    }
}

impl Drop for Watcher {
    fn drop(&mut self) {
        if self.child.try_wait().ok().flatten().is_none() {
            kill9(&mut self.child);
        }
    }
}

/// The start of a failover runbook of a test's own: the parameters the watcher passes, and a
/// first change.
const FAILOVER_START: &str = r#"let p = params(#{
    from: #{ type: "string", default: "", doc: "the failing region" },
    check_interval: #{ type: "string", default: "1s", doc: "unused" },
});
step("fence", || shell::run(#{ argv: ["true"] }));
"#;

fn fail_region(d: &Drill, region: &str) {
    d.stack.web.set_health(region, Health::Fail);
    d.stack.pg.stop_node(d.stack.pg.node(region));
}

/// The region's health endpoint flaps for a few seconds (failing and passing in turn), then
/// stays healthy; its database is fine throughout.
fn flap(d: &Drill, region: &str) {
    // By answers, not by time: a health endpoint failing every other 300 ms was seen failing
    // 5 times in a row by a watcher whose observations, slowed by a loaded machine, came
    // 600 ms apart.
    d.stack.web.set_health(region, Health::Flap);
    std::thread::sleep(Duration::from_millis(3600));
    d.stack.web.set_health(region, Health::Ok);
    std::thread::sleep(Duration::from_secs(1));
}

fn first_record(d: &Drill, run: &str) -> serde_json::Value {
    serde_json::from_str(d.t.journal(run).lines().next().unwrap()).unwrap()
}

#[test]
fn flapping_triggers_nothing_a_real_failure_is_failed_over_once_then_held_until_acknowledged() {
    let d = drill();
    let w = Watcher::start(&d, "w", &[]);
    w.wait_for("all quiet", Duration::from_secs(20));

    flap(&d, "us-east-1");
    assert!(
        d.t.run_ids().is_empty(),
        "nothing was started:\n{}",
        w.output()
    );
    assert!(!w.output().contains("FAILOVER"), "{}", w.output());

    // A real failure: the database stops and the health endpoint fails.
    fail_region(&d, "us-east-1");
    assert!(
        wait_for(Duration::from_secs(30), || {
            d.t.run_ids().len() == 1 && d.t.journal(&d.t.run_ids()[0]).contains("run_finished")
        }),
        "no failover finished:\n{}",
        w.output()
    );
    assert_eq!(d.psql("eu-west-1", "SELECT pg_is_in_recovery()"), "f");
    let run = d.t.only_run();
    let start = first_record(&d, &run);
    assert_eq!(start["operator"], "runbook watch");
    assert_eq!(start["params"]["from"], "us-east-1");
    let trigger = &start["trigger"];
    assert_eq!(trigger["region"], "us-east-1");
    let signals = trigger["signals"].to_string();
    assert!(
        signals.contains("health failing") && signals.contains("database unreachable"),
        "{signals}"
    );
    assert_eq!(
        trigger["observation"]["regions"]["us-east-1"]["database"],
        "unreachable"
    );
    let report = d.report(&run, "finished");
    assert!(
        report.contains("| **Started by** | runbook watch when us-east-1's health failing"),
        "{report}"
    );

    // The new primary fails too: nobody acknowledged the first failover, so only an alert.
    fail_region(&d, "eu-west-1");
    w.wait_for("nobody has acknowledged it yet", Duration::from_secs(20));
    assert_eq!(d.t.run_ids().len(), 1, "{}", w.output());
    // The alert reaches Slack just after the watcher says it.
    let alerted = "eu-west-1 would be failed over, but an automatic failover ran and nobody has acknowledged it yet";
    assert!(
        wait_for(Duration::from_secs(5), || format!(
            "{:?}",
            d.stack.web.messages()
        )
        .contains(alerted)),
        "{:?}",
        d.stack.web.messages()
    );
    // Acknowledged, but within the cooldown: still held.
    let ack =
        d.t.exec(&["watch", "--ack", "-i", d.inventory.to_str().unwrap()]);
    assert_eq!(ack.code, 0, "{}", ack.all());
    assert!(
        ack.stdout
            .contains(&format!("acknowledged the automatic failover {run}")),
        "{}",
        ack.stdout
    );
    assert!(d.t.journal(&run).contains("watch_acknowledged"));
    w.wait_for("within the cooldown", Duration::from_secs(20));
    assert_eq!(d.t.run_ids().len(), 1);
    // A hold that lasts is one alert per reason, not one each observation.
    std::thread::sleep(Duration::from_secs(2));
    let slack = d.slack();
    for reason in ["nobody has acknowledged it yet", "within the cooldown"] {
        let alerts = slack.iter().filter(|m| m.contains(reason)).count();
        assert_eq!(alerts, 1, "{reason}: {slack:#?}");
    }
    let again =
        d.t.exec(&["watch", "--ack", "-i", d.inventory.to_str().unwrap()]);
    assert!(
        again.stdout.contains("already acknowledged"),
        "{}",
        again.all()
    );
    w.stop();
}

/// The database's state as a client sees it: "writable", "fenced" (read-only) or "standby".
fn role(d: &Drill, region: &str) -> String {
    d.psql(
        region,
        "SELECT CASE WHEN pg_is_in_recovery() THEN 'standby' WHEN current_setting('default_transaction_read_only') = 'on' THEN 'fenced' ELSE 'writable' END",
    )
}

#[test]
fn a_former_primary_that_comes_back_writable_is_fenced_or_with_fencing_off_alerted() {
    let d = drill();
    // An emergency failover while us-east-1 is down: it could not be fenced.
    fail_region(&d, "us-east-1");
    let failover = d.run("emergency-failover", &["--var", "check_interval=20ms"]);
    assert_eq!(failover.code, 0, "{}", failover.all());
    // Its database comes back by itself, writable on its old timeline.
    d.stack.pg.start_node(d.stack.pg.node("us-east-1")).unwrap();
    assert_eq!(role(&d, "us-east-1"), "writable");

    // Fencing turned off: the team is told what to do, nothing is changed.
    let inv = std::fs::read_to_string(&d.inventory).unwrap();
    std::fs::write(
        &d.inventory,
        format!("{inv}\n[watch]\nfence_returned = false\n"),
    )
    .unwrap();
    let w = Watcher::start(&d, "off", &[]);
    w.wait_for(
        "RETURNED us-east-1: a former primary that came back",
        Duration::from_secs(20),
    );
    w.wait_for("(5 observations in a row)", Duration::from_secs(20));
    let rejoin = format!(
        "{ROOT}/runbooks/rejoin.rhai -i {} --var region=us-east-1",
        d.inventory.display()
    );
    let alerted = |text: &str| {
        wait_for(Duration::from_secs(5), || {
            d.slack()
                .iter()
                .any(|m| m.contains(text) && m.contains(&rejoin))
        })
    };
    assert!(
        alerted(
            "runbook watch: us-east-1's database came back writable beside the primary eu-west-1"
        ),
        "{:?}",
        d.slack()
    );
    let out = w.stop();
    let told = d.slack();
    let alerts = told
        .iter()
        .filter(|m| m.contains("came back writable beside the primary eu-west-1"))
        .count();
    assert_eq!(alerts, 1, "one alert, however long it lasts: {told:#?}");
    assert!(
        out.contains("alerted, not fenced ([watch] fence_returned = false)"),
        "{out}"
    );
    assert_eq!(role(&d, "us-east-1"), "writable");
    assert_eq!(d.t.run_ids().len(), 1, "no run started:\n{out}");

    // Fencing on (the default): after three observations the fence runbook runs.
    std::fs::write(&d.inventory, &inv).unwrap();
    let w = Watcher::start(&d, "on", &[]);
    w.wait_for(
        "a former primary that comes back writable is fenced after 3 observations",
        Duration::from_secs(20),
    );
    w.wait_for(
        "FENCE us-east-1: a former primary that came back",
        Duration::from_secs(20),
    );
    w.wait_for(
        "the fence of us-east-1 ended; watching",
        Duration::from_secs(30),
    );
    assert_eq!(role(&d, "us-east-1"), "fenced");
    assert_eq!(role(&d, "eu-west-1"), "writable");
    // A client that still reaches it cannot write there any more; what it holds stays for
    // the rejoin.
    let refused = d
        .stack
        .pg
        .psql(d.stack.pg.node("us-east-1"), "CREATE TABLE lost (x int)");
    assert!(
        refused
            .as_ref()
            .is_err_and(|e| e.to_string().contains("read-only transaction")),
        "{refused:?}"
    );
    // The fence is a run of its own, the watcher its operator, the observation in its journal.
    let fence = d.t.newest_run();
    let start = first_record(&d, &fence);
    assert_eq!(start["operator"], "runbook watch");
    assert_eq!(start["params"]["region"], "us-east-1");
    assert_eq!(start["trigger"]["action"], "fence");
    let report = d.report(&fence, "finished");
    assert!(
        report.contains("runbook watch when us-east-1's database writable on timeline 1 beside the primary eu-west-1 on timeline 2"),
        "{report}"
    );
    assert!(
        alerted("us-east-1's database came back writable beside the primary eu-west-1: fenced"),
        "{:?}",
        d.slack()
    );
    // Fenced, all is quiet: one fence, however long the watcher goes on.
    w.wait_for("all quiet", Duration::from_secs(10));
    assert_eq!(d.t.run_ids().len(), 2, "{}", w.output());
    w.stop();
    // A fence is not an automatic failover: there is none to acknowledge.
    let ack =
        d.t.exec(&["watch", "--ack", "-i", d.inventory.to_str().unwrap()]);
    assert_eq!(ack.code, 2, "{}", ack.all());
    assert!(
        ack.stderr.contains("no automatic failover"),
        "{}",
        ack.all()
    );
}

#[test]
fn a_dry_run_watcher_changes_nothing_and_a_standby_too_far_behind_is_not_promoted() {
    let d = drill();
    let w = Watcher::start(&d, "dry", &["--dry-run"]);
    w.wait_for("all quiet", Duration::from_secs(20));
    fail_region(&d, "us-east-1");
    w.wait_for("Plan:", Duration::from_secs(30));
    let out = w.stop();
    assert!(out.contains("FAILOVER us-east-1"), "{out}");
    assert!(
        out.contains("~ pg::promote"),
        "the plan names the promotion:\n{out}"
    );
    assert!(d.t.run_ids().is_empty(), "a dry-run journals nothing");
    assert_eq!(d.psql("eu-west-1", "SELECT pg_is_in_recovery()"), "t");
    assert!(
        d.stack.kube.iter().all(|k| k.writes().is_empty()),
        "no Kubernetes write"
    );

    // The runbook's loss limit, through [watch] vars: every standby is too far behind.
    let inv = std::fs::read_to_string(&d.inventory).unwrap();
    std::fs::write(
        &d.inventory,
        format!(
            "{inv}\n[watch]\nvars = {{ max_lag_bytes = \"-1\", check_interval = \"100ms\" }}\n"
        ),
    )
    .unwrap();
    let w = Watcher::start(&d, "real", &[]);
    assert!(
        wait_for(Duration::from_secs(30), || {
            d.t.run_ids()
                .first()
                .is_some_and(|id| d.t.journal(id).contains("run_failed"))
        }),
        "{}",
        w.output()
    );
    // The runbook's failure handler told the team where it stopped; the watcher does not
    // say it a second time.
    w.wait_for("did not finish: ", Duration::from_secs(15));
    let out = w.stop();
    assert!(
        out.contains("(the run told the team on Slack itself)"),
        "{out}"
    );
    let slack = d.slack();
    assert_eq!(
        slack
            .iter()
            .filter(|m| m
                .contains(":x: emergency failover from us-east-1 FAILED at step 'choose target'"))
            .count(),
        1,
        "{slack:?}"
    );
    assert!(
        !slack.iter().any(|m| m.contains("did not finish")),
        "{slack:?}"
    );
    assert_eq!(
        d.psql("eu-west-1", "SELECT pg_is_in_recovery()"),
        "t",
        "nothing was promoted"
    );
    assert_eq!(d.psql("ap-southeast-1", "SELECT pg_is_in_recovery()"), "t");
    let journal = d.t.journal(&d.t.only_run());
    assert!(
        journal.contains("more than max_lag_bytes -1 bytes"),
        "{journal}"
    );
}

#[test]
fn of_two_watchers_one_acts_and_the_other_takes_over_when_it_dies() {
    let d = drill();
    // One source is enough here, so only hysteresis keeps a flapping endpoint from acting.
    let inv = std::fs::read_to_string(&d.inventory).unwrap();
    std::fs::write(
        &d.inventory,
        format!("{inv}\n[watch]\nagree = 1\nhealth_failures = 5\n"),
    )
    .unwrap();
    let mut a = Watcher::start(&d, "a", &[]);
    a.wait_for("all quiet", Duration::from_secs(20));
    flap(&d, "us-east-1");
    assert!(
        d.t.run_ids().is_empty(),
        "flapping started nothing:\n{}",
        a.output()
    );
    let b = Watcher::start(&d, "b", &[]);
    b.wait_for("another watcher is active", Duration::from_secs(20));
    assert!(
        !b.output().contains("all quiet"),
        "b only waits:\n{}",
        b.output()
    );
    // It names the active watcher's process (not as a run of its own still running).
    let waiting = b.output();
    assert!(
        waiting.contains("another watcher is active (pid ")
            && waiting.contains(&format!("pid {}", a.child.id()))
            && !waiting.contains("still running in another process"),
        "{waiting}"
    );
    kill9(&mut a.child);
    b.wait_for(
        "this watcher is now the active one",
        Duration::from_secs(10),
    );
    b.wait_for("all quiet", Duration::from_secs(10));
    fail_region(&d, "us-east-1");
    assert!(
        wait_for(Duration::from_secs(30), || {
            d.t.run_ids()
                .first()
                .is_some_and(|id| d.t.journal(id).contains("run_finished"))
        }),
        "{}",
        b.output()
    );
    std::thread::sleep(Duration::from_secs(1));
    assert_eq!(d.t.run_ids().len(), 1, "exactly one failover");
    b.stop();
}

#[test]
fn a_watcher_refuses_bad_rules_and_missing_secrets_before_watching() {
    let t = crate::support::Test::new()
        .file(
            "bad.toml",
            "[regions.a]\nhealth_url = \"http://127.0.0.1:9/h\"\n[watch]\nhealth_fails = 2\n",
        )
        .file(
            "secret.toml",
            "[regions.a]\ndatabase_url = { env = \"A_DATABASE_URL\" }\n",
        )
        .file(
            "ok.toml",
            "[regions.a]\nhealth_url = \"http://127.0.0.1:9/h\"\n",
        )
        .file(
            "vars.toml",
            "[regions.a]\nhealth_url = \"http://127.0.0.1:9/h\"\n[watch]\nvars = { max_lag = \"1MB\" }\n",
        )
        .file(
            "r.rhai",
            r#"let p = params(#{ from: #{ type: "string" }, check_interval: #{ type: "string" } }); log(1);"#,
        )
        .file("none.rhai", "log(1);")
        .file("broken.rhai", "let x = ;")
        .file(
            "typo.rhai",
            r#"let p = params(#{ from: #{ type: "string" } }); pg::promte(#{ url: "x" });"#,
        )
        .file(
            "lag.rhai",
            r#"let p = params(#{ from: #{ type: "string" }, max_lag: #{ type: "int", default: 0 } });"#,
        )
        .file(
            "to.toml",
            "[regions.a]\nhealth_url = \"http://127.0.0.1:9/h\"\n[regions.eu]\n[watch]\nvars = { target = \"ue\" }\n",
        )
        .file(
            "to.rhai",
            r#"let p = params(#{ from: #{ type: "region" }, target: #{ type: "region", default: "" } });"#,
        );
    // The runbook the rule would start is checked now, not when a region fails: it compiles,
    // passes lint and accepts what the watcher passes it (`from`, the [watch] vars).
    let cases: [(&[&str], &str); 10] = [
        (
            &["watch", "-i", "ok.toml", "--runbook", "none.rhai"],
            "--runbook none.rhai: it would be refused when the rule fires for a:\n  unknown parameter --var check_interval: it declares none\n  unknown parameter --var from: it declares none\ndeclare what the watcher passes in its params(..), or change the inventory's [watch] vars",
        ),
        (
            &["watch", "-i", "ok.toml", "--runbook", "broken.rhai"],
            "broken.rhai does not compile",
        ),
        (
            &["watch", "-i", "ok.toml", "--runbook", "typo.rhai"],
            "promte",
        ),
        (
            &["watch", "-i", "vars.toml", "--runbook", "lag.rhai"],
            "--runbook lag.rhai: it would be refused when the rule fires for a:\n  --var max_lag=1MB: expected a whole number",
        ),
        (
            &["watch", "-i", "to.toml", "--runbook", "to.rhai"],
            "--runbook to.rhai: it would be refused when the rule fires for a:\n  --var target=ue: no such region in the inventory to.toml, which has a, eu (did you mean `eu`?)",
        ),
        (
            &["watch", "-i", "bad.toml", "--runbook", "r.rhai"],
            "inventory bad.toml: [watch]: unknown field `health_fails`",
        ),
        (
            &["watch", "-i", "secret.toml", "--runbook", "r.rhai"],
            "A_DATABASE_URL",
        ),
        (
            &["watch", "-i", "ok.toml", "--runbook", "missing.rhai"],
            "--runbook missing.rhai: no such file (from /",
        ),
        (
            &["watch", "-i", "ok.toml", "--interval", "5ms"],
            "at least 100ms",
        ),
        (
            &["watch", "--ack", "-i", "ok.toml"],
            "no automatic failover of ok in",
        ),
    ];
    for (args, want) in cases {
        let ran = t.exec(args);
        assert_eq!(ran.code, 2, "{args:?}: {}", ran.all());
        assert!(ran.stderr.contains(want), "{args:?}: {}", ran.stderr);
    }
    // --once: one observation, its table and decision, then exit.
    let once = t.exec(&["watch", "-i", "ok.toml", "--runbook", "r.rhai", "--once"]);
    assert_eq!(once.code, 0, "{}", once.all());
    assert!(once.stdout.contains("FAIL no answer"), "{}", once.stdout);
    assert!(
        once.stdout.contains("all quiet"),
        "no primary known, nothing to fail over: {}",
        once.stdout
    );
}

#[test]
fn watchers_sharing_a_postgres_store_elect_one_through_it() {
    let d = drill();
    // The store: a database of its own on the stack's primary server.
    d.psql("us-east-1", "CREATE DATABASE runbook_store");
    let node = d.stack.pg.node("us-east-1");
    let url = format!(
        "postgres://postgres:{}@127.0.0.1:{}/runbook_store",
        runbook_stack::postgres::PASSWORD,
        node.port
    );
    let mut a = Watcher::start_with(&d, "pa", &[], Some(&url));
    a.wait_for("all quiet", Duration::from_secs(20));
    let b = Watcher::start_with(&d, "pb", &[], Some(&url));
    b.wait_for("another watcher is active", Duration::from_secs(20));
    assert!(!b.output().contains("all quiet"), "{}", b.output());
    assert!(
        !b.output().contains(runbook_stack::postgres::PASSWORD),
        "{}",
        b.output()
    );
    // Its session gone with its process, the lock is free: b takes over.
    kill9(&mut a.child);
    b.wait_for(
        "this watcher is now the active one",
        Duration::from_secs(15),
    );
    b.wait_for("all quiet", Duration::from_secs(10));
    b.stop();
    assert!(
        !d.t.path(".runbook").exists(),
        "the directory store was not used"
    );
}

#[test]
fn approval_mode_waits_for_a_person_and_abandons_the_run_past_the_deadline() {
    let d = drill();
    let inv = std::fs::read_to_string(&d.inventory).unwrap();
    std::fs::write(
        &d.inventory,
        format!("{inv}\n[watch]\napprove_within_s = 3\ncooldown_s = 0\nvars = {{ check_interval = \"100ms\" }}\n"),
    )
    .unwrap();
    // The state directory spelled another way: the alert's command must carry it.
    let w = Watcher::start(&d, "approval", &["--state-dir", "./.runbook"]);
    w.wait_for("all quiet", Duration::from_secs(20));
    fail_region(&d, "us-east-1");
    w.wait_for("waits for approval", Duration::from_secs(30));
    // Nobody approves: abandoned at the deadline, nothing changed.
    w.wait_for("not approved within 3 s", Duration::from_secs(15));
    let first = d.t.only_run();
    assert!(d.t.journal(&first).contains("run_abandoned"));
    assert_eq!(d.psql("eu-west-1", "SELECT pg_is_in_recovery()"), "t");
    let messages = format!("{:?}", d.stack.web.messages());
    assert!(
        messages.contains(&format!(
            "runbook resume {first} --approve --state-dir ./.runbook"
        )),
        "{messages}"
    );
    // Held until acknowledged; then (no cooldown) it asks again, and this time a person says yes.
    w.wait_for("nobody has acknowledged it yet", Duration::from_secs(15));
    let ack =
        d.t.exec(&["watch", "--ack", "-i", d.inventory.to_str().unwrap()]);
    assert_eq!(ack.code, 0, "{}", ack.all());
    // The watcher says so once the paused run has ended in its process (its lock released).
    assert!(
        wait_for(Duration::from_secs(30), || d.t.run_ids().len() == 2
            && w.output().matches("waits for approval").count() == 2),
        "{}",
        w.output()
    );
    let second = d.t.newest_run();
    let approved = d.t.exec(&["resume", &second, "--approve"]);
    assert_eq!(approved.code, 0, "{}", approved.all());
    assert_eq!(d.psql("eu-west-1", "SELECT pg_is_in_recovery()"), "f");
    w.wait_for(
        &format!("the failover run {second} was taken up"),
        Duration::from_secs(10),
    );
    let report = d.report(&second, "finished");
    assert!(
        report.contains("| approval | Fail over from us-east-1 to eu-west-1?"),
        "{report}"
    );
    w.stop();
}

/// A failover the watcher cannot start — a maintenance holds the deployment through its
/// window — is told to the team once, not every interval; once the maintenance is stopped
/// and given up, the watcher fails over, passing over the region it left cordoned.
#[test]
fn a_failover_refused_by_a_held_lock_alerts_once_and_goes_ahead_once_released() {
    let d = drill();
    let args = d.args(
        "maintenance",
        &["--yes", "--var", "regions=eu-west-1", "--var", "window=5m"],
    );
    let refs: Vec<&str> = args.iter().map(String::as_str).collect();
    let mut maintenance = d.t.spawn(&refs);
    assert!(wait_for(Duration::from_secs(60), || {
        d.t.run_ids()
            .first()
            .is_some_and(|r| d.t.journal(r).contains("timer_started"))
    }));
    let held = d.t.only_run();

    let w = Watcher::start(&d, "w", &[]);
    w.wait_for("all quiet", Duration::from_secs(20));
    fail_region(&d, "us-east-1");
    w.wait_for(
        "the failover of us-east-1 could not start",
        Duration::from_secs(30),
    );
    let refusals = || {
        d.stack
            .web
            .messages()
            .iter()
            .filter(|m| format!("{m:?}").contains("could not start"))
            .count()
    };
    // Several intervals later, still one alert.
    std::thread::sleep(Duration::from_secs(4));
    assert!(
        w.output().matches("could not start").count() >= 2,
        "it tried again:\n{}",
        w.output()
    );
    assert_eq!(refusals(), 1, "{:?}", d.stack.web.messages());
    let alert = format!("{:?}", d.stack.web.messages());
    assert!(alert.contains(&format!("is held by run {held}")), "{alert}");
    // With what the on-call can do about it, on the same line.
    assert!(
        alert.contains(&format!(
            "must not overlap; next: wait for it to finish (`runbook log {held} --follow"
        )) && alert.contains(&format!("`kill {}` on ", maintenance.id())),
        "{alert}"
    );

    // The on-call stops the maintenance and gives it up: the watcher goes ahead.
    unsafe {
        libc::kill(maintenance.id() as i32, libc::SIGTERM);
    }
    assert!(wait_for(Duration::from_secs(10), || maintenance
        .try_wait()
        .ok()
        .flatten()
        .is_some()));
    let abandoned = d.t.exec(&["abandon", &held, "--reason", "primary down"]);
    assert_eq!(abandoned.code, 0, "{}", abandoned.all());
    assert!(
        wait_for(Duration::from_secs(60), || {
            d.t.run_ids().iter().any(|r| {
                let j = d.t.journal(r);
                j.contains("\"operator\":\"runbook watch\"") && j.contains("run_finished")
            })
        }),
        "no failover finished:\n{}",
        w.output()
    );
    assert_eq!(d.psql("ap-southeast-1", "SELECT pg_is_in_recovery()"), "f");
    w.stop();
}

/// A failover runbook that fails without telling anyone itself: the watcher tells the team,
/// once, with what stopped it and the command that continues the run.
#[test]
fn a_failover_that_fails_untold_is_alerted_with_the_command_that_continues_it() {
    let d = drill();
    let runbook = d.t.path("failing-failover.rhai");
    let path = runbook.to_str().unwrap();
    // First it does not declare what [watch] passes it (its declarations built at run time,
    // so the watcher could not check them when it started): refused, no run kept, and the
    // alert says it could not start (not that it did not finish, nor that `runbook runs`
    // lists it).
    std::fs::write(
        &runbook,
        r#"let decls = #{ from: #{ type: "string", default: "", doc: "the failing region" } };
let p = params(decls);"#,
    )
    .unwrap();
    let w = Watcher::start_runbook(&d, "refused", path, &[], None);
    w.wait_for("all quiet", Duration::from_secs(20));
    fail_region(&d, "us-east-1");
    w.wait_for("could not start: ", Duration::from_secs(30));
    let out = w.stop();
    assert!(d.t.run_ids().is_empty(), "{out}");
    let slack = d.slack();
    assert!(
        slack.iter().any(|m| m.contains(
            "the failover of us-east-1 could not start: invalid parameters:\\n  unknown parameter --var check_interval"
        )) && !slack.iter().any(|m| m.contains("runbook runs")),
        "{slack:?}"
    );

    std::fs::write(
        &runbook,
        format!(
            "{FAILOVER_START}{}",
            r#"step("promote", || fail(`no standby of ${p.from} can be promoted`));"#
        ),
    )
    .unwrap();
    let w = Watcher::start_runbook(&d, "w", path, &[], None);
    w.wait_for("did not finish: ", Duration::from_secs(30));
    let runs = d.t.run_ids();
    assert_eq!(runs.len(), 1, "{}", w.output());
    let run = runs[0].clone();
    // Later rounds fire again and are refused by nothing: the rule holds until --ack; the
    // team hears of this failure once.
    std::thread::sleep(Duration::from_secs(2));
    let out = w.stop();
    let alerts: Vec<String> = d
        .slack()
        .into_iter()
        .filter(|m| m.contains("did not finish"))
        .collect();
    assert_eq!(alerts.len(), 1, "{alerts:?}\n{out}");
    assert_says(
        &alerts[0],
        &[
            "runbook watch: the failover of us-east-1 did not finish: in step 'promote': no standby of us-east-1 can be promoted".to_string(),
            format!("; next: fix the cause, then `runbook resume {run}`"),
        ],
    );
    assert_eq!(d.psql("eu-west-1", "SELECT pg_is_in_recovery()"), "t");
}

/// The failover run a watcher started can be stopped from elsewhere (`runbook stop`), as a
/// person taking the incident over by hand would: the run stops, resumable, the team hears
/// it did not finish and who stopped it — and the watcher itself keeps watching (the run
/// shares its Ctrl-C flag; a stop of the run is not a stop of the watcher).
#[test]
fn a_watchers_failover_run_stopped_from_elsewhere_leaves_the_watcher_watching() {
    let d = drill();
    let runbook = d.t.path("slow-failover.rhai");
    std::fs::write(
        &runbook,
        format!("{FAILOVER_START}step(\"wait\", || sleep(\"30s\"));\n"),
    )
    .unwrap();
    let mut w = Watcher::start_runbook(&d, "w", runbook.to_str().unwrap(), &[], None);
    w.wait_for("all quiet", Duration::from_secs(20));
    fail_region(&d, "us-east-1");
    assert!(
        wait_for(Duration::from_secs(30), || d.t.run_ids().len() == 1
            && d.t.journal(&d.t.run_ids()[0]).contains("timer_started")),
        "{}",
        w.output()
    );
    let run = d.t.only_run();
    let stopped = d.t.exec(&["stop", &run, "--reason", "taking it by hand"]);
    assert_eq!(stopped.code, 0, "{}", stopped.all());
    w.wait_for("did not finish: ", Duration::from_secs(10));
    // Rounds go on after it.
    std::thread::sleep(Duration::from_millis(1500));
    assert!(
        w.child.try_wait().unwrap().is_none(),
        "the watcher stopped with its run:\n{}",
        w.output()
    );
    let out = w.stop();
    assert_says(
        &out,
        &[
            "stopped after the current action, as asked by tester on ",
            "(`runbook stop`): taking it by hand",
        ],
    );
    let slack = d.slack();
    assert!(
        slack
            .iter()
            .any(|m| m.contains("did not finish") && m.contains("taking it by hand")),
        "{slack:?}"
    );
}
