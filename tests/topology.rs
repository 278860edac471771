//! The servers are the truth: the shipped runbooks decide from the observed topology, status
//! names what is wrong, a former primary rejoins as a standby, and a failback needs nothing in
//! between — checked on the local stack with psql, redis-cli, the AWS SDK and kubectl.

use std::path::Path;

use runbook_stack::redis::info_field;
use runbook_stack::web::Health;

use crate::runbooks::{drill, Drill};
use crate::support::{assert_says, Ran, Test};

/// Whether a region's database is a writable primary, as psql sees it ("" when it is down).
fn role(d: &Drill, region: &str) -> String {
    d.stack
        .pg
        .psql(
            d.stack.pg.node(region),
            "SELECT CASE WHEN pg_is_in_recovery() THEN 'standby' WHEN current_setting('default_transaction_read_only') = 'on' THEN 'fenced' ELSE 'writable' END",
        )
        .unwrap_or_default()
}

/// The host:port a standby streams from, as its WAL receiver reports it.
fn upstream(d: &Drill, region: &str) -> String {
    d.psql(
        region,
        "SELECT COALESCE((SELECT status || ' from ' || sender_port FROM pg_stat_wal_receiver), 'none')",
    )
}

fn streams_from(d: &Drill, standby: &str, primary: &str) -> bool {
    crate::support::wait_for(std::time::Duration::from_secs(20), || {
        upstream(d, standby) == format!("streaming from {}", d.stack.pg.node(primary).port)
    })
}

fn status(d: &Drill) -> Ran {
    d.run("status", &[])
}

/// Sets `key` of region `to` in the drill's inventory to `value`.
fn set_region_key(d: &Drill, to: &str, key: &str, value: &str) {
    let text = std::fs::read_to_string(&d.inventory).unwrap();
    let mut section = String::new();
    let mut out = Vec::new();
    for line in text.lines() {
        if line.starts_with('[') {
            section = line.trim_matches(|c| c == '[' || c == ']').to_string();
        }
        if section == format!("regions.{to}") && line.starts_with(&format!("{key} =")) {
            out.push(format!("{key} = \"{value}\""));
        } else {
            out.push(line.to_string());
        }
    }
    assert_ne!(
        text.lines().collect::<Vec<_>>(),
        out,
        "{key} of {to} was not found"
    );
    std::fs::write(&d.inventory, out.join("\n") + "\n").unwrap();
}

/// Runs `runbook`, which must fail (exit 1) saying `says` and that nothing was changed.
fn refuses(d: &Drill, runbook: &str, extra: &[&str], says: &str) {
    let ran = d.run(runbook, extra);
    assert_eq!(ran.code, 1, "{runbook}: {}", ran.all());
    assert!(
        ran.stderr.contains(says) && ran.stderr.contains("Nothing was changed"),
        "{runbook}: {}",
        ran.stderr
    );
}

/// Runs status, which must fail (exit 1, a critical anomaly) saying each of `says`.
fn status_says(d: &Drill, says: &[&str]) -> Ran {
    let seen = status(d);
    assert_eq!(seen.code, 1, "{}", seen.all());
    assert_says(&seen.stdout, says);
    seen
}

/// A database that answers but refuses the engine's login (the password rotated, the inventory
/// not yet) is running, not down: the primary's is "unknown", never a reason to fail over —
/// which would leave two writable primaries — and no runbook acts on it until the inventory is
/// fixed. A standby's is a warning beside a primary that takes writes.
#[test]
fn a_database_that_refuses_the_login_is_running_not_down() {
    let d = drill();
    // The password the servers had, replaced in a URL by one they do not know.
    let rotated = |url: &str| {
        let new = url.replace(":runbook-stack@", ":rotated-elsewhere@");
        assert_ne!(new, url);
        new
    };
    let good = d.stack.pg.node("us-east-1").url();
    set_region_key(&d, "us-east-1", "database_url", &rotated(&good));
    let seen = status_says(
        &d,
        &[
            "us-east-1       REFUSED (answers; role unknown)",
            "primary: UNKNOWN (none is seen taking writes; us-east-1 refuses the engine)",
            "CRITICAL  no database is seen accepting writes, and us-east-1's database answers but refuses the engine (",
            "authentication failed: password authentication failed for user \"postgres\"): which region is the primary is unknown, not down",
            "next: fix the inventory's database_url for us-east-1 (the user, password or database it gives, or the secret it names), then run status again; do not fail over from a database that answers",
        ],
    );
    assert!(
        !seen.stdout.contains("emergency-failover"),
        "{}",
        seen.stdout
    );
    assert!(!seen.all().contains("rotated-elsewhere"), "{}", seen.all());
    let before = d.state();
    for (runbook, extra, says) in [
        (
            "emergency-failover",
            vec!["--yes"],
            "which region is the primary is unknown, not down. A failover now could leave two writable primaries",
        ),
        (
            "planned-failover",
            vec!["--var", "target=eu-west-1", "--yes"],
            "which region is the primary is unknown, not down",
        ),
        (
            "fence",
            vec!["--var", "region=us-east-1"],
            "us-east-1's database answers but refuses the engine (",
        ),
        (
            "rejoin",
            vec!["--var", "region=eu-west-1", "--yes"],
            "which region is the primary is unknown, not down",
        ),
    ] {
        refuses(&d, runbook, &extra, says);
    }
    assert_eq!(d.state(), before, "nothing changed");
    assert_eq!(role(&d, "us-east-1"), "writable");

    // A standby's: a warning (status exits 0), and what needs it is refused.
    set_region_key(&d, "us-east-1", "database_url", &good);
    let standby = d.stack.pg.node("eu-west-1").url();
    set_region_key(&d, "eu-west-1", "database_url", &rotated(&standby));
    let seen = status(&d);
    assert_eq!(seen.code, 0, "{}", seen.all());
    assert_says(
        &seen.stdout,
        &[
            "primary: us-east-1",
            "WARNING   eu-west-1's database answers but refuses the engine (",
            "whether it is a standby, or a second writable primary, cannot be checked",
        ],
    );
    refuses(
        &d,
        "planned-failover",
        &["--var", "target=eu-west-1", "--yes"],
        "eu-west-1's database answers but refuses the engine (",
    );
    assert_eq!(d.state(), before, "nothing changed");

    // A Redis that refuses the password is up too: named, not "does not answer".
    set_region_key(&d, "eu-west-1", "database_url", &standby);
    let cache = d.stack.redis.node("eu-west-1").url();
    set_region_key(&d, "eu-west-1", "redis_url", &rotated(&cache));
    let seen = status(&d);
    assert_eq!(seen.code, 0, "{}", seen.all());
    assert_says(
        &seen.stdout,
        &[
            "REFUSED (answers)",
            "WARNING   eu-west-1's Redis answers but refuses the engine (",
            "what it follows cannot be checked",
        ],
    );
    assert!(
        !seen.stdout.contains("Redis does not answer"),
        "{}",
        seen.stdout
    );
    assert!(!seen.all().contains("rotated-elsewhere"), "{}", seen.all());
    // One that is stopped does not answer: unreachable, whatever the password.
    runbook_stack::redis::RedisSet::stop_node(d.stack.redis.node("eu-west-1"));
    let seen = status(&d);
    assert_says(
        &seen.stdout,
        &["WARNING   eu-west-1's Redis does not answer ("],
    );
    assert!(!seen.stdout.contains("REFUSED"), "{}", seen.stdout);
}

