//! PostgreSQL 15: a primary and streaming replicas (pg_basebackup -R with a replication slot
//! each), on loopback ports, in a directory of their own. Run as the `postgres` user when root.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use super::{free_port, is_root, read_pid, run, stop_pid, wait_until};

/// Where Debian keeps the server binaries.
pub const DEFAULT_BIN: &str = "/usr/lib/postgresql/15/bin";
/// The superuser's password on the local stack (it listens on loopback only).
pub const PASSWORD: &str = "runbook-stack";
const OS_USER: &str = "postgres";

#[derive(Debug, Clone)]
pub struct PgNode {
    pub region: String,
    pub port: u16,
    pub data_dir: PathBuf,
    /// The CA that signed the server's certificate, when the server accepts TLS only.
    pub ca: Option<PathBuf>,
}

impl PgNode {
    /// A connection URL for the superuser (verify-full against the stack's CA when TLS-only).
    pub fn url(&self) -> String {
        let base = format!(
            "postgres://postgres:{PASSWORD}@127.0.0.1:{}/postgres",
            self.port
        );
        match &self.ca {
            Some(ca) => format!("{base}?sslmode=verify-full&sslrootcert={}", ca.display()),
            None => base,
        }
    }

    /// The URL with another libpq parameter.
    pub fn url_with(&self, param: &str) -> String {
        let url = self.url();
        let sep = if url.contains('?') { '&' } else { '?' };
        format!("{url}{sep}{param}")
    }

    /// A slot name derived from the region: eu-west-1 → eu_west_1.
    pub fn slot(&self) -> String {
        self.region.replace('-', "_")
    }

    pub fn pid(&self) -> Option<i32> {
        read_pid(&self.data_dir.join("postmaster.pid"))
    }

    pub fn running(&self) -> bool {
        self.data_dir.join("postmaster.pid").exists()
    }
}

/// A primary (the first node) and its replicas. Dropping it stops every server it started.
pub struct PgCluster {
    pub bin: PathBuf,
    pub dir: PathBuf,
    pub nodes: Vec<PgNode>,
}

fn tool(bin: &Path, name: &str) -> Command {
    let program = bin.join(name);
    if is_root() {
        let mut c = Command::new("runuser");
        c.args(["-u", OS_USER, "--"]).arg(program);
        c
    } else {
        Command::new(program)
    }
}

pub(crate) fn own(path: &Path) -> std::io::Result<()> {
    if is_root() {
        run(
            {
                let mut c = Command::new("chown");
                c.args(["-R", &format!("{OS_USER}:")]).arg(path);
                c
            },
            "chown",
        )?;
    }
    Ok(())
}

impl PgCluster {
    /// Starts a primary for `regions[0]` and a streaming replica for each other region.
    pub fn start(dir: &Path, regions: &[&str]) -> std::io::Result<PgCluster> {
        Self::start_in(server_dir(dir)?, regions, None)
    }

