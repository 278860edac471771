//! The PostgreSQL journal store (`--store postgres://…`) against a real PostgreSQL 15: a run
//! started in one place resumes from another, locks exclude across hosts and die with their
//! holder, corruption is refused, and the password never shows; and a run whose host is lost
//! is seen stopped from another host, through PostgreSQL or a directory both share.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use runbook_stack::postgres::{PgCluster, PASSWORD};

use crate::support::{assert_says, finish, kill9, listed, wait_for, Ran, Test};

fn database() -> (tempfile::TempDir, PgCluster) {
    let dir = tempfile::tempdir().unwrap();
    let cluster = PgCluster::start(&dir.path().join("pg"), &["store"]).expect("PostgreSQL starts");
    (dir, cluster)
}

fn sql(c: &PgCluster, query: &str) -> String {
    c.psql(&c.nodes[0], query).expect("psql answers")
}

/// Waits until the one run in the store waits on its durable timer.
fn until_sleeping(c: &PgCluster) {
    assert!(
        wait_for(Duration::from_secs(20), || {
            c.psql(
                &c.nodes[0],
                "SELECT count(*) FROM runbook_journal WHERE line LIKE '%timer_started%'",
            )
            .map(|n| n == "1")
            .unwrap_or(false)
        }),
        "the run did not reach its timer"
    );
}

fn assert_no_password(ran: &Ran) {
    assert!(
        !ran.all().contains(PASSWORD),
        "the password leaked:\n{}",
        ran.all()
    );
}

#[test]
fn a_run_paused_on_one_host_is_resumed_from_another_through_postgres() {
    let (_d, c) = database();
    let url = c.nodes[0].url();
    let shared = tempfile::tempdir().unwrap();
    let marks = shared.path().join("marks.txt");
    let script = format!(
        r#"
        step("first", || shell::run(`echo first >> {m}`));
        step("gate", || approve("switch traffic?"));
        step("second", || shell::run(`echo second >> {m}`));
        "#,
        m = marks.display()
    );
    let host_a = Test::new().script(&script);
    let paused = host_a.exec(&["--store", &url, "run", "runbook.rhai"]);
    assert_eq!(paused.code, 3, "{}", paused.all());
    assert_no_password(&paused);
    let run_id = sql(&c, "SELECT run_id FROM runbook_runs");
    // The hint finds the run when pasted; `***` marks where the password goes.
    let port = c.nodes[0].port;
    assert!(
        paused.all().contains(&format!(
            "runbook resume {run_id} --approve --store 'postgres://postgres:***@127.0.0.1:{port}/postgres'"
        )),
        "{}",
        paused.all()
    );
    assert!(
        !host_a.path(".runbook").exists(),
        "nothing is kept on the host"
    );

    // Host A's runbook edited meanwhile: the resume is refused, and how to put it back names
    // this store, as does the command that prints the runbook the run started with.
    let store = format!("--store 'postgres://postgres:***@127.0.0.1:{port}/postgres'");
    let host_a = host_a.script(&script.replace("echo first", "echo FIRST"));
    let refused = host_a.exec(&["--store", &url, "resume", &run_id, "--approve"]);
    assert_eq!(refused.code, 2, "{}", refused.all());
    assert!(
        refused.stderr.contains(&format!(
            "(`runbook log {run_id} --runbook {store}` prints it), then `runbook resume {run_id} --approve {store}`"
        )),
        "{}",
        refused.all()
    );
    assert_no_password(&refused);
    let kept = host_a.exec(&["--store", &url, "log", &run_id, "--runbook"]);
    assert_eq!((kept.code, kept.stdout.as_str()), (0, script.as_str()));

    // Host A is gone, runbook and all; host B has only the database.
    std::fs::remove_file(host_a.path("runbook.rhai")).unwrap();
    let host_b = Test::new().env("RUNBOOK_STORE", &url);
    let resumed = host_b.exec(&["resume", &run_id, "--approve"]);
    assert_eq!(resumed.code, 0, "{}", resumed.all());
    assert!(
        resumed
            .all()
            .contains("resuming with the copy recorded when the run started"),
        "{}",
        resumed.all()
    );
    assert_no_password(&resumed);
    assert_eq!(
        std::fs::read_to_string(&marks).unwrap(),
        "first\nsecond\n",
        "the finished step was replayed, not run again"
    );
    assert!(!host_b.path(".runbook").exists());

    let runs = host_b.exec(&["runs"]);
    assert_eq!(runs.code, 0, "{}", runs.all());
    assert!(
        runs.stdout.contains(&run_id) && runs.stdout.contains("finished"),
        "{}",
        runs.stdout
    );
    let log = host_b.exec(&["log", &run_id]);
    assert!(
        log.stdout
            .contains("gate #1 approved by tester (resume --approve)"),
        "{}",
        log.stdout
    );
    assert_no_password(&log);
    // The report reads the run from the database like the directory store's.
    let report = host_b.exec(&["report", &run_id]);
    assert_eq!(report.code, 0, "{}", report.all());
    for want in [
        format!("# Run {run_id} — runbook.rhai: finished"),
        "| gate | switch traffic? |".to_string(),
        "| tester | resume --approve |".to_string(),
        "| 2 | resumed ".to_string(),
        "| second | +".to_string(),
    ] {
        assert!(report.stdout.contains(&want), "{want}\n{}", report.stdout);
    }
    assert_no_password(&report);
    let latest = host_b.exec(&["report", "--json"]);
    assert!(
        latest.stdout.contains(&format!("\"run_id\": \"{run_id}\"")),
        "{}",
        latest.all()
    );

    // The journal in the database: numbered, one row per record, the same JSON lines.
    let rows: usize = sql(&c, "SELECT count(*) FROM runbook_journal")
        .parse()
        .unwrap();
    let last: usize = sql(&c, "SELECT max(pos) FROM runbook_journal")
        .parse()
        .unwrap();
    assert_eq!(rows, last, "no gaps");
    assert_eq!(
        sql(
            &c,
            "SELECT count(*) FROM runbook_journal WHERE line LIKE '%\"event\":\"run_finished\"%'"
        ),
        "1"
    );
    assert_eq!(
        sql(
            &c,
            "SELECT count(*) FROM runbook_journal WHERE line LIKE '%\"event\":\"action_started\"%'"
        ),
        "2",
        "each shell::run started once"
    );
    assert_eq!(
        sql(
            &c,
            &format!("SELECT count(*) FROM runbook_journal WHERE line LIKE '%{PASSWORD}%'")
        ),
        "0"
    );
}

