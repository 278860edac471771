//! Actions on a server's data directory, run where that directory is: turning a former primary
//! (or a diverged standby) into a standby of the current primary — with pg_rewind, or with a
//! fresh base backup when a rewind is impossible — and restarting a server.
//!
//! pg_rewind and pg_basebackup copy the source's configuration files over the target's; the
//! target keeps its own (its port, its pg_hba), saved before and written back after.

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::{Duration, Instant};

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::tool::Tools;
use super::{connect, conninfo_value, fork, quote_literal, status_of, target};
use crate::action::types::endpoint;
use crate::action::world::World;
use crate::action::{Action, ActionError, Cx, Poll, Spec};
use crate::secret::SecretString;

/// Files a server keeps as its own across a rewind or a base backup.
const OWN_FILES: [&str; 4] = [
    "postgresql.conf",
    "postgresql.auto.conf",
    "pg_hba.conf",
    "pg_ident.conf",
];

/// Settings a standby must not carry over: the fence (and who set it), and the old replication
/// setup.
const STANDBY_DROPS: [&str; 4] = [
    "default_transaction_read_only",
    super::FENCED_BY,
    "primary_conninfo",
    "primary_slot_name",
];

input! {
    pg:
    pub struct RejoinInput {
        /// The primary it will follow: a superuser (or a role with pg_rewind's rights); its host,
        /// port, user and password go into primary_conninfo.
        pub primary_url: SecretString,
        /// The server's data directory (the runbook must run where it is).
        pub data_dir: String,
        /// The folder holding pg_ctl, pg_rewind and pg_basebackup (default: found on PATH).
        pub bin_dir: Option<String>,
        /// The system user owning the data directory (tools run as it when the runbook is root).
        pub os_user: Option<String>,
        /// The replication slot on the primary to stream through (create it first).
        pub slot: Option<String>,
        /// The name the standby reports to the primary (default: `name`).
        pub application_name: Option<String>,
        /// Where pg_ctl writes the server's log (default: `<data_dir>/startup.log`).
        pub log_file: Option<String>,
        /// For pg::rewind, when the server committed transactions after it forked from the
        /// primary (the rewind discards them): true (default) copies its data directory aside
        /// first; false rewinds without a copy, and they are lost.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pub keep_copy: Option<bool>,
    }
}

/// A server that is now a standby.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct Rejoined {
    /// False when it already streamed from that primary (nothing was done).
    pub changed: bool,
    /// "rewind", "basebackup" or "none".
    pub method: String,
    /// What the tool reported ("servers diverged at WAL location 0/3000148 on timeline 1", "no
    /// rewind required").
    pub detail: String,
    /// host:port it streams from now.
    pub upstream: String,
    /// The timeline it is on.
    pub timeline: i64,
    /// For a base backup: where the old data directory was moved.
    pub moved_aside: Option<String>,
    /// For a rewind: the transactions it had committed after it forked from the primary (read
    /// in its WAL with pg_waldump), which the rewind took out of it; null when not counted.
    pub commits_after_fork: Option<u64>,
    /// For a rewind that took out committed transactions: where its data directory was copied
    /// before (a stopped primary on its old timeline: start it on another port to read them).
    pub kept_copy: Option<String>,
    pub took_ms: u64,
}

/// Where a server is on this host, and how to run its tools.
struct Local<'a> {
    url: &'a SecretString,
    name: &'a Option<String>,
    data_dir: &'a str,
    bin_dir: &'a Option<String>,
    os_user: &'a Option<String>,
    log_file: &'a Option<String>,
}

impl<'a> Local<'a> {
    fn tools(&self) -> Tools<'a> {
        Tools {
            bin_dir: self.bin_dir,
            os_user: self.os_user,
        }
    }
}

impl RejoinInput {
    fn local(&self) -> Local<'_> {
        Local {
            url: &self.url,
            name: &self.name,
            data_dir: &self.data_dir,
            bin_dir: &self.bin_dir,
            os_user: &self.os_user,
            log_file: &self.log_file,
        }
    }
}

/// The primary's address and credentials, from its URL.
struct Source {
    host: String,
    port: u16,
    user: Option<String>,
    password: Option<String>,
    dbname: Option<String>,
    /// The URL's TLS parameters, passed on to libpq.
    ssl: crate::tls::PgSsl,
}

