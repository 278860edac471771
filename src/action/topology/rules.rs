//! Judging an observed topology: who is primary, what is wrong, and whether a procedure's
//! postcondition holds. Pure functions of the observation, unit-tested as tables.

use std::collections::{BTreeMap, BTreeSet};

use super::model::{
    lsn, Anomaly, Database, KeptBy, KeptCopy, Region, SameServer, Severity, Topology,
};
pub use crate::action::pg::Thresholds;

/// The primary the others should follow: the one writable primary, or among several the one
/// on the newest timeline.
pub fn current_primary(t: &Topology) -> Option<&str> {
    t.primary.as_deref().or(t.newest_primary.as_deref())
}

/// Fills what follows from the per-region observations: the writable primaries, the primary,
/// the newest of several, the region the standbys follow, and each standby's lag.
pub fn derive(t: &mut Topology, th: &Thresholds) {
    t.writable = t
        .regions
        .iter()
        .filter(|(_, r)| r.database.writable)
        .map(|(n, _)| n.clone())
        .collect();
    t.primary = (t.writable.len() == 1).then(|| t.writable[0].clone());
    t.newest_primary = {
        let timelines: Vec<(i64, &String)> = t
            .writable
            .iter()
            .map(|n| (t.regions[n].database.timeline.unwrap_or(0), n))
            .collect();
        let max = timelines.iter().map(|(tl, _)| *tl).max();
        let at_max: Vec<&String> = timelines
            .iter()
            .filter(|(tl, _)| Some(*tl) == max)
            .map(|(_, n)| *n)
            .collect();
        (at_max.len() == 1).then(|| at_max[0].clone())
    };
    let mut follows: BTreeMap<&String, usize> = BTreeMap::new();
    for r in t.regions.values() {
        if r.database.role == "standby" {
            if let Some(up) = &r.database.upstream_region {
                *follows.entry(up).or_default() += 1;
            }
        }
    }
    let most = follows.values().copied().max();
    let top: Vec<&String> = follows
        .iter()
        .filter(|(_, n)| Some(**n) == most)
        .map(|(r, _)| *r)
        .collect();
    t.followed = (top.len() == 1).then(|| top[0].clone());

    let reference = current_primary(t).and_then(|p| {
        let db = &t.regions[p].database;
        Some((db.timeline, lsn(db.current_lsn.as_deref()?)?))
    });
    for r in t.regions.values_mut() {
        let db = &mut r.database;
        db.lag_bytes = None;
        db.lag_severity = None;
        if db.role != "standby" {
            continue;
        }
        let (Some((timeline, at)), Some(replayed)) =
            (reference, db.replay_lsn.as_deref().and_then(lsn))
        else {
            continue;
        };
        if db.timeline.is_some() && db.timeline != timeline {
            continue;
        }
        let lag = at.saturating_sub(replayed) as i64;
        db.lag_bytes = Some(lag);
        db.lag_severity = Some(th.severity(lag).to_string());
    }
}

/// Where each region's parts are, as the inventory gives them, as (region, address): a
/// database's or a Redis's host:port, an application's Deployment with the context (and
/// kubeconfig) that reaches it. In the inventory's order.
#[derive(Debug, Clone, Default)]
pub struct Addresses {
    pub databases: Vec<(String, String)>,
    pub caches: Vec<(String, String)>,
    pub apps: Vec<(String, String)>,
}

/// Regions that reach one server or object: the same address in the inventory, or one thing
/// answering under two addresses — a PostgreSQL server's start time (to the microsecond), a
/// Redis server's run_id, a Deployment's uid.
pub fn same_servers(a: &Addresses, regions: &BTreeMap<String, Region>) -> Vec<SameServer> {
    /// Groups of two regions or more by `key`, each group's regions sorted.
    fn groups<'a>(
        items: impl Iterator<Item = (&'a String, &'a String)>,
    ) -> Vec<(&'a String, Vec<String>)> {
        let mut out: Vec<(&String, Vec<String>)> = Vec::new();
        for (region, key) in items {
            match out.iter_mut().find(|(k, _)| *k == key) {
                Some((_, names)) => names.push(region.clone()),
                None => out.push((key, vec![region.clone()])),
            }
        }
        out.retain(|(_, names)| names.len() > 1);
        for (_, names) in &mut out {
            names.sort();
        }
        out
    }
    let mut out: Vec<SameServer> = Vec::new();
    let mut add = |part: &str, how: String, regions: Vec<String>| {
        // A group its address already names.
        if !out
            .iter()
            .any(|s| s.part == part && regions.iter().all(|r| s.regions.contains(r)))
        {
            out.push(SameServer {
                part: part.into(),
                regions,
                how,
            });
        }
    };
    /// Each part: its addresses in the inventory and how one is said, what a server of it
    /// answers that no other does (when it answered) and how that is said.
    type Answer = for<'r> fn(&'r Region) -> Option<&'r String>;
    type Part<'a> = (&'a str, &'a [(String, String)], &'a str, Answer, &'a str);
    let parts: [Part; 3] = [
        (
            "database",
            &a.databases,
            "the same address",
            |r| {
                r.database
                    .server_start
                    .as_ref()
                    .filter(|_| r.database.reachable)
            },
            "one server under two addresses: both answer that they started at",
        ),
        (
            "redis",
            &a.caches,
            "the same address",
            |r| r.redis.run_id.as_ref().filter(|_| r.redis.reachable),
            "one server under two addresses: both answer with the run_id",
        ),
        (
            "application",
            &a.apps,
            "the same Deployment",
            |r| r.app.uid.as_ref().filter(|_| r.app.reachable),
            "one Deployment under two names: both have the uid",
        ),
    ];
    for (part, addresses, the_same, answer, said) in parts {
        for (at, names) in groups(addresses.iter().map(|(r, at)| (r, at))) {
            add(part, format!("{the_same} {at}"), names);
        }
        let answers = regions
            .iter()
            .filter_map(|(n, r)| answer(r).map(|v| (n, v)));
        for (value, names) in groups(answers) {
            add(part, format!("{said} {value}"), names);
        }
    }
    out
}

/// How a database is described in messages.
pub fn describe(db: &Database) -> String {
    match db.role.as_str() {
        "primary" if db.writable => format!(
            "a writable primary on timeline {}",
            db.timeline.unwrap_or(0)
        ),
        "primary" => format!(
            "a fenced (read-only) primary on timeline {}",
            db.timeline.unwrap_or(0)
        ),
        "standby" => {
            let from = db.source().unwrap_or_else(|| "nothing".into());
            match db.wal_receiver.as_deref() {
                Some("streaming") => format!("a standby streaming from {from}"),
                other => format!(
                    "a standby not streaming (receiver {}, configured upstream {from})",
                    other.unwrap_or("stopped")
                ),
            }
        }
        "unreachable" => format!(
            "unreachable ({})",
            db.error.as_deref().unwrap_or("no answer")
        ),
        "refused" => format!(
            "running but refusing the engine ({})",
            db.error.as_deref().unwrap_or("refused")
        ),
        other => other.to_string(),
    }
}

/// What to do about databases that refuse the engine (`names`: one, or several listed).
fn fix_database_url(names: &str) -> String {
    format!("fix the inventory's database_url for {names} (the user, password or database it gives, or the secret it names), then run status again")
}

fn anomaly(
    severity: Severity,
    code: &str,
    region: Option<&str>,
    message: String,
    fix: Option<String>,
) -> Anomaly {
    Anomaly {
        severity,
        code: code.into(),
        region: region.map(str::to_string),
        message,
        fix,
    }
}

