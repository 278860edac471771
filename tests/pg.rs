//! pg:: actions against a real PostgreSQL 15 primary with two streaming replicas.

use runbook_stack::postgres::PgCluster;
use runbook_stack::REGIONS;

use crate::support::Test;

fn cluster() -> (tempfile::TempDir, PgCluster) {
    let dir = tempfile::tempdir().unwrap();
    let cluster =
        PgCluster::start(&dir.path().join("pg"), &REGIONS).expect("a PostgreSQL cluster starts");
    (dir, cluster)
}

/// An inventory naming each region's database.
fn inventory(c: &PgCluster) -> String {
    let mut s = String::new();
    for n in &c.nodes {
        s.push_str(&format!(
            "[regions.{}]\ndatabase_url = \"{}\"\ndata_dir = \"{}\"\n",
            n.region,
            n.url(),
            n.data_dir.display()
        ));
    }
    s
}

fn test(c: &PgCluster, script: &str) -> Test {
    Test::new().inventory(&inventory(c)).script(script)
}

#[test]
fn status_query_exec_and_replication_on_a_streaming_cluster() {
    let (_d, c) = cluster();
    let t = test(
        &c,
        r#"
        let db = |r| inventory.regions[r].database_url;
        let p = pg::status(db.call("us-east-1"));
        let r = pg::status(#{ url: db.call("eu-west-1"), name: "eu-west-1" });
        log(`primary in_recovery=${p.in_recovery} timeline=${p.timeline}`);
        log(`replica in_recovery=${r.in_recovery} receiver=${r.wal_receiver}`);
        pg::exec(#{ url: db.call("us-east-1"), sql: "CREATE TABLE orders (id int primary key, note text)" });
        let ins = pg::exec(#{ url: db.call("us-east-1"), sql: "INSERT INTO orders SELECT g, $1 FROM generate_series(1, $2::int) g", params: ["x", 5] });
        log(`inserted ${ins.rows_affected}`);
        let w = pg::wait_caught_up(#{ url: db.call("eu-west-1"), primary_url: db.call("us-east-1"), timeout: "30s" });
        log(`caught up lag=${w.lag_bytes}`);
        let q = pg::query(#{ url: db.call("eu-west-1"), sql: "SELECT count(*) AS n, max(id) AS top FROM orders" });
        log(`replica sees n=${q.rows[0].n} top=${q.rows[0].top}`);
        let rep = pg::replication(db.call("us-east-1"));
        log(`replicas=${rep.replicas.len()} worst=${rep.worst} slots=${rep.slots.len()}`);
        for x in rep.replicas { log(`replica ${x.application_name} ${x.state} ${x.severity}`); }
        try {
            pg::query(#{ url: db.call("us-east-1"), sql: "INSERT INTO orders VALUES (99, 'y') RETURNING id" });
        } catch (e) { log(`read-only query refused: ${e}`); }
        "#,
    )
    .run(&[])
    .code(0)
    .stdout("primary in_recovery=false timeline=1")
    .stdout("replica in_recovery=true receiver=streaming")
    .stdout("inserted 5")
    .stdout("caught up lag=0")
    .stdout("replica sees n=5 top=5")
    .stdout("replicas=2 worst=acceptable slots=2")
    .stdout("replica eu-west-1 streaming acceptable")
    .stdout("read-only query refused")
    .stdout("in a read-only transaction (SQLSTATE 25006)");
    t.check();
    assert_eq!(
        c.psql(
            c.node("us-east-1"),
            "SELECT count(*) FROM orders WHERE id = 99"
        )
        .unwrap(),
        "0"
    );
}

/// A secret as a statement's parameter, whole or written into text, reaches the server as its
/// value; the journal keeps the reference.
#[test]
fn a_secret_parameter_reaches_the_server_and_not_the_journal() {
    let (_d, c) = cluster();
    let t = test(
        &c,
        r#"
        let db = inventory.regions["us-east-1"].database_url;
        let token = secret("API_TOKEN");
        pg::exec(#{ url: db, sql: "CREATE TABLE tokens (whole text, written text)" });
        pg::exec(#{ url: db, sql: "INSERT INTO tokens VALUES ($1, $2)", params: [token, `Bearer ${token}`] });
        let q = pg::query(#{ url: db, sql: "SELECT count(*) AS n FROM tokens WHERE whole = $1", params: [token] });
        log(`found ${q.rows[0].n}`);
        "#,
    )
    .env("API_TOKEN", "pg-t0ken-55")
    .run(&[])
    .code(0)
    .stdout("found 1");
    t.check();
    assert_eq!(
        c.psql(
            c.node("us-east-1"),
            "SELECT whole || '|' || written FROM tokens"
        )
        .unwrap(),
        "pg-t0ken-55|Bearer pg-t0ken-55"
    );
    let state = t.state_text();
    assert!(
        state.contains("API_TOKEN") && !state.contains("pg-t0ken-55"),
        "{state}"
    );
}

#[test]
fn promote_a_replica_after_fencing_the_primary_and_twice_is_once() {
    let (_d, c) = cluster();
    let primary = c.node("us-east-1");
    let target = c.node("eu-west-1");
    c.psql(
        primary,
        "CREATE TABLE t (id int); INSERT INTO t VALUES (1), (2), (3)",
    )
    .unwrap();
    let script = r#"
        let db = |r| inventory.regions[r].database_url;
        let f = pg::fence(#{ url: db.call("us-east-1"), name: "us-east-1" });
        log(`fenced lsn=${f.lsn} already=${f.already}`);
        let w = pg::wait_caught_up(#{ url: db.call("eu-west-1"), target_lsn: f.lsn, timeout: "30s" });
        let p = pg::promote(#{ url: db.call("eu-west-1"), name: "eu-west-1" });
        log(`promoted=${p.promoted} timeline=${p.timeline} took=${p.took_ms}`);
        pg::exec(#{ url: db.call("eu-west-1"), sql: "INSERT INTO t VALUES (4)" });
        pg::create_replication_slot(#{ url: db.call("eu-west-1"), slot: "ap_southeast_1" });
        let r = pg::repoint(#{ url: db.call("ap-southeast-1"), name: "ap-southeast-1", primary_url: db.call("eu-west-1"), slot: "ap_southeast_1" });
        pg::wait_caught_up(#{ url: db.call("ap-southeast-1"), primary_url: db.call("eu-west-1"), timeout: "30s" });
        log(`repointed=${r.changed} to ${r.upstream}`);
        "#;
    let t = test(&c, script)
        .run(&[])
        .code(0)
        .stdout("already=false")
        .stdout("promoted=true timeline=2")
        .stdout("repointed=true to 127.0.0.1:");
    t.check();
    // The new primary writes on a new timeline; the old one refuses writes.
    assert_eq!(c.psql(target, "SELECT pg_is_in_recovery()").unwrap(), "f");
    assert_eq!(c.psql(target, "SELECT count(*) FROM t").unwrap(), "4");
    let refused = c
        .psql(primary, "INSERT INTO t VALUES (5)")
        .unwrap_err()
        .to_string();
    assert!(refused.contains("read-only transaction"), "{refused}");
    // Twice equals once: a second run changes nothing.
    let again = test(&c, script)
        .run(&[])
        .code(0)
        .stdout("already=true")
        .stdout("promoted=false timeline=2")
        .stdout("repointed=false");
    again.check();
    assert_eq!(
        c.psql(target, "SELECT count(*) FROM t").unwrap(),
        "5",
        "only the plain INSERT ran again"
    );
    // The other replica follows the new primary on its new timeline.
    let ap = c.node("ap-southeast-1");
    assert!(crate::support::wait_for(
        std::time::Duration::from_secs(10),
        || c.psql(ap, "SELECT count(*) FROM t").unwrap() == "5"
    ));
    assert_eq!(
        c.psql(
            target,
            "SELECT count(*) FROM pg_stat_replication WHERE application_name = 'ap-southeast-1'"
        )
        .unwrap(),
        "1"
    );
}

/// A promotion asks its peers at once. Two peers that take the connection and never answer
/// (a lost region) are asked side by side — the second is connected to while the first still
/// waits, not after its limit — and the writable primary among the peers still refuses the
/// promotion.
#[test]
fn a_promotion_asks_its_peers_at_once() {
    use std::io::Read;
    use std::net::TcpListener;
    let (_d, c) = cluster();
    let silent: Vec<TcpListener> = (0..2)
        .map(|_| TcpListener::bind("127.0.0.1:0").unwrap())
        .collect();
    let peer = |l: &TcpListener| {
        format!(
            "postgres://postgres@127.0.0.1:{}/postgres",
            l.local_addr().unwrap().port()
        )
    };
    let script = format!(
        r#"let db = |r| inventory.regions[r].database_url;
        pg::promote(#{{ url: db.call("eu-west-1"), name: "eu-west-1", peers: ["{}", "{}", db.call("us-east-1")] }});"#,
        peer(&silent[0]),
        peer(&silent[1])
    );
    let t = test(&c, &script);
    let child = t.spawn(&["run", "runbook.rhai", "-i", "inventory.toml"]);
    let (mut first, _) = silent[0].accept().unwrap();
    let (_second, _) = silent[1].accept().unwrap();
    // Still open: asked one after the other, the second would be asked only once the first
    // had been given up and its connection closed.
    // (What the client sent is read past: only the end of the stream says it gave up.)
    first.set_nonblocking(true).unwrap();
    let mut sent = [0u8; 512];
    let open = loop {
        match first.read(&mut sent) {
            Ok(0) => break false,
            Ok(_) => continue,
            Err(e) => break e.kind() == std::io::ErrorKind::WouldBlock,
        }
    };
    assert!(
        open,
        "the first silent peer was given up before the second was asked"
    );
    let ran = crate::support::Ran::from(child.wait_with_output().unwrap());
    assert_eq!(ran.code, 1, "{}", ran.all());
    let writable = c.node("us-east-1");
    assert!(
        ran.stderr.contains(&format!(
            "refusing to promote 127.0.0.1:{} (eu-west-1): 127.0.0.1:{} (timeline 1) answers as a writable primary",
            c.node("eu-west-1").port,
            writable.port
        )),
        "{}",
        ran.stderr
    );
    assert_eq!(
        c.psql(c.node("eu-west-1"), "SELECT pg_is_in_recovery()")
            .unwrap(),
        "t"
    );
}

#[test]
fn fence_by_shutdown_stops_the_primary_and_reports_its_last_position() {
    let (_d, c) = cluster();
    let primary = c.node("us-east-1");
    c.psql(primary, "CREATE TABLE t AS SELECT 1 AS x").unwrap();
    let script = format!(
        r#"
        let f = pg::fence(#{{ url: inventory.regions["us-east-1"].database_url, method: "shutdown",
                             data_dir: inventory.regions["us-east-1"].data_dir, bin_dir: "{bin}", os_user: "postgres" }});
        log(`lsn=${{f.lsn}} already=${{f.already}}`);
        let w = pg::wait_caught_up(#{{ url: inventory.regions["eu-west-1"].database_url, target_lsn: f.lsn, timeout: "30s" }});
        log(`replica reached ${{w.replay_lsn}}`);
        "#,
        bin = c.bin.display()
    );
    let ran = test(&c, &script)
        .run(&[])
        .code(0)
        .stdout("already=false")
        .stdout("replica reached")
        .check();
    assert!(!primary.running(), "the primary is stopped");
    assert!(ran.stdout.contains("lsn=0/"), "{}", ran.stdout);
    test(&c, &script)
        .run(&[])
        .code(0)
        .stdout("already=true")
        .check();
}

#[test]
fn slots_settings_and_roles_converge() {
    let (_d, c) = cluster();
    let primary = c.node("us-east-1");
    let script = r#"
        let db = inventory.regions["us-east-1"].database_url;
        let s = pg::create_replication_slot(#{ url: db, slot: "extra_replica" });
        let d = pg::drop_replication_slot(#{ url: db, slot: "gone_slot" });
        let w = pg::set_config(#{ url: db, setting: "work_mem", value: "8MB" });
        let m = pg::set_config(#{ url: db, setting: "max_connections", value: "150" });
        let r = pg::create_role(#{ url: db, role: "replicator", password: secret("REPLICATOR_PASSWORD"), replication: true });
        log(`slot=${s.changed} drop=${d.changed} work_mem=${w.changed}/${w.restart_required} max_connections=${m.changed}/${m.restart_required} role=${r.created}`);
        "#;
    let t = test(&c, script).env("REPLICATOR_PASSWORD", "rep-s3cret-pw");
    let first = t.exec(&["run", "runbook.rhai", "-i", "inventory.toml"]);
    assert_eq!(first.code, 0, "{}", first.all());
    assert!(
        first.stdout.contains(
            "slot=true drop=false work_mem=true/false max_connections=true/true role=true"
        ),
        "{}",
        first.stdout
    );
    assert_eq!(
        c.psql(
            primary,
            "SELECT count(*) FROM pg_replication_slots WHERE slot_name = 'extra_replica'"
        )
        .unwrap(),
        "1"
    );
    assert_eq!(c.psql(primary, "SHOW work_mem").unwrap(), "8MB");
    assert_eq!(
        c.psql(
            primary,
            "SELECT rolreplication FROM pg_roles WHERE rolname = 'replicator'"
        )
        .unwrap(),
        "t"
    );
    // The password works over TCP, and appears nowhere in the run's records.
    let mut login = std::process::Command::new("psql");
    login
        .args([
            "-X",
            "-At",
            "-h",
            "127.0.0.1",
            "-p",
            &primary.port.to_string(),
            "-U",
            "replicator",
            "-d",
            "postgres",
            "-c",
            "SELECT 42",
        ])
        .env("PGPASSWORD", "rep-s3cret-pw");
    let out = login.output().unwrap();
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "42",
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!t.state_text().contains("rep-s3cret-pw"));
    // Twice equals once.
    let second = t.exec(&["run", "runbook.rhai", "-i", "inventory.toml"]);
    assert_eq!(second.code, 0, "{}", second.all());
    assert!(
        second.stdout.contains(
            "slot=false drop=false work_mem=false/false max_connections=false/true role=false"
        ),
        "{}",
        second.stdout
    );
    assert_eq!(
        c.psql(primary, "SELECT count(*) FROM pg_replication_slots")
            .unwrap(),
        "3"
    );
}

/// A dry-run reads the servers for its plan and changes none of them.
#[test]
fn dry_run_changes_nothing_on_the_servers_and_names_each_change() {
    let (_d, c) = cluster();
    let state = |c: &PgCluster| -> Vec<String> {
        c.nodes
            .iter()
            .map(|n| {
                c.psql(
                    n,
                    "SELECT pg_is_in_recovery()::text || '|' || current_setting('work_mem') || '|' || current_setting('default_transaction_read_only')
                     || '|' || (SELECT count(*) FROM pg_roles) || '|' || (SELECT count(*) FROM pg_replication_slots)
                     || '|' || (SELECT count(*) FROM pg_tables WHERE schemaname = 'public')",
                )
                .unwrap()
            })
            .collect()
    };
    let before = state(&c);
    let auto_before =
        std::fs::read_to_string(c.node("us-east-1").data_dir.join("postgresql.auto.conf")).unwrap();
    let script = r#"
        let db = |r| inventory.regions[r].database_url;
        pg::fence(#{ url: db.call("us-east-1"), name: "us-east-1" });
        pg::promote(#{ url: db.call("eu-west-1"), name: "eu-west-1" });
        pg::exec(#{ url: db.call("us-east-1"), sql: "CREATE TABLE nope (x int)" });
        pg::create_replication_slot(#{ url: db.call("us-east-1"), slot: "nope" });
        pg::drop_replication_slot(#{ url: db.call("us-east-1"), slot: "eu_west_1" });
        pg::set_config(#{ url: db.call("us-east-1"), setting: "work_mem", value: "64MB" });
        pg::create_role(#{ url: db.call("us-east-1"), role: "nope" });
        "#;
    let port = c.node("eu-west-1").port;
    let ran = test(&c, script)
        .run(&["--dry-run"])
        .code(0)
        .stdout("Plan: 7 changes")
        .stdout(&format!(
            "promote 127.0.0.1:{port} (eu-west-1) to primary; now replica at 0/"
        ))
        .stdout("lag 0 B")
        .stdout("fence 127.0.0.1:")
        .stdout("now primary at 0/")
        .stdout("set work_mem = '64MB' on 127.0.0.1:")
        .stdout("now '4MB'")
        .check();
    assert!(
        ran.stdout.contains("create replication slot nope"),
        "{}",
        ran.stdout
    );
    assert_eq!(state(&c), before, "the servers are as they were");
    assert_eq!(
        std::fs::read_to_string(c.node("us-east-1").data_dir.join("postgresql.auto.conf")).unwrap(),
        auto_before
    );
}

#[test]
fn unreachable_servers_and_wrong_passwords_name_the_target_and_are_journaled() {
    let (_d, c) = cluster();
    let port = c.node("us-east-1").port;
    let dead = runbook_stack::free_port().unwrap();
    let t = Test::new()
        .script(&format!(
            r#"
            step("wrong password", || {{
                try {{ pg::status("postgres://postgres:wrong@127.0.0.1:{port}/postgres"); }} catch (e) {{ log(e); }}
            }});
            step("unreachable", || pg::status(#{{ url: "postgres://postgres@127.0.0.1:{dead}/postgres", name: "eu-west-9", retries: 0 }}));
            "#
        ))
        .run(&[])
        .code(1)
        .stdout(&format!("127.0.0.1:{port}: authentication failed: password authentication failed for user \"postgres\""))
        .stderr(&format!("pg::status failed: 127.0.0.1:{dead} (eu-west-9)"))
        .stderr("Connection refused");
    t.check();
    let journal = t.journal(&t.only_run());
    assert_eq!(
        journal.matches(r#""event":"action_failed""#).count(),
        2,
        "{journal}"
    );
    assert!(
        !journal.contains(":wrong@"),
        "a password typed into a URL is masked in the journal: {journal}"
    );
}

/// Within a run, actions to the same database share a connection; one that changes its
/// session (pg::exec) does not give it to the next; a connection the server closed (a
/// restart) is replaced without failing the action; a wrong password is final at once.
#[test]
fn connections_are_reused_within_a_run_and_replaced_when_the_server_restarts() {
    let dir = tempfile::tempdir().unwrap();
    let c = PgCluster::start(&dir.path().join("pg"), &["solo"]).expect("PostgreSQL starts");
    let t = Test::new()
        .env("DB_URL", &c.nodes[0].url())
        .file("go.sh", "while [ ! -f go ]; do sleep 0.05; done");
    let script = r#"
        let db = secret("DB_URL");
        let pid = || pg::query(#{ url: db, sql: "SELECT pg_backend_pid() AS p" }).rows[0].p;
        let first = pid.call();
        pg::status(db);
        let again = pid.call();
        log(`reused: ${first == again}`);
        pg::exec(#{ url: db, sql: "SET application_name = 'changed'" });
        let name = pg::query(#{ url: db, sql: "SELECT current_setting('application_name') AS n" }).rows[0].n;
        log(`session of exec kept: ${name == "changed"}`);
        log("waiting");
        shell::run("touch at-gate; sh go.sh");
        let after = pid.call();
        log(`replaced after restart: ${after != again}`);
    "#;
    let t = t.script(script);
    let child = t.spawn(&["run", "runbook.rhai"]);
    // Wait for the run to reach the gate, restart the server, open the gate.
    let gate = t.path("at-gate");
    assert!(crate::support::wait_for(
        std::time::Duration::from_secs(20),
        || gate.exists()
    ));
    c.stop_node(&c.nodes[0]);
    c.start_node(&c.nodes[0]).unwrap();
    std::fs::write(t.path("go"), "").unwrap();
    let out = crate::support::finish(child);
    let all = out.all();
    assert_eq!(out.code, 0, "{all}");
    assert!(all.contains("reused: true"), "{all}");
    assert!(all.contains("session of exec kept: false"), "{all}");
    assert!(all.contains("replaced after restart: true"), "{all}");

    // A wrong password: the server's refusal, once, at once.
    let wrong = c.nodes[0]
        .url()
        .replace(runbook_stack::postgres::PASSWORD, "wrong-password");
    let refused = Test::new()
        .env("DB_URL", &wrong)
        .script(r#"pg::status(secret("DB_URL"));"#)
        .exec(&["run", "runbook.rhai"]);
    assert_ne!(refused.code, 0, "{}", refused.all());
    assert!(
        refused.all().contains("password authentication failed"),
        "{}",
        refused.all()
    );
    assert!(!refused.all().contains("retrying"), "{}", refused.all());
    assert!(
        !refused.all().contains("wrong-password"),
        "{}",
        refused.all()
    );
}

/// A refused connection may pass (a server restarting): it is retried, for PostgreSQL and
/// Redis alike, and then fails naming the host.
#[test]
fn a_refused_connection_is_retried() {
    let port = runbook_stack::free_port().unwrap();
    let t = Test::new().script(&format!(
        r#"
        try {{ pg::status(#{{ url: "postgres://postgres@127.0.0.1:{port}/postgres", retries: 2, backoff: "10ms" }}); }}
        catch (e) {{ log(`pg: ${{e}}`); }}
        try {{ redis::role(#{{ url: "redis://127.0.0.1:{port}", retries: 2, backoff: "10ms" }}); }}
        catch (e) {{ log(`redis: ${{e}}`); }}
        "#
    ));
    let ran = t.exec(&["run", "runbook.rhai"]);
    assert_eq!(ran.code, 0, "{}", ran.all());
    assert_eq!(ran.all().matches("retrying").count(), 4, "{}", ran.all());
    assert!(ran.all().contains("pg: "), "{}", ran.all());
    assert!(
        ran.all().to_lowercase().matches("refused").count() >= 2,
        "{}",
        ran.all()
    );
    assert!(
        ran.all().contains(&format!("127.0.0.1:{port}")),
        "{}",
        ran.all()
    );
}
