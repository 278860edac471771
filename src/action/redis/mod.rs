//! `redis::` — Redis replication: roles, promotion, repointing, coordinated failover, sync
//! checks, cluster state, emptying a cache, and a generic command.
//!
//! Every action takes `url` (redis://[:password@]host:port[/db], or rediss:// for TLS with
//! `?cacert=`, `&cert=` and `&key=` files; usually a secret) and an optional `name` (the
//! region, say) for messages.

mod cluster;
mod command;
mod failover;
mod flush;
mod replication;
mod roles;
mod sync;
pub use cluster::*;
pub use command::*;
pub use failover::*;
pub use flush::*;
pub use replication::*;
pub use roles::*;
pub use sync::*;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use redis::aio::MultiplexedConnection;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::{Action, ActionError, Cx, Dur, Poll, Spec};
use crate::secret::SecretString;

/// `host:port (name)` for messages, without any password; a URL that opts out of certificate
/// checks says so in every message.
fn target(url: &SecretString, name: &Option<String>) -> String {
    let raw = url.reveal().ok();
    let shown = raw
        .as_deref()
        .and_then(|raw| {
            let rest = raw.split_once("://").map(|(_, r)| r.to_string())?;
            let authority = rest.split(['/', '?', '#']).next()?.to_string();
            Some(
                authority
                    .rsplit_once('@')
                    .map(|(_, h)| h.to_string())
                    .unwrap_or(authority),
            )
        })
        .unwrap_or_else(|| url.shown());
    let unverified = raw
        .as_deref()
        .is_some_and(|r| split_url(r).is_ok_and(|u| u.insecure));
    let shown = if unverified {
        format!("{shown} (TLS NOT VERIFIED)")
    } else {
        shown
    };
    match name {
        Some(n) => format!("{shown} ({n})"),
        None => shown,
    }
}

/// A Redis URL with the TLS parameters taken out: `cacert` (a PEM file of the CA that signed
/// the server's certificate; without it, the system's roots), `cert` + `key` (a client
/// certificate), and `#insecure` (no certificate check at all — for test set-ups only).
#[derive(Debug, Default, PartialEq)]
struct RedisUrl {
    rest: String,
    tls: bool,
    cacert: Option<String>,
    cert: Option<String>,
    key: Option<String>,
    insecure: bool,
}

fn split_url(raw: &str) -> Result<RedisUrl, String> {
    let mut out = RedisUrl {
        tls: raw.starts_with("rediss://"),
        ..RedisUrl::default()
    };
    let (body, fragment) = match raw.split_once('#') {
        Some((b, f)) => (b, Some(f)),
        None => (raw, None),
    };
    out.insecure = fragment == Some("insecure");
    let (base, query) = body.split_once('?').unwrap_or((body, ""));
    let mut kept = Vec::new();
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        match k {
            "cacert" => out.cacert = Some(v.to_string()),
            "cert" => out.cert = Some(v.to_string()),
            "key" => out.key = Some(v.to_string()),
            _ => kept.push(pair),
        }
    }
    let has_tls_params = out.cacert.is_some() || out.cert.is_some() || out.key.is_some();
    if !out.tls && (has_tls_params || out.insecure) {
        return Err("cacert, cert, key and #insecure are for TLS: write rediss://".into());
    }
    if out.cert.is_some() != out.key.is_some() {
        return Err("a client certificate needs both cert and key".into());
    }
    if out.insecure && out.cacert.is_some() {
        return Err(
            "#insecure turns off the certificate check that cacert is for: give one".into(),
        );
    }
    out.rest = if kept.is_empty() {
        base.to_string()
    } else {
        format!("{base}?{}", kept.join("&"))
    };
    if out.insecure {
        // redis' own spelling of the opt-out.
        out.rest.push_str("#insecure");
    }
    Ok(out)
}

fn redis_error(target: &str, e: redis::RedisError, sent: bool) -> ActionError {
    let message = format!("{target}: {e}");
    let text = e.to_string();
    if let Some(problem) = crate::tls::problem(&e).or_else(|| crate::tls::problem_in_text(&text)) {
        return ActionError::permanent(format!("{target}: {problem}"));
    }
    if crate::tls::name_not_found(&text) {
        return ActionError::permanent(format!("{target}: no such host: {text}"));
    }
    if e.is_connection_refusal() {
        ActionError::not_sent(message)
    } else if e.is_io_error() || e.is_timeout() {
        if sent {
            ActionError::maybe_applied(message)
        } else {
            ActionError::not_sent(message)
        }
    } else {
        ActionError::permanent(message)
    }
}

