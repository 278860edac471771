//! `runbook stack up/down`: the whole local stack from the command line, used by a runbook
//! that touches every system, then stopped — every process by its own id.

use crate::support::{assert_says, Test};

/// Stops the stack when the test ends, pass or fail.
struct Down<'a>(&'a Test, String);

impl Drop for Down<'_> {
    fn drop(&mut self) {
        self.0.exec(&["stack", "down", "--dir", &self.1]);
    }
}

fn alive(pid: i64) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => !stat.split(") ").nth(1).unwrap_or("").starts_with('Z'),
        Err(_) => false,
    }
}

#[test]
fn stack_up_serves_every_system_and_down_stops_every_process() {
    let t = Test::new()
        .env(
            "RUNBOOK_MOTO_SERVER",
            concat!(env!("CARGO_MANIFEST_DIR"), "/.venv/bin/moto_server"),
        )
        .env("AWS_ACCESS_KEY_ID", "testing")
        .env("AWS_SECRET_ACCESS_KEY", "testing")
        .env("AWS_EC2_METADATA_DISABLED", "true");
    let dir = t.path("stack").display().to_string();
    let up = t.exec(&["stack", "up", "--detach", "--dir", &dir]);
    let _down = Down(&t, dir.clone());
    assert_eq!(up.code, 0, "{}", up.all());
    assert!(up.stdout.contains("stack up in"), "{}", up.stdout);
    let inventory = format!("{dir}/inventory.toml");

    // Up means serving: the applications have rolled out before `up` returns, so a drill
    // started at once sees a healthy world (kubectl and the status runbook both say so).
    for (region, want) in [("us-east-1", "3"), ("eu-west-1", "2")] {
        let out = std::process::Command::new("kubectl")
            .args([
                "--kubeconfig",
                &format!("{dir}/kubeconfig"),
                "--context",
                region,
            ])
            .args(["-n", "app", "get", "deployment", "orchestrator"])
            .args(["-o", "jsonpath={.status.readyReplicas}"])
            .output()
            .expect("kubectl runs");
        assert_eq!(
            String::from_utf8_lossy(&out.stdout),
            want,
            "{region}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let status = t.exec(&[
        "run",
        concat!(env!("CARGO_MANIFEST_DIR"), "/runbooks/status.rhai"),
        "-i",
        &inventory,
    ]);
    assert_eq!(status.code, 0, "{}", status.all());
    assert_says(&status.stdout, &["3/3 -> us-east-1", "no anomalies"]);

    std::fs::write(
        t.path("runbook.rhai"),
        r#"
        let p = inventory.primary_region;
        for r in inventory.regions.keys() {
            let reg = inventory.regions[r];
            step(`check ${r}`, || {
                let db = pg::status(#{ url: reg.database_url, name: r });
                let cache = redis::role(#{ url: reg.redis_url, name: r });
                let app = k8s::get(#{ context: reg.context, kubeconfig: inventory.k8s.kubeconfig, namespace: reg.namespace, kind: "deployment", name: reg.deployment });
                let h = http::get(reg.health_url);
                log(`${r}: db in_recovery=${db.in_recovery} redis=${cache.role} replicas=${app.items[0].spec.replicas} health=${h.status}`);
            });
        }
        let w = dns::get(#{ zone: inventory.dns.zone, name: inventory.dns.record, endpoint_url: inventory.dns.endpoint_url });
        log(`weights ${w.weights}`);
        notify::slack(#{ webhook: inventory.notify.slack_webhook, text: "stack drill" });
        "#,
    )
    .unwrap();
    let ran = t.exec(&["run", "runbook.rhai", "-i", &inventory]);
    assert_eq!(ran.code, 0, "{}", ran.all());
    assert_says(
        &ran.stdout,
        &[
            "us-east-1: db in_recovery=false redis=master replicas=3 health=200",
            "eu-west-1: db in_recovery=true redis=slave replicas=2 health=200",
            r#"weights #{"ap-southeast-1": 0, "eu-west-1": 0, "us-east-1": 100}"#,
        ],
    );
    let messages = t.exec(&["stack", "messages", "--dir", &dir]);
    assert!(
        messages.stdout.contains("stack drill"),
        "{}",
        messages.all()
    );

    // A region's health endpoint can be made to fail, or to flap: 503 and 200 by turns,
    // starting with a 503, however fast it is asked. Its answers to `n` checks in a mode:
    let answers = |mode: &str, n: usize| {
        let set = t.exec(&["stack", "health", "eu-west-1", mode, "--dir", &dir]);
        assert_eq!(set.code, 0, "{}", set.all());
        std::fs::write(
            t.path("health.rhai"),
            format!(r#"let s = []; for i in 0..{n} {{ s.push(http::get(#{{ url: inventory.regions["eu-west-1"].health_url, expect_status: [200, 503] }}).status); }} log(`eu answers ${{s}}`);"#),
        )
        .unwrap();
        let ran = t.exec(&["run", "health.rhai", "-i", &inventory]);
        assert_eq!(ran.code, 0, "{}", ran.all());
        ran.stdout
    };
    for (mode, n, want) in [
        ("fail", 2, "eu answers [503, 503]"),
        ("flap", 4, "eu answers [503, 200, 503, 200]"),
    ] {
        let out = answers(mode, n);
        assert!(out.contains(want), "{mode}: {out}");
    }

    let record: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(format!("{dir}/stack.json")).unwrap())
            .unwrap();

    // One region's database can crash and come back (by its own process id both ways).
    std::fs::write(
        t.path("runbook.rhai"),
        r#"let s = pg::status(#{ url: inventory.regions["eu-west-1"].database_url, retries: 0 }); log(`eu in_recovery=${s.in_recovery}`);"#,
    )
    .unwrap();
    let crash = t.exec(&["stack", "db", "eu-west-1", "crash", "--dir", &dir]);
    assert_eq!(crash.code, 0, "{}", crash.all());
    assert!(crash
        .stdout
        .contains("eu-west-1's database crashed (immediate shutdown)"));
    let down_db = t.exec(&["run", "runbook.rhai", "-i", &inventory]);
    assert_eq!(down_db.code, 1, "{}", down_db.all());
    assert!(
        down_db.stderr.contains("Connection refused"),
        "{}",
        down_db.all()
    );
    let start = t.exec(&["stack", "db", "eu-west-1", "start", "--dir", &dir]);
    assert_eq!(start.code, 0, "{}", start.all());
    let up_db = t.exec(&["run", "runbook.rhai", "-i", &inventory]);
    assert!(
        up_db.stdout.contains("eu in_recovery=true"),
        "{}",
        up_db.all()
    );
    let nowhere = t.exec(&["stack", "db", "mars-1", "stop", "--dir", &dir]);
    assert_eq!(nowhere.code, 2, "{}", nowhere.all());
    assert!(
        nowhere
            .stderr
            .contains("no region 'mars-1' in the stack (us-east-1, eu-west-1, ap-southeast-1)"),
        "{}",
        nowhere.stderr
    );
    let eu_dir = record["postgres"]
        .as_array()
        .unwrap()
        .iter()
        .find(|n| n["region"] == "eu-west-1")
        .and_then(|n| n["data_dir"].as_str())
        .unwrap()
        .to_string();
    let restarted: i64 = std::fs::read_to_string(format!("{eu_dir}/postmaster.pid"))
        .unwrap()
        .lines()
        .next()
        .unwrap()
        .parse()
        .unwrap();

    let mut pids: Vec<i64> = vec![
        restarted,
        record["pid"].as_i64().unwrap(),
        record["moto"]["pid"].as_i64().unwrap(),
    ];
    pids.extend(
        record["postgres"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|n| n["region"] != "eu-west-1")
            .filter_map(|n| n["pid"].as_i64()),
    );
    pids.extend(
        record["redis"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|n| n["pid"].as_i64()),
    );
    assert_eq!(pids.len(), 9, "{record}");
    assert!(pids.iter().all(|p| alive(*p)));
    let down = t.exec(&["stack", "down", "--dir", &dir]);
    assert_eq!(down.code, 0, "{}", down.all());
    for pid in pids {
        assert!(
            !alive(pid),
            "process {pid} is still running after stack down"
        );
    }
}