    /// The same in a directory from [`server_dir`]; with `tls`, every server accepts TLS
    /// connections only (`hostssl` in pg_hba.conf), with the certificates of `tls`, which must
    /// be readable by the servers (under `dir`, say).
    pub fn start_in(
        dir: PathBuf,
        regions: &[&str],
        tls: Option<&crate::tls::StackTls>,
    ) -> std::io::Result<PgCluster> {
        let bin =
            PathBuf::from(std::env::var("RUNBOOK_PG_BIN").unwrap_or_else(|_| DEFAULT_BIN.into()));
        let ca = tls.map(|t| t.ca.clone());
        let mut cluster = PgCluster {
            bin,
            dir: dir.clone(),
            nodes: Vec::new(),
        };
        let pwfile = dir.join("pwfile");
        std::fs::write(&pwfile, PASSWORD)?;
        own(&pwfile)?;

        let primary = PgNode {
            region: regions[0].into(),
            port: free_port()?,
            data_dir: dir.join(regions[0]),
            ca: ca.clone(),
        };
        let mut init = tool(&cluster.bin, "initdb");
        init.arg("-D").arg(&primary.data_dir).args([
            "-U",
            "postgres",
            "--auth-local=trust",
            "--auth-host=scram-sha-256",
            "--no-sync",
            "-E",
            "UTF8",
            "--locale=C",
        ]);
        init.arg(format!("--pwfile={}", pwfile.display()));
        run(init, "initdb")?;
        let conf = format!(
            "listen_addresses = '127.0.0.1'\nport = {}\nunix_socket_directories = '{}'\nwal_level = replica\nwal_log_hints = on\n\
             wal_keep_size = '64MB'\nmax_wal_senders = 10\nmax_replication_slots = 10\nhot_standby = on\nfsync = off\n\
             cluster_name = '{}'\nlog_min_messages = warning\n",
            primary.port,
            dir.display(),
            primary.region
        );
        append(&primary.data_dir.join("postgresql.conf"), &conf)?;
        let mut tls_conninfo = String::new();
        if let Some(tls) = tls {
            append(
                &primary.data_dir.join("postgresql.conf"),
                &format!(
                    "ssl = on\nssl_cert_file = '{}'\nssl_key_file = '{}'\nssl_ca_file = '{}'\n",
                    tls.server.cert.display(),
                    tls.server.key.display(),
                    tls.ca.display()
                ),
            )?;
            // TLS only: every TCP line of pg_hba.conf becomes hostssl.
            let hba = primary.data_dir.join("pg_hba.conf");
            let text = std::fs::read_to_string(&hba)?;
            let rewritten: String = text
                .lines()
                .map(|l| match l.strip_prefix("host ") {
                    Some(rest) => format!("hostssl {rest}\n"),
                    None => format!("{l}\n"),
                })
                .collect();
            std::fs::write(&hba, rewritten)?;
            tls_conninfo = format!(" sslmode=verify-full sslrootcert={}", tls.ca.display());
        }
        let primary = cluster.start_on_free_port(primary)?;
        cluster.nodes.push(primary.clone());

        for region in &regions[1..] {
            let node = PgNode {
                region: region.to_string(),
                port: free_port()?,
                data_dir: dir.join(region),
                ca: ca.clone(),
            };
            let mut backup = tool(&cluster.bin, "pg_basebackup");
            backup
                .arg("-D")
                .arg(&node.data_dir)
                .args(["-R", "-X", "stream", "-c", "fast", "--no-sync", "-C", "-S", &node.slot(), "-d"])
                .arg(format!("host=127.0.0.1 port={} user=postgres password={PASSWORD} application_name={region}{tls_conninfo}", primary.port));
            run(backup, "pg_basebackup")?;
            append(
                &node.data_dir.join("postgresql.conf"),
                &format!("port = {}\ncluster_name = '{}'\n", node.port, node.region),
            )?;
            let node = cluster.start_on_free_port(node)?;
            cluster.nodes.push(node.clone());
        }
        let want = regions.len() - 1;
        let primary = cluster.nodes[0].clone();
        wait_until(Duration::from_secs(30), "every replica to stream", || {
            cluster
                .psql(
                    &primary,
                    "SELECT count(*) FROM pg_stat_replication WHERE state = 'streaming'",
                )
                .ok()
                .as_deref()
                == Some(want.to_string().as_str())
        })?;
        Ok(cluster)
    }

    /// Starts a node; when another process took its port between our pick and its bind (tests
    /// start many servers at once), moves it to another free port and tries again.
    fn start_on_free_port(&self, mut node: PgNode) -> std::io::Result<PgNode> {
        for attempt in 1..=5 {
            match self.start_node(&node) {
                Ok(()) => return Ok(node),
                Err(e) => {
                    // The error ends with the server log's last lines.
                    if attempt == 5 || !e.to_string().contains("could not bind") {
                        return Err(e);
                    }
                    node.port = free_port()?;
                    append(
                        &node.data_dir.join("postgresql.conf"),
                        &format!("port = {}\n", node.port),
                    )?;
                }
            }
        }
        unreachable!("the last attempt returns")
    }

    pub fn start_node(&self, node: &PgNode) -> std::io::Result<()> {
        let log = self.dir.join(format!("{}.log", node.region));
        pg_ctl_start(&self.bin, &node.data_dir, &log, &node.region)
    }

    /// Stops one server by its postmaster's process id (a fast shutdown).
    pub fn stop_node(&self, node: &PgNode) {
        if let Some(pid) = node.pid() {
            let pidfile = node.data_dir.join("postmaster.pid");
            stop_pid(pid, libc::SIGINT, Duration::from_secs(20), || {
                !pidfile.exists()
            });
        }
    }

    /// Runs one SQL statement through psql on the node's socket and returns the unaligned output.
    pub fn psql(&self, node: &PgNode, sql: &str) -> std::io::Result<String> {
        let mut c = Command::new("psql");
        c.args([
            "-X",
            "-A",
            "-t",
            "-q",
            "-v",
            "ON_ERROR_STOP=1",
            "-U",
            "postgres",
            "-h",
        ])
        .arg(&self.dir)
        .args(["-p", &node.port.to_string(), "-d", "postgres", "-c", sql]);
        Ok(run(c, &format!("psql on {}", node.region))?
            .trim()
            .to_string())
    }

