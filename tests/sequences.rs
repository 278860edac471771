//! Procedures compose: seeded random sequences of 6–10 procedures on one stack — planned
//! failover, emergency failover (the primary's database crashes, its health fails), the old
//! primary coming back by itself, rejoin, maintenance, an application rollback, a rolling
//! upgrade, a nightly backup and a restore of the data from it, initial-setup again, a
//! region taken out of DNS rotation and put back (drain.rhai), and a standby's database
//! stopping for a while (each procedure then runs around it) — with a steady writer running.
//! After each, the invariants are checked with psql, kubectl and Route53's API:
//! - never more than one writable primary, except a returned old primary that status names
//!   as critical;
//! - every acknowledged write survives each planned failover;
//! - an emergency failover loses no more than the bound it reported;
//! - a restore puts back every row of its archive, and every acknowledged write it replaced
//!   is in the archive it kept of the data before;
//! - an upgrade puts its image in every region it names, and is refused, changing nothing,
//!   while a region it would upgrade is down or two primaries take writes;
//! - initial-setup is refused, changing nothing, while a standby's database is stopped; a
//!   standby started again streams from the primary, or status names the rejoin it needs;
//! - a drain leaves the region out of rotation and a region that serves users in it, or is
//!   refused changing no weight; a region is put back only when it serves users;
//! - after a rejoin (and after any sequence is repaired), status is clean.
//!
//! CI runs a sample: the seeds in CI_SEEDS, which between them draw every kind of procedure.
//! RUNBOOK_SEQUENCES=N (default 2) from RUNBOOK_SEQUENCE_SEED (default 1) runs others. A long sweep:
//!   RUNBOOK_SEQUENCES=40 RUNBOOK_SEQUENCE_SEED=1000 cargo nextest run sequences --no-capture
//! A failure prints the seed and the sequence; RUNBOOK_SEQUENCE_SEED=<seed> RUNBOOK_SEQUENCES=1
//! replays it.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use runbook_stack::web::Health;

use crate::runbooks::{drill, kept_archives, Drill};
use crate::support::Ran;

const REGIONS: [&str; 3] = ["us-east-1", "eu-west-1", "ap-southeast-1"];

/// splitmix64: a small seeded generator, so a sequence can be replayed from its seed.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }

    fn pick<'a>(&mut self, items: &[&'a str]) -> &'a str {
        items[self.below(items.len())]
    }
}

/// A database as psql sees it: (writable, timeline), or None when it does not answer.
fn probe(d: &Drill, region: &str) -> Option<(bool, i64)> {
    let out = d
        .stack
        .pg
        .psql(
            d.stack.pg.node(region),
            "SELECT (NOT pg_is_in_recovery() AND current_setting('default_transaction_read_only') = 'off')::text || ' ' || \
             CASE WHEN pg_is_in_recovery() THEN 0 ELSE ('x' || substr(pg_walfile_name(pg_current_wal_lsn()), 1, 8))::bit(32)::int END",
        )
        .ok()?;
    let (w, tl) = out.split_once(' ')?;
    Some((w == "true", tl.parse().ok()?))
}

/// The writable primaries, newest timeline first.
fn writable(d: &Drill) -> Vec<(String, i64)> {
    let mut out: Vec<(String, i64)> = REGIONS
        .iter()
        .filter_map(|r| match probe(d, r) {
            Some((true, tl)) => Some((r.to_string(), tl)),
            _ => None,
        })
        .collect();
    out.sort_by_key(|b| std::cmp::Reverse(b.1));
    out
}

/// An acknowledged write: its id, and the WAL position right after its commit.
#[derive(Clone)]
struct Acked {
    id: i64,
    lsn: u64,
}

fn lsn(text: &str) -> Option<u64> {
    let (hi, lo) = text.trim().split_once('/')?;
    Some((u64::from_str_radix(hi, 16).ok()? << 32) + u64::from_str_radix(lo, 16).ok()?)
}

