//! The local multi-region stack: real servers on loopback standing for three regions, for
//! tests and drills. Every process it starts is stopped by its own process id.

mod http;
pub mod kube;
pub mod moto;
pub mod postgres;
pub mod prometheus;
pub mod redis;
pub mod tls;

use std::net::TcpListener;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

/// The regions the stack stands for; the first is the primary.
pub const REGIONS: [&str; 3] = ["us-east-1", "eu-west-1", "ap-southeast-1"];

/// A port free on loopback now.
pub fn free_port() -> std::io::Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// Whether this process runs as root (servers that refuse root run as their own user).
pub fn is_root() -> bool {
    unsafe { libc::geteuid() == 0 }
}

/// Runs a command, failing with its output when it does not succeed.
pub fn run(mut cmd: Command, what: &str) -> std::io::Result<String> {
    let out = cmd
        .output()
        .map_err(|e| std::io::Error::other(format!("{what}: cannot start: {e}")))?;
    if !out.status.success() {
        return Err(std::io::Error::other(format!(
            "{what} failed ({}): {}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Polls until `cond` holds, or fails naming what was awaited.
pub fn wait_until(
    limit: Duration,
    what: &str,
    mut cond: impl FnMut() -> bool,
) -> std::io::Result<()> {
    let start = Instant::now();
    while start.elapsed() < limit {
        if cond() {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Err(std::io::Error::other(format!(
        "timed out after {limit:?} waiting for {what}"
    )))
}

/// Sends `signal` to `pid` and waits for `gone` (a pid file removed, a port closed), then kills.
pub fn stop_pid(pid: i32, signal: i32, limit: Duration, gone: impl Fn() -> bool) {
    if pid <= 0 {
        return;
    }
    unsafe {
        libc::kill(pid, signal);
    }
    if wait_until(limit, "a server to stop", &gone).is_err() {
        unsafe {
            libc::kill(pid, libc::SIGKILL);
        }
        let _ = wait_until(Duration::from_secs(5), "a killed server to go", &gone);
    }
}

/// Whether a process is running: it exists and is not a zombie waiting to be reaped (an
/// orphan's parent may reap it late).
pub fn running(pid: i32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => !stat.split(") ").nth(1).unwrap_or("").starts_with('Z'),
        Err(_) => unsafe { libc::kill(pid, 0) == 0 },
    }
}

/// Reads the first line of a pid file.
pub fn read_pid(path: &Path) -> Option<i32> {
    std::fs::read_to_string(path)
        .ok()?
        .lines()
        .next()?
        .trim()
        .parse()
        .ok()
}

pub mod web;

use std::path::PathBuf;

/// The whole local stack: three regions of PostgreSQL, Redis, Kubernetes (fake API servers),
/// Route53 (moto), health endpoints and a message sink.
pub struct Stack {
    pub dir: PathBuf,
    pub pg: postgres::PgCluster,
    pub redis: redis::RedisSet,
    pub moto: moto::Moto,
    pub kube: Vec<kube::FakeKube>,
    pub web: web::Web,
    /// Prometheus scraping each region's /metrics, when asked for.
    pub prometheus: Option<prometheus::Prometheus>,
    /// How long it took to come up.
    pub started_in: Duration,
}

/// What `Stack::up_with` starts beyond the default.
#[derive(Debug, Clone, Copy, Default)]
pub struct Options {
    /// PostgreSQL and Redis accept TLS only.
    pub tls: bool,
    /// A Prometheus scrapes each region's /metrics.
    pub prometheus: bool,
}

/// Each region's P99 latency target in milliseconds (the success criteria a change is held to).
pub const P99_TARGET_MS: [u32; 3] = [100, 150, 200];

/// The namespace and deployment each region runs on the fake clusters.
pub const NAMESPACE: &str = "app";
pub const DEPLOYMENT: &str = "orchestrator";
/// The backup CronJob every region's cluster has.
pub const BACKUP_CRONJOB: &str = "pg-backup";

impl Stack {
    /// Starts everything (servers in parallel) under `dir`.
    pub fn up(dir: &Path, moto_server: &Path) -> std::io::Result<Stack> {
        Self::up_with(dir, moto_server, Options::default())
    }

    /// The same, with options: `tls` — PostgreSQL and Redis accept TLS connections only, with
    /// certificates from a CA of the stack's own (`tls/ca.crt` in the PostgreSQL directory,
    /// named in the inventory's URLs); `prometheus` — a Prometheus scraping every region.
    pub fn up_with(dir: &Path, moto_server: &Path, options: Options) -> std::io::Result<Stack> {
        let tls = options.tls;
        let started = Instant::now();
        std::fs::create_dir_all(dir)?;
        let dir = std::fs::canonicalize(dir)?;
        // The servers (PostgreSQL runs as its own user when root) read the certificates from
        // the PostgreSQL directory, which they can reach.
        let pg_dir = postgres::server_dir(&dir.join("postgres"))?;
        let tls = if tls {
            let t = tls::StackTls::create(&pg_dir.join("tls"))?;
            postgres::own(&pg_dir.join("tls"))?;
            Some(t)
        } else {
            None
        };
        let tls = tls.as_ref();
        let (pg, redis, moto) = std::thread::scope(|s| {
            let pg = s.spawn(|| postgres::PgCluster::start_in(pg_dir.clone(), &REGIONS, tls));
            let redis =
                s.spawn(|| redis::RedisSet::start_with(&dir.join("redis"), &REGIONS, true, tls));
            let moto = s.spawn(|| {
                // A port taken between pick and bind (many servers start at once in tests).
                let mut started =
                    moto::Moto::start(&dir.join("moto"), moto_server, &REGIONS, &[100, 0, 0]);
                for _ in 0..2 {
                    if started.is_ok() {
                        break;
                    }
                    started =
                        moto::Moto::start(&dir.join("moto"), moto_server, &REGIONS, &[100, 0, 0]);
                }
                started
            });
            (
                pg.join().expect("pg thread"),
                redis.join().expect("redis thread"),
                moto.join().expect("moto thread"),
            )
        });
        let (pg, redis, moto) = (pg?, redis?, moto?);
        let web = web::Web::start(&REGIONS)?;
        let prometheus = if options.prometheus {
            Some(prometheus::Prometheus::start(
                &dir.join("prometheus"),
                &web.metrics_targets(),
            )?)
        } else {
            None
        };
        let mut kube = Vec::new();
        for (i, region) in REGIONS.iter().enumerate() {
            let k = kube::FakeKube::start(region, Duration::from_millis(300))?;
            k.put(
                "namespaces",
                "",
                NAMESPACE,
                serde_json::json!({"metadata": {}, "spec": {}}),
            );
            let db = &pg.nodes[i];
            // The primary region writes to its own database; the others read their replica.
            let url = if i == 0 {
                db.url()
            } else {
                db.url_with("target_session_attrs=prefer-standby")
            };
            let replicas = if i == 0 { 3 } else { 2 };
            // Serving already when `stack up` returns: a drill starts from a running world.
            k.put_rolled_out(
                "deployments",
                NAMESPACE,
                DEPLOYMENT,
                kube::deployment(
                    DEPLOYMENT,
                    NAMESPACE,
                    replicas,
                    "orchestrator:1.0",
                    &[("DATABASE_URL", &url), ("REGION", region)],
                ),
            );
            // The database's backup job, last successful an hour ago (planned failover and
            // maintenance check it first).
            k.put(
                "cronjobs",
                NAMESPACE,
                BACKUP_CRONJOB,
                kube::backup_cronjob(BACKUP_CRONJOB, NAMESPACE, Duration::from_secs(3600)),
            );
            kube.push(k);
        }
        Ok(Stack {
            dir,
            pg,
            redis,
            moto,
            kube,
            web,
            prometheus,
            started_in: started.elapsed(),
        })
    }

    pub fn kubeconfig(&self) -> String {
        let refs: Vec<&kube::FakeKube> = self.kube.iter().collect();
        kube::kubeconfig(&refs)
    }

    /// The inventory runbooks use against this stack.
    pub fn inventory(&self, kubeconfig: &Path) -> String {
        let mut s = String::from(
            "# The local multi-region stack (`runbook stack up`). Regions, their databases, caches,\n\
             # Kubernetes contexts and health endpoints; DNS on the moto server; a message sink.\n",
        );
        s.push_str(&format!("primary_region = \"{}\"\n", REGIONS[0]));
        // The health endpoints are on loopback: 3 checks in a row take half a second, not 2.
        s.push_str("health_interval = \"250ms\"\n");
        if let Some(p) = &self.prometheus {
            // Scraped every second: short windows make the gates answer within seconds.
            s.push_str(&format!(
                "prometheus_url = \"{}\"\nprometheus_window = \"10s\"\nprometheus_interval = \"1s\"\n",
                p.url()
            ));
        }
        s.push('\n');
        for (i, region) in REGIONS.iter().enumerate() {
            let db = &self.pg.nodes[i];
            let r = &self.redis.nodes[i];
            s.push_str(&format!(
                "[regions.{region}]\ncontext = \"{region}\"\nnamespace = \"{NAMESPACE}\"\ndeployment = \"{DEPLOYMENT}\"\n\
                 database_url = \"{}\"\npg_data_dir = \"{}\"\nredis_url = \"{}\"\nredis_host = \"127.0.0.1\"\nredis_port = {}\n\
                 health_url = \"{}\"\np99_target_ms = {}\nnode_prefix = \"{region}-node-\"\nlb_ip = \"127.0.0.{}\"\nhealth_check_id = \"{}\"\napp_replicas = {}\n\n",
                db.url(),
                db.data_dir.display(),
                r.url(),
                r.port,
                self.web.health_url(region),
                P99_TARGET_MS[i],
                i + 10,
                self.moto.health_check_ids.iter().find(|(r, _)| r == region).map(|(_, id)| id.as_str()).unwrap_or(""),
                if i == 0 { 3 } else { 2 },
            ));
        }
        s.push_str(&format!(
            "[dns]\nzone = \"{}\"\nrecord = \"{}\"\nendpoint_url = \"{}\"\n\n[k8s]\nkubeconfig = \"{}\"\n\n\
             [postgres]\nbin_dir = \"{}\"\nos_user = \"postgres\"\nreplicator_password = \"{}\"\n\n\
             [backup]\ncronjob = \"{BACKUP_CRONJOB}\"\nnamespace = \"{NAMESPACE}\"\n\n\
             [notify]\nslack_webhook = \"{}\"\nwebhook = \"{}\"\n",
            moto::ZONE,
            moto::RECORD,
            self.moto.endpoint(),
            kubeconfig.display(),
            self.pg.bin.display(),
            postgres::PASSWORD,
            self.web.sink_url("/slack"),
            self.web.sink_url("/webhook"),
        ));
        if let Some(ca) = self.pg.nodes.first().and_then(|n| n.ca.as_ref()) {
            s.push_str(&format!(
                "\n# PostgreSQL and Redis accept TLS only; their certificates are signed by this CA.\n[tls]\nca = \"{}\"\n",
                ca.display()
            ));
        }
        if let Some(c) = &self.redis.cluster {
            s.push_str(&format!("\n[redis_cluster]\nurl = \"{}\"\n", c.url()));
        }
        s
    }

    /// Writes the inventory, the kubeconfig and the process record; returns their paths.
    pub fn write_files(&self, serving_pid: u32) -> std::io::Result<(PathBuf, PathBuf)> {
        let kubeconfig = self.dir.join("kubeconfig");
        std::fs::write(&kubeconfig, self.kubeconfig())?;
        let inventory = self.dir.join("inventory.toml");
        std::fs::write(&inventory, self.inventory(&kubeconfig))?;
        let record = serde_json::json!({
            "pid": serving_pid,
            "sink_port": self.web.sink_port,
            "postgres": self.pg.nodes.iter().map(|n| serde_json::json!({"region": n.region, "data_dir": n.data_dir, "pid": n.pid()})).collect::<Vec<_>>(),
            "redis": self.redis.nodes.iter().chain(self.redis.cluster.iter()).map(|n| serde_json::json!({"region": n.region, "port": n.port, "pid": n.pid()})).collect::<Vec<_>>(),
            "moto": {"pid": self.moto.pid, "port": self.moto.port},
            "prometheus": self.prometheus.as_ref().map(|p| serde_json::json!({"pid": p.pid, "port": p.port})),
            "started_in_ms": self.started_in.as_millis() as u64,
            "tls_ca": self.pg.nodes.first().and_then(|n| n.ca.as_ref()).map(|p| p.display().to_string()),
        });
        let tmp = self.dir.join("stack.json.tmp");
        std::fs::write(
            &tmp,
            serde_json::to_string_pretty(&record).unwrap_or_default(),
        )?;
        std::fs::rename(&tmp, self.dir.join("stack.json"))?;
        Ok((inventory, kubeconfig))
    }
}

/// Stops what a stack record names, each by its process id (when its serving process is gone).
pub fn stop_recorded(record: &serde_json::Value) {
    if let (Some(pid), Some(port)) = (
        record["prometheus"]["pid"].as_i64(),
        record["prometheus"]["port"].as_u64(),
    ) {
        stop_pid(pid as i32, libc::SIGTERM, Duration::from_secs(10), || {
            std::net::TcpStream::connect(("127.0.0.1", port as u16)).is_err()
        });
    }
    for n in record["redis"].as_array().into_iter().flatten() {
        if let (Some(pid), Some(port)) = (n["pid"].as_i64(), n["port"].as_u64()) {
            stop_pid(pid as i32, libc::SIGTERM, Duration::from_secs(10), || {
                std::net::TcpStream::connect(("127.0.0.1", port as u16)).is_err()
            });
        }
    }
    if let (Some(pid), Some(port)) = (
        record["moto"]["pid"].as_i64(),
        record["moto"]["port"].as_u64(),
    ) {
        stop_pid(pid as i32, libc::SIGTERM, Duration::from_secs(10), || {
            std::net::TcpStream::connect(("127.0.0.1", port as u16)).is_err()
        });
    }
    for n in record["postgres"].as_array().into_iter().flatten().rev() {
        if let Some(dir) = n["data_dir"].as_str() {
            let pidfile = Path::new(dir).join("postmaster.pid");
            if let Some(pid) = read_pid(&pidfile) {
                stop_pid(pid, libc::SIGINT, Duration::from_secs(20), || {
                    !pidfile.exists()
                });
            }
        }
    }
}