/// A region's inventory block copied with one value left as it was: eu-west-1's database_url
/// names us-east-1's server. status names it — one server answering twice, not "two
/// primaries" of which to fence one (which would fence the only primary) — and every write
/// runbook refuses before it changes anything. The same server under another name (an alias)
/// is told by its start time.
#[test]
fn an_inventory_that_names_one_server_for_two_regions_is_refused() {
    let d = drill();
    let us = d.stack.pg.node("us-east-1").url();
    for (alias, how) in [
        (us.clone(), "(the same address 127.0.0.1:"),
        (
            // 127.0.0.1 to the resolver, another address to the inventory (no TLS: rustls
            // takes no such name).
            format!("{}?sslmode=disable", us.replace("127.0.0.1", "127.1")),
            "(one server under two addresses: both answer that they started at ",
        ),
    ] {
        set_region_key(&d, "eu-west-1", "database_url", &alias);
        let seen = status_says(
            &d,
            &[
                "CRITICAL  eu-west-1 and us-east-1 reach one PostgreSQL server ",
                how,
                "the inventory names it for both, but it belongs to one region at most, and the other's own is not observed",
                "next: correct database_url of the region(s) it does not belong to in ",
            ],
        );
        assert!(
            !seen
                .stdout
                .contains("writable primaries on the same timeline"),
            "{}",
            seen.stdout
        );
        for (runbook, extra) in [
            (
                "planned-failover",
                vec!["--var", "target=ap-southeast-1", "--yes"],
            ),
            ("emergency-failover", vec!["--var", "force=true", "--yes"]),
            ("rejoin", vec!["--var", "region=eu-west-1", "--yes"]),
            ("maintenance", vec!["--yes"]),
        ] {
            refuses(
                &d,
                runbook,
                &extra,
                "eu-west-1 and us-east-1 reach one PostgreSQL server",
            );
        }
        for (region, want) in [
            ("us-east-1", "writable"),
            ("eu-west-1", "standby"),
            ("ap-southeast-1", "standby"),
        ] {
            assert_eq!(role(&d, region), want, "{region}: nothing was changed");
        }
    }
    // Put right, the deployment is clean again.
    let eu = d.stack.pg.node("eu-west-1").url();
    set_region_key(&d, "eu-west-1", "database_url", &eu);
    let seen = status(&d);
    assert_eq!(seen.code, 0, "{}", seen.all());

    // Redis under another name for us-east-1's server: told by its run_id.
    let us_redis = d.stack.redis.node("us-east-1").url();
    set_region_key(
        &d,
        "eu-west-1",
        "redis_url",
        &us_redis.replace("127.0.0.1", "127.1"),
    );
    let seen = status_says(
        &d,
        &[
            "CRITICAL  eu-west-1 and us-east-1 reach one Redis server (one server under two addresses: both answer with the run_id ",
            "next: correct redis_url of the region(s) it does not belong to in ",
        ],
    );
    assert!(
        !seen.stdout.contains("Redis servers are primaries"),
        "{}",
        seen.stdout
    );
    refuses(
        &d,
        "planned-failover",
        &["--var", "target=eu-west-1", "--yes"],
        "eu-west-1 and us-east-1 reach one Redis server",
    );
    assert_eq!(role(&d, "us-east-1"), "writable");
    let eu_redis = d.stack.redis.node("eu-west-1").url();
    set_region_key(&d, "eu-west-1", "redis_url", &eu_redis);

    // The same for an application: eu-west-1's context left as us-east-1's, then a second
    // context in the kubeconfig for us-east-1's cluster (the same Deployment by its uid). A
    // failover would have scaled us-east-1's application as if it were eu-west-1's.
    let kubeconfig = std::fs::read_to_string(&d.kubeconfig).unwrap();
    let aliased = kubeconfig.replacen(
        "contexts:\n",
        "contexts:\n- name: us-alias\n  context:\n    cluster: us-east-1\n    user: runbook\n    namespace: default\n",
        1,
    );
    assert_ne!(kubeconfig, aliased);
    std::fs::write(&d.kubeconfig, aliased).unwrap();
    for (context, how) in [
        ("us-east-1", "(the same Deployment "),
        (
            "us-alias",
            "(one Deployment under two names: both have the uid ",
        ),
    ] {
        set_region_key(&d, "eu-west-1", "context", context);
        status_says(
            &d,
            &[
                "CRITICAL  eu-west-1 and us-east-1 reach one application ",
                how,
                "next: correct context, namespace or deployment of the region(s) it does not belong to in ",
            ],
        );
        refuses(
            &d,
            "planned-failover",
            &["--var", "target=eu-west-1", "--yes"],
            "eu-west-1 and us-east-1 reach one application",
        );
        assert_eq!(
            d.replicas("us-east-1"),
            "3",
            "us-east-1's application untouched"
        );
        assert_eq!(role(&d, "us-east-1"), "writable");
    }
    set_region_key(&d, "eu-west-1", "context", "eu-west-1");
    let seen = status(&d);
    assert_eq!(seen.code, 0, "{}", seen.all());
}

/// The issue's scenario: a planned failover, then an "emergency" with the inventory left as it
/// was (primary_region = us-east-1) and us-east-1's health failing. The servers say eu-west-1 is
/// the primary and healthy: nothing may be promoted.
#[test]
fn a_stale_inventory_never_leads_to_a_second_primary() {
    let d = drill();
    let planned = d.run("planned-failover", &["--var", "target=eu-west-1", "--yes"]);
    assert_eq!(planned.code, 0, "{}", planned.all());
    // A switchover: the old primary is a streaming standby of the new one.
    assert_eq!(role(&d, "eu-west-1"), "writable");
    assert_eq!(role(&d, "us-east-1"), "standby");
    assert!(streams_from(&d, "us-east-1", "eu-west-1"));
    assert!(streams_from(&d, "ap-southeast-1", "eu-west-1"));
    let clean = status(&d);
    assert_eq!(clean.code, 0, "{}", clean.all());
    assert!(
        clean.stdout.contains(
            "the inventory says primary_region = \"us-east-1\"; the servers say eu-west-1"
        ),
        "{}",
        clean.stdout
    );

    d.stack.web.set_health("us-east-1", Health::Fail);
    let ran = d.run("emergency-failover", &["--var", "check_interval=20ms"]);
    assert_eq!(ran.code, 1, "{}", ran.all());
    assert!(
        ran.stdout
            .contains("the servers say eu-west-1 is the primary: following the servers"),
        "{}",
        ran.stdout
    );
    assert!(
        ran.stderr.contains(
            "eu-west-1 is healthy: its health check passes and its database accepts writes"
        ) && ran.stderr.contains("--var force=true")
            && ran.stderr.contains("Nothing was changed"),
        "{}",
        ran.stderr
    );
    let from = d.run(
        "emergency-failover",
        &["--var", "check_interval=20ms", "--var", "from=us-east-1"],
    );
    assert_eq!(from.code, 1, "{}", from.all());
    assert!(
        from.stderr.contains("--var from=us-east-1, but the servers say eu-west-1 is the primary (us-east-1's database is a standby streaming from eu-west-1)"),
        "{}",
        from.stderr
    );
    for (region, want) in [
        ("eu-west-1", "writable"),
        ("us-east-1", "standby"),
        ("ap-southeast-1", "standby"),
    ] {
        assert_eq!(role(&d, region), want, "{region}: nothing was promoted");
    }
    assert_eq!(
        d.replicas("eu-west-1"),
        "3",
        "the primary's app was not touched"
    );
    // A refusal that changed nothing keeps no claim: the next procedure runs, and the command
    // to run it again is the one given, --vars and all.
    assert!(
        from.stderr.contains(&format!(
            "nothing was changed; once the cause is fixed, run it again: `runbook run {}/runbooks/emergency-failover.rhai -i {} --var check_interval=20ms --var from=us-east-1`",
            env!("CARGO_MANIFEST_DIR"),
            d.inventory.display()
        )),
        "{}",
        from.stderr
    );
    d.stack.web.set_health("us-east-1", Health::Ok);
    let again = status(&d);
    assert_eq!(again.code, 0, "{}", again.all());
}

