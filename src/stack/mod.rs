//! The local multi-region stack: real servers on loopback standing for three regions, for
//! tests and drills. Every process it starts is stopped by its own process id.

pub mod kube;
pub mod moto;
pub mod postgres;
pub mod redis;

use std::net::TcpListener;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

/// The regions the stack stands for; the first is the primary.
pub const REGIONS: [&str; 3] = ["us-east-1", "eu-west-1", "ap-southeast-1"];

/// A port free on loopback now.
pub fn free_port() -> std::io::Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// Whether this process runs as root (servers that refuse root run as their own user).
pub fn is_root() -> bool {
    unsafe { libc::geteuid() == 0 }
}

/// Runs a command, failing with its output when it does not succeed.
pub fn run(mut cmd: Command, what: &str) -> std::io::Result<String> {
    let out = cmd
        .output()
        .map_err(|e| std::io::Error::other(format!("{what}: cannot start: {e}")))?;
    if !out.status.success() {
        return Err(std::io::Error::other(format!(
            "{what} failed ({}): {}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Polls until `cond` holds, or fails naming what was awaited.
pub fn wait_until(
    limit: Duration,
    what: &str,
    mut cond: impl FnMut() -> bool,
) -> std::io::Result<()> {
    let start = Instant::now();
    while start.elapsed() < limit {
        if cond() {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Err(std::io::Error::other(format!(
        "timed out after {limit:?} waiting for {what}"
    )))
}

/// Sends `signal` to `pid` and waits for `gone` (a pid file removed, a port closed), then kills.
pub fn stop_pid(pid: i32, signal: i32, limit: Duration, gone: impl Fn() -> bool) {
    if pid <= 0 {
        return;
    }
    unsafe {
        libc::kill(pid, signal);
    }
    if wait_until(limit, "a server to stop", &gone).is_err() {
        unsafe {
            libc::kill(pid, libc::SIGKILL);
        }
        let _ = wait_until(Duration::from_secs(5), "a killed server to go", &gone);
    }
}

/// Reads the first line of a pid file.
pub fn read_pid(path: &Path) -> Option<i32> {
    std::fs::read_to_string(path)
        .ok()?
        .lines()
        .next()?
        .trim()
        .parse()
        .ok()
}
