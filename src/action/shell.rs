//! `shell::run` — the escape hatch: run a command. A write, and not idempotent.
//! `shell::read` — a command that only looks (`pg_restore --list`, `test -w DIR`): a read, so it
//! runs in a dry-run too and the plan follows the branch a real run would take.

use std::collections::BTreeMap;
use std::process::Stdio;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncRead, AsyncReadExt};

use super::{Action, ActionError, Cx, Spec};
use crate::secret::SecretString;

/// The most of each output stream the engine keeps; the rest is read and dropped.
pub const MAX_OUTPUT: usize = 1 << 20;

/// Declares a shell action's input: the command and how it runs first, declared once for
/// both actions (the order the journal has always had for `shell::run`), then its own fields.
macro_rules! command_input {
    ($(#[$meta:meta])* pub struct $name:ident { $($field:tt)* }) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
        #[serde(deny_unknown_fields)]
        pub struct $name {
            /// A command line, run with `sh -c` (give `cmd` or `argv`).
            pub cmd: Option<String>,
            /// A program and its arguments, run without a shell; an argument may be a secret (it
            /// is then visible to other local users through the process list: prefer `env`).
            pub argv: Option<Vec<SecretString>>,
            /// Extra environment variables; values may be secrets.
            #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
            pub env: BTreeMap<String, SecretString>,
            /// The working directory (default: the current one).
            pub cwd: Option<String>,
            /// Fail when the command exits non-zero (default true).
            #[serde(default = "crate::action::types::yes")]
            pub check: bool,
            $($field)*
        }
    };
}

command_input! {
    pub struct RunInput {
        /// The command converges: running it twice equals running it once (`mkdir -p`, `kubectl
        /// apply`). After a crash it is run again without asking the operator (default false).
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        pub idempotent: bool,
    }
}

command_input! {
    pub struct ReadInput {}
}

impl From<ReadInput> for RunInput {
    fn from(r: ReadInput) -> RunInput {
        RunInput {
            cmd: r.cmd,
            argv: r.argv,
            env: r.env,
            cwd: r.cwd,
            check: r.check,
            idempotent: true,
        }
    }
}

/// How the command ended.
#[derive(Debug, Clone, Default, Serialize, Deserialize, JsonSchema)]
pub struct RunOutput {
    /// The exit code (-1 if killed by a signal).
    pub code: i32,
    /// Standard output (at most 1 MiB).
    pub stdout: String,
    /// Standard error (at most 1 MiB).
    pub stderr: String,
    /// Whether either stream was cut at 1 MiB.
    pub truncated: bool,
}

impl RunInput {
    fn shown(&self) -> String {
        shown(&self.cmd, &self.argv)
    }
}

/// The command as the plan and messages show it (secrets masked), on one line: a script of
/// several lines shows its line breaks as `\n`, as the runbook writes them, so that it stays
/// one line of the step tree and of a failure's first line.
fn shown(cmd: &Option<String>, argv: &Option<Vec<SecretString>>) -> String {
    match (cmd, argv) {
        (Some(c), _) => c.trim_end_matches('\n').replace('\n', "\\n"),
        (None, Some(a)) => a
            .iter()
            .map(SecretString::shown)
            .collect::<Vec<_>>()
            .join(" "),
        _ => String::new(),
    }
}

async fn read_bounded<R: AsyncRead + Unpin>(mut r: R) -> (Vec<u8>, bool) {
    let mut kept = Vec::new();
    let mut buf = [0u8; 8192];
    let mut truncated = false;
    loop {
        match r.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                let room = MAX_OUTPUT.saturating_sub(kept.len());
                if room < n {
                    truncated = true;
                }
                kept.extend_from_slice(&buf[..n.min(room)]);
            }
        }
    }
    (kept, truncated)
}

