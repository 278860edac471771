use crate::support::{Server, Test};

#[test]
fn approval_pauses_without_a_terminal_and_resume_approve_continues() {
    let server = Server::start();
    let t = Test::new().script(&format!(
        r#"
        step("before", || http::post(#{{ url: "{b}" }}));
        step("gate", || approve("promote eu-west-1?"));
        step("after", || http::post(#{{ url: "{a}" }}));
        "#,
        b = server.url("/before"),
        a = server.url("/after")
    ));
    let paused = t.exec(&["run", "runbook.rhai"]);
    assert_eq!(paused.code, 3, "{}", paused.all());
    assert!(
        paused
            .stderr
            .contains("waiting for approval: \"promote eu-west-1?\""),
        "{}",
        paused.stderr
    );
    let run = t.only_run();
    assert!(
        paused
            .stderr
            .contains(&format!("runbook resume {run} --approve")),
        "{}",
        paused.stderr
    );
    assert_eq!(server.count("POST", "/after"), 0);

    // Resuming without --approve pauses again, still before the change.
    assert_eq!(t.exec(&["resume", &run]).code, 3);
    assert_eq!(server.count("POST", "/after"), 0);

    let done = t.exec(&["resume", &run, "--approve"]);
    assert_eq!(done.code, 0, "{}", done.all());
    assert!(
        done.stdout
            .contains("approved by tester (resume --approve)"),
        "{}",
        done.stdout
    );
    assert_eq!(
        (
            server.count("POST", "/before"),
            server.count("POST", "/after")
        ),
        (1, 1)
    );
    let journal = t.journal(&run);
    assert!(
        journal.contains(r#""event":"approved""#) && journal.contains(r#""by":"tester""#),
        "{journal}"
    );
}

#[test]
fn yes_approves_up_front_and_is_recorded() {
    let t = Test::new()
        .script(r#"approve("go?"); log("went");"#)
        .run(&["--yes"])
        .code(0)
        .stdout("went");
    t.check();
    assert!(t.journal(&t.only_run()).contains(r#""via":"--yes""#));
}

#[test]
fn the_resume_hint_names_a_state_dir_given_on_the_command_line_and_works_pasted() {
    let t = Test::new()
        .script(r#"step("gate", || approve("go on?")); step("after", || log("after the gate"));"#);
    let paused = t.exec(&["run", "runbook.rhai", "--state-dir", "ops state"]);
    assert_eq!(paused.code, 3, "{}", paused.all());
    let hint = paused
        .stderr
        .lines()
        .find_map(|l| l.trim().strip_prefix("next: runbook "))
        .unwrap_or_else(|| panic!("no resume hint:\n{}", paused.stderr))
        .to_string();
    assert!(
        hint.ends_with("--approve --state-dir 'ops state'"),
        "{hint}"
    );
    // Pasted into a shell: the quoting holds.
    let out = std::process::Command::new("sh")
        .arg("-c")
        .arg(format!("{} {hint}", crate::support::BIN))
        .current_dir(t.dir.path())
        .env("RUNBOOK_OPERATOR", "tester")
        .env_remove("RUNBOOK_STATE_DIR")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{stdout}");
    assert!(stdout.contains("after the gate"), "{stdout}");

    // From the environment, the shell still has it: the hint stays short.
    let again = t
        .env("RUNBOOK_STATE_DIR", "env state")
        .exec(&["run", "runbook.rhai"]);
    assert_eq!(again.code, 3, "{}", again.all());
    assert!(!again.stderr.contains("--state-dir"), "{}", again.stderr);
}
