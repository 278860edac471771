use std::time::Duration;

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

/// `resume --approve` answers the approval the run paused at: a later approval in the same
/// session is asked again (here: no terminal, so the run pauses there), not approved by the
/// operator who saw only the first question. `--yes` is what approves every later one.
#[test]
fn resume_approve_answers_the_paused_approval_only() {
    let t = Test::new().script(
        r#"
        step("stop writes", || { approve("stop writes in us-east-1?"); log("writes stopped") });
        step("switch", || { approve("switch DNS to eu-west-1?"); log("switched") });
        step("rewind", || { approve("rewind us-east-1?"); log("rewound") });
        "#,
    );
    let first = t.exec(&["run", "runbook.rhai"]);
    assert_eq!(first.code, 3, "{}", first.all());
    let run = t.only_run();

    let second = t.exec(&["resume", &run, "--approve"]);
    assert_eq!(second.code, 3, "{}", second.all());
    assert!(
        second.stdout.contains("writes stopped"),
        "{}",
        second.stdout
    );
    assert!(!second.stdout.contains("switched"), "{}", second.stdout);
    assert!(
        second
            .stdout
            .contains(r#"? approve "switch DNS to eu-west-1?": waiting (no terminal)"#),
        "{}",
        second.stdout
    );
    assert!(
        second.stderr.contains(&format!(
            "paused: waiting for approval: \"switch DNS to eu-west-1?\"\n  next: runbook resume {run} --approve"
        )),
        "{}",
        second.stderr
    );
    let approvals = |t: &Test| t.journal(&run).matches(r#""event":"approved""#).count();
    assert_eq!(approvals(&t), 1, "{}", t.journal(&run));

    let rest = t.exec(&["resume", &run, "--approve", "--yes"]);
    assert_eq!(rest.code, 0, "{}", rest.all());
    assert!(
        rest.stdout.contains("switched") && rest.stdout.contains("rewound"),
        "{}",
        rest.stdout
    );
    assert!(
        rest.stdout
            .contains(r#"? approve "rewind us-east-1?": approved by tester (--yes)"#),
        "{}",
        rest.stdout
    );
    assert_eq!(approvals(&t), 3);

    // A run stopped elsewhere than at an approval: --approve answers none, and says so.
    let failed = Test::new().script(
        r#"
        step("check", || shell::run(#{ argv: ["test", "-f", "ready"] }));
        step("gate", || { approve("go on?"); log("went on") });
        "#,
    );
    let first = failed.exec(&["run", "runbook.rhai"]);
    assert_eq!(first.code, 1, "{}", first.all());
    let run = failed.only_run();
    std::fs::write(failed.path("ready"), "").unwrap();
    let again = failed.exec(&["resume", &run, "--approve"]);
    assert_eq!(again.code, 3, "{}", again.all());
    assert!(
        again.stdout.contains(&format!(
            "run {run} is not waiting for an approval (it is failed at step 'check'): --approve answers none, and an approval the run reaches is asked (`--yes` answers every one)"
        )),
        "{}",
        again.stdout
    );
    assert!(!again.stdout.contains("went on"), "{}", again.stdout);
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

/// A run on a terminal of its own (a pseudo-terminal it controls, as an SSH session gives):
/// what it printed so far, what is typed at it, and the hang-up when the session goes away.
struct OnTerminal {
    child: std::process::Child,
    master: Option<std::fs::File>,
    screen: Vec<u8>,
}

impl OnTerminal {
    fn start(t: &Test, args: &[&str]) -> OnTerminal {
        use std::os::fd::{FromRawFd, OwnedFd};
        use std::os::unix::process::CommandExt;
        let (mut master, mut slave) = (0, 0);
        let opened = unsafe {
            libc::openpty(
                &mut master,
                &mut slave,
                std::ptr::null_mut(),
                std::ptr::null(),
                std::ptr::null(),
            )
        };
        assert_eq!(opened, 0, "openpty");
        // Neither end leaks into the run: a copy of this end there would keep it from
        // ever being hung up.
        for fd in [master, slave] {
            unsafe { libc::fcntl(fd, libc::F_SETFD, libc::FD_CLOEXEC) };
        }
        let (master, slave) =
            unsafe { (OwnedFd::from_raw_fd(master), OwnedFd::from_raw_fd(slave)) };
        let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
        let mut cmd = t.command(&args);
        cmd.stdin(slave.try_clone().unwrap())
            .stdout(slave.try_clone().unwrap())
            .stderr(slave);
        // A session of its own with the terminal as its controlling one: Ctrl-C typed there
        // is its SIGINT, and closing the other end hangs it up (SIGHUP).
        unsafe {
            cmd.pre_exec(|| {
                if libc::setsid() < 0 || libc::ioctl(0, libc::TIOCSCTTY, 0) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let child = cmd.spawn().expect("runbook starts");
        // Read as it goes, without blocking: one handle, so that dropping it hangs up.
        let flags = unsafe { libc::fcntl(std::os::fd::AsRawFd::as_raw_fd(&master), libc::F_GETFL) };
        unsafe {
            libc::fcntl(
                std::os::fd::AsRawFd::as_raw_fd(&master),
                libc::F_SETFL,
                flags | libc::O_NONBLOCK,
            )
        };
        OnTerminal {
            child,
            master: Some(std::fs::File::from(master)),
            screen: Vec::new(),
        }
    }

    /// What it has printed so far.
    fn screen(&mut self) -> String {
        let mut buf = [0u8; 4096];
        while let Some(master) = self.master.as_mut() {
            match std::io::Read::read(master, &mut buf) {
                Ok(n) if n > 0 => self.screen.extend_from_slice(&buf[..n]),
                _ => break,
            }
        }
        String::from_utf8_lossy(&self.screen).into_owned()
    }

    fn wait_for_prompt(&mut self) {
        let asked = crate::support::wait_for(Duration::from_secs(10), || {
            self.screen().contains("approve? [y/N]")
        });
        assert!(asked, "no approval prompt:\n{}", self.screen());
    }

    fn type_in(&mut self, keys: &str) {
        std::io::Write::write_all(self.master.as_mut().unwrap(), keys.as_bytes()).unwrap();
    }

    /// The SSH session goes away: the terminal's other end closes.
    fn hang_up(&mut self) {
        self.master = None;
    }

    /// The exit code, within 10 s (killed otherwise).
    fn exit_code(&mut self) -> Option<i32> {
        let ended = crate::support::wait_for(Duration::from_secs(10), || {
            self.screen();
            matches!(self.child.try_wait(), Ok(Some(_)))
        });
        if !ended {
            crate::support::kill9(&mut self.child);
            panic!("still running 10 s later:\n{}", self.screen());
        }
        self.child.wait().unwrap().code()
    }
}

/// At `approve? [y/N]` on a terminal: `y` approves; Ctrl-C stops the run at once (not after
/// the next Enter), resumable, and the resume asks again; so does `runbook stop` from
/// elsewhere; a hung-up session never reads as "declined" and leaves a run that
/// `resume --approve` finishes.
#[test]
fn an_approval_prompt_answers_y_ctrl_c_and_a_hang_up() {
    let server = Server::start();
    let script = format!(
        r#"
        step("gate", || approve("promote eu-west-1?"));
        step("after", || http::post(#{{ url: "{a}" }}));
        "#,
        a = server.url("/after")
    );

    let t = Test::new().script(&script);
    let mut run = OnTerminal::start(&t, &["run", "runbook.rhai"]);
    run.wait_for_prompt();
    run.type_in("y\r");
    assert_eq!(run.exit_code(), Some(0), "{}", run.screen());
    assert!(
        run.screen().contains("approved by tester (terminal)"),
        "{}",
        run.screen()
    );
    assert_eq!(server.count("POST", "/after"), 1);

    let t = Test::new().script(&script);
    let mut run = OnTerminal::start(&t, &["run", "runbook.rhai"]);
    run.wait_for_prompt();
    run.type_in("\x03");
    assert_eq!(run.exit_code(), Some(130), "{}", run.screen());
    let id = t.only_run();
    let journal = t.journal(&id);
    assert!(
        journal.lines().last().unwrap().contains("run_interrupted"),
        "{journal}"
    );
    assert!(!journal.contains("declined"), "{journal}");
    assert_eq!(server.count("POST", "/after"), 1);
    let mut again = OnTerminal::start(&t, &["resume", &id]);
    again.wait_for_prompt();
    again.type_in("y\r");
    assert_eq!(again.exit_code(), Some(0), "{}", again.screen());
    assert_eq!(server.count("POST", "/after"), 2);

    // `runbook stop` from another terminal reaches a run waiting at its prompt too.
    let t = Test::new().script(&script);
    let mut run = OnTerminal::start(&t, &["run", "runbook.rhai"]);
    run.wait_for_prompt();
    let id = t.only_run();
    let stop = t.exec(&["stop", &id, "--reason", "the incident lead says wait"]);
    assert_eq!(stop.code, 0, "{}", stop.all());
    assert_eq!(run.exit_code(), Some(130), "{}", run.screen());
    let journal = t.journal(&id);
    assert!(journal.contains("the incident lead says wait"), "{journal}");
    assert_eq!(server.count("POST", "/after"), 2);
    // Stopped at its prompt, the run still waits for that approval: --approve answers it.
    let approved = t.exec(&["resume", &id, "--approve"]);
    assert_eq!(approved.code, 0, "{}", approved.all());
    assert!(
        approved
            .stdout
            .contains("approved by tester (resume --approve)")
            && !approved.stdout.contains("not waiting for an approval"),
        "{}",
        approved.stdout
    );
    assert_eq!(server.count("POST", "/after"), 3);

    let t = Test::new().script(&script);
    let mut run = OnTerminal::start(&t, &["run", "runbook.rhai"]);
    run.wait_for_prompt();
    run.hang_up();
    let code = run.exit_code();
    // Stopped by the hang-up (130), or paused when the prompt saw the terminal close first (3).
    assert!(matches!(code, Some(130) | Some(3)), "exit {code:?}");
    let id = t.only_run();
    let journal = t.journal(&id);
    assert!(
        !journal.contains("declined") && !journal.contains("run_failed"),
        "{journal}"
    );
    assert_eq!(server.count("POST", "/after"), 3);
    let done = t.exec(&["resume", &id, "--approve"]);
    assert_eq!(done.code, 0, "{}", done.all());
    assert_eq!(server.count("POST", "/after"), 4);
}
