//! prom:: against a real Prometheus (Debian's package) scraping a metrics endpoint on loopback.

use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use runbook_stack::prometheus::Prometheus;

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

#[test]
fn query_and_a_gate_that_holds_or_fails_showing_the_values() {
    let text = Arc::new(Mutex::new(
        "app_error_ratio{region=\"us-east-1\"} 0.001\napp_error_ratio{region=\"eu-west-1\"} 0.002\n"
            .to_string(),
    ));
    let dir = tempfile::tempdir().unwrap();
    let target = format!("127.0.0.1:{}", metrics_server(text.clone()));
    let p = Prometheus::start(dir.path(), &[("test".into(), target)]).expect("prometheus starts");
    assert!(
        wait_for(Duration::from_secs(30), || p
            .value("max(app_error_ratio)")
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
    assert!(wait_for(Duration::from_secs(30), || p
        .value("max(app_error_ratio)")
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