impl Source {
    fn parse(url: &SecretString) -> Result<Source, ActionError> {
        let raw = url.reveal().map_err(ActionError::permanent)?;
        // libpq parameters tokio-postgres does not know (target_session_attrs=prefer-standby,
        // say) do not matter here: only the address and the credentials.
        let (rest, ssl) = crate::tls::split_pg(&raw)
            .and_then(|(rest, ssl)| Ok((rest, ssl.with_defaults()?)))
            .map_err(|e| ActionError::permanent(format!("{}: {e}", url.shown())))?;
        let base = rest.split('?').next().unwrap_or(&rest);
        let config = tokio_postgres::Config::from_str(base).map_err(|e| {
            ActionError::permanent(format!(
                "{}: not a PostgreSQL connection string: {e}",
                url.shown()
            ))
        })?;
        let host = match config.get_hosts().first() {
            Some(tokio_postgres::config::Host::Tcp(h)) => h.clone(),
            _ => {
                return Err(ActionError::permanent(
                    "the primary must be reached over TCP (host and port)",
                ))
            }
        };
        Ok(Source {
            host,
            port: config.get_ports().first().copied().unwrap_or(5432),
            user: config.get_user().map(str::to_string),
            password: config
                .get_password()
                .map(|p| String::from_utf8_lossy(p).into_owned()),
            dbname: config.get_dbname().map(str::to_string),
            ssl,
        })
    }

    fn upstream(&self) -> String {
        format!("{}:{}", self.host, self.port)
    }

    /// A libpq connection string without the password (it goes through PGPASSWORD).
    fn tool_conninfo(&self, application_name: &str) -> String {
        let dbname = self.dbname.as_deref().unwrap_or("postgres");
        self.conninfo(application_name, Some(("dbname", dbname)))
    }

    /// primary_conninfo: with the password, as pg_basebackup -R writes it.
    fn primary_conninfo(&self, application_name: &str) -> String {
        let password = self.password.as_deref().map(|p| ("password", p));
        self.conninfo(application_name, password)
    }

    /// host, port, application_name and user, then `extra`, then the TLS settings.
    fn conninfo(&self, application_name: &str, extra: Option<(&str, &str)>) -> String {
        let mut s = format!(
            "host={} port={} application_name={}",
            conninfo_value(&self.host),
            self.port,
            conninfo_value(application_name)
        );
        if let Some(u) = &self.user {
            s.push_str(&format!(" user={}", conninfo_value(u)));
        }
        if let Some((key, value)) = extra {
            s.push_str(&format!(" {key}={}", conninfo_value(value)));
        }
        s.push_str(&self.ssl.conninfo());
        s
    }
}

fn last_lines(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
    lines[lines.len().saturating_sub(n)..].join("; ")
}

fn running(data_dir: &Path) -> bool {
    std::fs::read_to_string(data_dir.join("postmaster.pid"))
        .ok()
        .and_then(|t| t.lines().next().and_then(|l| l.trim().parse::<i32>().ok()))
        .is_some_and(|pid| unsafe { libc::kill(pid, 0) } == 0)
}

/// A saved file: path, content, owner and mode.
struct Saved {
    path: PathBuf,
    bytes: Vec<u8>,
    uid: u32,
    gid: u32,
    mode: u32,
}

fn save_own_files(data_dir: &Path) -> Result<Vec<Saved>, ActionError> {
    let mut saved = Vec::new();
    for name in OWN_FILES {
        let path = data_dir.join(name);
        let Ok(meta) = std::fs::metadata(&path) else {
            continue;
        };
        let bytes = std::fs::read(&path)
            .map_err(|e| ActionError::permanent(format!("cannot read {}: {e}", path.display())))?;
        saved.push(Saved {
            path,
            bytes,
            uid: meta.uid(),
            gid: meta.gid(),
            mode: meta.mode() & 0o777,
        });
    }
    Ok(saved)
}

fn write_owned(
    path: &Path,
    bytes: &[u8],
    uid: u32,
    gid: u32,
    mode: u32,
) -> Result<(), ActionError> {
    let fail =
        |e: std::io::Error| ActionError::permanent(format!("cannot write {}: {e}", path.display()));
    std::fs::write(path, bytes).map_err(fail)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).map_err(fail)?;
    if unsafe { libc::geteuid() } == 0 {
        std::os::unix::fs::chown(path, Some(uid), Some(gid)).map_err(fail)?;
    }
    Ok(())
}

fn restore_own_files(saved: &[Saved]) -> Result<(), ActionError> {
    for s in saved {
        write_owned(&s.path, &s.bytes, s.uid, s.gid, s.mode)?;
    }
    Ok(())
}

/// The server's own configuration files, kept beside its data directory
/// (`<data_dir>.own-files`) while a tool that overwrites them with the primary's runs
/// (pg_rewind copies the primary's). A run cut off before they are back, and run again, takes
/// them from there, not from what the tool left in the directory.
struct OwnFiles {
    kept: PathBuf,
    saved: Vec<Saved>,
}

