use crate::support::{assert_says, Ran, Server, Test};

fn paused_run(server: &Server) -> (Test, String) {
    let t = Test::new().script(&format!(
        "step(\"a\", || http::post(#{{ url: \"{a}\" }}));\nstep(\"gate\", || approve(\"go\"));\nstep(\"b\", || http::post(#{{ url: \"{b}\" }}));\n",
        a = server.url("/a"),
        b = server.url("/b")
    ));
    assert_eq!(t.exec(&["run", "runbook.rhai"]).code, 3);
    let run = t.only_run();
    (t, run)
}

#[test]
fn every_record_is_versioned_json_in_order() {
    let server = Server::start();
    let (t, run) = paused_run(&server);
    let journal = t.journal(&run);
    for (i, line) in journal.lines().enumerate() {
        let v: serde_json::Value = serde_json::from_str(line).unwrap();
        assert_eq!(v["v"], 1);
        assert_eq!(v["n"], (i + 1) as u64);
    }
    let first: serde_json::Value = serde_json::from_str(journal.lines().next().unwrap()).unwrap();
    assert_eq!(first["event"], "run_started");
    assert_eq!(first["operator"], "tester");
    assert_eq!(first["engine_version"], env!("CARGO_PKG_VERSION"));
    assert!(first["runbook_sha256"].as_str().unwrap().len() == 64);
}

#[test]
fn a_torn_last_line_is_dropped_and_reported() {
    let server = Server::start();
    let (t, run) = paused_run(&server);
    t.append_to_journal(
        &run,
        br#"{"v":1,"n":99,"at":"2026-11-21T00:00:00Z","event":"action_sta"#,
    );
    let log = t.exec(&["log", &run]);
    assert_eq!(log.code, 0);
    assert!(log.stderr.contains("last line is torn"), "{}", log.stderr);
    let ran = t.exec(&["resume", &run, "--approve"]);
    assert_eq!(ran.code, 0, "{}", ran.all());
    assert!(
        ran.stdout.contains("cut short by a crash and is dropped"),
        "{}",
        ran.stdout
    );
    assert_eq!(
        (server.count("POST", "/a"), server.count("POST", "/b")),
        (1, 1)
    );
    // The torn tail was cut before appending: every line parses now.
    for line in t.journal(&run).lines() {
        serde_json::from_str::<serde_json::Value>(line).expect("a whole record");
    }
}

#[test]
fn a_corrupt_middle_line_is_an_error_and_changes_nothing() {
    let server = Server::start();
    let (t, run) = paused_run(&server);
    let journal = t.journal(&run);
    let mut lines: Vec<&str> = journal.lines().collect();
    lines[2] = "{ this is not json";
    let corrupted = lines.join("\n") + "\n";
    std::fs::write(t.journal_path(&run), &corrupted).unwrap();
    let ran = t.exec(&["resume", &run, "--approve"]);
    assert_eq!(ran.code, 2, "{}", ran.all());
    assert!(ran.stderr.contains("line 3 is corrupt"), "{}", ran.stderr);
    assert_eq!(t.journal(&run), corrupted, "nothing was appended");
    assert_eq!(server.count("POST", "/b"), 0);
}

#[test]
fn a_journal_from_a_newer_engine_is_refused() {
    let server = Server::start();
    let (t, run) = paused_run(&server);
    t.append_to_journal(
        &run,
        b"{\"v\":2,\"n\":50,\"at\":\"2027-01-01T00:00:00Z\",\"event\":\"something_new\"}\n",
    );
    let ran = t.exec(&["resume", &run, "--approve"]);
    assert_eq!(ran.code, 2, "{}", ran.all());
    assert!(
        ran.stderr
            .contains("written by a newer engine (journal format 2"),
        "{}",
        ran.stderr
    );
    assert_eq!(server.count("POST", "/b"), 0);
}

