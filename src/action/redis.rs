//! `redis::` — Redis replication: roles, promotion, repointing, coordinated failover, sync
//! checks, cluster state, and a generic command.
//!
//! Every action takes `url` (redis://[:password@]host:port[/db], usually a secret) and an
//! optional `name` (the region, say) for messages.

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

// ---- info and role -------------------------------------------------------------------------

input! {
    redis:
    pub struct InfoInput {
        /// One section ("replication", "server", "memory", ...); default: all.
        pub section: Option<String>,
    }
}

/// INFO, parsed.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct Info {
    /// Section name (lower case) → field → value.
    pub sections: BTreeMap<String, BTreeMap<String, String>>,
}

pub struct InfoAction;

impl Action for InfoAction {
    type Input = InfoInput;
    type Output = Info;

    fn spec() -> Spec {
        Spec::read("redis", "info", "INFO, parsed into sections of fields.")
            .primary("url")
            .timeout(10)
    }

    fn describe(input: &InfoInput) -> String {
        format!(
            "INFO {}on {}",
            input
                .section
                .as_deref()
                .map(|s| format!("{s} "))
                .unwrap_or_default(),
            target(&input.url, &input.name)
        )
    }

    fn predict(_: &InfoInput) -> Info {
        Info {
            sections: BTreeMap::new(),
        }
    }

    async fn run(input: InfoInput, cx: Cx) -> Result<Info, ActionError> {
        let (mut conn, target) = connect(&input.url, &input.name, &cx).await?;
        let mut args = vec!["INFO"];
        if let Some(s) = &input.section {
            args.push(s);
        }
        let reply = text(&query(&mut conn, &target, &args).await?);
        Ok(Info {
            sections: parse_info(&reply),
        })
    }
}

/// A server's place in replication.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct Role {
    /// "master" (a primary) or "slave" (a replica).
    pub role: String,
    /// The replication offset.
    pub offset: i64,
    /// A replica's primary, host:port.
    pub primary: Option<String>,
    /// A replica's link to its primary: "up" or "down".
    pub link: Option<String>,
    /// A primary's replicas as host:port.
    pub replicas: Vec<String>,
    /// A primary's coordinated failover state ("no-failover" when none runs).
    pub failover_state: Option<String>,
}

pub(crate) async fn role_of(
    conn: &mut MultiplexedConnection,
    target: &str,
) -> Result<Role, ActionError> {
    let info = replication_info(conn, target).await?;
    let role = info.get("role").cloned().unwrap_or_default();
    let is_primary = role == "master";
    let replicas = (0..num(&info, "connected_slaves"))
        .filter_map(|i| info.get(&format!("slave{i}")))
        .filter_map(|v| {
            let kv: BTreeMap<&str, &str> = v.split(',').filter_map(|p| p.split_once('=')).collect();
            Some(format!("{}:{}", kv.get("ip")?, kv.get("port")?))
        })
        .collect();
    Ok(Role {
        offset: if is_primary {
            num(&info, "master_repl_offset")
        } else {
            num(&info, "slave_repl_offset")
        },
        primary: (!is_primary).then(|| {
            format!(
                "{}:{}",
                info.get("master_host").cloned().unwrap_or_default(),
                num(&info, "master_port")
            )
        }),
        link: (!is_primary).then(|| info.get("master_link_status").cloned().unwrap_or_default()),
        failover_state: info.get("master_failover_state").cloned(),
        replicas,
        role,
    })
}

fn role_summary(r: &Role) -> String {
    if r.role == "master" {
        format!(
            "now primary at offset {} with {} replica(s)",
            r.offset,
            r.replicas.len()
        )
    } else {
        format!(
            "now replica of {} at offset {}, link {}",
            r.primary.as_deref().unwrap_or("?"),
            r.offset,
            r.link.as_deref().unwrap_or("?")
        )
    }
}

async fn preview_role(url: &SecretString, name: &Option<String>, cx: &Cx) -> Option<String> {
    let (mut conn, target) = connect(url, name, cx).await.ok()?;
    role_of(&mut conn, &target)
        .await
        .ok()
        .map(|r| role_summary(&r))
}

pub struct RoleAction;

impl Action for RoleAction {
    type Input = Target;
    type Output = Role;

    fn spec() -> Spec {
        Spec::read("redis", "role", "Primary or replica, the replication offset, the primary and link of a replica, the replicas of a primary.").primary("url").timeout(10)
    }

