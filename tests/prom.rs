//! prom:: against a real Prometheus (Debian's package) scraping a metrics endpoint on loopback.

use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::support::{wait_for, Test};

/// A /metrics endpoint serving whatever text the test sets.
fn metrics_server(text: Arc<Mutex<String>>) -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            let mut reader = BufReader::new(stream.try_clone().unwrap());
            let mut line = String::new();
            while reader.read_line(&mut line).is_ok_and(|n| n > 2) {
                line.clear();
            }
            let body = text.lock().unwrap().clone();
            let mut out = stream;
            let _ = write!(
                out,
                "HTTP/1.1 200 OK\r\nContent-Type: text/plain; version=0.0.4\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
        }
    });
    port
}

/// Prometheus on loopback, stopped by its process id when dropped.
struct Prometheus {
    child: Child,
    port: u16,
    _dir: tempfile::TempDir,
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn prometheus(scrape_port: u16) -> Prometheus {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("prometheus.yml");
    std::fs::write(
        &config,
        format!(
            "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\nscrape_configs:\n  - job_name: app\n    static_configs:\n      - targets: ['127.0.0.1:{scrape_port}']\n"
        ),
    )
    .unwrap();
    let port = runbook_stack::free_port().unwrap();
    let child = Command::new("prometheus")
        .arg(format!("--config.file={}", config.display()))
        .arg(format!(
            "--storage.tsdb.path={}",
            dir.path().join("data").display()
        ))
        .arg(format!("--web.listen-address=127.0.0.1:{port}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("prometheus starts (scripts/setup installs it)");
    Prometheus {
        child,
        port,
        _dir: dir,
    }
}

/// The first value of an instant query, asked over a plain socket.
fn value_of(p: &Prometheus, query: &str) -> Option<String> {
    use std::io::Read;
    let encoded: String = query
        .bytes()
        .map(|b| match b {
            b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'_' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect();
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", p.port)).ok()?;
    write!(
        stream,
        "GET /api/v1/query?query={encoded} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n"
    )
    .ok()?;
    let mut response = String::new();
    stream.read_to_string(&mut response).ok()?;
    let body = response.split_once("\r\n\r\n")?.1;
    let v: serde_json::Value = serde_json::from_str(body).ok()?;
    v["data"]["result"][0]["value"][1]
        .as_str()
        .map(str::to_string)
}

#[test]
fn query_and_a_gate_that_holds_or_fails_showing_the_values() {
    let text = Arc::new(Mutex::new(
        "app_error_ratio{region=\"us-east-1\"} 0.001\napp_error_ratio{region=\"eu-west-1\"} 0.002\n"
            .to_string(),
    ));
    let p = prometheus(metrics_server(text.clone()));
    assert!(
        wait_for(Duration::from_secs(30), || value_of(
            &p,
            "max(app_error_ratio)"
        )
        .as_deref()
            == Some("0.002")),
        "Prometheus scraped the endpoint"
    );
    let url = format!("http://127.0.0.1:{}", p.port);
    let script = format!(
        r#"
        let q = prom::query(#{{ url: "{url}", query: "app_error_ratio" }});
        log(`samples: ${{q.samples.len()}} type ${{q.result_type}}`);
        for s in q.samples {{ log(`${{s.labels.region}} = ${{s.value}}`); }}
        let c = prom::check(#{{ url: "{url}", query: "app_error_ratio", op: "<", threshold: 0.01, consecutive: 2, interval: "200ms" }});
        log(`gate passed after ${{c.evaluations}} evaluations`);
        try {{ prom::query(#{{ url: "{url}", query: "rate(app_error_ratio[" }}); }}
        catch (e) {{ log(`bad query: ${{e}}`); }}
        "#
    );
    Test::new()
        .script(&script)
        .run(&[])
        .code(0)
        .stdout("samples: 2 type vector")
        .stdout("us-east-1 = 0.001")
        .stdout("eu-west-1 = 0.002")
        .stdout("gate passed after 2 evaluations")
        .stdout("bad query: prom::query failed: Prometheus")
        .stdout("bad_data")
        .check();

    // A region's error rate goes up: the gate fails at its time limit, showing the values.
    *text.lock().unwrap() =
        "app_error_ratio{region=\"us-east-1\"} 0.2\napp_error_ratio{region=\"eu-west-1\"} 0.002\n"
            .into();
    assert!(wait_for(Duration::from_secs(30), || value_of(
        &p,
        "max(app_error_ratio)"
    )
    .as_deref()
        == Some("0.2")));
    let failing = format!(
        r#"prom::check(#{{ url: "{url}", query: "app_error_ratio", op: "<", threshold: 0.01, consecutive: 2, interval: "200ms", timeout: "1s" }});"#
    );
    let ran = Test::new().script(&failing).run(&[]).code(1).check();
    assert!(
        ran.all()
            .contains("did not hold 2 times in a row within 1s"),
        "{}",
        ran.all()
    );
    assert!(ran.all().contains("region=us-east-1} 0.2"), "{}", ran.all());
    assert!(!ran.all().contains("retrying"), "{}", ran.all());
}
