//! PostgreSQL's own programs (pg_ctl, pg_rewind, pg_basebackup, pg_controldata, pg_waldump),
//! run as the data directory's owner — through runuser when the engine is root — as registered
//! children (a second Ctrl-C stops them), a password only ever in their environment.

use std::time::Duration;

use crate::action::ActionError;

/// How a program ended.
pub(crate) struct Ran {
    pub ok: bool,
    pub stdout: String,
    pub stderr: String,
}

/// The program's path: in `dir` when given, else found on PATH.
pub(crate) fn bin(dir: &Option<String>, tool: &str) -> String {
    match dir {
        Some(d) => format!("{}/{tool}", d.trim_end_matches('/')),
        None => tool.to_string(),
    }
}

/// Runs `program` with `args` as `os_user` (when root), `password` as PGPASSWORD; killed past
/// `limit`.
pub(crate) async fn run(
    os_user: &Option<String>,
    program: &str,
    args: &[&str],
    password: Option<&str>,
    limit: Duration,
) -> Result<Ran, ActionError> {
    let mut command = match os_user {
        Some(user) if unsafe { libc::geteuid() } == 0 => {
            let mut c = tokio::process::Command::new("runuser");
            c.args(["-u", user, "--", program]);
            c
        }
        _ => tokio::process::Command::new(program),
    };
    command.args(args);
    if let Some(p) = password {
        command.env("PGPASSWORD", p);
    }
    let out = crate::action::child::output(command, limit)
        .await
        .map_err(|e| ActionError::permanent(format!("cannot run {program}: {e}")))?
        .ok_or_else(|| {
            ActionError::maybe_applied(format!(
                "{program} did not finish within {}; it was stopped",
                humantime::format_duration(limit)
            ))
        })?;
    Ok(Ran {
        ok: out.status.success(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    })
}

/// The position just past the newest WAL segment of `timeline` in `pg_wal`, as PostgreSQL
/// writes positions ("0/5000000").
pub(crate) fn last_segment_end(
    pg_wal: &std::path::Path,
    timeline: &str,
    segment_bytes: u64,
) -> Option<String> {
    let tli = format!("{:08X}", timeline.parse::<u32>().ok()?);
    let newest = std::fs::read_dir(pg_wal)
        .ok()?
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter(|n| {
            n.len() == 24 && n.starts_with(&tli) && n.chars().all(|c| c.is_ascii_hexdigit())
        })
        .max()?;
    let log = u64::from_str_radix(&newest[8..16], 16).ok()?;
    let seg = u64::from_str_radix(&newest[16..24], 16).ok()?;
    let end = (log << 32) + (seg + 1) * segment_bytes;
    Some(format!("{:X}/{:X}", end >> 32, end & 0xffff_ffff))
}
