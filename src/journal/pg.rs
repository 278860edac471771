//! The PostgreSQL store: runs, journal lines and locks in three tables of one database, so a
//! run started on one host can be resumed from another when the first one is gone.
//!
//! - `runbook_runs (run_id, script, created)`: one row per run, with the script as it started;
//! - `runbook_journal (run_id, pos, line)`: the journal, one committed row per record. Each
//!   append is its own transaction, so a record is durable (synchronous commit) before the engine
//!   moves on, and a crash cannot leave half a record: there is no torn tail to cut;
//! - `runbook_locks (name, holder)`: who holds a lock, for messages. The lock itself is a session
//!   advisory lock, which the server releases when the holder's connection ends — a killed
//!   process or a lost host frees it, like `flock` does for the directory store.
//!
//! The tables are created on first use. The lines are the same JSON the directory store writes,
//! read back by the same parser, so both stores refuse corruption the same way.

use std::future::Future;
use std::str::FromStr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use sha2::{Digest, Sha256};
use tokio::runtime::Handle;
use tokio_postgres::types::Type;
use tokio_postgres::{Client, Config};

use super::lock::held_by;
use super::{parse, JournalWriter, Loaded, LockGuard, LockHolder, StopRequest, Store};
use crate::error::Error;

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS runbook_runs (
    run_id text PRIMARY KEY,
    script text NOT NULL,
    created timestamptz NOT NULL DEFAULT now()
);
CREATE TABLE IF NOT EXISTS runbook_journal (
    run_id text NOT NULL REFERENCES runbook_runs (run_id),
    pos bigint NOT NULL,
    line text NOT NULL,
    PRIMARY KEY (run_id, pos)
);
CREATE TABLE IF NOT EXISTS runbook_locks (
    name text PRIMARY KEY,
    holder text
);
CREATE TABLE IF NOT EXISTS runbook_stops (
    run_id text PRIMARY KEY REFERENCES runbook_runs (run_id),
    request text NOT NULL
);";

/// Serialises schema creation between hosts starting at once.
const SCHEMA_LOCK: i64 = 0x72756e626f6f6b; // "runbook"

pub struct PgStore {
    shared: Arc<Shared>,
    shown: String,
}

/// What the store and its writers share: where to connect, the connection for the journal,
/// reads and listings (opened on first use, replaced when broken), and the lock sessions this
/// process holds, which a server restart ends and a reconnect takes again.
struct Shared {
    target: Target,
    handle: Handle,
    shown: String,
    client: Mutex<Option<Arc<Client>>>,
    locks: Mutex<Vec<std::sync::Weak<LockSlot>>>,
    /// The runtime `handle` runs on, shut down with the last of the store and its writers, so
    /// that a writer confirming its last records still has it.
    runtime: Option<tokio::runtime::Runtime>,
}

impl Drop for Shared {
    fn drop(&mut self) {
        self.client.lock().unwrap().take();
        if let Some(rt) = self.runtime.take() {
            rt.shutdown_background();
        }
    }
}

/// One held lock: its advisory key and the session holding it.
struct LockSlot {
    name: String,
    key: i64,
    client: Mutex<Option<Client>>,
}

/// How long an append keeps trying to reach a store that went away (a restart, a fail-over
/// of the store's own database) before the run stops, resumable. RUNBOOK_STORE_RECONNECT
/// sets it (a duration, e.g. "5s").
fn reconnect_window() -> Duration {
    std::env::var("RUNBOOK_STORE_RECONNECT")
        .ok()
        .and_then(|v| humantime::parse_duration(&v).ok())
        .unwrap_or(Duration::from_secs(30))
}

/// Whether an error means the connection (or the server) went away, so that a new
/// connection may succeed: not a refusal, a TLS problem or an SQL error.
fn connection_lost(e: &tokio_postgres::Error) -> bool {
    match e.as_db_error() {
        Some(db) => {
            let code = db.code().code();
            code.starts_with("57P") || code.starts_with("08")
        }
        None => crate::tls::problem(e).is_none(),
    }
}

