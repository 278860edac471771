//! What-if worlds: what an offline dry-run's reads answer. The inventory says where things are;
//! a scenario (`--assume FILE`) says what they are — per region, a database that is primary,
//! standby, fenced or down, a health endpoint that is ok, failing, slow or down, and so on.
//! Without a scenario the world is the inventory's: its primary region is the primary, the
//! others stream from it at lag 0, everything answers and is healthy.
//!
//! Reads are answered from the world as it was at the start: the changes the plan lists are
//! not applied to it. A call to a part the world says is down fails as it would for real, so
//! a runbook's `try`/`catch` and its refusals take the branches they would take.

use std::collections::BTreeMap;
use std::path::Path;

use serde::Deserialize;
use serde_json::Value;

use super::ActionError;
use crate::secret::{mask_url_passwords, SecretString};

/// A database as a scenario describes it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DbState {
    /// Accepts writes.
    Primary,
    /// Streams from a primary (its upstream).
    Standby,
    /// A primary made read-only.
    Fenced,
    /// Does not answer.
    Down,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum HealthState {
    /// Answers 2xx at once.
    Ok,
    /// Answers 503.
    Failing,
    /// Answers 2xx after 15 s (slower than every health rule allows).
    Slow,
    /// Does not answer.
    Down,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RedisState {
    #[serde(alias = "master")]
    Primary,
    Replica,
    Down,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum KubeState {
    /// The region's Kubernetes API answers.
    Ok,
    /// It does not.
    Down,
}

/// One region in a scenario; everything left out keeps the inventory's default.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Assumed {
    pub database: Option<DbState>,
    pub health: Option<HealthState>,
    pub redis: Option<RedisState>,
    pub kubernetes: Option<KubeState>,
    /// The application's spec.replicas (default: the inventory's app_replicas, else 1).
    pub app_replicas: Option<i64>,
    /// Of those, how many are ready (default: all, 0 when health is down).
    pub ready_replicas: Option<i64>,
    /// A standby's distance behind its primary, in bytes of WAL (default 0).
    pub lag_bytes: Option<i64>,
    /// The timeline the database is on (default 1; a standby: its upstream's).
    pub timeline: Option<i64>,
    /// The region a standby streams from (default: the primary).
    pub upstream: Option<String>,
    /// Its DNS weight (default: 100 for the primary, the inventory's dns_weight or 0 for the
    /// others).
    pub dns_weight: Option<i64>,
    /// The application's image (default "<deployment>:current").
    pub image: Option<String>,
    /// How many Kubernetes nodes the region has (default 3 when `cordoned` is given; left
    /// out, with `cordoned`, the nodes are unknown as when they cannot be listed).
    pub nodes: Option<i64>,
    /// How many of them are cordoned (default 0): all of them, a maintenance stopped in its
    /// window.
    pub cordoned: Option<i64>,
}

/// A scenario file.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Scenario {
    /// What it rehearses, printed when the run starts.
    pub description: Option<String>,
    #[serde(default)]
    pub regions: BTreeMap<String, Assumed>,
}

/// One region of the world.
#[derive(Debug, Clone)]
pub struct Place {
    pub name: String,
    /// None: the inventory gives it no database.
    pub database: Option<DbState>,
    pub health: Option<HealthState>,
    pub redis: Option<RedisState>,
    pub kubernetes: KubeState,
    pub app: bool,
    pub app_replicas: i64,
    pub ready_replicas: i64,
    pub lag_bytes: i64,
    pub timeline: i64,
    pub upstream: Option<String>,
    pub dns_weight: i64,
    pub image: String,
    pub deployment: Option<String>,
    pub namespace: Option<String>,
    /// Its Kubernetes nodes and how many are cordoned, when the scenario says.
    pub nodes: Option<(i64, i64)>,
    context: Option<String>,
    /// How its endpoints appear in an action's journaled input (secrets as references,
    /// passwords masked).
    database_url: Option<Value>,
    redis_url: Option<Value>,
    health_url: Option<Value>,
    metrics_url: Option<Value>,
    pub redis_host: Option<String>,
    pub redis_port: Option<i64>,
}

