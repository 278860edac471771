//! `topology::` — what the servers say the deployment is. The inventory says where things are;
//! these actions ask every region's database, Redis, health endpoint, application and DNS
//! weight what they are, name what is wrong, and check a procedure's postcondition.

pub mod model;
mod probe;
mod render;
pub mod rules;

use std::collections::BTreeMap;
use std::time::Duration;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::world::{DbState, HealthState, KubeState, RedisState, World};
use super::{Action, ActionError, Cx, Dur, Poll, Spec};
use crate::secret::SecretString;
pub use model::Topology;

/// The parts of an inventory the topology reads; other keys are ignored.
#[derive(Debug, Clone, Default, Serialize, Deserialize, JsonSchema)]
pub struct InventoryView {
    /// What the inventory believes; compared with what the servers say.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub primary_region: Option<String>,
    /// Region name → where its parts are.
    #[serde(default)]
    pub regions: BTreeMap<String, RegionTargets>,
    /// The weighted DNS record.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dns: Option<DnsTargets>,
    /// The shared kubeconfig.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub k8s: Option<KubeTargets>,
    /// Where the PostgreSQL tools are.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub postgres: Option<PgTools>,
}

/// One region of the inventory (other keys are ignored).
#[derive(Debug, Clone, Default, Serialize, Deserialize, JsonSchema)]
pub struct RegionTargets {
    /// Its PostgreSQL (usually a secret).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub database_url: Option<SecretString>,
    /// Its Redis (usually a secret).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub redis_url: Option<SecretString>,
    /// How the other regions' Redis reach this one (to name a replica's master).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub redis_host: Option<String>,
    /// The port that goes with redis_host.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub redis_port: Option<u16>,
    /// Its health endpoint.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub health_url: Option<SecretString>,
    /// Its kubeconfig context.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub context: Option<String>,
    /// Its application's namespace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    /// Its application's Deployment.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deployment: Option<String>,
    /// This region's kubeconfig (default: the [k8s] one).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kubeconfig: Option<String>,
    /// The database's data directory, when it is on this host: lets a stopped server's WAL
    /// end be read (an exact data-loss bound) and pg_rewind run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pg_data_dir: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct DnsTargets {
    /// The hosted zone, by id or name.
    pub zone: String,
    /// The weighted record: one record set per region, its set identifier the region's name.
    pub record: String,
    /// Another endpoint for the Route53 API (moto, LocalStack).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub endpoint_url: Option<String>,
    /// The AWS region for signing.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub region: Option<String>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, JsonSchema)]
pub struct KubeTargets {
    /// The kubeconfig file (default: $KUBECONFIG or ~/.kube/config).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kubeconfig: Option<String>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, JsonSchema)]
pub struct PgTools {
    /// The folder holding pg_controldata and pg_waldump.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bin_dir: Option<String>,
    /// The data directories' owner.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub os_user: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ObserveInput {
    /// The inventory (pass `inventory`): its regions' databases, Redis, health URLs,
    /// Kubernetes deployments, and its DNS record.
    #[serde(deserialize_with = "with_regions")]
    pub inventory: InventoryView,
    /// The time limit of each probe (default "3s"); a part that does not answer within it is
    /// observed as unreachable.
    #[serde(default = "Dur::ms::<3000>")]
    pub probe_timeout: Dur,
}

/// The keys of the inventory the topology reads, table by table: `""` the top level,
/// `regions.*` each region, then `dns`, `k8s` and `postgres`. The inventory refuses a key
/// close to one of these in their place (`inventory::misspelt`): the typed view would read it
/// as not set, and a region's database would go unobserved.
pub fn inventory_keys() -> Vec<(&'static str, Vec<String>)> {
    fn keys<T: JsonSchema>() -> Vec<String> {
        schemars::schema_for!(T)
            .schema
            .object
            .map(|o| o.properties.keys().cloned().collect())
            .unwrap_or_default()
    }
    vec![
        ("", keys::<InventoryView>()),
        ("regions.*", keys::<RegionTargets>()),
        ("dns", keys::<DnsTargets>()),
        ("k8s", keys::<KubeTargets>()),
        ("postgres", keys::<PgTools>()),
    ]
}

/// An inventory that names at least one region: with none there is nothing to observe, and
/// "no database accepts writes" would be a false alarm (a runbook run without `-i`).
fn with_regions<'de, D: serde::Deserializer<'de>>(d: D) -> Result<InventoryView, D::Error> {
    let inv = InventoryView::deserialize(d)?;
    if inv.regions.is_empty() {
        return Err(serde::de::Error::custom(
            "the inventory names no region (no [regions.NAME] table): was it given with -i FILE?",
        ));
    }
    Ok(inv)
}

fn regions_line(inv: &InventoryView) -> String {
    inv.regions.keys().cloned().collect::<Vec<_>>().join(", ")
}

/// A dry-run's picture without servers (`--offline`): the inventory's primary is the primary,
/// the other regions stream from it at lag 0, everything is healthy and ready.
fn predicted(inv: &InventoryView) -> Topology {
    let value = serde_json::to_value(inv).unwrap_or_default();
    imagined(&World::of_inventory(&value), inv)
}

/// What the probes would see in an assumed world.
fn imagined(world: &World, inv: &InventoryView) -> Topology {
    let dns = inv.dns.is_some();
    let mut t = Topology {
        inventory_primary: world.inventory_primary.clone(),
        ..Default::default()
    };
    let why = world.why();
    for (name, p) in &world.regions {
        let lsn = model::lsn_text(world.lsn_of(p));
        let database = match p.database {
            None => model::Database {
                role: "absent".into(),
                ..Default::default()
            },
            Some(DbState::Down) => model::Database {
                role: "unreachable".into(),
                error: Some(why.clone()),
                ..Default::default()
            },
            Some(state @ (DbState::Primary | DbState::Fenced)) => model::Database {
                reachable: true,
                role: "primary".into(),
                writable: state == DbState::Primary,
                read_only: state == DbState::Fenced,
                timeline: Some(p.timeline),
                current_lsn: Some(lsn),
                wal_log_hints: true,
                ..Default::default()
            },
            Some(DbState::Standby) => model::Database {
                reachable: true,
                role: "standby".into(),
                timeline: Some(p.timeline),
                receive_lsn: Some(lsn.clone()),
                replay_lsn: Some(lsn),
                wal_receiver: world.streaming(p).then(|| "streaming".into()),
                upstream: p.upstream.as_deref().map(|u| world.database_host(u)),
                upstream_region: p.upstream.clone(),
                wal_log_hints: true,
                ..Default::default()
            },
        };
        let master = world.redis_master().map(|m| m.name.clone());
        let redis = match p.redis {
            None => model::Cache {
                role: "absent".into(),
                ..Default::default()
            },
            Some(RedisState::Down) => model::Cache {
                role: "unreachable".into(),
                error: Some(why.clone()),
                ..Default::default()
            },
            Some(RedisState::Primary) => model::Cache {
                reachable: true,
                role: "master".into(),
                ..Default::default()
            },
            Some(RedisState::Replica) => {
                let up = master
                    .as_ref()
                    .and_then(|m| world.regions.get(m))
                    .is_some_and(|m| m.redis == Some(RedisState::Primary));
                model::Cache {
                    reachable: true,
                    role: "replica".into(),
                    master_region: master.clone(),
                    link: Some(if up { "up" } else { "down" }.into()),
                    ..Default::default()
                }
            }
        };
        let health = match p.health {
            None => model::Health::default(),
            Some(HealthState::Ok) => model::Health {
                checked: true,
                ok: true,
                status: Some(200),
                latency_ms: Some(0),
                error: None,
            },
            Some(HealthState::Slow) => model::Health {
                checked: true,
                ok: false,
                status: Some(200),
                latency_ms: Some(15_000),
                error: Some(format!("answered after 15 s ({why})")),
            },
            Some(HealthState::Failing) => model::Health {
                checked: true,
                ok: false,
                status: Some(503),
                latency_ms: Some(0),
                error: None,
            },
            Some(HealthState::Down) => model::Health {
                checked: true,
                ok: false,
                status: None,
                latency_ms: None,
                error: Some(format!("does not answer ({why})")),
            },
        };
        let writable = world
            .regions
            .values()
            .filter(|r| r.database == Some(DbState::Primary))
            .max_by_key(|r| r.timeline)
            .map(|r| r.name.clone());
        let app = match (p.app, p.kubernetes) {
            (false, _) => model::App::default(),
            (true, KubeState::Down) => model::App {
                checked: true,
                error: Some(format!("the Kubernetes API does not answer ({why})")),
                ..Default::default()
            },
            (true, KubeState::Ok) => model::App {
                checked: true,
                reachable: true,
                replicas: p.app_replicas,
                ready: p.ready_replicas,
                database_url: Some("(assumed)".into()),
                database_region: writable.clone(),
                error: None,
                // Unknown unless the scenario says, as when they cannot be listed.
                nodes: p.nodes.map(|(n, _)| n),
                cordoned: p.nodes.map(|(_, c)| c),
                // An assumed world names no node and no cluster to spell a command for.
                cordoned_nodes: Vec::new(),
                kubectl: None,
                uid: None,
            },
        };
        t.regions.insert(
            name.clone(),
            model::Region {
                database,
                redis,
                health,
                app,
                dns_weight: dns.then_some(p.dns_weight),
            },
        );
    }
    t.same_server = rules::same_servers(&probe::addresses(inv), &t.regions);
    t.commands = world.commands.clone();
    settle(&mut t);
    t
}

/// Derives, judges and draws an observation.
fn settle(t: &mut Topology) {
    rules::derive(t, &rules::Thresholds::default());
    rules::judge(t);
    t.table = render::table(t);
}

/// Observes every region now (`runbook watch`): what `topology::observe` returns.
/// The copies kept beside data directories are not looked for: a watcher decides nothing
/// by them, and walks no directory every interval.
pub async fn observe_now(inv: &InventoryView, probe_timeout: Duration, cx: &Cx) -> Topology {
    observe(inv, probe_timeout, cx, probe::Disk::Skip).await
}

async fn observe(
    inv: &InventoryView,
    probe_timeout: Duration,
    cx: &Cx,
    disk: probe::Disk,
) -> Topology {
    let cx = Cx {
        timeout: probe_timeout,
        ..cx.clone()
    };
    let mut t = probe::observe(inv, &cx, disk).await;
    t.commands = cx.invocation.clone();
    settle(&mut t);
    t
}

action! {
    /// Ask every region of the inventory what it is: database role, timeline, WAL positions,
    /// upstream and lag; Redis role and master; health; the app's ready replicas and the database
    /// it uses; DNS weight. Returns the picture, the primary (null when none or ambiguous), the
    /// anomalies with their severity, and a table to print.
    Observe(ObserveInput) -> Topology =
        Spec::read("topology", "observe").primary("inventory").timeout(60).retries(0)
}

impl Action for Observe {
    fn describe(input: &ObserveInput) -> String {
        format!("observe {}", regions_line(&input.inventory))
    }