impl Shared {
    /// The shared connection, opened (and the tables created) on first use; a broken one is
    /// replaced, and the locks this process held are taken again on the new server session.
    fn client(&self) -> Result<Arc<Client>, tokio_postgres::Error> {
        let mut slot = self.client.lock().unwrap();
        if let Some(c) = slot.as_ref().filter(|c| !c.is_closed()) {
            return Ok(c.clone());
        }
        let reconnecting = slot.is_some();
        let client = block(&self.handle, async {
            let client = connect(&self.target).await?;
            client
                .batch_execute(&format!(
                    "BEGIN; SELECT pg_advisory_xact_lock({SCHEMA_LOCK}); {SCHEMA} COMMIT;"
                ))
                .await?;
            Ok::<_, tokio_postgres::Error>(client)
        })?;
        // The locks are taken again before the new connection is handed out: another thread
        // (an append) must not go on, as this run, while its lock is not held. A retake that
        // fails leaves the old connection in place, so the next call tries it all again.
        if reconnecting {
            self.retake_locks()?;
        }
        let client = Arc::new(client);
        *slot = Some(client.clone());
        Ok(client)
    }

    /// Takes again every lock whose session ended. Another process that took one in between
    /// keeps it: the run must stop, and says why.
    fn retake_locks(&self) -> Result<(), tokio_postgres::Error> {
        let held: Vec<Arc<LockSlot>> = {
            let mut locks = self.locks.lock().unwrap();
            locks.retain(|w| w.strong_count() > 0);
            locks.iter().filter_map(std::sync::Weak::upgrade).collect()
        };
        for lock in held {
            let mut session = lock.client.lock().unwrap();
            // A session the restart ended may not know it yet (its connection has not read
            // the close): asked, it answers only if it is still there, holding the lock.
            let alive = session
                .as_ref()
                .filter(|c| !c.is_closed())
                .is_some_and(|c| {
                    block(&self.handle, async {
                        tokio::time::timeout(Duration::from_secs(5), c.simple_query("SELECT 1"))
                            .await
                            .is_ok_and(|r| r.is_ok())
                    })
                });
            if alive {
                continue;
            }
            let client = block(&self.handle, lock_session(&self.target))?;
            let got: bool = block(
                &self.handle,
                client.query_typed_one(
                    "SELECT pg_try_advisory_lock($1)",
                    &[(&lock.key, Type::INT8)],
                ),
            )?
            .get(0);
            if !got {
                *session = None;
                LOST.lock().unwrap().push(lock.name.clone());
                continue;
            }
            *session = Some(client);
        }
        Ok(())
    }
}

/// Locks another process took while the store was away (for the append that must stop).
static LOST: Mutex<Vec<String>> = Mutex::new(Vec::new());

/// Runs a future on the store's runtime from any thread, also one inside another runtime.
fn block<F>(handle: &Handle, f: F) -> F::Output
where
    F: Future + Send,
    F::Output: Send,
{
    if Handle::try_current().is_ok() {
        std::thread::scope(|s| {
            s.spawn(|| handle.block_on(f))
                .join()
                .expect("the journal store's thread")
        })
    } else {
        handle.block_on(f)
    }
}

/// A database error as one line: the server's message and code, what is wrong with TLS, or
/// the client's reason.
fn reason(e: &tokio_postgres::Error) -> String {
    match e.as_db_error() {
        Some(db) => format!("{} (SQLSTATE {})", db.message(), db.code().code()),
        None => crate::tls::problem(e).unwrap_or_else(|| crate::error::with_causes(e)),
    }
}

/// Where the store connects and how (TLS as the URL's sslmode says).
struct Target {
    config: Config,
    tls: crate::tls::PgTls,
}

async fn connect(target: &Target) -> Result<Client, tokio_postgres::Error> {
    target.tls.connect(&target.config).await
}

/// A session to hold a lock in. The server ends a session whose client is gone, releasing its
/// locks, when the connection closes; a host that is lost (powered off, cut off the network)
/// closes nothing, and the server would find out only by TCP keepalive, after the system's
/// default of two hours and more. A lock session asks the server to probe within 10 s, every
/// 5 s, and give up after 3 unanswered probes: a lost host's locks are free, and its run seen
/// stopped, within about 25 s. (Over a Unix socket the settings do nothing, and none is needed.)
async fn lock_session(target: &Target) -> Result<Client, tokio_postgres::Error> {
    let client = connect(target).await?;
    client
        .batch_execute(
            "SET tcp_keepalives_idle = 10; SET tcp_keepalives_interval = 5; \
             SET tcp_keepalives_count = 3",
        )
        .await?;
    Ok(client)
}

