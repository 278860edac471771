//! What a rewind would take out of a server: where it forked from the primary's history (as
//! `pg_rewind --dry-run` finds it), how many transactions it committed after that point (its
//! own WAL, read with pg_waldump), and a copy of its data directory, made before those
//! transactions are discarded.
//!
//! A former primary that took writes after a failover (it came back writable, or it crashed
//! with commits no standby had received) holds the only copy of them. Rewinding it onto the new
//! primary's timeline is the right way back, and it discards them; the copy is what lets
//! someone read them afterwards.

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::tool::{last_segment_end, Tools};
use crate::action::topology::model::{lsn, KeptBy};
use crate::action::ActionError;

/// Where a server's history left the primary's, as `pg_rewind --dry-run` reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Fork {
    /// "no rewind required": everything it has, the primary has too.
    None,
    /// "servers diverged at WAL location 0/3000000 on timeline 1".
    At { lsn: String, timeline: u32 },
}

/// The fork in pg_rewind's output; `None` when it says neither (it failed).
pub(crate) fn fork_in(said: &str) -> Option<Fork> {
    if said.contains("no rewind required") {
        return Some(Fork::None);
    }
    let rest = said.split("servers diverged at WAL location ").nth(1)?;
    let mut words = rest.split_whitespace();
    let lsn = words.next()?.to_string();
    lsn.split_once('/').filter(|(hi, lo)| {
        u32::from_str_radix(hi, 16).is_ok() && u32::from_str_radix(lo, 16).is_ok()
    })?;
    let timeline = match (words.next(), words.next(), words.next()) {
        (Some("on"), Some("timeline"), Some(t)) => t.trim_end_matches('.').parse().ok()?,
        _ => return None,
    };
    Some(Fork::At { lsn, timeline })
}

/// Transactions committed in `pg_waldump --stats=record` output (plain and prepared commits);
/// `None` when it printed no statistics (it could not read from the start it was given).
pub(crate) fn commits_in(stats: &str) -> Option<u64> {
    if !stats.contains("WAL statistics between") {
        return None;
    }
    Some(
        stats
            .lines()
            .filter_map(|l| {
                let mut words = l.split_whitespace();
                let kind = words.next()?;
                matches!(kind, "Transaction/COMMIT" | "Transaction/COMMIT_PREPARED")
                    .then(|| words.next()?.parse::<u64>().ok())?
            })
            .sum(),
    )
}

/// Where timeline `tli` ended, in a timeline history file ("1\t0/4018058\tno recovery
/// target specified"): the point a server on it forked from the newer timeline.
pub(crate) fn switch_point(history: &str, tli: u32) -> Option<String> {
    history.lines().find_map(|l| {
        let mut fields = l.split_whitespace();
        (fields.next()?.parse::<u32>().ok()? == tli)
            .then(|| fields.next())
            .flatten()
            .filter(|at| lsn(at).is_some())
            .map(str::to_string)
    })
}

/// A value of `pg_controldata`'s output ("Database cluster state:" → "shut down").
pub(crate) fn control_field(control: &str, key: &str) -> Option<String> {
    control
        .lines()
        .find(|l| l.starts_with(key))
        .and_then(|l| l.split_once(':'))
        .map(|(_, v)| v.trim().to_string())
}

/// The data directory's owner and tools, as the rewind runs them.
pub(crate) struct Dir<'a> {
    pub data_dir: &'a str,
    pub bin_dir: &'a Option<String>,
    pub os_user: &'a Option<String>,
    /// The server as messages name it.
    pub shown: &'a str,
}