    fn describe(input: &Target) -> String {
        format!("role of {}", target(&input.url, &input.name))
    }

    fn predict(_: &Target) -> Role {
        Role {
            role: "master".into(),
            offset: 0,
            primary: None,
            link: None,
            replicas: vec![],
            failover_state: None,
        }
    }

    async fn run(input: Target, cx: Cx) -> Result<Role, ActionError> {
        let (mut conn, target) = connect(&input.url, &input.name, &cx).await?;
        role_of(&mut conn, &target).await
    }
}

// ---- promote and replicate -----------------------------------------------------------------

/// Whether the call changed the server.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct Changed {
    /// False when the server already was as asked.
    pub changed: bool,
    /// Its role afterwards.
    pub role: String,
}

pub struct Promote;

impl Action for Promote {
    type Input = Target;
    type Output = Changed;

    fn spec() -> Spec {
        Spec::converge(
            "redis",
            "promote",
            "Make a replica a primary (REPLICAOF NO ONE); a no-op on a primary.",
        )
        .primary("url")
        .timeout(10)
    }

    fn describe(input: &Target) -> String {
        format!("promote {} to primary", target(&input.url, &input.name))
    }

    fn predict(_: &Target) -> Changed {
        Changed {
            changed: true,
            role: "master".into(),
        }
    }

    async fn preview(input: Target, cx: Cx) -> Option<String> {
        preview_role(&input.url, &input.name, &cx).await
    }

    async fn run(input: Target, cx: Cx) -> Result<Changed, ActionError> {
        let (mut conn, target) = connect(&input.url, &input.name, &cx).await?;
        let before = role_of(&mut conn, &target).await?;
        if before.role == "master" {
            return Ok(Changed {
                changed: false,
                role: before.role,
            });
        }
        query(&mut conn, &target, &["REPLICAOF", "NO", "ONE"]).await?;
        let after = role_of(&mut conn, &target).await?;
        Ok(Changed {
            changed: true,
            role: after.role,
        })
    }
}

input! {
    redis:
    pub struct ReplicateInput {
        /// The new primary's host.
        pub primary_host: String,
        /// The new primary's port.
        pub primary_port: u16,
    }
}

pub struct Replicate;

impl Action for Replicate {
    type Input = ReplicateInput;
    type Output = Changed;

    fn spec() -> Spec {
        Spec::converge("redis", "replicate", "Make a server a replica of a primary (REPLICAOF host port); a no-op when it already is.").timeout(10)
    }

    fn describe(input: &ReplicateInput) -> String {
        format!(
            "make {} a replica of {}:{}",
            target(&input.url, &input.name),
            input.primary_host,
            input.primary_port
        )
    }

    fn predict(_: &ReplicateInput) -> Changed {
        Changed {
            changed: true,
            role: "slave".into(),
        }
    }

    async fn preview(input: ReplicateInput, cx: Cx) -> Option<String> {
        preview_role(&input.url, &input.name, &cx).await
    }

    async fn run(input: ReplicateInput, cx: Cx) -> Result<Changed, ActionError> {
        let (mut conn, target) = connect(&input.url, &input.name, &cx).await?;
        let before = role_of(&mut conn, &target).await?;
        let wanted = format!("{}:{}", input.primary_host, input.primary_port);
        if before.role == "slave" && before.primary.as_deref() == Some(wanted.as_str()) {
            return Ok(Changed {
                changed: false,
                role: before.role,
            });
        }
        let port = input.primary_port.to_string();
        query(
            &mut conn,
            &target,
            &["REPLICAOF", &input.primary_host, &port],
        )
        .await?;
        Ok(Changed {
            changed: true,
            role: "slave".into(),
        })
    }
}

// ---- failover ------------------------------------------------------------------------------

input! {
    redis:
    pub struct FailoverInput {
        /// The replica to promote, as host (default: Redis picks one).
        pub to_host: Option<String>,
        /// The replica's port (with to_host).
        pub to_port: Option<u16>,
        /// How long the primary waits for the replica to catch up before giving up (default "5s").
        #[serde(default = "five_seconds")]
        pub wait: Dur,
        /// Promote even if the replica did not catch up in time (FORCE; can lose writes).
        #[serde(default)]
        pub force: bool,
    }
}

fn five_seconds() -> Dur {
    Dur(Duration::from_secs(5))
}