#[test]
fn a_postgres_lock_excludes_another_host_and_dies_with_its_holder() {
    let (_d, c) = database();
    let url = c.nodes[0].url();
    let host_a = Test::new()
        .env("RUNBOOK_STORE", &url)
        .script(r#"step("hold", || sleep("30s"));"#);
    let mut first = host_a.spawn(&["run", "runbook.rhai"]);
    until_sleeping(&c);
    let holder = sql(&c, "SELECT run_id FROM runbook_runs");

    let host_b = Test::new()
        .env("RUNBOOK_STORE", &url)
        .script(r#"step("x", || log("second run"));"#);
    let refused = host_b.exec(&["run", "runbook.rhai"]);
    assert_eq!(refused.code, 4, "{}", refused.all());
    assert!(
        refused
            .stderr
            .contains(&format!("the lock 'runbook' is held by run {holder}")),
        "{}",
        refused.stderr
    );
    // Given on the command line, the store is in the command it suggests.
    let elsewhere = Test::new().script(r#"step("x", || log("second run"));"#);
    let refused = elsewhere.exec(&["run", "runbook.rhai", "--store", &url]);
    assert_eq!(refused.code, 4, "{}", refused.all());
    assert!(
        refused
            .stderr
            .contains(&format!("(`runbook log {holder} --follow --store ")),
        "{}",
        refused.stderr
    );
    assert!(!refused.stdout.contains("second run"));
    assert_eq!(
        sql(&c, "SELECT count(*) FROM runbook_runs"),
        "1",
        "the refused run left nothing"
    );

    // The holder dies: its session ends and the server releases the lock.
    kill9(&mut first);
    let mut taken = None;
    assert!(wait_for(Duration::from_secs(10), || {
        let ran = host_b.exec(&["run", "runbook.rhai"]);
        let done = ran.code != 4;
        taken = Some(ran);
        done
    }));
    let taken = taken.unwrap();
    assert_eq!(taken.code, 0, "{}", taken.all());
    assert!(
        taken
            .stdout
            .contains(&format!("took over the lock 'runbook' from run {holder}")),
        "{}",
        taken.stdout
    );
    assert!(taken.stdout.contains("second run"));
    // Released cleanly this time: nobody is named as holder.
    assert_eq!(
        sql(
            &c,
            "SELECT count(*) FROM runbook_locks WHERE holder IS NOT NULL"
        ),
        "0"
    );
}

/// A run on one host is stopped from another through the store (`runbook stop`), as the
/// lock's refusal there says: it stops at its next safe point, resumable, and the other host
/// resumes it to the end; the request does not outlive the process it was for.
#[test]
fn a_run_on_one_host_is_stopped_from_another_through_postgres_and_resumed_there() {
    let (_d, c) = database();
    let url = c.nodes[0].url();
    let script = r#"
        step("before", || log("before"));
        step("hold", || sleep("3s"));
        step("after", || log("after the wait"));
    "#;
    let host_a = Test::new().env("RUNBOOK_STORE", &url).script(script);
    let first = host_a.spawn(&["run", "runbook.rhai"]);
    until_sleeping(&c);
    let run = sql(&c, "SELECT run_id FROM runbook_runs");

    let host_b = Test::new().script(script);
    let refused = host_b.exec(&["run", "runbook.rhai", "--store", &url]);
    assert_eq!(refused.code, 4, "{}", refused.all());
    assert!(
        refused.stderr.contains(&format!(
            "stop it from here with `runbook stop {run} --store "
        )),
        "{}",
        refused.stderr
    );
    let stopped = host_b.exec(&["stop", &run, "--store", &url, "--reason", "taking over"]);
    assert_eq!(stopped.code, 0, "{}", stopped.all());
    assert!(
        stopped
            .stdout
            .contains("stopped: interrupted at step 'hold'"),
        "{}",
        stopped.stdout
    );
    assert_no_password(&stopped);
    let out = first.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(130), "{out:?}");
    assert_eq!(sql(&c, "SELECT count(*) FROM runbook_stops"), "0");

    let resumed = host_b.exec(&["resume", &run, "--store", &url]);
    assert_eq!(resumed.code, 0, "{}", resumed.all());
    assert!(
        resumed.stdout.contains("after the wait"),
        "{}",
        resumed.all()
    );
    assert!(
        resumed
            .stdout
            .contains("▶ before (done earlier, replaying)"),
        "{}",
        resumed.all()
    );
}

#[test]
fn a_corrupt_record_in_the_postgres_journal_is_refused_and_nothing_is_appended() {
    let (_d, c) = database();
    let url = c.nodes[0].url();
    let t = Test::new()
        .env("RUNBOOK_STORE", &url)
        .script(r#"step("gate", || approve("go?")); step("after", || log("after the gate"));"#);
    let paused = t.exec(&["run", "runbook.rhai"]);
    assert_eq!(paused.code, 3, "{}", paused.all());
    let run_id = sql(&c, "SELECT run_id FROM runbook_runs");
    let before = sql(&c, "SELECT count(*) FROM runbook_journal");
    sql(
        &c,
        "UPDATE runbook_journal SET line = '{\"v\":1,\"n\":2,\"at' WHERE pos = 2",
    );
    let refused = t.exec(&["resume", &run_id, "--approve"]);
    assert_eq!(refused.code, 2, "{}", refused.all());
    assert!(
        refused.stderr.contains("line 2 is corrupt"),
        "{}",
        refused.stderr
    );
    assert!(
        refused.stderr.contains(&format!(
            "PostgreSQL store postgres@127.0.0.1:{}/postgres run {run_id}",
            c.nodes[0].port
        )),
        "{}",
        refused.stderr
    );
    assert!(!refused.stdout.contains("after the gate"));
    assert_eq!(sql(&c, "SELECT count(*) FROM runbook_journal"), before);
}

#[test]
fn store_urls_that_do_not_work_are_named_without_their_password() {
    let (_d, c) = database();
    let port = c.nodes[0].port;
    let t = Test::new().script(r#"step("x", || shell::run("echo ran > ran.txt"));"#);

    // Nothing listens on port 1 of loopback.
    let down = t.exec(&[
        "--store",
        &format!("postgres://ops:{PASSWORD}@127.0.0.1:1/ops"),
        "run",
        "runbook.rhai",
    ]);
    assert_eq!(down.code, 1, "{}", down.all());
    assert!(
        down.stderr
            .contains("cannot use the journal in PostgreSQL store ops@127.0.0.1:1/ops"),
        "{}",
        down.stderr
    );
    assert_no_password(&down);
    assert!(!t.path("ran.txt").exists(), "nothing ran without a journal");
    // The store's database may be in the region that is down: how to go on without it, and
    // what that costs.
    assert_says(
        &down.stderr,
        &[
            "next: nothing was started: run it again once the store answers",
            "`--state-dir DIR` in place of `--store` (and RUNBOOK_STORE unset) keeps this run's journal and locks on this host: only this host can resume the run then",
        ],
    );
    let local = t.exec(&["--state-dir", "local", "run", "runbook.rhai"]);
    assert_eq!(local.code, 0, "{}", local.all());
    assert!(t.path("ran.txt").exists() && t.path("local/runs").exists());
    std::fs::remove_file(t.path("ran.txt")).unwrap();
    // Other commands read what is in the store: no other place is suggested.
    let listed = t.exec(&["--store", "postgres://ops@127.0.0.1:1/ops", "runs"]);
    assert_eq!(listed.code, 1, "{}", listed.all());
    assert!(!listed.stderr.contains("--state-dir"), "{}", listed.stderr);

    // A wrong password: the server's refusal, not the password.
    let wrong = t.exec(&[
        "--store",
        &format!("postgres://postgres:wrong-{PASSWORD}@127.0.0.1:{port}/postgres"),
        "runs",
    ]);
    assert_eq!(wrong.code, 1, "{}", wrong.all());
    assert!(
        wrong.stderr.contains("password authentication failed"),
        "{}",
        wrong.stderr
    );
    assert_no_password(&wrong);

    // Not a URL at all: a usage error.
    let bad = t.exec(&["--store", "postgres://ops@127.0.0.1:notaport/ops", "runs"]);
    assert_eq!(bad.code, 2, "{}", bad.all());
    assert!(bad.stderr.contains("--store"), "{}", bad.stderr);

    // The password from PGPASSWORD when the URL has none; `check` needs no store at all.
    let t = t.env("PGPASSWORD", PASSWORD);
    let ok = t.exec(&[
        "--store",
        &format!("postgres://postgres@127.0.0.1:{port}/postgres"),
        "run",
        "runbook.rhai",
    ]);
    assert_eq!(ok.code, 0, "{}", ok.all());
    assert!(t.path("ran.txt").exists());
    let check = t.exec(&[
        "--store",
        "postgres://ops@127.0.0.1:1/ops",
        "check",
        "runbook.rhai",
    ]);
    assert_eq!(check.code, 0, "{}", check.all());
}

/// A run in the store that took the deployment's lock, made a change and paused for approval
/// before its last step; its process has exited. Returns the test it ran in and its id.
fn paused_at_the_gate(c: &PgCluster) -> (Test, String) {
    let t = Test::new().env("RUNBOOK_STORE", &c.nodes[0].url()).script(
        r#"
        lock("deployment prod");
        step("stop writes", || shell::run(#{ argv: ["true"] }));
        step("gate", || approve("promote?"));
        step("promote", || log("promoted"));
        "#,
    );
    let paused = t.exec(&["run", "runbook.rhai"]);
    assert_eq!(paused.code, 3, "{}", paused.all());
    (t, sql(c, "SELECT run_id FROM runbook_runs"))
}

/// A paused run's claim lives in the database: another host is refused until the run is
/// resumed or abandoned, from anywhere.
#[test]
fn a_claim_in_postgres_holds_across_hosts_until_the_run_is_abandoned() {
    let (_d, c) = database();
    let url = c.nodes[0].url();
    let (_host_a, run_id) = paused_at_the_gate(&c);
    assert_eq!(
        sql(
            &c,
            &format!("SELECT count(*) FROM runbook_locks WHERE holder LIKE '%{run_id}%'")
        ),
        "2",
        "its own lock and the deployment's stay claimed after its process ended"
    );
    let host_b = Test::new().env("RUNBOOK_STORE", &url).file(
        "maintenance.rhai",
        r#"lock("deployment prod"); log("the other procedure");"#,
    );
    let refused = host_b.exec(&["run", "maintenance.rhai"]);
    assert_eq!(refused.code, 4, "{}", refused.all());
    assert!(
        refused.stderr.contains(&format!(
            "the lock 'deployment prod' is claimed by run {run_id}"
        )) && refused.stderr.contains("which is paused at step 'gate'")
            && refused
                .stderr
                .contains(&format!("`runbook abandon {run_id}`")),
        "{}",
        refused.stderr
    );
    assert_no_password(&refused);
    let abandoned = host_b.exec(&["abandon", &run_id, "--reason", "done by hand"]);
    assert_eq!(abandoned.code, 0, "{}", abandoned.all());
    assert_eq!(
        sql(
            &c,
            "SELECT count(*) FROM runbook_journal WHERE line LIKE '%run_abandoned%done by hand%'"
        ),
        "1"
    );
    let ran = host_b.exec(&["run", "maintenance.rhai"]);
    assert_eq!(ran.code, 0, "{}", ran.all());
    assert!(ran.stdout.contains("the other procedure"));
    assert_eq!(
        sql(
            &c,
            "SELECT count(*) FROM runbook_locks WHERE holder IS NOT NULL"
        ),
        "0",
        "a finished run leaves no claim"
    );
}

#[test]
fn a_resume_through_postgres_waits_for_the_pausing_process_to_let_go() {
    let (_d, c) = database();
    let (t, run_id) = paused_at_the_gate(&c);

    // A session holds the run's two advisory locks for a moment, as the paused process does
    // between journaling its pause and exiting.
    let key = |name: &str| {
        format!("('x' || left(encode(sha256('runbook lock:{name}'::bytea), 'hex'), 16))::bit(64)::bigint")
    };
    let node = &c.nodes[0];
    let mut exiting = std::process::Command::new("psql")
        .args(["-X", "-q", "-U", "postgres", "-h"])
        .arg(&c.dir)
        .args(["-p", &node.port.to_string(), "-d", "postgres", "-c"])
        .arg(format!(
            "SELECT pg_advisory_lock({}), pg_advisory_lock({}), pg_sleep(1.5)",
            key("runbook"),
            key("deployment prod")
        ))
        .stdout(std::process::Stdio::null())
        .spawn()
        .expect("psql starts");
    let held = wait_for(Duration::from_secs(10), || {
        sql(
            &c,
            "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND granted",
        ) == "2"
    });
    let resumed = t.exec(&["resume", &run_id, "--approve"]);
    kill9(&mut exiting);
    assert!(held, "the session took both locks");
    assert_eq!(resumed.code, 0, "{}", resumed.all());
    assert!(resumed.stdout.contains("promoted"), "{}", resumed.all());
    assert_no_password(&resumed);
}

/// A run whose middle step waits for `go`, so the store can be restarted meanwhile; its
/// last step also runs `then`.
fn waiting_run(marks: &Path, go: &Path, then: &str) -> String {
    format!(
        r#"
        step("one", || shell::run(`echo one >> {m}`));
        step("wait", || shell::run(`while [ ! -f {go} ]; do sleep 0.05; done; echo waited >> {m}`));
        step("two", || shell::run(`echo two >> {m}{then}`));
        "#,
        m = marks.display(),
        go = go.display()
    )
}

/// The run's records are numbered 1..n without a gap or a double.
fn assert_journal_whole(c: &PgCluster) {
    let row = sql(
        c,
        "SELECT count(*) || ' ' || count(DISTINCT pos) || ' ' || max(pos) || ' ' || count(DISTINCT line) FROM runbook_journal",
    );
    let n: Vec<&str> = row.split(' ').collect();
    assert!(
        n[0] == n[1] && n[1] == n[2] && n[2] == n[3],
        "records (count, positions, last, distinct lines): {row}"
    );
}

#[test]
fn the_store_survives_a_postgres_restart_in_the_middle_of_a_run() {
    let (_d, c) = database();
    let url = c.nodes[0].url();
    let t = Test::new().env("RUNBOOK_STORE", &url);
    let (marks, go) = (t.path("marks.txt"), t.path("go"));
    // The last step records how many advisory locks the server holds: the run's, taken again.
    let locks = t.path("locks.txt");
    let count = format!(
        "; psql -X -A -t -U postgres -h {} -p {} -d postgres -c \"SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND granted\" > {}",
        c.dir.display(),
        c.nodes[0].port,
        locks.display()
    );
    let t = t.script(&waiting_run(&marks, &go, &count));
    let child = t.spawn(&["run", "runbook.rhai"]);
    assert!(wait_for(Duration::from_secs(20), || {
        std::fs::read_to_string(&marks).is_ok_and(|m| m.contains("one"))
    }));
    // The store's database restarts (a fast shutdown ends every session, the lock's too).
    c.stop_node(&c.nodes[0]);
    c.start_node(&c.nodes[0]).unwrap();
    std::fs::write(&go, "").unwrap();
    let out = crate::support::finish(child);
    let all = out.all();
    assert_eq!(out.code, 0, "{all}");
    assert_eq!(
        std::fs::read_to_string(&marks).unwrap(),
        "one\nwaited\ntwo\n"
    );
    assert_journal_whole(&c);
    let run_id = sql(&c, "SELECT run_id FROM runbook_runs");
    let log = t.exec(&["log", &run_id]);
    assert_eq!(log.code, 0, "{}", log.all());
    assert!(!all.contains(PASSWORD), "{all}");
    assert_eq!(
        std::fs::read_to_string(&locks).unwrap().trim(),
        "1",
        "the run's lock was taken again on the restarted server"
    );
    // The finished run released it.
    assert_eq!(
        sql(
            &c,
            "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory'"
        ),
        "0"
    );
}

#[test]
fn a_store_gone_longer_than_the_reconnect_window_stops_the_run_resumable() {
    let (_d, c) = database();
    let url = c.nodes[0].url();
    let t = Test::new()
        .env("RUNBOOK_STORE", &url)
        .env("RUNBOOK_STORE_RECONNECT", "1s");
    let (marks, go) = (t.path("marks.txt"), t.path("go"));
    let t = t.script(&waiting_run(&marks, &go, ""));
    let child = t.spawn(&["run", "runbook.rhai"]);
    assert!(wait_for(Duration::from_secs(20), || {
        std::fs::read_to_string(&marks).is_ok_and(|m| m.contains("one"))
    }));
    let run_id = sql(&c, "SELECT run_id FROM runbook_runs");
    c.stop_node(&c.nodes[0]);
    std::fs::write(&go, "").unwrap();
    let out = crate::support::finish(child);
    let all = out.all();
    assert_eq!(out.code, 1, "{all}");
    assert!(all.contains("did not answer for 1s"), "{all}");
    assert!(all.contains(&format!("`runbook resume {run_id}`")), "{all}");
    assert!(all.contains("nothing would happen unrecorded"), "{all}");
    assert!(!all.contains(PASSWORD), "{all}");
    assert!(!std::fs::read_to_string(&marks).unwrap().contains("two"));

    // Back: the step that was under way when the store went is the operator's call.
    c.start_node(&c.nodes[0]).unwrap();
    let resumed = t.exec(&["resume", &run_id, "--retry-inflight"]);
    assert_eq!(resumed.code, 0, "{}", resumed.all());
    assert!(std::fs::read_to_string(&marks).unwrap().ends_with("two\n"));
    assert_eq!(
        std::fs::read_to_string(&marks)
            .unwrap()
            .matches("one")
            .count(),
        1,
        "the finished step was not run again"
    );
    assert_journal_whole(&c);
}

/// A run whose host is lost looks running in the journal: here its process is killed, in a
/// namespace with a host name of its own, so no journal check of a process id can see it.
/// From this host the store tells: while the process lives, `runs` says running and `log
/// --follow` follows; once it is gone, the follow ends saying so and how the run goes on,
/// `runs` says crashed, `resume` without a run names it, `stop` without a run does not, and a
/// resume from here finishes it. `store` is the store option both hosts give; `sleeping` says
/// when the run waits on its timer.
fn lost_host_is_seen_from_another(store: &[&str], sleeping: &dyn Fn() -> bool) {
    let shared = tempfile::tempdir().unwrap();
    let marks = shared.path().join("marks.txt");
    let script = format!(
        r#"
        step("change", || shell::run(`echo change >> {m}`));
        step("hold", || sleep("6s"));
        step("after", || shell::run(`echo after >> {m}`));
        "#,
        m = marks.display()
    );
    // Every command as both hosts give it: with the store option.
    let with_store = |args: &[&str]| -> Vec<String> {
        args.iter().chain(store).map(|s| s.to_string()).collect()
    };
    let exec = |t: &Test, args: &[&str]| {
        let args = with_store(args);
        t.exec(&args.iter().map(String::as_str).collect::<Vec<_>>())
    };
    let spawn = |t: &Test, args: &[&str]| {
        let args = with_store(args);
        t.spawn(&args.iter().map(String::as_str).collect::<Vec<_>>())
    };
    let bastion = Test::new().host("bastion-1").script(&script);
    let mut first = spawn(&bastion, &["run", "runbook.rhai"]);
    assert!(
        wait_for(Duration::from_secs(20), sleeping),
        "the run did not reach its timer"
    );

    let here = Test::new();
    let listed = |t: &Test| -> (String, String) {
        let ran = exec(t, &["runs", "--json"]);
        assert_eq!(ran.code, 0, "{}", ran.all());
        let row: serde_json::Value = serde_json::from_str(ran.stdout.trim()).unwrap();
        (
            row["run_id"].as_str().unwrap().into(),
            row["status"].as_str().unwrap().into(),
        )
    };
    let (run, status) = listed(&here);
    assert_eq!(status, "running", "its process lives on bastion-1");
    let table = exec(&here, &["runs"]);
    assert_says(
        &table.stdout,
        &[
            format!("{run}   running"),
            format!("hold  [claims runbook]  (on bastion-1, pid {})", first.id()),
        ],
    );
    let mut follow = spawn(&here, &["log", &run, "--follow"]);
    std::thread::sleep(Duration::from_millis(600));
    assert!(
        follow.try_wait().unwrap().is_none(),
        "the follow ended while the run lives"
    );

    let pid = first.id();
    kill9(&mut first);
    assert!(
        wait_for(Duration::from_secs(10), || follow
            .try_wait()
            .unwrap()
            .is_some()),
        "the follow goes on after the run's process is gone"
    );
    let followed = finish(follow);
    assert_eq!(followed.code, 0, "{}", followed.all());
    assert_says(
        &followed.stdout,
        &["run started: ", " on bastion-1", "▶ hold"],
    );
    assert_says(
        &followed.stderr,
        &[
            format!("run {run} stopped at step 'hold' without recording an end: its process (pid {pid} on bastion-1) is gone, killed or its host lost"),
            format!("continue it with `runbook resume {run}"),
        ],
    );
    assert_no_password(&followed);
    assert_eq!(listed(&here), (run.clone(), "crashed".to_string()));

    let which = exec(&here, &["resume"]);
    assert_eq!(which.code, 2, "{}", which.all());
    assert_says(
        &which.stderr,
        &[
            format!("{run}  runbook.rhai, started "),
            format!("runbook resume {run}"),
        ],
    );
    let running = exec(&here, &["stop"]);
    assert_eq!(running.code, 2, "{}", running.all());
    assert_says(&running.stderr, &["is running (`runbook runs"]);

    let resumed = exec(&here, &["resume", &run]);
    assert_eq!(resumed.code, 0, "{}", resumed.all());
    assert_eq!(std::fs::read_to_string(&marks).unwrap(), "change\nafter\n");
    assert_eq!(listed(&here).1, "finished");
}

#[test]
fn a_run_whose_host_is_lost_is_seen_stopped_from_another_through_postgres() {
    let (_d, c) = database();
    let url = c.nodes[0].url();
    lost_host_is_seen_from_another(&["--store", &url], &|| {
        c.psql(
            &c.nodes[0],
            "SELECT count(*) FROM runbook_journal WHERE line LIKE '%timer_started%'",
        )
        .is_ok_and(|n| n == "1")
    });
}

#[test]
fn a_run_whose_host_is_lost_is_seen_stopped_from_another_through_a_shared_directory() {
    let shared = tempfile::tempdir().unwrap();
    let state = shared.path().join("state");
    let runs = state.join("runs");
    lost_host_is_seen_from_another(&["--state-dir", state.to_str().unwrap()], &|| {
        std::fs::read_dir(&runs)
            .into_iter()
            .flatten()
            .flatten()
            .any(|e| {
                std::fs::read_to_string(e.path().join("journal.jsonl"))
                    .is_ok_and(|j| j.contains("timer_started"))
            })
    });
}

/// A host lost without closing its connections (powered off, cut off the network) must not
/// keep its locks, and its run must not look running, for the two hours and more of the
/// system's TCP keepalive: each lock's session asks the server to probe its client within
/// 10 s (then every 5 s, giving up after 3). Seen here on the server's side of the run's
/// connections, in the kernel's table of TCP sockets: the keepalive timer of each lock
/// session is due within 10 s; the journal's connection keeps the system's.
#[test]
fn the_server_probes_each_lock_session_so_that_a_lost_host_frees_its_locks() {
    let (_d, c) = database();
    let t = Test::new()
        .env("RUNBOOK_STORE", &c.nodes[0].url())
        .script(r#"lock("deployment prod"); step("hold", || sleep("30s"));"#);
    let mut run = t.spawn(&["run", "runbook.rhai"]);
    until_sleeping(&c);
    // A side with a reply in flight shows its retransmit timer until the reply is acknowledged
    // (a delayed ACK takes up to 40 ms): asked again until every one shows its keepalive.
    let mut timers = Vec::new();
    let idle = wait_for(Duration::from_secs(5), || {
        timers = server_timers(run.id(), c.nodes[0].port);
        timers.iter().all(|(kind, _)| *kind == 2)
    });
    kill9(&mut run);
    assert!(idle, "a connection shows no keepalive timer: {timers:?}");
    assert_eq!(
        timers.len(),
        3,
        "the journal's connection and two lock sessions: {timers:?}"
    );
    let mut due: Vec<Duration> = timers.iter().map(|(_, due)| *due).collect();
    due.sort();
    assert!(
        due[1] <= Duration::from_secs(10) && due[2] > Duration::from_secs(60),
        "the lock sessions' keepalive due within 10 s, the journal's as the system has it: {due:?}"
    );
}

/// For each TCP connection of process `pid` to `port` on this host, the timer running on the
/// server's side of it (from /proc/net/tcp): its kind (1: retransmit, 2: keepalive, 0: none)
/// and when it is due.
fn server_timers(pid: u32, port: u16) -> Vec<(u8, Duration)> {
    let inodes: Vec<String> = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .flatten()
        .filter_map(|e| std::fs::read_link(e.path()).ok())
        .filter_map(|l| {
            let l = l.to_string_lossy().into_owned();
            Some(l.strip_prefix("socket:[")?.strip_suffix(']')?.to_string())
        })
        .collect();
    // sl local rem st tx:rx tr:when retrnsmt uid timeout inode: addresses as HEX:PORT, the
    // timer as kind:when, in hexadecimal clock ticks (100 a second).
    let rows: Vec<Vec<String>> = ["/proc/net/tcp", "/proc/net/tcp6"]
        .iter()
        .filter_map(|f| std::fs::read_to_string(f).ok())
        .flat_map(|t| {
            t.lines()
                .skip(1)
                .map(|l| l.split_whitespace().map(String::from).collect())
                .collect::<Vec<Vec<String>>>()
        })
        .collect();
    let port_of = |addr: &str| u16::from_str_radix(addr.rsplit(':').next().unwrap(), 16).unwrap();
    let hex = |t: &str| u64::from_str_radix(t, 16).unwrap();
    rows.iter()
        .filter(|r| inodes.contains(&r[9]) && port_of(&r[2]) == port)
        .map(|client| {
            let server = rows
                .iter()
                .find(|r| port_of(&r[1]) == port && r[2] == client[1])
                .expect("the server's side of the connection");
            let (kind, when) = server[5].split_once(':').unwrap();
            (hex(kind) as u8, Duration::from_millis(hex(when) * 10))
        })
        .collect()
}

/// A run paused on one host whose inventory names a database with its password (which the
/// journal keeps masked) is resumed from another host, where the file is not at the path the
/// run recorded: the resume is refused before anything, naming the URLs whose password it
/// lacks and asking for this host's copy — not run with masked passwords until a call fails.
/// Given with -i, the run goes on with it, and the resume it suggests next carries it.
#[test]
fn a_resume_on_another_host_asks_for_and_takes_that_hosts_copy_of_the_inventory() {
    let (_d, c) = database();
    let url = c.nodes[0].url();
    let inventory = format!("[orders]\ndatabase_url = \"{url}\"\n");
    let script = r#"
        let db = #{ url: inventory.orders.database_url, name: "orders" };
        step("first", || { db.sql = "SELECT 1 AS n"; pg::query(db) });
        step("gate", || approve("go on?"));
        step("second", || { db.sql = "SELECT 40 + 2 AS n"; log(`read ${pg::query(db).rows[0].n}`) });
        step("last", || approve("and the rest?"));
        "#;
    let bastion = Test::new()
        .host("bastion-1")
        .script(script)
        .inventory(&inventory);
    let paused = bastion.exec(&[
        "run",
        "runbook.rhai",
        "-i",
        "inventory.toml",
        "--store",
        &url,
    ]);
    assert_eq!(paused.code, 3, "{}", paused.all());
    let run = sql(&c, "SELECT run_id FROM runbook_runs");
    let recorded = bastion.path("inventory.toml");
    std::fs::remove_file(&recorded).unwrap();

    let here = Test::new().file("prod.toml", &inventory);
    let records = || sql(&c, "SELECT count(*) FROM runbook_journal");
    let before = records();
    let refused = here.exec(&["resume", &run, "--approve", "--store", &url]);
    assert_eq!(refused.code, 2, "{}", refused.all());
    assert_says(
        &refused.stderr,
        &[format!(
            "the inventory {} that run {run} started with is not on this host, and the journal's copy of it does not keep URL passwords (orders.database_url): give this host's copy with `runbook resume {run} -i FILE`",
            recorded.display()
        )],
    );
    assert_eq!(records(), before, "the refused resume journaled nothing");
    assert_no_password(&refused);

    let resumed = here.exec(&[
        "resume",
        &run,
        "--approve",
        "-i",
        "prod.toml",
        "--store",
        &url,
    ]);
    assert_eq!(resumed.code, 3, "{}", resumed.all());
    assert_says(&resumed.stdout, &["read 42"]);
    assert!(!resumed.all().contains("differs"), "{}", resumed.all());
    assert_says(
        &resumed.stderr,
        &[format!(
            "runbook resume {run} --approve -i prod.toml --store "
        )],
    );
    assert_no_password(&resumed);
}

/// A store keeps every run; `runbook runs` lists the newest 20 and, whatever their age, the
/// runs still open (paused, stopped part-way through a change), and counts the rest.
fn a_long_history_lists_the_newest_and_every_open_run(store: &[&str]) {
    let with_store = |args: &[&str]| -> Vec<String> {
        args.iter().chain(store).map(|s| s.to_string()).collect()
    };
    let t = Test::new()
        .file("gate.rhai", r#"step("gate", || approve("go?"));"#)
        .file(
            "check.rhai",
            r#"step("check", || fail("found a problem"));"#,
        )
        .file(
            "change.rhai",
            r#"step("change", || { shell::run("true"); fail("half-way"); });"#,
        )
        .file("status.rhai", r#"step("look", || log("all well"));"#);
    let exec = |args: &[&str]| {
        let args = with_store(args);
        t.exec(&args.iter().map(String::as_str).collect::<Vec<_>>())
    };
    let mut oldest = Vec::new();
    for (file, code) in [("gate", 3), ("check", 1), ("change", 1), ("status", 0)] {
        let ran = exec(&["run", &format!("{file}.rhai")]);
        assert_eq!(ran.code, code, "{file}: {}", ran.all());
        oldest.push(ran.all());
    }
    for _ in 0..21 {
        assert_eq!(exec(&["run", "status.rhai"]).code, 0);
    }
    let ids = |ran: &Ran| -> Vec<String> {
        ran.stdout
            .lines()
            .skip(1)
            .filter(|l| l.starts_with("20"))
            .map(|l| l.split_whitespace().next().unwrap().to_string())
            .collect()
    };
    let all = exec(&["runs", "--all"]);
    assert_eq!(all.code, 0, "{}", all.all());
    let every = ids(&all);
    assert_eq!(every.len(), 25, "{}", all.stdout);
    assert!(!all.stdout.contains("not listed"), "{}", all.stdout);
    let status_of = |id: &str| {
        all.stdout
            .lines()
            .find(|l| l.starts_with(id))
            .unwrap()
            .split_whitespace()
            .nth(1)
            .unwrap()
            .to_string()
    };
    assert_eq!(
        every[..5]
            .iter()
            .map(|id| status_of(id))
            .collect::<Vec<_>>(),
        ["paused", "failed", "failed", "finished", "finished"],
        "{}",
        all.stdout
    );

    // The newest 20 and the two old runs that wait for a person; the run that failed before
    // changing anything and the two oldest finished ones are counted.
    let listed = exec(&["runs"]);
    assert_eq!(listed.code, 0, "{}", listed.all());
    let mut want = vec![every[0].clone(), every[2].clone()];
    want.extend_from_slice(&every[5..]);
    assert_eq!(ids(&listed), want, "{}", listed.stdout);
    // The store option as given (a URL's password masked).
    assert_says(
        &listed.stdout,
        &[
            format!("(3 older runs are not listed: over, or failed before changing anything. `runbook runs {}", store[0]),
            " --all` lists them, `--limit N` the newest N)".to_string(),
        ],
    );

    let two = exec(&["runs", "--limit", "2"]);
    let mut want = vec![every[0].clone(), every[2].clone()];
    want.extend_from_slice(&every[23..]);
    assert_eq!(ids(&two), want, "{}", two.stdout);
    assert_says(&two.stdout, &["(21 older runs are not listed"]);
    // As JSON, the same runs, one a line; the count of the others on stderr.
    let as_json = exec(&["runs", "--json", "-n", "2"]);
    assert_eq!(crate::support::listed(&as_json), want);
    assert_says(&as_json.stderr, &["(21 older runs are not listed"]);

    // Without a run, a resume names the two that wait, however old.
    let which = exec(&["resume"]);
    assert_eq!(which.code, 2, "{}", which.all());
    assert_says(
        &which.stderr,
        &[
            format!("{}  gate.rhai", every[0]),
            format!("{}  change.rhai", every[2]),
            "1 run that failed before changing anything is not listed".to_string(),
        ],
    );
}

#[test]
fn a_long_history_in_postgres_lists_the_newest_and_every_open_run() {
    let (_d, c) = database();
    let url = c.nodes[0].url();
    a_long_history_lists_the_newest_and_every_open_run(&["--store", &url]);
}

#[test]
fn a_long_history_in_a_directory_lists_the_newest_and_every_open_run() {
    let shared = tempfile::tempdir().unwrap();
    let state = shared.path().join("state");
    a_long_history_lists_the_newest_and_every_open_run(&["--state-dir", state.to_str().unwrap()]);
}

/// How many records the store's journal holds, and the number of the last.
fn rows_and_last(c: &PgCluster) -> (String, String) {
    let both = sql(c, "SELECT count(*) || ' ' || max(pos) FROM runbook_journal");
    let (rows, last) = both.split_once(' ').unwrap();
    (rows.to_string(), last.to_string())
}

/// Records that guard nothing (a step started, a log line) go out on the store's connection
/// without waiting for their commit, each behind the one before. A run killed in the middle of
/// a burst of them leaves a journal without a hole, which a resume continues to the end.
#[test]
fn a_run_killed_amid_records_on_their_way_leaves_a_journal_without_a_hole() {
    let (_d, c) = database();
    let url = c.nodes[0].url();
    let t = Test::new().script(
        r#"
        step("chatty", || { for i in 0..20000 { log(`line ${i}`); } });
        step("after", || log("done"));
        "#,
    );
    let mut run = t.spawn(&["run", "runbook.rhai", "--store", &url]);
    let count = || -> i64 {
        c.psql(&c.nodes[0], "SELECT count(*) FROM runbook_journal")
            .ok()
            .and_then(|n| n.parse().ok())
            .unwrap_or(0)
    };
    assert!(
        wait_for(Duration::from_secs(20), || count() >= 500),
        "the run did not log"
    );
    kill9(&mut run);
    let (rows, last) = rows_and_last(&c);
    assert_eq!(rows, last, "records 1 to {last}, each once");
    assert!(
        !sql(
            &c,
            "SELECT line FROM runbook_journal ORDER BY pos DESC LIMIT 1"
        )
        .contains("run_finished"),
        "killed before the end"
    );

    let run_id = sql(&c, "SELECT run_id FROM runbook_runs");
    let resumed = t.exec(&["resume", &run_id, "--store", &url]);
    assert_eq!(resumed.code, 0, "{}", resumed.all());
    let (rows, last) = rows_and_last(&c);
    assert_eq!(rows, last);
    let log = t.exec(&["log", &run_id, "--store", &url]);
    assert_says(&log.stdout, &["line 19999", "done", "finished"]);
}

/// `runbook watch --ack` finds the deployment's last automatic failover by the first record of
/// each run (a run the watcher started names it there), in PostgreSQL as in a directory.
#[test]
fn the_last_automatic_failover_is_found_in_postgres_by_the_first_records() {
    let (_d, c) = database();
    let url = c.nodes[0].url();
    let t = Test::new()
        .inventory("name = \"shop\"\n")
        .file("failover.rhai", "log(1);")
        .file("other.rhai", "log(2);");
    let ack = || t.exec(&["watch", "--ack", "-i", "inventory.toml", "--store", &url]);
    for file in ["failover.rhai", "other.rhai"] {
        let ran = t.exec(&["run", file, "-i", "inventory.toml", "--store", &url]);
        assert_eq!(ran.code, 0, "{}", ran.all());
    }
    let none = ack();
    assert_eq!(none.code, 2, "{}", none.all());
    assert_says(
        &none.stderr,
        &["no automatic failover of shop in PostgreSQL store"],
    );
    // What the watcher records in the first record of a run it starts.
    sql(
        &c,
        r#"UPDATE runbook_journal SET line = replace(line, '"event":"run_started"',
               '"event":"run_started","trigger":{"deployment":"shop","action":"failover"}')
           WHERE pos = 1 AND line ~ '"runbook":"[^"]*failover\.rhai"'"#,
    );
    let run = sql(
        &c,
        "SELECT run_id FROM runbook_journal WHERE pos = 1 AND line LIKE '%\"trigger\"%'",
    );
    let acked = ack();
    assert_eq!(acked.code, 0, "{}", acked.all());
    assert_says(
        &acked.stdout,
        &[format!("acknowledged the automatic failover {run}")],
    );
    assert_says(
        &ack().stdout,
        &[format!(
            "the automatic failover {run} was already acknowledged; nothing changed"
        )],
    );
}

/// Rewrites run RUN's first record with the function given.
type EditFirst<'a> = dyn Fn(&str, &dyn Fn(&str) -> String) + 'a;

/// `runbook prune --older-than AGE` removes the old runs that are over or failed before
/// changing anything, and keeps the old ones still open and each deployment's last automatic
/// failover; `--dry-run` lists them and removes nothing. `edit_first` rewrites a run's first
/// record where the store keeps it (what makes a run old, or a watcher's, here).
fn prune_keeps_what_may_still_be_needed(store: &[&str], edit_first: &EditFirst) {
    let with_store = |args: &[&str]| -> Vec<String> {
        args.iter().chain(store).map(|s| s.to_string()).collect()
    };
    let t = Test::new()
        .inventory("name = \"shop\"\n")
        .file("status.rhai", r#"step("look", || log("all well"));"#)
        .file(
            "check.rhai",
            r#"step("check", || fail("found a problem"));"#,
        )
        .file("gate.rhai", r#"step("gate", || approve("go?"));"#)
        .file(
            "change.rhai",
            r#"step("change", || { shell::run("true"); fail("half-way"); });"#,
        )
        .file("failover.rhai", r#"log("failing over");"#);
    let exec = |args: &[&str]| {
        let args = with_store(args);
        t.exec(&args.iter().map(String::as_str).collect::<Vec<_>>())
    };
    let mut ids = BTreeMap::new();
    for (name, file, code) in [
        ("old finished", "status", 0),
        ("old check", "check", 1),
        ("old paused", "gate", 3),
        ("old change", "change", 1),
        ("old failover", "failover", 0),
        ("last failover", "failover", 0),
        ("new", "status", 0),
    ] {
        let before: Vec<String> = listed(&exec(&["runs", "--all", "--json"]));
        let ran = exec(&["run", &format!("{file}.rhai"), "-i", "inventory.toml"]);
        assert_eq!(ran.code, code, "{name}: {}", ran.all());
        let after = listed(&exec(&["runs", "--all", "--json"]));
        let id = after.into_iter().find(|id| !before.contains(id)).unwrap();
        ids.insert(name, id);
    }
    for (name, id) in &ids {
        let at = match *name {
            "new" => continue,
            "old failover" => "2025-01-01T00:00:00.000Z",
            _ => "2025-03-01T00:00:00.000Z",
        };
        edit_first(id, &|line: &str| {
            let from = line.find("\"at\":\"").unwrap() + 6;
            let to = from + line[from..].find('"').unwrap();
            format!("{}{at}{}", &line[..from], &line[to..])
        });
    }
    let watched = |line: &str| {
        line.replace(
            "\"event\":\"run_started\"",
            "\"event\":\"run_started\",\"trigger\":{\"deployment\":\"shop\",\"action\":\"failover\"}",
        )
    };
    edit_first(&ids["old failover"], &watched);
    edit_first(&ids["last failover"], &watched);

    let all_before = listed(&exec(&["runs", "--all", "--json"]));
    let plan = exec(&["prune", "--older-than", "30d", "--dry-run"]);
    assert_eq!(plan.code, 0, "{}", plan.all());
    let mut gone = vec![
        ids["old finished"].clone(),
        ids["old check"].clone(),
        ids["old failover"].clone(),
    ];
    gone.sort();
    let mut named: Vec<String> = plan
        .stdout
        .lines()
        .filter(|l| l.starts_with("20"))
        .map(str::to_string)
        .collect();
    named.sort();
    assert_eq!(named, gone, "{}", plan.stdout);
    assert_says(
        &plan.stdout,
        &[
            "would remove 3 runs started before ",
            " (2 over, 1 failed before changing anything) from ",
            "; nothing was removed",
            &format!(
                "kept {}, the last automatic failover of shop",
                ids["last failover"]
            ),
            "kept 2 runs that started before then and may still need a person",
        ],
    );
    assert_eq!(listed(&exec(&["runs", "--all", "--json"])), all_before);

    let pruned = exec(&["prune", "--older-than", "30d"]);
    assert_eq!(pruned.code, 0, "{}", pruned.all());
    assert_says(&pruned.stdout, &["removed 3 runs started before "]);
    let mut left = listed(&exec(&["runs", "--all", "--json"]));
    left.sort();
    let mut want: Vec<String> = ["old paused", "old change", "last failover", "new"]
        .iter()
        .map(|n| ids[n].clone())
        .collect();
    want.sort();
    assert_eq!(left, want);
    // What is left still works: the paused run resumes, the watcher finds its failover.
    let resumed = exec(&["resume", &ids["old paused"], "--approve"]);
    assert_eq!(resumed.code, 0, "{}", resumed.all());
    let ack = exec(&["watch", "--ack", "-i", "inventory.toml"]);
    assert_says(
        &ack.stdout,
        &[format!(
            "acknowledged the automatic failover {}",
            ids["last failover"]
        )],
    );
    // Resumed to its end, the old paused run is over: the next prune takes it.
    let again = exec(&["prune", "--older-than", "30d"]);
    assert_says(
        &again.stdout,
        &[
            "removed 1 run started before ",
            " (1 over, 0 failed before changing anything)",
        ],
    );
    assert!(!listed(&exec(&["runs", "--all", "--json"])).contains(&ids["old paused"]));
    let bad = exec(&["prune", "--older-than", "soon"]);
    assert_eq!(bad.code, 2, "{}", bad.all());
    assert_says(&bad.stderr, &["--older-than soon: "]);
}

#[test]
fn prune_in_postgres_keeps_what_may_still_be_needed() {
    let (_d, c) = database();
    let url = c.nodes[0].url();
    prune_keeps_what_may_still_be_needed(&["--store", &url], &|run, edit| {
        let line = sql(
            &c,
            &format!("SELECT line FROM runbook_journal WHERE run_id = '{run}' AND pos = 1"),
        );
        let new = edit(&line).replace('\'', "''");
        sql(
            &c,
            &format!(
                "UPDATE runbook_journal SET line = '{new}' WHERE run_id = '{run}' AND pos = 1"
            ),
        );
    });
}

#[test]
fn prune_in_a_directory_keeps_what_may_still_be_needed() {
    let shared = tempfile::tempdir().unwrap();
    let state = shared.path().join("state");
    let runs = state.join("runs");
    prune_keeps_what_may_still_be_needed(
        &["--state-dir", state.to_str().unwrap()],
        &|run, edit| {
            let path = runs.join(run).join("journal.jsonl");
            let text = std::fs::read_to_string(&path).unwrap();
            let (first, rest) = text.split_once('\n').unwrap();
            std::fs::write(&path, format!("{}\n{rest}", edit(first))).unwrap();
        },
    );
}