impl<'a> Dir<'a> {
    fn tools(&self) -> Tools<'a> {
        Tools {
            bin_dir: self.bin_dir,
            os_user: self.os_user,
        }
    }

    async fn control(&self, limit: Duration) -> Result<String, ActionError> {
        // Read as the engine's own user: root reads any data directory.
        let tools = Tools {
            os_user: &None,
            ..self.tools()
        };
        let ran = tools
            .run("pg_controldata", &["-D", self.data_dir], None, limit)
            .await?;
        ran.output(|why| {
            format!(
                "{}: pg_controldata could not read {}: {why}",
                self.shown, self.data_dir
            )
        })
    }

    /// A stopped server that did not shut down cleanly (it crashed) is taken through crash
    /// recovery in single-user mode and stopped again, as pg_rewind itself would do: its WAL
    /// can then be read to its end, and pg_rewind's dry-run accepts it. No client can connect
    /// meanwhile.
    pub async fn recover(&self, limit: Duration) -> Result<(), ActionError> {
        let control = self.control(limit).await?;
        let state = control_field(&control, "Database cluster state:").unwrap_or_default();
        if state == "shut down" || state == "shut down in recovery" {
            return Ok(());
        }
        let args = ["--single", "-F", "-D", self.data_dir, "template1"];
        let ran = self.tools().run("postgres", &args, None, limit).await?;
        ran.output(|why| {
            format!(
                "{}: crash recovery in single-user mode failed (it was \"{state}\"): {why}. It is left stopped",
                self.shown
            )
        })?;
        Ok(())
    }

    /// Whether pg_rewind finished with this directory and the server has not started since:
    /// its control file says "in archive recovery" (pg_rewind's last write) and pg_rewind's
    /// backup_label is still there (a start as a standby takes it away).
    pub async fn rewound_not_started(&self, limit: Duration) -> Result<bool, ActionError> {
        let control = self.control(limit).await?;
        Ok(
            control_field(&control, "Database cluster state:").as_deref()
                == Some("in archive recovery")
                && Path::new(self.data_dir).join("backup_label").exists(),
        )
    }

    /// For a directory an earlier attempt rewound (and that has not started since): the copy
    /// that attempt kept of it, and the transactions the rewind took out, counted in that
    /// copy's WAL from the fork (the switch point its new timeline's history names). None
    /// where no copy of the directory from just before the rewind is beside it.
    pub async fn earlier_rewind(&self, limit: Duration) -> (Option<PathBuf>, Option<u64>) {
        let dir = PathBuf::from(self.data_dir.trim_end_matches('/'));
        let Ok(now) = self.control(limit).await else {
            return (None, None);
        };
        let Some(tli) = control_field(&now, "Latest checkpoint's TimeLineID:")
            .and_then(|t| t.parse::<u32>().ok())
        else {
            return (None, None);
        };
        let history = std::fs::read_to_string(dir.join(format!("pg_wal/{tli:08X}.history")))
            .unwrap_or_default();
        for copy in rewinds_beside(&dir) {
            let copy_str = copy.display().to_string();
            let there = Dir {
                data_dir: &copy_str,
                ..*self
            };
            let Ok(then) = there.control(limit).await else {
                continue;
            };
            let old = control_field(&then, "Latest checkpoint's TimeLineID:")
                .and_then(|t| t.parse::<u32>().ok());
            let checkpoint = control_field(&then, "Latest checkpoint location:");
            let fork = old.and_then(|old| switch_point(&history, old));
            // A copy of this directory made after it forked: on the timeline that forked,
            // its last checkpoint past the fork.
            if let (Some(fork), Some(at)) = (fork, checkpoint) {
                if lsn(&at) >= lsn(&fork) {
                    let commits = there.commits_since(&fork, limit).await;
                    return (Some(copy), commits);
                }
            }
        }
        (None, None)
    }

    /// Transactions the server committed at or after `lsn` in its own WAL; `None` when its
    /// WAL could not be read from there.
    pub async fn commits_since(&self, lsn: &str, limit: Duration) -> Option<u64> {
        let control = self.control(limit).await.ok()?;
        let tli = control_field(&control, "Latest checkpoint's TimeLineID:")?;
        let segment: u64 = control_field(&control, "Bytes per WAL segment:")
            .and_then(|v| v.parse().ok())
            .unwrap_or(16 << 20);
        let wal = Path::new(self.data_dir).join("pg_wal");
        // Read no further than the last segment on disk: past it, pg_waldump waits for a file
        // that will never come.
        let bound = last_segment_end(&wal, &tli, segment)?;
        let wal = wal.display().to_string();
        let args = [
            "-p",
            &wal,
            "-t",
            &tli,
            "-s",
            lsn,
            "-e",
            &bound,
            "--stats=record",
        ];
        let ran = self
            .tools()
            .run("pg_waldump", &args, None, limit)
            .await
            .ok()?;
        commits_in(&ran.stdout)
    }

    /// Copies the data directory (what its links point to included: pg_wal, tablespaces) to
    /// `<data_dir>.before-rewind-<time>` beside it, owner and modes kept; gives where. Refuses,
    /// copying nothing, when the file system there has not room for it.
    ///
    /// A rewind cut off after its copy (the process killed, the host rebooted) and run again
    /// finds the server as it left it: the whole copy an earlier attempt made of this very
    /// state (the same `global/pg_control`, which every start, recovery or checkpoint
    /// rewrites) is the copy, and none is made twice. Copies an earlier attempt left half-way
    /// (`.partial`) are never whole, and are removed first.
    pub async fn copy_aside(&self, limit: Duration) -> Result<PathBuf, ActionError> {
        let dir = PathBuf::from(self.data_dir.trim_end_matches('/'));
        if let Some(earlier) = self.earlier_copy(&dir) {
            return Ok(earlier);
        }
        let stamp: String = humantime::format_rfc3339_seconds(std::time::SystemTime::now())
            .to_string()
            .chars()
            .filter(|c| !matches!(c, '-' | ':'))
            .collect();
        let copy = PathBuf::from(format!("{}.before-rewind-{stamp}", dir.display()));
        let parent = dir
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        let need = size_of(&dir);
        if let Some(free) = free_bytes(parent) {
            // A copy that fills the disk would leave too little for the server itself.
            let margin = (need / 10).max(64 << 20);
            if free < need + margin {
                // Copies earlier rejoins kept are never removed by the engine: at 3 a.m. they
                // are the space to look at first.
                let kept: Vec<String> = kept_beside(&dir)
                    .iter()
                    .rev()
                    .filter(|k| k.by != KeptBy::CutOff)
                    .map(|k| format!("{} ({} MiB)", k.name, size_of(&parent.join(&k.name)) >> 20))
                    .collect();
                let kept = if kept.is_empty() {
                    String::new()
                } else {
                    format!(
                        ". Beside it are copies earlier rejoins kept, each holding what its rewind or base backup took out: {}; removing those you no longer need frees their space",
                        kept.join(", ")
                    )
                };
                return Err(ActionError::permanent(format!(
                    "{}: its data directory must be copied before the rewind discards what it committed after the fork, and {} has {} MiB free where the copy needs {} MiB (and {} MiB to spare){kept}. It is left stopped: free space there, or rewind without a copy (keep_copy=false) to lose those transactions",
                    self.shown,
                    parent.display(),
                    free >> 20,
                    need >> 20,
                    margin >> 20
                )));
            }
        }
        // Copied under another name and renamed when whole: a copy cut off half-way (a crash,
        // the time limit) is never mistaken for a whole one.
        let partial = PathBuf::from(format!("{}.partial", copy.display()));
        let from = dir.display().to_string();
        let to = partial.display().to_string();
        let failed = |why: &str| {
            let _ = std::fs::remove_dir_all(&partial);
            format!(
                "{}: copying {from} to {to} before the rewind failed: {why}. Nothing was rewound; it is left stopped",
                self.shown
            )
        };
        let args = ["-a", "-L", &from, &to];
        match Tools::ON_PATH.run("cp", &args, None, limit).await {
            Ok(ran) if ran.ok => {}
            Ok(ran) => return Err(ActionError::permanent(failed(ran.stderr.trim()))),
            // Out of time or stopped: its kind (what a retry or a resume may do) stays.
            Err(mut e) => {
                e.message = failed(&e.message);
                return Err(e);
            }
        }
        std::fs::rename(&partial, &copy).map_err(|e| {
            ActionError::permanent(format!(
                "{}: {to} could not be renamed {}: {e}. Nothing was rewound; it is left stopped",
                self.shown,
                copy.display()
            ))
        })?;
        Ok(copy)
    }
}

