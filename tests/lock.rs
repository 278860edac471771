use std::time::Duration;

use crate::support::{kill9, wait_for, Test};

#[test]
fn a_second_run_of_the_same_runbook_gets_exit_4_naming_the_holder() {
    let t = Test::new().script(r#"step("hold", || sleep("20s"));"#);
    let mut first = t.spawn(&["run", "runbook.rhai"]);
    assert!(wait_for(Duration::from_secs(10), || t.run_ids().len() == 1
        && t.journal(&t.run_ids()[0]).contains("timer_started")));
    let holder = t.only_run();
    let second = t.exec(&["run", "runbook.rhai"]);
    assert_eq!(second.code, 4, "{}", second.all());
    assert!(
        second.stderr.contains(&format!("held by run {holder}")),
        "{}",
        second.stderr
    );
    assert!(second.stderr.contains("by tester"), "{}", second.stderr);
    assert_eq!(t.run_ids().len(), 1, "the refused run left nothing");
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
    let mut first = t.spawn(&["run", "a.rhai"]);
    assert!(wait_for(Duration::from_secs(10), || t.run_ids().len() == 1
        && t.journal(&t.run_ids()[0]).contains("timer_started")));
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
    let mut first = t.spawn(&["run", "runbook.rhai"]);
    assert!(wait_for(Duration::from_secs(10), || t.run_ids().len() == 1
        && t.journal(&t.run_ids()[0]).contains("timer_started")));
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