/// The world an offline dry-run reads.
#[derive(Debug, Clone, Default)]
pub struct World {
    /// The scenario file, when there is one.
    pub source: Option<String>,
    pub description: Option<String>,
    pub inventory_primary: Option<String>,
    pub regions: BTreeMap<String, Place>,
    /// Where the primaries' WAL ends: far enough that every standby's lag fits below it.
    pub primary_lsn: u64,
    /// How the run was started, for the commands the observed anomalies suggest (spelled
    /// with the inventory and store options as given, as a real observation spells them).
    pub commands: std::sync::Arc<crate::action::Invocation>,
}

/// Which part of a region an endpoint is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Part {
    Database,
    Redis,
    Health,
    Metrics,
}

fn endpoint(v: &Value) -> Option<Value> {
    match v {
        Value::String(s) => Some(Value::String(mask_url_passwords(s))),
        Value::Object(_) => Some(v.clone()),
        _ => None,
    }
}

impl World {
    /// The world of an inventory (its JSON form, secrets as references) and a scenario.
    pub fn new(
        inventory: &Value,
        scenario: Scenario,
        source: Option<String>,
    ) -> Result<World, String> {
        let regions = inventory["regions"]
            .as_object()
            .cloned()
            .unwrap_or_default();
        let inventory_primary = inventory["primary_region"].as_str().map(str::to_string);
        for (name, a) in &scenario.regions {
            if !regions.contains_key(name) {
                return Err(format!(
                    "regions.{name}: no such region in the inventory ({})",
                    regions.keys().cloned().collect::<Vec<_>>().join(", ")
                ));
            }
            if let Some(up) = &a.upstream {
                if !regions.contains_key(up) {
                    return Err(format!(
                        "regions.{name}.upstream: no region '{up}' in the inventory"
                    ));
                }
            }
            for (field, v) in [
                ("lag_bytes", a.lag_bytes),
                ("app_replicas", a.app_replicas),
                ("ready_replicas", a.ready_replicas),
                ("dns_weight", a.dns_weight),
                ("nodes", a.nodes),
                ("cordoned", a.cordoned),
            ] {
                if v.is_some_and(|v| v < 0) {
                    return Err(format!("regions.{name}.{field}: must not be negative"));
                }
            }
            if let (Some(c), n) = (a.cordoned, a.nodes.unwrap_or(3)) {
                if c > n {
                    return Err(format!(
                        "regions.{name}.cordoned: {c} of {n} nodes; at most all of them"
                    ));
                }
            }
        }
        let assumed = |name: &str| scenario.regions.get(name).cloned().unwrap_or_default();
        // The primary the standbys follow by default: a region the scenario makes primary (the
        // newest timeline first), else the inventory's.
        let named_primary = scenario
            .regions
            .iter()
            .filter(|(_, a)| matches!(a.database, Some(DbState::Primary)))
            .max_by_key(|(_, a)| a.timeline.unwrap_or(1))
            .map(|(n, _)| n.clone());
        let default_primary = inventory_primary
            .clone()
            .filter(|p| regions.contains_key(p))
            .or_else(|| regions.keys().next().cloned());
        let mut out = World {
            source,
            description: scenario.description.clone(),
            inventory_primary,
            ..Default::default()
        };
        let mut max_lag = 0;
        for (name, r) in &regions {
            let a = assumed(name);
            let is_default_primary = default_primary.as_deref() == Some(name.as_str());
            let database =
                r.get("database_url")
                    .and(Some(a.database.unwrap_or(if is_default_primary {
                        DbState::Primary
                    } else {
                        DbState::Standby
                    })));
            let redis = r
                .get("redis_url")
                .and(Some(a.redis.unwrap_or(if is_default_primary {
                    RedisState::Primary
                } else {
                    RedisState::Replica
                })));
            let health = r
                .get("health_url")
                .and(Some(a.health.unwrap_or(HealthState::Ok)));
            let app = r.get("context").is_some() && r.get("deployment").is_some();
            let app_replicas = a
                .app_replicas
                .or_else(|| r.get("app_replicas").and_then(Value::as_i64))
                .unwrap_or(1);
            let ready_replicas = a.ready_replicas.unwrap_or(match health {
                Some(HealthState::Down) => 0,
                _ => app_replicas,
            });
            let lag_bytes = a.lag_bytes.unwrap_or(0);
            max_lag = max_lag.max(lag_bytes);
            let primary_here = matches!(database, Some(DbState::Primary | DbState::Fenced));
            let dns_weight = a.dns_weight.unwrap_or(if is_default_primary {
                100
            } else {
                r.get("dns_weight").and_then(Value::as_i64).unwrap_or(0)
            });
            let upstream = match database {
                Some(DbState::Standby) => a
                    .upstream
                    .clone()
                    .or_else(|| named_primary.clone().filter(|p| p != name))
                    .or_else(|| default_primary.clone().filter(|p| p != name)),
                _ => None,
            };
            let text = |key: &str| r.get(key).and_then(Value::as_str).map(str::to_string);
            out.regions.insert(
                name.clone(),
                Place {
                    name: name.clone(),
                    database,
                    health,
                    redis,
                    kubernetes: a.kubernetes.unwrap_or(KubeState::Ok),
                    app,
                    app_replicas,
                    ready_replicas: ready_replicas.min(app_replicas),
                    lag_bytes: if primary_here { 0 } else { lag_bytes },
                    timeline: a.timeline.unwrap_or(0),
                    upstream,
                    dns_weight,
                    image: a.image.clone().unwrap_or_else(|| {
                        format!(
                            "{}:current",
                            text("deployment").unwrap_or_else(|| "app".into())
                        )
                    }),
                    deployment: text("deployment"),
                    namespace: text("namespace"),
                    nodes: (a.nodes.is_some() || a.cordoned.is_some())
                        .then(|| (a.nodes.unwrap_or(3), a.cordoned.unwrap_or(0))),
                    context: text("context"),
                    database_url: r.get("database_url").and_then(endpoint),
                    redis_url: r.get("redis_url").and_then(endpoint),
                    health_url: r.get("health_url").and_then(endpoint),
                    metrics_url: r.get("metrics_url").and_then(endpoint),
                    redis_host: text("redis_host"),
                    redis_port: r.get("redis_port").and_then(Value::as_i64),
                },
            );
        }
        // Timelines: a primary without one is on 1; a standby is on its upstream's.
        let names: Vec<String> = out.regions.keys().cloned().collect();
        for n in &names {
            let p = out.regions.get_mut(n).unwrap();
            if p.timeline == 0 && p.database != Some(DbState::Standby) {
                p.timeline = 1;
            }
        }
        for n in &names {
            let p = &out.regions[n];
            if p.timeline == 0 {
                let tl = p
                    .upstream
                    .as_ref()
                    .and_then(|u| out.regions.get(u))
                    .map(|u| u.timeline.max(1))
                    .unwrap_or(1);
                out.regions.get_mut(n).unwrap().timeline = tl;
            }
        }
        out.primary_lsn = 0x300_0060 + max_lag as u64;
        Ok(out)
    }