impl Dir<'_> {
    /// The whole copy an earlier attempt made of the directory as it is now, newest first;
    /// removes the copies earlier attempts left half-way.
    fn earlier_copy(&self, dir: &Path) -> Option<PathBuf> {
        for cut_off in kept_beside(dir).iter().filter(|k| k.by == KeptBy::CutOff) {
            let _ = std::fs::remove_dir_all(dir.with_file_name(&cut_off.name));
        }
        let control = std::fs::read(dir.join("global/pg_control")).ok()?;
        rewinds_beside(dir)
            .into_iter()
            .find(|c| std::fs::read(c.join("global/pg_control")).ok().as_ref() == Some(&control))
    }
}

/// The whole copies earlier rewinds kept beside the data directory `dir`, newest first.
fn rewinds_beside(dir: &Path) -> Vec<PathBuf> {
    kept_beside(dir)
        .into_iter()
        .rev()
        .filter(|k| k.by == KeptBy::Rewind)
        .map(|k| dir.with_file_name(k.name))
        .collect()
}

/// A copy of a data directory the engine made and keeps beside it (the engine never removes
/// a whole one: it holds what a rejoin took out of the server).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Kept {
    /// Its name beside the data directory.
    pub name: String,
    pub by: KeptBy,
    /// When it was made, RFC 3339 UTC, from its name.
    pub at: String,
}

