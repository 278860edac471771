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

#[test]
fn the_shipped_runbooks_exclude_each_other_on_one_deployment_but_not_a_dry_run() {
    let inventory = "[dns]\nzone = \"example.com\"\nrecord = \"orchestrator.example.com\"\n";
    let t = Test::new().inventory(inventory).script(
        r#"import "incident" as incident; incident::exclusive(inventory); step("hold", || sleep("30s"));"#,
    );
    let mut first = t.spawn(&["run", "runbook.rhai", "-i", "inventory.toml"]);
    assert!(wait_for(Duration::from_secs(10), || t.run_ids().len() == 1
        && t.journal(&t.run_ids()[0]).contains("timer_started")));
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
        assert!(
            ran.stderr.contains(&format!(
                "the lock 'deployment orchestrator.example.com' is held by run {holder}"
            )),
            "{book}: {}",
            ran.stderr
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
