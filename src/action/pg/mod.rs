//! `pg::` — PostgreSQL: queries, replication state, careful promotion and fencing.
//!
//! Every action takes `url`, a libpq connection string or URL (usually a secret), and an
//! optional `name` (the region, say) that messages and the plan use beside the host.

mod conn;
pub(crate) mod fork;
mod server;
pub(crate) mod tool;

use std::str::FromStr;
use std::time::{Duration, Instant};

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use tokio_postgres::types::{ToSql, Type};
use tokio_postgres::Client;

use super::topology::model::lsn_text;
use super::world::{DbState, Place, World};
use super::{Action, ActionError, Cx, Dur, Poll, Spec};
use crate::secret::SecretString;
pub(crate) use conn::{connect, connect_new, connect_or_refused, pg_error, target};
pub use conn::{OPENED, REUSED};
pub(crate) use fork::control_field;
pub use server::{BaseBackup, RejoinInput, Rejoined, Restart, Rewind};

/// Runs a query returning rows and gives each row as a JSON object (via row_to_json, so every
/// PostgreSQL type arrives as its JSON form).
pub(crate) async fn json_rows(
    client: &Client,
    target: &str,
    sql: &str,
    params: &[Option<String>],
) -> Result<Vec<Value>, ActionError> {
    let sql = sql.trim().trim_end_matches(';');
    // A CTE (not a subquery) so that a statement with RETURNING also reaches the server,
    // which decides what it may do (in pg::query, a read-only transaction refuses it).
    let wrapped = format!("WITH q AS ({sql}) SELECT row_to_json(q)::text FROM q");
    let rows = client
        .query_typed(&wrapped, &typed_as_text(params))
        .await
        .map_err(|e| pg_error(target, e, true))?;
    rows.iter()
        .map(|r| {
            let text: String = r.get(0);
            serde_json::from_str(&text)
                .map_err(|e| ActionError::permanent(format!("{target}: {e}")))
        })
        .collect()
}

/// Parameters sent as text, for the server to cast where the statement says ($1::int).
fn typed_as_text(params: &[Option<String>]) -> Vec<(&(dyn ToSql + Sync), Type)> {
    params
        .iter()
        .map(|p| (p as &(dyn ToSql + Sync), Type::TEXT))
        .collect()
}

pub(crate) async fn json_row(
    client: &Client,
    target: &str,
    sql: &str,
) -> Result<Value, ActionError> {
    json_rows(client, target, sql, &[])
        .await?
        .into_iter()
        .next()
        .ok_or_else(|| ActionError::permanent(format!("{target}: the query returned no row")))
}

/// The statement's parameters as the text PostgreSQL receives, secrets in place.
fn params_text(params: &[Value]) -> Result<Vec<Option<String>>, ActionError> {
    params
        .iter()
        .map(|p| {
            Ok(
                match crate::secret::reveal_json(p).map_err(ActionError::permanent)? {
                    Value::Null => None,
                    Value::String(s) => Some(s),
                    other => Some(other.to_string()),
                },
            )
        })
        .collect()
}

fn quote_ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

pub(crate) fn quote_literal(value: &str) -> String {
    format!("'{}'", value.replace('\'', "''"))
}

/// Bytes as the operator reads them.
pub fn human_bytes(n: i64) -> String {
    let a = n.unsigned_abs() as f64;
    let sign = if n < 0 { "-" } else { "" };
    if a < 1024.0 {
        format!("{n} B")
    } else if a < 1024.0 * 1024.0 {
        format!("{sign}{:.1} KB", a / 1024.0)
    } else if a < 1024.0 * 1024.0 * 1024.0 {
        format!("{sign}{:.1} MB", a / 1024.0 / 1024.0)
    } else {
        format!("{sign}{:.2} GB", a / 1024.0 / 1024.0 / 1024.0)
    }
}

// ---- status ------------------------------------------------------------------------------

input! {
    pg:
    pub struct Target {}
}

/// A server's role and replication position.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct ServerStatus {
    /// True on a standby (replica), false on a primary.
    pub in_recovery: bool,
    /// The timeline the server is on.
    pub timeline: Option<i64>,
    /// A primary's current WAL position (null on a standby).
    pub current_lsn: Option<String>,
    /// A standby's last received WAL position.
    pub receive_lsn: Option<String>,
    /// A standby's last replayed WAL position.
    pub replay_lsn: Option<String>,
    /// Received but not yet replayed, in bytes (standby).
    pub lag_bytes: Option<i64>,
    /// Seconds since the last replayed transaction's commit (standby; grows on an idle primary).
    pub lag_seconds: Option<f64>,
    /// Whether replay is paused (standby).
    pub replay_paused: bool,
    /// The WAL receiver's state ("streaming", ...), null when none runs.
    pub wal_receiver: Option<String>,
    /// The upstream this standby streams from (host:port).
    pub upstream: Option<String>,
    /// default_transaction_read_only is on (a fenced primary).
    pub read_only: bool,
    /// The run that fenced it, "ID of RUNBOOK", as pg::fence left it on the server (null when
    /// no run did, or it was unfenced with pg::set_config).
    #[serde(default)]
    pub fenced_by: Option<String>,
    /// The server's version.
    pub server_version: String,
}

/// The custom setting pg::fence leaves beside the fence: the run that fenced the server (read
/// back by `position_columns`, which spells it as a literal).
pub(crate) const FENCED_BY: &str = "runbook.fenced_by";

/// The statements that leave `run` on the server as the one that fenced it, or (None) forget
/// it. A custom setting: its placeholder must exist in the session before ALTER SYSTEM takes it.
fn fenced_by(run: Option<&str>) -> Vec<String> {
    let mut out = vec![format!("SELECT set_config('{FENCED_BY}', '', false)")];
    out.push(match run {
        Some(run) => format!("ALTER SYSTEM SET {FENCED_BY} = {}", quote_literal(run)),
        None => format!("ALTER SYSTEM RESET {FENCED_BY}"),
    });
    out
}

/// ALTER SYSTEM statements, one at a time (ALTER SYSTEM may not share a simple-protocol
/// transaction with other statements), then a reload.
async fn alter_system(
    client: &Client,
    target: &str,
    statements: &[String],
) -> Result<(), ActionError> {
    for sql in statements
        .iter()
        .map(String::as_str)
        .chain(["SELECT pg_reload_conf()"])
    {
        client
            .batch_execute(sql)
            .await
            .map_err(|e| pg_error(target, e, true))?;
    }
    Ok(())
}

