//! A real Prometheus (Debian's package) scraping each region's /metrics every second, for the
//! runbooks' gates (error rate, P99 latency). Started only when asked: `stack up --prometheus`.

use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use super::{free_port, stop_pid, wait_until};

pub struct Prometheus {
    pub port: u16,
    pub pid: i32,
    child: Option<Child>,
}

impl Prometheus {
    /// Starts Prometheus on a free loopback port, scraping `targets` (region, host:port) and
    /// waits until it has scraped each once.
    pub fn start(dir: &Path, targets: &[(String, String)]) -> std::io::Result<Prometheus> {
        std::fs::create_dir_all(dir)?;
        let mut config = String::from(
            "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\nscrape_configs:\n  - job_name: app\n    static_configs:\n",
        );
        for (region, target) in targets {
            config.push_str(&format!(
                "      - targets: ['{target}']\n        labels: {{instance_region: '{region}'}}\n"
            ));
        }
        let file = dir.join("prometheus.yml");
        std::fs::write(&file, config)?;
        let port = free_port()?;
        let log = std::fs::File::create(dir.join("prometheus.log"))?;
        let child = Command::new("prometheus")
            .arg(format!("--config.file={}", file.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.join("data").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .process_group(0)
            .spawn()
            .map_err(|e| {
                std::io::Error::other(format!("cannot start prometheus: {e} (run scripts/setup)"))
            })?;
        let p = Prometheus {
            port,
            pid: child.id() as i32,
            child: Some(child),
        };
        let want = targets.len();
        wait_until(
            Duration::from_secs(30),
            "Prometheus to scrape every region",
            || p.up_targets() == Some(want),
        )?;
        Ok(p)
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// How many targets answered their last scrape.
    fn up_targets(&self) -> Option<usize> {
        self.value("sum(up)")?.parse().ok()
    }

    /// The first value of an instant query (asked over a plain socket).
    pub fn value(&self, query: &str) -> Option<String> {
        use std::io::{Read, Write};
        let encoded: String = query
            .bytes()
            .map(|b| match b {
                b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'_' => (b as char).to_string(),
                _ => format!("%{b:02X}"),
            })
            .collect();
        let mut s = std::net::TcpStream::connect(("127.0.0.1", self.port)).ok()?;
        write!(
            s,
            "GET /api/v1/query?query={encoded} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n"
        )
        .ok()?;
        let mut response = String::new();
        s.read_to_string(&mut response).ok()?;
        let body = response.split_once("\r\n\r\n")?.1;
        let v: serde_json::Value = serde_json::from_str(body).ok()?;
        v["data"]["result"][0]["value"][1]
            .as_str()
            .map(str::to_string)
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let port = self.port;
        stop_pid(self.pid, libc::SIGTERM, Duration::from_secs(10), || {
            std::net::TcpStream::connect(("127.0.0.1", port)).is_err()
        });
        if let Some(mut c) = self.child.take() {
            let _ = c.wait();
        }
    }
}
