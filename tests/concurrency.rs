//! Two operators starting conflicting runbooks at the same instant, a hundred times: exactly
//! one proceeds each time, the other exits 4 naming the holder. And signals: SIGTERM stops
//! after the current action; a second SIGINT stops at once; both leave a resumable run.

use std::time::Duration;

use crate::support::{wait_for, Server, Test};

#[test]
fn of_two_simultaneous_runs_exactly_one_proceeds_a_hundred_times() {
    let t = Test::new()
        .script(r#"lock("prod"); step("hold", || sleep("300ms"));"#)
        .file(
            "other.rhai",
            r#"lock("prod"); step("hold", || sleep("300ms"));"#,
        );
    let mut refused = 0;
    for i in 0..100 {
        let state = format!("state-{i}");
        let a = t.spawn(&["--state-dir", &state, "run", "runbook.rhai"]);
        let b = t.spawn(&["--state-dir", &state, "run", "other.rhai"]);
        let (a, b) = (a.wait_with_output().unwrap(), b.wait_with_output().unwrap());
        let mut codes = [a.status.code().unwrap_or(-1), b.status.code().unwrap_or(-1)];
        codes.sort();
        assert_eq!(
            codes,
            [0, 4],
            "round {i}: {}{}",
            String::from_utf8_lossy(&a.stderr),
            String::from_utf8_lossy(&b.stderr)
        );
        let loser = if a.status.code() == Some(4) { &a } else { &b };
        let text = String::from_utf8_lossy(&loser.stderr);
        assert!(
            text.contains("the lock 'prod' is held by run "),
            "round {i}: {text}"
        );
        refused += 1;
    }
    assert_eq!(refused, 100);
}

#[test]
fn a_second_sigint_stops_at_once_and_the_run_is_still_resumable() {
    let server = Server::start();
    server.reply("/slow", 200, "ok", Duration::from_secs(30));
    let t = Test::new().script(&format!(
        "step(\"a\", || http::get(\"{a}\"));\nstep(\"b\", || http::post(#{{ url: \"{b}\" }}));\n",
        a = server.url("/slow"),
        b = server.url("/b")
    ));
    let child = t.spawn(&["run", "runbook.rhai"]);
    assert!(wait_for(Duration::from_secs(10), || server
        .count("GET", "/slow")
        == 1));
    let started = std::time::Instant::now();
    for _ in 0..2 {
        unsafe {
            libc::kill(child.id() as i32, libc::SIGINT);
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let out = child.wait_with_output().unwrap();
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "it did not wait for the 30 s request"
    );
    assert_eq!(out.status.code(), Some(130));
    assert!(String::from_utf8_lossy(&out.stderr).contains("stopped at once"));
    server.reply("/slow", 200, "ok", Duration::ZERO);
    let ran = t.exec(&["resume", &t.only_run()]);
    assert_eq!(ran.code, 0, "{}", ran.all());
    assert!(
        ran.stdout
            .contains("in flight when the run stopped; running it again (a read)"),
        "{}",
        ran.stdout
    );
    assert_eq!(server.count("POST", "/b"), 1);
}

#[test]
fn a_tls_error_names_the_target() {
    let server = Server::start();
    Test::new()
        .script(&format!(
            r#"http::get(#{{ url: "https://127.0.0.1:{}/x", retries: 0 }});"#,
            server.port
        ))
        .run(&[])
        .code(1)
        .stderr(&format!(
            "http::get failed: https://127.0.0.1:{}/x: ",
            server.port
        ))
        .check();
}