impl OwnFiles {
    fn keep(data_dir: &Path) -> Result<OwnFiles, ActionError> {
        let kept = PathBuf::from(format!("{}.own-files", data_dir.display()));
        let io = |e: std::io::Error| {
            ActionError::permanent(format!(
                "cannot keep {}'s configuration files in {}: {e}",
                data_dir.display(),
                kept.display()
            ))
        };
        if kept.is_dir() {
            // An earlier attempt kept them and did not put them back.
            let mut saved = save_own_files(&kept)?;
            for s in &mut saved {
                s.path = data_dir.join(s.path.file_name().unwrap_or_default());
            }
            return Ok(OwnFiles { kept, saved });
        }
        let saved = save_own_files(data_dir)?;
        let partial = PathBuf::from(format!("{}.partial", kept.display()));
        if partial.exists() {
            std::fs::remove_dir_all(&partial).map_err(io)?;
        }
        std::fs::create_dir(&partial).map_err(io)?;
        std::fs::set_permissions(&partial, std::fs::Permissions::from_mode(0o700)).map_err(io)?;
        for s in &saved {
            let to = partial.join(s.path.file_name().unwrap_or_default());
            write_owned(&to, &s.bytes, s.uid, s.gid, s.mode)?;
        }
        std::fs::rename(&partial, &kept).map_err(io)?;
        Ok(OwnFiles { kept, saved })
    }

    /// Writes them back into the data directory, and forgets the kept copy.
    fn put_back(self) -> Result<(), ActionError> {
        restore_own_files(&self.saved)?;
        self.forget();
        Ok(())
    }

    /// Writes them into another directory (a fresh base backup).
    fn write_into(&self, dir: &Path) -> Result<(), ActionError> {
        for s in &self.saved {
            let to = dir.join(s.path.file_name().unwrap_or_default());
            write_owned(&to, &s.bytes, s.uid, s.gid, s.mode)?;
        }
        Ok(())
    }

    /// Once they are where they belong.
    fn forget(self) {
        let _ = std::fs::remove_dir_all(&self.kept);
    }
}

/// postgresql.auto.conf without the settings a standby must not keep, plus its new upstream.
pub fn standby_auto_conf(current: &str, conninfo: &str, slot: Option<&str>) -> String {
    let mut out: Vec<String> = current
        .lines()
        .filter(|l| {
            let key = l.split('=').next().unwrap_or("").trim();
            !STANDBY_DROPS.contains(&key)
        })
        .map(str::to_string)
        .collect();
    out.push(format!("primary_conninfo = {}", quote_literal(conninfo)));
    if let Some(slot) = slot {
        out.push(format!("primary_slot_name = {}", quote_literal(slot)));
    }
    out.join("\n") + "\n"
}

/// Writes the standby's settings and standby.signal, owned like the data directory.
fn configure_standby(input: &RejoinInput, source: &Source) -> Result<(), ActionError> {
    let dir = Path::new(&input.data_dir);
    let meta = std::fs::metadata(dir)
        .map_err(|e| ActionError::permanent(format!("{}: {e}", dir.display())))?;
    let auto = dir.join("postgresql.auto.conf");
    let current = std::fs::read_to_string(&auto).unwrap_or_default();
    let app = application_name(input);
    let text = standby_auto_conf(
        &current,
        &source.primary_conninfo(&app),
        input.slot.as_deref(),
    );
    write_owned(&auto, text.as_bytes(), meta.uid(), meta.gid(), 0o600)?;
    write_owned(
        &dir.join("standby.signal"),
        b"",
        meta.uid(),
        meta.gid(),
        0o600,
    )?;
    let _ = std::fs::remove_file(dir.join("recovery.signal"));
    Ok(())
}

fn application_name(input: &RejoinInput) -> String {
    input
        .application_name
        .clone()
        .or_else(|| input.name.clone())
        .unwrap_or_else(|| "replica".into())
}

async fn stop(input: &Local<'_>, shown: &str, cx: &Cx) -> Result<(), ActionError> {
    let dir = Path::new(input.data_dir);
    if !running(dir) {
        return Ok(());
    }
    if let Ok((client, _)) = connect(input.url, input.name, cx).await {
        let _ = client.batch_execute("CHECKPOINT").await;
    }
    pg_ctl(
        input,
        &["stop", "-D", input.data_dir, "-m", "fast", "-w", "-t", "60"],
        Duration::from_secs(90),
        |said| format!("{shown}: pg_ctl stop failed: {said}"),
    )
    .await
}

