//! Connections to PostgreSQL: libpq's TLS parameters on rustls, errors classified for
//! retries, and connections kept per target for the run.
//!
//! A connection is checked out for one action and given back when the action is done with it,
//! if it is still healthy; the next action to the same URL reuses it after a one-round-trip
//! check instead of paying for TCP, TLS, authentication and a new backend process. Actions
//! that change a session's state (`pg::exec` runs any SQL) or must see a new session (after
//! ALTER SYSTEM) take a connection of their own that is never kept.

use std::collections::HashMap;
use std::ops::Deref;
use std::str::FromStr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Mutex, OnceLock};
use std::time::Duration;

use sha2::{Digest, Sha256};
use tokio_postgres::Client;

use crate::action::{ActionError, Cx, ErrorKind};
use crate::secret::SecretString;
use crate::tls;

/// Idle connections kept per target at most (parallel probes may open more; the rest close).
const IDLE_PER_TARGET: usize = 4;

/// How long a kept connection may take to answer before it is replaced.
const PING_LIMIT: Duration = Duration::from_secs(2);

/// Where a connection goes, as messages show it: `host:port (name)`.
pub(crate) fn target(url: &SecretString, name: &Option<String>) -> String {
    let host = url
        .reveal()
        .ok()
        .and_then(|raw| tls::split_pg(&raw).ok())
        .and_then(|(rest, _)| tokio_postgres::Config::from_str(&rest).ok())
        .map(|c| {
            let host = match c.get_hosts().first() {
                Some(tokio_postgres::config::Host::Tcp(h)) => h.clone(),
                Some(tokio_postgres::config::Host::Unix(p)) => p.display().to_string(),
                None => "localhost".into(),
            };
            format!("{host}:{}", c.get_ports().first().copied().unwrap_or(5432))
        })
        .unwrap_or_else(|| url.shown());
    match name {
        Some(n) => format!("{host} ({n})"),
        None => host,
    }
}

/// A PostgreSQL error as the operator should read it, classified for retries: the server's
/// refusals (authentication, pg_hba, unknown database or role, any SQL error), TLS and
/// certificate problems and a host name that does not exist are permanent; a refused, reset
/// or timed-out connection and a server starting up or shutting down are transient.
pub(crate) fn pg_error(target: &str, e: tokio_postgres::Error, sent: bool) -> ActionError {
    if let Some(db) = e.as_db_error() {
        let code = db.code().code();
        let message = match code {
            "28000" if db.message().ends_with("no encryption") => format!(
                "{target}: authentication failed: {}; the server accepts TLS connections only: \
                 add sslmode=verify-full&sslrootcert=CA-FILE (or sslmode=require) to the URL",
                db.message()
            ),
            "28P01" | "28000" => format!("{target}: authentication failed: {}", db.message()),
            "3D000" => format!("{target}: {}", db.message()),
            _ => format!("{target}: {} (SQLSTATE {code})", db.message()),
        };
        // The server is shutting down or starting up: worth another try.
        let transient = matches!(code, "57P01" | "57P02" | "57P03");
        return ActionError {
            message,
            kind: if transient {
                ErrorKind::TransientMaybeApplied
            } else {
                ErrorKind::Permanent
            },
        };
    }
    if let Some(problem) = tls::problem(&e) {
        return ActionError::permanent(format!("{target}: {problem}"));
    }
    let text = crate::error::with_causes(&e);
    if text.contains("server does not support TLS") {
        return ActionError::permanent(format!(
            "{target}: the server does not accept TLS connections, and the URL's sslmode \
             requires TLS"
        ));
    }
    if tls::name_not_found(&text) {
        return ActionError::permanent(format!("{target}: no such host: {text}"));
    }
    let message = format!("{target}: {text}");
    if sent {
        ActionError::maybe_applied(message)
    } else {
        ActionError::not_sent(message)
    }
}

/// Whether a connection's error came from a server that is up and may be serving others: an
/// error it sent (a login refused, no such database, too many connections), or a TLS handshake
/// it answered. One starting up, shutting down or recovering from a crash (SQLSTATE 57P01-3)
/// serves no one now: as good as down, and a primary among them comes back as a former one.
fn answered(e: &tokio_postgres::Error) -> bool {
    e.as_db_error()
        .is_some_and(|db| !matches!(db.code().code(), "57P01" | "57P02" | "57P03"))
        || tls::problem(e).is_some()
        || crate::error::with_causes(e).contains("server does not support TLS")
}

/// A connection checked out for one action; given back when dropped, if it may be reused.
pub(crate) struct Conn {
    client: Option<Client>,
    key: Option<[u8; 32]>,
}

impl Conn {
    /// A connection to give back under `key` when dropped (never, without one).
    fn new(client: Client, key: Option<[u8; 32]>) -> Conn {
        Conn {
            client: Some(client),
            key,
        }
    }
}

impl Deref for Conn {
    type Target = Client;
    fn deref(&self) -> &Client {
        self.client.as_ref().expect("a connection until dropped")
    }
}

impl Drop for Conn {
    fn drop(&mut self) {
        let (Some(client), Some(key)) = (self.client.take(), self.key) else {
            return;
        };
        if client.is_closed() || !reuse_enabled() {
            return;
        }
        let mut idle = idle().lock().unwrap();
        let list = idle.entry(key).or_default();
        if list.len() < IDLE_PER_TARGET {
            list.push(client);
        }
    }
}