/// The columns that say what a server is and where its WAL stands, read alike by pg::status
/// and topology::observe (a macro because `concat!` takes only literals).
macro_rules! position_columns {
    () => {
        "pg_is_in_recovery() AS in_recovery,
  CASE WHEN pg_is_in_recovery()
       THEN COALESCE((SELECT received_tli FROM pg_stat_wal_receiver LIMIT 1), (pg_control_checkpoint()).timeline_id)
       ELSE ('x' || substr(pg_walfile_name(pg_current_wal_lsn()), 1, 8))::bit(32)::int END AS timeline,
  CASE WHEN pg_is_in_recovery() THEN NULL ELSE pg_current_wal_lsn()::text END AS current_lsn,
  pg_last_wal_receive_lsn()::text AS receive_lsn,
  pg_last_wal_replay_lsn()::text AS replay_lsn,
  (SELECT status FROM pg_stat_wal_receiver LIMIT 1) AS wal_receiver,
  (SELECT sender_host || ':' || sender_port FROM pg_stat_wal_receiver WHERE sender_host IS NOT NULL LIMIT 1) AS upstream,
  current_setting('default_transaction_read_only') = 'on' AS read_only,
  NULLIF(current_setting('runbook.fenced_by', true), '') AS fenced_by"
    };
}
pub(crate) use position_columns;

const STATUS_SQL: &str = concat!(
    "SELECT ",
    position_columns!(),
    ",
  CASE WHEN pg_is_in_recovery() THEN pg_wal_lsn_diff(pg_last_wal_receive_lsn(), pg_last_wal_replay_lsn())::bigint END AS lag_bytes,
  CASE WHEN pg_is_in_recovery() THEN extract(epoch FROM now() - pg_last_xact_replay_timestamp())::float8 END AS lag_seconds,
  CASE WHEN pg_is_in_recovery() THEN pg_is_wal_replay_paused() ELSE false END AS replay_paused,
  current_setting('server_version') AS server_version"
);

pub(crate) async fn status_of(client: &Client, target: &str) -> Result<ServerStatus, ActionError> {
    let row = json_row(client, target, STATUS_SQL).await?;
    serde_json::from_value(row).map_err(|e| ActionError::permanent(format!("{target}: {e}")))
}

/// What pg::status reads from a database in an assumed world (one that answers).
fn assumed_status(world: &World, place: &Place) -> ServerStatus {
    let lsn = lsn_text(world.lsn_of(place));
    let standby = place.database == Some(DbState::Standby);
    let streaming = world.streaming(place);
    ServerStatus {
        in_recovery: standby,
        timeline: Some(place.timeline),
        current_lsn: (!standby).then(|| lsn.clone()),
        receive_lsn: standby.then(|| lsn.clone()),
        replay_lsn: standby.then(|| lsn.clone()),
        lag_bytes: standby.then_some(0),
        lag_seconds: standby.then_some(0.0),
        replay_paused: false,
        wal_receiver: streaming.then(|| "streaming".into()),
        upstream: place
            .upstream
            .as_deref()
            .filter(|_| streaming)
            .map(|u| world.database_host(u)),
        read_only: place.database == Some(DbState::Fenced),
        fenced_by: None,
        server_version: "15 (assumed)".into(),
    }
}

/// One line: "primary at 0/3000060, timeline 1" or "replica at 0/3000060, lag 0 B".
fn summary(s: &ServerStatus) -> String {
    if s.in_recovery {
        format!(
            "replica at {}, lag {}{}",
            s.replay_lsn.as_deref().unwrap_or("?"),
            human_bytes(s.lag_bytes.unwrap_or(0)),
            s.wal_receiver
                .as_deref()
                .map(|w| format!(", {w}"))
                .unwrap_or_else(|| ", not streaming".into())
        )
    } else {
        format!(
            "primary at {}, timeline {}{}",
            s.current_lsn.as_deref().unwrap_or("?"),
            s.timeline.unwrap_or(0),
            if s.read_only { ", read-only" } else { "" }
        )
    }
}

async fn preview_status(url: &SecretString, name: &Option<String>, cx: &Cx) -> Option<String> {
    let (client, target) = connect(url, name, cx).await.ok()?;
    status_of(&client, &target)
        .await
        .ok()
        .map(|s| format!("now {}", summary(&s)))
}

action! {
    /// A server's role, timeline, WAL positions, replication lag and WAL receiver state.
    Status(Target) -> ServerStatus = Spec::read("pg", "status").primary("url").timeout(15)
}

impl Action for Status {
    fn describe(input: &Target) -> String {
        format!("status of {}", target(&input.url, &input.name))
    }

    fn predict(_: &Target) -> ServerStatus {
        ServerStatus {
            in_recovery: false,
            timeline: Some(1),
            current_lsn: Some("0/0".into()),
            receive_lsn: None,
            replay_lsn: None,
            lag_bytes: None,
            lag_seconds: None,
            replay_paused: false,
            wal_receiver: None,
            upstream: None,
            read_only: false,
            fenced_by: None,
            server_version: String::new(),
        }
    }

    fn predict_in(input: &Target, world: &World) -> Option<Result<ServerStatus, ActionError>> {
        let place = world.database(&input.url)?;
        Some(Ok(assumed_status(world, place)))
    }

    async fn run(input: Target, cx: Cx) -> Result<ServerStatus, ActionError> {
        let (client, target) = connect(&input.url, &input.name, &cx).await?;
        status_of(&client, &target).await
    }
}

// ---- query and exec ------------------------------------------------------------------------

input! {
    pg:
    pub struct QueryInput {
        /// A query returning rows (SELECT, WITH, VALUES); parameters as $1, $2 (cast them: $1::int).
        pub sql: String,
        /// Values for $1, $2, ... (sent as text).
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        pub params: Vec<Value>,
    }
}

/// Rows returned.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct QueryOutput {
    /// Each row as a map of column name to value.
    pub rows: Vec<Value>,
    /// How many rows.
    pub count: usize,
}

fn excerpt(sql: &str) -> String {
    let one: String = sql.split_whitespace().collect::<Vec<_>>().join(" ");
    if one.chars().count() > 80 {
        format!("{}…", one.chars().take(80).collect::<String>())
    } else {
        one
    }
}

action! {
    /// Run a query inside a READ ONLY transaction (a read can never write) and return its rows.
    Query(QueryInput) -> QueryOutput = Spec::read("pg", "query")
}

impl Action for Query {
    fn describe(input: &QueryInput) -> String {
        format!(
            "{}: {}",
            target(&input.url, &input.name),
            excerpt(&input.sql)
        )
    }

    fn predict(_: &QueryInput) -> QueryOutput {
        QueryOutput {
            rows: vec![],
            count: 0,
        }
    }

    async fn run(input: QueryInput, cx: Cx) -> Result<QueryOutput, ActionError> {
        let params = params_text(&input.params)?;
        let (client, target) = connect(&input.url, &input.name, &cx).await?;
        client
            .batch_execute("BEGIN READ ONLY")
            .await
            .map_err(|e| pg_error(&target, e, false))?;
        let rows = json_rows(&client, &target, &input.sql, &params).await;
        let _ = client.batch_execute("ROLLBACK").await;
        let rows = rows?;
        Ok(QueryOutput {
            count: rows.len(),
            rows,
        })
    }
}