#[test]
fn runs_and_log_show_the_state() {
    let server = Server::start();
    let (t, run) = paused_run(&server);
    let runs = t.exec(&["runs"]);
    assert!(
        runs.stdout.contains(&run)
            && runs.stdout.contains("paused")
            && runs.stdout.contains("gate"),
        "{}",
        runs.stdout
    );
    let log = t.exec(&["log", &run]);
    assert!(log.stdout.contains("approval asked: go"), "{}", log.stdout);
    let json = t.exec(&["log", &run, "--json"]);
    assert_eq!(json.stdout.lines().count(), t.journal(&run).lines().count());
}

/// A message of several lines keeps right of the time column in `runbook log`, so that each
/// line of the log still starts with a time or belongs to the entry above.
#[test]
fn a_logged_table_stays_inside_its_entry() {
    let t = Test::new().script(r#"step("observe", || log("REGION  DB\nus-east  primary"));"#);
    assert_eq!(t.exec(&["run", "runbook.rhai"]).code, 0);
    let log = t.exec(&["log", &t.only_run()]);
    let lines: Vec<&str> = log.stdout.lines().collect();
    let at = lines
        .iter()
        .position(|l| l.ends_with("  observe: REGION  DB"))
        .unwrap_or_else(|| panic!("{}", log.stdout));
    assert_eq!(
        lines[at + 1],
        format!("{:16}us-east  primary", ""),
        "{}",
        log.stdout
    );
    for l in lines {
        let time = l.get(..12).unwrap_or("");
        assert!(
            time.trim().is_empty() || time.chars().filter(|c| *c == ':').count() == 2,
            "a line that is neither an entry nor inside one: {l}"
        );
    }
}

/// Runs `NAME.rhai` for each name, one after the other, and gives each run the id beside it.
fn run_as(t: &Test, runs: &[(&str, &str)]) {
    let dir = t.path(".runbook/runs");
    for (name, id) in runs {
        assert_eq!(t.exec(&["run", &format!("{name}.rhai")]).code, 0);
        let run = t
            .run_ids()
            .into_iter()
            .find(|r| t.runbook_of(r) == format!("{name}.rhai"))
            .unwrap();
        std::fs::rename(dir.join(&run), dir.join(id)).unwrap();
    }
}

/// A run is named by its whole id or by a part that only its id begins or ends with; a part
/// that several ids share is refused, listing them, and nothing is done.
#[test]
fn a_run_is_named_by_a_part_of_its_id_that_no_other_shares() {
    let t = Test::new()
        .file("one.rhai", "log(1);")
        .file("two.rhai", "log(2);")
        .file(
            "gate.rhai",
            "step(\"gate\", || approve(\"go?\"));\nlog(\"went\");",
        );
    run_as(
        &t,
        &[("one", "20261205-1005-ab12"), ("two", "20261205-1006-cd34")],
    );
    let by_tail = t.exec(&["log", "ab12"]);
    assert_eq!(by_tail.code, 0, "{}", by_tail.all());
    assert_says(&by_tail.stdout, &["one.rhai"]);
    let by_head = t.exec(&["report", "20261205-1006"]);
    assert_eq!(by_head.code, 0, "{}", by_head.all());
    assert_says(&by_head.stdout, &["# Run 20261205-1006-cd34 — two.rhai"]);
    let shared = t.exec(&["log", "20261205-100"]);
    assert_eq!(shared.code, 2, "{}", shared.all());
    assert_says(
        &shared.stderr,
        &["error: '20261205-100' is part of 2 run ids (20261205-1005-ab12, 20261205-1006-cd34): give more of the one you mean"],
    );
    let short = t.exec(&["log", "b12"]);
    assert_eq!(short.code, 2, "{}", short.all());
    assert_says(&short.stderr, &["no run with id 'b12'"]);

    assert_eq!(t.exec(&["run", "gate.rhai"]).code, 3);
    let gate = t
        .run_ids()
        .into_iter()
        .find(|r| r.len() == 18 && !r.ends_with("ab12") && !r.ends_with("cd34"))
        .unwrap();
    let resumed = t.exec(&["resume", &gate[14..], "--approve"]);
    assert_eq!(resumed.code, 0, "{}", resumed.all());
    assert_says(
        &resumed.stdout,
        &[format!("resuming run {gate}"), "went".into()],
    );
}

/// Runs are listed in the order they started, whatever their ids: an id names the minute, and
/// two runs of one minute differ only by a random tail.
#[test]
fn runs_are_listed_in_the_order_they_started() {
    let t = Test::new()
        .file("first.rhai", "log(1);")
        .file("second.rhai", "log(2);")
        .file("third.rhai", "log(3);");
    // Ids that sort the other way round.
    run_as(
        &t,
        &[
            ("first", "20261205-1005-ffff"),
            ("second", "20261205-1005-8888"),
            ("third", "20261205-1005-0000"),
        ],
    );
    let listed = t.exec(&["runs"]);
    let order: Vec<&str> = listed
        .stdout
        .lines()
        .skip(1)
        .filter_map(|l| l.split_whitespace().next())
        .collect();
    assert_eq!(
        order,
        [
            "20261205-1005-ffff",
            "20261205-1005-8888",
            "20261205-1005-0000"
        ],
        "{}",
        listed.stdout
    );
    assert_eq!(
        crate::support::listed(&t.exec(&["runs", "--json"])),
        [
            "20261205-1005-ffff",
            "20261205-1005-8888",
            "20261205-1005-0000"
        ]
    );
}

#[test]
fn state_dir_moves_with_the_flag_and_the_variable() {
    let t = Test::new().script(r#"approve("x");"#);
    assert_eq!(
        t.exec(&["--state-dir", "elsewhere", "run", "runbook.rhai"])
            .code,
        3
    );
    assert!(t.path("elsewhere/runs").exists());
    assert!(!t.path(".runbook").exists());
    let t = t.env("RUNBOOK_STATE_DIR", "viaenv");
    assert_eq!(t.exec(&["run", "runbook.rhai"]).code, 3);
    assert!(t.path("viaenv/runs").exists());
    assert!(t.exec(&["runs"]).stdout.contains("paused"));
}

/// No file the command writes may grow past `limit` bytes: a write past it fails with EFBIG,
/// as a full disk fails with ENOSPC, with no privileges or file system of its own.
fn capped(cmd: &mut std::process::Command, limit: u64) {
    use std::os::unix::process::CommandExt;
    // SAFETY: only async-signal-safe calls between fork and exec.
    unsafe {
        cmd.pre_exec(move || {
            libc::signal(libc::SIGXFSZ, libc::SIG_IGN);
            let cap = libc::rlimit {
                rlim_cur: limit,
                rlim_max: libc::RLIM_INFINITY,
            };
            if libc::setrlimit(libc::RLIMIT_FSIZE, &cap) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
}

/// A state directory that cannot be written before anything started (full, read-only; here a
/// file-size limit): the lock's claim, or the run's copy of its runbook. Exit 1, what could not
/// be written, that nothing was started and what to do — and nothing was: no request sent, no
/// half run left to list or resume.
#[test]
fn a_state_directory_that_cannot_be_written_starts_nothing_and_says_what_to_do() {
    let server = Server::start();
    let url = server.url("/never");
    let padding = "// a runbook longer than the limit\n".repeat(60);
    // The lock's claim (some 200 bytes) passes 64; the runbook's copy (2 KB) passes 1 KB.
    for (limit, failed) in [
        (64, "locks/runbook.lock: File too large"),
        (1024, "/runbook.rhai: File too large"),
    ] {
        let t = Test::new().script(&format!("{padding}http::post(#{{ url: \"{url}\" }});\n"));
        let mut cmd = t.command(&["run".into(), "runbook.rhai".into()]);
        capped(&mut cmd, limit);
        let ran = Ran::from(cmd.output().unwrap());
        assert_eq!(ran.code, 1, "limit {limit}: {}", ran.all());
        let state = t.path(".runbook").display().to_string();
        assert_says(
            &ran.stderr,
            &[
                format!("error: cannot write {}{state}/", if limit == 64 { "lock " } else { "" }),
                failed.to_string(),
                format!("next: nothing was started: {state} keeps the runs and their locks, and must be writable with room on its file system; make it so, or keep them elsewhere with --state-dir DIR, then run it again"),
            ],
        );
        assert_eq!(server.count("POST", "/never"), 0, "limit {limit}");
        assert!(t.run_ids().is_empty(), "limit {limit}: {:?}", t.run_ids());
        let runs = t.exec(&["runs"]);
        assert!(runs.stdout.contains("no runs"), "{}", runs.all());
    }
}

/// A journal that cannot be written mid-run (a full disk; here a file-size limit, which fails
/// a write the same way without a file system of its own) stops the run where it is: exit 1,
/// the error naming the journal and the cause, and the resume that goes on once it can be
/// written again. Cut at three places (inside different records), the resume finishes the run
/// and no request is sent twice; a call left in flight is decided as an operator would.
#[test]
fn a_journal_that_cannot_be_written_stops_the_run_and_its_resume_repeats_nothing() {
    let server = Server::start();
    let steps = 30;
    for limit in [6_000u64, 6_150, 6_300] {
        let base = server.url(&format!("/cut{limit}"));
        let t = Test::new().script(
            &"for i in 0..STEPS { step(`post ${i}`, || http::post(#{ url: `BASE/${i}/` })); }\n"
                .replace("STEPS", &steps.to_string())
                .replace("BASE", &base),
        );
        let mut cmd = t.command(&["run".into(), "runbook.rhai".into()]);
        capped(&mut cmd, limit);
        let cut = Ran::from(cmd.output().unwrap());
        let run = t.only_run();
        assert_eq!(cut.code, 1, "limit {limit}: {}", cut.all());
        assert_says(
            &cut.stderr,
            &[
                format!("error: journal directory .runbook run {run}: cannot write: File too large"),
                "the run stopped here, so that nothing would happen unrecorded".into(),
                "--> runbook.rhai:1:".into(),
                format!("next: once the journal can be written again (room on its file system, the store reachable), `runbook resume {run}` goes on from its last record"),
            ],
        );
        let sent_before = server.count("POST", &format!("/cut{limit}/"));
        assert!(
            sent_before > 0 && sent_before < steps,
            "limit {limit}: cut after {sent_before} of {steps} requests"
        );

        let mut resumed = t.exec(&["resume", &run]);
        println!(
            "limit {limit}: cut after {sent_before} requests; the resume {}",
            if resumed.code == 3 {
                "asks about the call in flight"
            } else {
                "goes on"
            }
        );
        if resumed.code == 3 {
            // The request whose end the journal could not record: did it arrive?
            assert_says(&resumed.stderr, &["was in flight"]);
            let journal = t.journal(&run);
            let started = journal
                .lines()
                .rev()
                .find(|l| l.contains(r#""event":"action_started""#))
                .unwrap();
            let record: serde_json::Value = serde_json::from_str(started).unwrap();
            let url = record["input"]["url"].as_str().unwrap();
            let path = url.trim_start_matches(&server.url(""));
            let choice = if server.count("POST", path) == 1 {
                "--skip-inflight"
            } else {
                "--retry-inflight"
            };
            resumed = t.exec(&["resume", &run, choice]);
        }
        assert_eq!(resumed.code, 0, "limit {limit}: {}", resumed.all());
        for i in 0..steps {
            assert_eq!(
                server.count("POST", &format!("/cut{limit}/{i}/")),
                1,
                "limit {limit}: request {i} (cut after {sent_before})"
            );
        }
        for line in t.journal(&run).lines() {
            serde_json::from_str::<serde_json::Value>(line).expect("a whole record");
        }
    }
}