fn idle() -> &'static Mutex<HashMap<[u8; 32], Vec<Client>>> {
    static IDLE: OnceLock<Mutex<HashMap<[u8; 32], Vec<Client>>>> = OnceLock::new();
    IDLE.get_or_init(Default::default)
}

/// Connections opened and reused in this process, for `--verbose` and the benchmarks.
pub static OPENED: AtomicU64 = AtomicU64::new(0);
pub static REUSED: AtomicU64 = AtomicU64::new(0);

/// RUNBOOK_PG_REUSE=0 turns reuse off (to measure what it saves).
fn reuse_enabled() -> bool {
    static ON: OnceLock<AtomicBool> = OnceLock::new();
    ON.get_or_init(|| AtomicBool::new(std::env::var("RUNBOOK_PG_REUSE").as_deref() != Ok("0")))
        .load(Ordering::Relaxed)
}

/// A connection for one action: an idle one to the same URL that still answers, or a new one.
pub(crate) async fn connect(
    url: &SecretString,
    name: &Option<String>,
    cx: &Cx,
) -> Result<(Conn, String), ActionError> {
    connect_or_refused(url, name, cx).await.map_err(|u| u.error)
}

/// Why there is no connection: the error, and whether a server that is up answered it — a
/// login it refused, a database it does not have, too many connections, a TLS handshake the
/// engine would not accept ([`answered`]). One that answered is running, whatever it is.
pub(crate) struct Unconnected {
    pub error: ActionError,
    pub answered: bool,
}

impl From<ActionError> for Unconnected {
    fn from(error: ActionError) -> Self {
        Unconnected {
            error,
            answered: false,
        }
    }
}

/// [`connect`], telling a server that answered and refused from one that did not answer.
pub(crate) async fn connect_or_refused(
    url: &SecretString,
    name: &Option<String>,
    cx: &Cx,
) -> Result<(Conn, String), Unconnected> {
    let raw = url.reveal().map_err(ActionError::permanent)?;
    let key: [u8; 32] = Sha256::digest(raw.as_bytes()).into();
    let shown = target(url, name);
    if reuse_enabled() {
        loop {
            let Some(client) = idle().lock().unwrap().get_mut(&key).and_then(Vec::pop) else {
                break;
            };
            // One round trip proves the session is alive (a restarted server closed it); a
            // server that stopped answering (a partition) gets a new connection, which has a
            // connect timeout, instead of holding the action.
            let ping = tokio::time::timeout(PING_LIMIT, client.batch_execute(""));
            if !client.is_closed() && matches!(ping.await, Ok(Ok(()))) {
                REUSED.fetch_add(1, Ordering::Relaxed);
                return Ok((Conn::new(client, Some(key)), shown));
            }
        }
    }
    let client = open(url, &raw, &shown, cx).await?;
    Ok((Conn::new(client, Some(key)), shown))
}

/// A new connection that is closed after use, never reused: for any SQL (which may change
/// the session) and for seeing settings as a new session does.
pub(crate) async fn connect_new(
    url: &SecretString,
    name: &Option<String>,
    cx: &Cx,
) -> Result<(Conn, String), ActionError> {
    let raw = url.reveal().map_err(ActionError::permanent)?;
    let shown = target(url, name);
    let client = open(url, &raw, &shown, cx).await.map_err(|u| u.error)?;
    Ok((Conn::new(client, None), shown))
}

/// The TLS set-up of a URL, built once per URL in the process: building it reads the CA and
/// client certificate files (with `sslrootcert=system`, the whole OS bundle).
fn tls_for(raw: &str, ssl: tls::PgSsl) -> Result<tls::PgTls, String> {
    static BUILT: OnceLock<Mutex<HashMap<[u8; 32], tls::PgTls>>> = OnceLock::new();
    let key: [u8; 32] = Sha256::digest(raw.as_bytes()).into();
    let built = BUILT.get_or_init(Default::default);
    if let Some(t) = built.lock().unwrap().get(&key) {
        return Ok(t.clone());
    }
    let t = tls::PgTls::new(ssl)?;
    built.lock().unwrap().insert(key, t.clone());
    Ok(t)
}

/// Opens a connection with the URL's TLS parameters; its task runs until the client is
/// dropped.
async fn open(url: &SecretString, raw: &str, shown: &str, cx: &Cx) -> Result<Client, Unconnected> {
    let bad = |e: String| ActionError::permanent(format!("{}: {e}", url.shown()));
    let (rest, ssl) = tls::split_pg(raw).map_err(bad)?;
    let tls = tls_for(raw, ssl).map_err(bad)?;
    let mut config = tokio_postgres::Config::from_str(&rest).map_err(|e| {
        ActionError::permanent(format!(
            "{}: not a PostgreSQL connection string: {e}",
            url.shown()
        ))
    })?;
    let limit = cx.timeout.min(Duration::from_secs(10));
    config.connect_timeout(limit);
    if config.get_application_name().is_none() {
        config.application_name("runbook");
    }
    // connect_timeout covers the TCP connection only: an address that takes it and never
    // answers (a lost region's, a black-holed route) would hold the start-up for ever.
    let result = tokio::time::timeout(limit, tls.connect(&config))
        .await
        .map_err(|_| {
            ActionError::not_sent(format!(
                "{shown}: took the connection but did not answer within {}",
                crate::action::Dur(limit)
            ))
        })?;
    let client = result.map_err(|e| Unconnected {
        answered: answered(&e),
        error: pg_error(shown, e, false),
    })?;
    OPENED.fetch_add(1, Ordering::Relaxed);
    Ok(client)
}