/// A finished coordinated failover.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct FailedOver {
    /// False when the primary was already a replica of the requested target.
    pub changed: bool,
    /// The new primary, host:port.
    pub new_primary: String,
    /// Milliseconds until the roles had swapped.
    pub took_ms: u64,
}

pub struct Failover;

impl Action for Failover {
    type Input = FailoverInput;
    type Output = FailedOver;

    fn spec() -> Spec {
        Spec::converge("redis", "failover", "Coordinated failover (FAILOVER, Redis 6.2+): the primary pauses writes, waits for the replica to catch up, and swaps roles with it.").timeout(30).retries(0)
    }

    fn describe(input: &FailoverInput) -> String {
        let to = match (&input.to_host, input.to_port) {
            (Some(h), Some(p)) => format!(" to {h}:{p}"),
            _ => String::new(),
        };
        format!(
            "fail over {}{to}{}",
            target(&input.url, &input.name),
            if input.force { " (FORCE)" } else { "" }
        )
    }

    fn predict(input: &FailoverInput) -> FailedOver {
        let to = match (&input.to_host, input.to_port) {
            (Some(h), Some(p)) => format!("{h}:{p}"),
            _ => String::new(),
        };
        FailedOver {
            changed: true,
            new_primary: to,
            took_ms: 0,
        }
    }

    async fn preview(input: FailoverInput, cx: Cx) -> Option<String> {
        preview_role(&input.url, &input.name, &cx).await
    }

    async fn run(input: FailoverInput, cx: Cx) -> Result<FailedOver, ActionError> {
        let started = Instant::now();
        let (mut conn, target) = connect(&input.url, &input.name, &cx).await?;
        let before = role_of(&mut conn, &target).await?;
        let wanted = match (&input.to_host, input.to_port) {
            (Some(h), Some(p)) => Some(format!("{h}:{p}")),
            (None, None) => None,
            _ => {
                return Err(ActionError::permanent(
                    "give both `to_host` and `to_port`, or neither",
                ))
            }
        };
        if before.role != "master" {
            // Already failed over (a resumed run): fine if it follows the wanted primary.
            if wanted.is_none() || before.primary == wanted {
                return Ok(FailedOver {
                    changed: false,
                    new_primary: before.primary.unwrap_or_default(),
                    took_ms: 0,
                });
            }
            return Err(ActionError::permanent(format!(
                "{target} is a replica of {}, not a primary",
                before.primary.unwrap_or_default()
            )));
        }
        let wait_ms = input.wait.0.as_millis().to_string();
        let port;
        let mut args = vec!["FAILOVER"];
        if let (Some(h), Some(p)) = (&input.to_host, input.to_port) {
            port = p.to_string();
            args.extend(["TO", h.as_str(), port.as_str()]);
            if input.force {
                args.push("FORCE");
            }
        }
        args.extend(["TIMEOUT", wait_ms.as_str()]);
        query(&mut conn, &target, &args).await?;
        let deadline = started + cx.timeout;
        loop {
            tokio::time::sleep(Duration::from_millis(50)).await;
            let now = role_of(&mut conn, &target).await?;
            if now.role == "slave"
                && now.failover_state.as_deref().unwrap_or("no-failover") == "no-failover"
            {
                return Ok(FailedOver {
                    changed: true,
                    new_primary: now.primary.unwrap_or_default(),
                    took_ms: started.elapsed().as_millis() as u64,
                });
            }
            if now.role == "master"
                && now.failover_state.as_deref() == Some("no-failover")
                && started.elapsed() > input.wait.0
            {
                return Err(ActionError::permanent(format!(
                    "{target}: the failover was abandoned (the replica did not catch up within {}); {target} is still the primary",
                    input.wait
                )));
            }
            if Instant::now() > deadline {
                return Err(ActionError::maybe_applied(format!(
                    "{target}: the failover did not finish in time (state {})",
                    now.failover_state.unwrap_or_default()
                )));
            }
        }
    }
}

// ---- wait_synced ---------------------------------------------------------------------------

input! {
    redis:
    pub struct WaitSyncedInput {
        /// Its primary: synced means the replica's offset equals the primary's.
        pub primary_url: Option<SecretString>,
        /// Time between checks (default "100ms").
        #[serde(default = "hundred_ms")]
        pub interval: Dur,
    }
}