input! {
    pg:
    pub struct ExecInput {
        /// One statement with $1, $2 parameters, or several statements separated by ; without parameters.
        pub sql: String,
        /// Values for $1, $2, ... (sent as text).
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        pub params: Vec<Value>,
    }
}

/// What a statement changed.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct ExecOutput {
    /// Rows affected (null for several statements).
    pub rows_affected: Option<u64>,
}

action! {
    /// Run a statement that changes data or schema.
    Exec(ExecInput) -> ExecOutput = Spec::change("pg", "exec")
}

impl Action for Exec {
    fn describe(input: &ExecInput) -> String {
        format!(
            "on {}: {}",
            target(&input.url, &input.name),
            excerpt(&input.sql)
        )
    }

    fn predict(_: &ExecInput) -> ExecOutput {
        ExecOutput {
            rows_affected: Some(0),
        }
    }

    async fn preview(input: ExecInput, cx: Cx) -> Option<String> {
        preview_status(&input.url, &input.name, &cx).await
    }

    async fn run(input: ExecInput, cx: Cx) -> Result<ExecOutput, ActionError> {
        let (client, target) = connect_new(&input.url, &input.name, &cx).await?;
        if input.params.is_empty() {
            client
                .batch_execute(&input.sql)
                .await
                .map_err(|e| pg_error(&target, e, true))?;
            return Ok(ExecOutput {
                rows_affected: None,
            });
        }
        let params = params_text(&input.params)?;
        let n = client
            .execute_typed(&input.sql, &typed_as_text(&params))
            .await
            .map_err(|e| pg_error(&target, e, true))?;
        Ok(ExecOutput {
            rows_affected: Some(n),
        })
    }
}

// ---- replication ---------------------------------------------------------------------------

input! {
    pg:
    pub struct ReplicationInput {
        /// Lag below this is "acceptable" (default 100 MB).
        #[serde(default = "acceptable")]
        pub acceptable_bytes: i64,
        /// Lag above this is "warning" (default 500 MB).
        #[serde(default = "warning")]
        pub warning_bytes: i64,
        /// Lag above this is "critical" (default 1 GB).
        #[serde(default = "critical")]
        pub critical_bytes: i64,
    }
}

fn acceptable() -> i64 {
    Thresholds::default().acceptable
}
fn warning() -> i64 {
    Thresholds::default().warning
}
fn critical() -> i64 {
    Thresholds::default().critical
}

/// One standby as the primary sees it.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct Replica {
    /// The standby's application_name (its slot or cluster name).
    pub application_name: String,
    /// Its address.
    pub client_addr: Option<String>,
    /// "streaming", "catchup", ...
    pub state: Option<String>,
    /// "async", "sync", ...
    pub sync_state: Option<String>,
    /// Last WAL position sent to it.
    pub sent_lsn: Option<String>,
    /// Last WAL position it replayed.
    pub replay_lsn: Option<String>,
    /// The primary's position minus its replay position, in bytes.
    pub lag_bytes: Option<i64>,
    /// Its replay lag in seconds, as the primary measures it.
    pub replay_lag_seconds: Option<f64>,
    /// "acceptable", "elevated", "warning" or "critical", from the thresholds.
    #[serde(default)]
    pub severity: String,
}

/// A replication slot on the primary.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct Slot {
    /// The slot's name.
    pub slot_name: String,
    /// Whether a standby is using it now.
    pub active: bool,
    /// WAL the slot keeps on the primary, in bytes.
    pub retained_bytes: Option<i64>,
}

/// The primary's view of its standbys.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct ReplicationOutput {
    /// Connected standbys.
    pub replicas: Vec<Replica>,
    /// Replication slots.
    pub slots: Vec<Slot>,
    /// The worst severity among the standbys ("acceptable" when there are none).
    pub worst: String,
}

/// Replication lag thresholds in bytes (acceptable < 100 MB, warning > 500 MB,
/// critical > 1 GB).
#[derive(Debug, Clone, Copy)]
pub struct Thresholds {
    pub acceptable: i64,
    pub warning: i64,
    pub critical: i64,
}

impl Default for Thresholds {
    fn default() -> Self {
        const MB: i64 = 1024 * 1024;
        Thresholds {
            acceptable: 100 * MB,
            warning: 500 * MB,
            critical: 1024 * MB,
        }
    }
}

impl Thresholds {
    pub fn severity(&self, lag: i64) -> &'static str {
        if lag > self.critical {
            "critical"
        } else if lag > self.warning {
            "warning"
        } else if lag >= self.acceptable {
            "elevated"
        } else {
            "acceptable"
        }
    }
}

const SEVERITIES: [&str; 4] = ["acceptable", "elevated", "warning", "critical"];

fn severity(lag: i64, input: &ReplicationInput) -> &'static str {
    Thresholds {
        acceptable: input.acceptable_bytes,
        warning: input.warning_bytes,
        critical: input.critical_bytes,
    }
    .severity(lag)
}

action! {
    /// The primary's standbys (pg_stat_replication) with lag in bytes and a severity, and its
    /// replication slots.
    Replication(ReplicationInput) -> ReplicationOutput =
        Spec::read("pg", "replication").primary("url").timeout(15)
}

impl Action for Replication {
    fn describe(input: &ReplicationInput) -> String {
        format!("replication on {}", target(&input.url, &input.name))
    }

    fn predict(_: &ReplicationInput) -> ReplicationOutput {
        ReplicationOutput {
            replicas: vec![],
            slots: vec![],
            worst: "acceptable".into(),
        }
    }

    fn predict_in(
        input: &ReplicationInput,
        world: &World,
    ) -> Option<Result<ReplicationOutput, ActionError>> {
        let primary = world.database(&input.url)?;
        let mut replicas = Vec::new();
        for p in world.regions.values() {
            if p.upstream.as_deref() != Some(primary.name.as_str()) || !world.streaming(p) {
                continue;
            }
            let lag = p.lag_bytes;
            replicas.push(Replica {
                application_name: p.name.clone(),
                client_addr: None,
                state: Some("streaming".into()),
                sync_state: Some("async".into()),
                sent_lsn: Some(lsn_text(world.lsn_of(p))),
                replay_lsn: Some(lsn_text(world.lsn_of(p))),
                lag_bytes: Some(lag),
                replay_lag_seconds: Some(0.0),
                severity: severity(lag, input).into(),
            });
        }
        let worst = replicas
            .iter()
            .map(|r| r.severity.as_str())
            .max_by_key(|s| SEVERITIES.iter().position(|x| x == s))
            .unwrap_or("acceptable")
            .to_string();
        Some(Ok(ReplicationOutput {
            replicas,
            slots: vec![],
            worst,
        }))
    }

