//! The child processes actions start. Each runs in its own process group, so the terminal's
//! Ctrl-C reaches the engine alone (which lets the action in flight finish), and is registered,
//! so a second Ctrl-C stops every one at once; a time limit kills the whole group.

use std::process::{Output, Stdio};
use std::sync::Mutex;
use std::time::Duration;

/// Process groups of children now running.
static RUNNING: Mutex<Vec<i32>> = Mutex::new(Vec::new());

/// Kills every child still running, with its group (on a second Ctrl-C).
pub fn kill_running() {
    for pgid in RUNNING.lock().unwrap().drain(..) {
        unsafe {
            libc::kill(-pgid, libc::SIGKILL);
        }
    }
}

/// A registered child: unregistered when dropped.
pub struct Registered(i32);

impl Registered {
    /// Kills the child's whole process group.
    pub fn kill(&self) {
        if self.0 > 0 {
            unsafe {
                libc::kill(-self.0, libc::SIGKILL);
            }
        }
    }
}

impl Drop for Registered {
    fn drop(&mut self) {
        RUNNING.lock().unwrap().retain(|p| *p != self.0);
    }
}

/// Registers a child just started in a process group of its own (its id is the group's).
fn register(pid: i32) -> Registered {
    RUNNING.lock().unwrap().push(pid);
    Registered(pid)
}

/// Starts `command` in a process group of its own, registered.
pub fn spawn(
    command: &mut tokio::process::Command,
) -> std::io::Result<(tokio::process::Child, Registered)> {
    let child = command.process_group(0).spawn()?;
    let pid = child.id().map(|p| p as i32).unwrap_or(0);
    Ok((child, register(pid)))
}

/// Sets `command` up to be run to the end with its output collected: stdin closed, a group
/// of its own.
fn collecting(command: &mut std::process::Command) {
    use std::os::unix::process::CommandExt;
    command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0);
}

/// The output of a child that finished in time; else its group is killed and `None` returned.
fn in_time(
    finished: Option<std::io::Result<Output>>,
    registered: Registered,
) -> std::io::Result<Option<Output>> {
    match finished {
        Some(out) => out.map(Some),
        None => {
            registered.kill();
            Ok(None)
        }
    }
}

/// Runs `command` to the end and collects its output (stdin closed); past `limit` its group
/// is killed and `None` returned.
pub async fn output(
    mut command: tokio::process::Command,
    limit: Duration,
) -> std::io::Result<Option<Output>> {
    collecting(command.as_std_mut());
    let (child, registered) = spawn(&mut command)?;
    let finished = tokio::time::timeout(limit, child.wait_with_output()).await;
    in_time(finished.ok(), registered)
}

/// The same for code that cannot wait asynchronously (an action's plan line): its output is
/// read on a thread of its own while this one waits at most `limit`.
pub fn output_blocking(
    mut command: std::process::Command,
    limit: Duration,
) -> std::io::Result<Option<Output>> {
    collecting(&mut command);
    let child = command.spawn()?;
    let registered = register(child.id() as i32);
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    in_time(rx.recv_timeout(limit).ok(), registered)
}