/// The advisory lock key of a lock name.
fn lock_key(name: &str) -> i64 {
    let digest = Sha256::digest(format!("runbook lock:{name}").as_bytes());
    let mut bytes = [0u8; 8];
    bytes.copy_from_slice(&digest[..8]);
    i64::from_be_bytes(bytes)
}

impl PgStore {
    /// Parses the URL; connects on first use, so commands that need no store never do.
    /// `PGPASSWORD` supplies the password when the URL has none. Returns the password too, for
    /// the redactor.
    pub fn open(url: &str) -> Result<(PgStore, Option<String>), Error> {
        let shown_url = crate::secret::mask_url_passwords(url);
        let (rest, ssl) = crate::tls::split_pg(url)
            .map_err(|e| Error::Usage(format!("--store {shown_url}: {e}")))?;
        let tls = crate::tls::PgTls::new(ssl)
            .map_err(|e| Error::Usage(format!("--store {shown_url}: {e}")))?;
        let mut config = Config::from_str(&rest).map_err(|e| {
            Error::Usage(format!(
                "--store {}: not a PostgreSQL URL ({e}); write it as postgres://USER@HOST:PORT/DATABASE",
                crate::secret::mask_url_passwords(url)
            ))
        })?;
        if config.get_password().is_none() {
            if let Ok(p) = std::env::var("PGPASSWORD") {
                config.password(p);
            }
        }
        if config.get_connect_timeout().is_none() {
            config.connect_timeout(Duration::from_secs(10));
        }
        config.application_name("runbook");
        let password = config
            .get_password()
            .map(|p| String::from_utf8_lossy(p).into_owned())
            .filter(|p| !p.is_empty());
        let host = match config.get_hosts().first() {
            Some(tokio_postgres::config::Host::Tcp(h)) => h.clone(),
            Some(tokio_postgres::config::Host::Unix(p)) => p.display().to_string(),
            None => "localhost".into(),
        };
        let shown = format!(
            "PostgreSQL store {}@{host}:{}/{}",
            config.get_user().unwrap_or("postgres"),
            config.get_ports().first().copied().unwrap_or(5432),
            config
                .get_dbname()
                .or(config.get_user())
                .unwrap_or("postgres"),
        );
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("runbook-store")
            .enable_all()
            .build()
            .map_err(|e| Error::Io(format!("cannot start the journal store's runtime: {e}")))?;
        let shared = Arc::new(Shared {
            target: Target { config, tls },
            handle: rt.handle().clone(),
            shown: shown.clone(),
            client: Mutex::new(None),
            locks: Mutex::new(Vec::new()),
            runtime: Some(rt),
        });
        Ok((PgStore { shared, shown }, password))
    }

    fn handle(&self) -> &Handle {
        &self.shared.handle
    }

    fn unreachable(&self, e: &tokio_postgres::Error) -> Error {
        Error::StoreUnreachable(format!(
            "cannot use the journal in {}: {}; check that the server is up and the URL given by --store or RUNBOOK_STORE",
            self.shown,
            reason(e)
        ))
    }

    fn failed(&self, what: &str, e: &tokio_postgres::Error) -> Error {
        Error::Io(format!("{} in {}: {}", what, self.shown, reason(e)))
    }

    /// The shared connection (see [`Shared::client`]).
    fn client(&self) -> Result<Arc<Client>, Error> {
        self.shared.client().map_err(|e| self.unreachable(&e))
    }

    fn exists(&self, client: &Client, run_id: &str) -> Result<(), Error> {
        let row = block(
            self.handle(),
            client.query_typed_opt(
                "SELECT 1 FROM runbook_runs WHERE run_id = $1",
                &[(&run_id, Type::TEXT)],
            ),
        )
        .map_err(|e| self.unreachable(&e))?;
        match row {
            Some(_) => Ok(()),
            None => Err(Error::UnknownRun(run_id.into(), self.shown.clone())),
        }
    }

    /// A run's journal lines, read by the parser the directory store uses.
    fn parse_lines<'a>(
        &self,
        run_id: &str,
        lines: impl Iterator<Item = &'a str>,
    ) -> Result<Loaded, Error> {
        let mut text = String::new();
        for line in lines {
            text.push_str(line);
            text.push('\n');
        }
        parse(std::path::Path::new(&self.label(run_id)), &text)
    }

    fn label(&self, run_id: &str) -> String {
        format!("{} run {run_id}", self.shown)
    }
}