    /// The inventory's world: no scenario.
    pub fn of_inventory(inventory: &Value) -> World {
        World::new(inventory, Scenario::default(), None).unwrap_or_default()
    }

    /// Reads a scenario file against an inventory; an error names the file and the key.
    pub fn load(inventory: &Value, path: &Path) -> Result<World, String> {
        let shown = path.display().to_string();
        let text =
            std::fs::read_to_string(path).map_err(|e| format!("{shown}: cannot read it: {e}"))?;
        let scenario: Scenario = toml::from_str(&text).map_err(|e| {
            let mut message = e.message().to_string();
            if let Some(span) = e.span() {
                let line = text[..span.start.min(text.len())].matches('\n').count() + 1;
                message = format!("line {line}: {message}");
            }
            format!("{shown}: {message}")
        })?;
        World::new(inventory, scenario, Some(shown.clone())).map_err(|e| format!("{shown}: {e}"))
    }

    /// The world in a line or two, for the start of the run.
    pub fn summary(&self) -> String {
        let mut parts = Vec::new();
        for p in self.regions.values() {
            let mut bits = Vec::new();
            match p.database {
                Some(DbState::Primary) => {
                    bits.push(format!("database primary (timeline {})", p.timeline))
                }
                Some(DbState::Fenced) => bits.push("database fenced (read-only)".into()),
                Some(DbState::Down) => bits.push("database down".into()),
                Some(DbState::Standby) => bits.push(format!(
                    "standby of {}{}",
                    p.upstream.as_deref().unwrap_or("nothing"),
                    if p.lag_bytes > 0 {
                        format!(", {} bytes behind", p.lag_bytes)
                    } else {
                        String::new()
                    }
                )),
                None => {}
            }
            match p.health {
                Some(HealthState::Failing) => bits.push("health failing".into()),
                Some(HealthState::Slow) => bits.push("health slow".into()),
                Some(HealthState::Down) => bits.push("health down".into()),
                _ => {}
            }
            if p.redis == Some(RedisState::Down) {
                bits.push("Redis down".into());
            }
            if p.kubernetes == KubeState::Down {
                bits.push("Kubernetes down".into());
            }
            parts.push(format!("{} {}", p.name, bits.join(", ")));
        }
        let regions = parts.join("; ");
        match (&self.source, &self.description) {
            (Some(s), Some(d)) => format!("assumed by {s} — {}\n         {regions}", d.trim()),
            (Some(s), None) => format!("assumed by {s}\n         {regions}"),
            _ => format!("the inventory's ({regions}; everything else healthy); --assume SCENARIO.toml describes another (runbooks/scenarios/)"),
        }
    }