/// The copies kept beside a data directory called `name`, oldest first.
pub(crate) fn kept_among<'a>(name: &str, siblings: impl IntoIterator<Item = &'a str>) -> Vec<Kept> {
    let before_rewind = format!("{name}.before-rewind-");
    let replaced = format!("{name}.replaced-");
    // 20261205T213733Z → 2026-12-05T21:37:33Z
    let rewind_time = |rest: &str| {
        let stamped = rest.len() == 16
            && rest.bytes().enumerate().all(|(i, b)| match i {
                8 => b == b'T',
                15 => b == b'Z',
                _ => b.is_ascii_digit(),
            });
        stamped.then(|| {
            let d = |r: std::ops::Range<usize>| &rest[r];
            format!(
                "{}-{}-{}T{}:{}:{}Z",
                d(0..4),
                d(4..6),
                d(6..8),
                d(9..11),
                d(11..13),
                d(13..15)
            )
        })
    };
    let mut kept: Vec<Kept> = siblings
        .into_iter()
        .filter_map(|sibling| {
            let (by, at) = if let Some(rest) = sibling.strip_prefix(&before_rewind) {
                match rest.strip_suffix(".partial") {
                    Some(stamp) => (KeptBy::CutOff, rewind_time(stamp)?),
                    None => (KeptBy::Rewind, rewind_time(rest)?),
                }
            } else {
                let secs: u64 = sibling.strip_prefix(&replaced)?.parse().ok()?;
                let at = std::time::UNIX_EPOCH + Duration::from_secs(secs);
                (
                    KeptBy::BaseBackup,
                    humantime::format_rfc3339_seconds(at).to_string(),
                )
            };
            Some(Kept {
                name: sibling.to_string(),
                by,
                at,
            })
        })
        .collect();
    kept.sort_by(|a, b| (&a.at, &a.name).cmp(&(&b.at, &b.name)));
    kept
}

/// The copies kept beside the data directory `dir`, oldest first.
pub(crate) fn kept_beside(dir: &Path) -> Vec<Kept> {
    let (Some(name), Some(parent)) = (dir.file_name().and_then(|n| n.to_str()), parent_of(dir))
    else {
        return vec![];
    };
    let Ok(entries) = std::fs::read_dir(parent) else {
        return vec![];
    };
    let siblings: Vec<String> = entries
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .collect();
    kept_among(name, siblings.iter().map(String::as_str))
}

/// The folder holding `dir` ("." for a bare name).
fn parent_of(dir: &Path) -> Option<&Path> {
    match dir.parent() {
        Some(p) if !p.as_os_str().is_empty() => Some(p),
        Some(_) => Some(Path::new(".")),
        None => None,
    }
}

/// Bytes in the files below `dir` counted until `deadline`, and whether all were counted;
/// None when `dir` itself cannot be read here (a data directory's mode is 0700: only its
/// owner and root read it).
pub(crate) fn size_until(dir: &Path, deadline: std::time::Instant) -> Option<(u64, bool)> {
    std::fs::read_dir(dir).ok()?;
    Some(walk(dir, Some(deadline)))
}

/// Bytes in the files below `dir`, following links (pg_wal and tablespaces may be links).
pub(crate) fn size_of(dir: &Path) -> u64 {
    walk(dir, None).0
}

/// Bytes in the files below `dir` until `deadline`, and whether the walk got to its end.
fn walk(dir: &Path, deadline: Option<std::time::Instant>) -> (u64, bool) {
    let mut total = 0;
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for entry in entries.flatten() {
            // Checked at each file: one database's relations are all in one folder.
            if deadline.is_some_and(|at| std::time::Instant::now() >= at) {
                return (total, false);
            }
            let Ok(meta) = std::fs::metadata(entry.path()) else {
                continue;
            };
            if meta.is_dir() {
                todo.push(entry.path());
            } else {
                total += meta.size();
            }
        }
    }
    (total, true)
}