struct PgWriter {
    shared: Arc<Shared>,
    run_id: String,
    next: i64,
    /// Records sent and not yet answered, oldest first.
    unconfirmed: std::collections::VecDeque<Sent>,
    /// The connection they were sent on.
    sent_on: Option<Arc<Client>>,
}

/// The answer an INSERT of a record will get: rows inserted.
type Answer = std::pin::Pin<Box<dyn Future<Output = Result<u64, tokio_postgres::Error>> + Send>>;

/// A record whose statement went out on the store's connection, pipelined behind those before
/// it, with the answer it will get (none when no connection could be had to send it on).
struct Sent {
    pos: i64,
    line: String,
    answer: Option<Answer>,
}

const INSERT_RECORD: &str = "INSERT INTO runbook_journal (run_id, pos, line) VALUES ($1, $2, $3) \
     ON CONFLICT (run_id, pos) DO NOTHING";

/// How one attempt to append ended.
enum Appended {
    Done,
    /// The connection or the server went away: try again on a new connection.
    Lost(String),
}

impl PgWriter {
    fn new(shared: Arc<Shared>, run_id: &str, next: i64) -> PgWriter {
        PgWriter {
            shared,
            run_id: run_id.into(),
            next,
            unconfirmed: Default::default(),
            sent_on: None,
        }
    }

    fn lock_lost(&self) -> std::io::Result<()> {
        match LOST.lock().unwrap().first() {
            Some(name) => Err(std::io::Error::other(format!(
                "lock '{name}' was lost while {} was away, and another process holds it now; \
                 is the run being resumed elsewhere?",
                self.shared.shown
            ))),
            None => Ok(()),
        }
    }

    /// Sends a record's INSERT without waiting for its answer. It is polled once here, which
    /// queues it on the connection, after every record sent before it: the server commits
    /// them in the order of their numbers, so a reader never sees a later one without the
    /// earlier ones, and the connection's task writes it out at once. Records sent on a
    /// connection that has since been replaced are confirmed first, so that order holds
    /// across the change too; while no connection can be had, records wait for the next
    /// confirmation.
    fn send(&mut self, line: &str) -> std::io::Result<()> {
        let stalled = self.unconfirmed.back().is_some_and(|s| s.answer.is_none());
        let client = if stalled {
            None
        } else {
            self.shared.client().ok()
        };
        if let (Some(client), Some(before)) = (&client, &self.sent_on) {
            if !Arc::ptr_eq(client, before) && !self.unconfirmed.is_empty() {
                self.confirm()?;
            }
        }
        self.sent_on = client.clone();
        let answer = client.map(|client| {
            let (run_id, pos, line) = (self.run_id.clone(), self.next, line.to_string());
            let mut answer: Answer = Box::pin(async move {
                client
                    .execute_typed(
                        INSERT_RECORD,
                        &[
                            (&run_id, Type::TEXT),
                            (&pos, Type::INT8),
                            (&line, Type::TEXT),
                        ],
                    )
                    .await
            });
            let first = block(
                &self.shared.handle,
                std::future::poll_fn(|cx| std::task::Poll::Ready(answer.as_mut().poll(cx))),
            );
            match first {
                std::task::Poll::Ready(done) => Box::pin(std::future::ready(done)) as Answer,
                std::task::Poll::Pending => answer,
            }
        });
        self.unconfirmed.push_back(Sent {
            pos: self.next,
            line: line.into(),
            answer,
        });
        self.next += 1;
        Ok(())
    }

    /// Waits for the answers of the records sent, in order. A record whose answer did not
    /// come (the connection broke, or none could be had) is written again the way a lone
    /// record is — exactly once, on new connections, for the reconnect window counted from
    /// the first that did not come.
    fn confirm(&mut self) -> std::io::Result<()> {
        let mut since: Option<std::time::Instant> = None;
        while let Some(mut sent) = self.unconfirmed.pop_front() {
            let answer = sent.answer.take().map(|a| block(&self.shared.handle, a));
            match answer {
                Some(Ok(1)) => continue,
                // Already there: whether it is this line is asked below.
                Some(Ok(_)) => {}
                Some(Err(e)) if !connection_lost(&e) => {
                    self.unconfirmed.clear();
                    return Err(std::io::Error::other(reason(&e)));
                }
                Some(Err(_)) | None => {}
            }
            let started = *since.get_or_insert_with(std::time::Instant::now);
            if let Err(e) = self.append_at(sent.pos, &sent.line, started) {
                self.unconfirmed.clear();
                return Err(e);
            }
        }
        Ok(())
    }