async fn start(input: &Local<'_>, shown: &str) -> Result<(), ActionError> {
    let log = input
        .log_file
        .clone()
        .unwrap_or_else(|| format!("{}/startup.log", input.data_dir.trim_end_matches('/')));
    pg_ctl(
        input,
        &["start", "-D", input.data_dir, "-l", &log, "-w", "-t", "120"],
        Duration::from_secs(150),
        |said| format!("{shown}: the server did not start: {said}; see {log}"),
    )
    .await
}

/// pg_ctl with `args`, killed past `limit`; when it fails, `failed` with its last lines.
async fn pg_ctl(
    input: &Local<'_>,
    args: &[&str],
    limit: Duration,
    failed: impl FnOnce(String) -> String,
) -> Result<(), ActionError> {
    let ran = input.tools().run("pg_ctl", args, None, limit).await?;
    if ran.ok {
        Ok(())
    } else {
        Err(ActionError::permanent(failed(last_lines(&ran.text(), 3))))
    }
}

/// The primary must be one: rewinding to a standby, or to the server itself, goes nowhere.
async fn check_source(input: &RejoinInput, source: &Source, cx: &Cx) -> Result<(), ActionError> {
    let (client, shown) = connect(&input.primary_url, &None, cx).await?;
    let s = status_of(&client, &shown).await?;
    if s.in_recovery {
        return Err(ActionError::permanent(format!(
            "{shown} is a standby: a server can only rejoin a primary"
        )));
    }
    // A primary promoted moments ago has not finished its first checkpoint: its control file
    // still names the old timeline, and pg_rewind (which reads it) would rewind to the wrong
    // place. A checkpoint now settles it, as Patroni does before a rewind.
    client
        .batch_execute("CHECKPOINT")
        .await
        .map_err(|e| super::pg_error(&shown, e, true))?;
    let me = input.url.reveal().ok().and_then(|u| endpoint(&u, 5432));
    let them = endpoint(&format!("postgres://{}", source.upstream()), 5432);
    if me.is_some() && me == them {
        return Err(ActionError::permanent(format!(
            "{shown} is the server itself: it cannot follow itself"
        )));
    }
    Ok(())
}

/// Already a standby streaming from the source through the slot: nothing to do.
async fn already(input: &RejoinInput, source: &Source, cx: &Cx) -> Option<i64> {
    if !running(Path::new(&input.data_dir)) {
        return None;
    }
    let (client, shown) = connect(&input.url, &input.name, cx).await.ok()?;
    let s = status_of(&client, &shown).await.ok()?;
    let slot = super::json_row(
        &client,
        &shown,
        "SELECT current_setting('primary_slot_name') AS slot",
    )
    .await
    .ok()?;
    let same_slot = slot["slot"].as_str().unwrap_or("") == input.slot.as_deref().unwrap_or("");
    (s.in_recovery
        && s.wal_receiver.as_deref() == Some("streaming")
        && s.upstream.as_deref() == Some(source.upstream().as_str())
        && same_slot)
        .then(|| s.timeline.unwrap_or(0))
}

/// What both ways back start with: the primary checked, and nothing to do when the server
/// already streams from it (then the answer is returned as the second value).
async fn begin(input: &RejoinInput, cx: &Cx) -> Result<(Source, Option<Rejoined>), ActionError> {
    let started = Instant::now();
    let source = Source::parse(&input.primary_url)?;
    check_source(input, &source, cx).await?;
    let done = already(input, &source, cx).await.map(|timeline| Rejoined {
        changed: false,
        method: "none".into(),
        detail: "already streaming from that primary".into(),
        upstream: source.upstream(),
        timeline,
        moved_aside: None,
        commits_after_fork: None,
        kept_copy: None,
        took_ms: started.elapsed().as_millis() as u64,
    });
    Ok((source, done))
}

/// Waits until the server streams from the source.
async fn wait_streaming(
    input: &RejoinInput,
    source: &Source,
    shown: &str,
    poll: &Poll,
    cx: &Cx,
) -> Result<i64, ActionError> {
    let upstream = source.upstream();
    loop {
        if let Ok((client, _)) = connect(&input.url, &input.name, cx).await {
            if let Ok(s) = status_of(&client, shown).await {
                if s.in_recovery
                    && s.wal_receiver.as_deref() == Some("streaming")
                    && s.upstream.as_deref() == Some(upstream.as_str())
                {
                    return Ok(s.timeline.unwrap_or(0));
                }
            }
        }
        poll.pause(cx, |limit| {
            format!("{shown} started as a standby but does not stream from {upstream} after {limit}; see its log")
        })
        .await?;
    }
}

fn describe_rejoin(input: &RejoinInput, how: &str) -> String {
    format!(
        "make {} a standby of {} ({how})",
        target(&input.url, &input.name),
        target(&input.primary_url, &None)
    )
}

