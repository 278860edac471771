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

/// Where a server's programs are, and the system user they run as.
#[derive(Clone, Copy)]
pub(crate) struct Tools<'a> {
    /// The folder holding them (default: found on PATH).
    pub bin_dir: &'a Option<String>,
    /// Whom they run as when the engine is root (default: root).
    pub os_user: &'a Option<String>,
}

impl Tools<'_> {
    /// Programs found on PATH, run as the engine's own user.
    pub const ON_PATH: Tools<'static> = Tools {
        bin_dir: &None,
        os_user: &None,
    };

    /// The program's path: in `bin_dir` when given, else found on PATH.
    pub fn path(&self, program: &str) -> String {
        match self.bin_dir {
            Some(d) => format!("{}/{program}", d.trim_end_matches('/')),
            None => program.to_string(),
        }
    }

    /// Runs `program` with `args` (as `os_user` when root, `password` as PGPASSWORD), killed
    /// past `limit`.
    pub async fn run(
        self,
        program: &str,
        args: &[&str],
        password: Option<&str>,
        limit: Duration,
    ) -> Result<Ran, ActionError> {
        let path = self.path(program);
        let mut command = match self.os_user {
            Some(user) if unsafe { libc::geteuid() } == 0 => {
                let mut c = tokio::process::Command::new("runuser");
                c.args(["-u", user, "--", &path]);
                c
            }
            _ => tokio::process::Command::new(&path),
        };
        command.args(args);
        if let Some(p) = password {
            command.env("PGPASSWORD", p);
        }
        let out = crate::action::child::output(command, limit)
            .await
            .map_err(|e| ActionError::permanent(format!("cannot run {path}: {e}")))?
            .ok_or_else(|| {
                ActionError::maybe_applied(format!(
                    "{path} did not finish within {}; it was stopped",
                    humantime::format_duration(limit)
                ))
            })?;
        Ok(Ran {
            ok: out.status.success(),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        })
    }
}

impl Ran {
    /// Its standard output and error together, trimmed.
    pub fn text(&self) -> String {
        format!("{}{}", self.stdout, self.stderr).trim().to_string()
    }

    /// Its standard output when it succeeded; otherwise the error `failed` words from its
    /// standard error.
    pub fn output(self, failed: impl FnOnce(&str) -> String) -> Result<String, ActionError> {
        if self.ok {
            Ok(self.stdout)
        } else {
            Err(ActionError::permanent(failed(self.stderr.trim())))
        }
    }
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