    /// Writes record `pos` and waits until it is committed, trying again on new connections
    /// until the reconnect window, counted from `started`, has passed.
    fn append_at(&self, pos: i64, line: &str, started: std::time::Instant) -> std::io::Result<()> {
        let window = reconnect_window();
        let mut delay = Duration::from_millis(100);
        loop {
            match self.try_append(pos, line)? {
                Appended::Done => return Ok(()),
                Appended::Lost(why) => {
                    if started.elapsed() >= window {
                        // The engine says what comes next: the resume, with the store.
                        return Err(std::io::Error::other(format!(
                            "{} did not answer for {} ({why})",
                            self.shared.shown,
                            humantime::format_duration(window),
                        )));
                    }
                    std::thread::sleep(delay);
                    delay = (delay * 2).min(Duration::from_secs(2));
                }
            }
        }
    }

    /// One attempt. A record number already present is not written twice: when it holds
    /// this very line, an earlier attempt committed before its connection broke, and that is
    /// success; any other line there was written by another process.
    fn try_append(&self, pos: i64, line: &str) -> std::io::Result<Appended> {
        let lost = |e: &tokio_postgres::Error| -> std::io::Result<Appended> {
            if connection_lost(e) {
                Ok(Appended::Lost(reason(e)))
            } else {
                Err(std::io::Error::other(reason(e)))
            }
        };
        let client = match self.shared.client() {
            Ok(c) => c,
            Err(e) => return lost(&e),
        };
        self.lock_lost()?;
        let inserted = block(
            &self.shared.handle,
            client.execute_typed(
                INSERT_RECORD,
                &[
                    (&self.run_id, Type::TEXT),
                    (&pos, Type::INT8),
                    (&line, Type::TEXT),
                ],
            ),
        );
        match inserted {
            Ok(1) => return Ok(Appended::Done),
            Ok(_) => {}
            Err(e) => return lost(&e),
        }
        let present = block(
            &self.shared.handle,
            client.query_typed_one(
                "SELECT line FROM runbook_journal WHERE run_id = $1 AND pos = $2",
                &[(&self.run_id, Type::TEXT), (&pos, Type::INT8)],
            ),
        );
        match present {
            Ok(row) if row.get::<_, &str>(0) == line => Ok(Appended::Done),
            Ok(_) => Err(std::io::Error::other(format!(
                "another process appended record {pos} of this run first; is the run being resumed elsewhere?"
            ))),
            Err(e) => lost(&e),
        }
    }
}

impl JournalWriter for PgWriter {
    /// Every record is sent at once, pipelined; `sync` waits until it and every record before
    /// it are committed. A record that guards a side effect is a sync one, so the cheap ones
    /// (a step started, a log line) cost no round trip of their own.
    fn append(&mut self, line: &str, sync: bool) -> std::io::Result<()> {
        self.lock_lost()?;
        self.send(line)?;
        if sync {
            self.confirm()
        } else {
            Ok(())
        }
    }

    fn sync(&mut self) -> std::io::Result<()> {
        self.confirm()
    }
}

impl Drop for PgWriter {
    fn drop(&mut self) {
        let _ = self.confirm();
    }
}

/// A lock's session: holding it holds the advisory lock; dropping it ends the session, which
/// releases the hold. The claim (the holder row) stays until it is cleared on purpose.
struct HeldSession {
    handle: Handle,
    lock: Arc<LockSlot>,
}

impl super::lock::Held for HeldSession {
    fn set_claim(&mut self, holder: Option<&LockHolder>) -> Result<(), Error> {
        let session = self.lock.client.lock().unwrap();
        let Some(client) = session.as_ref() else {
            return Ok(());
        };
        let text = holder.map(|h| serde_json::to_string(h).unwrap_or_default());
        block(
            &self.handle,
            client.execute_typed(
                "INSERT INTO runbook_locks (name, holder) VALUES ($1, $2) \
                 ON CONFLICT (name) DO UPDATE SET holder = EXCLUDED.holder",
                &[(&self.lock.name, Type::TEXT), (&text, Type::TEXT)],
            ),
        )
        .map(|_| ())
        .map_err(|e| {
            Error::Io(format!(
                "cannot record the claim on lock '{}': {}",
                self.lock.name,
                reason(&e)
            ))
        })
    }
}