fn predicted(input: &RejoinInput, method: &str) -> Rejoined {
    Rejoined {
        changed: true,
        method: method.into(),
        detail: String::new(),
        upstream: target(&input.primary_url, &None),
        timeline: 0,
        moved_aside: None,
        commits_after_fork: None,
        kept_copy: None,
        took_ms: 0,
    }
}

async fn preview(input: &RejoinInput, cx: &Cx) -> Option<String> {
    if !running(Path::new(&input.data_dir)) {
        return Some("now stopped".into());
    }
    let (client, shown) = connect(&input.url, &input.name, cx).await.ok()?;
    let s = status_of(&client, &shown).await.ok()?;
    Some(if s.in_recovery {
        format!(
            "now a standby of {}",
            s.upstream.unwrap_or_else(|| "nothing".into())
        )
    } else {
        format!(
            "now a primary on timeline {}{}",
            s.timeline.unwrap_or(0),
            if s.read_only { ", read-only" } else { "" }
        )
    })
}

action! {
    /// Turn a former primary (or a diverged standby) into a standby of `primary_url`: stop it,
    /// pg_rewind it onto the primary's timeline (what it wrote after the fork is discarded), keep
    /// its own configuration files, write primary_conninfo, the slot and standby.signal, start it,
    /// and wait until it streams. A no-op when it already streams from that primary. Needs
    /// wal_log_hints or data checksums, and the data directory on this host.
    Rewind(RejoinInput) -> Rejoined = Spec::converge("pg", "rewind").timeout(600).retries(0)
}

impl Action for Rewind {
    /// pg_rewind works on a stopped server: its database being down is no refusal.
    const ANSWERS_FOR_DOWN: bool = true;

    fn describe(input: &RejoinInput) -> String {
        let how = if input.keep_copy == Some(false) {
            "pg_rewind; what it committed after the fork is not kept"
        } else {
            "pg_rewind; its data directory copied aside first if it committed after the fork"
        };
        describe_rejoin(input, how)
    }

    fn predict(input: &RejoinInput) -> Rejoined {
        predicted(input, "rewind")
    }

    fn predict_in(input: &RejoinInput, world: &World) -> Option<Result<Rejoined, ActionError>> {
        let place = world.database(&input.url)?;
        let primary = world.database(&input.primary_url)?;
        if let Some(e) = world.down(&input.primary_url) {
            return Some(Err(e));
        }
        let mut out = predicted(input, "rewind");
        out.timeline = primary.timeline;
        if place.upstream.as_deref() == Some(primary.name.as_str()) && world.streaming(place) {
            out.changed = false;
            out.method = "none".into();
        }
        Some(Ok(out))
    }

    async fn preview(input: RejoinInput, cx: Cx) -> Option<String> {
        preview(&input, &cx).await
    }

    async fn run(input: RejoinInput, cx: Cx) -> Result<Rejoined, ActionError> {
        rejoin(input, cx, Method::Rewind).await
    }
}

action! {
    /// Rebuild a server as a standby of `primary_url` from a fresh base backup, when a rewind is
    /// impossible: stop it, pg_basebackup from the primary into a directory beside its own, keep
    /// its own configuration files, swap the two (the old one moved aside, kept, not deleted),
    /// write the standby settings, start it, and wait until it streams. A no-op when it already
    /// streams from that primary; run again after an interruption, it moves the old directory aside
    /// once.
    BaseBackup(RejoinInput) -> Rejoined =
        Spec::converge("pg", "basebackup").timeout(3600).retries(0)
}

impl Action for BaseBackup {
    fn describe(input: &RejoinInput) -> String {
        describe_rejoin(
            input,
            "a fresh base backup; its data directory is moved aside",
        )
    }

    fn predict(input: &RejoinInput) -> Rejoined {
        predicted(input, "basebackup")
    }

    async fn preview(input: RejoinInput, cx: Cx) -> Option<String> {
        preview(&input, &cx).await
    }

    async fn run(input: RejoinInput, cx: Cx) -> Result<Rejoined, ActionError> {
        rejoin(input, cx, Method::BaseBackup).await
    }
}

/// How a server that is not yet a standby of the primary becomes one.
#[derive(Clone, Copy)]
enum Method {
    Rewind,
    BaseBackup,
}

