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

/// A test whose runs find the moto server and credentials for it.
fn with_moto() -> Test {
    Test::new()
        .env(
            "RUNBOOK_MOTO_SERVER",
            concat!(env!("CARGO_MANIFEST_DIR"), "/.venv/bin/moto_server"),
        )
        .env("AWS_ACCESS_KEY_ID", "testing")
        .env("AWS_SECRET_ACCESS_KEY", "testing")
        .env("AWS_EC2_METADATA_DISABLED", "true")
}

#[test]
fn stack_up_serves_every_system_and_down_stops_every_process() {
    let t = with_moto();
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

/// The processes of a stack: its servers (and their helpers), working in `stack` or in its
/// PostgreSQL folder (a link to a folder the postgres user can reach), and with `serving`
/// the process serving them (`runbook stack up --dir STACK`). Process id and command line.
fn processes_of(stack: &std::path::Path, serving: bool) -> Vec<(i32, String)> {
    let mut roots = vec![stack.to_path_buf()];
    if let Ok(pg) = std::fs::read_link(stack.join("postgres")) {
        roots.push(pg);
    }
    let serving_args = format!("stack up --dir {} ", stack.display());
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        let Ok(cwd) = std::fs::read_link(entry.path().join("cwd")) else {
            continue;
        };
        let cmdline = std::fs::read(entry.path().join("cmdline")).unwrap_or_default();
        let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
        let theirs = roots.iter().any(|r| cwd.starts_with(r))
            || (serving && cmdline.contains(&serving_args));
        if theirs && alive(pid as i64) {
            found.push((pid, cmdline));
        }
    }
    found
}

/// Kills, by process id, whatever a failed test left running of a stack.
struct KillLeftovers(std::path::PathBuf);

impl Drop for KillLeftovers {
    fn drop(&mut self) {
        for (pid, _) in processes_of(&self.0, true) {
            unsafe {
                libc::kill(pid, libc::SIGKILL);
            }
        }
    }
}

#[test]
fn a_stack_interrupted_while_starting_stops_what_it_had_started() {
    let t = with_moto();
    let dir = t.path("stack");
    let _leftovers = KillLeftovers(dir.clone());
    let mut up = t.spawn(&[
        "stack",
        "up",
        "--detach",
        "--dir",
        &dir.display().to_string(),
    ]);
    // Servers are starting (Redis is first, in well under a second) and the stack is not up.
    let starting = crate::support::wait_for(std::time::Duration::from_secs(30), || {
        !processes_of(&dir, false).is_empty()
    });
    assert!(starting, "no server started under {}", dir.display());
    assert!(
        !dir.join("stack.json").exists(),
        "the stack was up before it could be interrupted"
    );
    unsafe {
        libc::kill(up.id() as i32, libc::SIGTERM);
    }
    let status = up.wait().unwrap();
    let mut stderr = String::new();
    std::io::Read::read_to_string(up.stderr.as_mut().unwrap(), &mut stderr).unwrap();
    assert_eq!(status.code(), Some(130), "{stderr}");
    assert_says(
        &stderr,
        &[
            "stack up interrupted (SIGTERM): stopping the servers it had started",
            "stopped; nothing is left running in",
        ],
    );
    let left = processes_of(&dir, true);
    assert!(
        left.is_empty(),
        "still running after the interrupted stack up: {left:?}"
    );
    assert!(!dir.join("stack.json").exists());
    // Nothing to stop, and `stack down` says so.
    let down = t.exec(&["stack", "down", "--dir", &dir.display().to_string()]);
    assert_eq!(down.code, 2, "{}", down.all());
    assert_says(&down.stderr, &["no stack is running in"]);
}
