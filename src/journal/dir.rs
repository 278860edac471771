//! The directory store: `<state>/runs/<run-id>/journal.jsonl`, append-only JSON lines.

use std::fs::{self, File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use super::{parse, JournalWriter, Loaded, LockGuard, LockHolder, StopRequest, Store};
use crate::error::Error;

pub struct DirStore {
    /// Absolute: a resume may move to the folder its run started in.
    root: PathBuf,
    /// As given, for messages.
    shown: PathBuf,
}

struct FileWriter {
    file: File,
}

impl JournalWriter for FileWriter {
    fn append(&mut self, line: &str, sync: bool) -> std::io::Result<()> {
        // One write per record: a crash leaves at most the last line torn.
        let mut buf = Vec::with_capacity(line.len() + 1);
        buf.extend_from_slice(line.as_bytes());
        buf.push(b'\n');
        self.file.write_all(&buf)?;
        if sync {
            self.file.sync_data()?;
        }
        Ok(())
    }

    fn sync(&mut self) -> std::io::Result<()> {
        self.file.sync_data()
    }
}

impl DirStore {
    pub fn new(root: impl Into<PathBuf>) -> DirStore {
        let shown = root.into();
        let root = match std::env::current_dir() {
            Ok(cwd) if shown.is_relative() => cwd.join(&shown),
            _ => shown.clone(),
        };
        DirStore { root, shown }
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    fn run_dir(&self, run_id: &str) -> PathBuf {
        self.root.join("runs").join(run_id)
    }

    fn journal_path(&self, run_id: &str) -> PathBuf {
        self.run_dir(run_id).join("journal.jsonl")
    }

    fn io(&self, path: &Path, e: std::io::Error) -> Error {
        Error::Journal {
            path: path.into(),
            message: e.to_string(),
        }
    }

    fn check_id(&self, run_id: &str) -> Result<(), Error> {
        let valid = !run_id.is_empty()
            && run_id
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
        if !valid || !self.journal_path(run_id).exists() {
            return Err(Error::UnknownRun(
                run_id.into(),
                self.shown.display().to_string(),
            ));
        }
        Ok(())
    }
}

/// Whether a journal's last line is a record that closes its run, read from the file's end: a
/// closing record is short, so a last line longer than the part read is not one, and neither
/// is a torn one (no newline yet) nor a file that cannot be read (a full read says why).
fn last_line_closes(path: &Path) -> bool {
    const TAIL: u64 = 4096;
    let Ok(mut file) = File::open(path) else {
        return false;
    };
    let Ok(len) = file.metadata().map(|m| m.len()) else {
        return false;
    };
    let from = len.saturating_sub(TAIL);
    let mut bytes = Vec::new();
    if file
        .seek(SeekFrom::Start(from))
        .and_then(|_| file.read_to_end(&mut bytes))
        .is_err()
    {
        return false;
    }
    let Some(body) = bytes.strip_suffix(b"\n") else {
        return false;
    };
    let line = match body.iter().rposition(|&b| b == b'\n') {
        Some(i) => &body[i + 1..],
        None if from == 0 => body,
        None => return false,
    };
    std::str::from_utf8(line).is_ok_and(super::closing_line)
}

fn sync_dir(path: &Path) {
    if let Ok(d) = File::open(path) {
        let _ = d.sync_all();
    }
}

impl Store for DirStore {
    fn create(&self, run_id: &str, script: &str) -> Result<Box<dyn JournalWriter>, Error> {
        // Nothing has started yet: a state directory that cannot be written says so, with
        // what to do, rather than as a journal that cannot be read.
        let unwritable = |path: &Path, e: std::io::Error| {
            Error::state_unwritable(format!("cannot write {}: {e}", path.display()), &self.root)
        };
        let dir = self.run_dir(run_id);
        fs::create_dir_all(&dir).map_err(|e| unwritable(&dir, e))?;
        let script_path = dir.join("runbook.rhai");
        let path = self.journal_path(run_id);
        let opened = fs::write(&script_path, script)
            .map_err(|e| unwritable(&script_path, e))
            .and_then(|_| {
                OpenOptions::new()
                    .create_new(true)
                    .append(true)
                    .open(&path)
                    .map_err(|e| unwritable(&path, e))
            });
        let file = match opened {
            Ok(f) => f,
            Err(e) => {
                // Half a run (a folder, a partial copy of its runbook) is no run: not left.
                let _ = fs::remove_dir_all(&dir);
                return Err(e);
            }
        };
        sync_dir(&dir);
        sync_dir(&self.root.join("runs"));
        Ok(Box::new(FileWriter { file }))
    }

    fn append_to(&self, run_id: &str) -> Result<Box<dyn JournalWriter>, Error> {
        self.check_id(run_id)?;
        let path = self.journal_path(run_id);
        let loaded = self.read(run_id)?;
        let file = OpenOptions::new()
            .append(true)
            .open(&path)
            .map_err(|e| self.io(&path, e))?;
        if loaded.torn_tail.is_some() {
            file.set_len(loaded.intact_len)
                .map_err(|e| self.io(&path, e))?;
            file.sync_all().map_err(|e| self.io(&path, e))?;
        }
        Ok(Box::new(FileWriter { file }))
    }

    fn read(&self, run_id: &str) -> Result<Loaded, Error> {
        self.check_id(run_id)?;
        let path = self.journal_path(run_id);
        let bytes = fs::read(&path).map_err(|e| self.io(&path, e))?;
        let text = String::from_utf8_lossy(&bytes);
        parse(&path, &text)
    }

    fn read_since(&self, run_id: &str, known: &Loaded) -> Result<Loaded, Error> {
        self.check_id(run_id)?;
        let path = self.journal_path(run_id);
        let mut file = File::open(&path).map_err(|e| self.io(&path, e))?;
        let mut bytes = Vec::new();
        file.seek(SeekFrom::Start(known.intact_len))
            .and_then(|_| file.read_to_end(&mut bytes))
            .map_err(|e| self.io(&path, e))?;
        match parse(&path, &String::from_utf8_lossy(&bytes)) {
            Ok(mut new) => {
                new.intact_len += known.intact_len;
                Ok(new)
            }
            // Read whole again, so that the error names the line as the journal numbers it.
            Err(_) => Ok(super::since(self.read(run_id)?, known)),
        }
    }

    fn script(&self, run_id: &str) -> Result<String, Error> {
        self.check_id(run_id)?;
        let path = self.run_dir(run_id).join("runbook.rhai");
        fs::read_to_string(&path).map_err(|e| self.io(&path, e))
    }

    fn list(&self) -> Result<Vec<String>, Error> {
        let dir = self.root.join("runs");
        let entries = match fs::read_dir(&dir) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(vec![]),
            Err(e) => return Err(self.io(&dir, e)),
        };
        let mut ids: Vec<String> = entries
            .filter_map(|e| e.ok())
            .filter(|e| e.path().join("journal.jsonl").exists())
            .filter_map(|e| e.file_name().into_string().ok())
            .collect();
        ids.sort();
        Ok(ids)
    }

    fn closed(&self) -> Result<Vec<(String, bool)>, Error> {
        // A run's copy of its runbook is written once, as it is created: within the minute its
        // id names, its time orders runs the random rest of their ids does not.
        let mut runs: Vec<_> = self
            .list()?
            .into_iter()
            .map(|id| {
                let created = fs::metadata(self.run_dir(&id).join("runbook.rhai"))
                    .and_then(|m| m.modified())
                    .ok();
                let over = last_line_closes(&self.journal_path(&id));
                (id.get(..13).unwrap_or(&id).to_string(), created, id, over)
            })
            .collect();
        runs.sort();
        Ok(runs
            .into_iter()
            .map(|(_, _, id, over)| (id, over))
            .collect())
    }

    fn starts(&self) -> Result<Vec<(String, Option<super::Record>)>, Error> {
        use std::io::BufRead;
        Ok(self
            .list()?
            .into_iter()
            .map(|id| {
                let mut first = String::new();
                let read = File::open(self.journal_path(&id))
                    .and_then(|f| std::io::BufReader::new(f).read_line(&mut first));
                // A first line not yet whole is not read as a record.
                let whole = read.is_ok() && first.ends_with('\n');
                let record = whole.then(|| super::record_of(&first)).flatten();
                (id, record)
            })
            .collect())
    }

    fn remove(&self, run_ids: &[String]) -> Result<(), Error> {
        for id in run_ids {
            if self.check_id(id).is_err() {
                continue; // gone already (another prune), or no run of this store
            }
            let dir = self.run_dir(id);
            match fs::remove_dir_all(&dir) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(self.io(&dir, e)),
                _ => {}
            }
        }
        sync_dir(&self.root.join("runs"));
        Ok(())
    }

    fn lock(&self, name: &str) -> Result<LockGuard, Error> {
        super::lock::acquire_file(&self.root.join("locks"), name)
    }

    fn held(&self, name: &str) -> Result<bool, Error> {
        super::lock::file_held(&self.root.join("locks"), name)
    }

    fn claims(&self) -> Result<Vec<(String, LockHolder)>, Error> {
        super::lock::file_claims(&self.root.join("locks"))
    }

    fn describe(&self) -> String {
        format!("directory {}", self.shown.display())
    }

    fn request_stop(&self, run_id: &str, request: Option<&StopRequest>) -> Result<(), Error> {
        self.check_id(run_id)?;
        let path = self.run_dir(run_id).join("stop.json");
        match request {
            // Written whole, then renamed: a poll never reads half a request.
            Some(request) => {
                let text = serde_json::to_string(request).map_err(|e| Error::Io(e.to_string()))?;
                let part = path.with_extension("json.part");
                fs::write(&part, text).map_err(|e| self.io(&part, e))?;
                fs::rename(&part, &path).map_err(|e| self.io(&path, e))
            }
            None => match fs::remove_file(&path) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(self.io(&path, e)),
                _ => Ok(()),
            },
        }
    }

    fn stop_request(&self, run_id: &str) -> Result<Option<StopRequest>, Error> {
        let path = self.run_dir(run_id).join("stop.json");
        match fs::read_to_string(&path) {
            Ok(text) => Ok(serde_json::from_str(&text).ok()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(self.io(&path, e)),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use super::DirStore;
    use crate::journal::{Event, Record, Store, FORMAT_VERSION};

    fn line(n: u64) -> String {
        let record = Record {
            v: FORMAT_VERSION,
            n,
            at: "2026-12-07T10:00:00.000Z".into(),
            event: Event::Log {
                step: vec!["s".into()],
                message: format!("record {n}"),
            },
        };
        serde_json::to_string(&record).unwrap()
    }

    /// A journal's last line, read from its end, tells whether the run is over.
    #[test]
    fn the_end_of_a_journal_tells_whether_its_run_is_over() {
        let finished = serde_json::to_string(&Record {
            v: FORMAT_VERSION,
            n: 9,
            at: "2026-12-07T10:00:00.000Z".into(),
            event: Event::RunFinished { elapsed_ms: 1 },
        })
        .unwrap();
        let long = "x".repeat(10_000);
        let cases: [(&str, String, bool); 7] = [
            (
                "finished",
                format!("{}\n{}\n{finished}\n", line(1), line(2)),
                true,
            ),
            ("only the end", format!("{finished}\n"), true),
            (
                "after a long line",
                format!("{{\"m\":\"{long}\"}}\n{finished}\n"),
                true,
            ),
            ("still going", format!("{finished}\n{}\n", line(3)), false),
            ("torn", format!("{}\n{finished}", line(1)), false),
            ("a long last line", format!("{{\"m\":\"{long}\"}}\n"), false),
            ("empty", String::new(), false),
        ];
        let dir = tempfile::tempdir().unwrap();
        let store = DirStore::new(dir.path());
        let mut want = Vec::new();
        for (i, (name, text, over)) in cases.iter().enumerate() {
            let id = format!("r{i}");
            drop(store.create(&id, "").unwrap());
            std::fs::write(dir.path().join(format!("runs/{id}/journal.jsonl")), text).unwrap();
            want.push((id, *over, *name));
        }
        let got = store.closed().unwrap();
        for ((id, over, name), (got_id, got_over)) in want.iter().zip(&got) {
            assert_eq!((id, over), (got_id, got_over), "{name}");
        }
        assert_eq!(got.len(), want.len());
    }

    /// A run's start is read from its journal's first line, when that line is whole.
    #[test]
    fn the_first_line_of_a_journal_tells_how_its_run_started() {
        let dir = tempfile::tempdir().unwrap();
        let store = DirStore::new(dir.path());
        let first = line(1);
        let cases: [(&str, String, Option<u64>); 4] = [
            ("whole", format!("{first}\n{}\n", line(2)), Some(1)),
            ("alone", format!("{first}\n"), Some(1)),
            ("being written", first[..30].to_string(), None),
            ("empty", String::new(), None),
        ];
        for (i, (_, text, _)) in cases.iter().enumerate() {
            drop(store.create(&format!("r{i}"), "").unwrap());
            std::fs::write(dir.path().join(format!("runs/r{i}/journal.jsonl")), text).unwrap();
        }
        let starts = store.starts().unwrap();
        assert_eq!(starts.len(), cases.len());
        for ((name, _, want), (_, got)) in cases.iter().zip(&starts) {
            assert_eq!(got.as_ref().map(|r| r.n), *want, "{name}");
        }
    }

    /// A follow reads what was appended since its last read: a line half-written when it
    /// looks is left for the next look, which reads it whole, and nothing twice.
    #[test]
    fn a_follow_reads_what_came_since_and_a_line_being_written_once_whole() {
        let dir = tempfile::tempdir().unwrap();
        let store = DirStore::new(dir.path());
        let mut writer = store.create("r1", "").unwrap();
        writer.append(&line(1), false).unwrap();
        writer.append(&line(2), false).unwrap();
        let mut known = store.read("r1").unwrap();
        assert_eq!(known.records.len(), 2);

        let third = line(3);
        let cases: [(&str, String, &[u64], bool); 4] = [
            ("nothing new", String::new(), &[], false),
            ("a line begun", third[..20].to_string(), &[], true),
            (
                "its rest, and one more",
                format!("{}\n{}\n", &third[20..], line(4)),
                &[3, 4],
                false,
            ),
            ("nothing new again", String::new(), &[], false),
        ];
        let path = dir.path().join("runs/r1/journal.jsonl");
        for (name, appended, want, torn) in cases {
            let mut file = std::fs::OpenOptions::new()
                .append(true)
                .open(&path)
                .unwrap();
            file.write_all(appended.as_bytes()).unwrap();
            let new = store.read_since("r1", &known).unwrap();
            let got: Vec<u64> = new.records.iter().map(|r| r.n).collect();
            assert_eq!(got, want, "{name}");
            assert_eq!(new.torn_tail.is_some(), torn, "{name}");
            known.records.extend(new.records);
            known.intact_len = new.intact_len;
            let whole = store.read("r1").unwrap();
            assert_eq!(known.intact_len, whole.intact_len, "{name}");
            assert_eq!(known.records.len(), whole.records.len(), "{name}");
        }
    }
}
