//! What the servers say: the observed topology of a deployment, region by region, and the
//! anomalies found in it. Built by `probe` (I/O), judged by `rules` (pure), drawn by `render`.

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// A region's database as it answered (or did not).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct Database {
    /// Whether the probe could read it.
    pub reachable: bool,
    /// Why not, when it could not.
    pub error: Option<String>,
    /// "primary", "standby", "unreachable" (no answer, or starting up, shutting down or
    /// recovering from a crash), "refused" (it answered but would not let the engine in: a
    /// login it refused, a database it does not have, too many connections; up, maybe serving
    /// others, and what it is unknown) or "absent" (no database_url in the inventory).
    pub role: String,
    /// A primary that accepts writes (not in recovery, default_transaction_read_only off).
    pub writable: bool,
    /// default_transaction_read_only is on (a fenced primary).
    pub read_only: bool,
    /// For a fenced primary: the run that fenced it, "ID of RUNBOOK", as pg::fence left it on
    /// the server.
    pub fenced_by: Option<String>,
    /// The timeline it is on.
    pub timeline: Option<i64>,
    /// A primary's current WAL position.
    pub current_lsn: Option<String>,
    /// A standby's last received WAL position.
    pub receive_lsn: Option<String>,
    /// A standby's last replayed WAL position.
    pub replay_lsn: Option<String>,
    /// A standby's WAL receiver state ("streaming", ...); null when none runs.
    pub wal_receiver: Option<String>,
    /// host:port the standby streams from (or is configured to, when its receiver is down).
    pub upstream: Option<String>,
    /// The region whose database that is (matched by host and port against the inventory).
    pub upstream_region: Option<String>,
    /// Bytes behind the current primary (same timeline only; null when unknown).
    pub lag_bytes: Option<i64>,
    /// "acceptable" (< 100 MB), "elevated", "warning" (> 500 MB) or "critical" (> 1 GB).
    pub lag_severity: Option<String>,
    /// Replication slots on this server.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub slots: Vec<SlotView>,
    /// Standbys connected to this server (application_name → state).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub replicas: BTreeMap<String, String>,
    /// wal_log_hints is on (what pg_rewind needs, unless data checksums are).
    pub wal_log_hints: bool,
    /// Data checksums are on.
    pub data_checksums: bool,
    /// Settings changed but waiting for a restart.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub pending_restart: Vec<String>,
    /// For a database that does not answer but whose data directory is on this host: its
    /// state as pg_controldata reads it ("shut down", "in production", ...).
    pub stopped_state: Option<String>,
    /// For such a database: where its WAL on disk ends (the last valid record's end).
    pub wal_end_lsn: Option<String>,
    /// When the server process started (pg_postmaster_start_time, to the microsecond): the
    /// same under two regions' addresses means one server named twice.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub server_start: Option<String>,
    /// Copies of its data directory that rejoins kept beside it (when the data directory is
    /// on this host), oldest first: each holds what a rewind or a base backup took out of it.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub kept_copies: Vec<KeptCopy>,
}

/// What made a copy kept beside a data directory.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize, schemars::JsonSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum KeptBy {
    /// A rewind that took committed transactions out (`NAME.before-rewind-<time>`).
    Rewind,
    /// A base backup that replaced the directory (`NAME.replaced-<secs>`).
    BaseBackup,
    /// A rewind's copy cut off half-way (`….partial`): nothing whole in it; the next rewind
    /// removes it.
    CutOff,
}

impl KeptBy {
    /// As messages say it.
    pub fn label(self) -> &'static str {
        match self {
            KeptBy::Rewind => "rewind",
            KeptBy::BaseBackup => "base backup",
            KeptBy::CutOff => "cut-off rewind",
        }
    }
}

/// A copy of a data directory kept beside it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct KeptCopy {
    /// Where it is.
    pub path: String,
    /// What made it: "rewind", "base_backup", or "cut_off" (a rewind's copy left half-way,
    /// with nothing whole in it; the next rewind removes it).
    pub made_by: KeptBy,
    /// When, RFC 3339 UTC.
    pub made_at: String,
    /// Bytes in its files (null when it cannot be read here).
    pub bytes: Option<u64>,
    /// The count stopped at its time limit: `bytes` is a lower bound.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub counted_in_part: bool,
}

impl Database {
    /// What a standby streams from: the region of its upstream, else the upstream's host:port.
    pub fn source(&self) -> Option<String> {
        self.upstream_region
            .clone()
            .or_else(|| self.upstream.clone())
    }
}

/// A replication slot.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct SlotView {
    /// The slot's name.
    pub name: String,
    /// Whether a standby streams through it now.
    pub active: bool,
}

/// A region's Redis.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct Cache {
    /// Whether the probe could read it.
    pub reachable: bool,
    /// Why not, when it could not.
    pub error: Option<String>,
    /// "master", "replica", "unreachable" (no answer), "refused" (up, but it refuses the
    /// engine: a password it rejects, say) or "absent".
    pub role: String,
    /// A replica's master, host:port.
    pub master: Option<String>,
    /// The region that master is in.
    pub master_region: Option<String>,
    /// A replica's link: "up" or "down".
    pub link: Option<String>,
    /// Its replication offset.
    pub offset: i64,
    /// The server process's run_id: the same under two regions means one server named twice.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub run_id: Option<String>,
}

/// A region's health endpoint.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct Health {
    /// Whether it was probed at all (a health_url is in the inventory).
    pub checked: bool,
    /// Answered 2xx within 10 s (and within the probe's limit).
    pub ok: bool,
    /// The HTTP status it answered.
    pub status: Option<u16>,
    /// How long the answer took.
    pub latency_ms: Option<u64>,
    /// Why it did not answer.
    pub error: Option<String>,
}

