//! redis:: actions against real Redis 7 servers: a primary, two replicas, a one-node cluster.

use runbook_stack::redis::{cli, info_field, RedisSet};
use runbook_stack::REGIONS;

use crate::support::{kill9, wait_for, Test};
use std::time::Duration;

fn set(cluster: bool) -> (tempfile::TempDir, RedisSet) {
    let dir = tempfile::tempdir().unwrap();
    let set = RedisSet::start(&dir.path().join("redis"), &REGIONS, cluster).expect("Redis starts");
    (dir, set)
}

fn inventory(s: &RedisSet) -> String {
    let mut out = String::new();
    for n in &s.nodes {
        out.push_str(&format!(
            "[regions.{}]\nredis_url = \"{}\"\nredis_port = {}\n",
            n.region,
            n.url(),
            n.port
        ));
    }
    if let Some(c) = &s.cluster {
        out.push_str(&format!("[cluster]\nurl = \"{}\"\n", c.url()));
    }
    out
}

fn test(s: &RedisSet, script: &str) -> Test {
    Test::new().inventory(&inventory(s)).script(script)
}

#[test]
fn info_role_command_and_wait_synced() {
    let (_d, s) = set(true);
    test(
        &s,
        r#"
        let r = |x| inventory.regions[x].redis_url;
        let p = redis::role(r.call("us-east-1"));
        let q = redis::role(#{ url: r.call("eu-west-1"), name: "eu-west-1" });
        log(`primary ${p.role} replicas=${p.replicas.len()}; replica ${q.role} link=${q.link}`);
        redis::command(#{ url: r.call("us-east-1"), args: ["SET", "deploy:version", "v42"] });
        let w = redis::wait_synced(#{ url: r.call("eu-west-1"), primary_url: r.call("us-east-1"), timeout: "20s" });
        log(`synced at ${w.offset} = ${w.primary_offset}`);
        let got = redis::command(#{ url: r.call("eu-west-1"), args: ["GET", "deploy:version"] });
        log(`replica has ${got.reply}`);
        let i = redis::info(#{ url: r.call("us-east-1"), section: "server" });
        log(`version ${i.sections.server.redis_version}`);
        let ci = redis::cluster_info(inventory.cluster.url);
        let cn = redis::cluster_nodes(inventory.cluster.url);
        log(`cluster ${ci.state} slots=${ci.slots_assigned} nodes=${cn.nodes.len()} serves ${cn.nodes[0].slots}`);
        "#,
    )
    .run(&[])
    .code(0)
    .stdout("primary master replicas=2; replica slave link=up")
    .stdout("replica has v42")
    .stdout("version 7.")
    .stdout("cluster ok slots=16384 nodes=1 serves [\"0-16383\"]")
    .check();
}

#[test]
fn promote_and_repoint_converge() {
    let (_d, s) = set(false);
    let script = r#"
        let r = |x| inventory.regions[x].redis_url;
        let new_port = inventory.regions["eu-west-1"].redis_port;
        let p = redis::promote(#{ url: r.call("eu-west-1"), name: "eu-west-1" });
        let a = redis::replicate(#{ url: r.call("us-east-1"), primary_host: "127.0.0.1", primary_port: new_port });
        let b = redis::replicate(#{ url: r.call("ap-southeast-1"), primary_host: "127.0.0.1", primary_port: new_port });
        redis::wait_synced(#{ url: r.call("us-east-1"), primary_url: r.call("eu-west-1"), timeout: "20s" });
        log(`promoted=${p.changed} repointed=${a.changed},${b.changed}`);
        "#;
    test(&s, script)
        .run(&[])
        .code(0)
        .stdout("promoted=true repointed=true,true")
        .check();
    let eu = s.node("eu-west-1");
    assert_eq!(info_field(eu, "role").as_deref(), Some("master"));
    assert_eq!(info_field(eu, "connected_slaves").as_deref(), Some("2"));
    assert_eq!(
        info_field(s.node("us-east-1"), "master_port"),
        Some(eu.port.to_string())
    );
    // Twice equals once.
    test(&s, script)
        .run(&[])
        .code(0)
        .stdout("promoted=false repointed=false,false")
        .check();
    assert_eq!(cli(eu, &["SET", "k", "v"]).unwrap(), "OK");
}

#[test]
fn coordinated_failover_swaps_roles_and_the_old_primary_refuses_writes() {
    let (_d, s) = set(false);
    let us = s.node("us-east-1");
    let eu = s.node("eu-west-1");
    cli(us, &["SET", "before", "1"]).unwrap();
    let script = format!(
        r#"
        let f = redis::failover(#{{ url: inventory.regions["us-east-1"].redis_url, to_host: "127.0.0.1", to_port: {port}, wait: "5s" }});
        log(`changed=${{f.changed}} new=${{f.new_primary}}`);
        "#,
        port = eu.port
    );
    test(&s, &script)
        .run(&[])
        .code(0)
        .stdout(&format!("changed=true new=127.0.0.1:{}", eu.port))
        .check();
    assert_eq!(info_field(eu, "role").as_deref(), Some("master"));
    assert_eq!(info_field(us, "role").as_deref(), Some("slave"));
    assert_eq!(
        cli(eu, &["GET", "before"]).unwrap(),
        "1",
        "nothing was lost"
    );
    let refused = cli(us, &["SET", "after", "2"]).unwrap();
    assert!(refused.contains("READONLY"), "{refused}");
    test(&s, &script)
        .run(&[])
        .code(0)
        .stdout("changed=false")
        .check();
}

#[test]
fn dry_run_leaves_roles_and_data_alone() {
    let (_d, s) = set(false);
    let roles = |s: &RedisSet| -> Vec<String> {
        s.nodes
            .iter()
            .map(|n| {
                cli(n, &["ROLE"])
                    .unwrap()
                    .lines()
                    .next()
                    .unwrap()
                    .to_string()
            })
            .collect()
    };
    let before = roles(&s);
    let eu_port = s.node("eu-west-1").port;
    test(
        &s,
        r#"
        let r = |x| inventory.regions[x].redis_url;
        redis::promote(#{ url: r.call("eu-west-1"), name: "eu-west-1" });
        redis::replicate(#{ url: r.call("us-east-1"), primary_host: "127.0.0.1", primary_port: 1 });
        redis::failover(#{ url: r.call("us-east-1") });
        redis::command(#{ url: r.call("us-east-1"), args: ["SET", "dry", "run"] });
        "#,
    )
    .run(&["--dry-run"])
    .code(0)
    .stdout("Plan: 4 changes")
    .stdout(&format!(
        "promote 127.0.0.1:{eu_port} (eu-west-1) to primary; now replica of 127.0.0.1:"
    ))
    .stdout("link up")
    .stdout("now primary at offset")
    .stdout("SET dry run on 127.0.0.1:")
    .check();
    assert_eq!(roles(&s), before);
    assert_eq!(cli(s.node("us-east-1"), &["EXISTS", "dry"]).unwrap(), "0");
}

#[test]
fn a_flush_empties_a_primarys_database_its_replicas_follow_and_a_replica_refuses() {
    let (_d, s) = set(false);
    let primary = s.node("us-east-1");
    for k in ["a", "b", "c"] {
        cli(primary, &["SET", k, "cached"]).unwrap();
    }
    cli(primary, &["-n", "1", "SET", "session", "kept"]).unwrap();
    let port = primary.port;
    let keys = |region: &str, db: &str| cli(s.node(region), &["-n", db, "DBSIZE"]).unwrap();
    assert!(wait_for(Duration::from_secs(20), || keys("eu-west-1", "0") == "3"));

    // The plan says what it would empty and how much is there; nothing goes.
    test(
        &s,
        r#"redis::flush(#{ url: inventory.regions["us-east-1"].redis_url, name: "us-east-1" });"#,
    )
    .run(&["--dry-run"])
    .code(0)
    .stdout(&format!(
        "empty db 0 on 127.0.0.1:{port} (us-east-1); now 3 key(s)"
    ))
    .check();
    assert_eq!(keys("us-east-1", "0"), "3");

    // A replica is refused, naming its primary; the primary is emptied, counted, once.
    test(
        &s,
        r#"
        let r = |x| inventory.regions[x].redis_url;
        try { redis::flush(#{ url: r.call("eu-west-1"), name: "eu-west-1" }); } catch (e) { log(`refused: ${e}`); }
        let first = redis::flush(#{ url: r.call("us-east-1"), name: "us-east-1" });
        let again = redis::flush(#{ url: r.call("us-east-1"), name: "us-east-1" });
        log(`removed ${first.removed} (changed ${first.changed}), then ${again.removed} (changed ${again.changed})`);
        for x in ["eu-west-1", "ap-southeast-1"] {
            redis::wait_synced(#{ url: r.call(x), primary_url: r.call("us-east-1"), timeout: "20s" });
        }
        "#,
    )
    .run(&[])
    .code(0)
    .stdout(&format!("is a replica of 127.0.0.1:{port}: empty its primary instead"))
    .stdout("removed 3 (changed true), then 0 (changed false)")
    .check();
    for region in REGIONS {
        assert_eq!(keys(region, "0"), "0", "{region}'s db 0");
        // Only the database the URL names: db 1 is another's.
        assert_eq!(keys(region, "1"), "1", "{region}'s db 1");
    }
}

#[test]
fn wrong_password_and_unreachable_name_the_target() {
    let (_d, s) = set(false);
    let port = s.node("us-east-1").port;
    let dead = runbook_stack::free_port().unwrap();
    let t = Test::new()
        .script(&format!(
            r#"
            try {{ redis::role("redis://:nope@127.0.0.1:{port}"); }} catch (e) {{ log(e); }}
            redis::role(#{{ url: "redis://127.0.0.1:{dead}", name: "eu-west-9", retries: 0 }});
            "#
        ))
        .run(&[])
        .code(1)
        .stdout(&format!("redis::role failed: 127.0.0.1:{port}: "))
        .stdout("Password authentication failed")
        .stderr(&format!("127.0.0.1:{dead} (eu-west-9)"))
        .stderr("Connection refused");
    t.check();
    let journal = t.journal(&t.only_run());
    assert_eq!(journal.matches(r#""event":"action_failed""#).count(), 2);
    assert!(!journal.contains(":nope@"), "{journal}");
}

/// Within a run, redis:: actions to one URL share a connection; after the server restarts,
/// the next action gets a new one instead of failing.
#[test]
fn a_kept_connection_is_shared_and_replaced_after_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let set = RedisSet::start(&dir.path().join("redis"), &["solo"], false).expect("Redis starts");
    let node = set.nodes[0].clone();
    let received = || -> i64 {
        cli(&node, &["INFO", "stats"])
            .unwrap()
            .lines()
            .find_map(|l| l.trim().strip_prefix("total_connections_received:"))
            .and_then(|n| n.parse().ok())
            .unwrap()
    };
    let t = Test::new().env("REDIS_URL", &node.url()).file(
        "go.sh",
        "touch at-gate; while [ ! -f go ]; do sleep 0.05; done",
    );
    let t = t.script(
        r#"
        let url = secret("REDIS_URL");
        for i in 0..3 { redis::role(url); }
        shell::run("sh go.sh");
        log(`after restart: ${redis::role(url).role}`);
        "#,
    );
    let before = received();
    let child = t.spawn(&["run", "runbook.rhai"]);
    let gate = t.path("at-gate");
    assert!(crate::support::wait_for(
        std::time::Duration::from_secs(20),
        || gate.exists()
    ));
    // One connection for three actions, and one for this count.
    assert_eq!(received() - before, 2);
    RedisSet::stop_node(&node);
    let mut again = node.clone();
    runbook_stack::redis::start_server(&mut again, &[]).expect("Redis starts again");
    assert_eq!(again.port, node.port, "the port was taken meanwhile");
    std::fs::write(t.path("go"), "").unwrap();
    let ran = crate::support::finish(child);
    RedisSet::stop_node(&again);
    assert_eq!(ran.code, 0, "{}", ran.all());
    assert!(ran.all().contains("after restart: master"), "{}", ran.all());
}

/// The hash slot of a key (CRC16/XMODEM mod 16384; keys here have no hash tags).
fn key_slot(key: &str) -> u16 {
    let mut crc: u16 = 0;
    for b in key.bytes() {
        crc ^= (b as u16) << 8;
        for _ in 0..8 {
            crc = if crc & 0x8000 != 0 {
                (crc << 1) ^ 0x1021
            } else {
                crc << 1
            };
        }
    }
    crc % 16384
}

/// Runs redis-cli with commands on stdin (`-c`: following the cluster's redirections).
fn cli_stdin(node: &runbook_stack::redis::RedisNode, cluster: bool, input: &str) -> String {
    use std::io::Write;
    let mut c = runbook_stack::redis::cli_command(node);
    if cluster {
        c.arg("-c");
    }
    let mut child = c
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(input.as_bytes())
        .unwrap();
    String::from_utf8_lossy(&child.wait_with_output().unwrap().stdout).into_owned()
}

/// Slots each address serves, from a node's CLUSTER NODES.
fn slot_counts(node: &runbook_stack::redis::RedisNode) -> Vec<(String, usize)> {
    let mut out: Vec<(String, usize)> = cli(node, &["CLUSTER", "NODES"])
        .unwrap()
        .lines()
        .map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            let n = f[8..]
                .iter()
                .filter(|s| !s.starts_with('['))
                .map(|s| {
                    let (a, b) = s.split_once('-').unwrap_or((s, s));
                    b.parse::<usize>().unwrap() - a.parse::<usize>().unwrap() + 1
                })
                .sum();
            (f[1].split('@').next().unwrap().to_string(), n)
        })
        .collect();
    out.sort();
    out
}

/// A three-primary cluster grows by a fourth node: the rebalance, cut off by SIGKILL
/// half-way, resumes and ends with 4,096 slots on each primary and every key readable.
#[test]
fn a_cluster_grows_by_a_node_and_a_rebalance_cut_off_resumes() {
    let dir = tempfile::tempdir().unwrap();
    let c = runbook_stack::redis::RedisCluster::start(&dir.path().join("cluster"), 3, 1)
        .expect("a Redis Cluster starts");
    let share = 16384 / 3;
    let owner = |slot: u16| (slot as usize / share).min(2);
    let mut per_node = vec![String::new(); 3];
    for i in 0..1000 {
        let key = format!("key:{i}");
        per_node[owner(key_slot(&key))].push_str(&format!("SET {key} value-{i}\n"));
    }
    for (node, input) in c.masters.iter().zip(&per_node) {
        assert!(!cli_stdin(node, false, input).contains("MOVED"));
    }
    let spare = &c.spares[0];
    let mut inventory = String::from("[cluster]\nurls = [");
    for m in &c.masters {
        inventory.push_str(&format!("\"{}\", ", m.url()));
    }
    inventory.push_str(&format!(
        "]\nnew_url = \"{}\"\nnew_port = {}\n",
        spare.url(),
        spare.port
    ));
    let t = Test::new().inventory(&inventory).script(
        r#"
        import "cluster" as cluster;
        let k = inventory.cluster;
        let urls = [];
        for u in k.urls { urls.push(u); }
        let after = step("grow", || cluster::grow(urls, k.new_url, "127.0.0.1", k.new_port));
        log(`after: ${after.values()}`);
        "#,
    );
    let mut child = t.spawn(&["run", "runbook.rhai", "-i", "inventory.toml"]);
    assert!(wait_for(Duration::from_secs(120), || {
        t.run_ids()
            .first()
            .is_some_and(|id| t.journal(id).matches(r#""redis::move_slot""#).count() >= 8)
    }));
    kill9(&mut child);
    let run = t.only_run();
    assert!(
        !t.journal(&run).contains(r#""event":"run_finished""#),
        "killed before the rebalance ended"
    );
    let resumed = t.exec(&["resume", &run]);
    assert_eq!(resumed.code, 0, "{}", resumed.all());
    assert!(
        resumed.all().contains("rebalanced 4096 slots"),
        "{}",
        resumed.all()
    );
    assert!(
        wait_for(Duration::from_secs(30), || {
            let counts = slot_counts(&c.masters[0]);
            counts.len() == 4 && counts.iter().all(|(_, n)| *n == 4096)
        }),
        "{:?}",
        slot_counts(&c.masters[0])
    );
    let gets: String = (0..1000).map(|i| format!("GET key:{i}\n")).collect();
    // redis-cli -c says where it was redirected; the values are the other lines.
    let values: String = cli_stdin(&c.masters[0], true, &gets)
        .lines()
        .filter(|l| !l.starts_with("->"))
        .map(|l| format!("{l}\n"))
        .collect();
    let want: String = (0..1000).map(|i| format!("value-{i}\n")).collect();
    assert!(
        values == want,
        "every key is still readable: {} of 1000 lines match",
        values
            .lines()
            .zip(want.lines())
            .filter(|(a, b)| a == b)
            .count()
    );
    let on_spare: i64 = cli(spare, &["DBSIZE"]).unwrap().parse().unwrap();
    assert!(on_spare > 150, "keys moved with their slots: {on_spare}");
}