    /// Why "(assumed …)": names the scenario, or the inventory's default world.
    pub fn why(&self) -> String {
        match &self.source {
            Some(s) => format!("assumed by {s}"),
            None => "the offline world".into(),
        }
    }

    /// The region and part an endpoint (as journaled: a secret reference or a masked URL) is.
    pub fn endpoint(&self, url: &Value) -> Option<(&Place, Part)> {
        self.regions.values().find_map(|p| {
            let matches = |v: &Option<Value>| v.as_ref() == Some(url);
            if matches(&p.database_url) {
                Some((p, Part::Database))
            } else if matches(&p.redis_url) {
                Some((p, Part::Redis))
            } else if matches(&p.health_url) {
                Some((p, Part::Health))
            } else if matches(&p.metrics_url) {
                Some((p, Part::Metrics))
            } else {
                None
            }
        })
    }

    /// The region and part of an action's URL field.
    pub fn endpoint_of(&self, url: &SecretString) -> Option<(&Place, Part)> {
        self.endpoint(&serde_json::to_value(url).ok()?)
    }

    /// The region whose database an action's URL is.
    pub fn database(&self, url: &SecretString) -> Option<&Place> {
        self.endpoint_of(url)
            .filter(|(_, part)| *part == Part::Database)
            .map(|(p, _)| p)
    }

    /// The region whose Redis an action's URL is.
    pub fn redis(&self, url: &SecretString) -> Option<&Place> {
        self.endpoint_of(url)
            .filter(|(_, part)| *part == Part::Redis)
            .map(|(p, _)| p)
    }

    /// The region whose Kubernetes context this is.
    pub fn cluster(&self, context: &str) -> Option<&Place> {
        self.regions
            .values()
            .find(|p| p.context.as_deref() == Some(context))
    }

    /// The region whose Redis is reached at host:port.
    pub fn redis_at(&self, host: &str, port: i64) -> Option<&Place> {
        self.regions
            .values()
            .find(|p| p.redis_host.as_deref() == Some(host) && p.redis_port.unwrap_or(6379) == port)
    }