/// Inserts a row a time into the newest writable primary, as an application would, and keeps
/// what the database acknowledged.
struct Writer {
    stop: Arc<AtomicBool>,
    acked: Arc<Mutex<Vec<Acked>>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Writer {
    fn start(d: &Drill) -> Writer {
        let stop = Arc::new(AtomicBool::new(false));
        let acked = Arc::new(Mutex::new(Vec::new()));
        let socket = d.stack.pg.dir.clone();
        let ports: Vec<(String, u16)> = REGIONS
            .iter()
            .map(|r| (r.to_string(), d.stack.pg.node(r).port))
            .collect();
        let thread = {
            let (stop, acked) = (stop.clone(), acked.clone());
            std::thread::spawn(move || {
                let psql = |port: u16, sql: &[&str]| -> Option<String> {
                    let mut c = std::process::Command::new("psql");
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
                    .arg(&socket)
                    .args(["-p", &port.to_string(), "-d", "postgres"]);
                    for s in sql {
                        c.args(["-c", s]);
                    }
                    let out = c.output().ok()?;
                    out.status
                        .success()
                        .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
                };
                let mut next = 1i64;
                let mut target: Option<u16> = None;
                while !stop.load(Ordering::SeqCst) {
                    let port = match target {
                        Some(p) => p,
                        None => {
                            // The newest writable primary, as an application's router sees it.
                            let mut best: Option<(i64, u16)> = None;
                            for (_, port) in &ports {
                                let Some(out) = psql(*port, &["SELECT (NOT pg_is_in_recovery() AND current_setting('default_transaction_read_only') = 'off')::text || ' ' || CASE WHEN pg_is_in_recovery() THEN 0 ELSE ('x' || substr(pg_walfile_name(pg_current_wal_lsn()), 1, 8))::bit(32)::int END"]) else { continue };
                                let mut parts = out.split_whitespace();
                                if parts.next() == Some("true") {
                                    let tl: i64 =
                                        parts.next().and_then(|t| t.parse().ok()).unwrap_or(0);
                                    if best.is_none_or(|(b, _)| tl > b) {
                                        best = Some((tl, *port));
                                    }
                                }
                            }
                            match best {
                                Some((_, p)) => p,
                                None => {
                                    std::thread::sleep(Duration::from_millis(50));
                                    continue;
                                }
                            }
                        }
                    };
                    let insert = format!("INSERT INTO ledger (id) VALUES ({next})");
                    match psql(port, &[&insert, "SELECT pg_current_wal_lsn()"]) {
                        Some(out) => {
                            if let Some(pos) = out.lines().last().and_then(lsn) {
                                acked.lock().unwrap().push(Acked { id: next, lsn: pos });
                            }
                            next += 1;
                            target = Some(port);
                        }
                        None => {
                            // Refused (read-only, down, a standby now): find the primary again.
                            target = None;
                            next += 1;
                            std::thread::sleep(Duration::from_millis(20));
                        }
                    }
                }
            })
        };
        Writer {
            stop,
            acked,
            thread: Some(thread),
        }
    }

    fn acked(&self) -> Vec<Acked> {
        self.acked.lock().unwrap().clone()
    }
}

impl Drop for Writer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// The ids on a region's database.
fn ids_on(d: &Drill, region: &str) -> BTreeSet<i64> {
    d.psql(region, "SELECT string_agg(id::text, ' ') FROM ledger")
        .split_whitespace()
        .filter_map(|x| x.parse().ok())
        .collect()
}

/// The acknowledged writes that are neither known lost nor `present`.
fn absent(acked: &[Acked], lost: &BTreeSet<i64>, present: &BTreeSet<i64>) -> Vec<i64> {
    acked
        .iter()
        .map(|a| a.id)
        .filter(|id| !lost.contains(id) && !present.contains(id))
        .collect()
}

/// The standbys of `primary` (but a `stopped` one) stop receiving its WAL: their
/// primary_conninfo emptied and reloaded, their WAL receivers gone.
fn cut_off_standbys(d: &Drill, primary: &str, stopped: Option<&str>) -> Result<(), String> {
    for region in REGIONS
        .iter()
        .filter(|r| **r != primary && Some(**r) != stopped)
    {
        let node = d.stack.pg.node(region);
        let psql = |sql: &str| {
            d.stack
                .pg
                .psql(node, sql)
                .map_err(|e| format!("cutting {region} off: {e}"))
        };
        psql("ALTER SYSTEM SET primary_conninfo = ''")?;
        psql("SELECT pg_reload_conf()")?;
        if !crate::support::wait_for(Duration::from_secs(20), || {
            psql("SELECT count(*) FROM pg_stat_wal_receiver").is_ok_and(|n| n == "0")
        }) {
            return Err(format!("{region}'s WAL receiver did not stop"));
        }
    }
    Ok(())
}

/// Every one of `gone` (acknowledged writes an emergency failover lost when `region` crashed)
/// is in the copy of its data directory that its rejoin kept: a server started on the copy
/// has them. Nothing to check when it lost none.
fn kept_by_the_rejoin(
    d: &Drill,
    ran: &Ran,
    region: &str,
    gone: &[i64],
    figures: &mut Figures,
) -> Result<(), String> {
    if gone.is_empty() {
        return Ok(());
    }
    figures.checks += 1;
    figures.kept += gone.len();
    let Some(kept) = ran
        .stdout
        .lines()
        .find_map(|l| l.trim().strip_prefix("result kept_copy: "))
    else {
        return Err(format!(
            "the failover lost {} acknowledged write(s) ({}) that were on {region}'s disk, and its rejoin kept no copy\n{}",
            gone.len(),
            first_ids(gone),
            ran.stdout
        ));
    };
    let copy = d
        .stack
        .pg
        .start_copy(Path::new(kept), &format!("{region}'s copy"))
        .map_err(|e| format!("starting a server on {kept}: {e}"))?;
    let on_copy: BTreeSet<i64> = copy
        .psql("SELECT string_agg(id::text, ' ') FROM ledger")
        .map_err(|e| format!("reading {kept}: {e}"))?
        .split_whitespace()
        .filter_map(|x| x.parse().ok())
        .collect();
    let missing: Vec<i64> = gone
        .iter()
        .copied()
        .filter(|id| !on_copy.contains(id))
        .collect();
    if !missing.is_empty() {
        return Err(format!(
            "{} of the {} acknowledged write(s) the failover lost are not in the copy its rejoin kept ({kept}): {}",
            missing.len(),
            gone.len(),
            first_ids(&missing)
        ));
    }
    Ok(())
}

/// The first ten of some ids, for a failure message.
fn first_ids(ids: &[i64]) -> String {
    format!("{:?}", &ids[..ids.len().min(10)])
}

/// The ids of `ledger` in a pg_dump archive.
fn archived_ids(archive: &Path) -> BTreeSet<i64> {
    let mut c = std::process::Command::new("pg_restore");
    c.args(["--data-only", "--table", "ledger", "-f", "-"])
        .arg(archive);
    let text = runbook_stack::run(c, "pg_restore").unwrap();
    let Some(copy) = text.find("COPY ") else {
        return BTreeSet::new();
    };
    text[copy..]
        .lines()
        .skip(1)
        .take_while(|l| *l != "\\.")
        .filter_map(|l| l.split('\t').next()?.parse().ok())
        .collect()
}

/// Where the primary's newest timeline forked from the previous one.
fn switch_point(d: &Drill, region: &str) -> Option<u64> {
    let tl: i64 = d
        .psql(
            region,
            "SELECT ('x' || substr(pg_walfile_name(pg_current_wal_lsn()), 1, 8))::bit(32)::int",
        )
        .parse()
        .ok()?;
    let history = d.psql(
        region,
        &format!("SELECT pg_read_file('pg_wal/{tl:08X}.history')"),
    );
    let last = history.lines().rev().find(|l| !l.trim().is_empty())?;
    lsn(last.split_whitespace().nth(1)?)
}

/// "data-loss bound [at least ]N bytes" from a run's output: (N, exact).
fn reported_bound(out: &str) -> Option<(u64, bool)> {
    let line = out
        .lines()
        .rev()
        .find(|l| l.contains(" done in ") && l.contains("data-loss bound "))?;
    let rest = line.split("data-loss bound ").nth(1)?;
    let (exact, rest) = match rest.strip_prefix("at least ") {
        Some(r) => (false, r),
        None => (true, rest),
    };
    Some((rest.split(' ').next()?.parse().ok()?, exact))
}

/// What the test knows of the deployment, to draw procedures that apply.
struct Model {
    /// A region whose primary database is down (and health failing), not failed over back.
    down: Option<String>,
    /// A former primary that came back writable and waits for a rejoin.
    returned: Option<String>,
    /// That former primary was fenced (fence.rhai): read-only, still waiting for its rejoin.
    fenced: bool,
    /// Whether DATABASE_URL was ever changed (a rollback needs a previous revision).
    repointed: bool,
    /// The newest nightly backup of the primary's data, and how many were taken.
    archive: Option<PathBuf>,
    archives: usize,
    /// The images rolled out so far (orchestrator:1.N).
    images: usize,
    /// A standby whose database is stopped (a fast shutdown), not started again yet.
    stopped: Option<String>,
    /// A region drain.rhai took out of DNS rotation, not put back yet.
    drained: Option<String>,
}

#[derive(Default)]
struct Figures {
    sequences: usize,
    procedures: usize,
    checks: usize,
    planned_lost: usize,
    /// Writes the databases acknowledged, over all sequences.
    acknowledged: usize,
    emergencies: usize,
    /// Acknowledged writes that a restore replaced (each in the archive it kept).
    restored: usize,
    /// Acknowledged writes an emergency failover lost (each in the copy its rejoin kept).
    kept: usize,
    /// (lost bytes, bound, exact) of each emergency failover.
    losses: Vec<(u64, u64, bool)>,
}

/// A former primary that came back writable is rejoined: the run succeeds, status after it has
/// nothing critical (is clean, when `strict`), and the writes its failover lost are in the copy
/// it kept.
fn rejoin_returned(
    d: &Drill,
    region: &str,
    strict: bool,
    gone: &[i64],
    figures: &mut Figures,
) -> Result<(), String> {
    let ran = run(
        d,
        "rejoin",
        &["--var", &format!("region={region}"), "--yes"],
    );
    if ran.code != 0 {
        return Err(ran.all());
    }
    let st = run(
        d,
        "status",
        if strict {
            &["--var", "strict=true"]
        } else {
            &[]
        },
    );
    figures.checks += 1;
    if st.code != 0 {
        return Err(format!("status is not clean after it\n{}", st.all()));
    }
    kept_by_the_rejoin(d, &ran, region, gone, figures)
}

/// A standby's database started again: it streams from the primary by itself (true), or
/// status names the rejoin it needs (it followed a primary that is one no more), and that
/// rejoin runs (true). While a former primary takes writes (`returned`), status names that
/// one's rejoin first, and the standby's rejoin refuses, changing nothing (false: the caller
/// rejoins the former primary, then starts again).
fn start_again(
    d: &Drill,
    region: &str,
    primary: &str,
    returned: Option<&str>,
) -> Result<bool, String> {
    let port = d.stack.pg.node(primary).port;
    let timeline = writable(d)
        .into_iter()
        .find(|(r, _)| r == primary)
        .map(|(_, tl)| tl)
        .unwrap_or(0);
    // Streaming from the primary on its timeline: a standby that diverged before a switch
    // may stream for a moment on its old timeline before it gives up.
    let streams = || {
        d.stack
            .pg
            .psql(
                d.stack.pg.node(region),
                &format!("SELECT count(*) FROM pg_stat_wal_receiver WHERE status = 'streaming' AND sender_port = {port} AND received_tli = {timeline}"),
            )
            .is_ok_and(|n| n == "1")
    };
    if crate::support::wait_for(Duration::from_secs(10), streams) {
        return Ok(true);
    }
    let st = run(d, "status", &[]);
    let rejoin = |r: &str| format!("rejoin.rhai -i {} --var region={r}", d.inventory.display());
    if !st.stdout.contains(&rejoin(region)) {
        return Err(format!(
            "not streaming from {primary}, and status does not name its rejoin:\n{}",
            st.all()
        ));
    }
    let ran = run(
        d,
        "rejoin",
        &["--var", &format!("region={region}"), "--yes"],
    );
    if let Some(old) = returned {
        let first = format!("first rejoin the former primary {old}: ");
        if !st.stdout.contains(&first) || !st.stdout.contains(&rejoin(old)) {
            return Err(format!(
                "{old} takes writes, and status does not name its rejoin before {region}'s:\n{}",
                st.all()
            ));
        }
        if ran.code != 1
            || !ran.stderr.contains(&format!(
                "{old} is a former primary that came back and takes writes"
            ))
            || !ran.stderr.contains("Nothing was changed")
        {
            return Err(format!(
                "its rejoin while {old} takes writes should refuse, naming {old}'s first: {}",
                ran.all()
            ));
        }
        return Ok(false);
    }
    if ran.code != 0 {
        return Err(format!("its rejoin: {}", ran.all()));
    }
    Ok(true)
}

fn run(d: &Drill, runbook: &str, extra: &[&str]) -> Ran {
    d.run(runbook, extra)
}

fn one_sequence(seed: u64, figures: &mut Figures) -> Result<(), String> {
    let mut rng = Rng(seed);
    // Whether an emergency failover's standbys are cut off first: drawn apart, so that the
    // procedures a seed draws stay the same.
    let mut cuts = Rng(seed ^ 0x00C0_FFEE);
    let d = drill();
    d.psql(
        "us-east-1",
        "CREATE TABLE ledger (id bigint PRIMARY KEY, at timestamptz DEFAULT now())",
    );
    let writer = Writer::start(&d);
    let mut lost: BTreeSet<i64> = BTreeSet::new();
    // The acknowledged writes an emergency failover lost, by the region that crashed with them:
    // its rejoin must keep them (the copy of its data directory before the rewind).
    let mut lost_on: BTreeMap<String, Vec<i64>> = BTreeMap::new();
    let mut m = Model {
        down: None,
        returned: None,
        fenced: false,
        repointed: false,
        archive: None,
        archives: 0,
        images: 0,
        stopped: None,
        drained: None,
    };
    let length = 6 + rng.below(5);
    let mut done: Vec<String> = Vec::new();
    let fail = |done: &[String], why: String| -> String {
        format!("seed {seed}, after [{}]: {why}", done.join(", "))
    };
    std::thread::sleep(Duration::from_millis(300));
    // Last night's backup, taken while the writer writes.
    m.archives = 1;
    let first = d.t.path("nightly-1.dump");
    d.pg_dump("us-east-1", &first);
    m.archive = Some(first);

    while done.len() < length {
        let primary = writable(&d)
            .first()
            .map(|(r, _)| r.clone())
            .unwrap_or_default();
        let standbys: Vec<&str> = REGIONS
            .iter()
            .copied()
            .filter(|r| {
                *r != primary
                    && Some(r.to_string()) != m.down
                    && Some(r.to_string()) != m.returned
                    && Some(r.to_string()) != m.stopped
            })
            .collect();
        let mut choices = vec!["maintenance", "upgrade"];
        if m.returned.is_none() {
            choices.extend(["planned", "emergency", "backup"]);
            if m.repointed {
                choices.push("rollback");
            }
            if m.archive.is_some() {
                choices.push("restore");
            }
            if m.down.is_none() {
                choices.push("initial-setup");
            }
            match m.drained {
                Some(_) => choices.push("undrain"),
                None if d.stack.moto.weights().iter().any(|(_, w)| *w > 0) => choices.push("drain"),
                None => {}
            }
        }
        if m.down.is_some() {
            choices.extend(["come-back", "come-back"]);
        }
        if m.returned.is_some() {
            choices.extend(["rejoin", "rejoin"]);
            if !m.fenced {
                choices.push("fence");
            }
        }
        match &m.stopped {
            Some(_) => choices.extend(["start-standby", "start-standby"]),
            None if m.returned.is_none() && !standbys.is_empty() => choices.push("stop-standby"),
            None => {}
        }
        if standbys.is_empty() {
            // No standby to fail over to.
            choices.retain(|c| *c != "planned" && *c != "emergency");
        }
        if m.down.is_some() {
            // One region down at a time: the next emergency waits until it is back.
            choices.retain(|c| *c != "emergency");
        }
        if m.returned.is_some() {
            // Nothing but a rejoin (or its fence first, or maintenance or an upgrade, to see
            // them refused while it takes writes) until the old primary is fixed.
            choices.retain(|c| {
                matches!(*c, "rejoin" | "fence" | "start-standby")
                    || (!m.fenced && matches!(*c, "maintenance" | "upgrade"))
            });
        }
        let what = rng.pick(&choices);
        let before = writer.acked();
        let label;
        match what {
            "planned" => {
                let target = rng.pick(&standbys);
                label = format!("planned-failover to {target}");
                let ran = run(
                    &d,
                    "planned-failover",
                    &["--var", &format!("target={target}"), "--yes"],
                );
                if ran.code != 0 {
                    return Err(fail(&done, format!("{label}: {}", ran.all())));
                }
                m.repointed = true;
                // Every write acknowledged before it is on the new primary.
                let present = ids_on(&d, target);
                let missing = absent(&before, &lost, &present);
                figures.planned_lost += missing.len();
                figures.checks += 1;
                if !missing.is_empty() {
                    return Err(fail(
                        &done,
                        format!(
                            "{label} lost {} acknowledged write(s): {}",
                            missing.len(),
                            first_ids(&missing)
                        ),
                    ));
                }
            }
            "emergency" => {
                let old = primary.clone();
                // Half the time its standbys stop receiving first (a partition before the
                // crash): the writes it acknowledges meanwhile are lost by the failover, and
                // its rejoin must keep them. The standbys then name no upstream: the operator
                // says which region failed.
                let cut = cuts.below(2) == 0;
                label = if cut {
                    format!("emergency-failover ({old} crashes, its standbys cut off)")
                } else {
                    format!("emergency-failover ({old} crashes)")
                };
                if cut {
                    cut_off_standbys(&d, &old, m.stopped.as_deref())
                        .map_err(|e| fail(&done, format!("{label}: {e}")))?;
                    std::thread::sleep(Duration::from_millis(300));
                }
                d.stack.web.set_health(&old, Health::Fail);
                runbook_stack::postgres::stop_dir(&d.stack.pg.node(&old).data_dir, libc::SIGQUIT)
                    .map_err(|e| fail(&done, format!("crashing {old}: {e}")))?;
                let from = format!("from={old}");
                let mut args = vec![
                    "--var",
                    "check_interval=20ms",
                    "--var",
                    "max_lag_bytes=1073741824",
                ];
                if cut {
                    args.extend(["--var", &from]);
                }
                let ran = run(&d, "emergency-failover", &args);
                if ran.code != 0 {
                    return Err(fail(&done, format!("{label}: {}", ran.all())));
                }
                m.down = Some(old.clone());
                m.repointed = true;
                let Some((new, _)) = writable(&d).first().cloned() else {
                    return Err(fail(
                        &done,
                        format!("{label}: no writable primary after it"),
                    ));
                };
                let (bound, exact) = reported_bound(&ran.stdout).ok_or_else(|| {
                    fail(
                        &done,
                        format!("{label}: no data-loss bound in\n{}", ran.stdout),
                    )
                })?;
                // What the writer had acknowledged when the primary crashed and is not on the
                // new primary, in WAL bytes past the point the new timeline forked. The writer
                // goes on writing to the new primary: what it acknowledged is taken before the
                // new primary's rows are read, or a row written in between would count as lost.
                let acked = writer.acked();
                let present = ids_on(&d, &new);
                let gone: Vec<Acked> = acked
                    .into_iter()
                    .filter(|a| !lost.contains(&a.id) && !present.contains(&a.id))
                    .collect();
                let fork = switch_point(&d, &new).unwrap_or(0);
                let lost_bytes = gone
                    .iter()
                    .map(|a| a.lsn.saturating_sub(fork))
                    .max()
                    .unwrap_or(0);
                figures.emergencies += 1;
                figures.losses.push((lost_bytes, bound, exact));
                figures.checks += 1;
                if exact && lost_bytes > bound {
                    // The run's own reasoning (positions, the bound and how it was found) and
                    // the test's, so a failure can be understood from its message.
                    let reasoning: Vec<&str> = ran
                        .stdout
                        .lines()
                        .filter(|l| {
                            l.contains("received WAL up to")
                                || l.contains("data-loss bound")
                                || l.contains("not a candidate")
                                || l.contains("fenced")
                        })
                        .collect();
                    let writes: Vec<String> = gone
                        .iter()
                        .map(|a| {
                            format!("id {} at {:X}/{:X}", a.id, a.lsn >> 32, a.lsn & 0xFFFF_FFFF)
                        })
                        .collect();
                    return Err(fail(
                        &done,
                        format!(
                            "{label}: lost {} write(s), {lost_bytes} bytes past the fork, more than the reported bound {bound}\n\
                             the new primary {new} forked at {:X}/{:X}; lost: {}\n\
                             the run said:\n{}",
                            gone.len(),
                            fork >> 32,
                            fork & 0xFFFF_FFFF,
                            writes.join(", "),
                            reasoning.join("\n")
                        ),
                    ));
                }
                lost.extend(gone.iter().map(|a| a.id));
                lost_on.insert(old.clone(), gone.iter().map(|a| a.id).collect());
            }
            "drain" => {
                // A region in rotation out of it: exit 0 with its weight 0 and a region that
                // serves users still in rotation, or refused with nothing changed.
                let weights = d.stack.moto.weights();
                let in_rotation: Vec<&str> = weights
                    .iter()
                    .filter(|(_, w)| *w > 0)
                    .map(|(r, _)| r.as_str())
                    .collect();
                let region = rng.pick(&in_rotation).to_string();
                label = format!("drain {region}");
                let ran = run(&d, "drain", &["--var", &format!("region={region}")]);
                let after = d.stack.moto.weights();
                figures.checks += 1;
                let serving = after
                    .iter()
                    .any(|(r, w)| *w > 0 && Some(r) != m.down.as_ref() && d.replicas(r) != "0");
                match ran.code {
                    0 if after.iter().any(|(r, w)| *r == region && *w == 0) && serving => {
                        m.drained = Some(region);
                    }
                    1 if ran.stderr.contains("no other region can take") && after == weights => {}
                    _ => return Err(fail(&done, weights_moved(&label, &weights, &after, &ran))),
                }
            }
            "undrain" => {
                // Back at weight 30 when it serves users; refused, nothing changed, when not.
                let region = m.drained.take().unwrap();
                label = format!("put {region} back in rotation");
                let weights = d.stack.moto.weights();
                let ran = run(
                    &d,
                    "drain",
                    &[
                        "--var",
                        &format!("region={region}"),
                        "--var",
                        "restore=true",
                        "--var",
                        "weight=30",
                    ],
                );
                let after = d.stack.moto.weights();
                figures.checks += 1;
                match ran.code {
                    0 if after.iter().any(|(r, w)| *r == region && *w == 30) => {}
                    1 if ran.stderr.contains("cannot take users back") && after == weights => {
                        m.drained = Some(region);
                    }
                    _ => return Err(fail(&done, weights_moved(&label, &weights, &after, &ran))),
                }
            }
            "come-back" => {
                let old = m.down.take().unwrap();
                label = format!("{old} comes back");
                d.stack
                    .pg
                    .start_node(d.stack.pg.node(&old))
                    .map_err(|e| fail(&done, format!("starting {old}: {e}")))?;
                d.stack.web.set_health(&old, Health::Ok);
                m.returned = Some(old.clone());
                // Two writable primaries now: status must name the returned one as critical.
                let st = run(&d, "status", &[]);
                figures.checks += 1;
                if st.code != 1
                    || !st.stdout.contains(&format!(
                        "{old}'s database is a writable primary on timeline"
                    ))
                {
                    return Err(fail(
                        &done,
                        format!("{label}: status did not flag it\n{}", st.all()),
                    ));
                }
            }
            "fence" => {
                let region = m.returned.clone().unwrap();
                label = format!("fence {region}");
                let ran = run(&d, "fence", &["--var", &format!("region={region}")]);
                if ran.code != 0 {
                    return Err(fail(&done, format!("{label}: {}", ran.all())));
                }
                m.fenced = true;
                // It takes no writes now, and status no longer calls it a second primary.
                figures.checks += 1;
                if probe(&d, &region).is_none_or(|(w, _)| w) {
                    return Err(fail(&done, format!("{label}: it still takes writes")));
                }
                let st = run(&d, "status", &[]);
                if !st
                    .stdout
                    .contains(&format!("{region} is a fenced (read-only) former primary"))
                    || st.stdout.contains("writable primary on timeline")
                {
                    return Err(fail(
                        &done,
                        format!("{label}: status does not say it is fenced\n{}", st.all()),
                    ));
                }
            }
            "rejoin" => {
                let region = m.returned.take().unwrap();
                m.fenced = false;
                label = format!("rejoin {region}");
                // Clean after it; while a standby is stopped, status warns of it (strict
                // would fail on that warning): nothing critical, then.
                let gone = lost_on.remove(&region).unwrap_or_default();
                rejoin_returned(&d, &region, m.stopped.is_none(), &gone, figures)
                    .map_err(|e| fail(&done, format!("{label}: {e}")))?;
            }
            "maintenance" => {
                let candidates: Vec<&str> = REGIONS
                    .iter()
                    .copied()
                    .filter(|r| Some(r.to_string()) != m.down && Some(r.to_string()) != m.returned)
                    .collect();
                let region = rng.pick(&candidates);
                label = format!("maintenance of {region}");
                let ran = run(
                    &d,
                    "maintenance",
                    &[
                        "--var",
                        &format!("regions={region}"),
                        "--var",
                        "window=200ms",
                        "--var",
                        "settle=0s",
                    ],
                );
                let expect_ok = m.returned.is_none();
                if expect_ok && ran.code != 0 {
                    return Err(fail(&done, format!("{label}: {}", ran.all())));
                }
                if !expect_ok && (ran.code != 1 || !ran.stderr.contains("writable primaries")) {
                    return Err(fail(
                        &done,
                        format!(
                            "{label} with two primaries should be refused: {}",
                            ran.all()
                        ),
                    ));
                }
            }
            "rollback" => {
                let candidates: Vec<&str> = REGIONS
                    .iter()
                    .copied()
                    .filter(|r| Some(r.to_string()) != m.down)
                    .collect();
                let region = rng.pick(&candidates);
                label = format!("rollback of {region}");
                let ran = run(&d, "rollback", &["--var", &format!("regions={region}")]);
                if ran.code != 0 {
                    return Err(fail(&done, format!("{label}: {}", ran.all())));
                }
            }
            "stop-standby" => {
                let region = rng.pick(&standbys);
                label = format!("{region}'s standby stops");
                d.stack.pg.stop_node(d.stack.pg.node(region));
                m.stopped = Some(region.to_string());
            }
            "start-standby" => {
                let region = m.stopped.take().unwrap();
                label = format!("{region}'s standby starts again");
                d.stack
                    .pg
                    .start_node(d.stack.pg.node(&region))
                    .map_err(|e| fail(&done, format!("starting {region}: {e}")))?;
                // A fenced former primary takes no writes: the standby's rejoin goes ahead.
                let returned = m.returned.clone().filter(|_| !m.fenced);
                let streams = start_again(&d, &region, &primary, returned.as_deref())
                    .map_err(|e| fail(&done, format!("{label}: {e}")))?;
                figures.checks += 1;
                if let (false, Some(old)) = (streams, returned) {
                    // As status says: the former primary's rejoin first, then the standby's.
                    m.returned = None;
                    m.fenced = false;
                    let gone = lost_on.remove(&old).unwrap_or_default();
                    rejoin_returned(&d, &old, false, &gone, figures)
                        .map_err(|e| fail(&done, format!("{label}: rejoin {old}: {e}")))?;
                    start_again(&d, &region, &primary, None)
                        .map_err(|e| fail(&done, format!("{label}: after rejoin {old}: {e}")))?;
                }
            }
            "backup" => {
                label = format!("backup of {primary}");
                m.archives += 1;
                let to = d.t.path(&format!("nightly-{}.dump", m.archives));
                d.pg_dump(&primary, &to);
                m.archive = Some(to);
            }
            "restore" => {
                let archive = m.archive.clone().unwrap();
                label = format!(
                    "restore of {primary} from {}",
                    archive.file_name().unwrap().to_string_lossy()
                );
                let kept_before = kept_archives(&d.t.path(""));
                let ran = run(
                    &d,
                    "rollback",
                    &[
                        "--var",
                        "mode=database",
                        "--var",
                        &format!("backup={}", archive.display()),
                        "--yes",
                    ],
                );
                if ran.code != 0 {
                    return Err(fail(&done, format!("{label}: {}", ran.all())));
                }
                // Every write acknowledged until now, taken before the rows are read: one
                // acknowledged after the restore is then on the primary.
                let acked = writer.acked();
                let present = ids_on(&d, &primary);
                let missing: Vec<i64> = archived_ids(&archive)
                    .into_iter()
                    .filter(|id| !present.contains(id))
                    .collect();
                figures.checks += 1;
                if !missing.is_empty() {
                    return Err(fail(
                        &done,
                        format!("{label}: rows of the archive are not back: {missing:?}"),
                    ));
                }
                // What it replaced: the acknowledged writes since the archive, kept beside it.
                // The one it kept now (named REGION-before-restore-TIME: not the last by name).
                let kept: Vec<PathBuf> = kept_archives(&d.t.path(""))
                    .into_iter()
                    .filter(|k| !kept_before.contains(k))
                    .collect();
                if kept.len() != 1 {
                    return Err(fail(
                        &done,
                        format!("{label}: kept {} archive(s) of the data before", kept.len()),
                    ));
                }
                let saved = archived_ids(&kept[0]);
                let replaced = absent(&acked, &lost, &present);
                let unsaved: Vec<i64> = replaced
                    .iter()
                    .copied()
                    .filter(|id| !saved.contains(id))
                    .collect();
                figures.checks += 1;
                if !unsaved.is_empty() {
                    return Err(fail(
                        &done,
                        format!(
                            "{label}: {} acknowledged write(s) it replaced are not in the data it kept: {}",
                            unsaved.len(),
                            first_ids(&unsaved)
                        ),
                    ));
                }
                figures.restored += replaced.len();
                lost.extend(replaced);
            }
            "upgrade" => {
                m.images += 1;
                let image = format!("orchestrator:1.{}", m.images);
                let images =
                    || REGIONS.map(|r| d.deployment(r, "spec.template.spec.containers[0].image"));
                let was = images();
                let args = |regions: &[&str]| {
                    let mut a = vec![
                        format!("image={image}"),
                        "bake=0s".to_string(),
                        "gate_timeout=20s".to_string(),
                    ];
                    if !regions.is_empty() {
                        a.push(format!("regions={}", regions.join(",")));
                    }
                    a.into_iter()
                        .flat_map(|v| ["--var".to_string(), v])
                        .collect::<Vec<_>>()
                };
                let upgrade = |regions: &[&str]| {
                    let a = args(regions);
                    let refs: Vec<&str> = a.iter().map(String::as_str).collect();
                    run(&d, "upgrade", &refs)
                };
                if let Some(returned) = &m.returned {
                    label = format!("upgrade to {image} with {returned} back as a primary");
                    let ran = upgrade(&[]);
                    figures.checks += 1;
                    if ran.code != 1
                        || !ran.stderr.contains("writable primaries")
                        || images() != was
                    {
                        return Err(fail(
                            &done,
                            format!("{label} should be refused, changing nothing: {}", ran.all()),
                        ));
                    }
                } else {
                    let mut up: Vec<&str> = REGIONS.to_vec();
                    if let Some(down) = &m.down {
                        // Refused while a region it would upgrade is down, nothing changed;
                        // the others can be upgraded by name.
                        let ran = upgrade(&[]);
                        figures.checks += 1;
                        if ran.code != 1
                            || !ran
                                .stderr
                                .contains(&format!("{down} fails its health check"))
                            || images() != was
                        {
                            return Err(fail(
                                &done,
                                format!(
                                    "upgrade to {image} with {down} down should be refused, changing nothing: {}",
                                    ran.all()
                                ),
                            ));
                        }
                        up.retain(|r| r != down);
                    }
                    label = format!("upgrade of {} to {image}", up.join(", "));
                    let ran = upgrade(if m.down.is_some() { &up } else { &[] });
                    if ran.code != 0 {
                        return Err(fail(&done, format!("{label}: {}", ran.all())));
                    }
                    let now = images();
                    figures.checks += 1;
                    for (i, region) in REGIONS.iter().enumerate() {
                        let want = if up.contains(region) {
                            image.as_str()
                        } else {
                            was[i].as_str()
                        };
                        if now[i] != want {
                            return Err(fail(
                                &done,
                                format!("{label}: {region} runs {}, not {want}", now[i]),
                            ));
                        }
                    }
                }
            }
            _ => {
                label = "initial-setup again".to_string();
                let manifests = format!(
                    "--var=manifests={}/runbooks/manifests",
                    env!("CARGO_MANIFEST_DIR")
                );
                let images =
                    || REGIONS.map(|r| d.deployment(r, "spec.template.spec.containers[0].image"));
                let was = images();
                if let Some(stopped) = &m.stopped {
                    let ran = run(&d, "initial-setup", &[&manifests]);
                    figures.checks += 1;
                    if ran.code != 1
                        || !ran
                            .stderr
                            .contains(&format!("{stopped}'s database does not answer"))
                        || !ran.stderr.contains("Nothing was changed")
                    {
                        return Err(fail(
                            &done,
                            format!(
                                "{label} with {stopped}'s database stopped should be refused: {}",
                                ran.all()
                            ),
                        ));
                    }
                    done.push(format!("{label} (refused: {stopped} stopped)"));
                    figures.procedures += 1;
                    continue;
                }
                let ran = run(&d, "initial-setup", &[&manifests]);
                if ran.code != 0 {
                    return Err(fail(&done, format!("{label}: {}", ran.all())));
                }
                // It sets up around what runs: an upgrade's images stay.
                figures.checks += 1;
                if images() != was {
                    return Err(fail(
                        &done,
                        format!("{label} changed the images: {was:?} → {:?}", images()),
                    ));
                }
            }
        }
        done.push(label);
        figures.procedures += 1;
        // Never two writable primaries, but for a returned old one that status names.
        let w = writable(&d);
        figures.checks += 1;
        if w.len() > 1 && m.returned.as_deref() != Some(w[1].0.as_str()) {
            return Err(fail(&done, format!("writable primaries: {w:?}")));
        }
    }
    // Repair what is left, then the deployment must be clean.
    if let Some(region) = m.stopped.take() {
        d.stack
            .pg
            .start_node(d.stack.pg.node(&region))
            .map_err(|e| fail(&done, e.to_string()))?;
        let primary = writable(&d)
            .first()
            .map(|(r, _)| r.clone())
            .unwrap_or_default();
        // A fenced former primary takes no writes: the standby's rejoin goes ahead, as in the
        // middle of a sequence.
        let returned = m.returned.clone().filter(|_| !m.fenced);
        let streams = start_again(&d, &region, &primary, returned.as_deref())
            .map_err(|e| fail(&done, format!("{region} started at the end: {e}")))?;
        // A standby that could not stream had followed the returned former primary: that one
        // is rejoined first. Otherwise the returned one is rejoined below, as always.
        if let Some(old) = (!streams).then_some(returned).flatten() {
            m.returned = None;
            m.fenced = false;
            let gone = lost_on.remove(&old).unwrap_or_default();
            rejoin_returned(&d, &old, false, &gone, figures)
                .map_err(|e| fail(&done, format!("final rejoin of {old}: {e}")))?;
            start_again(&d, &region, &primary, None).map_err(|e| {
                fail(
                    &done,
                    format!("{region} started at the end, after rejoin {old}: {e}"),
                )
            })?;
        }
    }
    if let Some(old) = m.down.take() {
        d.stack
            .pg
            .start_node(d.stack.pg.node(&old))
            .map_err(|e| fail(&done, e.to_string()))?;
        d.stack.web.set_health(&old, Health::Ok);
        m.returned = Some(old);
    }
    if let Some(region) = m.returned.take() {
        let gone = lost_on.remove(&region).unwrap_or_default();
        rejoin_returned(&d, &region, false, &gone, figures)
            .map_err(|e| fail(&done, format!("final rejoin of {region}: {e}")))?;
    }
    let st = run(&d, "status", &["--var", "strict=true"]);
    figures.checks += 1;
    if st.code != 0 {
        return Err(fail(
            &done,
            format!("status is not clean at the end\n{}", st.all()),
        ));
    }
    figures.acknowledged += writer.acked().len();
    drop(writer);
    println!("seed {seed}: {}", done.join(" → "));
    figures.sequences += 1;
    Ok(())
}

/// A drain's unexpected outcome: the weights before and after, and what it said.
fn weights_moved(
    label: &str,
    before: &[(String, i64)],
    after: &[(String, i64)],
    ran: &Ran,
) -> String {
    format!("{label}: weights {before:?} → {after:?}\n{}", ran.all())
}

/// The sequences CI runs: between them they draw every kind of procedure (718: an emergency
/// failover, the old primary back, refused upgrade, fence, rejoin, maintenance, initial-setup,
/// backup; 720: a drain and its undoing, planned failovers, an upgrade, an emergency failover
/// with its standbys cut off, a restore; 722: a standby stopped and started, rollbacks, an
/// old primary back).
const CI_SEEDS: [u64; 3] = [718, 720, 722];

#[test]
fn random_sequences_of_procedures_keep_the_invariants() {
    let count: Option<u64> = std::env::var("RUNBOOK_SEQUENCES")
        .ok()
        .and_then(|v| v.parse().ok());
    let first: Option<u64> = std::env::var("RUNBOOK_SEQUENCE_SEED")
        .ok()
        .and_then(|v| v.parse().ok());
    let seeds: Vec<u64> = match (first, count) {
        (None, None) => CI_SEEDS.to_vec(),
        (first, count) => {
            let first = first.unwrap_or(1);
            (first..first + count.unwrap_or(2)).collect()
        }
    };
    let count = seeds.len();
    let mut figures = Figures::default();
    let mut failures = Vec::new();
    for seed in seeds {
        if let Err(e) = one_sequence(seed, &mut figures) {
            println!("FAIL {e}");
            failures.push(e);
        }
    }
    let worst = figures
        .losses
        .iter()
        .max_by_key(|(lost, _, _)| *lost)
        .copied()
        .unwrap_or((0, 0, true));
    let largest_bound = figures.losses.iter().map(|(_, b, _)| *b).max().unwrap_or(0);
    let inexact = figures.losses.iter().filter(|(_, _, exact)| !exact).count();
    println!(
        "{} sequence(s) passed of {count}, {} procedures, {} invariant checks, {} writes acknowledged; \
         acknowledged writes lost on planned failovers: {}; {} emergency failover(s) ({inexact} with an inexact bound), \
         largest loss {} bytes against its bound {} ({}), largest bound reported {largest_bound} bytes; \
         acknowledged writes a restore replaced (each found in the data it kept): {}; \
         acknowledged writes an emergency failover lost (each found in the copy its rejoin kept): {}",
        figures.sequences,
        figures.procedures,
        figures.checks,
        figures.acknowledged,
        figures.planned_lost,
        figures.emergencies,
        worst.0,
        worst.1,
        if worst.2 { "exact" } else { "at least" },
        figures.restored,
        figures.kept
    );
    assert!(failures.is_empty(), "{failures:#?}");
}