impl Drop for HeldSession {
    fn drop(&mut self) {
        let session = self.lock.client.lock().unwrap().take();
        if let Some(client) = session {
            let key = self.lock.key;
            let _ = block(&self.handle, async {
                client
                    .execute_typed("SELECT pg_advisory_unlock($1)", &[(&key, Type::INT8)])
                    .await
            });
        }
    }
}

impl Store for PgStore {
    fn create(&self, run_id: &str, script: &str) -> Result<Box<dyn JournalWriter>, Error> {
        let client = self.client()?;
        block(
            self.handle(),
            client.execute_typed(
                "INSERT INTO runbook_runs (run_id, script) VALUES ($1, $2)",
                &[(&run_id, Type::TEXT), (&script, Type::TEXT)],
            ),
        )
        .map_err(|e| self.failed(&format!("cannot create run {run_id}"), &e))?;
        Ok(Box::new(PgWriter::new(self.shared.clone(), run_id, 1)))
    }

    fn append_to(&self, run_id: &str) -> Result<Box<dyn JournalWriter>, Error> {
        let client = self.client()?;
        self.exists(&client, run_id)?;
        let row = block(
            self.handle(),
            client.query_typed_one(
                "SELECT coalesce(max(pos), 0) + 1 FROM runbook_journal WHERE run_id = $1",
                &[(&run_id, Type::TEXT)],
            ),
        )
        .map_err(|e| self.unreachable(&e))?;
        Ok(Box::new(PgWriter::new(
            self.shared.clone(),
            run_id,
            row.get(0),
        )))
    }

    fn read(&self, run_id: &str) -> Result<Loaded, Error> {
        let client = self.client()?;
        // One round trip: a run without records is one row without a line, an unknown run
        // no row.
        let rows = block(
            self.handle(),
            client.query_typed(
                "SELECT j.line FROM runbook_runs r LEFT JOIN runbook_journal j USING (run_id) \
                 WHERE r.run_id = $1 ORDER BY j.pos",
                &[(&run_id, Type::TEXT)],
            ),
        )
        .map_err(|e| self.unreachable(&e))?;
        if rows.is_empty() {
            return Err(Error::UnknownRun(run_id.into(), self.shown.clone()));
        }
        let lines = rows.iter().filter_map(|r| r.get::<_, Option<&str>>(0));
        self.parse_lines(run_id, lines)
    }

    fn read_since(&self, run_id: &str, known: &Loaded) -> Result<Loaded, Error> {
        let client = self.client()?;
        // Records are numbered from 1 without a gap, and none is ever torn here.
        let after = known.records.len() as i64;
        let rows = block(
            self.handle(),
            client.query_typed(
                "SELECT line FROM runbook_journal WHERE run_id = $1 AND pos > $2 ORDER BY pos",
                &[(&run_id, Type::TEXT), (&after, Type::INT8)],
            ),
        )
        .map_err(|e| self.unreachable(&e))?;
        self.parse_lines(run_id, rows.iter().map(|r| r.get::<_, &str>(0)))
    }

    fn read_all(&self) -> Result<Vec<super::RunRead>, Error> {
        let client = self.client()?;
        let rows = block(
            self.handle(),
            client.query_typed(
                "SELECT r.run_id, j.line FROM runbook_runs r LEFT JOIN runbook_journal j \
                 USING (run_id) ORDER BY r.run_id, j.pos",
                &[],
            ),
        )
        .map_err(|e| self.unreachable(&e))?;
        let mut runs: Vec<(String, Vec<&str>)> = Vec::new();
        for row in &rows {
            let id: &str = row.get(0);
            if runs.last().is_none_or(|(last, _)| last != id) {
                runs.push((id.to_string(), Vec::new()));
            }
            if let Some(line) = row.get::<_, Option<&str>>(1) {
                runs.last_mut().expect("pushed above").1.push(line);
            }
        }
        Ok(runs
            .into_iter()
            .map(|(id, lines)| {
                let loaded = self.parse_lines(&id, lines.into_iter());
                (id, loaded)
            })
            .collect())
    }