    fn predict(input: &ObserveInput) -> Topology {
        predicted(&input.inventory)
    }

    fn predict_in(input: &ObserveInput, world: &World) -> Option<Result<Topology, ActionError>> {
        Some(Ok(imagined(world, &input.inventory)))
    }

    async fn run(input: ObserveInput, cx: Cx) -> Result<Topology, ActionError> {
        Ok(observe(
            &input.inventory,
            input.probe_timeout.0,
            &cx,
            probe::Disk::KeptCopies,
        )
        .await)
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct VerifyInput {
    /// The inventory (pass `inventory`).
    #[serde(deserialize_with = "with_regions")]
    pub inventory: InventoryView,
    /// The region whose database must be the one writable primary.
    pub primary: String,
    /// Regions whose databases must be standbys streaming from it (any other standby that
    /// answers must stream from it too; a database that does not answer is allowed unless it
    /// is named here).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub standbys: Vec<String>,
    /// Standbys this run leaves as it found them, such as those that followed a former
    /// primary it rejoined: not streaming from the primary is not a failure for them (they
    /// still must not be writable). A region also in `standbys` is required.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub excused: Vec<String>,
    /// How long to wait for the postcondition to hold (default "60s").
    #[serde(default = "Dur::ms::<60000>")]
    pub within: Dur,
    /// Time between observations (default "500ms").
    #[serde(default = "Dur::ms::<500>")]
    pub interval: Dur,
    /// The time limit of each probe (default "3s").
    #[serde(default = "Dur::ms::<3000>")]
    pub probe_timeout: Dur,
}

action! {
    /// A write procedure's postcondition, observed: exactly one writable primary (the one named);
    /// every standby that answers (and every one named) streaming from it; Redis following it; DNS
    /// weight only on regions with ready replicas that pass their health check; running apps using
    /// the primary (or their own region's standby). Waits up to `within` for it to hold, then fails
    /// listing what does not.
    Verify(VerifyInput) -> Topology = Spec::read("topology", "verify").timeout(600).retries(0)
}

impl Action for Verify {
    fn describe(input: &VerifyInput) -> String {
        let standbys = if input.standbys.is_empty() {
            String::new()
        } else {
            format!(", {} streaming from it", input.standbys.join(", "))
        };
        format!(
            "check that {} is the one writable primary{standbys}, and traffic, caches and apps follow",
            input.primary
        )
    }

    fn predict(input: &VerifyInput) -> Topology {
        let mut inv = input.inventory.clone();
        inv.primary_region = Some(input.primary.clone());
        predicted(&inv)
    }

    async fn run(input: VerifyInput, cx: Cx) -> Result<Topology, ActionError> {
        if !input.inventory.regions.contains_key(&input.primary) {
            return Err(ActionError::permanent(format!(
                "no region '{}' in the inventory ({})",
                input.primary,
                regions_line(&input.inventory)
            )));
        }
        let expect = rules::Expect {
            primary: input.primary.clone(),
            standbys: input.standbys.clone(),
            excused: input.excused.clone(),
        };
        let poll = Poll::new(&cx, input.interval.0).within(input.within.0.min(cx.timeout));
        loop {
            // A postcondition depends on no kept copy: none is walked each poll.
            let t = observe(
                &input.inventory,
                input.probe_timeout.0,
                &cx,
                probe::Disk::Skip,
            )
            .await;
            let wrong = rules::violations(&t, &expect);
            if wrong.is_empty() {
                return Ok(t);
            }
            let once = input.within.0.is_zero();
            if !once {
                cx.note(format!("waiting: {}", wrong.join("; ")));
            }
            poll.pause(&cx, |limit| {
                format!(
                    "the postcondition does not hold{}:\n  - {}\n{}",
                    if once {
                        String::new()
                    } else {
                        format!(" after {limit}")
                    },
                    wrong.join("\n  - "),
                    t.table.trim_end()
                )
            })
            .await?;
        }
    }
}