/// A region's application (its Kubernetes deployment).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct App {
    /// Whether it was read at all (the inventory names its context and deployment).
    pub checked: bool,
    /// Whether its Kubernetes API answered.
    pub reachable: bool,
    /// Why not, when it did not.
    pub error: Option<String>,
    /// spec.replicas.
    pub replicas: i64,
    /// status.readyReplicas.
    pub ready: i64,
    /// The DATABASE_URL it runs with, password masked.
    pub database_url: Option<String>,
    /// The region whose database that URL reaches.
    pub database_region: Option<String>,
    /// How many nodes its cluster has (null when they could not be listed).
    pub nodes: Option<i64>,
    /// How many of them are cordoned (spec.unschedulable): a new pod cannot land there.
    pub cordoned: Option<i64>,
    /// The names of the cordoned nodes.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub cordoned_nodes: Vec<String>,
    /// kubectl's options that reach its cluster (`--kubeconfig FILE --context NAME`), for
    /// the commands the anomalies spell.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kubectl: Option<String>,
    /// The Deployment's metadata.uid: the same under two regions means one object named twice.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uid: Option<String>,
}

impl App {
    /// Every node of its cluster is cordoned: pods scaled up or evicted there stay pending.
    pub fn all_cordoned(&self) -> bool {
        matches!((self.nodes, self.cordoned), (Some(n), Some(c)) if n > 0 && c >= n)
    }
}

/// One region as observed.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct Region {
    /// Its PostgreSQL.
    pub database: Database,
    /// Its Redis.
    pub redis: Cache,
    /// Its health endpoint.
    pub health: Health,
    /// Its application.
    pub app: App,
    /// Its weight in the weighted DNS record (null without DNS or without a record for it).
    pub dns_weight: Option<i64>,
}

#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize, JsonSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    Info,
    Warning,
    Critical,
}

impl Severity {
    pub fn label(self) -> &'static str {
        match self {
            Severity::Info => "INFO",
            Severity::Warning => "WARNING",
            Severity::Critical => "CRITICAL",
        }
    }
}

/// Something wrong (or worth knowing) in the topology.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct Anomaly {
    /// "critical", "warning" or "info".
    pub severity: Severity,
    /// A stable name: two_primaries, no_primary, standby_not_streaming, wrong_upstream,
    /// old_timeline, fenced_primary, database_unreachable, replication_lag, traffic_to_unready,
    /// no_traffic, app_wrong_database, inventory_disagrees, rewind_not_ready,
    /// pending_restart, redis_masters, redis_link_down, redis_wrong_master, redis_unreachable,
    /// health_failing, app_unreachable, dns_unreadable, same_server, kept_copies,
    /// primary_unknown, database_refused, redis_refused.
    pub code: String,
    /// The region it is about, when there is one.
    pub region: Option<String>,
    /// What is wrong, in a sentence.
    pub message: String,
    /// What to do about it.
    pub fix: Option<String>,
}

/// The observed topology.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct Topology {
    /// The one writable primary's region; null when there is none or more than one.
    pub primary: Option<String>,
    /// Every region whose database accepts writes.
    pub writable: Vec<String>,
    /// Among several writable primaries, the one on the newest timeline (the others are
    /// former primaries that came back); null when timelines do not tell them apart.
    pub newest_primary: Option<String>,
    /// The region the standbys stream from (or are configured to): the primary as the
    /// replicas know it, even when it does not answer.
    pub followed: Option<String>,
    /// What the inventory's primary_region says.
    pub inventory_primary: Option<String>,
    /// Each region as observed.
    pub regions: BTreeMap<String, Region>,
    /// Why the DNS weights could not be read, when they could not.
    pub dns_error: Option<String>,
    /// Regions whose inventory entries reach one server (a region's block copied and one URL
    /// left unchanged): each such region's own server goes unobserved.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub same_server: Vec<SameServer>,
    /// Worst first.
    pub anomalies: Vec<Anomaly>,
    /// "ok", "info", "warning" or "critical": the worst anomaly.
    pub worst: String,
    /// Whether any anomaly is critical.
    pub critical: bool,
    /// The picture as a table a person reads, then the anomalies.
    pub table: String,
    /// How the run observing was started: the anomalies' commands spell its runbook folder,
    /// inventory and store options.
    #[serde(skip)]
    #[schemars(skip)]
    pub commands: std::sync::Arc<crate::action::Invocation>,
}

/// Regions that reach one server or application.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct SameServer {
    /// "database", "redis" or "application".
    pub part: String,
    /// The regions, by name.
    pub regions: Vec<String>,
    /// How it is known: the same address, or the same server start time or Deployment uid
    /// under two addresses.
    pub how: String,
}

impl Topology {
    pub fn region(&self, name: &str) -> Option<&Region> {
        self.regions.get(name)
    }

    /// The regions whose database has this role ("primary", "refused", ...), by name.
    pub fn with_database(&self, role: &str) -> Vec<&String> {
        self.regions
            .iter()
            .filter(|(_, r)| r.database.role == role)
            .map(|(n, _)| n)
            .collect()
    }
}

/// A WAL position ("16/B374D848") as a byte offset.
pub fn lsn(text: &str) -> Option<u64> {
    let (hi, lo) = text.trim().split_once('/')?;
    Some((u64::from_str_radix(hi, 16).ok()? << 32) + u64::from_str_radix(lo, 16).ok()?)
}

/// A byte offset as a WAL position.
pub fn lsn_text(pos: u64) -> String {
    format!("{:X}/{:X}", pos >> 32, pos & 0xffff_ffff)
}