    async fn run(input: ReplicationInput, cx: Cx) -> Result<ReplicationOutput, ActionError> {
        let (client, target) = connect(&input.url, &input.name, &cx).await?;
        let rows = json_rows(
            &client,
            &target,
            "SELECT COALESCE(application_name, '') AS application_name, client_addr::text AS client_addr, state, sync_state,
                    sent_lsn::text AS sent_lsn, replay_lsn::text AS replay_lsn,
                    CASE WHEN pg_is_in_recovery() THEN NULL ELSE pg_wal_lsn_diff(pg_current_wal_lsn(), replay_lsn)::bigint END AS lag_bytes,
                    extract(epoch FROM replay_lag)::float8 AS replay_lag_seconds
             FROM pg_stat_replication ORDER BY application_name",
            &[],
        )
        .await?;
        let mut replicas: Vec<Replica> = rows
            .into_iter()
            .map(serde_json::from_value)
            .collect::<Result<_, _>>()
            .map_err(|e| ActionError::permanent(format!("{target}: {e}")))?;
        for r in &mut replicas {
            r.severity = severity(r.lag_bytes.unwrap_or(0), &input).into();
        }
        let slots = json_rows(
            &client,
            &target,
            "SELECT slot_name::text AS slot_name, active,
                    CASE WHEN pg_is_in_recovery() OR restart_lsn IS NULL THEN NULL
                         ELSE pg_wal_lsn_diff(pg_current_wal_lsn(), restart_lsn)::bigint END AS retained_bytes
             FROM pg_replication_slots ORDER BY slot_name",
            &[],
        )
        .await?
        .into_iter()
        .map(serde_json::from_value)
        .collect::<Result<_, _>>()
        .map_err(|e| ActionError::permanent(format!("{target}: {e}")))?;
        let worst = replicas
            .iter()
            .map(|r| {
                SEVERITIES
                    .iter()
                    .position(|s| *s == r.severity)
                    .unwrap_or(0)
            })
            .max()
            .map(|i| SEVERITIES[i])
            .unwrap_or("acceptable")
            .to_string();
        Ok(ReplicationOutput {
            replicas,
            slots,
            worst,
        })
    }
}

// ---- wait_caught_up ------------------------------------------------------------------------

input! {
    pg:
    pub struct WaitCaughtUpInput {
        /// The primary: the target is its current WAL position (give this or target_lsn).
        pub primary_url: Option<SecretString>,
        /// A WAL position to reach, e.g. the one pg::fence returned.
        pub target_lsn: Option<String>,
        /// Done when the standby is within this many bytes of the target (default 0: all of it).
        #[serde(default)]
        pub max_lag_bytes: i64,
        /// Time between checks (default "200ms").
        #[serde(default = "Dur::ms::<200>")]
        pub interval: Dur,
    }
}

/// Where the standby got to.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct CaughtUp {
    /// The position it had to reach.
    pub target_lsn: String,
    /// The position it replayed.
    pub replay_lsn: String,
    /// Bytes still to replay when it was done (0 when fully caught up).
    pub lag_bytes: i64,
    /// How long the wait took, in milliseconds.
    pub waited_ms: u64,
}

action! {
    /// Wait until a standby has replayed up to the primary's current WAL position (or a given one),
    /// within a lag limit.
    WaitCaughtUp(WaitCaughtUpInput) -> CaughtUp =
        Spec::read("pg", "wait_caught_up").timeout(300).retries(0)
}

impl Action for WaitCaughtUp {
    fn describe(input: &WaitCaughtUpInput) -> String {
        let to = match (&input.target_lsn, &input.primary_url) {
            (Some(lsn), _) => lsn.clone(),
            (None, Some(p)) => format!("{}'s position", target(p, &None)),
            _ => "?".into(),
        };
        format!(
            "wait until {} has replayed up to {to}",
            target(&input.url, &input.name)
        )
    }

    fn predict(input: &WaitCaughtUpInput) -> CaughtUp {
        let lsn = input.target_lsn.clone().unwrap_or_else(|| "0/0".into());
        CaughtUp {
            target_lsn: lsn.clone(),
            replay_lsn: lsn,
            lag_bytes: 0,
            waited_ms: 0,
        }
    }

    async fn run(input: WaitCaughtUpInput, cx: Cx) -> Result<CaughtUp, ActionError> {
        let poll = Poll::new(&cx, input.interval.0);
        let target_lsn = match (&input.target_lsn, &input.primary_url) {
            (Some(lsn), _) => lsn.clone(),
            (None, Some(primary)) => {
                let (client, ptarget) = connect(primary, &None, &cx).await?;
                let s = status_of(&client, &ptarget).await?;
                if s.in_recovery {
                    return Err(ActionError::permanent(format!(
                        "{ptarget} is a standby, not a primary"
                    )));
                }
                s.current_lsn.unwrap_or_default()
            }
            (None, None) => {
                return Err(ActionError::permanent("give `primary_url` or `target_lsn`"))
            }
        };
        let (client, target) = connect(&input.url, &input.name, &cx).await?;
        loop {
            let row = json_rows(
                &client,
                &target,
                "SELECT pos::text AS replay_lsn, pg_wal_lsn_diff($1::pg_lsn, pos)::bigint AS lag
                 FROM (SELECT CASE WHEN pg_is_in_recovery() THEN pg_last_wal_replay_lsn() ELSE pg_current_wal_lsn() END AS pos) p",
                &[Some(target_lsn.clone())],
            )
            .await?
            .pop()
            .unwrap_or(Value::Null);
            let replay = row["replay_lsn"].as_str().unwrap_or("").to_string();
            let lag = row["lag"].as_i64().unwrap_or(i64::MAX).max(0);
            if lag <= input.max_lag_bytes {
                return Ok(CaughtUp {
                    target_lsn,
                    replay_lsn: replay,
                    lag_bytes: lag,
                    waited_ms: poll.waited_ms(),
                });
            }
            cx.note(format!(
                "replayed {replay}, {} behind {target_lsn}",
                human_bytes(lag)
            ));
            poll.pause(&cx, |limit| {
                format!(
                    "{target} did not catch up to {target_lsn} within {limit}: replayed {replay}, {} behind",
                    human_bytes(lag)
                )
            })
            .await?;
        }
    }
}

// ---- promote -------------------------------------------------------------------------------

/// The result of a promotion.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct Promoted {
    /// Whether this call promoted it (false when it already was a primary).
    pub promoted: bool,
    /// The timeline it is on now.
    pub timeline: i64,
    /// Its WAL position once writable.
    pub lsn: String,
    /// Milliseconds from the request until it accepted writes.
    pub took_ms: u64,
}