/// After an emergency failover whose old primary was down, it comes back writable: status
/// names it as critical, a dry-run of rejoin changes nothing, rejoin makes it a streaming
/// standby, status is clean, and a failback is a planned failover with the inventory untouched.
#[test]
fn the_old_primary_comes_back_rejoins_and_fails_back() {
    let d = drill();
    d.psql(
        "us-east-1",
        "CREATE TABLE t (x int); INSERT INTO t VALUES (1)",
    );
    d.stack.web.set_health("us-east-1", Health::Fail);
    d.stack.pg.stop_node(d.stack.pg.node("us-east-1"));
    let failover = d.run("emergency-failover", &["--var", "check_interval=20ms"]);
    assert_eq!(failover.code, 0, "{}", failover.all());
    let report = failover
        .stdout
        .lines()
        .find(|l| l.contains("failover from us-east-1 to eu-west-1 done in"))
        .unwrap_or_else(|| panic!("{}", failover.stdout))
        .to_string();
    // The target's position as PostgreSQL writes it, not as a byte count.
    let received = failover
        .stdout
        .lines()
        .find_map(|l| l.split("target eu-west-1 received WAL up to ").nth(1))
        .unwrap_or_else(|| panic!("{}", failover.stdout));
    let lsn = received.split(';').next().unwrap();
    assert!(
        lsn.split_once('/').is_some_and(|(hi, lo)| {
            u64::from_str_radix(hi, 16).is_ok() && u64::from_str_radix(lo, 16).is_ok()
        }),
        "{received}"
    );
    // Its data directory is here: the bound is read from its WAL, exactly.
    assert!(
        report
            .contains("data-loss bound 0 bytes (the old primary is down; its WAL on disk ends at"),
        "{report}"
    );
    // What to do when it is back is the command to paste, as this run was started.
    let rejoin = |region: &str| {
        format!(
            "runbook run {}/runbooks/rejoin.rhai -i {} --var region={region}",
            env!("CARGO_MANIFEST_DIR"),
            d.inventory.display()
        )
    };
    assert!(
        report.contains(&format!(
            "us-east-1's database is UNFENCED: if it comes back it is writable; as soon as it is back, stop its writes: {} (runbook watch does it by itself), then make it a standby: {}",
            rejoin("us-east-1").replace("rejoin.rhai", "fence.rhai"),
            rejoin("us-east-1")
        )),
        "{report}"
    );
    // Fenced through the layers that answered: its app scaled to 0, its DNS weight 0.
    assert_eq!(d.replicas("us-east-1"), "0");
    assert_eq!(d.stack.moto.weights()[2], ("us-east-1".into(), 0));
    assert!(streams_from(&d, "ap-southeast-1", "eu-west-1"));

    // It comes back by itself, writable on its old timeline, and takes two writes that never
    // reach eu-west-1 (a client that still reaches it).
    d.stack.pg.start_node(d.stack.pg.node("us-east-1")).unwrap();
    d.stack.web.set_health("us-east-1", Health::Ok);
    assert_eq!(role(&d, "us-east-1"), "writable");
    d.psql("us-east-1", "INSERT INTO t VALUES (2)");
    d.psql("us-east-1", "INSERT INTO t VALUES (3)");
    // Its fix is the command to paste: the runbook beside status.rhai, the inventory and the
    // store options as given.
    let flagged = d.run("status", &["--state-dir", "elsewhere"]);
    assert_eq!(flagged.code, 1, "{}", flagged.all());
    assert!(
        flagged.stdout.contains("CRITICAL  us-east-1's database is a writable primary on timeline 1, while eu-west-1 is the primary on timeline 2")
            && flagged.stdout.contains(&format!(
                "next: stop its writes now: runbook run {root}/runbooks/fence.rhai -i {inv} --var region=us-east-1 --state-dir elsewhere; then make it a standby: runbook run {root}/runbooks/rejoin.rhai -i {inv} --var region=us-east-1 --state-dir elsewhere\n",
                root = env!("CARGO_MANIFEST_DIR"),
                inv = d.inventory.display()
            )),
        "{}",
        flagged.stdout
    );
    // A planned failover refuses to start from two primaries.
    let refused = d.run(
        "planned-failover",
        &["--var", "target=ap-southeast-1", "--yes"],
    );
    assert_eq!(refused.code, 1, "{}", refused.all());
    assert!(
        refused.stderr.contains(&format!(
            "2 writable primaries (eu-west-1, us-east-1): a former primary came back. Nothing was changed. runbook run {}/runbooks/status.rhai -i {} names the one that must not take writes, and the command that makes it a standby",
            env!("CARGO_MANIFEST_DIR"),
            d.inventory.display(),
        )),
        "{}",
        refused.stderr
    );

    let plan = d.run("rejoin", &["--var", "region=us-east-1", "--dry-run"]);
    assert_eq!(plan.code, 0, "{}", plan.all());
    assert!(
        plan.stdout.contains("~ pg::rewind: make 127.0.0.1:")
            && plan.stdout.contains("now a primary on timeline 1")
            && plan
                .stdout
                .contains("its data directory copied aside first if it committed after the fork"),
        "{}",
        plan.stdout
    );
    // What the rewind takes out is known only when it runs: the plan claims no count.
    assert!(
        !plan.stdout.contains("after it forked from"),
        "{}",
        plan.stdout
    );
    assert_eq!(
        role(&d, "us-east-1"),
        "writable",
        "the dry-run changed nothing"
    );

    let rejoin = d.run("rejoin", &["--var", "region=us-east-1", "--yes"]);
    assert_eq!(rejoin.code, 0, "{}", rejoin.all());
    let report = d.report(&d.t.newest_run(), "finished");
    assert!(report.contains("| method | rewind | report |"), "{report}");
    assert!(
        report.contains("| tester | --yes |"),
        "the approval, given up front\n{report}"
    );
    assert!(
        rejoin
            .stdout
            .contains("us-east-1 rejoined as a standby of eu-west-1 (rewind)"),
        "{}",
        rejoin.stdout
    );
    assert_eq!(role(&d, "us-east-1"), "standby");
    assert!(streams_from(&d, "us-east-1", "eu-west-1"));
    assert_eq!(
        info_field(d.stack.redis.node("us-east-1"), "master_port"),
        Some(d.stack.redis.node("eu-west-1").port.to_string())
    );
    assert_eq!(d.psql("us-east-1", "SELECT count(*) FROM t"), "1");
    // The two writes are out of it, counted in its WAL, and kept: its data directory was
    // copied beside it before the rewind, and a server started on the copy has them.
    let data_dir = d.stack.pg.node("us-east-1").data_dir.display().to_string();
    let (kept, rows) = kept_rows(
        &d,
        &rejoin,
        "us-east-1 had committed 2 transactions after it forked from eu-west-1",
    );
    assert_eq!(rows, "1,2,3");
    assert!(
        kept.starts_with(&format!("{data_dir}.before-rewind-")),
        "{kept}"
    );
    assert!(report.contains("| commits_after_fork | 2 |"), "{report}");
    assert!(
        report.contains(&format!("| kept_copy | {kept} |")),
        "{report}"
    );
    let clean = d.run("status", &["--var", "strict=true"]);
    assert_eq!(clean.code, 0, "{}", clean.all());
    d.report(&d.t.newest_run(), "finished");
    // Clean, but for the copy: named as information, with what to do about it, on every
    // status until someone removes it.
    let names_the_copy = |out: &str| {
        let said = out
            .lines()
            .find(|l| l.contains("us-east-1: its data directory from before the rewind of "))
            .unwrap_or_else(|| panic!("the kept copy is not named:\n{out}"));
        assert!(said.starts_with("INFO "), "{said}");
        assert!(
            said.contains(&format!("is kept beside it: {kept} (")),
            "{said}"
        );
        assert!(
            out.contains(&format!(
                "then remove it to free its space: rm -rf {kept} ("
            )),
            "{out}"
        );
    };
    names_the_copy(&clean.stdout);

    // Failback, the inventory untouched: us-east-1 primary again, eu-west-1 its standby.
    let back = d.run("planned-failover", &["--var", "target=us-east-1", "--yes"]);
    assert_eq!(back.code, 0, "{}", back.all());
    // A switchover loses nothing: the old primary committed nothing after the fork, and no
    // copy is made.
    assert!(
        back.stdout.contains("eu-west-1 had committed no transaction after it forked from us-east-1: the rewind discarded no committed write"),
        "{}",
        back.stdout
    );
    let eu = d.stack.pg.node("eu-west-1").data_dir.clone();
    let copies: Vec<_> = std::fs::read_dir(eu.parent().unwrap())
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter(|n| n.contains(".before-rewind-"))
        .collect();
    assert_eq!(copies.len(), 1, "only us-east-1's: {copies:?}");
    assert_eq!(role(&d, "us-east-1"), "writable");
    assert_eq!(role(&d, "eu-west-1"), "standby");
    assert!(streams_from(&d, "eu-west-1", "us-east-1"));
    assert!(streams_from(&d, "ap-southeast-1", "us-east-1"));
    assert_eq!(
        d.stack.moto.weights(),
        [
            ("ap-southeast-1".into(), 0),
            ("eu-west-1".into(), 0),
            ("us-east-1".into(), 100)
        ]
    );
    let clean = d.run("status", &["--var", "strict=true"]);
    assert_eq!(clean.code, 0, "{}", clean.all());
    names_the_copy(&clean.stdout);
    // Removed by the operator once read: nothing more to say.
    std::fs::remove_dir_all(&kept).unwrap();
    let clean = d.run("status", &["--var", "strict=true"]);
    assert_eq!(clean.code, 0, "{}", clean.all());
    assert!(clean.stdout.contains("no anomalies"), "{}", clean.stdout);
}