    fn read_runs(&self, ids: &[String]) -> Result<Vec<super::RunRead>, Error> {
        let client = self.client()?;
        let rows = block(
            self.handle(),
            client.query_typed(
                "SELECT r.run_id, j.line FROM runbook_runs r LEFT JOIN runbook_journal j \
                 USING (run_id) WHERE r.run_id = ANY($1) ORDER BY r.run_id, j.pos",
                &[(&ids, Type::TEXT_ARRAY)],
            ),
        )
        .map_err(|e| self.unreachable(&e))?;
        let mut lines: std::collections::HashMap<&str, Vec<&str>> = Default::default();
        for row in &rows {
            let entry = lines.entry(row.get(0)).or_default();
            if let Some(line) = row.get::<_, Option<&str>>(1) {
                entry.push(line);
            }
        }
        Ok(ids
            .iter()
            .filter_map(|id| {
                let run = lines.remove(id.as_str())?;
                Some((id.clone(), self.parse_lines(id, run.into_iter())))
            })
            .collect())
    }

    fn closed(&self) -> Result<Vec<(String, bool)>, Error> {
        let client = self.client()?;
        // Each run's last line, found through the journal's primary key: one row a run.
        let rows = block(
            self.handle(),
            client.query_typed(
                "SELECT r.run_id, (SELECT j.line FROM runbook_journal j WHERE j.run_id = r.run_id \
                 ORDER BY j.pos DESC LIMIT 1) FROM runbook_runs r \
                 ORDER BY left(r.run_id, 13), r.created, r.run_id",
                &[],
            ),
        )
        .map_err(|e| self.unreachable(&e))?;
        Ok(rows
            .iter()
            .map(|row| {
                let over = row
                    .get::<_, Option<&str>>(1)
                    .is_some_and(super::closing_line);
                (row.get::<_, String>(0), over)
            })
            .collect())
    }

    fn remove(&self, run_ids: &[String]) -> Result<(), Error> {
        let client = self.client()?;
        // One statement: all of a run goes, or none of it.
        block(
            self.handle(),
            client.execute_typed(
                "WITH stops AS (DELETE FROM runbook_stops WHERE run_id = ANY($1)), \
                 journal AS (DELETE FROM runbook_journal WHERE run_id = ANY($1)) \
                 DELETE FROM runbook_runs WHERE run_id = ANY($1)",
                &[(&run_ids, Type::TEXT_ARRAY)],
            ),
        )
        .map(|_| ())
        .map_err(|e| self.failed("cannot remove runs", &e))
    }

    fn starts(&self) -> Result<Vec<(String, Option<super::Record>)>, Error> {
        let client = self.client()?;
        let rows = block(
            self.handle(),
            client.query_typed(
                "SELECT r.run_id, j.line FROM runbook_runs r LEFT JOIN runbook_journal j \
                 ON j.run_id = r.run_id AND j.pos = 1 ORDER BY r.run_id",
                &[],
            ),
        )
        .map_err(|e| self.unreachable(&e))?;
        Ok(rows
            .iter()
            .map(|row| {
                let first = row.get::<_, Option<&str>>(1).and_then(super::record_of);
                (row.get::<_, String>(0), first)
            })
            .collect())
    }

    fn script(&self, run_id: &str) -> Result<String, Error> {
        let client = self.client()?;
        let row = block(
            self.handle(),
            client.query_typed_opt(
                "SELECT script FROM runbook_runs WHERE run_id = $1",
                &[(&run_id, Type::TEXT)],
            ),
        )
        .map_err(|e| self.unreachable(&e))?;
        row.map(|r| r.get(0))
            .ok_or_else(|| Error::UnknownRun(run_id.into(), self.shown.clone()))
    }

    fn list(&self) -> Result<Vec<String>, Error> {
        let client = self.client()?;
        let rows = block(
            self.handle(),
            client.query_typed("SELECT run_id FROM runbook_runs ORDER BY run_id", &[]),
        )
        .map_err(|e| self.unreachable(&e))?;
        Ok(rows.iter().map(|r| r.get(0)).collect())
    }

