//! The test harness: a builder that writes a runbook (and inventory) into a temporary
//! directory, runs the real `runbook` binary there, and checks its exit code and output;
//! and a recording HTTP server on loopback.

pub mod server;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

pub use server::Server;

pub const BIN: &str = env!("CARGO_BIN_EXE_runbook");

/// A temporary working directory with a runbook in it.
pub struct Test {
    pub dir: tempfile::TempDir,
    args: Vec<String>,
    envs: Vec<(String, String)>,
    expect_code: Option<i32>,
    stdout_has: Vec<String>,
    stderr_has: Vec<String>,
    host: Option<String>,
}

/// What a run printed and how it ended.
#[derive(Debug)]
pub struct Ran {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl Ran {
    pub fn from(out: Output) -> Ran {
        Ran {
            code: out.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }

    pub fn all(&self) -> String {
        format!("{}\n{}", self.stdout, self.stderr)
    }
}

/// Asserts that `text` (a command's stdout or stderr) contains every one of `expected`,
/// naming the first that is missing.
pub fn assert_says<S: AsRef<str>>(text: &str, expected: &[S]) {
    for e in expected {
        let e = e.as_ref();
        assert!(text.contains(e), "missing {e:?} in\n{text}");
    }
}

impl Default for Test {
    fn default() -> Self {
        Self::new()
    }
}

impl Test {
    pub fn new() -> Test {
        Test {
            dir: tempfile::tempdir().expect("a temporary directory"),
            args: Vec::new(),
            envs: Vec::new(),
            expect_code: None,
            stdout_has: Vec::new(),
            stderr_has: Vec::new(),
            host: None,
        }
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// Writes `runbook.rhai`.
    pub fn script(self, text: &str) -> Test {
        self.file("runbook.rhai", text)
    }

    pub fn file(self, name: &str, text: &str) -> Test {
        let p = self.path(name);
        if let Some(parent) = p.parent() {
            std::fs::create_dir_all(parent).unwrap();
        }
        std::fs::write(p, text).unwrap();
        self
    }

    /// Writes `inventory.toml` (passed with `-i` by [`Test::run`]).
    pub fn inventory(self, text: &str) -> Test {
        self.file("inventory.toml", text)
    }

    pub fn args(mut self, args: &[&str]) -> Test {
        self.args = args.iter().map(|s| s.to_string()).collect();
        self
    }

    /// `runbook run runbook.rhai [-i inventory.toml]` plus `extra`.
    pub fn run(mut self, extra: &[&str]) -> Test {
        let mut args = vec!["run".to_string(), "runbook.rhai".to_string()];
        if self.path("inventory.toml").exists() {
            args.extend(["-i".into(), "inventory.toml".into()]);
        }
        args.extend(extra.iter().map(|s| s.to_string()));
        self.args = args;
        self
    }

    pub fn env(mut self, k: &str, v: &str) -> Test {
        self.envs.push((k.into(), v.into()));
        self
    }

    pub fn code(mut self, code: i32) -> Test {
        self.expect_code = Some(code);
        self
    }

    pub fn stdout(mut self, text: &str) -> Test {
        self.stdout_has.push(text.into());
        self
    }

    pub fn stderr(mut self, text: &str) -> Test {
        self.stderr_has.push(text.into());
        self
    }

    /// Runs every command of this test as on another host: in a UTS namespace of its own whose
    /// host name is `name` (the process keeps its id: `unshare` and `sh` exec it in turn).
    pub fn host(mut self, name: &str) -> Test {
        self.host = Some(name.into());
        self
    }

    pub fn command(&self, args: &[String]) -> Command {
        let mut cmd = match &self.host {
            Some(name) => {
                let mut c = Command::new("unshare");
                c.args([
                    "--uts",
                    "sh",
                    "-c",
                    r#"hostname "$0" && exec "$@""#,
                    name,
                    BIN,
                ]);
                c
            }
            None => Command::new(BIN),
        };
        cmd.args(args)
            .current_dir(self.dir.path())
            .stdin(Stdio::null());
        cmd.env_remove("RUNBOOK_STATE_DIR")
            .env_remove("RUNBOOK_STORE")
            .env_remove("PGPASSWORD")
            .env("RUNBOOK_OPERATOR", "tester");
        for (k, v) in &self.envs {
            cmd.env(k, v);
        }
        cmd
    }

    /// Runs the command set by `args`/`run` and checks the expectations.
    pub fn check(&self) -> Ran {
        let out = self.command(&self.args).output().expect("runbook starts");
        let ran = Ran::from(out);
        if let Some(code) = self.expect_code {
            assert_eq!(
                ran.code, code,
                "exit code of runbook {:?}\n--- stdout\n{}\n--- stderr\n{}",
                self.args, ran.stdout, ran.stderr
            );
        }
        for t in &self.stdout_has {
            assert!(
                ran.stdout.contains(t.as_str()),
                "stdout lacks {t:?}\n--- stdout\n{}\n--- stderr\n{}",
                ran.stdout,
                ran.stderr
            );
        }
        for t in &self.stderr_has {
            assert!(
                ran.stderr.contains(t.as_str()),
                "stderr lacks {t:?}\n--- stdout\n{}\n--- stderr\n{}",
                ran.stdout,
                ran.stderr
            );
        }
        ran
    }

    /// Runs another command in the same directory, without expectations.
    pub fn exec(&self, args: &[&str]) -> Ran {
        let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
        Ran::from(self.command(&args).output().expect("runbook starts"))
    }

    /// Starts the command in the background.
    pub fn spawn(&self, args: &[&str]) -> Child {
        let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
        self.command(&args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("runbook starts")
    }

    /// Starts the first run of this test in the background and returns once it waits on a
    /// durable timer (`sleep`), so its journal and its locks are in place.
    pub fn spawn_until_sleeping(&self, args: &[&str]) -> Child {
        let mut child = self.spawn(args);
        let sleeping = wait_for(Duration::from_secs(10), || {
            self.run_ids().len() == 1 && self.journal(&self.run_ids()[0]).contains("timer_started")
        });
        if !sleeping {
            kill9(&mut child);
            panic!("the run did not reach its sleep within 10 s");
        }
        child
    }

    /// Also adds an environment variable, in place.
    pub fn set_env(&mut self, k: &str, v: &str) {
        self.envs.push((k.into(), v.into()));
    }

    /// The PostgreSQL store this test's commands keep their runs in, if RUNBOOK_STORE is set.
    fn store(&self) -> Option<&str> {
        self.envs
            .iter()
            .rev()
            .find(|(k, _)| k == "RUNBOOK_STORE")
            .map(|(_, v)| v.as_str())
    }

    pub fn run_ids(&self) -> Vec<String> {
        if self.store().is_some() {
            let mut ids = listed(&self.exec(&["runs", "--all", "--json"]));
            ids.sort();
            return ids;
        }
        let mut ids: Vec<String> = std::fs::read_dir(self.path(".runbook/runs"))
            .map(|d| {
                d.filter_map(|e| e.ok())
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .collect()
            })
            .unwrap_or_default();
        ids.sort();
        ids
    }

    /// The first record of a run's journal (its start).
    pub fn started(&self, run: &str) -> serde_json::Value {
        let j = self.journal(run);
        serde_json::from_str(j.lines().next().unwrap_or("{}")).unwrap_or_default()
    }

    /// The file name of the runbook a run started (`gate.rhai`).
    pub fn runbook_of(&self, run: &str) -> String {
        let path = self.started(run)["runbook"]
            .as_str()
            .unwrap_or("")
            .to_string();
        path.rsplit('/').next().unwrap_or("").to_string()
    }

    /// The run started last (by its journal's first record).
    pub fn newest_run(&self) -> String {
        self.run_ids()
            .into_iter()
            .max_by_key(|id| self.started(id)["at"].as_str().unwrap_or("").to_string())
            .expect("a run")
    }

    pub fn only_run(&self) -> String {
        let ids = self.run_ids();
        assert_eq!(ids.len(), 1, "expected one run, found {ids:?}");
        ids[0].clone()
    }

    pub fn journal_path(&self, run: &str) -> PathBuf {
        self.path(&format!(".runbook/runs/{run}/journal.jsonl"))
    }

    /// A run's journal, its JSON lines as recorded (from the store, with RUNBOOK_STORE).
    pub fn journal(&self, run: &str) -> String {
        if self.store().is_some() {
            let log = self.exec(&["log", run, "--json"]);
            return if log.code == 0 {
                log.stdout
            } else {
                String::new()
            };
        }
        std::fs::read_to_string(self.journal_path(run)).unwrap_or_default()
    }

    /// The journal's calls in order: `s` for each action started, `f` for each finished.
    pub fn call_sequence(&self, run: &str) -> Vec<&'static str> {
        self.journal(run)
            .lines()
            .filter_map(|l| {
                if l.contains(r#""event":"action_started""#) {
                    Some("s")
                } else if l.contains(r#""event":"action_finished""#) {
                    Some("f")
                } else {
                    None
                }
            })
            .collect()
    }

    /// Appends raw bytes to a run's journal, as damage or a crash would leave them.
    pub fn append_to_journal(&self, run: &str, bytes: &[u8]) {
        use std::io::Write;
        let mut f = std::fs::OpenOptions::new()
            .append(true)
            .open(self.journal_path(run))
            .unwrap();
        f.write_all(bytes).unwrap();
    }

    /// Every file under the state directory, concatenated.
    pub fn state_text(&self) -> String {
        let mut out = String::new();
        collect(&self.path(".runbook"), &mut out);
        out
    }
}

fn collect(dir: &Path, out: &mut String) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        let p = e.path();
        if p.is_dir() {
            collect(&p, out);
        } else if let Ok(s) = std::fs::read_to_string(&p) {
            out.push_str(&s);
        }
    }
}

/// Waits for a command started with [`Test::spawn`] and gives what it printed.
pub fn finish(child: Child) -> Ran {
    Ran::from(child.wait_with_output().expect("runbook ends"))
}

/// Polls `cond` every 10 ms until it holds or `limit` passes.
pub fn wait_for(limit: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let start = Instant::now();
    while start.elapsed() < limit {
        if cond() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    cond()
}

/// Kills a child with SIGKILL, as a crash would.
pub fn kill9(child: &mut Child) {
    unsafe {
        libc::kill(child.id() as i32, libc::SIGKILL);
    }
    let _ = child.wait();
}

/// The run ids `runbook runs --json` printed, in its order.
pub fn listed(ran: &Ran) -> Vec<String> {
    ran.stdout
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter_map(|v| v["run_id"].as_str().map(str::to_string))
        .collect()
}