/// Everything wrong with the topology, worst first.
pub fn anomalies(t: &Topology) -> Vec<Anomaly> {
    // Former primaries that came back writable: their rejoin comes before any other region's
    // (which refuses while they take writes).
    let former: Vec<&String> = match &t.newest_primary {
        Some(newest) if t.writable.len() > 1 => {
            t.writable.iter().filter(|w| *w != newest).collect()
        }
        _ => vec![],
    };
    let rejoin_of = |region: &str| t.commands.run("rejoin", &format!(" --var region={region}"));
    let drain_of = |region: &str| t.commands.run("drain", &format!(" --var region={region}"));
    let rejoin = |region: &str| {
        Some(match former.first() {
            Some(first) if !former.iter().any(|f| *f == region) => format!(
                "first rejoin the former primary {first}: {}; then {region}: {}",
                rejoin_of(first),
                rejoin_of(region)
            ),
            _ => rejoin_of(region),
        })
    };
    let flag = &t.commands.store_flag;
    use Severity::*;
    let mut out = Vec::new();
    let primary = current_primary(t);

    // The inventory names one server for two regions: what they say is one server's answer
    // twice (no second primary), and each such region's own server is not seen.
    let inventory = t.commands.inventory.as_deref().unwrap_or("the inventory");
    for s in &t.same_server {
        let (what, key) = match s.part.as_str() {
            "redis" => ("Redis server", "redis_url"),
            "application" => ("application", "context, namespace or deployment"),
            _ => ("PostgreSQL server", "database_url"),
        };
        out.push(anomaly(
            Critical,
            "same_server",
            None,
            format!(
                "{} reach one {what} ({}): the inventory names it for {}, but it belongs to one region at most, and {} not observed",
                s.regions.join(" and "),
                s.how,
                if s.regions.len() == 2 { "both" } else { "each" },
                if s.regions.len() == 2 { "the other's own is" } else { "the others' own are" },
            ),
            Some(format!(
                "correct {key} of the region(s) it does not belong to in {inventory}; until then the runbooks refuse to act on this deployment"
            )),
        ));
    }
    let one_server = |part: &str, names: &[&String]| {
        t.same_server
            .iter()
            .any(|s| s.part == part && names.iter().all(|n| s.regions.contains(n)))
    };

    // Primaries.
    let writable: Vec<&String> = t.writable.iter().collect();
    if t.writable.len() > 1 && !one_server("database", &writable) {
        match &t.newest_primary {
            Some(newest) => {
                let newest_tl = t.regions[newest].database.timeline.unwrap_or(0);
                for w in t.writable.iter().filter(|w| *w != newest) {
                    let tl = t.regions[w].database.timeline.unwrap_or(0);
                    out.push(anomaly(
                        Critical,
                        "two_primaries",
                        Some(w),
                        format!(
                            "{w}'s database is a writable primary on timeline {tl}, while {newest} is the primary on timeline {newest_tl}: \
                             {w} is a former primary that came back, and writes it takes will be lost"
                        ),
                        // Fenced at once from anywhere; the rejoin runs where its data is.
                        Some(format!(
                            "stop its writes now: {}; then make it a standby: {}",
                            t.commands.run("fence", &format!(" --var region={w}")),
                            rejoin_of(w)
                        )),
                    ));
                }
            }
            None => out.push(anomaly(
                Critical,
                "two_primaries",
                None,
                format!(
                    "{} are all writable primaries on the same timeline: the servers cannot tell which one is current",
                    t.writable.join(" and ")
                ),
                Some("fence the one that must not take writes (pg::fence), then rejoin it as a standby".into()),
            )),
        }
    }
    // Databases that answer but will not let the engine in: each could be a primary taking
    // writes. With no writable primary seen, which one is the primary is unknown — not down.
    let refusing = t.with_database("refused");
    if t.writable.is_empty() && !refusing.is_empty() {
        let why: Vec<&str> = refusing
            .iter()
            .map(|n| t.regions[*n].database.error.as_deref().unwrap_or("refused"))
            .collect();
        let who = match refusing.as_slice() {
            [one] => format!("{one}'s database answers but refuses"),
            many => format!(
                "the databases of {} answer but refuse",
                many.iter()
                    .map(|n| n.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        };
        out.push(anomaly(
            Critical,
            "primary_unknown",
            None,
            format!(
                "no database is seen accepting writes, and {who} the engine ({}): which region is the primary is unknown, not down",
                why.join("; ")
            ),
            Some(format!(
                "{}; do not fail over from a database that answers",
                fix_database_url(
                    &refusing
                        .iter()
                        .map(|n| n.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                )
            )),
        ));
    } else if t.writable.is_empty() {
        let fenced = t.with_database("primary");
        let followed_down = t
            .followed
            .as_ref()
            .filter(|f| t.regions[*f].database.role == "unreachable");
        let (message, fix) = if let Some(f) = followed_down {
            (
                format!("no database accepts writes: the standbys follow {f}, whose database does not answer"),
                Some(t.commands.run("emergency-failover", "")),
            )
        } else if !fenced.is_empty() {
            let by = |n: &str| t.regions[n].database.fenced_by.clone();
            let names: Vec<String> = fenced
                .iter()
                .map(|n| match by(n) {
                    Some(run) => format!("{n} (fenced by run {run})"),
                    None => n.to_string(),
                })
                .collect();
            // The run the server names, when one run fenced them all: finish it, or undo it.
            let runs: BTreeSet<Option<String>> = fenced.iter().map(|n| by(n)).collect();
            let fix = match runs.into_iter().collect::<Vec<_>>().as_slice() {
                [Some(run)] => {
                    let id = run.split(' ').next().unwrap_or(run);
                    format!("finish the run that fenced it: `runbook resume {id}{flag}`; or undo what it changed: `runbook resume {id} --undo{flag}`")
                }
                _ => format!("finish the procedure that fenced it (`runbook runs{flag}`, then `runbook resume RUN{flag}`), or undo it"),
            };
            (
                format!(
                    "no database accepts writes: {} is a fenced (read-only) primary",
                    names.join(", ")
                ),
                Some(fix),
            )
        } else {
            (
                "no database accepts writes, and no standby says which region was primary"
                    .to_string(),
                None,
            )
        };
        out.push(anomaly(Critical, "no_primary", None, message, fix));
    }

    for (name, region) in &t.regions {
        let db = &region.database;
        match db.role.as_str() {
            // (The one the standbys follow is named by no_primary, when that is said.)
            "unreachable"
                if !(t.writable.is_empty()
                    && refusing.is_empty()
                    && t.followed.as_ref() == Some(name)) =>
            {
                out.push(anomaly(
                    Warning,
                    "database_unreachable",
                    Some(name),
                    format!(
                        "{name}'s database does not answer ({}); if it was a primary and comes back, it comes back writable",
                        db.error.as_deref().unwrap_or("no answer")
                    ),
                    Some(format!("when it is back, run status again; if it is not a streaming standby, rejoin it ({})", rejoin(name).unwrap_or_default())),
                ));
            }
            "refused" if !t.writable.is_empty() => out.push(anomaly(
                Warning,
                "database_refused",
                Some(name),
                format!(
                    "{name}'s database answers but refuses the engine ({}): whether it is a standby, or a second writable primary, cannot be checked",
                    db.error.as_deref().unwrap_or("refused")
                ),
                Some(fix_database_url(name)),
            )),
            "primary" if !db.writable && !t.writable.is_empty() => out.push(anomaly(
                Warning,
                "fenced_primary",
                Some(name),
                format!(
                    "{name} is a fenced (read-only) former primary{}, not a standby: it replicates nothing",
                    db.fenced_by
                        .as_ref()
                        .map(|run| format!(" (fenced by run {run})"))
                        .unwrap_or_default()
                ),
                rejoin(name),
            )),
            "standby" => {
                if let Some(p) = primary {
                    let p_tl = t.regions[p].database.timeline;
                    let streaming = db.wal_receiver.as_deref() == Some("streaming");
                    let from_primary = db.upstream_region.as_deref() == Some(p);
                    if let (Some(tl), Some(ptl)) = (db.timeline, p_tl) {
                        if tl < ptl && !(streaming && from_primary) {
                            out.push(anomaly(
                                Warning,
                                "old_timeline",
                                Some(name),
                                format!(
                                    "{name} is a standby on timeline {tl}, behind the primary {p}'s timeline {ptl}: it needs a rewind to follow"
                                ),
                                rejoin(name),
                            ));
                            continue;
                        }
                    }
                    if !streaming {
                        out.push(anomaly(
                            Warning,
                            "standby_not_streaming",
                            Some(name),
                            format!("{name} is {}", describe(db)),
                            rejoin(name),
                        ));
                    } else if !from_primary {
                        out.push(anomaly(
                            Warning,
                            "wrong_upstream",
                            Some(name),
                            format!(
                                "{name} streams from {}, not from the primary {p}",
                                db.source()
                                    .unwrap_or_else(|| "an unknown server".into())
                            ),
                            rejoin(name),
                        ));
                    }
                    if let (Some(sev), Some(lag)) = (&db.lag_severity, db.lag_bytes) {
                        let severity = match sev.as_str() {
                            "critical" => Some(Critical),
                            "warning" => Some(Warning),
                            "elevated" => Some(Info),
                            _ => None,
                        };
                        if let Some(severity) = severity {
                            out.push(anomaly(
                                severity,
                                "replication_lag",
                                Some(name),
                                format!(
                                    "{name} is {} behind the primary ({sev})",
                                    crate::action::pg::human_bytes(lag)
                                ),
                                None,
                            ));
                        }
                    }
                }
            }
            _ => {}
        }
        if db.reachable {
            let hints_pending = db.pending_restart.iter().any(|s| s == "wal_log_hints");
            if !db.data_checksums && (!db.wal_log_hints || hints_pending) {
                out.push(anomaly(
                    Warning,
                    "rewind_not_ready",
                    Some(name),
                    if hints_pending {
                        format!("{name}: wal_log_hints is set but waits for a restart; until then a failover's old primary here cannot be rewound")
                    } else {
                        format!("{name}: neither wal_log_hints nor data checksums is on, so after a failover its old primary cannot be rewound (pg_rewind) and needs a full base backup")
                    },
                    Some("runbooks/initial-setup.rhai sets wal_log_hints = on; restart PostgreSQL for it to take effect".into()),
                ));
            }
            let others: Vec<&str> = db
                .pending_restart
                .iter()
                .map(String::as_str)
                .filter(|s| *s != "wal_log_hints")
                .collect();
            if !others.is_empty() {
                out.push(anomaly(
                    Info,
                    "pending_restart",
                    Some(name),
                    format!(
                        "{name}: {} changed and wait for a restart",
                        others.join(", ")
                    ),
                    None,
                ));
            }
        }

        if !db.kept_copies.is_empty() {
            let (message, fix) = kept_copies_text(name, &db.kept_copies);
            out.push(anomaly(Info, "kept_copies", Some(name), message, Some(fix)));
        }

        // The application.
        let app = &region.app;
        if app.checked && !app.reachable {
            out.push(anomaly(
                Warning,
                "app_unreachable",
                Some(name),
                format!(
                    "{name}'s application could not be read ({})",
                    app.error.as_deref().unwrap_or("no answer")
                ),
                None,
            ));
        } else if app.checked && app.database_url.is_some() {
            if let Some(p) = primary {
                let uses = app.database_region.as_deref();
                let local_standby =
                    uses == Some(name.as_str()) && db.role == "standby" && db.reachable;
                if uses != Some(p) && !local_standby {
                    let (severity, what) = match uses {
                        Some(u) => {
                            let other = &t.regions[u].database;
                            let sev = if other.writable && app.ready > 0 {
                                Critical
                            } else {
                                Warning
                            };
                            (sev, format!("the database of {u} ({})", describe(other)))
                        }
                        None => (
                            Warning,
                            format!(
                                "{}, a database not in the inventory",
                                app.database_url.as_deref().unwrap_or("?")
                            ),
                        ),
                    };
                    out.push(anomaly(
                        severity,
                        "app_wrong_database",
                        Some(name),
                        format!(
                            "{name}'s application ({}/{} ready) uses {what}, not the primary {p}",
                            app.ready, app.replicas
                        ),
                        Some(format!(
                            "point its DATABASE_URL at {p}'s database ({})",
                            rejoin(name).unwrap_or_default()
                        )),
                    ));
                }
            }
        }

        // The health endpoint of a region out of rotation (in rotation: traffic, below).
        if region.health.checked && !region.health.ok && region.dns_weight.unwrap_or(0) == 0 {
            out.push(anomaly(
                Warning,
                "health_failing",
                Some(name),
                format!(
                    "{name}'s health check fails ({})",
                    health_text(&region.health)
                ),
                None,
            ));
        }
    }

    // Traffic.
    let weighted: Vec<(&String, i64)> = t
        .regions
        .iter()
        .filter_map(|(n, r)| r.dns_weight.map(|w| (n, w)))
        .collect();
    if !weighted.is_empty() {
        if weighted.iter().all(|(_, w)| *w == 0) {
            out.push(anomaly(
                Critical,
                "no_traffic",
                None,
                "every region has DNS weight 0: no region serves users".into(),
                Some(match t.writable.first() {
                    Some(p) => format!(
                        "put the primary's region back in rotation: {}",
                        t.commands.run(
                            "drain",
                            &format!(" --var region={p} --var restore=true --var weight=100")
                        )
                    ),
                    None => format!(
                        "put a region that serves users back in rotation: {}",
                        t.commands.run(
                            "drain",
                            " --var region=REGION --var restore=true --var weight=100"
                        )
                    ),
                }),
            ));
        }
        for (name, w) in weighted.into_iter().filter(|(_, w)| *w > 0) {
            let r = &t.regions[name];
            if r.app.checked && r.app.reachable && r.app.ready == 0 {
                out.push(anomaly(
                    Critical,
                    "traffic_to_unready",
                    Some(name),
                    format!("DNS sends weight {w} to {name}, whose application has no ready replicas ({} wanted)", r.app.replicas),
                    Some(format!(
                        "scale {name}'s application up, or take it out of rotation: {}",
                        drain_of(name)
                    )),
                ));
            }
            if r.health.checked && !r.health.ok {
                out.push(anomaly(
                    Critical,
                    "traffic_to_unready",
                    Some(name),
                    format!(
                        "DNS sends weight {w} to {name}, whose health check fails ({})",
                        health_text(&r.health)
                    ),
                    Some(if t.writable.contains(name) {
                        format!(
                            "take it out of rotation: {}; if its database is down too, fail over: {}",
                            drain_of(name),
                            t.commands.run("emergency-failover", "")
                        )
                    } else {
                        format!("take it out of rotation: {}", drain_of(name))
                    }),
                ));
            }
        }
    }

    if let Some(e) = &t.dns_error {
        out.push(anomaly(
            Warning,
            "dns_unreadable",
            None,
            format!("the DNS weights could not be read: {e}"),
            None,
        ));
    }

    // Redis.
    let masters: Vec<&String> = t
        .regions
        .iter()
        .filter(|(_, r)| r.redis.role == "master")
        .map(|(n, _)| n)
        .collect();
    if masters.len() > 1 && !one_server("redis", &masters) {
        let extra: Vec<&str> = masters
            .iter()
            .filter(|m| Some(m.as_str()) != primary)
            .map(|m| m.as_str())
            .collect();
        out.push(anomaly(
            Warning,
            "redis_masters",
            None,
            format!(
                "{} Redis servers are primaries: {}",
                masters.len(),
                masters
                    .iter()
                    .map(|m| m.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
            extra.first().and_then(|r| rejoin(r)),
        ));
    }
    let master = (masters.len() == 1).then(|| masters[0].as_str());
    if let (Some(m), Some(p)) = (master, primary) {
        if m != p {
            out.push(anomaly(
                Warning,
                "redis_wrong_master",
                Some(m),
                format!("the Redis primary is in {m}, the database primary in {p}"),
                rejoin(m),
            ));
        }
    }
    for (name, r) in &t.regions {
        match r.redis.role.as_str() {
            "unreachable" => out.push(anomaly(
                Warning,
                "redis_unreachable",
                Some(name),
                format!(
                    "{name}'s Redis does not answer ({})",
                    r.redis.error.as_deref().unwrap_or("no answer")
                ),
                None,
            )),
            "refused" => out.push(anomaly(
                Warning,
                "redis_refused",
                Some(name),
                format!(
                    "{name}'s Redis answers but refuses the engine ({}): what it follows cannot be checked",
                    r.redis.error.as_deref().unwrap_or("refused")
                ),
                Some(format!(
                    "fix the inventory's redis_url for {name} (its password, or the secret it names), then run status again"
                )),
            )),
            "replica" => {
                if r.redis.link.as_deref() != Some("up") {
                    out.push(anomaly(
                        Warning,
                        "redis_link_down",
                        Some(name),
                        format!(
                            "{name}'s Redis replica has its link to {} down",
                            r.redis.master.as_deref().unwrap_or("its primary")
                        ),
                        rejoin(name),
                    ));
                } else if let Some(m) = master {
                    if r.redis.master_region.as_deref() != Some(m) {
                        out.push(anomaly(
                            Warning,
                            "redis_wrong_master",
                            Some(name),
                            format!(
                                "{name}'s Redis replicates from {}, not from the Redis primary in {m}",
                                r.redis
                                    .master_region
                                    .clone()
                                    .or_else(|| r.redis.master.clone())
                                    .unwrap_or_default()
                            ),
                            rejoin(name),
                        ));
                    }
                }
            }
            _ => {}
        }
    }

    // Kubernetes nodes: a cluster cordoned whole (a maintenance stopped in its window) cannot
    // place a pod, so its region cannot take over an application.
    for (name, r) in &t.regions {
        let (Some(nodes), Some(cordoned)) = (r.app.nodes, r.app.cordoned) else {
            continue;
        };
        if r.app.all_cordoned() {
            out.push(anomaly(
                Warning,
                "nodes_cordoned",
                Some(name),
                format!(
                    "every Kubernetes node in {name} is cordoned ({cordoned} of {nodes}): no new pod can be scheduled there, and a failover does not choose it as its target"
                ),
                Some(format!(
                    "if a procedure cordoned them (maintenance), finish or undo it (`runbook runs{flag}`); otherwise uncordon them: {}",
                    match (&r.app.kubectl, r.app.cordoned_nodes.is_empty()) {
                        (Some(kubectl), false) => format!(
                            "`kubectl {kubectl} uncordon {}`",
                            r.app
                                .cordoned_nodes
                                .iter()
                                .map(|n| crate::error::shell_word(n))
                                .collect::<Vec<_>>()
                                .join(" ")
                        ),
                        _ => format!("k8s::uncordon, or kubectl uncordon, in {name}"),
                    }
                )),
            ));
        } else if cordoned > 0 {
            out.push(anomaly(
                Info,
                "nodes_cordoned",
                Some(name),
                format!(
                    "{cordoned} of {nodes} Kubernetes nodes in {name} {} cordoned",
                    if cordoned == 1 { "is" } else { "are" }
                ),
                None,
            ));
        }
    }

    // The inventory.
    if let (Some(i), Some(p)) = (&t.inventory_primary, primary) {
        if i != p {
            out.push(anomaly(
                Info,
                "inventory_disagrees",
                None,
                format!(
                    "the inventory says primary_region = \"{i}\"; the servers say {p}. The runbooks follow the servers"
                ),
                Some(format!("set primary_region = \"{p}\" in the inventory when convenient")),
            ));
        }
    }

    out.sort_by_key(|a| std::cmp::Reverse(a.severity));
    out
}

/// What the copies of a region's data directory kept beside it are, and what to do with
/// them: (message, fix).
fn kept_copies_text(name: &str, copies: &[KeptCopy]) -> (String, String) {
    let human = |n: u64| crate::action::pg::human_bytes(n as i64);
    let size = |k: &KeptCopy| match k.bytes {
        Some(n) if k.counted_in_part => format!("at least {}: counting stopped", human(n)),
        Some(n) => human(n),
        None => "its size unknown: not readable here".into(),
    };
    let cut_off = |k: &KeptCopy| k.made_by == KeptBy::CutOff;
    let paths = copies
        .iter()
        .map(|k| k.path.as_str())
        .collect::<Vec<_>>()
        .join(" ");
    let never = "the engine never removes a whole copy";
    if let [k] = copies {
        if cut_off(k) {
            return (
                format!(
                    "{name}: a rewind's copy of its data directory, cut off half-way on {}, is left beside it: {} ({}), with nothing whole in it",
                    k.made_at, k.path, size(k)
                ),
                format!("remove it to free its space: rm -rf {paths} (the next rewind of {name} removes it too)"),
            );
        }
        let holds = if k.made_by == KeptBy::Rewind {
            "the transactions that rewind took out of it"
        } else {
            "all it held, what it committed after the fork among it"
        };
        return (
            format!(
                "{name}: its data directory from before the {} of {} is kept beside it: {} ({}), with {holds}",
                k.made_by.label(),
                k.made_at,
                k.path,
                size(k)
            ),
            format!("read what you need from it (start PostgreSQL on it on another port), then remove it to free its space: rm -rf {paths} ({never})"),
        );
    }
    let total: u64 = copies.iter().filter_map(|k| k.bytes).sum();
    let total = if copies
        .iter()
        .all(|k| k.bytes.is_some() && !k.counted_in_part)
    {
        format!("{} in all", human(total))
    } else {
        format!("at least {} in all", human(total))
    };
    let each: Vec<String> = copies
        .iter()
        .map(|k| {
            let what = if cut_off(k) {
                "a rewind's copy cut off half-way, nothing whole in it"
            } else {
                k.made_by.label()
            };
            format!("{} ({what}, {}, {})", k.path, k.made_at, size(k))
        })
        .collect();
    (
        format!(
            "{name}: {} copies of its data directory are kept beside it ({total}), each with what a rejoin took out of it: {}",
            copies.len(),
            each.join("; ")
        ),
        format!("read what you need from each (start PostgreSQL on it on another port), then remove those you no longer need to free their space: rm -rf {paths} ({never})"),
    )
}

fn health_text(h: &super::model::Health) -> String {
    match (&h.error, h.status, h.latency_ms) {
        (Some(e), _, _) => e.clone(),
        (None, Some(s), Some(ms)) => format!("HTTP {s} in {ms} ms"),
        (None, Some(s), None) => format!("HTTP {s}"),
        _ => "no answer".into(),
    }
}

/// Fills `anomalies`, `worst` and `critical`.
pub fn judge(t: &mut Topology) {
    t.anomalies = anomalies(t);
    t.critical = t.anomalies.iter().any(|a| a.severity == Severity::Critical);
    t.worst = t
        .anomalies
        .first()
        .map(|a| a.severity.label().to_ascii_lowercase())
        .unwrap_or_else(|| "ok".into());
}

/// What a write procedure must leave behind.
#[derive(Debug, Clone, Default)]
pub struct Expect {
    /// The region whose database is the one writable primary.
    pub primary: String,
    /// Regions that must be standbys streaming from it (other reachable standbys must too).
    pub standbys: Vec<String>,
    /// Standbys the procedure leaves as it found them (they followed a former primary it
    /// rejoined): not streaming from the primary is not its failure; writable still is.
    pub excused: Vec<String>,
}

/// A database that does not answer, and whose data directory says it stopped as a standby
/// (pg_controldata: "shut down in recovery", or "in archive recovery" after a crash).
fn stopped_in_recovery(db: &Database) -> bool {
    db.role == "unreachable"
        && matches!(
            db.stopped_state.as_deref(),
            Some("shut down in recovery" | "in archive recovery")
        )
}

/// The postcondition's failures; empty when it holds.
pub fn violations(t: &Topology, e: &Expect) -> Vec<String> {
    let p = e.primary.as_str();
    let mut out = Vec::new();
    if t.writable != [p.to_string()] {
        out.push(format!(
            "{p} should be the one writable primary; writable now: {}",
            if t.writable.is_empty() {
                "none".to_string()
            } else {
                t.writable.join(", ")
            }
        ));
    }
    for (name, r) in &t.regions {
        if name == p {
            continue;
        }
        let db = &r.database;
        let required = e.standbys.contains(name);
        let ok = db.role == "standby"
            && db.wal_receiver.as_deref() == Some("streaming")
            && db.upstream_region.as_deref() == Some(p);
        // One that refuses the engine cannot be shown not to take writes: never excused.
        let refused = db.role == "refused";
        let excused = e.excused.contains(name) && !required && !refused;
        if !ok && (required || db.role == "standby" || refused) && !excused {
            out.push(format!(
                "{name} should be a standby streaming from {p}; it is {}",
                describe(db)
            ));
        }
    }
    let weighted: Vec<(&String, i64)> = t
        .regions
        .iter()
        .filter_map(|(n, r)| r.dns_weight.map(|w| (n, w)))
        .collect();
    if !weighted.is_empty() && weighted.iter().all(|(_, w)| *w == 0) {
        out.push("no region has DNS weight: users reach nothing".into());
    }
    for (name, w) in weighted.into_iter().filter(|(_, w)| *w > 0) {
        let r = &t.regions[name];
        if r.app.checked && (!r.app.reachable || r.app.ready == 0) {
            out.push(format!(
                "{name} has DNS weight {w} but {}",
                if r.app.reachable {
                    format!("no ready replicas ({} wanted)", r.app.replicas)
                } else {
                    "its application cannot be read".into()
                }
            ));
        }
        if r.health.checked && !r.health.ok {
            out.push(format!(
                "{name} has DNS weight {w} but fails its health check ({})",
                health_text(&r.health)
            ));
        }
    }
    for (name, r) in &t.regions {
        let app = &r.app;
        if !app.checked || !app.reachable || app.replicas == 0 || app.database_url.is_none() {
            continue;
        }
        let uses = app.database_region.as_deref();
        // Its own region's standby; one that is down is allowed as any down standby is (its
        // data directory says it was in recovery: it cannot come back writable).
        let local_standby = uses == Some(name.as_str())
            && ((r.database.role == "standby" && r.database.upstream_region.as_deref() == Some(p))
                || stopped_in_recovery(&r.database));
        if uses != Some(p) && !local_standby {
            out.push(format!(
                "{name}'s application uses {}, not the primary {p}",
                uses.map(|u| format!("{u}'s database"))
                    .unwrap_or_else(|| "a database not in the inventory".into())
            ));
        }
    }
    let with_redis: Vec<(&String, &super::model::Cache)> = t
        .regions
        .iter()
        .filter(|(_, r)| r.redis.role != "absent")
        .map(|(n, r)| (n, &r.redis))
        .collect();
    if !with_redis.is_empty() {
        for (name, c) in with_redis {
            match (name.as_str() == p, c.role.as_str()) {
                (true, "master") | (_, "unreachable") => {}
                (_, "refused") => out.push(format!(
                    "{name}'s Redis refuses the engine ({}): whether it follows {p} cannot be checked",
                    c.error.as_deref().unwrap_or("refused")
                )),
                (true, role) => {
                    out.push(format!("{p}'s Redis should be the primary; it is a {role}"))
                }
                (false, "master") => out.push(format!(
                    "{name}'s Redis should be a replica of {p}'s; it is a primary"
                )),
                (false, _) => {
                    if c.master_region.as_deref() != Some(p) || c.link.as_deref() != Some("up") {
                        out.push(format!(
                            "{name}'s Redis should replicate from {p} with its link up; it follows {} (link {})",
                            c.master_region.clone().or_else(|| c.master.clone()).unwrap_or_default(),
                            c.link.as_deref().unwrap_or("?")
                        ));
                    }
                }
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::super::model::{App, Cache, Database, Health, Region};
    use super::*;

    /// A region in a few words: "primary 2 0/5000000", "standby 2 0/5000000 from:us",
    /// "standby 1 0/4000000 stopped", "fenced 1 0/3000000", "down".
    fn db(spec: &str) -> Database {
        let parts: Vec<&str> = spec.split_whitespace().collect();
        let mut d = Database {
            reachable: true,
            wal_log_hints: true,
            ..Default::default()
        };
        match parts[0] {
            "down" => {
                d.reachable = false;
                d.role = "unreachable".into();
                d.error = Some("connection refused".into());
                return d;
            }
            // It answered, but refused the engine's login.
            "refused" => {
                d.reachable = false;
                d.role = "refused".into();
                d.error = Some("authentication failed".into());
                return d;
            }
            "primary" | "fenced" => {
                d.role = "primary".into();
                d.writable = parts[0] == "primary";
                d.read_only = parts[0] == "fenced";
                d.current_lsn = Some(parts[2].into());
                // "by:ID": pg::fence of run ID (of planned-failover.rhai) left its name.
                d.fenced_by = parts[3..]
                    .iter()
                    .find_map(|p| p.strip_prefix("by:"))
                    .map(|id| format!("{id} of planned-failover.rhai"));
            }
            _ => {
                d.role = "standby".into();
                d.replay_lsn = Some(parts[2].into());
                d.receive_lsn = Some(parts[2].into());
                for p in &parts[3..] {
                    if let Some(up) = p.strip_prefix("from:") {
                        d.upstream_region = Some(up.into());
                        d.wal_receiver = Some("streaming".into());
                    }
                    if *p == "stopped" {
                        d.wal_receiver = None;
                    }
                }
            }
        }
        d.timeline = Some(parts[1].parse().unwrap());
        d
    }

    fn region(database: &str) -> Region {
        Region {
            database: db(database),
            redis: Cache {
                role: "absent".into(),
                ..Default::default()
            },
            health: Health {
                checked: true,
                ok: true,
                status: Some(200),
                ..Default::default()
            },
            app: App::default(),
            dns_weight: None,
        }
    }

    fn topology(regions: &[(&str, &str)]) -> Topology {
        let mut t = Topology {
            regions: regions
                .iter()
                .map(|(n, spec)| (n.to_string(), region(spec)))
                .collect(),
            ..Default::default()
        };
        derive(&mut t, &Thresholds::default());
        judge(&mut t);
        t
    }

    fn codes(t: &Topology) -> Vec<(String, String, Option<String>)> {
        t.anomalies
            .iter()
            .map(|a| {
                (
                    a.severity.label().to_string(),
                    a.code.clone(),
                    a.region.clone(),
                )
            })
            .collect()
    }

    fn c(sev: &str, code: &str, region: Option<&str>) -> (String, String, Option<String>) {
        (sev.into(), code.into(), region.map(str::to_string))
    }

    #[test]
    fn regions_that_reach_one_server_as_a_table() {
        type Pairs = &'static [(&'static str, &'static str)];
        /// A case: the regions' databases; then, each as (region, value): database addresses,
        /// server start times, Redis addresses, Redis masters (value unused), application
        /// addresses, Deployment uids, Redis run_ids; the groups found as "part: regions: how"; the critical
        /// anomalies (and redis_masters).
        struct Case {
            what: &'static str,
            dbs: Vec<(&'static str, &'static str)>,
            databases: Pairs,
            starts: Pairs,
            caches: Pairs,
            masters: Pairs,
            apps: Pairs,
            uids: Pairs,
            run_ids: Pairs,
            groups: &'static [&'static str],
            want: &'static [&'static str],
        }
        let two = || {
            vec![
                ("us", "primary 1 0/5000000"),
                ("eu", "standby 1 0/5000000 from:us"),
            ]
        };
        let base = |what| Case {
            what,
            dbs: two(),
            databases: &[("us", "db-us:5432"), ("eu", "db-eu:5432")],
            starts: &[("us", "T1"), ("eu", "T2")],
            caches: &[("us", "r-us:6379"), ("eu", "r-eu:6379")],
            masters: &[("us", "")],
            apps: &[("us", "app in us"), ("eu", "app in eu")],
            uids: &[("us", "U1"), ("eu", "U2")],
            run_ids: &[("us", "R1"), ("eu", "R2")],
            groups: &[],
            want: &[],
        };
        let cases = vec![
            base("every region its own servers"),
            Case {
                dbs: vec![("us", "primary 1 0/5000000"), ("eu", "primary 1 0/5000000")],
                databases: &[("us", "db-us:5432"), ("eu", "db-us:5432")],
                starts: &[("us", "T1"), ("eu", "T1")],
                groups: &["database: eu+us: the same address db-us:5432"],
                want: &["same_server"],
                ..base("a copied block: eu names us's database (one server, not two primaries)")
            },
            Case {
                dbs: vec![
                    ("us", "primary 1 0/5000000"),
                    ("eu", "primary 1 0/5000000"),
                    ("ap", "standby 1 0/5000000 from:us"),
                ],
                databases: &[("us", "db-us:5432"), ("eu", "db-alias:5432"), ("ap", "db-ap:5432")],
                starts: &[("us", "T1"), ("eu", "T1"), ("ap", "T3")],
                groups: &["database: eu+us: one server under two addresses: both answer that they started at T1"],
                want: &["same_server"],
                ..base("one server under two names (a DNS alias): the same start time")
            },
            Case {
                dbs: vec![("us", "primary 1 0/5000000"), ("eu", "down")],
                starts: &[("us", "T1"), ("eu", "T1")],
                ..base("a start time from a server that did not answer groups nothing")
            },
            Case {
                caches: &[("us", "r-us:6379"), ("eu", "r-us:6379")],
                masters: &[("us", ""), ("eu", "")],
                groups: &["redis: eu+us: the same address r-us:6379"],
                want: &["same_server"],
                ..base("Redis named twice: one master, not two")
            },
            Case {
                caches: &[("us", "r-us:6379"), ("eu", "r-alias:6379")],
                masters: &[("us", ""), ("eu", "")],
                run_ids: &[("us", "R1"), ("eu", "R1")],
                groups: &["redis: eu+us: one server under two addresses: both answer with the run_id R1"],
                want: &["same_server"],
                ..base("Redis under two names: the same run_id")
            },
            Case {
                apps: &[("us", "app in us"), ("eu", "app in us")],
                uids: &[("us", "U1"), ("eu", "U1")],
                groups: &["application: eu+us: the same Deployment app in us"],
                want: &["same_server"],
                ..base("an application named twice")
            },
            Case {
                apps: &[("us", "app in us"), ("eu", "app in us-alias")],
                uids: &[("us", "U1"), ("eu", "U1")],
                groups: &["application: eu+us: one Deployment under two names: both have the uid U1"],
                want: &["same_server"],
                ..base("one Deployment under two contexts: the same uid")
            },
            Case {
                dbs: vec![("us", "primary 1 0/5000000"), ("eu", "primary 1 0/5000000")],
                want: &["two_primaries"],
                ..base("two real primaries on one timeline stay two primaries")
            },
        ];
        let list = |a: Pairs| -> Vec<(String, String)> {
            a.iter()
                .map(|(r, v)| (r.to_string(), v.to_string()))
                .collect()
        };
        for c in cases {
            let what = c.what;
            let mut t = topology(&c.dbs);
            for (r, at) in c.starts {
                t.regions.get_mut(*r).unwrap().database.server_start = Some(at.to_string());
            }
            for (r, _) in c.masters {
                t.regions.get_mut(*r).unwrap().redis = redis_primary();
            }
            for (r, id) in c.run_ids {
                t.regions.get_mut(*r).unwrap().redis.run_id = Some(id.to_string());
            }
            for (r, uid) in c.uids {
                t.regions.get_mut(*r).unwrap().app = App {
                    uid: Some(uid.to_string()),
                    ..app(2, 2, r)
                };
            }
            let addresses = Addresses {
                databases: list(c.databases),
                caches: list(c.caches),
                apps: list(c.apps),
            };
            t.same_server = same_servers(&addresses, &t.regions);
            let mut got: Vec<String> = t
                .same_server
                .iter()
                .map(|s| format!("{}: {}: {}", s.part, s.regions.join("+"), s.how))
                .collect();
            got.sort();
            let mut groups: Vec<String> = c.groups.iter().map(|g| g.to_string()).collect();
            groups.sort();
            assert_eq!(got, groups, "{what}");
            judge(&mut t);
            let codes: Vec<&str> = t
                .anomalies
                .iter()
                .filter(|a| a.severity == Severity::Critical || a.code == "redis_masters")
                .map(|a| a.code.as_str())
                .collect();
            assert_eq!(codes, c.want.to_vec(), "{what}");
            if let Some(a) = t.anomalies.iter().find(|a| a.code == "same_server") {
                assert!(
                    a.message.contains("own is not observed"),
                    "{what}: {}",
                    a.message
                );
                assert!(a.fix.as_deref().unwrap_or("").contains("refuse"), "{what}");
            }
        }
    }

    #[test]
    fn primaries_and_standbys_as_a_table() {
        type Case<'a> = (
            &'a str,
            Vec<(&'a str, &'a str)>,
            Option<&'a str>,
            Option<&'a str>,
            Vec<(String, String, Option<String>)>,
        );
        let cases: Vec<Case> = vec![
            (
                "healthy: one primary, two streaming standbys",
                vec![
                    ("us", "primary 1 0/5000000"),
                    ("eu", "standby 1 0/5000000 from:us"),
                    ("ap", "standby 1 0/5000000 from:us"),
                ],
                Some("us"),
                Some("us"),
                vec![],
            ),
            (
                "the old primary came back writable after a failover",
                vec![
                    ("us", "primary 1 0/5000000"),
                    ("eu", "primary 2 0/6000000"),
                    ("ap", "standby 2 0/6000000 from:eu"),
                ],
                None,
                Some("eu"),
                vec![c("CRITICAL", "two_primaries", Some("us"))],
            ),
            (
                "two writable primaries on one timeline: no way to tell",
                vec![("us", "primary 1 0/5000000"), ("eu", "primary 1 0/6000000")],
                None,
                None,
                vec![c("CRITICAL", "two_primaries", None)],
            ),
            (
                "the primary is down: the standbys still say whom they follow",
                vec![
                    ("us", "down"),
                    ("eu", "standby 1 0/5000000 from:us stopped"),
                    ("ap", "standby 1 0/5000000 from:us stopped"),
                ],
                None,
                None,
                vec![c("CRITICAL", "no_primary", None)],
            ),
            (
                "the primary refuses the engine (a rotated password): unknown, not down",
                vec![
                    ("us", "refused"),
                    ("eu", "standby 1 0/5000000 from:us"),
                    ("ap", "standby 1 0/5000000 from:us"),
                ],
                None,
                None,
                vec![c("CRITICAL", "primary_unknown", None)],
            ),
            (
                "the primary down and a standby refusing: which is the primary is unknown",
                vec![
                    ("us", "down"),
                    ("eu", "refused"),
                    ("ap", "standby 1 0/5000000 from:us stopped"),
                ],
                None,
                None,
                vec![
                    c("CRITICAL", "primary_unknown", None),
                    c("WARNING", "database_unreachable", Some("us")),
                ],
            ),
            (
                "a standby refuses the engine beside a primary taking writes",
                vec![
                    ("us", "primary 1 0/5000000"),
                    ("eu", "refused"),
                    ("ap", "standby 1 0/5000000 from:us"),
                ],
                Some("us"),
                Some("us"),
                vec![c("WARNING", "database_refused", Some("eu"))],
            ),
            (
                "mid planned failover: the old primary fenced, nothing promoted yet",
                vec![
                    ("us", "fenced 1 0/5000000"),
                    ("eu", "standby 1 0/5000000 from:us"),
                ],
                None,
                None,
                vec![c("CRITICAL", "no_primary", None)],
            ),
            (
                "after an emergency failover whose old primary answered: fenced, not a standby",
                vec![
                    ("us", "fenced 1 0/5000000"),
                    ("eu", "primary 2 0/6000000"),
                    ("ap", "standby 2 0/6000000 from:eu"),
                ],
                Some("eu"),
                Some("eu"),
                vec![c("WARNING", "fenced_primary", Some("us"))],
            ),
            (
                "a standby left on the old timeline",
                vec![
                    ("eu", "primary 2 0/6000000"),
                    ("ap", "standby 1 0/5000000 from:us stopped"),
                    ("us", "down"),
                ],
                Some("eu"),
                Some("eu"),
                vec![
                    c("WARNING", "old_timeline", Some("ap")),
                    c("WARNING", "database_unreachable", Some("us")),
                ],
            ),
            (
                "a standby streaming from another standby",
                vec![
                    ("us", "primary 1 0/5000000"),
                    ("eu", "standby 1 0/5000000 from:us"),
                    ("ap", "standby 1 0/5000000 from:eu"),
                ],
                Some("us"),
                Some("us"),
                vec![c("WARNING", "wrong_upstream", Some("ap"))],
            ),
            (
                "a standby not streaming on the primary's timeline",
                vec![
                    ("us", "primary 1 0/5000000"),
                    ("eu", "standby 1 0/5000000 from:us stopped"),
                ],
                Some("us"),
                Some("us"),
                vec![c("WARNING", "standby_not_streaming", Some("eu"))],
            ),
            (
                "lag at the thresholds: 200 MB elevated, 600 MB warning, 2 GB critical",
                vec![
                    ("us", "primary 1 1/0"),
                    ("eu", "standby 1 0/F3800000 from:us"),
                    ("ap", "standby 1 0/DA800000 from:us"),
                    ("sa", "standby 1 0/0 from:us"),
                ],
                Some("us"),
                Some("us"),
                vec![
                    c("CRITICAL", "replication_lag", Some("sa")),
                    c("WARNING", "replication_lag", Some("ap")),
                    c("INFO", "replication_lag", Some("eu")),
                ],
            ),
        ];
        for (name, regions, primary, followed_or_current, expected) in cases {
            let t = topology(&regions);
            assert_eq!(t.primary.as_deref(), primary, "{name}: primary");
            assert_eq!(current_primary(&t), followed_or_current, "{name}: current");
            let mut got = codes(&t);
            let mut want = expected.clone();
            got.sort();
            want.sort();
            assert_eq!(got, want, "{name}: anomalies {:#?}", t.anomalies);
            assert_eq!(
                t.critical,
                expected.iter().any(|(s, _, _)| s == "CRITICAL"),
                "{name}: critical"
            );
        }
    }

    #[test]
    fn the_followed_region_is_named_when_the_primary_is_down() {
        let t = topology(&[
            ("us", "down"),
            ("eu", "standby 1 0/5000000 from:us stopped"),
            ("ap", "standby 1 0/5000000 from:us stopped"),
        ]);
        assert_eq!(t.followed.as_deref(), Some("us"));
        assert!(
            t.anomalies[0].message.contains("follow us"),
            "{:?}",
            t.anomalies
        );
        assert!(t.anomalies[0]
            .fix
            .as_deref()
            .unwrap_or("")
            .contains("emergency-failover"));
    }

    #[test]
    fn lag_is_only_measured_on_the_primarys_timeline() {
        let t = topology(&[
            ("eu", "primary 2 0/6000000"),
            ("ap", "standby 1 0/7000000 from:eu"),
        ]);
        assert_eq!(t.regions["ap"].database.lag_bytes, None);
        let t = topology(&[
            ("eu", "primary 2 0/6000000"),
            ("ap", "standby 2 0/7000000 from:eu"),
        ]);
        assert_eq!(
            t.regions["ap"].database.lag_bytes,
            Some(0),
            "a standby ahead (read later) is never negative"
        );
    }

    fn with(mut t: Topology, f: impl FnOnce(&mut Topology)) -> Topology {
        f(&mut t);
        derive(&mut t, &Thresholds::default());
        judge(&mut t);
        t
    }

    /// A reachable Redis primary.
    fn redis_primary() -> Cache {
        Cache {
            reachable: true,
            role: "master".into(),
            ..Default::default()
        }
    }

    /// A Redis that answers but refuses the engine's password.
    fn redis_refusing() -> Cache {
        Cache {
            role: "refused".into(),
            error: Some("WRONGPASS".into()),
            ..Default::default()
        }
    }

    /// A reachable Redis replica of `of`'s primary, its link "up" or "down".
    fn redis_replica(of: &str, link: &str) -> Cache {
        Cache {
            reachable: true,
            role: "replica".into(),
            master_region: Some(of.into()),
            link: Some(link.into()),
            ..Default::default()
        }
    }

    fn app(replicas: i64, ready: i64, uses: &str) -> App {
        App {
            checked: true,
            reachable: true,
            replicas,
            ready,
            database_url: Some("postgres://app:***@db/app".into()),
            database_region: (!uses.is_empty()).then(|| uses.to_string()),
            error: None,
            nodes: None,
            cordoned: None,
            cordoned_nodes: Vec::new(),
            kubectl: None,
            uid: None,
        }
    }

    /// A region cordoned whole is fixed by the command that uncordons its nodes, where the
    /// observation named them and the cluster; else by the action's and kubectl's names.
    #[test]
    fn a_cordoned_region_spells_the_kubectl_command_that_uncordons_it() {
        let base = || {
            topology(&[
                ("us", "primary 1 0/5000000"),
                ("eu", "standby 1 0/5000000 from:us"),
            ])
        };
        let cases: Vec<(&str, Option<&str>, Vec<&str>, &str)> = vec![
            (
                "names and cluster known",
                Some("--kubeconfig /etc/k8s/eu.yaml --context eu-prod"),
                vec!["eu-node-1", "eu-node-2"],
                "otherwise uncordon them: `kubectl --kubeconfig /etc/k8s/eu.yaml --context eu-prod uncordon eu-node-1 eu-node-2`",
            ),
            (
                "an assumed world: no names",
                None,
                vec![],
                "otherwise uncordon them: k8s::uncordon, or kubectl uncordon, in eu",
            ),
        ];
        for (what, kubectl, names, want) in cases {
            let t = with(base(), |t| {
                let a = &mut t.regions.get_mut("eu").unwrap().app;
                (a.nodes, a.cordoned) = (Some(2), Some(2));
                a.kubectl = kubectl.map(str::to_string);
                a.cordoned_nodes = names.iter().map(|n| n.to_string()).collect();
            });
            let fix = t
                .anomalies
                .iter()
                .find(|a| a.code == "nodes_cordoned")
                .and_then(|a| a.fix.clone())
                .unwrap_or_default();
            assert!(fix.ends_with(want), "{what}: {fix}");
        }
    }

    /// A fenced primary names the run that fenced it, when the server says so: with no
    /// writable primary, the fix is that run's resume (or undo).
    #[test]
    fn copies_kept_beside_a_data_directory_are_named_with_what_to_do() {
        let copy = |path: &str, made_by: KeptBy, bytes: Option<u64>| KeptCopy {
            path: path.into(),
            made_by,
            made_at: "2026-12-05T21:37:33Z".into(),
            bytes,
            counted_in_part: false,
        };
        // (what, the copies, the message, the fix)
        type Case<'a> = (&'a str, Vec<KeptCopy>, &'a str, &'a str);
        let cases: Vec<Case> = vec![
            ("none", vec![], "", ""),
            (
                "a rewind's",
                vec![copy("/d/main.before-rewind-20261205T213733Z", KeptBy::Rewind, Some(3 << 20))],
                "us: its data directory from before the rewind of 2026-12-05T21:37:33Z is kept beside it: /d/main.before-rewind-20261205T213733Z (3.0 MB), with the transactions that rewind took out of it",
                "read what you need from it (start PostgreSQL on it on another port), then remove it to free its space: rm -rf /d/main.before-rewind-20261205T213733Z (the engine never removes a whole copy)",
            ),
            (
                "a base backup's",
                vec![copy("/d/main.replaced-1796472000", KeptBy::BaseBackup, Some(1 << 30))],
                "us: its data directory from before the base backup of 2026-12-05T21:37:33Z is kept beside it: /d/main.replaced-1796472000 (1.00 GB), with all it held, what it committed after the fork among it",
                "read what you need from it (start PostgreSQL on it on another port), then remove it to free its space: rm -rf /d/main.replaced-1796472000 (the engine never removes a whole copy)",
            ),
            (
                "one cut off half-way",
                vec![copy("/d/main.before-rewind-20261205T213733Z.partial", KeptBy::CutOff, Some(512))],
                "us: a rewind's copy of its data directory, cut off half-way on 2026-12-05T21:37:33Z, is left beside it: /d/main.before-rewind-20261205T213733Z.partial (512 B), with nothing whole in it",
                "remove it to free its space: rm -rf /d/main.before-rewind-20261205T213733Z.partial (the next rewind of us removes it too)",
            ),
            (
                "several: each named, the total given",
                vec![
                    copy("/d/a", KeptBy::Rewind, Some(1 << 20)),
                    copy("/d/b", KeptBy::CutOff, Some(1 << 20)),
                ],
                "us: 2 copies of its data directory are kept beside it (2.0 MB in all), each with what a rejoin took out of it: /d/a (rewind, 2026-12-05T21:37:33Z, 1.0 MB); /d/b (a rewind's copy cut off half-way, nothing whole in it, 2026-12-05T21:37:33Z, 1.0 MB)",
                "read what you need from each (start PostgreSQL on it on another port), then remove those you no longer need to free their space: rm -rf /d/a /d/b (the engine never removes a whole copy)",
            ),
            (
                "one this user cannot read: its size is not guessed",
                vec![
                    copy("/d/a", KeptBy::Rewind, None),
                    copy("/d/b", KeptBy::BaseBackup, Some(2 << 20)),
                ],
                "us: 2 copies of its data directory are kept beside it (at least 2.0 MB in all), each with what a rejoin took out of it: /d/a (rewind, 2026-12-05T21:37:33Z, its size unknown: not readable here); /d/b (base backup, 2026-12-05T21:37:33Z, 2.0 MB)",
                "read what you need from each (start PostgreSQL on it on another port), then remove those you no longer need to free their space: rm -rf /d/a /d/b (the engine never removes a whole copy)",
            ),
            (
                "one too large to count in time: what was counted, as a lower bound",
                vec![KeptCopy {
                    counted_in_part: true,
                    ..copy("/d/a", KeptBy::Rewind, Some(5 << 30))
                }],
                "us: its data directory from before the rewind of 2026-12-05T21:37:33Z is kept beside it: /d/a (at least 5.00 GB: counting stopped), with the transactions that rewind took out of it",
                "read what you need from it (start PostgreSQL on it on another port), then remove it to free its space: rm -rf /d/a (the engine never removes a whole copy)",
            ),
        ];
        for (what, copies, message, fix) in cases {
            // A region is clean otherwise: the copies are the one thing said, as info.
            let t = with(topology(&[("us", "primary 1 0/5000000")]), |t| {
                t.regions.get_mut("us").unwrap().database.kept_copies = copies.clone();
            });
            let kept: Vec<_> = t
                .anomalies
                .iter()
                .filter(|a| a.code == "kept_copies")
                .collect();
            if copies.is_empty() {
                assert!(kept.is_empty(), "{what}: {kept:?}");
                continue;
            }
            assert_eq!(kept.len(), 1, "{what}: {:?}", t.anomalies);
            assert_eq!(kept[0].severity, Severity::Info, "{what}");
            assert_eq!(kept[0].region.as_deref(), Some("us"), "{what}");
            assert_eq!(kept[0].message, message, "{what}");
            assert_eq!(kept[0].fix.as_deref(), Some(fix), "{what}");
        }
    }

    #[test]
    fn a_fenced_primary_names_the_run_that_fenced_it() {
        // (what, regions, the anomaly's message, how its fix ends)
        type Case<'a> = (&'a str, &'a [(&'a str, &'a str)], &'a str, &'a str);
        let cases: &[Case] = &[
            (
                "a switchover stopped after its fence",
                &[("us", "fenced 1 0/5000000 by:20261205-0312-ab12"), ("eu", "standby 1 0/5000000 from:us")],
                "no database accepts writes: us (fenced by run 20261205-0312-ab12 of planned-failover.rhai) is a fenced (read-only) primary",
                "finish the run that fenced it: `runbook resume 20261205-0312-ab12 --state-dir /srv/rb`; or undo what it changed: `runbook resume 20261205-0312-ab12 --undo --state-dir /srv/rb`",
            ),
            (
                "fenced by hand: no run to name",
                &[("us", "fenced 1 0/5000000"), ("eu", "standby 1 0/5000000 from:us")],
                "no database accepts writes: us is a fenced (read-only) primary",
                "finish the procedure that fenced it (`runbook runs --state-dir /srv/rb`, then `runbook resume RUN --state-dir /srv/rb`), or undo it",
            ),
            (
                "two fenced by two runs: both named, no one run to resume",
                &[("us", "fenced 1 0/5000000 by:A"), ("eu", "fenced 1 0/5000000 by:B")],
                "no database accepts writes: eu (fenced by run B of planned-failover.rhai), us (fenced by run A of planned-failover.rhai) is a fenced (read-only) primary",
                "finish the procedure that fenced it (`runbook runs --state-dir /srv/rb`, then `runbook resume RUN --state-dir /srv/rb`), or undo it",
            ),
            (
                "a former primary fenced beside a writable one: named, rejoined",
                &[("us", "fenced 1 0/5000000 by:20261205-0312-ab12"), ("eu", "primary 2 0/6000000")],
                "us is a fenced (read-only) former primary (fenced by run 20261205-0312-ab12 of planned-failover.rhai), not a standby: it replicates nothing",
                "rejoin.rhai -i INVENTORY --var region=us --state-dir /srv/rb",
            ),
        ];
        for (what, regions, message, fix) in cases {
            let mut t = topology(regions);
            t.commands = std::sync::Arc::new(crate::action::Invocation {
                store_flag: " --state-dir /srv/rb".into(),
                ..Default::default()
            });
            judge(&mut t);
            let found = t
                .anomalies
                .iter()
                .find(|a| a.code == "no_primary" || a.code == "fenced_primary")
                .unwrap_or_else(|| panic!("{what}: {:?}", t.anomalies));
            assert_eq!(found.message, *message, "{what}");
            let got = found.fix.clone().unwrap_or_default();
            assert!(got.ends_with(fix), "{what}: {got}");
        }
    }

    /// Traffic anomalies name the drain that fixes them: a failing region out of rotation (and,
    /// for the primary's region, the failover if its database is down too); with every weight
    /// 0, the primary's region back in.
    #[test]
    fn traffic_anomalies_name_the_drain() {
        let unhealthy = Health {
            checked: true,
            ok: false,
            status: Some(503),
            latency_ms: Some(3),
            error: None,
        };
        // (what, us weight, eu weight, us health fails, eu health fails, anomaly, region, how the fix ends)
        type Case<'a> = (
            &'a str,
            i64,
            i64,
            bool,
            bool,
            &'a str,
            Option<&'a str>,
            &'a str,
        );
        let cases: &[Case] = &[
            (
                "a standby region failing in rotation",
                100, 30, false, true,
                "traffic_to_unready", Some("eu"),
                "take it out of rotation: runbook run runbooks/drain.rhai -i INVENTORY --var region=eu",
            ),
            (
                "the primary's region failing in rotation",
                100, 30, true, false,
                "traffic_to_unready", Some("us"),
                "take it out of rotation: runbook run runbooks/drain.rhai -i INVENTORY --var region=us; if its database is down too, fail over: runbook run runbooks/emergency-failover.rhai -i INVENTORY",
            ),
            (
                "no weight anywhere",
                0, 0, false, false,
                "no_traffic", None,
                "put the primary's region back in rotation: runbook run runbooks/drain.rhai -i INVENTORY --var region=us --var restore=true --var weight=100",
            ),
        ];
        for (what, us_w, eu_w, us_fails, eu_fails, code, region, fix) in cases {
            let mut t = topology(&[
                ("us", "primary 1 0/5000000"),
                ("eu", "standby 1 0/5000000 from:us"),
            ]);
            for (name, w, fails) in [("us", us_w, us_fails), ("eu", eu_w, eu_fails)] {
                let r = t.regions.get_mut(name).unwrap();
                r.dns_weight = Some(*w);
                if *fails {
                    r.health = unhealthy.clone();
                }
            }
            judge(&mut t);
            let found = t
                .anomalies
                .iter()
                .find(|a| a.code == *code)
                .unwrap_or_else(|| panic!("{what}: {:?}", t.anomalies));
            assert_eq!(found.region.as_deref(), *region, "{what}");
            assert_eq!(found.fix.as_deref(), Some(*fix), "{what}");
        }
    }

    /// While a former primary takes writes, the rejoin of any other region refuses: status
    /// names the former primary's rejoin first, in every other region's fix.
    #[test]
    fn while_a_former_primary_takes_writes_the_others_rejoin_after_it() {
        // (what, regions, the anomaly, its region, the regions whose rejoins the fix names in order)
        type Case<'a> = (
            &'a str,
            &'a [(&'a str, &'a str)],
            &'a str,
            &'a str,
            &'a [&'a str],
        );
        let cases: &[Case] = &[
            (
                "a standby of the returned old primary, on its old timeline",
                &[
                    ("us", "primary 1 0/5000000"),
                    ("eu", "primary 2 0/6000000"),
                    ("ap", "standby 1 0/5000000 from:us"),
                ],
                "old_timeline",
                "ap",
                &["us", "ap"],
            ),
            (
                "a standby not streaming",
                &[
                    ("us", "primary 1 0/5000000"),
                    ("eu", "primary 2 0/6000000"),
                    ("ap", "standby 2 0/6000000 stopped"),
                ],
                "standby_not_streaming",
                "ap",
                &["us", "ap"],
            ),
            (
                "the returned old primary: its own fence and rejoin",
                &[
                    ("us", "primary 1 0/5000000"),
                    ("eu", "primary 2 0/6000000"),
                    ("ap", "standby 2 0/6000000 from:eu"),
                ],
                "two_primaries",
                "us",
                &["us"],
            ),
            (
                "one primary: a standby's own rejoin",
                &[
                    ("eu", "primary 2 0/6000000"),
                    ("ap", "standby 1 0/5000000 from:us"),
                ],
                "old_timeline",
                "ap",
                &["ap"],
            ),
        ];
        for (what, regions, code, region, order) in cases {
            let t = topology(regions);
            let found = t
                .anomalies
                .iter()
                .find(|a| a.code == *code && a.region.as_deref() == Some(*region))
                .unwrap_or_else(|| panic!("{what}: {:?}", t.anomalies));
            let fix = found.fix.clone().unwrap_or_default();
            let rejoin = |r: &str| t.commands.run("rejoin", &format!(" --var region={r}"));
            let want = match order {
                // A former primary that takes writes: fenced first, from anywhere.
                [only] if *code == "two_primaries" => format!(
                    "stop its writes now: {}; then make it a standby: {}",
                    t.commands.run("fence", &format!(" --var region={only}")),
                    rejoin(only)
                ),
                [only] => rejoin(only),
                [first, then] => format!(
                    "first rejoin the former primary {first}: {}; then {then}: {}",
                    rejoin(first),
                    rejoin(then)
                ),
                _ => unreachable!(),
            };
            assert_eq!(fix, want, "{what}");
        }
    }

    #[test]
    fn traffic_apps_redis_and_the_inventory_as_a_table() {
        let base = || {
            topology(&[
                ("us", "primary 1 0/5000000"),
                ("eu", "standby 1 0/5000000 from:us"),
            ])
        };
        type Case = (
            &'static str,
            Box<dyn FnOnce(&mut Topology)>,
            Vec<(String, String, Option<String>)>,
        );
        let cases: Vec<Case> = vec![
            (
                "weight on a region with no ready replicas",
                Box::new(|t: &mut Topology| {
                    t.regions.get_mut("us").unwrap().app = app(3, 3, "us");
                    t.regions.get_mut("eu").unwrap().app = app(0, 0, "us");
                    t.regions.get_mut("us").unwrap().dns_weight = Some(0);
                    t.regions.get_mut("eu").unwrap().dns_weight = Some(100);
                }),
                vec![c("CRITICAL", "traffic_to_unready", Some("eu"))],
            ),
            (
                "weight on a region failing its health check",
                Box::new(|t: &mut Topology| {
                    let us = t.regions.get_mut("us").unwrap();
                    us.dns_weight = Some(100);
                    us.health = Health {
                        checked: true,
                        ok: false,
                        status: Some(503),
                        latency_ms: Some(3),
                        error: None,
                    };
                    t.regions.get_mut("eu").unwrap().dns_weight = Some(0);
                }),
                vec![c("CRITICAL", "traffic_to_unready", Some("us"))],
            ),
            (
                "no weight anywhere",
                Box::new(|t: &mut Topology| {
                    t.regions.get_mut("us").unwrap().dns_weight = Some(0);
                    t.regions.get_mut("eu").unwrap().dns_weight = Some(0);
                }),
                vec![c("CRITICAL", "no_traffic", None)],
            ),
            (
                "a secondary reading its local standby is fine",
                Box::new(|t: &mut Topology| {
                    t.regions.get_mut("us").unwrap().app = app(3, 3, "us");
                    t.regions.get_mut("eu").unwrap().app = app(2, 2, "eu");
                }),
                vec![],
            ),
            (
                "an app on another region's standby",
                Box::new(|t: &mut Topology| {
                    t.regions
                        .insert("ap".into(), region("standby 1 0/5000000 from:us"));
                    t.regions.get_mut("ap").unwrap().app = app(2, 2, "eu");
                }),
                vec![c("WARNING", "app_wrong_database", Some("ap"))],
            ),
            (
                "an app writing to a returned old primary",
                Box::new(|t: &mut Topology| {
                    t.regions.get_mut("eu").unwrap().database = db("primary 2 0/6000000");
                    t.regions.get_mut("us").unwrap().app = app(3, 3, "us");
                    t.regions.get_mut("eu").unwrap().app = app(3, 3, "eu");
                }),
                vec![
                    c("CRITICAL", "two_primaries", Some("us")),
                    c("CRITICAL", "app_wrong_database", Some("us")),
                ],
            ),
            (
                "an app on a database not in the inventory",
                Box::new(|t: &mut Topology| {
                    t.regions.get_mut("us").unwrap().app = app(3, 3, "");
                }),
                vec![c("WARNING", "app_wrong_database", Some("us"))],
            ),
            (
                "the inventory names another primary",
                Box::new(|t: &mut Topology| {
                    t.inventory_primary = Some("eu".into());
                }),
                vec![c("INFO", "inventory_disagrees", None)],
            ),
            (
                "a region out of rotation failing its health check",
                Box::new(|t: &mut Topology| {
                    t.regions.get_mut("eu").unwrap().health = Health {
                        checked: true,
                        ok: false,
                        error: Some("connection refused".into()),
                        ..Default::default()
                    };
                }),
                vec![c("WARNING", "health_failing", Some("eu"))],
            ),
            (
                "two Redis primaries, one in the wrong region",
                Box::new(|t: &mut Topology| {
                    t.regions.get_mut("us").unwrap().redis = redis_primary();
                    t.regions.get_mut("eu").unwrap().redis = redis_primary();
                }),
                vec![c("WARNING", "redis_masters", None)],
            ),
            (
                "a Redis that refuses the engine's password",
                Box::new(|t: &mut Topology| {
                    t.regions.get_mut("us").unwrap().redis = redis_primary();
                    t.regions.get_mut("eu").unwrap().redis = redis_refusing();
                }),
                vec![c("WARNING", "redis_refused", Some("eu"))],
            ),
            (
                "a Redis replica with its link down",
                Box::new(|t: &mut Topology| {
                    t.regions.get_mut("us").unwrap().redis = redis_primary();
                    t.regions.get_mut("eu").unwrap().redis = redis_replica("us", "down");
                }),
                vec![c("WARNING", "redis_link_down", Some("eu"))],
            ),
            (
                "the Redis primary away from the database primary",
                Box::new(|t: &mut Topology| {
                    t.regions.get_mut("us").unwrap().redis = redis_replica("eu", "up");
                    t.regions.get_mut("eu").unwrap().redis = redis_primary();
                }),
                vec![c("WARNING", "redis_wrong_master", Some("eu"))],
            ),
            (
                "rewind impossible: no wal_log_hints, no checksums",
                Box::new(|t: &mut Topology| {
                    t.regions.get_mut("eu").unwrap().database.wal_log_hints = false;
                }),
                vec![c("WARNING", "rewind_not_ready", Some("eu"))],
            ),
            (
                "wal_log_hints waiting for a restart",
                Box::new(|t: &mut Topology| {
                    t.regions.get_mut("us").unwrap().database.pending_restart =
                        vec!["wal_log_hints".into(), "max_connections".into()];
                }),
                vec![
                    c("WARNING", "rewind_not_ready", Some("us")),
                    c("INFO", "pending_restart", Some("us")),
                ],
            ),
            (
                "checksums are enough for rewind",
                Box::new(|t: &mut Topology| {
                    let d = &mut t.regions.get_mut("eu").unwrap().database;
                    d.wal_log_hints = false;
                    d.data_checksums = true;
                }),
                vec![],
            ),
            (
                "every node of a region cordoned",
                Box::new(|t: &mut Topology| {
                    let a = &mut t.regions.get_mut("eu").unwrap().app;
                    (a.nodes, a.cordoned) = (Some(3), Some(3));
                }),
                vec![c("WARNING", "nodes_cordoned", Some("eu"))],
            ),
            (
                "some nodes cordoned (one drained for a kernel update)",
                Box::new(|t: &mut Topology| {
                    let a = &mut t.regions.get_mut("eu").unwrap().app;
                    (a.nodes, a.cordoned) = (Some(3), Some(1));
                }),
                vec![c("INFO", "nodes_cordoned", Some("eu"))],
            ),
            (
                "nodes none cordoned, none listed, or an empty cluster",
                Box::new(|t: &mut Topology| {
                    let a = &mut t.regions.get_mut("eu").unwrap().app;
                    (a.nodes, a.cordoned) = (Some(3), Some(0));
                    let b = &mut t.regions.get_mut("us").unwrap().app;
                    (b.nodes, b.cordoned) = (Some(0), Some(0));
                }),
                vec![],
            ),
        ];
        for (name, change, expected) in cases {
            let t = with(base(), change);
            let mut got = codes(&t);
            let mut want = expected;
            got.sort();
            want.sort();
            assert_eq!(got, want, "{name}: {:#?}", t.anomalies);
        }
    }

    #[test]
    fn postconditions_as_a_table() {
        let good = || {
            let mut t = topology(&[
                ("us", "fenced 1 0/5000000"),
                ("eu", "primary 2 0/6000000"),
                ("ap", "standby 2 0/6000000 from:eu"),
            ]);
            t.regions.get_mut("eu").unwrap().app = app(3, 3, "eu");
            t.regions.get_mut("eu").unwrap().dns_weight = Some(100);
            t.regions.get_mut("us").unwrap().dns_weight = Some(0);
            t.regions.get_mut("ap").unwrap().dns_weight = Some(0);
            t
        };
        let expect = |standbys: &[&str]| Expect {
            primary: "eu".into(),
            standbys: standbys.iter().map(|s| s.to_string()).collect(),
            excused: vec![],
        };
        let excusing = |standbys: &[&str], excused: &str| Expect {
            excused: vec![excused.to_string()],
            ..expect(standbys)
        };
        type Case = (
            &'static str,
            Box<dyn FnOnce(&mut Topology)>,
            Expect,
            Vec<&'static str>,
        );
        let cases: Vec<Case> = vec![
            ("an emergency failover's end state (old primary fenced, not required)", Box::new(|_: &mut Topology| {}), expect(&["ap"]), vec![]),
            ("a switchover must also leave the old primary streaming", Box::new(|_: &mut Topology| {}), expect(&["ap", "us"]),
                vec!["us should be a standby streaming from eu; it is a fenced (read-only) primary on timeline 1"]),
            ("the old primary writable again", Box::new(|t: &mut Topology| {
                t.regions.get_mut("us").unwrap().database = db("primary 1 0/5000000");
            }), expect(&["ap"]), vec!["eu should be the one writable primary; writable now: eu, us"]),
            ("a reachable standby left behind", Box::new(|t: &mut Topology| {
                t.regions.get_mut("ap").unwrap().database = db("standby 1 0/5000000 from:us stopped");
            }), expect(&[]), vec!["ap should be a standby streaming from eu; it is a standby not streaming (receiver stopped, configured upstream us)"]),
            ("an unreachable old primary is allowed", Box::new(|t: &mut Topology| {
                t.regions.get_mut("us").unwrap().database = db("down");
            }), expect(&["ap"]), vec![]),
            // Running, and possibly taking writes: nothing shows it does not.
            ("an old primary that refuses the engine is not", Box::new(|t: &mut Topology| {
                t.regions.get_mut("us").unwrap().database = db("refused");
            }), expect(&["ap"]), vec!["us should be a standby streaming from eu; it is running but refusing the engine (authentication failed)"]),
            ("nor excused", Box::new(|t: &mut Topology| {
                t.regions.get_mut("us").unwrap().database = db("refused");
            }), excusing(&["ap"], "us"), vec!["us should be a standby streaming from eu; it is running but refusing the engine (authentication failed)"]),
            ("traffic to a region with no ready replicas", Box::new(|t: &mut Topology| {
                t.regions.get_mut("eu").unwrap().app = app(3, 0, "eu");
            }), expect(&["ap"]), vec!["eu has DNS weight 100 but no ready replicas (3 wanted)"]),
            ("an app still on the old primary", Box::new(|t: &mut Topology| {
                t.regions.get_mut("ap").unwrap().app = app(2, 2, "us");
            }), expect(&["ap"]), vec!["ap's application uses us's database, not the primary eu"]),
            ("an app on its own region's standby, down after it stopped in recovery, is allowed", Box::new(|t: &mut Topology| {
                let ap = t.regions.get_mut("ap").unwrap();
                ap.database = db("down");
                ap.database.stopped_state = Some("shut down in recovery".into());
                ap.app = app(2, 2, "ap");
            }), expect(&[]), vec![]),
            ("the same after a crash (in archive recovery)", Box::new(|t: &mut Topology| {
                let ap = t.regions.get_mut("ap").unwrap();
                ap.database = db("down");
                ap.database.stopped_state = Some("in archive recovery".into());
                ap.app = app(2, 2, "ap");
            }), expect(&[]), vec![]),
            ("an app on its own region's database, down as a primary: it could come back writable", Box::new(|t: &mut Topology| {
                let us = t.regions.get_mut("us").unwrap();
                us.database = db("down");
                us.database.stopped_state = Some("in production".into());
                us.app = app(3, 3, "us");
            }), expect(&[]), vec!["us's application uses us's database, not the primary eu"]),
            ("an app on a database down with no data directory to read", Box::new(|t: &mut Topology| {
                let ap = t.regions.get_mut("ap").unwrap();
                ap.database = db("down");
                ap.app = app(2, 2, "ap");
            }), expect(&[]), vec!["ap's application uses ap's database, not the primary eu"]),
            ("a down standby named as required still fails", Box::new(|t: &mut Topology| {
                let ap = t.regions.get_mut("ap").unwrap();
                ap.database = db("down");
                ap.database.stopped_state = Some("shut down in recovery".into());
            }), expect(&["ap"]), vec!["ap should be a standby streaming from eu; it is unreachable (connection refused)"]),
            ("a standby that followed the former primary a rejoin made a standby: excused", Box::new(|t: &mut Topology| {
                t.regions.get_mut("ap").unwrap().database = db("standby 1 0/5000000 from:us stopped");
            }), excusing(&[], "ap"), vec![]),
            ("the same, not excused", Box::new(|t: &mut Topology| {
                t.regions.get_mut("ap").unwrap().database = db("standby 1 0/5000000 from:us stopped");
            }), expect(&[]), vec!["ap should be a standby streaming from eu; it is a standby not streaming (receiver stopped, configured upstream us)"]),
            ("excused, but writable: never", Box::new(|t: &mut Topology| {
                t.regions.get_mut("ap").unwrap().database = db("primary 1 0/5000000");
            }), excusing(&[], "ap"), vec!["eu should be the one writable primary; writable now: ap, eu"]),
            ("excused and named as required: required wins", Box::new(|t: &mut Topology| {
                t.regions.get_mut("ap").unwrap().database = db("standby 1 0/5000000 from:us stopped");
            }), excusing(&["ap"], "ap"), vec!["ap should be a standby streaming from eu; it is a standby not streaming (receiver stopped, configured upstream us)"]),
            ("an app scaled to 0 is not checked", Box::new(|t: &mut Topology| {
                t.regions.get_mut("us").unwrap().app = app(0, 0, "us");
            }), expect(&["ap"]), vec![]),
            ("Redis must follow the database", Box::new(|t: &mut Topology| {
                t.regions.get_mut("eu").unwrap().redis = redis_replica("us", "up");
                t.regions.get_mut("us").unwrap().redis = redis_primary();
            }), expect(&["ap"]), vec!["eu's Redis should be the primary; it is a replica", "us's Redis should be a replica of eu's; it is a primary"]),
            // One that does not answer is let be; one that refuses cannot be shown to follow.
            ("a Redis that refuses the engine", Box::new(|t: &mut Topology| {
                t.regions.get_mut("ap").unwrap().redis = redis_refusing();
            }), expect(&["ap"]), vec!["ap's Redis refuses the engine (WRONGPASS): whether it follows eu cannot be checked"]),
        ];
        for (name, change, e, want) in cases {
            let t = with(good(), change);
            assert_eq!(violations(&t, &e), want, "{name}");
        }
    }

    #[test]
    fn severity_follows_the_lag_thresholds() {
        const MB: i64 = 1024 * 1024;
        let th = Thresholds::default();
        for (lag, want) in [
            (0, "acceptable"),
            (99 * MB, "acceptable"),
            (100 * MB, "elevated"),
            (500 * MB, "elevated"),
            (501 * MB, "warning"),
            (1024 * MB, "warning"),
            (1025 * MB, "critical"),
        ] {
            assert_eq!(th.severity(lag), want, "{lag}");
        }
    }
}
