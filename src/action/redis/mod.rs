//! `redis::` — Redis replication: roles, promotion, repointing, coordinated failover, sync
//! checks, cluster state, and a generic command.
//!
//! Every action takes `url` (redis://[:password@]host:port[/db], usually a secret) and an
//! optional `name` (the region, say) for messages.

mod cluster;
mod command;
mod failover;
mod replication;
mod roles;
mod sync;
pub use cluster::*;
pub use command::*;
pub use failover::*;
pub use replication::*;
pub use roles::*;
pub use sync::*;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use redis::aio::MultiplexedConnection;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::{Action, ActionError, Cx, Dur, ErrorKind, Spec};
use crate::secret::SecretString;

/// `host:port (name)` for messages, without any password.
fn target(url: &SecretString, name: &Option<String>) -> String {
    let shown = url
        .reveal()
        .ok()
        .and_then(|raw| {
            let rest = raw.split_once("://").map(|(_, r)| r.to_string())?;
            let authority = rest.split(['/', '?']).next()?.to_string();
            Some(
                authority
                    .rsplit_once('@')
                    .map(|(_, h)| h.to_string())
                    .unwrap_or(authority),
            )
        })
        .unwrap_or_else(|| url.shown());
    match name {
        Some(n) => format!("{shown} ({n})"),
        None => shown,
    }
}

fn redis_error(target: &str, e: redis::RedisError, sent: bool) -> ActionError {
    let message = format!("{target}: {e}");
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

pub(crate) async fn connect(
    url: &SecretString,
    name: &Option<String>,
    cx: &Cx,
) -> Result<(MultiplexedConnection, String), ActionError> {
    let shown = target(url, name);
    let raw = url.reveal().map_err(ActionError::permanent)?;
    let client = redis::Client::open(raw.as_str())
        .map_err(|e| ActionError::permanent(format!("{}: not a Redis URL: {e}", url.shown())))?;
    let config = redis::AsyncConnectionConfig::new()
        .set_connection_timeout(Some(cx.timeout.min(Duration::from_secs(10))))
        .set_response_timeout(Some(cx.timeout));
    let conn = client
        .get_multiplexed_async_connection_with_config(&config)
        .await
        .map_err(|e| redis_error(&shown, e, false))?;
    Ok((conn, shown))
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

fn num(map: &BTreeMap<String, String>, key: &str) -> i64 {
    map.get(key).and_then(|v| v.parse().ok()).unwrap_or(0)
}

input! {
    redis:
    pub struct Target {}
}