    /// Starts a server on another data directory of the cluster's (a copy kept aside), as it
    /// is, on a port of its own; it is stopped by its process id when the guard is dropped.
    pub fn start_copy(&self, data_dir: &Path, name: &str) -> std::io::Result<CopyServer<'_>> {
        let node = PgNode {
            region: name.to_string(),
            port: free_port()?,
            data_dir: data_dir.to_path_buf(),
            ca: None,
        };
        let mut start = tool(&self.bin, "pg_ctl");
        start
            .arg("-D")
            .arg(data_dir)
            .arg("-l")
            .arg(data_dir.join("copy.log"))
            .args(["-o", &format!("-p {}", node.port)])
            .args(["-w", "-t", "60", "start"]);
        let started = CopyServer {
            cluster: self,
            node,
        };
        run(start, &format!("starting PostgreSQL on {name}"))?;
        Ok(started)
    }

    pub fn node(&self, region: &str) -> &PgNode {
        self.nodes
            .iter()
            .find(|n| n.region == region)
            .expect("a region of the cluster")
    }

    pub fn stop(&self) {
        for node in self.nodes.iter().rev() {
            self.stop_node(node);
        }
    }
}

/// A server started on a copy of a data directory; stopped when dropped.
pub struct CopyServer<'a> {
    cluster: &'a PgCluster,
    pub node: PgNode,
}

impl CopyServer<'_> {
    /// One SQL statement on it, as [`PgCluster::psql`].
    pub fn psql(&self, sql: &str) -> std::io::Result<String> {
        self.cluster.psql(&self.node, sql)
    }
}

impl Drop for CopyServer<'_> {
    fn drop(&mut self) {
        self.cluster.stop_node(&self.node);
    }
}

impl Drop for PgCluster {
    fn drop(&mut self) {
        self.stop();
        if is_root() {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

/// Stops the server of a data directory by its postmaster's process id: SIGINT is a fast
/// shutdown, SIGQUIT an immediate one (no shutdown checkpoint, as a crash leaves it).
pub fn stop_dir(data_dir: &Path, signal: i32) -> std::io::Result<()> {
    let pidfile = data_dir.join("postmaster.pid");
    let Some(pid) = read_pid(&pidfile) else {
        return Err(std::io::Error::other(
            "it is not running (no postmaster.pid)",
        ));
    };
    stop_pid(pid, signal, Duration::from_secs(20), || !pidfile.exists());
    if signal == libc::SIGQUIT {
        // An immediate shutdown leaves postmaster.pid behind: wait for the process instead.
        wait_until(Duration::from_secs(20), "the server to exit", || unsafe {
            libc::kill(pid, 0) != 0
        })?;
    }
    Ok(())
}

/// Starts the server of a data directory as it is (a primary comes back writable), logging
/// beside it as the stack does.
pub fn start_dir(data_dir: &Path, region: &str) -> std::io::Result<()> {
    let bin = PathBuf::from(std::env::var("RUNBOOK_PG_BIN").unwrap_or_else(|_| DEFAULT_BIN.into()));
    let log = data_dir
        .parent()
        .map(|p| p.join(format!("{region}.log")))
        .unwrap_or_else(|| data_dir.join("startup.log"));
    pg_ctl_start(&bin, data_dir, &log, region)
}

/// `pg_ctl start`, waiting until the server accepts connections; a failure ends with the last
/// lines of the server's log (pg_ctl itself only says "Examine the log output").
fn pg_ctl_start(bin: &Path, data_dir: &Path, log: &Path, region: &str) -> std::io::Result<()> {
    let mut start = tool(bin, "pg_ctl");
    start
        .arg("-D")
        .arg(data_dir)
        .arg("-l")
        .arg(log)
        .args(["-w", "-t", "60", "start"]);
    run(start, &format!("starting PostgreSQL for {region}"))
        .map(|_| ())
        .map_err(|e| {
            let text = std::fs::read_to_string(log).unwrap_or_default();
            let lines: Vec<&str> = text.lines().rev().take(5).collect();
            let tail: Vec<&str> = lines.into_iter().rev().collect();
            std::io::Error::other(format!("{e}\n{} says:\n{}", log.display(), tail.join("\n")))
        })
}

/// The directory the servers keep their data in. As root, the servers run as `postgres`,
/// which must reach it: a directory of its own under the system temp dir (which every user
/// can traverse), linked from `wanted` so it can be found there.
pub fn server_dir(wanted: &Path) -> std::io::Result<PathBuf> {
    if !is_root() {
        std::fs::create_dir_all(wanted)?;
        return std::fs::canonicalize(wanted);
    }
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    let real = std::env::temp_dir().join(format!("runbook-pg-{}-{nanos}", std::process::id()));
    std::fs::create_dir_all(&real)?;
    own(&real)?;
    if let Some(parent) = wanted.parent() {
        std::fs::create_dir_all(parent)?;
    }
    let _ = std::fs::remove_file(wanted);
    std::os::unix::fs::symlink(&real, wanted)?;
    Ok(real)
}

fn append(path: &Path, text: &str) -> std::io::Result<()> {
    use std::io::Write;
    let mut f = std::fs::OpenOptions::new().append(true).open(path)?;
    f.write_all(text.as_bytes())
}