input! {
    pg:
    pub struct PromoteInput {
        /// The deployment's other databases: the promotion is refused while any of them answers
        /// as a writable primary (fence it first), so a promotion never makes two primaries.
        /// Databases that do not answer are not in the way.
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        pub peers: Vec<SecretString>,
    }
}

/// The first peer (in the order given) that answers as a writable primary, as "host:port
/// (timeline N)". The peers are asked at once, each within 3 s: a lost region's database costs
/// that limit once, not once for every peer that does not answer.
async fn writable_peer(peers: &[SecretString], cx: &Cx) -> Option<String> {
    let probe = Cx {
        timeout: cx.timeout.min(Duration::from_secs(3)),
        ..cx.clone()
    };
    let mut asked: Vec<_> = peers
        .iter()
        .map(|peer| {
            let (peer, probe) = (peer.clone(), probe.clone());
            tokio::spawn(async move {
                let (client, shown) = connect(&peer, &None, &probe).await.ok()?;
                let s = status_of(&client, &shown).await.ok()?;
                let primary = !s.in_recovery && !s.read_only && writable(&client).await;
                primary.then(|| format!("{shown} (timeline {})", s.timeline.unwrap_or(0)))
            })
        })
        .collect();
    let mut found = None;
    for answer in &mut asked {
        if found.is_some() {
            answer.abort();
        } else if let Ok(Some(primary)) = answer.await {
            found = Some(primary);
        }
    }
    found
}

/// Whether the server accepts writes: a temporary table in a transaction that is rolled back.
pub(crate) async fn writable(client: &Client) -> bool {
    let probe = "BEGIN; CREATE TEMP TABLE runbook_write_probe (x int) ON COMMIT DROP; ROLLBACK;";
    match client.batch_execute(probe).await {
        Ok(()) => true,
        Err(_) => {
            let _ = client.batch_execute("ROLLBACK").await;
            false
        }
    }
}

action! {
    /// Promote a standby to primary and wait until it accepts writes; a no-op on a primary. Refused
    /// while one of `peers` answers as a writable primary. Reports the new timeline.
    Promote(PromoteInput) -> Promoted = Spec::converge("pg", "promote").primary("url")
}

impl Action for Promote {
    fn describe(input: &PromoteInput) -> String {
        format!("promote {} to primary", target(&input.url, &input.name))
    }

    fn predict(_: &PromoteInput) -> Promoted {
        Promoted {
            promoted: true,
            timeline: 0,
            lsn: String::new(),
            took_ms: 0,
        }
    }

    fn predict_in(input: &PromoteInput, world: &World) -> Option<Result<Promoted, ActionError>> {
        let place = world.database(&input.url)?;
        let standby = place.database == Some(DbState::Standby);
        Some(Ok(Promoted {
            promoted: standby,
            timeline: place.timeline + i64::from(standby),
            lsn: lsn_text(world.lsn_of(place)),
            took_ms: 0,
        }))
    }

    async fn preview(input: PromoteInput, cx: Cx) -> Option<String> {
        preview_status(&input.url, &input.name, &cx).await
    }

    async fn run(input: PromoteInput, cx: Cx) -> Result<Promoted, ActionError> {
        let started = Instant::now();
        let (client, target) = connect(&input.url, &input.name, &cx).await?;
        let before = status_of(&client, &target).await?;
        let promoted = before.in_recovery;
        if promoted {
            if let Some(other) = writable_peer(&input.peers, &cx).await {
                return Err(ActionError::permanent(format!(
                    "refusing to promote {target}: {other} answers as a writable primary, and a promotion now would make two. \
                     Fence it first (pg::fence), or fail over from it"
                )));
            }
            let wait = cx.timeout.as_secs().clamp(1, 3600) as i32;
            client
                .query("SELECT pg_promote(true, $1)", &[&wait])
                .await
                .map_err(|e| pg_error(&target, e, true))?;
        }
        let deadline = started + cx.timeout;
        loop {
            let s = status_of(&client, &target).await?;
            if !s.in_recovery && writable(&client).await {
                return Ok(Promoted {
                    promoted,
                    timeline: s.timeline.unwrap_or(0),
                    lsn: s.current_lsn.unwrap_or_default(),
                    took_ms: started.elapsed().as_millis() as u64,
                });
            }
            if Instant::now() >= deadline {
                let why = if s.in_recovery {
                    "is still in recovery"
                } else if s.read_only {
                    "is primary but read-only (default_transaction_read_only is on: fenced?)"
                } else {
                    "does not accept writes"
                };
                return Err(ActionError::permanent(format!(
                    "{target} {why} {} after the promote request",
                    humantime::format_duration(Duration::from_secs(cx.timeout.as_secs()))
                )));
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

// ---- fence ---------------------------------------------------------------------------------

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema, Default)]
#[serde(rename_all = "snake_case")]
pub enum FenceMethod {
    /// default_transaction_read_only = on, reload, and end every client session.
    #[default]
    ReadOnly,
    /// A fast shutdown with pg_ctl (the runbook must run where the data directory is).
    Shutdown,
}

input! {
    pg:
    pub struct FenceInput {
        /// "read_only" (default) or "shutdown".
        #[serde(default)]
        pub method: FenceMethod,
        /// For "shutdown": the server's data directory.
        pub data_dir: Option<String>,
        /// For "shutdown": the folder holding pg_ctl and pg_controldata (default: found on PATH).
        pub bin_dir: Option<String>,
        /// For "shutdown": the system user that owns the data directory (run through runuser when root).
        pub os_user: Option<String>,
    }
}

/// A fenced primary.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct Fenced {
    /// How it was fenced.
    pub method: FenceMethod,
    /// Client sessions ended (read_only).
    pub terminated: i64,
    /// Its last WAL position: a standby that replayed up to here has every committed change.
    pub lsn: Option<String>,
    /// Whether it was already fenced (or stopped) before this call.
    pub already: bool,
}

action! {
    /// Make a primary refuse writes: read_only (default_transaction_read_only + end client
    /// sessions) or a fast shutdown. Returns its last WAL position.
    Fence(FenceInput) -> Fenced = Spec::converge("pg", "fence")
}

impl Action for Fence {
    fn describe(input: &FenceInput) -> String {
        let how = match input.method {
            FenceMethod::ReadOnly => "read-only, ending its client sessions",
            FenceMethod::Shutdown => "fast shutdown",
        };
        format!("fence {} ({how})", target(&input.url, &input.name))
    }

    fn predict(input: &FenceInput) -> Fenced {
        Fenced {
            method: input.method,
            terminated: 0,
            lsn: None,
            already: false,
        }
    }