/// What every rejoin does around its method: nothing when the server already streams from
/// the primary; else the method (which leaves the server stopped, with its own
/// configuration files), the standby settings, the start, and the wait until it streams.
async fn rejoin(input: RejoinInput, cx: Cx, method: Method) -> Result<Rejoined, ActionError> {
    let poll = Poll::new(&cx, Duration::from_millis(50));
    let shown = target(&input.url, &input.name);
    let (source, done) = begin(&input, &cx).await?;
    if let Some(done) = done {
        return Ok(done);
    }
    let mut done = Rejoined {
        changed: true,
        method: String::new(),
        detail: String::new(),
        upstream: source.upstream(),
        timeline: 0,
        moved_aside: None,
        commits_after_fork: None,
        kept_copy: None,
        took_ms: 0,
    };
    match method {
        Method::Rewind => {
            let rewound = rewind(&input, &source, &shown, &cx).await?;
            done.method = "rewind".into();
            done.detail = rewound.detail;
            done.commits_after_fork = rewound.commits_after_fork;
            done.kept_copy = rewound.kept_copy;
        }
        Method::BaseBackup => {
            let aside = basebackup(&input, &source, &shown, &cx).await?;
            done.method = "basebackup".into();
            done.detail = format!("copied from {}", source.upstream());
            done.moved_aside = Some(aside.display().to_string());
        }
    }
    configure_standby(&input, &source)?;
    start(&input.local(), &shown).await?;
    done.timeline = wait_streaming(&input, &source, &shown, &poll, &cx).await?;
    done.took_ms = poll.waited_ms();
    Ok(done)
}

/// What a rewind did: what pg_rewind found, and what it took out of the server.
struct Rewound {
    detail: String,
    commits_after_fork: Option<u64>,
    kept_copy: Option<String>,
}

/// Stops the server and pg_rewinds it onto the primary's timeline. First, a dry-run finds
/// where it forked; the transactions it committed after that point are counted in its WAL
/// and, unless asked not to, its data directory is copied aside before they are discarded.
async fn rewind(
    input: &RejoinInput,
    source: &Source,
    shown: &str,
    cx: &Cx,
) -> Result<Rewound, ActionError> {
    let dir = Path::new(&input.data_dir);
    if !dir.join("global/pg_control").exists() {
        return Err(ActionError::permanent(format!(
            "{shown}: {} is not a PostgreSQL data directory on this host",
            input.data_dir
        )));
    }
    stop(&input.local(), shown, cx).await?;
    let here = fork::Dir {
        data_dir: &input.data_dir,
        bin_dir: &input.bin_dir,
        os_user: &input.os_user,
        shown,
    };
    if here.rewound_not_started(cx.timeout).await? {
        // An earlier attempt's pg_rewind finished, and the run was cut off before the server
        // started: what is left is its own files and the start. Recovery in single-user mode
        // (or a second pg_rewind, which would run it) would end that recovery off the
        // primary's history.
        OwnFiles::keep(dir)?.put_back()?;
        let (copy, commits) = here.earlier_rewind(cx.timeout).await;
        return Ok(Rewound {
            detail: "rewound by an earlier attempt, cut off before the server started".into(),
            commits_after_fork: commits,
            kept_copy: copy.map(|c| c.display().to_string()),
        });
    }
    here.recover(cx.timeout).await?;
    let source_server = source.tool_conninfo(&application_name(input));
    let rewind_args = ["-D", &input.data_dir, "--source-server", &source_server];
    let password = source.password.as_deref();
    let tools = input.local().tools();
    let dry_run = [&["--dry-run"][..], &rewind_args[..]].concat();
    let looked = tools
        .run("pg_rewind", &dry_run, password, cx.timeout)
        .await?
        .text();
    let mut rewound = Rewound {
        detail: String::new(),
        commits_after_fork: None,
        kept_copy: None,
    };
    match fork::fork_in(&looked) {
        Some(fork::Fork::None) => rewound.commits_after_fork = Some(0),
        Some(fork::Fork::At { lsn, .. }) => {
            rewound.commits_after_fork = here.commits_since(&lsn, cx.timeout).await;
            // Not counted is not known to be none: kept as well.
            if rewound.commits_after_fork != Some(0) && input.keep_copy != Some(false) {
                let copy = here.copy_aside(cx.timeout).await?;
                rewound.kept_copy = Some(copy.display().to_string());
                crate::crash::at("rewind-copied");
            }
        }
        // A dry-run that failed fails the same way below, saying why.
        None => {}
    }
    let own = OwnFiles::keep(dir)?;
    let ran = tools
        .run("pg_rewind", &rewind_args, password, cx.timeout)
        .await?;
    let (ok, text) = (ran.ok, ran.text());
    crate::crash::at("rewind-ran");
    // Whatever pg_rewind did, the server's own files come back; it stays stopped on
    // failure (a former primary must not come back writable).
    own.put_back()?;
    if !ok {
        return Err(ActionError::permanent(format!(
            "{shown}: pg_rewind could not rewind it onto {}: {}. It is left stopped; a fresh base backup (pg::basebackup) brings it back as a standby",
            source.upstream(),
            last_lines(&text, 2)
        )));
    }
    rewound.detail = text
        .lines()
        .map(|l| l.trim_start_matches("pg_rewind: ").trim())
        .filter(|l| l.contains("diverged") || l.contains("no rewind required"))
        .collect::<Vec<_>>()
        .join("; ");
    Ok(rewound)
}