/// A former primary that came back with every user on it (DNS sent them there again) hands
/// them to the primary's region when it is rejoined, and only once that region serves them:
/// while its health check fails the rejoin changes nothing, and a resume goes on once it passes.
#[test]
fn a_rejoined_region_hands_its_users_only_to_a_primary_region_that_serves_them() {
    let d = drill();
    d.stack.web.set_health("us-east-1", Health::Fail);
    d.stack.pg.stop_node(d.stack.pg.node("us-east-1"));
    let failover = d.run("emergency-failover", &[]);
    assert_eq!(failover.code, 0, "{}", failover.all());
    // A primary whose database does not answer has failed: its health is not checked again.
    assert_says(
        &failover.stdout,
        &["us-east-1: database unreachable; its health check failed when observed (HTTP 503)"],
    );
    let journal = d.t.journal(&d.t.newest_run());
    assert!(
        !journal
            .lines()
            .any(|l| l.contains(r#""step":["check old primary"]"#) && l.contains("http::get")),
        "{journal}"
    );
    d.stack.pg.start_node(d.stack.pg.node("us-east-1")).unwrap();
    d.stack.web.set_health("us-east-1", Health::Ok);
    // Every user back on us-east-1.
    std::fs::write(
        d.t.path("all-to-us.rhai"),
        "import \"traffic\" as traffic;\ntraffic::set(inventory.dns, #{ \"us-east-1\": 100, \"eu-west-1\": 0, \"ap-southeast-1\": 0 });\n",
    )
    .unwrap();
    let moved = d.t.exec(&[
        "run",
        &d.t.path("all-to-us.rhai").display().to_string(),
        "-i",
        &d.inventory.display().to_string(),
    ]);
    assert_eq!(moved.code, 0, "{}", moved.all());
    let before = d.stack.moto.weights();
    assert!(before.contains(&("us-east-1".into(), 100)), "{before:?}");

    d.stack.web.set_health("eu-west-1", Health::Fail);
    d.changes_nothing(
        1,
        &["eu-west-1 does not pass its health check within 1s (--var health_within): DNS was not changed, so no users were sent to it. Fix it and resume this run; us-east-1 keeps its users, and nothing was changed (or send them to the regions that serve first: runbook run "],
        || {
            d.run(
                "rejoin",
                &["--var", "region=us-east-1", "--var", "health_within=1s", "--yes"],
            )
        },
    );
    assert_eq!(role(&d, "us-east-1"), "writable");

    let run = d.t.newest_run();
    d.resume_once_healthy(&run, "eu-west-1", &before, |r, w| match r {
        "eu-west-1" => 100,
        "us-east-1" => 0,
        _ => w,
    });
    assert_eq!(role(&d, "us-east-1"), "standby");
}

/// The writes an emergency failover lost are not lost for good: the primary crashed with a
/// commit no standby had received (the bound it reports is above 0); the rejoin takes it
/// through crash recovery, counts that commit in its WAL, and copies its data directory aside
/// before the rewind takes the commit out of it. A server started on the copy has the row.
#[test]
fn the_writes_an_emergency_failover_lost_are_kept_by_the_rejoin() {
    let d = drill();
    d.psql(
        "us-east-1",
        "CREATE TABLE t (x int); INSERT INTO t VALUES (1)",
    );
    for standby in ["eu-west-1", "ap-southeast-1"] {
        d.psql_until(
            standby,
            "SELECT count(*) FROM t",
            "1",
            std::time::Duration::from_secs(20),
        );
        // Its WAL receiver stops: what the primary commits from now on, it never receives.
        d.psql(standby, "ALTER SYSTEM SET primary_conninfo = ''");
        d.psql(standby, "SELECT pg_reload_conf()");
        d.psql_until(
            standby,
            "SELECT count(*) FROM pg_stat_wal_receiver",
            "0",
            std::time::Duration::from_secs(20),
        );
    }
    d.psql("us-east-1", "INSERT INTO t VALUES (2)");
    d.stack.web.set_health("us-east-1", Health::Fail);
    runbook_stack::postgres::stop_dir(&d.stack.pg.node("us-east-1").data_dir, libc::SIGQUIT)
        .unwrap();
    // The standbys no longer name their upstream: the operator says which region failed.
    let failover = d.run(
        "emergency-failover",
        &["--var", "check_interval=20ms", "--var", "from=us-east-1"],
    );
    assert_eq!(failover.code, 0, "{}", failover.all());
    let bound = failover
        .stdout
        .split("data-loss bound ")
        .nth(1)
        .and_then(|rest| rest.split(' ').next())
        .and_then(|n| n.parse::<u64>().ok())
        .unwrap_or_else(|| panic!("{}", failover.stdout));
    assert!(
        bound > 0,
        "the commit was not received: {}",
        failover.stdout
    );
    assert!(
        failover.stdout.contains("If us-east-1's disk survived, what the bound counts is still on it: its rejoin copies its data directory aside before the rewind takes those writes out"),
        "{}",
        failover.stdout
    );
    let primary = if d.psql("eu-west-1", "SELECT pg_is_in_recovery()") == "f" {
        "eu-west-1"
    } else {
        "ap-southeast-1"
    };
    assert_eq!(d.psql(primary, "SELECT count(*) FROM t"), "1");

    // Still stopped as it crashed: no approval is asked, nothing it wrote is lost. The run is
    // killed once the copy is made, before pg_rewind; its resume keeps that copy, and makes
    // no second one.
    killed_at(
        &d,
        &d.args("rejoin", &["--var", "region=us-east-1"]),
        "rewind-copied",
    );
    let data_dir = d.stack.pg.node("us-east-1").data_dir.clone();
    let copies = || {
        let name = data_dir.file_name().unwrap().to_string_lossy().to_string();
        let mut found: Vec<String> = std::fs::read_dir(data_dir.parent().unwrap())
            .unwrap()
            .filter_map(|e| e.ok()?.file_name().into_string().ok())
            .filter(|n| n.starts_with(&format!("{name}.before-rewind-")))
            .collect();
        found.sort();
        found
    };
    let made = copies();
    assert_eq!(made.len(), 1, "{made:?}");
    assert_eq!(role(&d, "us-east-1"), "", "still stopped");
    let run = d.t.newest_run();
    // Its resume is killed again, once pg_rewind is done and before the server's own
    // configuration files (its port) are back: the next resume takes them from where the
    // rewind kept them, not from what pg_rewind copied from the primary.
    killed_at(&d, &["resume".to_string(), run.clone()], "rewind-ran");
    let rejoin = d.t.exec(&["resume", &run]);
    assert_eq!(rejoin.code, 0, "{}", rejoin.all());
    assert_eq!(copies(), made);
    assert_eq!(role(&d, "us-east-1"), "standby");
    assert!(streams_from(&d, "us-east-1", primary));
    assert_eq!(d.psql("us-east-1", "SELECT count(*) FROM t"), "1");
    let (kept, rows) = kept_rows(
        &d,
        &rejoin,
        &format!("us-east-1 had committed 1 transaction after it forked from {primary}"),
    );
    assert!(kept.ends_with(&made[0]), "{kept} is not {made:?}");
    assert_eq!(rows, "1,2");
}

/// A former primary without wal_log_hints (the `rewind_not_ready` warning) cannot be rewound:
/// the rejoin says why, and, approved, rebuilds it from a fresh base backup. Killed once the
/// fresh directory is whole and before it is swapped in, the resumed run does not take that
/// half-finished state for the server's own: the old directory is moved aside once, intact,
/// and the standby keeps its own configuration (its port), not the primary's.
#[test]
fn a_rebuild_from_a_base_backup_cut_off_and_resumed_moves_the_old_directory_aside_once() {
    let d = drill();
    let old = d.stack.pg.node("us-east-1").clone();
    d.psql(
        "us-east-1",
        "CREATE TABLE t (x int); INSERT INTO t VALUES (1)",
    );
    d.psql("us-east-1", "ALTER SYSTEM SET wal_log_hints = off");
    d.stack.pg.stop_node(&old);
    d.stack.pg.start_node(&old).unwrap();
    assert_eq!(d.psql("us-east-1", "SHOW wal_log_hints"), "off");
    std::fs::write(old.data_dir.join("marker"), "the old directory").unwrap();
    d.psql("us-east-1", "INSERT INTO t VALUES (2)");
    for standby in ["eu-west-1", "ap-southeast-1"] {
        d.psql_until(
            standby,
            "SELECT count(*) FROM t",
            "2",
            std::time::Duration::from_secs(20),
        );
    }
    d.stack.web.set_health("us-east-1", Health::Fail);
    d.stack.pg.stop_node(&old);
    let failover = d.run("emergency-failover", &["--var", "check_interval=20ms"]);
    assert_eq!(failover.code, 0, "{}", failover.all());
    let primary = if d.psql("eu-west-1", "SELECT pg_is_in_recovery()") == "f" {
        "eu-west-1"
    } else {
        "ap-southeast-1"
    };
    d.psql(primary, "INSERT INTO t VALUES (3)");

    let cut = killed_at(
        &d,
        &d.args("rejoin", &["--var", "region=us-east-1", "--yes"]),
        "basebackup-made",
    );
    let beside = || {
        let name = old
            .data_dir
            .file_name()
            .unwrap()
            .to_string_lossy()
            .to_string();
        let mut found: Vec<String> = std::fs::read_dir(old.data_dir.parent().unwrap())
            .unwrap()
            .filter_map(|e| e.ok()?.file_name().into_string().ok())
            .filter(|n| n.starts_with(&format!("{name}.")))
            .map(|n| n[name.len()..].to_string())
            // The stack's server log.
            .filter(|rest| rest != ".log")
            .collect();
        found.sort();
        found
    };
    assert_eq!(
        beside(),
        [".basebackup", ".own-files"],
        "made whole, not yet swapped"
    );
    assert!(old.data_dir.join("marker").exists());
    let run = d.t.newest_run();
    let rejoin = d.t.exec(&["resume", &run, "--approve"]);
    assert_eq!(rejoin.code, 0, "{}", rejoin.all());
    // What the cut-off run said, then the resumed one.
    let said = format!("{cut}{}", rejoin.stdout);
    assert_says(
        &said,
        &[
            "pg_rewind could not rejoin us-east-1",
            "wal_log_hints",
            &format!("us-east-1 is a standby of {primary} (basebackup"),
            "us-east-1's data directory before the base backup is kept in ",
        ],
    );
    let left = beside();
    assert!(
        left.len() == 1 && left[0].starts_with(".replaced-"),
        "{left:?}"
    );
    let aside = old.data_dir.with_file_name(format!(
        "{}{}",
        old.data_dir.file_name().unwrap().to_string_lossy(),
        left[0]
    ));
    assert_eq!(
        std::fs::read_to_string(aside.join("marker")).unwrap(),
        "the old directory"
    );
    assert!(!old.data_dir.join("marker").exists());
    // Its own port: the one the stack gave it, not the primary's.
    assert_eq!(role(&d, "us-east-1"), "standby");
    assert!(streams_from(&d, "us-east-1", primary));
    d.psql_until(
        "us-east-1",
        "SELECT string_agg(x::text, ',' ORDER BY x) FROM t",
        "1,2,3",
        std::time::Duration::from_secs(20),
    );
    // Status names the old directory for what it is, until someone removes it.
    let status = d.run("status", &[]);
    assert_eq!(status.code, 0, "{}", status.all());
    assert_says(
        &status.stdout,
        &[
            "us-east-1: its data directory from before the base backup of ",
            &format!("is kept beside it: {} (", aside.display()),
            &format!("rm -rf {} (", aside.display()),
        ],
    );
}

/// A standby that was stopped during an emergency failover and started after the old primary
/// came back follows that old primary. While it takes writes, status names its rejoin first
/// and the standby's second, and the standby's rejoin refuses, changing nothing; the old
/// primary's rejoin names the standby's as next (its postcondition does not wait on it); then
/// the standby's rejoin makes the deployment clean.
#[test]
fn a_standby_that_followed_the_returned_old_primary_rejoins_after_it() {
    let d = drill();
    d.psql(
        "us-east-1",
        "CREATE TABLE t (x int); INSERT INTO t VALUES (1)",
    );
    assert!(streams_from(&d, "ap-southeast-1", "us-east-1"));
    let ap = d.stack.pg.node("ap-southeast-1").clone();
    let us = d.stack.pg.node("us-east-1").clone();
    d.stack.pg.stop_node(&ap);
    d.stack.web.set_health("us-east-1", Health::Fail);
    d.stack.pg.stop_node(&us);
    let failover = d.run("emergency-failover", &["--var", "check_interval=20ms"]);
    assert_eq!(failover.code, 0, "{}", failover.all());
    assert_eq!(role(&d, "eu-west-1"), "writable");
    // The old primary comes back writable, and the stopped standby, started, follows it.
    d.stack.pg.start_node(&us).unwrap();
    d.stack.web.set_health("us-east-1", Health::Ok);
    d.stack.pg.start_node(&ap).unwrap();
    assert!(streams_from(&d, "ap-southeast-1", "us-east-1"));

    let rejoin = |r: &str| {
        format!(
            "runbook run {}/runbooks/rejoin.rhai -i {} --var region={r}",
            env!("CARGO_MANIFEST_DIR"),
            d.inventory.display()
        )
    };
    let st = status(&d);
    assert_says(
        &st.stdout,
        &[
            "CRITICAL  us-east-1's database is a writable primary on timeline 1, while eu-west-1 is the primary on timeline 2",
            &format!(
                "next: first rejoin the former primary us-east-1: {}; then ap-southeast-1: {}",
                rejoin("us-east-1"),
                rejoin("ap-southeast-1")
            ),
        ],
    );
    let early = d.run("rejoin", &["--var", "region=ap-southeast-1", "--yes"]);
    assert_eq!(early.code, 1, "{}", early.all());
    assert_says(
        &early.stderr,
        &[&format!(
            "us-east-1 is a former primary that came back and takes writes (timeline 1; the primary eu-west-1 is on timeline 2): rejoin it first — {} — then ap-southeast-1. Nothing was changed",
            rejoin("us-east-1")
        )],
    );
    assert!(streams_from(&d, "ap-southeast-1", "us-east-1"));

    let first = d.run("rejoin", &["--var", "region=us-east-1", "--yes"]);
    assert_eq!(first.code, 0, "{}", first.all());
    assert_says(
        &first.stdout,
        &[&format!(
            "ap-southeast-1 followed us-east-1 and is not a standby of eu-west-1 yet: rejoin it next — {}",
            rejoin("ap-southeast-1")
        )],
    );
    let then = d.run("rejoin", &["--var", "region=ap-southeast-1", "--yes"]);
    assert_eq!(then.code, 0, "{}", then.all());
    assert!(streams_from(&d, "ap-southeast-1", "eu-west-1"));
    assert!(streams_from(&d, "us-east-1", "eu-west-1"));
    let clean = d.run("status", &["--var", "strict=true"]);
    assert_eq!(clean.code, 0, "{}", clean.all());
}

/// Runs `runbook ARGS` until it reaches the crash point `point`, where it is SIGKILLed (as a
/// power cut would stop it); gives what it printed.
fn killed_at(d: &Drill, args: &[String], point: &str) -> String {
    let out =
        d.t.command(args)
            .env("RUNBOOK_CRASH_AT", point)
            .output()
            .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert_eq!(
        out.status.code(),
        None,
        "not killed at {point}: {stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

/// The copy a rejoin says it kept, after `said` in its output, and table t's rows in it as a
/// server started on the copy reads them ("1,2,3").
fn kept_rows(d: &Drill, rejoin: &Ran, said: &str) -> (String, String) {
    let kept = rejoin
        .stdout
        .lines()
        .find_map(|l| l.split(said).nth(1))
        .and_then(|rest| {
            rest.split("; its data directory from before the rewind is kept in ")
                .nth(1)
        })
        .and_then(|rest| rest.split(" (a primary on its old timeline").next())
        .unwrap_or_else(|| panic!("{}", rejoin.stdout))
        .to_string();
    let copy = d
        .stack
        .pg
        .start_copy(Path::new(&kept), "the kept copy")
        .unwrap();
    let rows = copy
        .psql("SELECT string_agg(x::text, ',' ORDER BY x) FROM t")
        .unwrap();
    (kept, rows)
}

/// A procedure that stopped after fencing the primary (a switchover cut off half-way): no
/// database takes writes, and the server says which run fenced it; status names that run's
/// resume and undo, and the undo, as status spelled it, lifts the fence and forgets the run.
#[test]
fn status_names_the_run_that_fenced_the_primary() {
    let d = drill();
    let t = &d.t;
    let db = d.stack.pg.node("us-east-1").url();
    std::fs::write(
        t.path("fence.rhai"),
        format!(
            r#"let off = #{{ url: "{db}", name: "us-east-1", setting: "default_transaction_read_only", value: "off" }};
step("stop writes", #{{ undo: || pg::set_config(off) }}, || pg::fence(#{{ url: "{db}", name: "us-east-1" }}));
fail("the target is not ready: stopping here");"#
        ),
    )
    .unwrap();
    let cut = t.exec(&["run", "fence.rhai"]);
    assert_eq!(cut.code, 1, "{}", cut.all());
    let run = t.newest_run();
    assert_eq!(role(&d, "us-east-1"), "fenced");
    assert_eq!(
        d.psql(
            "us-east-1",
            "SELECT current_setting('runbook.fenced_by', true)"
        ),
        format!("{run} of fence.rhai")
    );
    let st = status(&d);
    assert_eq!(st.code, 1, "{}", st.all());
    assert_says(
        &st.stdout,
        &[
            &format!("CRITICAL  no database accepts writes: us-east-1 (fenced by run {run} of fence.rhai) is a fenced (read-only) primary"),
            &format!("next: finish the run that fenced it: `runbook resume {run}`; or undo what it changed: `runbook resume {run} --undo`"),
        ],
    );
    let undo = t.exec(&["resume", &run, "--undo"]);
    assert_eq!(undo.code, 0, "{}", undo.all());
    assert_eq!(role(&d, "us-east-1"), "writable");
    assert_eq!(
        d.psql(
            "us-east-1",
            "SELECT coalesce(current_setting('runbook.fenced_by', true), '')"
        ),
        ""
    );
    let clean = status(&d);
    assert_eq!(clean.code, 0, "{}", clean.all());
}

/// An emergency failover whose old primary still answers fences it, waits until the target has
/// everything it wrote, and reports an exact bound; a promotion is refused while another
/// database answers as a writable primary.
#[test]
fn a_reachable_old_primary_is_fenced_first_and_no_promotion_makes_two_primaries() {
    let d = drill();
    let db = d.stack.pg.node("eu-west-1").url();
    let peer = d.stack.pg.node("us-east-1").url();
    let t = &d.t;
    std::fs::write(
        t.path("promote.rhai"),
        format!(r#"pg::promote(#{{ url: "{db}", name: "eu-west-1", peers: ["{peer}"] }});"#),
    )
    .unwrap();
    let refused = t.exec(&["run", "promote.rhai"]);
    assert_eq!(refused.code, 1, "{}", refused.all());
    assert!(
        refused.stderr.contains("refusing to promote")
            && refused.stderr.contains("answers as a writable primary"),
        "{}",
        refused.stderr
    );
    assert_eq!(role(&d, "eu-west-1"), "standby");

    d.psql(
        "us-east-1",
        "CREATE TABLE t AS SELECT generate_series(1, 1000) AS x",
    );
    d.stack.web.set_health("us-east-1", Health::Fail);
    let ran = d.run("emergency-failover", &[]);
    assert_eq!(ran.code, 0, "{}", ran.all());
    // Its database still takes writes: its health must fail 3 checks in a row, and without
    // --var check_interval they are as far apart as the inventory says (the stack's: 250 ms).
    let journal = d.t.journal(&d.t.newest_run());
    let paused: Vec<&str> = journal
        .lines()
        .filter(|l| l.contains(r#""timer_started""#) && l.contains("check old primary"))
        .collect();
    assert_eq!(paused.len(), 2, "{journal}");
    assert!(
        paused.iter().all(|l| l.contains(r#""duration_ms":250"#)),
        "{paused:?}"
    );
    assert!(
        ran.stdout
            .contains("us-east-1's database is fenced (read-only) at")
            && ran
                .stdout
                .contains("data-loss bound 0 bytes (the old primary was fenced at"),
        "{}",
        ran.stdout
    );
    assert_eq!(role(&d, "us-east-1"), "fenced");
    assert_eq!(role(&d, "eu-west-1"), "writable");
    assert_eq!(d.psql("eu-west-1", "SELECT count(*) FROM t"), "1000");
    // The fenced old primary is a warning (rejoin it), not a critical anomaly.
    let st = status(&d);
    assert_eq!(st.code, 0, "{}", st.all());
    assert!(
        st.stdout
            .contains("WARNING   us-east-1 is a fenced (read-only) former primary"),
        "{}",
        st.stdout
    );
}

/// A planned failover paused for its approval is resumed after the servers changed: the
/// approval was given for what they said before, so the run asks them again and stops,
/// changing nothing, while the target cannot take over; once it can, the same run finishes.
#[test]
fn an_approval_given_after_the_servers_changed_changes_nothing_until_they_are_ready_again() {
    let d = drill();
    let paused = d.run("planned-failover", &["--var", "target=eu-west-1"]);
    assert_eq!(paused.code, 3, "{}", paused.all());
    let run = d.t.only_run();

    // The target's health fails while the approval waits.
    d.stack.web.set_health("eu-west-1", Health::Fail);
    d.changes_nothing(
        1,
        &[
            "eu-west-1's health check fails now (HTTP 503)",
            "Nothing was changed after the approval",
        ],
        || d.t.exec(&["resume", &run, "--approve"]),
    );

    // Healthy again, but its database went down meanwhile.
    d.stack.web.set_health("eu-west-1", Health::Ok);
    d.stack.pg.stop_node(d.stack.pg.node("eu-west-1"));
    let refused = d.t.exec(&["resume", &run, "--approve"]);
    assert_eq!(refused.code, 1, "{}", refused.all());
    assert_says(&refused.stderr, &["the servers changed while the approval waited: eu-west-1's database was a standby streaming from us-east-1, now unreachable"]);
    assert_eq!(
        d.psql("us-east-1", "SHOW default_transaction_read_only"),
        "off"
    );
    assert_eq!(d.replicas("us-east-1"), "3");
    assert_eq!(d.stack.web.messages().len(), 0, "no announcement");

    // Back and streaming: the same run goes on, without asking again.
    d.stack.pg.start_node(d.stack.pg.node("eu-west-1")).unwrap();
    assert!(crate::support::wait_for(
        std::time::Duration::from_secs(30),
        || {
            d.psql("us-east-1", "SELECT count(*) FROM pg_stat_replication WHERE application_name = 'eu-west-1' AND state = 'streaming'") == "1"
        }
    ));
    let done = d.t.exec(&["resume", &run]);
    assert_eq!(done.code, 0, "{}", done.all());
    assert_eq!(d.psql("eu-west-1", "SELECT pg_is_in_recovery()"), "f");
    assert_eq!(d.psql("us-east-1", "SELECT pg_is_in_recovery()"), "t");
}

/// An emergency failover that waits for its approval (runbook watch's mode) is not carried
/// out when the primary recovered meanwhile: the approval was for a region that was down.
#[test]
fn an_emergency_failover_approved_after_the_primary_recovered_changes_nothing() {
    let d = drill();
    // (its database went down too, what the refused resume says)
    let cases = [
        (true, "the servers changed while the approval waited: the primary was none, now us-east-1; us-east-1's database was unreachable, now a writable primary on timeline 1"),
        (false, "us-east-1 recovered while the approval waited"),
    ];
    for (db_down, want) in cases {
        d.stack.web.set_health("us-east-1", Health::Fail);
        if db_down {
            d.stack.pg.stop_node(d.stack.pg.node("us-east-1"));
        }
        let args = [
            "--var",
            "check_interval=100ms",
            "--var",
            "approve_first=true",
        ];
        let paused = d.run("emergency-failover", &args);
        assert_eq!(paused.code, 3, "{}", paused.all());
        let run = d.t.newest_run();

        if db_down {
            d.stack.pg.start_node(d.stack.pg.node("us-east-1")).unwrap();
        }
        d.stack.web.set_health("us-east-1", Health::Ok);
        let refused = d.t.exec(&["resume", &run, "--approve"]);
        assert_eq!(refused.code, 1, "{}", refused.all());
        assert!(refused.stderr.contains(want), "{want}\n{}", refused.all());
        assert_eq!(role(&d, "us-east-1"), "writable", "not fenced");
        assert_eq!(role(&d, "eu-west-1"), "standby", "not promoted");
        assert_eq!(d.replicas("us-east-1"), "3");
        let abandoned = d.t.exec(&["abandon", &run, "--reason", "it recovered"]);
        assert_eq!(abandoned.code, 0, "{}", abandoned.all());
        // The next case starts from streaming standbys: after a restart of the primary they
        // reconnect within seconds, and one seen reconnecting between the observation and the
        // recheck is a change the recheck rightly names first.
        d.psql_until(
            "us-east-1",
            "SELECT count(*) FROM pg_stat_replication WHERE state = 'streaming'",
            "2",
            std::time::Duration::from_secs(30),
        );
    }
}

/// regions::differences, the comparison behind the check after an approval, as a table:
/// (the primary and the databases before, after, the regions watched) → what it says changed.
#[test]
fn regions_differences_names_what_changed_between_two_observations() {
    let primary = |tl: u32| {
        format!("#{{ role: \"primary\", writable: true, timeline: {tl}, upstream_region: (), upstream: (), wal_receiver: () }}")
    };
    let fenced = "#{ role: \"primary\", writable: false, timeline: 1, upstream_region: (), upstream: (), wal_receiver: () }".to_string();
    let standby = |of: &str, receiver: &str| {
        format!("#{{ role: \"standby\", writable: false, timeline: 1, upstream_region: \"{of}\", upstream: (), wal_receiver: \"{receiver}\" }}")
    };
    let down = "#{ role: \"unreachable\", writable: false, timeline: (), upstream_region: (), upstream: (), wal_receiver: () }".to_string();
    let seen = |p: &str, us: &str, eu: &str| {
        let p = if p.is_empty() {
            "()".to_string()
        } else {
            format!("\"{p}\"")
        };
        format!("#{{ primary: {p}, regions: #{{ \"us\": #{{ database: {us} }}, \"eu\": #{{ database: {eu} }} }} }}")
    };
    let cases: Vec<(String, String, &str, &str)> = vec![
        // Nothing changed.
        (seen("us", &primary(1), &standby("us", "streaming")), seen("us", &primary(1), &standby("us", "streaming")), "[\"us\", \"eu\"]", "[]"),
        // The target went down.
        (seen("us", &primary(1), &standby("us", "streaming")), seen("us", &primary(1), &down), "[\"us\", \"eu\"]",
         "[\"eu's database was a standby streaming from us, now unreachable\"]"),
        // Not watched: not compared (but the primary always is).
        (seen("us", &primary(1), &standby("us", "streaming")), seen("us", &primary(1), &down), "[\"us\"]", "[]"),
        // The standby stopped streaming.
        (seen("us", &primary(1), &standby("us", "streaming")), seen("us", &primary(1), &standby("us", "starting")), "[\"eu\"]",
         "[\"eu's database was a standby streaming from us, now a standby not streaming (configured upstream us)\"]"),
        // The primary was fenced by someone else.
        (seen("us", &primary(1), &standby("us", "streaming")), seen("", &fenced, &standby("us", "streaming")), "[\"us\", \"eu\"]",
         "[\"the primary was us, now none\", \"us's database was a writable primary on timeline 1, now a fenced (read-only) primary on timeline 1\"]"),
        // A down primary came back.
        (seen("", &down, &standby("us", "streaming")), seen("us", &primary(1), &standby("us", "streaming")), "[\"us\", \"eu\"]",
         "[\"the primary was none, now us\", \"us's database was unreachable, now a writable primary on timeline 1\"]"),
        // Someone failed over meanwhile: the other region is primary on a new timeline.
        (seen("us", &primary(1), &standby("us", "streaming")), seen("eu", &down, &primary(2)), "[\"eu\"]",
         "[\"the primary was us, now eu\", \"eu's database was a standby streaming from us, now a writable primary on timeline 2\"]"),
        // Lag moves, timelines of standbys are not words: unchanged.
        (seen("us", &primary(1), &standby("us", "streaming")), seen("us", &primary(1), &standby("us", "streaming").replace("timeline: 1", "timeline: 1, lag_bytes: 99")), "[\"eu\"]", "[]"),
    ];
    let mut script = String::from("import \"regions\" as regions;\n");
    for (i, (before, now, watched, _)) in cases.iter().enumerate() {
        script.push_str(&format!(
            "print(`case {i}: ${{regions::differences({before}, {now}, {watched})}}`);\n"
        ));
    }
    let t = Test::new().script(&script);
    let ran = t.exec(&["run", "runbook.rhai"]);
    assert_eq!(ran.code, 0, "{}", ran.all());
    for (i, (.., want)) in cases.iter().enumerate() {
        let line = format!("case {i}: {want}");
        assert!(ran.stdout.contains(&line), "lacks {line:?}\n{}", ran.stdout);
    }
}

/// A region whose Kubernetes nodes are all cordoned (a maintenance stopped in its window)
/// cannot run the application: status says so, a switchover to it is refused before any
/// change, and the emergency failover passes over it for the other standby.
#[test]
fn a_region_cordoned_whole_is_named_by_status_and_passed_over_by_the_failovers() {
    let d = drill();
    for n in 1..=3 {
        d.kubectl("eu-west-1", &["cordon", &format!("eu-west-1-node-{n}")]);
    }
    let ran = status(&d);
    assert_eq!(ran.code, 0, "a warning: {}", ran.all());
    assert_says(
        &ran.stdout,
        &["WARNING   every Kubernetes node in eu-west-1 is cordoned (3 of 3)"],
    );

    d.changes_nothing(
        1,
        &["every Kubernetes node in eu-west-1 is cordoned"],
        || d.run("planned-failover", &["--yes", "--var", "target=eu-west-1"]),
    );

    // Both standbys' regions cordoned: nothing to fail over to, and it says why.
    d.stack.web.set_health("us-east-1", Health::Fail);
    d.stack.pg.stop_node(d.stack.pg.node("us-east-1"));
    for n in 1..=3 {
        d.kubectl(
            "ap-southeast-1",
            &["cordon", &format!("ap-southeast-1-node-{n}")],
        );
    }
    let refused = d.run("emergency-failover", &["--var", "check_interval=100ms"]);
    assert_eq!(refused.code, 1, "{}", refused.all());
    // The team heard "emergency failover starting": it hears that it failed, and why.
    let run = d.t.newest_run();
    let slack = format!("{:?}", d.stack.web.messages());
    assert_says(
        &slack,
        &[
            "us-east-1 is failing: emergency failover starting",
            ":x: emergency failover from us-east-1 FAILED at step 'choose target': no standby can take over",
            &format!("run {run} changed nothing"),
        ],
    );
    assert_says(
        &refused.stderr,
        &["no standby can take over (asked for: any): eu-west-1, ap-southeast-1 passed over: every Kubernetes node there is cordoned", "--var force=true", "Nothing was changed"],
    );
    assert_eq!(
        (role(&d, "ap-southeast-1"), role(&d, "eu-west-1")),
        ("standby".to_string(), "standby".to_string())
    );
    d.kubectl("ap-southeast-1", &["uncordon", "ap-southeast-1-node-2"]);
    let ran = d.run("emergency-failover", &["--var", "check_interval=100ms"]);
    assert_eq!(ran.code, 0, "{}", ran.all());
    assert_says(
        &ran.stdout,
        &["eu-west-1: not a candidate (every Kubernetes node there is cordoned"],
    );
    assert_eq!(role(&d, "ap-southeast-1"), "writable");
    assert_eq!(role(&d, "eu-west-1"), "standby");

    // The maintenance that cordoned eu-west-1 was given up: status's fix is the kubectl
    // command that uncordons it, and pasted into a shell it does.
    let ran = status(&d);
    let line = ran
        .stdout
        .lines()
        .skip_while(|l| !l.contains("every Kubernetes node in eu-west-1 is cordoned"))
        .nth(1)
        .unwrap_or_else(|| panic!("{}", ran.stdout));
    let pasted = line
        .split_once("otherwise uncordon them: `")
        .and_then(|(_, c)| c.strip_suffix('`'))
        .unwrap_or_else(|| panic!("{line}"));
    assert_eq!(
        pasted,
        format!(
            "kubectl --kubeconfig {} --context eu-west-1 uncordon eu-west-1-node-1 eu-west-1-node-2 eu-west-1-node-3",
            d.kubeconfig.display()
        )
    );
    let out = std::process::Command::new("sh")
        .args(["-c", pasted])
        .output()
        .unwrap();
    assert!(out.status.success(), "{pasted}: {out:?}");
    let ran = status(&d);
    assert!(
        !ran.stdout.contains("nodes in eu-west-1") && !ran.stdout.contains("node in eu-west-1"),
        "{}",
        ran.stdout
    );
}