fn tail(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text.trim_end().lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

action! {
    /// Run a command (escape hatch). Not idempotent unless the call says `idempotent: true`: after
    /// a crash the operator decides whether to run it again.
    Run(RunInput) -> RunOutput = Spec::change("shell", "run").primary("cmd").timeout(600)
}

impl Action for Run {
    fn idempotent(input: &RunInput) -> Option<bool> {
        Some(input.idempotent)
    }

    fn describe(input: &RunInput) -> String {
        format!("run `{}`", input.shown())
    }

    fn predict(_: &RunInput) -> RunOutput {
        RunOutput::default()
    }

    async fn run(input: RunInput, cx: Cx) -> Result<RunOutput, ActionError> {
        let mut command = match (&input.cmd, &input.argv) {
            (Some(cmd), None) => {
                // By path: a PATH search costs an exec attempt per directory.
                let mut c = tokio::process::Command::new("/bin/sh");
                c.arg("-c").arg(cmd);
                c
            }
            (None, Some(argv)) if !argv.is_empty() => {
                let argv = argv
                    .iter()
                    .map(SecretString::reveal)
                    .collect::<Result<Vec<_>, _>>()
                    .map_err(ActionError::permanent)?;
                let mut c = tokio::process::Command::new(&argv[0]);
                c.args(&argv[1..]);
                c
            }
            _ => {
                return Err(ActionError::permanent(
                    "give `cmd` (a command line) or `argv` (a list), one of them",
                ))
            }
        };
        for (k, v) in &input.env {
            command.env(k, v.reveal().map_err(ActionError::permanent)?);
        }
        if let Some(cwd) = &input.cwd {
            command.current_dir(cwd);
        }
        command
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let (mut child, registered) = super::child::spawn(&mut command).map_err(|e| {
            ActionError::permanent(format!("cannot start `{}`: {e}", input.shown()))
        })?;
        let stdout = child.stdout.take().unwrap();
        let stderr = child.stderr.take().unwrap();
        let work = async {
            let (out, err) = tokio::join!(read_bounded(stdout), read_bounded(stderr));
            let status = child.wait().await;
            (out, err, status)
        };
        let result = tokio::time::timeout(cx.timeout, work).await;
        let ((stdout, t1), (stderr, t2), status) = match result {
            Ok(r) => r,
            Err(_) => {
                registered.kill();
                return Err(ActionError::maybe_applied(format!(
                    "`{}` did not finish within {}; it was killed",
                    input.shown(),
                    humantime::format_duration(cx.timeout)
                )));
            }
        };
        let status = status.map_err(|e| ActionError::maybe_applied(e.to_string()))?;
        let out = RunOutput {
            code: status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&stdout).into_owned(),
            stderr: String::from_utf8_lossy(&stderr).into_owned(),
            truncated: t1 || t2,
        };
        if input.check && out.code != 0 {
            let detail = tail(&out.stderr, 5);
            return Err(ActionError::permanent(format!(
                "`{}` exited with code {}{}",
                input.shown(),
                out.code,
                if detail.is_empty() {
                    String::new()
                } else {
                    format!(":\n{detail}")
                }
            )));
        }
        Ok(out)
    }
}

action! {
    /// Run a command that only looks and changes nothing (`pg_restore --list FILE`, `test -w DIR`,
    /// `dig NAME`). A read: it runs in a dry-run too, so the plan follows the branch a real run
    /// would take, and is never counted as a change; give it only commands that change nothing
    /// (anything else belongs in shell::run).
    Read(ReadInput) -> RunOutput = Spec::read("shell", "read").primary("cmd").timeout(60).retries(0)
}

impl Action for Read {
    fn describe(input: &ReadInput) -> String {
        format!("read `{}`", shown(&input.cmd, &input.argv))
    }

    fn predict(_: &ReadInput) -> RunOutput {
        RunOutput::default()
    }

    async fn run(input: ReadInput, cx: Cx) -> Result<RunOutput, ActionError> {
        Run::run(input.into(), cx).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_command_shows_on_one_line() {
        for (cmd, line) in [
            ("echo hi", "echo hi"),
            ("set -e\npg_dump app\n", "set -e\\npg_dump app"),
            ("printf 'a\nb'", "printf 'a\\nb'"),
        ] {
            assert_eq!(shown(&Some(cmd.to_string()), &None), line, "{cmd:?}");
        }
    }
}