/// Stops the server, copies a fresh data directory from the primary beside the old one, and
/// swaps them: the old one moves aside, kept; gives where it went.
///
/// The fresh copy is made as `<data_dir>.basebackup.partial`, takes the server's own
/// configuration files, is renamed `<data_dir>.basebackup` when whole, and only then do the
/// two directories change places. Cut off anywhere (the process killed, the host rebooted),
/// the server's directory is still its own and whole. Run again, it finishes a swap an earlier
/// attempt left half-way; otherwise it removes the fresh copy an earlier attempt made and did
/// not swap in, whole or not, and makes it anew (the primary may since have recycled the WAL
/// that copy would need); the old directory is moved aside once.
async fn basebackup(
    input: &RejoinInput,
    source: &Source,
    shown: &str,
    cx: &Cx,
) -> Result<PathBuf, ActionError> {
    let dir = PathBuf::from(input.data_dir.trim_end_matches('/'));
    let fresh = PathBuf::from(format!("{}.basebackup", dir.display()));
    let partial = PathBuf::from(format!("{}.basebackup.partial", dir.display()));
    let io = |e: std::io::Error| ActionError::permanent(format!("{shown}: {e}"));
    if !dir.exists() && fresh.join("global/pg_control").exists() {
        // An earlier attempt was cut off between moving the old directory aside and putting
        // the whole fresh one in its place.
        std::fs::rename(&fresh, &dir).map_err(io)?;
        let _ = std::fs::remove_dir_all(format!("{}.own-files", dir.display()));
        return newest_replaced(&dir).ok_or_else(|| {
            ActionError::permanent(format!(
                "{shown}: the fresh data directory was put in place, but the old one is not beside it"
            ))
        });
    }
    let meta = std::fs::metadata(&dir)
        .map_err(|e| ActionError::permanent(format!("{shown}: {}: {e}", dir.display())))?;
    stop(&input.local(), shown, cx).await?;
    // What an earlier attempt left: never the server's own directory.
    for stale in [&partial, &fresh] {
        if stale.exists() {
            std::fs::remove_dir_all(stale).map_err(io)?;
        }
    }
    // Kept beside it: a rewind cut off half-way may have left the primary's in the directory.
    let own = OwnFiles::keep(&dir)?;
    std::fs::create_dir(&partial).map_err(io)?;
    std::fs::set_permissions(&partial, std::fs::Permissions::from_mode(0o700)).map_err(io)?;
    if unsafe { libc::geteuid() } == 0 {
        std::os::unix::fs::chown(&partial, Some(meta.uid()), Some(meta.gid())).map_err(io)?;
    }
    let conninfo = source.tool_conninfo(&application_name(input));
    let into = partial.display().to_string();
    let mut args = vec!["-D", &into, "-X", "stream", "-c", "fast", "-d", &conninfo];
    if let Some(slot) = &input.slot {
        args.extend(["-S", slot]);
    }
    let password = source.password.as_deref();
    let tools = input.local().tools();
    let ran = tools
        .run("pg_basebackup", &args, password, cx.timeout)
        .await?;
    if !ran.ok {
        let _ = std::fs::remove_dir_all(&partial);
        own.put_back()?;
        return Err(ActionError::permanent(format!(
            "{shown}: pg_basebackup from {} failed: {}. Its data directory is untouched, stopped",
            source.upstream(),
            last_lines(&ran.text(), 2)
        )));
    }
    // The server's own configuration files, not the primary's (its port among them).
    own.write_into(&partial)?;
    std::fs::rename(&partial, &fresh).map_err(io)?;
    crate::crash::at("basebackup-made");
    let stamp = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let aside = PathBuf::from(format!("{}.replaced-{stamp}", dir.display()));
    std::fs::rename(&dir, &aside).map_err(io)?;
    std::fs::rename(&fresh, &dir).map_err(io)?;
    own.forget();
    Ok(aside)
}

/// The newest `<data_dir>.replaced-<secs>` beside the data directory.
fn newest_replaced(dir: &Path) -> Option<PathBuf> {
    fork::kept_beside(dir)
        .into_iter()
        .rfind(|k| k.by == crate::action::topology::model::KeptBy::BaseBackup)
        .map(|k| dir.with_file_name(k.name))
}

