//! Redis 7: a primary and replicas (repl-diskless-sync-delay 0, so a link comes up in
//! ~0.1 s instead of ~5 s), and optionally a one-node Redis Cluster holding every slot.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use super::{free_port, read_pid, run, stop_pid, wait_until};

/// The password of every server on the local stack (loopback only).
pub const PASSWORD: &str = "runbook-stack";

#[derive(Debug, Clone)]
pub struct RedisNode {
    pub region: String,
    pub port: u16,
    pub dir: PathBuf,
    /// The certificates of a TLS-only server (its only port speaks TLS).
    pub tls: Option<crate::tls::StackTls>,
}

impl RedisNode {
    pub fn url(&self) -> String {
        match &self.tls {
            Some(t) => format!(
                "rediss://:{PASSWORD}@127.0.0.1:{}?cacert={}",
                self.port,
                t.ca.display()
            ),
            None => format!("redis://:{PASSWORD}@127.0.0.1:{}", self.port),
        }
    }

    /// The options that make a server TLS-only (clients need no certificate).
    fn tls_args(&self) -> Vec<String> {
        let Some(t) = &self.tls else {
            return vec!["--port".into(), self.port.to_string()];
        };
        vec![
            "--port".into(),
            "0".into(),
            "--tls-port".into(),
            self.port.to_string(),
            "--tls-cert-file".into(),
            t.server.cert.display().to_string(),
            "--tls-key-file".into(),
            t.server.key.display().to_string(),
            "--tls-ca-cert-file".into(),
            t.ca.display().to_string(),
            "--tls-auth-clients".into(),
            "no".into(),
            "--tls-replication".into(),
            "yes".into(),
            "--tls-cluster".into(),
            "yes".into(),
        ]
    }

    fn pidfile(&self) -> PathBuf {
        self.dir.join("redis.pid")
    }

    pub fn pid(&self) -> Option<i32> {
        read_pid(&self.pidfile())
    }
}

pub struct RedisSet {
    pub nodes: Vec<RedisNode>,
    /// A one-node cluster (cluster-enabled), when asked for.
    pub cluster: Option<RedisNode>,
}

/// Starts a server; when another process took its port between our pick and its bind (tests
/// start many servers at once), moves it to another free port and tries again.
pub fn start_server(node: &mut RedisNode, extra: &[String]) -> std::io::Result<()> {
    let mut last = None;
    for _ in 0..5 {
        match start_once(node, extra) {
            Ok(()) => return Ok(()),
            Err(e) => {
                last = Some(e);
                if let Some(pid) = node.pid() {
                    stop_pid(pid, libc::SIGKILL, Duration::from_secs(5), || true);
                }
                node.port = free_port()?;
            }
        }
    }
    Err(last.unwrap_or_else(|| std::io::Error::other("redis-server did not start")))
}

fn start_once(node: &RedisNode, extra: &[String]) -> std::io::Result<()> {
    std::fs::create_dir_all(&node.dir)?;
    let mut c = Command::new("redis-server");
    c.args(["--bind", "127.0.0.1"])
        .args(node.tls_args())
        .args(["--daemonize", "yes"])
        .arg("--pidfile")
        .arg(node.pidfile())
        .arg("--dir")
        .arg(&node.dir)
        .arg("--logfile")
        .arg(node.dir.join("redis.log"))
        .args([
            "--save",
            "",
            "--appendonly",
            "no",
            "--repl-diskless-sync-delay",
            "0",
        ])
        .args(["--requirepass", PASSWORD, "--masterauth", PASSWORD])
        .args(extra);
    run(c, &format!("redis-server for {}", node.region))?;
    // Our server, not another one that holds the port: its process id must be the one in our
    // pid file.
    wait_until(Duration::from_secs(10), "redis-server to answer", || {
        let Some(pid) = node.pid() else { return false };
        cli(node, &["INFO", "server"])
            .map(|i| i.contains(&format!("process_id:{pid}")))
            .unwrap_or(false)
    })
}

/// redis-cli aimed at a node: its port, the password, and TLS with the stack's certificates
/// when the node speaks TLS only.
pub fn cli_command(node: &RedisNode) -> Command {
    let mut c = Command::new("redis-cli");
    c.args([
        "-h",
        "127.0.0.1",
        "-p",
        &node.port.to_string(),
        "--no-auth-warning",
        "-a",
        PASSWORD,
    ]);
    if let Some(t) = &node.tls {
        c.arg("--tls")
            .arg("--cacert")
            .arg(&t.ca)
            .arg("--cert")
            .arg(&t.client.cert)
            .arg("--key")
            .arg(&t.client.key);
    }
    c
}

/// Runs redis-cli against a node and returns its trimmed output.
pub fn cli(node: &RedisNode, args: &[&str]) -> std::io::Result<String> {
    let mut c = cli_command(node);
    c.args(args);
    Ok(run(c, "redis-cli")?.trim().to_string())
}

/// A field of INFO replication.
pub fn info_field(node: &RedisNode, field: &str) -> Option<String> {
    let info = cli(node, &["INFO", "replication"]).ok()?;
    info.lines().find_map(|l| {
        l.trim()
            .strip_prefix(&format!("{field}:"))
            .map(str::to_string)
    })
}

