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
}