    /// A call the world refuses, whatever the action: one to a part that is down. `input` is
    /// the call's journaled input.
    pub fn refusal(&self, input: &Value) -> Option<ActionError> {
        if let Some((place, part)) = input.get("url").and_then(|u| self.endpoint(u)) {
            let down = match part {
                Part::Database => place.database == Some(DbState::Down),
                Part::Redis => place.redis == Some(RedisState::Down),
                Part::Health | Part::Metrics => place.health == Some(HealthState::Down),
            };
            if down {
                let what = match part {
                    Part::Database => "database",
                    Part::Redis => "Redis",
                    Part::Health => "health endpoint",
                    Part::Metrics => "metrics endpoint",
                };
                return Some(ActionError::not_sent(format!(
                    "cannot connect: {}'s {what} does not answer ({})",
                    place.name,
                    self.why()
                )));
            }
        }
        if let Some(place) = input
            .get("context")
            .and_then(Value::as_str)
            .and_then(|c| self.cluster(c))
        {
            if place.kubernetes == KubeState::Down {
                return Some(ActionError::not_sent(format!(
                    "cannot connect: {}'s Kubernetes API does not answer ({})",
                    place.name,
                    self.why()
                )));
            }
        }
        None
    }

    /// How a call to this URL fails, when its part is down.
    pub fn down(&self, url: &SecretString) -> Option<ActionError> {
        self.refusal(&serde_json::json!({ "url": serde_json::to_value(url).ok()? }))
    }

    /// The region whose Redis the replicas follow: a primary in the newest writable database's
    /// region, else any primary, else (when it is down) the inventory's primary region's.
    pub fn redis_master(&self) -> Option<&Place> {
        let newest = self
            .regions
            .values()
            .filter(|p| p.database == Some(DbState::Primary))
            .max_by_key(|p| p.timeline);
        newest
            .filter(|p| p.redis == Some(RedisState::Primary))
            .or_else(|| {
                self.regions
                    .values()
                    .find(|p| p.redis == Some(RedisState::Primary))
            })
            .or_else(|| {
                self.inventory_primary
                    .as_ref()
                    .and_then(|n| self.regions.get(n))
            })
    }

    /// A region's WAL position: a primary's end, or what a standby received.
    pub fn lsn_of(&self, place: &Place) -> u64 {
        self.primary_lsn
            .saturating_sub(place.lag_bytes.max(0) as u64)
    }

    /// Whether the region's database answers as a primary (writable or fenced).
    pub fn answers_as_primary(&self, name: &str) -> bool {
        matches!(
            self.regions.get(name).and_then(|p| p.database),
            Some(DbState::Primary | DbState::Fenced)
        )
    }

    /// A standby's WAL receiver: streaming while its upstream answers.
    pub fn streaming(&self, place: &Place) -> bool {
        place.database == Some(DbState::Standby)
            && place
                .upstream
                .as_deref()
                .is_some_and(|u| self.answers_as_primary(u))
    }