impl RedisSet {
    /// A primary for `regions[0]`, a replica for each other region; `cluster` adds a
    /// one-node Redis Cluster.
    pub fn start(dir: &Path, regions: &[&str], cluster: bool) -> std::io::Result<RedisSet> {
        Self::start_with(dir, regions, cluster, None)
    }

    /// The same; with `tls`, every server speaks TLS only, replication too.
    pub fn start_with(
        dir: &Path,
        regions: &[&str],
        cluster: bool,
        tls: Option<&crate::tls::StackTls>,
    ) -> std::io::Result<RedisSet> {
        let mut set = RedisSet {
            nodes: Vec::new(),
            cluster: None,
        };
        let mut primary = RedisNode {
            region: regions[0].into(),
            port: free_port()?,
            dir: dir.join(regions[0]),
            tls: tls.cloned(),
        };
        start_server(&mut primary, &[])?;
        set.nodes.push(primary.clone());
        for region in &regions[1..] {
            let mut node = RedisNode {
                region: region.to_string(),
                port: free_port()?,
                dir: dir.join(region),
                tls: tls.cloned(),
            };
            start_server(
                &mut node,
                &[
                    "--replicaof".into(),
                    "127.0.0.1".into(),
                    primary.port.to_string(),
                ],
            )?;
            set.nodes.push(node);
        }
        for node in &set.nodes[1..] {
            wait_until(Duration::from_secs(15), "a Redis replica's link", || {
                info_field(node, "master_link_status").as_deref() == Some("up")
            })?;
        }
        if cluster {
            let mut node = RedisNode {
                region: "cluster".into(),
                port: free_port()?,
                dir: dir.join("cluster"),
                tls: tls.cloned(),
            };
            start_server(
                &mut node,
                &[
                    "--cluster-enabled".into(),
                    "yes".into(),
                    "--cluster-config-file".into(),
                    "nodes.conf".into(),
                ],
            )?;
            cli(&node, &["CLUSTER", "ADDSLOTSRANGE", "0", "16383"])?;
            wait_until(
                Duration::from_secs(15),
                "the one-node cluster to be ok",
                || {
                    cli(&node, &["CLUSTER", "INFO"])
                        .map(|i| i.contains("cluster_state:ok"))
                        .unwrap_or(false)
                },
            )?;
            set.cluster = Some(node);
        }
        Ok(set)
    }

    pub fn node(&self, region: &str) -> &RedisNode {
        self.nodes
            .iter()
            .find(|n| n.region == region)
            .expect("a region of the set")
    }

    pub fn stop_node(node: &RedisNode) {
        if let Some(pid) = node.pid() {
            let port = node.port;
            let pidfile = node.pidfile();
            // Redis removes its pid file as it exits; its parent (init) may reap it later.
            stop_pid(pid, libc::SIGTERM, Duration::from_secs(10), || {
                !pidfile.exists() && std::net::TcpStream::connect(("127.0.0.1", port)).is_err()
            });
        }
    }

    pub fn stop(&self) {
        for node in self.nodes.iter().chain(self.cluster.iter()) {
            Self::stop_node(node);
        }
    }
}

impl Drop for RedisSet {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A Redis Cluster of `masters` primaries on loopback (slots split evenly, no replicas) and
/// `spares` cluster-enabled nodes that are not members yet — for growing it. Dropping it
/// stops every server by its process id.
pub struct RedisCluster {
    pub masters: Vec<RedisNode>,
    pub spares: Vec<RedisNode>,
}

impl RedisCluster {
    pub fn start(dir: &Path, masters: usize, spares: usize) -> std::io::Result<RedisCluster> {
        let mut cluster = RedisCluster {
            masters: Vec::new(),
            spares: Vec::new(),
        };
        let extra = [
            "--cluster-enabled".to_string(),
            "yes".into(),
            "--cluster-config-file".into(),
            "nodes.conf".into(),
            "--cluster-node-timeout".into(),
            "2000".into(),
        ];
        for i in 0..masters + spares {
            let mut node = RedisNode {
                region: format!("node-{i}"),
                port: free_port()?,
                dir: dir.join(format!("node-{i}")),
                tls: None,
            };
            start_server(&mut node, &extra)?;
            if i < masters {
                cluster.masters.push(node);
            } else {
                cluster.spares.push(node);
            }
        }
        let share = 16384 / masters;
        for (i, node) in cluster.masters.iter().enumerate() {
            let first = i * share;
            let last = if i + 1 == masters {
                16383
            } else {
                first + share - 1
            };
            cli(
                node,
                &[
                    "CLUSTER",
                    "ADDSLOTSRANGE",
                    &first.to_string(),
                    &last.to_string(),
                ],
            )?;
        }
        let first = cluster.masters[0].clone();
        for node in &cluster.masters[1..] {
            cli(
                &first,
                &["CLUSTER", "MEET", "127.0.0.1", &node.port.to_string()],
            )?;
        }
        for node in &cluster.masters {
            wait_until(Duration::from_secs(30), "the cluster to be ok", || {
                cli(node, &["CLUSTER", "INFO"])
                    .map(|i| i.contains("cluster_state:ok"))
                    .unwrap_or(false)
            })?;
        }
        Ok(cluster)
    }
}

impl Drop for RedisCluster {
    fn drop(&mut self) {
        for node in self.masters.iter().chain(self.spares.iter()) {
            RedisSet::stop_node(node);
        }
    }
}