fn client_for(url: &SecretString, raw: &str) -> Result<redis::Client, ActionError> {
    let bad = |e: String| ActionError::permanent(format!("{}: {e}", url.shown()));
    let parts = split_url(raw).map_err(bad)?;
    let client = if parts.tls && !parts.insecure {
        crate::tls::provider();
        let read = |path: &str, what: &str| {
            std::fs::read(path).map_err(|e| bad(format!("{what} {path}: {e}")))
        };
        let client_tls = match (&parts.cert, &parts.key) {
            (Some(c), Some(k)) => Some(redis::ClientTlsConfig {
                client_cert: read(c, "cert")?,
                client_key: read(k, "key")?,
            }),
            _ => None,
        };
        let root_cert = parts
            .cacert
            .as_deref()
            .map(|p| read(p, "cacert"))
            .transpose()?;
        redis::Client::build_with_tls(
            parts.rest.as_str(),
            redis::TlsCertificates {
                client_tls,
                root_cert,
            },
        )
    } else {
        if parts.insecure {
            crate::tls::provider();
            warn_unverified(&url.shown());
        }
        redis::Client::open(parts.rest.as_str())
    };
    client.map_err(|e| ActionError::permanent(format!("{}: not a Redis URL: {e}", url.shown())))
}

/// Says once per target, on stderr, that its certificate is not checked.
fn warn_unverified(shown: &str) {
    static WARNED: std::sync::Mutex<Vec<String>> = std::sync::Mutex::new(Vec::new());
    let mut warned = WARNED.lock().unwrap();
    if !warned.iter().any(|w| w == shown) {
        warned.push(shown.to_string());
        use std::io::Write as _;
        let _ = writeln!(
            std::io::stderr(),
            "warning: {shown}: #insecure — the server's TLS certificate is NOT VERIFIED; \
             anyone on the path can read and change this traffic (for test set-ups only)"
        );
    }
}

/// Connections kept per URL for the run (a multiplexed connection serves every caller).
fn kept() -> &'static super::Clients<[u8; 32], MultiplexedConnection> {
    static KEPT: super::Clients<[u8; 32], MultiplexedConnection> = super::Clients::new();
    &KEPT
}

/// A connection to `url`: the one kept for it when it still answers PING, or a new one.
pub(crate) async fn connect(
    url: &SecretString,
    name: &Option<String>,
    cx: &Cx,
) -> Result<(MultiplexedConnection, String), ActionError> {
    use sha2::Digest;
    let raw = url.reveal().map_err(ActionError::permanent)?;
    let key: [u8; 32] = sha2::Sha256::digest(raw.as_bytes()).into();
    if let Some(mut conn) = kept().get(&key) {
        let cmd = redis::cmd("PING");
        let ping = cmd.query_async::<redis::Value>(&mut conn);
        let alive = matches!(
            tokio::time::timeout(Duration::from_secs(2), ping).await,
            Ok(Ok(_))
        );
        if alive {
            return Ok((conn, target(url, name)));
        }
        kept().forget(&key);
    }
    let (conn, shown) = connect_new(url, name, cx).await?;
    Ok((kept().keep(key, conn), shown))
}

/// Whether the Redis at `url` is up but refuses the engine: a new connection's PING answered
/// with an error (a password it rejects, a command its ACL does not allow), or a TLS handshake
/// it answered. For telling such a server, which may be serving others, from one that is down.
pub(crate) async fn refuses(url: &SecretString, cx: &Cx) -> bool {
    let Ok(raw) = url.reveal() else { return false };
    let Ok(client) = client_for(url, &raw) else {
        return false;
    };
    let ping = async {
        let mut conn = open(&client, cx).await?;
        redis::cmd("PING")
            .query_async::<redis::Value>(&mut conn)
            .await
    };
    match ping.await {
        Ok(_) => false,
        Err(e) => {
            matches!(
                e.kind(),
                redis::ErrorKind::AuthenticationFailed
                    | redis::ErrorKind::Server(_)
                    | redis::ErrorKind::Extension
            ) || crate::tls::problem(&e).is_some()
        }
    }
}

