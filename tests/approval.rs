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
