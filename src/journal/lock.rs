//! Exclusive run locks: a file per lock name, held with `flock` for as long as the process
//! runs. The kernel releases it when the holder dies, so a lock left by a killed process is
//! taken over; the file still names the old holder, which is reported.

use std::fs::{self, File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::fd::AsRawFd;
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::error::Error;

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct LockHolder {
    pub run_id: String,
    pub runbook: String,
    pub operator: String,
    pub host: String,
    pub pid: u32,
    pub since: String,
}

impl LockHolder {
    pub fn describe(&self) -> String {
        format!(
            "run {} ({}, by {} on {}, pid {}, since {})",
            self.run_id, self.runbook, self.operator, self.host, self.pid, self.since
        )
    }
}

/// Held while alive; dropping it (or the process dying) releases the lock.
pub struct LockGuard {
    pub name: String,
    /// The holder a dead process left behind, if any.
    pub took_over: Option<LockHolder>,
    /// What keeps the lock (a locked file, a database session); released when dropped.
    pub(super) _held: Box<dyn Send>,
}

/// The lock's file name.
fn sanitize(name: &str) -> String {
    name.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_' | '@') {
                c
            } else {
                '_'
            }
        })
        .collect()
}

fn read_holder(file: &mut File) -> Option<LockHolder> {
    let mut text = String::new();
    file.seek(SeekFrom::Start(0)).ok()?;
    file.read_to_string(&mut text).ok()?;
    serde_json::from_str(&text).ok()
}

impl LockGuard {
    pub fn acquire(dir: &Path, name: &str, holder: &LockHolder) -> Result<LockGuard, Error> {
        fs::create_dir_all(dir)
            .map_err(|e| Error::Io(format!("cannot create {}: {e}", dir.display())))?;
        let path = dir.join(format!("{}.lock", sanitize(name)));
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(|e| Error::Io(format!("cannot open lock {}: {e}", path.display())))?;
        let rc = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
        if rc != 0 {
            // The holder writes its name right after taking the lock: give it a moment.
            let mut current = None;
            for _ in 0..50 {
                current = read_holder(&mut file);
                if current.is_some() {
                    break;
                }
                std::thread::sleep(std::time::Duration::from_millis(10));
            }
            return Err(held_by(name, current));
        }
        let took_over = read_holder(&mut file)
            .filter(|old| old.run_id != holder.run_id || old.pid != holder.pid);
        let text = serde_json::to_string(holder).unwrap_or_default();
        file.set_len(0)
            .and_then(|_| file.seek(SeekFrom::Start(0)))
            .and_then(|_| file.write_all(text.as_bytes()))
            .and_then(|_| file.sync_data())
            .map_err(|e| Error::Io(format!("cannot write lock {}: {e}", path.display())))?;
        Ok(LockGuard {
            name: name.to_string(),
            took_over,
            _held: Box::new(HeldFile(file)),
        })
    }
}

/// The locked file of the directory store.
struct HeldFile(File);

impl Drop for HeldFile {
    fn drop(&mut self) {
        // An empty file after a clean release: a name left in it means its holder died.
        let _ = self.0.set_len(0);
    }
}

/// The message for a lock someone else holds.
pub(super) fn held_by(name: &str, holder: Option<LockHolder>) -> Error {
    let who = holder
        .map(|h| h.describe())
        .unwrap_or_else(|| "another process".into());
    Error::Locked(format!(
        "the lock '{name}' is held by {who}; two runs of conflicting procedures must not overlap. \
         Wait for it to finish (`runbook runs` shows its state)"
    ))
}
