//! TLS to PostgreSQL and Redis servers that accept TLS only, with a private CA: libpq's
//! sslmode meanings, client certificates, certificate problems that fail at once naming what
//! is wrong, the journal store over TLS, and the shipped runbooks on `stack up --tls`.

use std::path::Path;
use std::time::{Duration, Instant};

use runbook_stack::postgres::{server_dir, PgCluster, PASSWORD};
use runbook_stack::redis::{RedisNode, RedisSet};
use runbook_stack::tls::{Ca, StackTls};

use crate::support::{Ran, Test};

/// A TLS-only PostgreSQL (hostssl lines only) and its certificates.
struct Db {
    pg: PgCluster,
    tls: StackTls,
    _dir: tempfile::TempDir,
}

fn tls_db() -> Db {
    let dir = tempfile::tempdir().unwrap();
    let real = server_dir(&dir.path().join("pg")).unwrap();
    let tls = StackTls::create(&real.join("tls")).unwrap();
    own(&real.join("tls"));
    let pg =
        PgCluster::start_in(real, &["primary"], Some(&tls)).expect("a TLS-only PostgreSQL starts");
    Db { pg, tls, _dir: dir }
}

/// Makes the servers' files theirs (PostgreSQL runs as `postgres` when the tests run as root).
fn own(path: &Path) {
    if unsafe { libc::geteuid() } == 0 {
        let ok = std::process::Command::new("chown")
            .args(["-R", "postgres:"])
            .arg(path)
            .status()
            .unwrap()
            .success();
        assert!(ok, "chown {}", path.display());
    }
}

impl Db {
    fn port(&self) -> u16 {
        self.pg.nodes[0].port
    }

    /// The superuser's URL with these parameters.
    fn url(&self, params: &str) -> String {
        format!(
            "postgres://postgres:{PASSWORD}@127.0.0.1:{}/postgres{params}",
            self.port()
        )
    }

    fn sql(&self, q: &str) -> String {
        self.pg.psql(&self.pg.nodes[0], q).unwrap()
    }

    /// Serves another certificate (signed by the stack's CA) from now on.
    fn serve(&self, names: &[&str], expired: bool) {
        let dir = self.tls.ca.parent().unwrap();
        // The CA key lives only in memory: make a new CA in the same place for the server
        // certificate, and trust it from the same file, as a reissue would.
        let ca = Ca::create(dir, "ca").unwrap();
        ca.issue(dir, "server", names, names[0], expired).unwrap();
        own(dir);
        self.sql("SELECT pg_reload_conf()");
        // The reload reaches the postmaster asynchronously; new connections then use it.
        std::thread::sleep(Duration::from_millis(300));
    }
}