    fn predict_in(input: &FenceInput, world: &World) -> Option<Result<Fenced, ActionError>> {
        let place = world.database(&input.url)?;
        if place.database == Some(DbState::Standby) {
            return Some(Err(ActionError::permanent(format!(
                "{} is a standby, not a primary: nothing to fence ({})",
                place.name,
                world.why()
            ))));
        }
        Some(Ok(Fenced {
            method: input.method,
            terminated: 0,
            lsn: Some(lsn_text(world.lsn_of(place))),
            already: place.database == Some(DbState::Fenced),
        }))
    }

    async fn preview(input: FenceInput, cx: Cx) -> Option<String> {
        preview_status(&input.url, &input.name, &cx).await
    }

    async fn run(input: FenceInput, cx: Cx) -> Result<Fenced, ActionError> {
        match input.method {
            FenceMethod::ReadOnly => {
                let (client, target) = connect(&input.url, &input.name, &cx).await?;
                let before = status_of(&client, &target).await?;
                if before.in_recovery {
                    return Ok(Fenced {
                        method: input.method,
                        terminated: 0,
                        lsn: before.replay_lsn,
                        already: true,
                    });
                }
                // Who fenced it stays on the server beside the fence, so that status can name
                // the run to finish or undo.
                let mut statements = match &cx.invocation.run {
                    Some(run) => fenced_by(Some(run)),
                    None => vec![],
                };
                statements.push("ALTER SYSTEM SET default_transaction_read_only = on".into());
                alter_system(&client, &target, &statements).await?;
                // The reload reaches each backend at its next command: wait until a new
                // session sees it, then end the sessions that may still write.
                let deadline = Instant::now() + Duration::from_secs(10);
                loop {
                    let (probe, _) = connect_new(&input.url, &input.name, &cx).await?;
                    let row = json_row(
                        &probe,
                        &target,
                        "SELECT current_setting('default_transaction_read_only') AS v",
                    )
                    .await?;
                    if row["v"] == "on" {
                        break;
                    }
                    if Instant::now() > deadline {
                        return Err(ActionError::permanent(format!(
                            "{target}: the read-only setting did not take effect"
                        )));
                    }
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                let row = json_row(
                    &client,
                    &target,
                    "SELECT count(pg_terminate_backend(pid))::bigint AS terminated FROM pg_stat_activity
                     WHERE pid <> pg_backend_pid() AND backend_type = 'client backend'",
                )
                .await?;
                client
                    .batch_execute("CHECKPOINT")
                    .await
                    .map_err(|e| pg_error(&target, e, true))?;
                let lsn =
                    json_row(&client, &target, "SELECT pg_current_wal_lsn()::text AS lsn").await?;
                Ok(Fenced {
                    method: input.method,
                    terminated: row["terminated"].as_i64().unwrap_or(0),
                    lsn: lsn["lsn"].as_str().map(str::to_string),
                    already: before.read_only,
                })
            }
            FenceMethod::Shutdown => {
                let Some(data_dir) = input.data_dir.clone() else {
                    return Err(ActionError::permanent(
                        "method \"shutdown\" needs `data_dir`",
                    ));
                };
                let shown = target(&input.url, &input.name);
                let tools = tool::Tools {
                    bin_dir: &input.bin_dir,
                    os_user: &input.os_user,
                };
                let running = std::path::Path::new(&data_dir)
                    .join("postmaster.pid")
                    .exists();
                if running {
                    if let Ok((client, target)) = connect(&input.url, &input.name, &cx).await {
                        if status_of(&client, &target)
                            .await
                            .map(|s| s.in_recovery)
                            .unwrap_or(false)
                        {
                            return Err(ActionError::permanent(format!(
                                "{target} is a standby; fence the primary"
                            )));
                        }
                        let _ = client.batch_execute("CHECKPOINT").await;
                    }
                    let stop = ["stop", "-D", &data_dir, "-m", "fast", "-w"];
                    tools
                        .run("pg_ctl", &stop, None, cx.timeout)
                        .await?
                        .output(|why| format!("{shown}: pg_ctl stop failed: {why}"))?;
                }
                // The shutdown checkpoint is the last record: a standby past it has everything.
                let control = tools
                    .run("pg_controldata", &["-D", &data_dir], None, cx.timeout)
                    .await?
                    .output(|why| {
                        format!("{shown}: pg_controldata could not read {data_dir}: {why}")
                    })?;
                let lsn = control
                    .lines()
                    .find(|l| l.starts_with("Latest checkpoint location:"))
                    .and_then(|l| l.split(':').nth(1))
                    .map(|v| v.trim().to_string());
                Ok(Fenced {
                    method: input.method,
                    terminated: 0,
                    lsn,
                    already: !running,
                })
            }
        }
    }
}

// ---- slots, settings, roles ----------------------------------------------------------------

input! {
    pg:
    pub struct SlotInput {
        /// The physical replication slot's name.
        pub slot: String,
    }
}

impl SlotInput {
    fn describe(&self, verb: &str) -> String {
        let on = target(&self.url, &self.name);
        format!("{verb} replication slot {} on {on}", self.slot)
    }

    /// A dry-run's answer: the slot changed.
    fn changed(&self) -> SlotChange {
        SlotChange {
            slot: self.slot.clone(),
            changed: true,
        }
    }
}

/// What happened to the slot.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct SlotChange {
    /// The slot's name.
    pub slot: String,
    /// Whether this call changed anything (false: it already was so).
    pub changed: bool,
}

fn valid_name(kind: &str, name: &str) -> Result<(), ActionError> {
    let ok = !name.is_empty()
        && name.len() <= 63
        && name
            .chars()
            .next()
            .is_some_and(|c| c.is_ascii_lowercase() || c == '_')
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == '.');
    if ok {
        Ok(())
    } else {
        Err(ActionError::permanent(format!(
            "'{name}' is not a valid {kind} name (lower-case letters, digits, _)"
        )))
    }
}

action! {
    /// Create a physical replication slot on the primary (a no-op when it exists).
    CreateReplicationSlot(SlotInput) -> SlotChange =
        Spec::converge("pg", "create_replication_slot").timeout(30)
}

impl Action for CreateReplicationSlot {
    fn describe(input: &SlotInput) -> String {
        input.describe("create")
    }

    fn predict(input: &SlotInput) -> SlotChange {
        input.changed()
    }

    async fn run(input: SlotInput, cx: Cx) -> Result<SlotChange, ActionError> {
        valid_name("slot", &input.slot)?;
        let (client, target) = connect(&input.url, &input.name, &cx).await?;
        let exists = !json_rows(
            &client,
            &target,
            "SELECT 1 AS one FROM pg_replication_slots WHERE slot_name = $1",
            &[Some(input.slot.clone())],
        )
        .await?
        .is_empty();
        if !exists {
            client
                .execute(
                    "SELECT pg_create_physical_replication_slot($1, true)",
                    &[&input.slot],
                )
                .await
                .map_err(|e| pg_error(&target, e, true))?;
        }
        Ok(SlotChange {
            slot: input.slot,
            changed: !exists,
        })
    }
}

