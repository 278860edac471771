use std::collections::BTreeMap;
use std::time::Duration;

use crate::support::{assert_says, kill9, wait_for, Test};

#[test]
fn a_second_run_of_the_same_runbook_gets_exit_4_naming_the_holder() {
    let t = Test::new().script(r#"step("hold", || sleep("20s"));"#);
    let first = t.spawn_until_sleeping(&["run", "runbook.rhai"]);
    let holder = t.only_run();
    // The same store, spelled so that the commands it suggests must carry the option.
    let second = t.exec(&["run", "runbook.rhai", "--state-dir", "./.runbook"]);
    assert_eq!(second.code, 4, "{}", second.all());
    assert!(
        second.stderr.contains(&format!("held by run {holder}")),
        "{}",
        second.stderr
    );
    assert!(second.stderr.contains("by tester"), "{}", second.stderr);
    assert_says(
        &second.stderr,
        &[
            format!("\n  next: wait for it to finish (`runbook log {holder} --follow --state-dir ./.runbook` shows it as it goes), or, if this cannot wait, stop it from here with `runbook stop {holder} --state-dir ./.runbook` (or Ctrl-C where it runs, `kill "),
            format!("`kill {}` on ", first.id()),
        ],
    );
    assert_eq!(t.run_ids().len(), 1, "the refused run left nothing");

    // Without a run, stop lists the runs running now with their commands.
    let which = t.exec(&["stop", "--state-dir", "./.runbook"]);
    assert_eq!(which.code, 2, "{}", which.all());
    assert_says(
        &which.stderr,
        &[
            format!("which run? `runbook stop RUN`; these are running:\n  {holder}  runbook.rhai, started "),
            format!(" by tester, running at step 'hold'\n      runbook stop {holder} --state-dir ./.runbook --reason \"...\"\n"),
        ],
    );
    // Stopped as it says, from here: the holder stops at its next safe point (its timer),
    // resumable, and says who asked; running this again then says how to take over.
    let stopped = t.exec(&[
        "stop",
        &holder,
        "--state-dir",
        "./.runbook",
        "--reason",
        "the primary is down",
    ]);
    assert_eq!(stopped.code, 0, "{}", stopped.all());
    assert_says(
        &stopped.stdout,
        &[
            format!("run {holder} ("),
            "stopped: interrupted at step 'hold'".into(),
        ],
    );
    let out = first.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(130), "{out:?}");
    assert_says(
        &String::from_utf8_lossy(&out.stderr),
        &[
            "interrupted: stopped after the current action, as asked by tester on ",
            "(`runbook stop`): the primary is down; continue with: runbook resume ",
        ],
    );
    let journal = t.journal(&holder);
    assert!(
        journal.contains(r#""event":"run_interrupted","reason":"stopped by tester on "#),
        "{journal}"
    );
    assert!(
        !t.path(&format!(".runbook/runs/{holder}/stop.json"))
            .exists(),
        "the request was taken back by the run it stopped"
    );
    let third = t.exec(&["run", "runbook.rhai"]);
    assert_eq!(third.code, 4, "{}", third.all());
    assert_says(
        &third.stderr,
        &[
            format!("claimed by run {holder}"),
            format!("continue it with `runbook resume {holder}`"),
        ],
    );
    // A run that is not running has nothing to stop.
    let again = t.exec(&["stop", &holder]);
    assert_eq!(again.code, 2, "{}", again.all());
    assert_says(
        &again.stderr,
        &[
            format!("run {holder} ("),
            ") is not running: it is interrupted at step 'hold'; there is nothing to stop".into(),
        ],
    );
}

/// A mistyped --var is bad input (exit 2, naming it) also while another run holds the lock
/// the runbook takes: its parameters are checked first, and nothing is kept.
#[test]
fn a_mistyped_var_is_bad_input_even_while_the_lock_is_held() {
    let t = Test::new().script(
        r#"let p = params(#{ target: #{ type: "string", choices: ["a", "b"] } });
step("hold", || sleep("20s"));"#,
    );
    let mut first = t.spawn_until_sleeping(&["run", "runbook.rhai", "--var", "target=a"]);
    for (var, says) in [
        (
            "taget=a",
            "unknown parameter --var taget (did you mean `target`?)",
        ),
        ("target=c", "--var target=c: must be one of a, b"),
    ] {
        let refused = t.exec(&["run", "runbook.rhai", "--var", var]);
        assert_eq!(refused.code, 2, "{}", refused.all());
        assert_says(&refused.stderr, &["error: invalid parameters:\n  ", says]);
        assert!(!refused.all().contains("held by"), "{}", refused.all());
    }
    assert_eq!(t.run_ids().len(), 1, "a refused run left something");
    kill9(&mut first);
}

#[test]
fn a_named_lock_spans_different_runbooks() {
    let t = Test::new()
        .file(
            "a.rhai",
            r#"lock("prod-database"); step("hold", || sleep("20s"));"#,
        )
        .file(
            "b.rhai",
            r#"lock("prod-database"); step("x", || log("should not run"));"#,
        );
    let mut first = t.spawn_until_sleeping(&["run", "a.rhai"]);
    let second = t.exec(&["run", "b.rhai"]);
    assert_eq!(second.code, 4, "{}", second.all());
    assert!(
        second
            .stderr
            .contains("the lock 'prod-database' is held by run"),
        "{}",
        second.stderr
    );
    assert!(!second.stdout.contains("should not run"));
    kill9(&mut first);
}

#[test]
fn a_lock_left_by_a_killed_process_is_taken_over_with_a_message() {
    let t = Test::new().script(r#"step("hold", || sleep("20s"));"#);
    let mut first = t.spawn_until_sleeping(&["run", "runbook.rhai"]);
    let dead = t.only_run();
    kill9(&mut first);
    let t = t.script(r#"log("second");"#);
    let ran = t.exec(&["run", "runbook.rhai"]);
    assert_eq!(ran.code, 0, "{}", ran.all());
    assert!(
        ran.stdout
            .contains(&format!("took over the lock 'runbook' from run {dead}")),
        "{}",
        ran.stdout
    );
    assert!(ran.stdout.contains("that process is gone"));
}

#[test]
fn the_shipped_runbooks_exclude_each_other_on_one_deployment_but_not_a_dry_run() {
    let inventory = "[dns]\nzone = \"example.com\"\nrecord = \"orchestrator.example.com\"\n[regions.us-east-1]\n[regions.eu-west-1]\n";
    let t = Test::new().inventory(inventory).script(
        r#"import "incident" as incident; incident::exclusive(inventory); step("hold", || sleep("30s"));"#,
    );
    let mut first = t.spawn_until_sleeping(&["run", "runbook.rhai", "-i", "inventory.toml"]);
    let holder = t.only_run();

    let shipped = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("runbooks");
    for book in [
        "initial-setup",
        "planned-failover",
        "emergency-failover",
        "rollback",
        "maintenance",
    ] {
        let path = shipped.join(format!("{book}.rhai"));
        let mut args = vec!["run", path.to_str().unwrap(), "-i", "inventory.toml"];
        if book == "planned-failover" {
            args.extend(["--var", "target=eu-west-1"]);
        }
        let ran = t.exec(&args);
        assert_eq!(ran.code, 4, "{book}: {}", ran.all());
        // Who holds it, what it is doing, and how to stop it when this cannot wait.
        crate::support::assert_says(
            &ran.stderr,
            &[
                format!("the lock 'deployment orchestrator.example.com' is held by run {holder}"),
                "now waiting in step 'hold' (".to_string(),
                format!(
                    "`runbook stop {holder}` (or Ctrl-C where it runs, `kill {}` on ",
                    first.id()
                ),
                "it stops after its current action and stays resumable".to_string(),
            ],
        );
    }
    assert_eq!(t.run_ids().len(), 1, "the refused runs left nothing");

    // A dry-run changes nothing: it plans while the lock is held.
    let plan = t.exec(&["run", "runbook.rhai", "-i", "inventory.toml", "--dry-run"]);
    assert_eq!(plan.code, 0, "{}", plan.all());
    kill9(&mut first);

    // The inventory's `name`, when it has one, names the lock.
    let t = t.inventory(&format!("name = \"orchestrator-production\"\n{inventory}"));
    let mut first = t.spawn(&["run", "runbook.rhai", "-i", "inventory.toml"]);
    assert!(wait_for(Duration::from_secs(10), || {
        let ids = t.run_ids();
        ids.len() == 2 && ids.iter().all(|r| t.journal(r).contains("timer_started"))
    }));
    let rollback = shipped.join("rollback.rhai");
    let ran = t.exec(&["run", rollback.to_str().unwrap(), "-i", "inventory.toml"]);
    assert_eq!(ran.code, 4, "{}", ran.all());
    assert!(
        ran.stderr
            .contains("the lock 'deployment orchestrator-production' is held by run"),
        "{}",
        ran.stderr
    );
    kill9(&mut first);
}

/// A run that takes the deployment's lock, makes a change, and then waits for approval.
const PAUSES_MID_CHANGE: &str = r#"
lock("deployment prod");
step("stop writes", || shell::run(#{ argv: ["touch", "writes-stopped"] }));
step("approval", || approve("promote?"));
step("promote", || log("promoted"));
"#;

const ANOTHER_PROCEDURE: &str = r#"
lock("deployment prod");
step("maintain", || log("maintaining"));
"#;

#[test]
fn a_paused_run_keeps_the_deployment_until_it_is_resumed() {
    let t = Test::new()
        .file("failover.rhai", PAUSES_MID_CHANGE)
        .file("maintenance.rhai", ANOTHER_PROCEDURE);
    let paused = t.exec(&["run", "failover.rhai"]);
    assert_eq!(paused.code, 3, "{}", paused.all());
    let run = t.only_run();
    // Its process is gone, its claim is not.
    let other = t.exec(&["run", "maintenance.rhai"]);
    assert_eq!(other.code, 4, "{}", other.all());
    assert_says(
        &other.stderr,
        &[
            format!("the lock 'deployment prod' is claimed by run {run}"),
            "which is paused at step 'approval'".to_string(),
            format!("`runbook resume {run} --approve`"),
            format!("`runbook abandon {run}`"),
        ],
    );
    assert!(!other.stdout.contains("maintaining"));
    assert_eq!(t.run_ids().len(), 1, "the refused run left nothing");
    let listed = t.exec(&["runs"]);
    assert!(
        listed.stdout.contains("[claims deployment prod, failover]"),
        "{}",
        listed.stdout
    );

    let done = t.exec(&["resume", &run, "--approve"]);
    assert_eq!(done.code, 0, "{}", done.all());
    let other = t.exec(&["run", "maintenance.rhai"]);
    assert_eq!(other.code, 0, "a finished run released it: {}", other.all());
}

#[test]
fn an_abandoned_run_releases_its_claim_and_is_recorded() {
    let t = Test::new()
        .file("failover.rhai", PAUSES_MID_CHANGE)
        .file("maintenance.rhai", ANOTHER_PROCEDURE)
        .file("status.rhai", "log(1);");
    assert_eq!(t.exec(&["run", "failover.rhai"]).code, 3);
    let run = t.only_run();
    let abandoned = t.exec(&[
        "--state-dir",
        "./.runbook",
        "abandon",
        &run,
        "--reason",
        "rolled back by hand",
    ]);
    assert_eq!(abandoned.code, 0, "{}", abandoned.all());
    // What to check next is the status runbook beside it, with the store as given.
    assert!(
        abandoned.stdout.contains(&format!("run {run}"))
            && abandoned
                .stdout
                .contains("abandoned by tester (rolled back by hand)")
            && abandoned.stdout.contains("released deployment prod")
            && abandoned.stdout.contains(&format!(
                "Nothing was undone: check the deployment with `runbook run {} -i INVENTORY --state-dir ./.runbook`",
                t.path("status.rhai").display()
            )),
        "{}",
        abandoned.stdout
    );
    assert!(t
        .journal(&run)
        .contains(r#""event":"run_abandoned","by":"tester","reason":"rolled back by hand""#));
    assert!(t.exec(&["runs"]).stdout.contains("abandoned"));
    let other = t.exec(&["run", "maintenance.rhai"]);
    assert_eq!(other.code, 0, "{}", other.all());
    let resumed = t.exec(&["resume", &run, "--approve"]);
    assert_eq!(resumed.code, 2, "{}", resumed.all());
    assert!(
        resumed.stderr.contains("already abandoned"),
        "{}",
        resumed.stderr
    );
    let twice = t.exec(&["abandon", &run]);
    assert_eq!(twice.code, 2, "{}", twice.all());
}

#[test]
fn a_run_killed_mid_change_keeps_its_claim_and_a_live_one_cannot_be_abandoned() {
    let t = Test::new()
        .file(
            "failover.rhai",
            r#"
            lock("deployment prod");
            step("stop writes", || shell::run(#{ argv: ["touch", "writes-stopped"] }));
            step("wait", || sleep("30s"));
            "#,
        )
        .file("maintenance.rhai", ANOTHER_PROCEDURE);
    let mut first = t.spawn_until_sleeping(&["run", "failover.rhai"]);
    let run = t.only_run();
    let live = t.exec(&["abandon", &run, "--state-dir", "./.runbook"]);
    assert_eq!(live.code, 4, "{}", live.all());
    assert_says(
        &live.stderr,
        &[
            format!("error: run {run} is still running (run {run} (failover.rhai, by tester on "),
            format!(
                "\n  next: stop it first with `runbook stop {run} --state-dir ./.runbook` (or Ctrl-C where it runs, `kill {}` on ",
                first.id()
            ),
            format!("), then `runbook abandon {run} --state-dir ./.runbook`"),
        ],
    );
    kill9(&mut first);
    let other = t.exec(&["run", "maintenance.rhai"]);
    assert_eq!(other.code, 4, "{}", other.all());
    assert!(
        other.stderr.contains("which is cut off at step 'wait'"),
        "{}",
        other.stderr
    );
    // Resuming the run itself continues it; here it is abandoned instead.
    assert_eq!(t.exec(&["abandon", &run]).code, 0);
    assert_eq!(t.exec(&["run", "maintenance.rhai"]).code, 0);
}

#[test]
fn a_run_that_changed_nothing_claims_nothing_when_it_stops() {
    let t = Test::new()
        .file(
            "refused.rhai",
            r#"
            lock("deployment prod");
            step("alert", || { try { notify::webhook(#{ url: "http://127.0.0.1:1/hook", json: #{}, retries: 0 }); } catch {} });
            step("check", || fail("the primary is healthy; refusing"));
            "#,
        )
        .file("maintenance.rhai", ANOTHER_PROCEDURE);
    let refused = t.exec(&["run", "refused.rhai"]);
    assert_eq!(refused.code, 1, "{}", refused.all());
    assert!(
        refused
            .stderr
            .contains("nothing was changed; once the cause is fixed, run it again"),
        "{}",
        refused.stderr
    );
    let other = t.exec(&["run", "maintenance.rhai"]);
    assert_eq!(other.code, 0, "{}", other.all());
}

/// A runbook refused for a mistake in its script (exit 2) never began: it claims nothing, so
/// the next run of it says nothing of taking over from a run no one can find.
#[test]
fn a_runbook_refused_for_a_mistake_claims_nothing() {
    const MISTAKE: &str = r#"step("x", || shell::run(#{ argv: ["true"], idempotnet: true }));"#;
    let t = Test::new().script(MISTAKE);
    let refused = t.exec(&["run", "runbook.rhai"]);
    assert_eq!(refused.code, 2, "{}", refused.all());
    assert!(
        refused.stderr.contains("has no field `idempotnet`"),
        "{}",
        refused.stderr
    );
    assert!(t.run_ids().is_empty(), "no run was recorded");
    let listed = t.exec(&["runs"]);
    assert!(!listed.stdout.contains("[claims"), "{}", listed.stdout);

    let t = t.script(r#"step("x", || shell::run(#{ argv: ["true"], idempotent: true }));"#);
    let ran = t.exec(&["run", "runbook.rhai"]);
    assert_eq!(ran.code, 0, "{}", ran.all());
    assert!(!ran.all().contains("took over"), "{}", ran.all());

    // While another run holds the lock, the mistake is still what the operator hears first.
    let t = Test::new().script(r#"step("hold", || sleep("20s"));"#);
    let mut holder = t.spawn_until_sleeping(&["run", "runbook.rhai"]);
    let t = t.script(MISTAKE);
    let refused = t.exec(&["run", "runbook.rhai"]);
    assert_eq!(refused.code, 2, "{}", refused.all());
    assert!(
        !refused.stderr.contains("held by run"),
        "{}",
        refused.stderr
    );
    kill9(&mut holder);
}

/// A resume refused because the script now has a mistake changes no claim: a run that held
/// none still holds none, a paused run still holds its own.
#[test]
fn a_resume_refused_for_a_mistake_leaves_the_claims_as_they_were() {
    let t = Test::new()
        .file(
            "runbook.rhai",
            r#"step("check", || fail("the primary is healthy"));"#,
        )
        .file("failover.rhai", PAUSES_MID_CHANGE)
        .file("maintenance.rhai", ANOTHER_PROCEDURE);
    let failed = t.exec(&["run", "runbook.rhai"]);
    assert_eq!(failed.code, 1, "{}", failed.all());
    let run = t.only_run();
    let t = t.file("runbook.rhai", r#"step("check", || fail("unclosed);"#);
    let refused = t.exec(&["resume", &run]);
    assert_eq!(refused.code, 2, "{}", refused.all());
    let listed = t.exec(&["runs"]);
    assert!(!listed.stdout.contains("[claims"), "{}", listed.stdout);
    let t = t.file("runbook.rhai", r#"log("again");"#);
    let again = t.exec(&["run", "runbook.rhai"]);
    assert_eq!(again.code, 0, "{}", again.all());
    assert!(!again.all().contains("took over"), "{}", again.all());

    let paused = t.exec(&["run", "failover.rhai"]);
    assert_eq!(paused.code, 3, "{}", paused.all());
    let paused_run = t.newest_run();
    let t = t.file(
        "failover.rhai",
        &PAUSES_MID_CHANGE.replace("approve(", "approve(#{ promt: 1 }, "),
    );
    let refused = t.exec(&["resume", &paused_run, "--approve"]);
    assert_eq!(refused.code, 2, "{}", refused.all());
    let other = t.exec(&["run", "maintenance.rhai"]);
    assert_eq!(other.code, 4, "still claimed: {}", other.all());
    assert!(
        other.stderr.contains(&format!(
            "the lock 'deployment prod' is claimed by run {paused_run}"
        )),
        "{}",
        other.stderr
    );
}

/// Holds every lock file of the test's store, as a paused run's process does in the moments
/// between journaling its pause and exiting; lets go of each when it is dropped. By file name.
fn hold_lock_files(t: &Test) -> BTreeMap<String, std::fs::File> {
    use std::os::fd::AsRawFd;
    let dir = t.path(".runbook/locks");
    let files: BTreeMap<String, std::fs::File> = std::fs::read_dir(&dir)
        .expect("the paused run's lock files")
        .map(|e| {
            let e = e.unwrap();
            let file = std::fs::OpenOptions::new()
                .read(true)
                .write(true)
                .open(e.path())
                .unwrap();
            (e.file_name().to_string_lossy().into_owned(), file)
        })
        .collect();
    assert_eq!(
        files.keys().collect::<Vec<_>>(),
        ["deployment_prod.lock", "failover.lock"],
        "the default lock and 'deployment prod'"
    );
    for f in files.values() {
        let rc = unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
        assert_eq!(
            rc, 0,
            "the paused run's process is gone, so nothing holds them"
        );
    }
    files
}

/// A run that paused mid-change, with its lock files held as if its process were still
/// exiting: the test, the run's id and the held files.
fn paused_and_still_exiting() -> (Test, String, BTreeMap<String, std::fs::File>) {
    let t = Test::new().file("failover.rhai", PAUSES_MID_CHANGE);
    assert_eq!(t.exec(&["run", "failover.rhai"]).code, 3);
    let run = t.only_run();
    let held = hold_lock_files(&t);
    (t, run, held)
}

#[test]
fn a_resume_the_instant_a_run_pauses_waits_for_its_process_to_let_go() {
    // The pause is journaled, its process has not exited yet: the resume waits for it.
    // It lets go of the run's own lock first and of the one its script took 0.4 s later, so
    // both the resume and the script's lock() wait.
    let (t, run, mut held) = paused_and_still_exiting();
    let exiting = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(400));
        drop(held.remove("failover.lock"));
        std::thread::sleep(Duration::from_millis(400));
        drop(held);
    });
    let resumed = t.exec(&["resume", &run, "--approve"]);
    exiting.join().unwrap();
    assert_eq!(resumed.code, 0, "{}", resumed.all());
    assert!(resumed.stdout.contains("promoted"), "{}", resumed.all());
}

#[test]
fn a_resume_is_refused_when_the_paused_runs_process_does_not_let_go() {
    let (t, run, held) = paused_and_still_exiting();
    let resumed = t.exec(&["resume", &run, "--approve"]);
    drop(held);
    assert_eq!(resumed.code, 4, "{}", resumed.all());
    assert!(
        resumed.stderr.contains(&format!(
            "run {run} is still running in another process (pid "
        )) && resumed
            .stderr
            .contains(&format!("and resume it again: `runbook resume {run}`")),
        "{}",
        resumed.stderr
    );
    assert!(!resumed.stdout.contains("promoted"), "{}", resumed.all());
    assert!(
        !t.journal(&run).contains("run_resumed"),
        "the refused resume journaled nothing"
    );
    // Once it has let go, the same resume goes on.
    let resumed = t.exec(&["resume", &run, "--approve"]);
    assert_eq!(resumed.code, 0, "{}", resumed.all());
}

#[test]
fn resuming_a_run_that_is_still_running_is_refused_at_once_naming_its_process() {
    let t = Test::new().script(r#"step("hold", || sleep("20s"));"#);
    let mut first = t.spawn_until_sleeping(&["run", "runbook.rhai"]);
    let run = t.only_run();
    let started = std::time::Instant::now();
    let resumed = t.exec(&["resume", &run]);
    let waited = started.elapsed();
    kill9(&mut first);
    assert_eq!(resumed.code, 4, "{}", resumed.all());
    let pid = first.id();
    assert_says(
        &resumed.stderr,
        &[
            format!("run {run} is still running in another process (pid {pid} on "),
            format!("`kill {pid}` on"),
        ],
    );
    // Its journal records no end: nothing to wait for.
    assert!(waited < Duration::from_secs(5), "refused after {waited:?}");
    assert!(!t.journal(&run).contains("run_resumed"));
}

#[test]
fn an_abandon_the_instant_a_run_pauses_waits_for_its_process_to_let_go() {
    let (t, run, held) = paused_and_still_exiting();
    let exiting = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(600));
        drop(held);
    });
    let abandoned = t.exec(&["abandon", &run, "--reason", "the bot said no"]);
    exiting.join().unwrap();
    assert_eq!(abandoned.code, 0, "{}", abandoned.all());
    assert!(t.journal(&run).contains(r#""event":"run_abandoned""#));
    // Its claims went with it.
    assert!(!t.exec(&["runs"]).stdout.contains("[claims"));
}

/// `runbook stop` is for the process running the run now: a request left for another process
/// (a session that has ended) is not taken; and an action under way finishes first — the
/// command says so when it stops waiting, and the run stops before its next step.
#[test]
fn a_stop_is_for_the_running_process_and_lets_the_current_action_finish() {
    let t = Test::new().script(
        r#"step("work", || shell::run(#{ cmd: "sleep 2" }));
step("after", || log("after the work"));"#,
    );
    let mut child = t.spawn(&["run", "runbook.rhai"]);
    assert!(
        wait_for(Duration::from_secs(10), || t.run_ids().len() == 1
            && t.journal(&t.run_ids()[0]).contains("action_started")),
        "the run did not start its action"
    );
    let run = t.only_run();
    let stale = t.path(&format!(".runbook/runs/{run}/stop.json"));
    std::fs::write(
        &stale,
        r#"{"by":"someone","host":"elsewhere","reason":null,"at":"2026-01-01T00:00:00Z","pid":1,"process_host":"elsewhere"}"#,
    )
    .unwrap();
    std::thread::sleep(Duration::from_millis(700));
    assert!(
        child.try_wait().unwrap().is_none(),
        "a request for another process stopped it"
    );
    assert!(stale.exists(), "a request for another process was taken");

    let asked = t.exec(&["stop", &run, "--wait", "100ms"]);
    assert_eq!(asked.code, 0, "{}", asked.all());
    assert_says(
        &asked.stdout,
        &[
            format!("asked run {run} (pid {} on ", child.id()),
            ") to stop; it has not yet: it stops after its current action".into(),
        ],
    );
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(130), "{out:?}");
    let journal = t.journal(&run);
    assert!(journal.contains("action_finished"), "{journal}");
    assert!(!journal.contains("after the work"), "{journal}");
}

/// A run started on another host whose process is gone (killed, its host lost) looks
/// running in the journal; the locks it claimed can be taken, which says it is gone: stop
/// refuses at once, saying how the run goes on, instead of waiting for a process that is not
/// there.
#[test]
fn a_stop_of_a_run_whose_process_is_gone_elsewhere_says_so_at_once() {
    let t = Test::new().script(
        r#"lock("deployment prod");
step("change", || shell::run(#{ argv: ["true"] }));
step("hold", || sleep("30s"));"#,
    );
    let mut first = t.spawn_until_sleeping(&["run", "runbook.rhai"]);
    kill9(&mut first);
    let run = t.only_run();
    // As a store shared with another host shows it: a pid this host cannot check.
    let path = t.journal_path(&run);
    let journal = std::fs::read_to_string(&path).unwrap();
    let host = t.started(&run)["host"].as_str().unwrap().to_string();
    std::fs::write(
        &path,
        journal.replacen(&format!(r#""host":"{host}""#), r#""host":"elsewhere""#, 1),
    )
    .unwrap();
    let refused = t.exec(&["stop", &run]);
    assert_eq!(refused.code, 2, "{}", refused.all());
    assert_says(
        &refused.stderr,
        &[
            format!("run {run} ("),
            ") is not running: its process is gone without a word (it was running at step 'hold'); there is nothing to stop".into(),
            format!("continue it with `runbook resume {run}`"),
        ],
    );
    assert!(
        !t.path(&format!(".runbook/runs/{run}/stop.json")).exists(),
        "no request was left"
    );
}
