//! Reading every region at once: its database, Redis, health endpoint and application, and the
//! DNS weights. Each probe has its own time limit and never fails the whole: a part that does
//! not answer is observed as unreachable, with its reason.

use std::collections::BTreeMap;
use std::time::Duration;

use serde_json::Value;

use super::model::{App, Cache, Database, Health, KeptCopy, Region, SlotView, Topology};
use super::rules::Addresses;
use super::{InventoryView, RegionTargets};
use crate::action::types::endpoint;
use crate::action::{dns, http, k8s, pg, redis, Action, ActionError, Cx};
use crate::secret::mask_url_passwords;

/// `probe`, or the error of a part that did not answer within the probe's limit: an address
/// that takes the connection and never answers (a lost region's) must not hold the observation
/// for each client's own, longer timeouts.
async fn within<T>(
    cx: &Cx,
    what: &str,
    probe: impl std::future::Future<Output = Result<T, ActionError>>,
) -> Result<T, ActionError> {
    tokio::time::timeout(cx.timeout, probe)
        .await
        .unwrap_or_else(|_| {
            Err(ActionError::not_sent(format!(
                "{what} did not answer within {}",
                crate::action::Dur(cx.timeout)
            )))
        })
}

/// Which region an endpoint belongs to: the inventory's addresses, and for Redis also the
/// redis_host and redis_port the other regions' replicas name it by.
struct Directory {
    databases: Vec<(String, String)>,
    caches: Vec<(String, String)>,
}

impl Directory {
    fn new(inv: &InventoryView, a: &Addresses) -> Directory {
        let mut caches = a.caches.clone();
        for (name, r) in &inv.regions {
            if let (Some(h), Some(p)) = (&r.redis_host, r.redis_port) {
                caches.push((name.clone(), format!("{}:{p}", h.to_ascii_lowercase())));
            }
        }
        Directory {
            databases: a.databases.clone(),
            caches,
        }
    }

    fn find(list: &[(String, String)], e: (String, u16)) -> Option<String> {
        let e = format!("{}:{}", e.0, e.1);
        list.iter().find(|(_, x)| *x == e).map(|(n, _)| n.clone())
    }

    fn database(&self, url: &str) -> Option<String> {
        Self::find(&self.databases, endpoint(url, 5432)?)
    }

    fn cache(&self, hostport: &str) -> Option<String> {
        Self::find(
            &self.caches,
            endpoint(&format!("redis://{hostport}"), 6379)?,
        )
    }
}

/// Where each region's parts are, as the inventory gives them (a secret that cannot be read,
/// as offline, is left out): host:port as `endpoint` reads it, and the Deployment.
pub fn addresses(inv: &InventoryView) -> Addresses {
    let of = |url: &Option<crate::secret::SecretString>, port: u16| {
        url.as_ref()
            .and_then(|u| u.reveal().ok())
            .and_then(|u| endpoint(&u, port))
            .map(|(h, p)| format!("{h}:{p}"))
    };
    let global = inv.k8s.as_ref().and_then(|k| k.kubeconfig.clone());
    let mut a = Addresses::default();
    for (name, r) in &inv.regions {
        a.databases
            .extend(of(&r.database_url, 5432).map(|e| (name.clone(), e)));
        a.caches
            .extend(of(&r.redis_url, 6379).map(|e| (name.clone(), e)));
        if let (Some(context), Some(deployment)) = (&r.context, &r.deployment) {
            let file = r
                .kubeconfig
                .as_ref()
                .or(global.as_ref())
                .map(|k| format!(" of {k}"))
                .unwrap_or_default();
            let ns = r
                .namespace
                .as_deref()
                .unwrap_or("(the context's namespace)");
            a.apps.push((
                name.clone(),
                format!("{ns}/{deployment} in context {context}{file}"),
            ));
        }
    }
    a
}