fn hundred_ms() -> Dur {
    Dur(Duration::from_millis(100))
}

/// A synced replica.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct Synced {
    /// The replica's offset.
    pub offset: i64,
    /// The primary's offset (when primary_url was given).
    pub primary_offset: Option<i64>,
    /// Milliseconds waited.
    pub waited_ms: u64,
}

pub struct WaitSynced;

impl Action for WaitSynced {
    type Input = WaitSyncedInput;
    type Output = Synced;

    fn spec() -> Spec {
        Spec::read("redis", "wait_synced", "Wait until a replica's link is up, its sync is done and (with primary_url) its offset equals the primary's.").timeout(120).retries(0)
    }

    fn describe(input: &WaitSyncedInput) -> String {
        format!("wait until {} is synced", target(&input.url, &input.name))
    }

    fn predict(_: &WaitSyncedInput) -> Synced {
        Synced {
            offset: 0,
            primary_offset: Some(0),
            waited_ms: 0,
        }
    }

    async fn run(input: WaitSyncedInput, cx: Cx) -> Result<Synced, ActionError> {
        let started = Instant::now();
        let (mut conn, target) = connect(&input.url, &input.name, &cx).await?;
        let mut primary = match &input.primary_url {
            Some(p) => Some(connect(p, &None, &cx).await?),
            None => None,
        };
        loop {
            let info = replication_info(&mut conn, &target).await?;
            if info.get("role").map(String::as_str) != Some("slave") {
                return Err(ActionError::permanent(format!("{target} is not a replica")));
            }
            let up = info.get("master_link_status").map(String::as_str) == Some("up");
            let synced = num(&info, "master_sync_in_progress") == 0;
            let offset = num(&info, "slave_repl_offset");
            let primary_offset = match &mut primary {
                Some((pconn, ptarget)) => Some(num(
                    &replication_info(pconn, ptarget).await?,
                    "master_repl_offset",
                )),
                None => None,
            };
            if up && synced && primary_offset.is_none_or(|p| p == offset) {
                return Ok(Synced {
                    offset,
                    primary_offset,
                    waited_ms: started.elapsed().as_millis() as u64,
                });
            }
            let state = format!(
                "link {}, offset {offset}{}",
                if up { "up" } else { "down" },
                primary_offset
                    .map(|p| format!(" of {p}"))
                    .unwrap_or_default()
            );
            cx.note(state.clone());
            if started.elapsed() + input.interval.0 > cx.timeout {
                return Err(ActionError::permanent(format!(
                    "{target} did not sync within {}: {state}",
                    humantime::format_duration(cx.timeout)
                )));
            }
            if cx.cancel.load(std::sync::atomic::Ordering::SeqCst) {
                return Err(ActionError {
                    message: "interrupted".into(),
                    kind: ErrorKind::Interrupted,
                });
            }
            tokio::time::sleep(input.interval.0).await;
        }
    }
}

// ---- cluster -------------------------------------------------------------------------------

/// CLUSTER INFO, parsed.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct ClusterInfo {
    /// "ok" or "fail".
    pub state: String,
    /// Slots assigned to nodes (16384 when complete).
    pub slots_assigned: i64,
    /// Nodes that know each other.
    pub known_nodes: i64,
    /// Every field as Redis gives it.
    pub fields: BTreeMap<String, String>,
}

pub struct ClusterInfoAction;

impl Action for ClusterInfoAction {
    type Input = Target;
    type Output = ClusterInfo;

    fn spec() -> Spec {
        Spec::read(
            "redis",
            "cluster_info",
            "CLUSTER INFO of a Redis Cluster node: state, slots assigned, known nodes.",
        )
        .primary("url")
        .timeout(10)
    }

    fn describe(input: &Target) -> String {
        format!("CLUSTER INFO on {}", target(&input.url, &input.name))
    }

    fn predict(_: &Target) -> ClusterInfo {
        ClusterInfo {
            state: "ok".into(),
            slots_assigned: 16384,
            known_nodes: 1,
            fields: BTreeMap::new(),
        }
    }

    async fn run(input: Target, cx: Cx) -> Result<ClusterInfo, ActionError> {
        let (mut conn, target) = connect(&input.url, &input.name, &cx).await?;
        let reply = text(&query(&mut conn, &target, &["CLUSTER", "INFO"]).await?);
        let fields = parse_info(&reply).remove("default").unwrap_or_default();
        Ok(ClusterInfo {
            state: fields.get("cluster_state").cloned().unwrap_or_default(),
            slots_assigned: num(&fields, "cluster_slots_assigned"),
            known_nodes: num(&fields, "cluster_known_nodes"),
            fields,
        })
    }
}

