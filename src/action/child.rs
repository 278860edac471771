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

/// Starts `command` in a process group of its own, registered.
pub fn spawn(
    command: &mut tokio::process::Command,
) -> std::io::Result<(tokio::process::Child, Registered)> {
    let child = command.process_group(0).spawn()?;
    let pid = child.id().map(|p| p as i32).unwrap_or(0);
    RUNNING.lock().unwrap().push(pid);
    Ok((child, Registered(pid)))
}

/// Runs `command` to the end and collects its output (stdin closed); past `limit` its group
/// is killed and `None` returned.
pub async fn output(
    mut command: tokio::process::Command,
    limit: Duration,
) -> std::io::Result<Option<Output>> {
    command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let (child, registered) = spawn(&mut command)?;
    match tokio::time::timeout(limit, child.wait_with_output()).await {
        Ok(out) => out.map(Some),
        Err(_) => {
            registered.kill();
            Ok(None)
        }
    }
}

/// The same for code that cannot wait asynchronously (an action's plan line): `command` runs
/// registered, in its own group, its output read on a thread of its own; past `limit` its
/// group is killed and `None` returned.
pub fn output_blocking(
    mut command: std::process::Command,
    limit: Duration,
) -> std::io::Result<Option<Output>> {
    use std::os::unix::process::CommandExt;
    command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0);
    let child = command.spawn()?;
    let pid = child.id() as i32;
    RUNNING.lock().unwrap().push(pid);
    let registered = Registered(pid);
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    match rx.recv_timeout(limit) {
        Ok(out) => out.map(Some),
        Err(_) => {
            registered.kill();
            Ok(None)
        }
    }
}