const PROBE_SQL: &str = concat!(
    "SELECT ",
    pg::position_columns!(),
    ",
  to_char(pg_postmaster_start_time() AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"') AS server_start,
  (SELECT setting FROM pg_settings WHERE name = 'primary_conninfo') AS conninfo,
  current_setting('wal_log_hints') = 'on' AS wal_log_hints,
  current_setting('data_checksums') = 'on' AS data_checksums,
  (SELECT COALESCE(json_agg(name ORDER BY name), '[]') FROM pg_settings WHERE pending_restart) AS pending_restart,
  (SELECT COALESCE(json_agg(json_build_object('name', slot_name, 'active', active) ORDER BY slot_name), '[]') FROM pg_replication_slots) AS slots,
  (SELECT COALESCE(json_object_agg(COALESCE(application_name, ''), state), '{}') FROM pg_stat_replication) AS replicas"
);

const NEWEST_SEGMENT_SQL: &str = "
SELECT max(('x' || substr(name, 1, 8))::bit(32)::int) AS tli FROM pg_ls_waldir() WHERE name ~ '^[0-9A-F]{24}$'";

fn text(v: &Value) -> Option<String> {
    v.as_str().map(str::to_string)
}

async fn database(
    name: &str,
    r: &RegionTargets,
    tools: &(Option<String>, Option<String>),
    dir: &Directory,
    cx: &Cx,
) -> Database {
    let Some(url) = &r.database_url else {
        return Database {
            role: "absent".into(),
            ..Default::default()
        };
    };
    let label = Some(name.to_string());
    let mut refused = false;
    let answer = within(cx, "the database", async {
        let (client, target) = pg::connect_or_refused(url, &label, cx).await.map_err(|u| {
            refused = u.answered;
            u.error
        })?;
        let mut row = pg::json_row(&client, &target, PROBE_SQL).await?;
        if row["in_recovery"] == true && row["wal_receiver"].is_null() {
            // With no WAL receiver running, the checkpoint's timeline may be several behind:
            // the newest timeline among the WAL segments it holds is the one it replays.
            // (pg_ls_waldir needs pg_monitor; without it the checkpoint's timeline stays.)
            if let Ok(seg) = pg::json_row(&client, &target, NEWEST_SEGMENT_SQL).await {
                if let (Some(a), Some(b)) = (seg["tli"].as_i64(), row["timeline"].as_i64()) {
                    row["timeline"] = a.max(b).into();
                }
            }
        }
        Ok::<_, crate::action::ActionError>(row)
    })
    .await;
    let row = match answer {
        Ok(row) => row,
        // It answered but would not let the engine in: running, whatever it is.
        Err(e) if refused => {
            return Database {
                role: "refused".into(),
                error: Some(e.message),
                ..Default::default()
            };
        }
        Err(e) => {
            let mut db = Database {
                role: "unreachable".into(),
                error: Some(e.message),
                ..Default::default()
            };
            if let Some(data_dir) = &r.pg_data_dir {
                on_disk(&mut db, data_dir, tools, cx).await;
            }
            return db;
        }
    };
    let in_recovery = row["in_recovery"] == true;
    let read_only = row["read_only"] == true;
    // The standby's configured upstream when its WAL receiver is not connected.
    let configured = text(&row["conninfo"])
        .filter(|c| !c.trim().is_empty())
        .and_then(|c| endpoint(&c, 5432))
        .map(|(h, p)| format!("{h}:{p}"));
    let upstream = text(&row["upstream"]).or(configured);
    let upstream_region = upstream
        .as_deref()
        .filter(|_| in_recovery)
        .and_then(|u| dir.database(&format!("postgres://{u}")));
    Database {
        reachable: true,
        error: None,
        role: if in_recovery { "standby" } else { "primary" }.into(),
        writable: !in_recovery && !read_only,
        read_only,
        fenced_by: text(&row["fenced_by"]).filter(|_| read_only && !in_recovery),
        timeline: row["timeline"].as_i64(),
        current_lsn: text(&row["current_lsn"]),
        receive_lsn: text(&row["receive_lsn"]),
        replay_lsn: text(&row["replay_lsn"]),
        wal_receiver: text(&row["wal_receiver"]),
        upstream: upstream.filter(|_| in_recovery),
        upstream_region,
        lag_bytes: None,
        lag_severity: None,
        slots: row["slots"]
            .as_array()
            .map(|a| {
                a.iter()
                    .map(|s| SlotView {
                        name: text(&s["name"]).unwrap_or_default(),
                        active: s["active"] == true,
                    })
                    .collect()
            })
            .unwrap_or_default(),
        replicas: row["replicas"]
            .as_object()
            .map(|m| {
                m.iter()
                    .map(|(k, v)| (k.clone(), text(v).unwrap_or_default()))
                    .collect()
            })
            .unwrap_or_default(),
        wal_log_hints: row["wal_log_hints"] == true,
        data_checksums: row["data_checksums"] == true,
        pending_restart: row["pending_restart"]
            .as_array()
            .map(|a| a.iter().filter_map(text).collect())
            .unwrap_or_default(),
        stopped_state: None,
        server_start: text(&row["server_start"]),
        wal_end_lsn: None,
        kept_copies: vec![],
    }
}

/// How long the sizes of one region's kept copies may take to count (a copy of a database
/// of many files): past it, a size is what was counted, said to be a lower bound.
const COUNT_WITHIN: Duration = Duration::from_secs(2);

/// The copies rejoins kept beside a data directory on this host, with their sizes.
fn kept_copies(data_dir: &str) -> Vec<KeptCopy> {
    let dir = std::path::Path::new(data_dir.trim_end_matches('/'));
    let deadline = std::time::Instant::now() + COUNT_WITHIN;
    pg::fork::kept_beside(dir)
        .into_iter()
        .map(|k| {
            let path = dir.with_file_name(&k.name);
            let size = pg::fork::size_until(&path, deadline);
            KeptCopy {
                bytes: size.map(|(bytes, _)| bytes),
                counted_in_part: size.is_some_and(|(_, whole)| !whole),
                path: path.display().to_string(),
                made_by: k.by,
                made_at: k.at,
            }
        })
        .collect()
}

/// A database that does not answer but whose data directory is on this host: how it stopped,
/// and where its WAL ends (what a standby would need to have lost nothing).
async fn on_disk(
    db: &mut Database,
    data_dir: &str,
    (bin_dir, _os_user): &(Option<String>, Option<String>),
    cx: &Cx,
) {
    let dir = std::path::Path::new(data_dir);
    if !dir.join("global/pg_control").exists() {
        return;
    }
    let limit = cx.timeout;
    // Run as the engine's own user, which reads any data directory as root.
    let tools = pg::tool::Tools {
        bin_dir,
        os_user: &None,
    };
    let control = tools
        .run("pg_controldata", &["-D", data_dir], None, limit)
        .await;
    let Ok(control) = control.and_then(|ran| ran.output(|why| why.to_string())) else {
        return;
    };
    let field = |key: &str| pg::control_field(&control, key);
    // A server still running (its socket just does not answer) has a WAL that may still grow:
    // only a stopped one's end is final.
    let pid = std::fs::read_to_string(dir.join("postmaster.pid"))
        .ok()
        .and_then(|t| t.lines().next().and_then(|l| l.trim().parse::<i32>().ok()));
    if pid.is_some_and(|pid| unsafe { libc::kill(pid, 0) } == 0) {
        return;
    }
    db.stopped_state = field("Database cluster state:");
    let (Some(redo), Some(tli)) = (
        field("Latest checkpoint's REDO location:"),
        field("Latest checkpoint's TimeLineID:"),
    ) else {
        return;
    };
    db.timeline = tli.parse().ok();
    let segment: u64 = field("Bytes per WAL segment:")
        .and_then(|v| v.parse().ok())
        .unwrap_or(16 << 20);
    let wal = dir.join("pg_wal");
    // Read no further than the last segment on disk: past it, pg_waldump waits for a file
    // that will never come.
    let Some(bound) = pg::tool::last_segment_end(&wal, &tli, segment) else {
        return;
    };
    let wal_dir = wal.display().to_string();
    let args = ["-p", &wal_dir, "-t", &tli, "-s", &redo, "-e", &bound, "-q"];
    let dump = tools.run("pg_waldump", &args, None, limit).await;
    if let Ok(out) = dump {
        db.wal_end_lsn = if out.ok {
            // Valid to the very end of the last segment (it ended with a switch).
            Some(bound)
        } else {
            wal_end(&out.stderr, segment)
        };
    }
}

/// Where pg_waldump found the WAL to end: at an invalid record ("invalid record length at
/// 0/3000148: wanted 24, got 0"; "record with incorrect prev-link 0/1 at 0/3000148"), at a
/// page that belongs to older WAL ("unexpected pageaddr 0/1000000 in log segment
/// 000000010000000000000004, offset 8192"; "invalid magic number 0000 in log segment ...,
/// offset 0"), or at the start of a segment not written yet ("could not find file
/// \"000000010000000000000004\"").
fn wal_end(stderr: &str, segment_bytes: u64) -> Option<String> {
    let lsn_after = |marker: &str| -> Option<String> {
        let rest = stderr.split(marker).nth(1)?;
        let at = rest
            .split(|c: char| c == ':' || c == ',' || c.is_whitespace())
            .next()?;
        super::model::lsn(at).map(|_| at.to_string())
    };
    if let Some(at) = lsn_after("invalid record length at ") {
        return Some(at);
    }
    if stderr.contains("incorrect prev-link") {
        if let Some(rest) = stderr.split("incorrect prev-link").nth(1) {
            if let Some(at) = rest.split(" at ").nth(1) {
                let at = at.split(|c: char| c == ':' || c.is_whitespace()).next()?;
                return super::model::lsn(at).map(|_| at.to_string());
            }
        }
    }
    let segment_start = |name: &str| -> Option<u64> {
        let log = u64::from_str_radix(name.get(8..16)?, 16).ok()?;
        let seg = u64::from_str_radix(name.get(16..24)?, 16).ok()?;
        Some((log << 32) + seg * segment_bytes)
    };
    if let Some(rest) = stderr.split(" in log segment ").nth(1) {
        let start = segment_start(rest.get(..24)?)?;
        let offset: u64 = rest
            .split("offset ")
            .nth(1)?
            .trim()
            .split(|c: char| !c.is_ascii_digit())
            .next()?
            .parse()
            .ok()?;
        return Some(super::model::lsn_text(start + offset));
    }
    let name = stderr.split("could not find file \"").nth(1)?.get(..24)?;
    Some(super::model::lsn_text(segment_start(name)?))
}

async fn cache(name: &str, r: &RegionTargets, dir: &Directory, cx: &Cx) -> Cache {
    let Some(url) = &r.redis_url else {
        return Cache {
            role: "absent".into(),
            ..Default::default()
        };
    };
    let label = Some(name.to_string());
    let answer = within(cx, "Redis", async {
        let (mut conn, target) = redis::connect(url, &label, cx).await?;
        let role = redis::role_of(&mut conn, &target).await?;
        // A server that will not say (a renamed INFO) is only told apart by its address.
        let run_id = redis::run_id(&mut conn, &target).await.ok().flatten();
        Ok::<_, crate::action::ActionError>((role, run_id))
    })
    .await;
    match answer {
        Ok((role, run_id)) => {
            let master_region = role.primary.as_deref().and_then(|m| dir.cache(m));
            Cache {
                reachable: true,
                error: None,
                role: if role.role == "master" {
                    "master".into()
                } else {
                    "replica".into()
                },
                master: role.primary,
                master_region,
                link: role.link,
                offset: role.offset,
                run_id,
            }
        }
        // An error it answered (no time-out, no refused connection): one PING says whether it
        // is up and refuses the engine — a password it rejects, say.
        Err(e) => {
            let answered = matches!(e.kind, crate::action::ErrorKind::Permanent)
                && within(cx, "Redis", async { Ok(redis::refuses(url, cx).await) })
                    .await
                    .unwrap_or(false);
            Cache {
                reachable: false,
                error: Some(e.message),
                role: if answered { "refused" } else { "unreachable" }.into(),
                ..Default::default()
            }
        }
    }
}

/// The health rule: healthy is 2xx within 10 s (the probe's own limit may be shorter).
async fn health(r: &RegionTargets, cx: &Cx) -> Health {
    let Some(url) = &r.health_url else {
        return Health::default();
    };
    let headers = BTreeMap::new();
    let req = http::Request::get(url, &headers, cx.timeout.min(Duration::from_secs(10)));
    // The request's own timeout is the probe's limit.
    match http::send(cx, req).await {
        Ok(resp) => Health {
            checked: true,
            ok: (200..300).contains(&resp.status),
            status: Some(resp.status),
            latency_ms: Some(resp.latency_ms),
            error: None,
        },
        Err(e) => Health {
            checked: true,
            ok: false,
            status: None,
            latency_ms: None,
            error: Some(e.message),
        },
    }
}

async fn app(r: &RegionTargets, kubeconfig: &Option<String>, dir: &Directory, cx: &Cx) -> App {
    let (Some(context), Some(deployment)) = (&r.context, &r.deployment) else {
        return App::default();
    };
    let get = |kind: &str, name: Option<String>, namespace: Option<String>| k8s::GetInput {
        context: context.clone(),
        kubeconfig: r.kubeconfig.clone().or_else(|| kubeconfig.clone()),
        kind: kind.into(),
        api_version: None,
        name,
        namespace,
        labels: None,
    };
    let (got, nodes) = tokio::join!(
        within(
            cx,
            "the Kubernetes API",
            k8s::Get::run(
                get("deployment", Some(deployment.clone()), r.namespace.clone()),
                cx.clone()
            )
        ),
        within(
            cx,
            "the Kubernetes API",
            k8s::Get::run(get("node", None, None), cx.clone())
        ),
    );
    // Nodes a role may not list are unknown, not none.
    let (nodes, cordoned_nodes) = match nodes {
        Ok(list) => (
            Some(list.items.len() as i64),
            Some(
                list.items
                    .iter()
                    .filter(|n| n["spec"]["unschedulable"] == Value::Bool(true))
                    .map(|n| text(&n["metadata"]["name"]).unwrap_or_default())
                    .collect::<Vec<_>>(),
            ),
        ),
        Err(_) => (None, None),
    };
    let cordoned = cordoned_nodes.as_ref().map(|c| c.len() as i64);
    let kubectl = {
        use crate::error::shell_word;
        let file = r.kubeconfig.as_ref().or(kubeconfig.as_ref());
        Some(format!(
            "{}--context {}",
            file.map(|f| format!("--kubeconfig {} ", shell_word(f)))
                .unwrap_or_default(),
            shell_word(context)
        ))
    };
    let got = match got {
        Ok(o) => o,
        Err(e) => {
            return App {
                checked: true,
                reachable: false,
                error: Some(e.message),
                ..Default::default()
            }
        }
    };
    let d = got.items.into_iter().next().unwrap_or(Value::Null);
    let url = d["spec"]["template"]["spec"]["containers"]
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|c| c["env"].as_array().cloned().unwrap_or_default())
        .find(|e| e["name"] == "DATABASE_URL")
        .and_then(|e| text(&e["value"]));
    App {
        checked: true,
        reachable: true,
        error: None,
        replicas: d["spec"]["replicas"].as_i64().unwrap_or(1),
        ready: d["status"]["readyReplicas"].as_i64().unwrap_or(0),
        database_region: url.as_deref().and_then(|u| dir.database(u)),
        database_url: url.map(|u| mask_url_passwords(&u)),
        nodes,
        cordoned,
        cordoned_nodes: cordoned_nodes.unwrap_or_default(),
        kubectl,
        uid: text(&d["metadata"]["uid"]),
    }
}