/// Bytes free for this user on the file system holding `dir`.
fn free_bytes(dir: &Path) -> Option<u64> {
    use std::os::unix::ffi::OsStrExt;
    let path = std::ffi::CString::new(dir.as_os_str().as_bytes()).ok()?;
    let mut stat: libc::statvfs = unsafe { std::mem::zeroed() };
    if unsafe { libc::statvfs(path.as_ptr(), &mut stat) } != 0 {
        return None;
    }
    Some(stat.f_bavail as u64 * stat.f_frsize as u64)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::action::ErrorKind;

    #[test]
    fn the_fork_as_pg_rewind_reports_it() {
        let at = |lsn: &str, timeline| {
            Some(Fork::At {
                lsn: lsn.into(),
                timeline,
            })
        };
        let cases: &[(&str, Option<Fork>)] = &[
            ("pg_rewind: servers diverged at WAL location 0/3000000 on timeline 1\npg_rewind: rewinding from last common checkpoint at 0/2000060 on timeline 1\npg_rewind: Done!", at("0/3000000", 1)),
            ("pg_rewind: servers diverged at WAL location 1A/FF0000D8 on timeline 12", at("1A/FF0000D8", 12)),
            ("pg_rewind: source and target cluster are on the same timeline\npg_rewind: no rewind required", Some(Fork::None)),
            // It forked, then failed: the fork is still what it found.
            ("pg_rewind: servers diverged at WAL location 0/3000000 on timeline 1\npg_rewind: error: could not find previous WAL record at 0/2000100", at("0/3000000", 1)),
            ("pg_rewind: error: target server must be shut down cleanly", None),
            ("pg_rewind: servers diverged at WAL location nowhere on timeline 1", None),
            ("pg_rewind: servers diverged at WAL location 0/3000000", None),
            ("", None),
        ];
        for (said, want) in cases {
            assert_eq!(&fork_in(said), want, "{said}");
        }
    }

    #[test]
    fn commits_counted_in_pg_waldump_statistics() {
        let stats = |rows: &str| {
            format!(
                "WAL statistics between 0/3000028 and 0/3002250:\nType   N   (%)   Record size   (%)\n----   -   ---\n{rows}\nTotal   7   473 [5.44%]"
            )
        };
        let cases: &[(String, Option<u64>)] = &[
            (
                stats("XLOG/CHECKPOINT_SHUTDOWN   2 ( 28.57)   228 ( 48.20)\nTransaction/COMMIT   1 ( 14.29)   34 (  7.19)\nHeap/INSERT   2 ( 28.57)"),
                Some(1),
            ),
            (
                stats("Transaction/COMMIT   4021 ( 10.00)   34\nTransaction/ABORT   7 (  0.01)   34\nTransaction/COMMIT_PREPARED   2 (  0.00)   40"),
                Some(4023),
            ),
            // Only a shutdown checkpoint after the fork: a clean switchover.
            (stats("XLOG/CHECKPOINT_SHUTDOWN   1 (100.00)   114 (100.00)"), Some(0)),
            (String::new(), None),
            ("pg_waldump: error: could not find file \"000000020000000000000003\"".into(), None),
        ];
        for (out, want) in cases {
            assert_eq!(&commits_in(out), want, "{out}");
        }
    }

    /// A data directory on this host, as the tests name it.
    fn local(data_dir: &str) -> Dir<'_> {
        Dir {
            data_dir,
            bin_dir: &None,
            os_user: &None,
            shown: "main (us-east-1)",
        }
    }

    /// A copy beside the directory, whole, with what its links point to (as pg_wal may be a
    /// link), modes kept, and no partial copy left behind.
    #[tokio::test]
    async fn a_copy_aside_is_whole_and_follows_links() {
        use std::os::unix::fs::PermissionsExt;
        let top = tempfile::tempdir().unwrap();
        let data = top.path().join("main");
        let wal = top.path().join("wal");
        std::fs::create_dir_all(data.join("base/1")).unwrap();
        std::fs::create_dir(&wal).unwrap();
        std::fs::write(data.join("base/1/1259"), b"rows").unwrap();
        std::fs::write(wal.join("000000010000000000000003"), b"commits").unwrap();
        std::os::unix::fs::symlink(&wal, data.join("pg_wal")).unwrap();
        std::fs::set_permissions(&data, std::fs::Permissions::from_mode(0o700)).unwrap();
        let data_dir = data.display().to_string();
        let here = local(&data_dir);
        let copy = here.copy_aside(Duration::from_secs(30)).await.unwrap();
        let name = copy.file_name().unwrap().to_string_lossy().to_string();
        assert!(
            name.starts_with("main.before-rewind-") && name.ends_with('Z'),
            "{name}"
        );
        assert_eq!(std::fs::read(copy.join("base/1/1259")).unwrap(), b"rows");
        let pg_wal = copy.join("pg_wal");
        assert!(!std::fs::symlink_metadata(&pg_wal).unwrap().is_symlink());
        assert_eq!(
            std::fs::read(pg_wal.join("000000010000000000000003")).unwrap(),
            b"commits"
        );
        let mode = std::fs::metadata(&copy).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o700);
        let left: Vec<String> = std::fs::read_dir(top.path())
            .unwrap()
            .filter_map(|e| e.ok()?.file_name().into_string().ok())
            .filter(|n| n.ends_with(".partial"))
            .collect();
        assert!(left.is_empty(), "{left:?}");
    }

    #[test]
    fn the_copies_kept_beside_a_data_directory() {
        use KeptBy::*;
        // (the names beside it, the copies found: name, what made it, when)
        type Case<'a> = (&'a [&'a str], &'a [(&'a str, KeptBy, &'a str)]);
        let cases: &[Case] = &[
            (&["main", "other"], &[]),
            // Oldest first, whatever order the directory lists them in.
            (
                &[
                    "main.before-rewind-20261205T213733Z",
                    "main",
                    "main.before-rewind-20261201T101010Z",
                ],
                &[
                    (
                        "main.before-rewind-20261201T101010Z",
                        Rewind,
                        "2026-12-01T10:10:10Z",
                    ),
                    (
                        "main.before-rewind-20261205T213733Z",
                        Rewind,
                        "2026-12-05T21:37:33Z",
                    ),
                ],
            ),
            (
                &["main.before-rewind-20261205T213733Z.partial"],
                &[(
                    "main.before-rewind-20261205T213733Z.partial",
                    CutOff,
                    "2026-12-05T21:37:33Z",
                )],
            ),
            // A base backup's, between two rewinds'.
            (
                &[
                    "main.before-rewind-20261206T000000Z",
                    "main.replaced-1796472000",
                    "main.before-rewind-20261205T000000Z",
                ],
                &[
                    (
                        "main.before-rewind-20261205T000000Z",
                        Rewind,
                        "2026-12-05T00:00:00Z",
                    ),
                    (
                        "main.replaced-1796472000",
                        BaseBackup,
                        "2026-12-05T12:00:00Z",
                    ),
                    (
                        "main.before-rewind-20261206T000000Z",
                        Rewind,
                        "2026-12-06T00:00:00Z",
                    ),
                ],
            ),
            // Another directory's copies, and names that only look alike.
            (
                &[
                    "main2.before-rewind-20261205T213733Z",
                    "main2.replaced-1764970653",
                    "main.replaced-",
                    "main.replaced-17649x0653",
                    "main.before-rewind-20261205T213733Z.old",
                    "main.before-rewind-2026120T5213733Z",
                    "main.before-rewind-20261205T213733",
                    "main.before-rewind-é0261205T21373Z",
                    "main.before-rewind-",
                ],
                &[],
            ),
        ];
        for (siblings, want) in cases {
            let got: Vec<(String, KeptBy, String)> = kept_among("main", siblings.iter().copied())
                .into_iter()
                .map(|k| (k.name, k.by, k.at))
                .collect();
            let want: Vec<(String, KeptBy, String)> = want
                .iter()
                .map(|(n, by, at)| (n.to_string(), *by, at.to_string()))
                .collect();
            assert_eq!(got, want, "{siblings:?}");
        }
    }

    /// A rewind run again after its copy was made: the copy of this same state is the copy;
    /// one cut off half-way is removed; a copy of another state (the server ran since) is not
    /// taken for it.
    #[tokio::test]
    async fn a_copy_made_by_an_earlier_attempt_is_not_made_again() {
        let top = tempfile::tempdir().unwrap();
        let data = top.path().join("main");
        std::fs::create_dir_all(data.join("global")).unwrap();
        std::fs::write(data.join("global/pg_control"), b"checkpoint 1").unwrap();
        let data_dir = data.display().to_string();
        let here = local(&data_dir);
        let older = top.path().join("main.before-rewind-20261201T101010Z");
        std::fs::create_dir_all(older.join("global")).unwrap();
        std::fs::write(older.join("global/pg_control"), b"checkpoint 0").unwrap();
        let cut = top
            .path()
            .join("main.before-rewind-20261201T111111Z.partial");
        std::fs::create_dir_all(cut.join("base")).unwrap();

        let first = here.copy_aside(Duration::from_secs(30)).await.unwrap();
        assert_ne!(first, older);
        assert!(!cut.exists(), "the half-made copy is removed");
        let again = here.copy_aside(Duration::from_secs(30)).await.unwrap();
        assert_eq!(again, first);
        let copies = std::fs::read_dir(top.path()).unwrap().count();
        assert_eq!(copies, 3, "main, the older copy and one new copy");

        // The server ran since: its control file changed, and a new copy is made.
        std::fs::write(data.join("global/pg_control"), b"checkpoint 2").unwrap();
        std::thread::sleep(Duration::from_millis(1100));
        let newer = here.copy_aside(Duration::from_secs(30)).await.unwrap();
        assert_ne!(newer, first);
        assert_eq!(
            std::fs::read(newer.join("global/pg_control")).unwrap(),
            b"checkpoint 2"
        );
    }

    /// A small file system of its own (tmpfs, 16 MiB), unmounted when dropped, also when the
    /// test fails. Mounting needs root, as the suite's PostgreSQL servers do.
    struct SmallDisk {
        _top: tempfile::TempDir,
        at: PathBuf,
    }

    impl SmallDisk {
        fn new() -> SmallDisk {
            let top = tempfile::tempdir().unwrap();
            let at = top.path().join("disk");
            std::fs::create_dir(&at).unwrap();
            let ran = std::process::Command::new("mount")
                .args(["-t", "tmpfs", "-o", "size=16m", "tmpfs"])
                .arg(&at)
                .output()
                .expect("mount starts");
            assert!(
                ran.status.success(),
                "mounting a tmpfs at {} (as root) failed: {}",
                at.display(),
                String::from_utf8_lossy(&ran.stderr)
            );
            SmallDisk { _top: top, at }
        }
    }

    impl Drop for SmallDisk {
        fn drop(&mut self) {
            let _ = std::process::Command::new("umount").arg(&self.at).status();
        }
    }

    fn beside(dir: &Path) -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(dir.parent().unwrap())
            .unwrap()
            .filter_map(|e| e.ok()?.file_name().into_string().ok())
            .collect();
        names.sort();
        names
    }

    /// A data directory at `dir` holding one table file of `mib` MiB.
    fn with_mib(dir: &Path, mib: usize) -> PathBuf {
        std::fs::create_dir_all(dir.join("base/1")).unwrap();
        std::fs::write(dir.join("base/1/1259"), vec![7u8; mib << 20]).unwrap();
        dir.to_path_buf()
    }

    /// A size is the bytes of every file below, or none when the directory cannot be read
    /// (never 0 for a directory that is not there to read), or what was counted in time.
    #[test]
    fn a_size_is_counted_or_not_given() {
        let dir = tempfile::tempdir().unwrap();
        let data = with_mib(&dir.path().join("main"), 1);
        std::fs::write(data.join("PG_VERSION"), "15\n").unwrap();
        let later = std::time::Instant::now() + Duration::from_secs(60);
        assert_eq!(size_until(&data, later), Some(((1 << 20) + 3, true)));
        assert_eq!(size_until(&dir.path().join("gone"), later), None);
        // Past its time, a walk stops and says so: what it counted is a lower bound.
        let past = std::time::Instant::now();
        assert_eq!(size_until(&data, past), Some((0, false)));
    }

    /// Without room, the copies earlier rejoins kept beside it (a base backup's too) are named
    /// with their sizes, newest first: the space to look at first.
    #[tokio::test]
    async fn a_refusal_for_want_of_room_names_the_copies_earlier_rejoins_kept() {
        let disk = SmallDisk::new();
        let data = with_mib(&disk.at.join("main"), 4);
        for (name, mib) in [
            ("main.before-rewind-20261201T031200Z", 3),
            ("main.before-rewind-20261203T101500Z", 2),
            ("main.replaced-1796169600", 1),
        ] {
            with_mib(&disk.at.join(name), mib);
        }
        let data_dir = data.display().to_string();
        let refused = local(&data_dir)
            .copy_aside(Duration::from_secs(30))
            .await
            .unwrap_err();
        assert!(
            refused.message.contains("(and 64 MiB to spare). Beside it are copies earlier rejoins kept, each holding what its rewind or base backup took out: main.before-rewind-20261203T101500Z (2 MiB), main.replaced-1796169600 (1 MiB), main.before-rewind-20261201T031200Z (3 MiB); removing those you no longer need frees their space. It is left stopped"),
            "{}",
            refused.message
        );
    }

    /// Where a copy would leave the server too little room, nothing is copied, and the
    /// refusal says where, how much, and the two ways on; a copy that fails half-way leaves
    /// nothing behind. Both on real file systems.
    #[tokio::test]
    async fn a_copy_without_room_or_that_fails_leaves_nothing_behind() {
        let disk = SmallDisk::new();
        let data = with_mib(&disk.at.join("main"), 4);
        let data_dir = data.display().to_string();
        let here = local(&data_dir);
        let refused = here.copy_aside(Duration::from_secs(30)).await.unwrap_err();
        assert!(matches!(refused.kind, ErrorKind::Permanent));
        let free = free_bytes(&disk.at).unwrap() >> 20;
        for said in [
            "main (us-east-1): its data directory must be copied before the rewind discards what it committed after the fork".to_string(),
            format!("{} has {free} MiB free where the copy needs 4 MiB (and 64 MiB to spare)", disk.at.display()),
            "It is left stopped: free space there, or rewind without a copy (keep_copy=false) to lose those transactions".to_string(),
        ] {
            assert!(refused.message.contains(&said), "{}\nlacks: {said}", refused.message);
        }
        assert_eq!(beside(&data), ["main"]);

        // On a large enough disk, a file that cannot be read (a link to nothing) fails the copy.
        let top = tempfile::tempdir().unwrap();
        let data = top.path().join("main");
        std::fs::create_dir_all(data.join("base/1")).unwrap();
        std::fs::write(data.join("base/1/1259"), b"rows").unwrap();
        std::os::unix::fs::symlink(top.path().join("gone"), data.join("pg_wal")).unwrap();
        let data_dir = data.display().to_string();
        let here = local(&data_dir);
        let failed = here.copy_aside(Duration::from_secs(30)).await.unwrap_err();
        assert!(
            failed.message.starts_with(&format!(
                "main (us-east-1): copying {data_dir} to {data_dir}.before-rewind-"
            )) && failed
                .message
                .ends_with("Nothing was rewound; it is left stopped"),
            "{}",
            failed.message
        );
        assert_eq!(beside(&data), ["main"]);
    }

    #[test]
    fn where_a_timeline_forked_in_its_history_file() {
        let history = "1\t0/4018058\tno recovery target specified\n\n2\t0/5000000\tbefore 2026-12-05 21:37:33+00\n";
        let cases = [(1, Some("0/4018058")), (2, Some("0/5000000")), (3, None)];
        for (tli, want) in cases {
            assert_eq!(
                switch_point(history, tli).as_deref(),
                want,
                "timeline {tli}"
            );
        }
        assert_eq!(switch_point("", 1), None);
        assert_eq!(switch_point("1\tnot-a-position\n", 1), None);
    }

    #[test]
    fn control_fields_by_their_label() {
        let control = "pg_control version number:            1300\nDatabase cluster state:               in production\nLatest checkpoint's TimeLineID:       3\n";
        assert_eq!(
            control_field(control, "Database cluster state:").as_deref(),
            Some("in production")
        );
        assert_eq!(
            control_field(control, "Latest checkpoint's TimeLineID:").as_deref(),
            Some("3")
        );
        assert_eq!(control_field(control, "Bytes per WAL segment:"), None);
    }
}