/// `pg::status` on `url`; how the run ended and how long it took.
fn status(url: &str) -> (Ran, Duration) {
    let t = Test::new()
        .env("DB_URL", url)
        .script(r#"let s = pg::status(#{ url: secret("DB_URL"), name: "db" }); print(`role: ${if s.in_recovery { "standby" } else { "primary" }}`);"#);
    let started = Instant::now();
    let ran = t.exec(&["run", "runbook.rhai"]);
    (ran, started.elapsed())
}

fn assert_ok(url: &str) {
    let (ran, _) = status(url);
    assert_eq!(ran.code, 0, "{url}:\n{}", ran.all());
    assert!(ran.all().contains("role: primary"), "{}", ran.all());
    assert!(
        !ran.all().contains(PASSWORD),
        "the password leaked:\n{}",
        ran.all()
    );
}

/// Fails at once (no retry, well under a second) with a message holding `words` and naming
/// the server.
fn assert_fails_at_once(url: &str, words: &str) {
    let ran = assert_refused(url, words);
    assert!(
        ran.all().contains("127.0.0.1:"),
        "names the host:\n{}",
        ran.all()
    );
}

/// The same for a URL that is wrong in itself: refused before anything is sent.
fn assert_refused(url: &str, words: &str) -> Ran {
    let (ran, took) = status(url);
    assert_ne!(ran.code, 0, "{url} should fail:\n{}", ran.all());
    assert!(
        ran.all().contains(words),
        "{url}: expected {words:?} in:\n{}",
        ran.all()
    );
    assert!(!ran.all().contains("retrying"), "retried:\n{}", ran.all());
    assert!(took < Duration::from_secs(1), "{url} took {took:?}");
    assert!(
        !ran.all().contains(PASSWORD),
        "the password leaked:\n{}",
        ran.all()
    );
    ran
}

#[test]
fn postgres_over_tls_checks_the_server_as_libpq_does() {
    let db = tls_db();
    let ca = db.tls.ca.display().to_string();
    let other = tempfile::tempdir().unwrap();
    let other_ca = Ca::create(other.path(), "other").unwrap();
    let other_ca = other_ca.cert_path.display().to_string();

    assert_ok(&db.url(&format!("?sslmode=verify-full&sslrootcert={ca}")));
    assert_ok(&db.url(&format!("?sslmode=verify-ca&sslrootcert={ca}")));
    // Encryption without checking who answers, as libpq's require without a CA.
    assert_ok(&db.url("?sslmode=require"));
    assert_ok(&db.url("?sslmode=prefer"));
    assert_ok(&db.url("?sslmode=allow"));
    // The key=value form carries the same parameters.
    assert_ok(&format!(
        "host=127.0.0.1 port={} user=postgres password={PASSWORD} dbname=postgres sslmode=verify-full sslrootcert='{ca}'",
        db.port()
    ));

    // The server refuses a plain connection: pg_hba has hostssl lines only.
    assert_fails_at_once(&db.url("?sslmode=disable"), "no encryption");
    // A certificate from another CA.
    assert_fails_at_once(
        &db.url(&format!("?sslmode=verify-full&sslrootcert={other_ca}")),
        "not signed by a trusted CA",
    );
    // require with a CA checks the chain, as libpq does.
    assert_fails_at_once(
        &db.url(&format!("?sslmode=require&sslrootcert={other_ca}")),
        "not signed by a trusted CA",
    );
    // Bad parameters are named before anything is sent.
    assert_refused(&db.url("?sslmode=verify-full"), "needs the CA");
    assert_refused(
        &db.url("?sslmode=require&sslrootcert=system"),
        "verify-full",
    );
    assert_refused(&db.url("?sslmode=verify_full"), "invalid sslmode");
    assert_refused(
        &db.url("?sslmode=verify-full&sslrootcert=/nonexistent/ca.pem"),
        "/nonexistent/ca.pem",
    );

    // The inventory's [postgres] defaults serve every URL without parameters of its own; a
    // relative CA path is read from the inventory's folder.
    let t = Test::new()
        .env("DB_URL", &db.url(""))
        .file("certs/ca.crt", &std::fs::read_to_string(&db.tls.ca).unwrap())
        .inventory("[postgres]\nsslmode = \"verify-full\"\nsslrootcert = \"certs/ca.crt\"\n")
        .script(r#"let s = pg::status(#{ url: secret("DB_URL"), name: "db" }); print(`tls default: ${s.server_version != ""}`);"#);
    let ran = t.exec(&["run", "runbook.rhai", "-i", "inventory.toml"]);
    assert_eq!(ran.code, 0, "{}", ran.all());
    assert!(ran.all().contains("tls default: true"), "{}", ran.all());
    let own_mode = t.env("DB_URL", &db.url("?sslmode=disable"));
    let ran = own_mode.exec(&["run", "runbook.rhai", "-i", "inventory.toml"]);
    assert!(
        ran.all().contains("no encryption"),
        "the URL's own sslmode wins:\n{}",
        ran.all()
    );
    let typo = Test::new()
        .inventory("[postgres]\nsslmode = \"verify_full\"\n")
        .script("print(1);")
        .exec(&["run", "runbook.rhai", "-i", "inventory.toml"]);
    assert_eq!(typo.code, 2, "{}", typo.all());
    assert!(typo.all().contains("postgres.sslmode"), "{}", typo.all());

    // A certificate for another name: verify-full refuses, verify-ca (the chain only) accepts.
    db.serve(&["db.example.internal"], false);
    let ca = db.tls.ca.display().to_string();
    assert_fails_at_once(
        &db.url(&format!("?sslmode=verify-full&sslrootcert={ca}")),
        "does not name this host",
    );
    assert_ok(&db.url(&format!("?sslmode=verify-ca&sslrootcert={ca}")));

    // An expired certificate.
    db.serve(&["127.0.0.1"], true);
    assert_fails_at_once(
        &db.url(&format!("?sslmode=verify-full&sslrootcert={ca}")),
        "has expired",
    );
}

#[test]
fn a_client_certificate_logs_in_without_a_password() {
    let db = tls_db();
    db.sql("CREATE ROLE certuser LOGIN SUPERUSER");
    let hba = db.pg.nodes[0].data_dir.join("pg_hba.conf");
    let text = std::fs::read_to_string(&hba).unwrap();
    std::fs::write(
        &hba,
        format!("hostssl all certuser 127.0.0.1/32 cert\n{text}"),
    )
    .unwrap();
    db.sql("SELECT pg_reload_conf()");
    std::thread::sleep(Duration::from_millis(300));
    let dir = db.tls.ca.parent().unwrap().to_path_buf();
    // The CA's key is gone with the stack's set-up: issue from a CA the server trusts by
    // adding it to the server's CA file.
    let ca = Ca::create(&dir, "clients").unwrap();
    let client = ca.issue(&dir, "certuser", &[], "certuser", false).unwrap();
    let both = format!(
        "{}{}",
        std::fs::read_to_string(&db.tls.ca).unwrap(),
        std::fs::read_to_string(&ca.cert_path).unwrap()
    );
    std::fs::write(&db.tls.ca, both).unwrap();
    own(&dir);
    db.sql("SELECT pg_reload_conf()");
    std::thread::sleep(Duration::from_millis(300));

    let server_ca = db.tls.ca.display().to_string();
    let base = format!("postgres://certuser@127.0.0.1:{}/postgres", db.port());
    assert_ok(&format!(
        "{base}?sslmode=verify-full&sslrootcert={server_ca}&sslcert={}&sslkey={}",
        client.cert.display(),
        client.key.display()
    ));
    // Without the certificate the server refuses, and that is final.
    assert_fails_at_once(
        &format!("{base}?sslmode=verify-full&sslrootcert={server_ca}"),
        "certificate",
    );
    // Half a client certificate is a mistake in the URL.
    assert_refused(
        &format!(
            "{base}?sslmode=verify-full&sslrootcert={server_ca}&sslcert={}",
            client.cert.display()
        ),
        "sslcert is given without sslkey",
    );
}

#[test]
fn the_journal_store_works_over_tls() {
    let db = tls_db();
    let ca = db.tls.ca.display().to_string();
    let store = db.url(&format!("?sslmode=verify-full&sslrootcert={ca}"));
    let t = Test::new().script(r#"step("one", || print("stored"));"#);
    let ran = t.exec(&["--store", &store, "run", "runbook.rhai"]);
    assert_eq!(ran.code, 0, "{}", ran.all());
    assert!(!ran.all().contains(PASSWORD), "{}", ran.all());
    let run_id = db.sql("SELECT run_id FROM runbook_runs");
    let records: i64 = db
        .sql(&format!(
            "SELECT count(*) FROM runbook_journal WHERE run_id = '{run_id}'"
        ))
        .parse()
        .unwrap();
    assert!(
        records >= 3,
        "the run's records are in the store: {records}"
    );
    let log = t.exec(&["--store", &store, "log", &run_id]);
    assert_eq!(log.code, 0, "{}", log.all());
    assert!(log.all().contains("one"), "{}", log.all());

    // A store whose certificate is not trusted is named, and nothing runs.
    let other = tempfile::tempdir().unwrap();
    let other_ca = Ca::create(other.path(), "other").unwrap();
    let bad = db.url(&format!(
        "?sslmode=verify-full&sslrootcert={}",
        other_ca.cert_path.display()
    ));
    let refused = t.exec(&["--store", &bad, "run", "runbook.rhai"]);
    assert_ne!(refused.code, 0, "{}", refused.all());
    assert!(
        refused.all().contains("not signed by a trusted CA"),
        "{}",
        refused.all()
    );
    assert!(!refused.all().contains(PASSWORD), "{}", refused.all());
}

/// `redis::role` on `url`.
fn redis_role(url: &str) -> (Ran, Duration) {
    let t = Test::new()
        .env("REDIS_URL", url)
        .script(r#"let r = redis::role(#{ url: secret("REDIS_URL"), name: "cache" }); print(`role: ${r.role}`);"#);
    let started = Instant::now();
    let ran = t.exec(&["run", "runbook.rhai"]);
    (ran, started.elapsed())
}

#[test]
fn redis_over_tls_checks_the_server_and_says_so_when_told_not_to() {
    let dir = tempfile::tempdir().unwrap();
    let tls = StackTls::create(&dir.path().join("tls")).unwrap();
    let set = RedisSet::start_with(&dir.path().join("redis"), &["tls"], false, Some(&tls))
        .expect("a TLS-only Redis starts");
    let node: &RedisNode = &set.nodes[0];
    let port = node.port;
    let ca = tls.ca.display().to_string();
    let pw = runbook_stack::redis::PASSWORD;

    let (ok, _) = redis_role(&format!("rediss://:{pw}@127.0.0.1:{port}?cacert={ca}"));
    assert_eq!(ok.code, 0, "{}", ok.all());
    assert!(ok.all().contains("role: master"), "{}", ok.all());
    assert!(!ok.all().contains(pw), "{}", ok.all());

    let other = Ca::create(dir.path(), "other").unwrap();
    let (bad, took) = redis_role(&format!(
        "rediss://:{pw}@127.0.0.1:{port}?cacert={}",
        other.cert_path.display()
    ));
    assert_ne!(bad.code, 0, "{}", bad.all());
    assert!(
        bad.all().contains("not signed by a trusted CA"),
        "{}",
        bad.all()
    );
    assert!(!bad.all().contains("retrying"), "{}", bad.all());
    assert!(took < Duration::from_secs(1), "took {took:?}");
    assert!(!bad.all().contains(pw), "{}", bad.all());

    // The opt-out works and is loud.
    let (insecure, _) = redis_role(&format!("rediss://:{pw}@127.0.0.1:{port}#insecure"));
    assert_eq!(insecure.code, 0, "{}", insecure.all());
    assert!(
        insecure.all().contains("NOT VERIFIED"),
        "{}",
        insecure.all()
    );

    // TLS parameters on a plain URL are a mistake, named.
    let (plain, _) = redis_role(&format!("redis://:{pw}@127.0.0.1:{port}?cacert={ca}"));
    assert_ne!(plain.code, 0, "{}", plain.all());
    assert!(plain.all().contains("write rediss://"), "{}", plain.all());

    // A server that asks every client for a certificate.
    let mut strict = RedisNode {
        region: "strict".into(),
        port: runbook_stack::free_port().unwrap(),
        dir: dir.path().join("strict"),
        tls: Some(tls.clone()),
    };
    runbook_stack::redis::start_server(&mut strict, &["--tls-auth-clients".into(), "yes".into()])
        .expect("a Redis that wants client certificates starts");
    let client = &tls.client;
    let (with_cert, _) = redis_role(&format!(
        "rediss://:{pw}@127.0.0.1:{}?cacert={ca}&cert={}&key={}",
        strict.port,
        client.cert.display(),
        client.key.display()
    ));
    assert_eq!(with_cert.code, 0, "{}", with_cert.all());
    let (without, took) = redis_role(&format!(
        "rediss://:{pw}@127.0.0.1:{}?cacert={ca}",
        strict.port
    ));
    RedisSet::stop_node(&strict);
    assert_ne!(without.code, 0, "{}", without.all());
    assert!(without.all().contains("TLS"), "{}", without.all());
    assert!(took < Duration::from_secs(2), "took {took:?}");
}

#[test]
fn the_shipped_runbooks_run_on_a_tls_only_stack() {
    let d = crate::runbooks::drill_with(runbook_stack::Options {
        tls: true,
        ..Default::default()
    });
    let inventory = std::fs::read_to_string(&d.inventory).unwrap();
    assert!(
        inventory.contains("sslmode=verify-full&sslrootcert="),
        "{inventory}"
    );
    assert!(inventory.contains("rediss://"), "{inventory}");
    assert!(inventory.contains("[tls]"), "{inventory}");

    // The fake clusters make the applications ready a moment after the stack is up.
    let mut status = d.run("status", &[]);
    crate::support::wait_for(Duration::from_secs(10), || {
        status = d.run("status", &[]);
        status.code == 0
    });
    assert_eq!(status.code, 0, "{}", status.all());
    assert!(status.all().contains("no anomalies"), "{}", status.all());

    let planned = d.run("planned-failover", &["--var", "target=eu-west-1", "--yes"]);
    assert_eq!(planned.code, 0, "{}", planned.all());
    assert_eq!(d.psql("eu-west-1", "SELECT pg_is_in_recovery()"), "f");
    assert_eq!(d.psql("us-east-1", "SELECT pg_is_in_recovery()"), "t");
    // The standbys stream over TLS.
    assert_eq!(
        d.psql(
            "eu-west-1",
            "SELECT count(*) FROM pg_stat_ssl s JOIN pg_stat_replication r USING (pid) WHERE s.ssl"
        ),
        "2"
    );
    // The new primary's region fails: emergency failover to the third, then the failed
    // region comes back as a standby — every connection over TLS.
    d.stack
        .web
        .set_health("eu-west-1", runbook_stack::web::Health::Fail);
    runbook_stack::postgres::stop_dir(&d.stack.pg.node("eu-west-1").data_dir, libc::SIGQUIT)
        .unwrap();
    let emergency = d.run(
        "emergency-failover",
        &["--var", "target=ap-southeast-1", "--yes"],
    );
    assert_eq!(emergency.code, 0, "{}", emergency.all());
    assert_eq!(d.psql("ap-southeast-1", "SELECT pg_is_in_recovery()"), "f");
    d.stack
        .web
        .set_health("eu-west-1", runbook_stack::web::Health::Ok);
    runbook_stack::postgres::start_dir(&d.stack.pg.node("eu-west-1").data_dir, "eu-west-1")
        .unwrap();
    let rejoin = d.run("rejoin", &["--var", "region=eu-west-1", "--yes"]);
    assert_eq!(rejoin.code, 0, "{}", rejoin.all());
    assert_eq!(d.psql("eu-west-1", "SELECT pg_is_in_recovery()"), "t");
    for ran in [&status, &planned, &emergency, &rejoin] {
        assert!(!ran.all().contains(PASSWORD), "{}", ran.all());
    }
}