action! {
    /// Drop a replication slot (a no-op when it does not exist; refused while a standby uses it).
    DropReplicationSlot(SlotInput) -> SlotChange =
        Spec::converge("pg", "drop_replication_slot").timeout(30)
}

impl Action for DropReplicationSlot {
    fn describe(input: &SlotInput) -> String {
        input.describe("drop")
    }

    fn predict(input: &SlotInput) -> SlotChange {
        input.changed()
    }

    async fn run(input: SlotInput, cx: Cx) -> Result<SlotChange, ActionError> {
        let (client, target) = connect(&input.url, &input.name, &cx).await?;
        let rows = json_rows(
            &client,
            &target,
            "SELECT active, active_pid FROM pg_replication_slots WHERE slot_name = $1",
            &[Some(input.slot.clone())],
        )
        .await?;
        let Some(row) = rows.first() else {
            return Ok(SlotChange {
                slot: input.slot,
                changed: false,
            });
        };
        if row["active"] == true {
            return Err(ActionError::permanent(format!(
                "{target}: slot {} is in use by process {}; stop or repoint its standby first",
                input.slot, row["active_pid"]
            )));
        }
        client
            .execute("SELECT pg_drop_replication_slot($1)", &[&input.slot])
            .await
            .map_err(|e| pg_error(&target, e, true))?;
        Ok(SlotChange {
            slot: input.slot,
            changed: true,
        })
    }
}

input! {
    pg:
    pub struct SetConfigInput {
        /// The setting, e.g. "wal_level".
        pub setting: String,
        /// Its new value, e.g. "replica".
        pub value: String,
    }
}

/// A setting after ALTER SYSTEM and a reload.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct ConfigChange {
    /// The setting.
    pub setting: String,
    /// The value in effect before.
    pub previous: String,
    /// The value asked for.
    pub value: String,
    /// Whether postgresql.auto.conf changed.
    pub changed: bool,
    /// The new value waits for a server restart.
    pub restart_required: bool,
}

async fn setting_row(client: &Client, target: &str, name: &str) -> Result<Value, ActionError> {
    json_rows(
        client,
        target,
        "SELECT setting, current_setting(name) AS shown, context, pending_restart FROM pg_settings WHERE name = $1",
        &[Some(name.to_string())],
    )
    .await?
    .pop()
    .ok_or_else(|| ActionError::permanent(format!("{target}: unknown setting '{name}'")))
}

action! {
    /// ALTER SYSTEM SET a setting and reload; reports whether it needs a restart to take effect.
    SetConfig(SetConfigInput) -> ConfigChange = Spec::converge("pg", "set_config").timeout(30)
}

impl Action for SetConfig {
    fn describe(input: &SetConfigInput) -> String {
        format!(
            "set {} = '{}' on {}",
            input.setting,
            input.value,
            target(&input.url, &input.name)
        )
    }

    fn predict(input: &SetConfigInput) -> ConfigChange {
        ConfigChange {
            setting: input.setting.clone(),
            previous: String::new(),
            value: input.value.clone(),
            changed: true,
            restart_required: false,
        }
    }

    async fn preview(input: SetConfigInput, cx: Cx) -> Option<String> {
        let (client, target) = connect(&input.url, &input.name, &cx).await.ok()?;
        let row = setting_row(&client, &target, &input.setting).await.ok()?;
        Some(format!("now '{}'", row["shown"].as_str().unwrap_or("")))
    }

    async fn run(input: SetConfigInput, cx: Cx) -> Result<ConfigChange, ActionError> {
        valid_name("setting", &input.setting)?;
        let (client, target) = connect(&input.url, &input.name, &cx).await?;
        let before = setting_row(&client, &target, &input.setting).await?;
        let file_value = json_rows(
            &client,
            &target,
            "SELECT setting FROM pg_file_settings WHERE name = $1 AND sourcefile LIKE '%postgresql.auto.conf' AND applied IS NOT NULL ORDER BY seqno DESC LIMIT 1",
            &[Some(input.setting.clone())],
        )
        .await
        .ok()
        .and_then(|mut r| r.pop())
        .and_then(|r| r["setting"].as_str().map(str::to_string));
        let changed = file_value.as_deref() != Some(input.value.as_str());
        let mut statements = vec![];
        if changed {
            statements.push(format!(
                "ALTER SYSTEM SET {} = {}",
                input.setting,
                quote_literal(&input.value)
            ));
        }
        // Lifting a fence also forgets which run set it (pg::fence).
        let unfence = input.setting == "default_transaction_read_only"
            && matches!(
                input.value.to_ascii_lowercase().as_str(),
                "off" | "false" | "no" | "0"
            );
        if unfence {
            statements.extend(fenced_by(None));
        }
        if !statements.is_empty() {
            alter_system(&client, &target, &statements).await?;
        }
        // The reload is asynchronous: wait (briefly) for it to show in pg_settings.
        let deadline = Instant::now() + Duration::from_secs(1);
        let mut after = setting_row(&client, &target, &input.setting).await?;
        while Instant::now() < deadline {
            let (fresh, _) = connect_new(&input.url, &input.name, &cx).await?;
            after = setting_row(&fresh, &target, &input.setting).await?;
            if !changed
                || after["pending_restart"] == true
                || after["setting"] != before["setting"]
                || after["setting"] == input.value.as_str()
            {
                break;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        let restart_required = after["pending_restart"] == true;
        Ok(ConfigChange {
            setting: input.setting,
            previous: before["shown"].as_str().unwrap_or("").to_string(),
            value: input.value,
            changed,
            restart_required,
        })
    }
}

input! {
    pg:
    pub struct CreateRoleInput {
        /// The role's name, e.g. "replicator".
        pub role: String,
        /// Its password (a secret); set again when the role exists.
        pub password: Option<SecretString>,
        /// May it log in (default true).
        #[serde(default = "crate::action::types::yes")]
        pub login: bool,
        /// May it stream replication (default false).
        #[serde(default)]
        pub replication: bool,
    }
}

/// The role after the call.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct RoleChange {
    /// The role's name.
    pub role: String,
    /// Whether it was created (false: it existed and was altered to match).
    pub created: bool,
}

action! {
    /// Create a role, or alter an existing one to match (login, replication, password).
    CreateRole(CreateRoleInput) -> RoleChange = Spec::converge("pg", "create_role").timeout(30)
}

impl Action for CreateRole {
    fn describe(input: &CreateRoleInput) -> String {
        let mut attrs = vec![if input.login { "LOGIN" } else { "NOLOGIN" }];
        if input.replication {
            attrs.push("REPLICATION");
        }
        if input.password.is_some() {
            attrs.push("PASSWORD ***");
        }
        format!(
            "role {} {} on {}",
            input.role,
            attrs.join(" "),
            target(&input.url, &input.name)
        )
    }