/// What an observation reads besides the servers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Disk {
    /// The copies of a data directory kept beside it, with their sizes (a walk of their
    /// files): for status and the runbooks.
    KeptCopies,
    /// Not those: for a watcher, which observes every few seconds and decides nothing by them.
    Skip,
}

/// Reads every region (in parallel, each part within `cx.timeout`) and the DNS weights.
pub async fn observe(inv: &InventoryView, cx: &Cx, disk: Disk) -> Topology {
    let addresses = addresses(inv);
    let dir = std::sync::Arc::new(Directory::new(inv, &addresses));
    let kubeconfig = inv.k8s.as_ref().and_then(|k| k.kubeconfig.clone());
    let tools = inv
        .postgres
        .as_ref()
        .map(|p| (p.bin_dir.clone(), p.os_user.clone()))
        .unwrap_or_default();
    let mut tasks = Vec::new();
    for (name, r) in &inv.regions {
        let (name, r, cx, dir, kubeconfig, tools) = (
            name.clone(),
            r.clone(),
            cx.clone(),
            dir.clone(),
            kubeconfig.clone(),
            tools.clone(),
        );
        tasks.push(tokio::spawn(async move {
            // The copies are counted while the servers answer, not after.
            let copies = async {
                match (r.pg_data_dir.clone(), disk) {
                    (Some(data_dir), Disk::KeptCopies) => {
                        tokio::task::spawn_blocking(move || kept_copies(&data_dir))
                            .await
                            .unwrap_or_default()
                    }
                    _ => vec![],
                }
            };
            let (mut database, redis, health, app, kept) = tokio::join!(
                database(&name, &r, &tools, &dir, &cx),
                cache(&name, &r, &dir, &cx),
                health(&r, &cx),
                app(&r, &kubeconfig, &dir, &cx),
                copies,
            );
            database.kept_copies = kept;
            (
                name,
                Region {
                    database,
                    redis,
                    health,
                    app,
                    dns_weight: None,
                },
            )
        }));
    }
    let weights = async {
        let d = inv.dns.as_ref()?;
        let input = dns::RecordKey {
            zone: d.zone.clone(),
            name: d.record.clone(),
            rtype: "A".into(),
            set_identifier: None,
            endpoint_url: d.endpoint_url.clone(),
            region: d.region.clone(),
        };
        Some(dns::Get::run(input, cx.clone()).await.map(|r| r.weights))
    }
    .await;
    let mut t = Topology {
        inventory_primary: inv.primary_region.clone(),
        ..Default::default()
    };
    for task in tasks {
        if let Ok((name, region)) = task.await {
            t.regions.insert(name, region);
        }
    }
    match weights {
        Some(Ok(w)) => {
            for (name, region) in t.regions.iter_mut() {
                region.dns_weight = Some(w.get(name).copied().unwrap_or(0));
            }
        }
        Some(Err(e)) => t.dns_error = Some(e.message),
        None => {}
    }
    t.same_server = super::rules::same_servers(&addresses, &t.regions);
    t
}

#[cfg(test)]
mod tests {
    #[test]
    fn where_the_wal_ends_as_pg_waldump_says() {
        let cases = [
            ("pg_waldump: error: error in WAL record at 0/40279A0: invalid record length at 0/4027B38: wanted 24, got 0", Some("0/4027B38")),
            ("pg_waldump: error: could not find file \"000000010000000000000004\": No such file or directory", Some("0/4000000")),
            ("pg_waldump: error: could not find file \"0000000200000001000000FF\": No such file or directory", Some("1/FF000000")),
            ("pg_waldump: error: error in WAL record at 0/4000028: unexpected pageaddr 0/1000000 in log segment 000000010000000000000004, offset 8192", Some("0/4002000")),
            ("pg_waldump: error: error in WAL record at 0/4000028: invalid magic number 0000 in log segment 000000010000000000000004, offset 0", Some("0/4000000")),
            ("pg_waldump: error: error in WAL record at 0/3000110: record with incorrect prev-link 0/2000060 at 0/3000148", Some("0/3000148")),
            ("pg_waldump: error: something else", None),
        ];
        for (stderr, want) in cases {
            assert_eq!(
                super::wal_end(stderr, 16 << 20).as_deref(),
                want,
                "{stderr}"
            );
        }
    }
}
