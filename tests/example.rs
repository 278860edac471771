use crate::support::Test;

/// The README's quick start: the example runbook, paused for approval, then approved.
#[test]
fn the_quick_start_example_runs_and_resumes() {
    let root = env!("CARGO_MANIFEST_DIR");
    let script = format!("{root}/runbooks/examples/hello.rhai");
    let t = Test::new();
    let first = t.exec(&["run", &script, "--var", "name=Ada", "--var", "wait=1s"]);
    assert_eq!(first.code, 3, "{}", first.all());
    assert!(first.stderr.contains("--approve"), "{}", first.stderr);
    let run = t.only_run();
    let second = t.exec(&["resume", &run, "--approve"]);
    assert_eq!(second.code, 0, "{}", second.all());
    assert!(
        second.stdout.contains("hello-runbook.txt says: hello, Ada"),
        "{}",
        second.stdout
    );
    assert_eq!(
        std::fs::read_to_string(t.path("hello-runbook.txt")).unwrap(),
        "hello, Ada\n"
    );
    let check = t.exec(&["check", &script]);
    assert_eq!(check.code, 0, "{}", check.all());

    // The dry-run the README shows: who runs it is looked up for real, the writes are planned.
    let t = Test::new();
    let user = std::process::Command::new("id")
        .arg("-un")
        .output()
        .unwrap();
    let user = String::from_utf8_lossy(&user.stdout).trim().to_string();
    let dry = t.exec(&["run", &script, "--dry-run"]);
    assert_eq!(dry.code, 0, "{}", dry.all());
    crate::support::assert_says(
        &dry.stdout,
        &[
            &format!("running as {user}"),
            "Plan: 3 changes",
            "~ shell::run: run `sh -c echo \"hello, operator\" > \"$1\" sh hello-runbook.txt`",
        ],
    );
    assert!(!t.path("hello-runbook.txt").exists(), "nothing was written");
}