    fn predict(input: &CreateRoleInput) -> RoleChange {
        RoleChange {
            role: input.role.clone(),
            created: true,
        }
    }

    async fn run(input: CreateRoleInput, cx: Cx) -> Result<RoleChange, ActionError> {
        let (client, target) = connect(&input.url, &input.name, &cx).await?;
        let exists = !json_rows(
            &client,
            &target,
            "SELECT 1 AS one FROM pg_roles WHERE rolname = $1",
            &[Some(input.role.clone())],
        )
        .await?
        .is_empty();
        let mut sql = format!(
            "{} ROLE {} WITH {} {}",
            if exists { "ALTER" } else { "CREATE" },
            quote_ident(&input.role),
            if input.login { "LOGIN" } else { "NOLOGIN" },
            if input.replication {
                "REPLICATION"
            } else {
                "NOREPLICATION"
            },
        );
        if let Some(pw) = &input.password {
            sql.push_str(&format!(
                " PASSWORD {}",
                quote_literal(&pw.reveal().map_err(ActionError::permanent)?)
            ));
        }
        client
            .batch_execute(&sql)
            .await
            .map_err(|e| pg_error(&target, e, true))?;
        Ok(RoleChange {
            role: input.role,
            created: !exists,
        })
    }
}

// ---- repoint -------------------------------------------------------------------------------

input! {
    pg:
    pub struct RepointInput {
        /// The new primary it should stream from (usually a secret; its user and password are used).
        pub primary_url: SecretString,
        /// The replication slot on the new primary (create it first with create_replication_slot).
        pub slot: Option<String>,
        /// The name the standby reports to the primary (default: its name, or "replica").
        pub application_name: Option<String>,
    }
}

/// A repointed standby.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct Repointed {
    /// False when it already streamed from that primary.
    pub changed: bool,
    /// host:port it streams from now.
    pub upstream: String,
}

pub(crate) fn conninfo_value(v: &str) -> String {
    format!("'{}'", v.replace('\\', "\\\\").replace('\'', "\\'"))
}

action! {
    /// Make a standby stream from another primary (primary_conninfo and slot, reloaded), waiting
    /// until it streams; a no-op when it already does.
    Repoint(RepointInput) -> Repointed = Spec::converge("pg", "repoint")
}

impl Action for Repoint {
    fn describe(input: &RepointInput) -> String {
        format!(
            "make {} stream from {}",
            target(&input.url, &input.name),
            target(&input.primary_url, &None)
        )
    }

    fn predict(input: &RepointInput) -> Repointed {
        Repointed {
            changed: true,
            upstream: target(&input.primary_url, &None),
        }
    }

    async fn preview(input: RepointInput, cx: Cx) -> Option<String> {
        let (client, target) = connect(&input.url, &input.name, &cx).await.ok()?;
        let s = status_of(&client, &target).await.ok()?;
        Some(format!(
            "now streaming from {}",
            s.upstream.unwrap_or_else(|| "nothing".into())
        ))
    }

    async fn run(input: RepointInput, cx: Cx) -> Result<Repointed, ActionError> {
        let started = Instant::now();
        let raw = input.primary_url.reveal().map_err(ActionError::permanent)?;
        let (rest, ssl) = crate::tls::split_pg(&raw)
            .map_err(|e| ActionError::permanent(format!("{}: {e}", input.primary_url.shown())))?;
        let base = rest.split('?').next().unwrap_or(&rest);
        let primary = tokio_postgres::Config::from_str(base).map_err(|e| {
            ActionError::permanent(format!(
                "{}: not a PostgreSQL connection string: {e}",
                input.primary_url.shown()
            ))
        })?;
        let host = match primary.get_hosts().first() {
            Some(tokio_postgres::config::Host::Tcp(h)) => h.clone(),
            _ => {
                return Err(ActionError::permanent(
                    "the new primary must be reached over TCP (host and port)",
                ))
            }
        };
        let port = primary.get_ports().first().copied().unwrap_or(5432);
        let upstream = format!("{host}:{port}");
        let (client, target) = connect(&input.url, &input.name, &cx).await?;
        let s = status_of(&client, &target).await?;
        if !s.in_recovery {
            return Err(ActionError::permanent(format!(
                "{target} is not a standby; a former primary must be rewound (pg_rewind) before it can follow another"
            )));
        }
        let slot_now = json_row(
            &client,
            &target,
            "SELECT current_setting('primary_slot_name') AS slot",
        )
        .await?;
        let same_slot =
            slot_now["slot"].as_str().unwrap_or("") == input.slot.as_deref().unwrap_or("");
        if s.upstream.as_deref() == Some(upstream.as_str())
            && s.wal_receiver.as_deref() == Some("streaming")
            && same_slot
        {
            return Ok(Repointed {
                changed: false,
                upstream,
            });
        }
        let app = input
            .application_name
            .clone()
            .or_else(|| input.name.clone())
            .unwrap_or_else(|| "replica".into());
        let mut conninfo = format!(
            "host={} port={port} application_name={}",
            conninfo_value(&host),
            conninfo_value(&app)
        );
        if let Some(user) = primary.get_user() {
            conninfo.push_str(&format!(" user={}", conninfo_value(user)));
        }
        if let Some(pw) = primary.get_password() {
            conninfo.push_str(&format!(
                " password={}",
                conninfo_value(&String::from_utf8_lossy(pw))
            ));
        }
        conninfo.push_str(&ssl.conninfo());
        let statements = [
            format!(
                "ALTER SYSTEM SET primary_conninfo = {}",
                quote_literal(&conninfo)
            ),
            format!(
                "ALTER SYSTEM SET primary_slot_name = {}",
                quote_literal(input.slot.as_deref().unwrap_or(""))
            ),
            "SELECT pg_reload_conf()".to_string(),
        ];
        for sql in &statements {
            client
                .batch_execute(sql)
                .await
                .map_err(|e| pg_error(&target, e, true))?;
        }
        loop {
            let (fresh, _) = connect_new(&input.url, &input.name, &cx).await?;
            let now = status_of(&fresh, &target).await?;
            if now.upstream.as_deref() == Some(upstream.as_str())
                && now.wal_receiver.as_deref() == Some("streaming")
            {
                return Ok(Repointed {
                    changed: true,
                    upstream,
                });
            }
            if started.elapsed() > cx.timeout {
                return Err(ActionError::permanent(format!(
                    "{target} does not stream from {upstream} {} after the change (receiver: {}, upstream: {})",
                    humantime::format_duration(Duration::from_secs(cx.timeout.as_secs())),
                    now.wal_receiver.unwrap_or_else(|| "none".into()),
                    now.upstream.unwrap_or_else(|| "none".into())
                )));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}