/// One line of CLUSTER NODES.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct ClusterNode {
    /// The node id.
    pub id: String,
    /// host:port (without the bus port).
    pub address: String,
    /// Flags: myself, master, slave, fail, ...
    pub flags: Vec<String>,
    /// A replica's primary id.
    pub primary_id: Option<String>,
    /// "connected" or "disconnected".
    pub link_state: String,
    /// Slot ranges served, e.g. "0-5460".
    pub slots: Vec<String>,
}

/// CLUSTER NODES, parsed.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct ClusterNodes {
    /// Every node the asked node knows.
    pub nodes: Vec<ClusterNode>,
}

pub struct ClusterNodesAction;

impl Action for ClusterNodesAction {
    type Input = Target;
    type Output = ClusterNodes;

    fn spec() -> Spec {
        Spec::read(
            "redis",
            "cluster_nodes",
            "CLUSTER NODES of a Redis Cluster node, parsed: ids, addresses, roles, links, slots.",
        )
        .primary("url")
        .timeout(10)
    }

    fn describe(input: &Target) -> String {
        format!("CLUSTER NODES on {}", target(&input.url, &input.name))
    }

    fn predict(_: &Target) -> ClusterNodes {
        ClusterNodes { nodes: vec![] }
    }

    async fn run(input: Target, cx: Cx) -> Result<ClusterNodes, ActionError> {
        let (mut conn, target) = connect(&input.url, &input.name, &cx).await?;
        let reply = text(&query(&mut conn, &target, &["CLUSTER", "NODES"]).await?);
        let nodes = reply
            .lines()
            .filter_map(|line| {
                let f: Vec<&str> = line.split_whitespace().collect();
                if f.len() < 8 {
                    return None;
                }
                Some(ClusterNode {
                    id: f[0].into(),
                    address: f[1].split('@').next().unwrap_or("").into(),
                    flags: f[2].split(',').map(str::to_string).collect(),
                    primary_id: (f[3] != "-").then(|| f[3].to_string()),
                    link_state: f[7].into(),
                    slots: f[8..].iter().map(|s| s.to_string()).collect(),
                })
            })
            .collect();
        Ok(ClusterNodes { nodes })
    }
}

// ---- command -------------------------------------------------------------------------------

input! {
    redis:
    pub struct CommandInput {
        /// The command and its arguments, e.g. ["CONFIG", "SET", "maxmemory", "2gb"].
        pub args: Vec<Value>,
    }
}

/// A command's reply.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct Reply {
    /// The reply as JSON (strings, numbers, lists, maps, null).
    pub reply: Value,
}

pub struct Command;

impl Action for Command {
    type Input = CommandInput;
    type Output = Reply;

    fn spec() -> Spec {
        Spec::change(
            "redis",
            "command",
            "Any Redis command (escape hatch): a write, not idempotent.",
        )
        .timeout(30)
    }

    fn describe(input: &CommandInput) -> String {
        let words: Vec<String> = input
            .args
            .iter()
            .map(|a| {
                a.as_str()
                    .map(str::to_string)
                    .unwrap_or_else(|| a.to_string())
            })
            .collect();
        format!("{} on {}", words.join(" "), target(&input.url, &input.name))
    }

    fn predict(_: &CommandInput) -> Reply {
        Reply {
            reply: Value::String("OK".into()),
        }
    }

    async fn run(input: CommandInput, cx: Cx) -> Result<Reply, ActionError> {
        if input.args.is_empty() {
            return Err(ActionError::permanent(
                "`args` is empty: give the command and its arguments",
            ));
        }
        let (mut conn, target) = connect(&input.url, &input.name, &cx).await?;
        let words: Vec<String> = input
            .args
            .iter()
            .map(|a| {
                a.as_str()
                    .map(str::to_string)
                    .unwrap_or_else(|| a.to_string())
            })
            .collect();
        let refs: Vec<&str> = words.iter().map(String::as_str).collect();
        let reply = query(&mut conn, &target, &refs).await?;
        Ok(Reply {
            reply: to_json(&reply),
        })
    }
}