    /// host:port of a region's database, as a standby's upstream shows it.
    pub fn database_host(&self, name: &str) -> String {
        format!("{name}.database:5432")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn inventory() -> Value {
        json!({
            "primary_region": "us",
            "regions": {
                "us": { "database_url": {"$secret": "US_DB"}, "redis_url": "redis://:pw@us:6379", "health_url": "http://us/health", "context": "us", "deployment": "app", "app_replicas": 6 },
                "eu": { "database_url": {"$secret": "EU_DB"}, "redis_url": "redis://:pw@eu:6379", "health_url": "http://eu/health", "context": "eu", "deployment": "app", "dns_weight": 30 },
                "ap": { "database_url": {"$secret": "AP_DB"}, "health_url": "http://ap/health" },
            }
        })
    }

    fn world(toml: &str) -> Result<World, String> {
        let s: Scenario = toml::from_str(toml).map_err(|e| e.to_string())?;
        World::new(&inventory(), s, Some("s.toml".into()))
    }

    #[test]
    fn defaults_come_from_the_inventory() {
        let w = world("").unwrap();
        type Row<'a> = (&'a str, Option<DbState>, Option<&'a str>, i64, i64, i64);
        let table: Vec<Row> = vec![
            ("us", Some(DbState::Primary), None, 6, 100, 1),
            ("eu", Some(DbState::Standby), Some("us"), 1, 30, 1),
            ("ap", Some(DbState::Standby), Some("us"), 1, 0, 1),
        ];
        for (name, db, up, replicas, weight, tl) in table {
            let p = &w.regions[name];
            assert_eq!(p.database, db, "{name}");
            assert_eq!(p.upstream.as_deref(), up, "{name}");
            assert_eq!(p.app_replicas, replicas, "{name}");
            assert_eq!(p.dns_weight, weight, "{name}");
            assert_eq!(p.timeline, tl, "{name}");
        }
        assert_eq!(w.regions["ap"].redis, None, "no redis_url: no Redis");
        assert!(w.streaming(&w.regions["eu"]));
    }

    #[test]
    fn nodes_are_unknown_unless_the_scenario_names_them() {
        let cases: &[(&str, Option<(i64, i64)>)] = &[
            ("", None),
            ("[regions.eu]\ncordoned = 3\n", Some((3, 3))),
            ("[regions.eu]\nnodes = 5\n", Some((5, 0))),
            ("[regions.eu]\nnodes = 5\ncordoned = 2\n", Some((5, 2))),
        ];
        for (toml, want) in cases {
            assert_eq!(world(toml).unwrap().regions["eu"].nodes, *want, "{toml}");
        }
        assert_eq!(
            world("[regions.eu]\ncordoned = 4\n").unwrap_err(),
            "regions.eu.cordoned: 4 of 3 nodes; at most all of them"
        );
    }

    #[test]
    fn a_scenario_changes_what_it_names() {
        let w = world(
            "[regions.us]\ndatabase = \"down\"\nhealth = \"down\"\n[regions.eu]\nlag_bytes = 1000\n[regions.ap]\ndatabase = \"primary\"\ntimeline = 2\n",
        )
        .unwrap();
        assert_eq!(
            w.regions["us"].ready_replicas, 0,
            "health down: nothing ready"
        );
        // A region the scenario makes primary is what the standbys follow.
        assert_eq!(w.regions["eu"].upstream.as_deref(), Some("ap"));
        assert_eq!(w.regions["eu"].timeline, 2);
        assert_eq!(
            w.lsn_of(&w.regions["ap"]) - w.lsn_of(&w.regions["eu"]),
            1000
        );
        // Calls to a part that is down fail, naming it and the scenario.
        let cases: Vec<(Value, Option<&str>)> = vec![
            (
                json!({"url": {"$secret": "US_DB"}}),
                Some("us's database does not answer (assumed by s.toml)"),
            ),
            (
                json!({"url": "http://us/health"}),
                Some("us's health endpoint does not answer"),
            ),
            (json!({"url": {"$secret": "EU_DB"}}), None),
            (json!({"url": "redis://:***@us:6379"}), None),
            (json!({"context": "eu"}), None),
        ];
        for (input, want) in cases {
            let got = w.refusal(&input).map(|e| e.message);
            match want {
                Some(w) => assert!(got.as_deref().unwrap_or("").contains(w), "{input}: {got:?}"),
                None => assert!(got.is_none(), "{input}: {got:?}"),
            }
        }
        let w = world("[regions.eu]\nkubernetes = \"down\"\n").unwrap();
        assert!(w.refusal(&json!({"context": "eu"})).is_some());
    }

    #[test]
    fn a_wrong_scenario_names_the_key() {
        let cases = [
            ("[regions.mars]\ndatabase = \"down\"\n", "regions.mars: no such region in the inventory (us, eu, ap)"),
            ("[regions.us]\ndatabase = \"sleeping\"\n", "unknown variant `sleeping`, expected one of `primary`, `standby`, `fenced`, `down`"),
            ("[regions.us]\nhealth = \"meh\"\n", "expected one of `ok`, `failing`, `slow`, `down`"),
            ("[regions.us]\nlag = 3\n", "unknown field `lag`"),
            ("[regions.eu]\nlag_bytes = -1\n", "regions.eu.lag_bytes: must not be negative"),
            ("[regions.eu]\nupstream = \"mars\"\n", "regions.eu.upstream: no region 'mars'"),
        ];
        for (text, want) in cases {
            let err = world(text).unwrap_err();
            assert!(err.contains(want), "{text}: {err}");
        }
    }
}