    fn lock(&self, name: &str) -> Result<LockGuard, Error> {
        self.client()?; // the tables
        let key = lock_key(name);
        let read_holder = |client: &Client| {
            block(
                self.handle(),
                client.query_typed_opt(
                    "SELECT holder FROM runbook_locks WHERE name = $1",
                    &[(&name, Type::TEXT)],
                ),
            )
            .ok()
            .flatten()
            .and_then(|r| r.get::<_, Option<String>>(0))
            .and_then(|t| serde_json::from_str::<LockHolder>(&t).ok())
        };
        let client = block(self.handle(), lock_session(&self.shared.target))
            .map_err(|e| self.unreachable(&e))?;
        let got: bool = block(
            self.handle(),
            client.query_typed_one("SELECT pg_try_advisory_lock($1)", &[(&key, Type::INT8)]),
        )
        .map_err(|e| self.unreachable(&e))?
        .get(0);
        if !got {
            // The holder writes its name right after taking the lock: give it a moment.
            let mut current = None;
            for _ in 0..50 {
                current = read_holder(&client);
                if current.is_some() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(10));
            }
            return Err(held_by(name, current));
        }
        let previous = read_holder(&client);
        let lock = Arc::new(LockSlot {
            name: name.to_string(),
            key,
            client: Mutex::new(Some(client)),
        });
        self.shared
            .locks
            .lock()
            .unwrap()
            .push(Arc::downgrade(&lock));
        Ok(LockGuard {
            name: name.to_string(),
            previous,
            took_over: None,
            held: Box::new(HeldSession {
                handle: self.handle().clone(),
                lock,
            }),
        })
    }

    fn held(&self, name: &str) -> Result<bool, Error> {
        let client = self.client()?;
        // pg_locks shows a bigint advisory key as its high half (classid) and low half (objid).
        let key = lock_key(name) as u64;
        let (high, low) = ((key >> 32) as u32, key as u32);
        let row = block(
            self.handle(),
            client.query_typed_one(
                "SELECT EXISTS (SELECT 1 FROM pg_locks WHERE locktype = 'advisory' AND granted \
                 AND database = (SELECT oid FROM pg_database WHERE datname = current_database()) \
                 AND classid = $1 AND objid = $2 AND objsubid = 1)",
                &[(&high, Type::OID), (&low, Type::OID)],
            ),
        )
        .map_err(|e| self.unreachable(&e))?;
        Ok(row.get(0))
    }

    fn claims(&self) -> Result<Vec<(String, LockHolder)>, Error> {
        let client = self.client()?;
        let rows = block(
            self.handle(),
            client.query_typed(
                "SELECT name, holder FROM runbook_locks WHERE holder IS NOT NULL ORDER BY name",
                &[],
            ),
        )
        .map_err(|e| self.unreachable(&e))?;
        Ok(rows
            .iter()
            .filter_map(|r| {
                let holder: String = r.get(1);
                Some((r.get(0), serde_json::from_str(&holder).ok()?))
            })
            .collect())
    }

    fn describe(&self) -> String {
        self.shown.clone()
    }

    fn request_stop(&self, run_id: &str, request: Option<&StopRequest>) -> Result<(), Error> {
        let client = self.client()?;
        self.exists(&client, run_id)?;
        let done = match request {
            Some(request) => {
                let text = serde_json::to_string(request).map_err(|e| Error::Io(e.to_string()))?;
                block(
                    self.handle(),
                    client.execute_typed(
                        "INSERT INTO runbook_stops (run_id, request) VALUES ($1, $2)
                         ON CONFLICT (run_id) DO UPDATE SET request = EXCLUDED.request",
                        &[(&run_id, Type::TEXT), (&text, Type::TEXT)],
                    ),
                )
            }
            None => block(
                self.handle(),
                client.execute_typed(
                    "DELETE FROM runbook_stops WHERE run_id = $1",
                    &[(&run_id, Type::TEXT)],
                ),
            ),
        };
        done.map(|_| ())
            .map_err(|e| self.failed(&format!("cannot ask run {run_id} to stop"), &e))
    }

    fn stop_request(&self, run_id: &str) -> Result<Option<StopRequest>, Error> {
        let client = self.client()?;
        let row = block(
            self.handle(),
            client.query_typed_opt(
                "SELECT request FROM runbook_stops WHERE run_id = $1",
                &[(&run_id, Type::TEXT)],
            ),
        )
        .map_err(|e| self.unreachable(&e))?;
        Ok(row.and_then(|r| serde_json::from_str(r.get::<_, &str>(0)).ok()))
    }
}