input! {
    pg:
    pub struct RestartInput {
        /// The server's data directory (the runbook must run where it is).
        pub data_dir: String,
        /// The folder holding pg_ctl (default: found on PATH).
        pub bin_dir: Option<String>,
        /// The system user owning the data directory.
        pub os_user: Option<String>,
        /// Where pg_ctl writes the server's log (default: `<data_dir>/startup.log`).
        pub log_file: Option<String>,
        /// Restart only when a changed setting waits for it (default true).
        #[serde(default = "only_pending")]
        pub only_if_pending: bool,
    }
}

fn only_pending() -> bool {
    true
}

/// A restarted server.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct Restarted {
    /// False when nothing waited for a restart (and only_if_pending).
    pub restarted: bool,
    /// The settings that waited for it.
    pub pending: Vec<String>,
    pub took_ms: u64,
}

action! {
    /// Restart a server (fast shutdown, start) so settings that wait for a restart take effect
    /// (wal_log_hints, wal_level); by default only when one does. Waits until it accepts
    /// connections again, and a standby until it streams.
    Restart(RestartInput) -> Restarted = Spec::converge("pg", "restart").timeout(300).retries(0)
}

impl Action for Restart {
    fn describe(input: &RestartInput) -> String {
        format!(
            "restart {}{}",
            target(&input.url, &input.name),
            if input.only_if_pending {
                " if a setting waits for it"
            } else {
                ""
            }
        )
    }

    fn predict(_: &RestartInput) -> Restarted {
        Restarted {
            restarted: true,
            pending: vec![],
            took_ms: 0,
        }
    }

    async fn preview(input: RestartInput, cx: Cx) -> Option<String> {
        let (client, shown) = connect(&input.url, &input.name, &cx).await.ok()?;
        let rows = super::json_rows(
            &client,
            &shown,
            "SELECT name FROM pg_settings WHERE pending_restart",
            &[],
        )
        .await
        .ok()?;
        let names: Vec<String> = rows
            .iter()
            .filter_map(|r| r["name"].as_str().map(str::to_string))
            .collect();
        Some(if names.is_empty() {
            "now nothing waits for a restart".into()
        } else {
            format!("now {} wait for a restart", names.join(", "))
        })
    }

    async fn run(input: RestartInput, cx: Cx) -> Result<Restarted, ActionError> {
        let poll = Poll::new(&cx, Duration::from_millis(50));
        let shown = target(&input.url, &input.name);
        let (client, _) = connect(&input.url, &input.name, &cx).await?;
        let pending: Vec<String> = super::json_rows(
            &client,
            &shown,
            "SELECT name FROM pg_settings WHERE pending_restart ORDER BY name",
            &[],
        )
        .await?
        .iter()
        .filter_map(|r| r["name"].as_str().map(str::to_string))
        .collect();
        let was_standby = status_of(&client, &shown).await?.in_recovery;
        drop(client);
        if pending.is_empty() && input.only_if_pending {
            return Ok(Restarted {
                restarted: false,
                pending,
                took_ms: poll.waited_ms(),
            });
        }
        let local = Local {
            url: &input.url,
            name: &input.name,
            data_dir: &input.data_dir,
            bin_dir: &input.bin_dir,
            os_user: &input.os_user,
            log_file: &input.log_file,
        };
        stop(&local, &shown, &cx).await?;
        start(&local, &shown).await?;
        loop {
            if let Ok((client, _)) = connect(&input.url, &input.name, &cx).await {
                if let Ok(s) = status_of(&client, &shown).await {
                    if !was_standby || s.wal_receiver.as_deref() == Some("streaming") {
                        break;
                    }
                }
            }
            poll.pause(&cx, |limit| {
                let what = if was_standby {
                    "does not stream again"
                } else {
                    "does not accept connections"
                };
                format!("{shown} restarted but {what} within {limit}")
            })
            .await?;
        }
        Ok(Restarted {
            restarted: true,
            pending,
            took_ms: poll.waited_ms(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::standby_auto_conf;

    #[test]
    fn a_rejoined_standby_drops_the_fence_and_the_old_upstream() {
        let before = "# Do not edit this file manually!\n\
                      default_transaction_read_only = 'on'\n\
                      primary_conninfo = 'host=old port=1'\n\
                      primary_slot_name = 'x'\n\
                      wal_log_hints = 'on'\n";
        let after = standby_auto_conf(before, "host=new port=2", Some("us_east_1"));
        assert_eq!(
            after,
            "# Do not edit this file manually!\n\
             wal_log_hints = 'on'\n\
             primary_conninfo = 'host=new port=2'\n\
             primary_slot_name = 'us_east_1'\n"
        );
    }
}