/// A connection of its own, not kept (for any command, which may change the session).
pub(crate) async fn connect_new(
    url: &SecretString,
    name: &Option<String>,
    cx: &Cx,
) -> Result<(MultiplexedConnection, String), ActionError> {
    let shown = target(url, name);
    let raw = url.reveal().map_err(ActionError::permanent)?;
    let client = client_for(url, &raw)?;
    let conn = open(&client, cx)
        .await
        .map_err(|e| redis_error(&shown, e, false))?;
    Ok((conn, shown))
}

/// A new connection within the action's time limits (10 s at most to connect).
async fn open(client: &redis::Client, cx: &Cx) -> redis::RedisResult<MultiplexedConnection> {
    let config = redis::AsyncConnectionConfig::new()
        .set_connection_timeout(Some(cx.timeout.min(Duration::from_secs(10))))
        .set_response_timeout(Some(cx.timeout));
    client
        .get_multiplexed_async_connection_with_config(&config)
        .await
}

async fn query(
    conn: &mut MultiplexedConnection,
    target: &str,
    args: &[&str],
) -> Result<redis::Value, ActionError> {
    let mut cmd = redis::cmd(args[0]);
    for a in &args[1..] {
        cmd.arg(*a);
    }
    cmd.query_async::<redis::Value>(conn)
        .await
        .map_err(|e| redis_error(target, e, true))
}

fn text(v: &redis::Value) -> String {
    match v {
        redis::Value::BulkString(b) => String::from_utf8_lossy(b).into_owned(),
        redis::Value::SimpleString(s) => s.clone(),
        redis::Value::VerbatimString { text, .. } => text.clone(),
        redis::Value::Okay => "OK".into(),
        redis::Value::Int(i) => i.to_string(),
        other => format!("{other:?}"),
    }
}

/// A reply as JSON.
fn to_json(v: &redis::Value) -> Value {
    match v {
        redis::Value::Nil => Value::Null,
        redis::Value::Int(i) => Value::from(*i),
        redis::Value::Double(d) => serde_json::Number::from_f64(*d)
            .map(Value::Number)
            .unwrap_or(Value::Null),
        redis::Value::Boolean(b) => Value::Bool(*b),
        redis::Value::Array(a) | redis::Value::Set(a) => {
            Value::Array(a.iter().map(to_json).collect())
        }
        redis::Value::Map(m) => {
            Value::Object(m.iter().map(|(k, v)| (text(k), to_json(v))).collect())
        }
        redis::Value::ServerError(e) => Value::String(format!("error: {e:?}")),
        other => Value::String(text(other)),
    }
}

/// INFO text → section → field → value.
fn parse_info(textual: &str) -> BTreeMap<String, BTreeMap<String, String>> {
    let mut out: BTreeMap<String, BTreeMap<String, String>> = BTreeMap::new();
    let mut section = String::from("default");
    for line in textual.lines() {
        let line = line.trim();
        if let Some(name) = line.strip_prefix("# ") {
            section = name.to_lowercase();
        } else if let Some((k, v)) = line.split_once(':') {
            out.entry(section.clone())
                .or_default()
                .insert(k.to_string(), v.to_string());
        }
    }
    out
}

async fn replication_info(
    conn: &mut MultiplexedConnection,
    target: &str,
) -> Result<BTreeMap<String, String>, ActionError> {
    let info = text(&query(conn, target, &["INFO", "replication"]).await?);
    Ok(parse_info(&info).remove("replication").unwrap_or_default())
}

/// The server process's run_id (INFO server): random at each start, so the same under two
/// addresses means one server.
pub(crate) async fn run_id(
    conn: &mut MultiplexedConnection,
    target: &str,
) -> Result<Option<String>, ActionError> {
    let info = text(&query(conn, target, &["INFO", "server"]).await?);
    Ok(parse_info(&info)
        .remove("server")
        .and_then(|mut s| s.remove("run_id")))
}

fn num(map: &BTreeMap<String, String>, key: &str) -> i64 {
    map.get(key).and_then(|v| v.parse().ok()).unwrap_or(0)
}

input! {
    redis:
    pub struct Target {}
}
