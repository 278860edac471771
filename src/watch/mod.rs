//! `runbook watch`: automatic failover. Each interval the watcher observes every
//! region as `topology::observe` does, feeds the observation to [`rules::decide`] (hysteresis,
//! independent sources that must agree, guard rails), and when the rule fires for the primary's
//! region starts the failover runbook as an ordinary run — journaled, reported, resumable —
//! with the watcher as its operator and the observations that fired it in its journal. A
//! former primary that comes back writable beside the primary is fenced the same way, by the
//! fence runbook.
//!
//! One watcher acts: watchers sharing a store elect one through the store's lock (`watch
//! NAME`); the others wait and take over when its hold goes (its process died, its host or
//! its database session was lost). After an automatic failover nothing is started again until
//! a person acknowledges it (`runbook watch --ack`) and the cooldown has passed.

pub mod rules;

use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::action::topology::{self, model::Topology, InventoryView};
use crate::action::Cx;
use crate::error::{Error, Next};
use crate::inventory::Inventory;
use crate::journal::{self, Event, LockHolder, Store};
use crate::report::Progress;
use crate::runner::{self, Env, Operator, RunRequest};
use rules::{Decision, Health, RegionSeen, Rules, Seen, Standing};

/// What the operator asked of `runbook watch`.
pub struct WatchRequest {
    pub inventory: PathBuf,
    pub runbook: PathBuf,
    pub interval: Duration,
    pub dry_run: bool,
    pub once: bool,
    /// The store options the watcher was given, spelled into the commands its alerts name
    /// (`runbook resume RUN --approve --store ...`), so that they work when pasted.
    pub store_flag: String,
}

/// The operator name runs started by the watcher carry.
pub const WATCHER: &str = "runbook watch";

/// The deployment's name, as the shipped runbooks name their lock.
fn deployment(inv: &Inventory, path: &Path) -> String {
    inv.value["name"]
        .as_str()
        .or_else(|| inv.value["dns"]["record"].as_str())
        .map(str::to_string)
        .unwrap_or_else(|| {
            path.file_stem()
                .map(|s| s.to_string_lossy().into_owned())
                .unwrap_or_else(|| "deployment".into())
        })
}

fn rules_of(inv: &Inventory) -> Result<Rules, Error> {
    match inv.value.get("watch") {
        None => Ok(Rules::default()),
        Some(v) => serde_json::from_value(v.clone()).map_err(|e| Error::Inventory {
            path: inv.file.clone(),
            message: format!("[watch]: {e}"),
        }),
    }
}

/// An observation in the rules' terms.
pub fn seen_of(t: &Topology) -> Seen {
    let regions = t
        .regions
        .iter()
        .map(|(name, r)| {
            let h = &r.health;
            let health = if !h.checked {
                Health::Unchecked
            } else if h.ok {
                Health::Ok
            } else if h.status.is_some_and(|s| (200..300).contains(&s)) {
                Health::Slow
            } else {
                Health::Failing
            };
            let lsn = |s: &Option<String>| s.as_deref().and_then(topology::model::lsn);
            let received = lsn(&r.database.receive_lsn).max(lsn(&r.database.replay_lsn));
            (
                name.clone(),
                RegionSeen {
                    health,
                    latency_ms: h.latency_ms,
                    database: r.database.role.clone(),
                    writable: r.database.writable,
                    timeline: r.database.timeline,
                    received,
                    redis_up: match r.redis.role.as_str() {
                        "absent" => None,
                        "unreachable" => Some(false),
                        _ => Some(true),
                    },
                },
            )
        })
        .collect();
    Seen {
        primary: t.primary.clone().or_else(|| {
            (t.writable.len() <= 1)
                .then(|| t.followed.clone())
                .flatten()
        }),
        writable: t.writable.clone(),
        newest: t.newest_primary.clone(),
        regions,
    }
}

/// The deployment whose automatic failover a run is, read from its first record: a run this
/// watcher started for a failover (a fence of a former primary that came back is not one).
pub fn automatic_failover_of(first: &journal::Record) -> Option<&str> {
    match &first.event {
        Event::RunStarted {
            trigger: Some(trigger),
            ..
        } if trigger["action"] != "fence" => trigger["deployment"].as_str(),
        _ => None,
    }
}

/// This deployment's last automatic failover: its run id and when it started (Unix ms). Reads
/// the first record of every run in the store: done once, and again after this watcher starts
/// a run.
fn last_automatic(store: &dyn Store, name: &str) -> Result<Option<(String, u64)>, Error> {
    let mut latest: Option<(String, u64)> = None;
    for (id, first) in store.starts()? {
        let Some(first) = first else {
            continue;
        };
        if automatic_failover_of(&first) != Some(name) {
            continue;
        }
        let at = journal::unix_ms_of(&first.at).unwrap_or(0);
        if latest.as_ref().is_none_or(|(_, t)| at > *t) {
            latest = Some((id, at));
        }
    }
    Ok(latest)
}

/// How that failover stands now: how long ago it started, and whether a person acknowledged it
/// (from another process, so its journal is read each time). Also the journal it read.
fn standing_of(
    store: &dyn Store,
    last: &Option<(String, u64)>,
) -> Result<(Standing, Vec<journal::Record>), Error> {
    let Some((run, at)) = last else {
        return Ok((Standing::default(), vec![]));
    };
    let records = store.read(run)?.records;
    let acknowledged = records
        .iter()
        .any(|r| matches!(r.event, Event::WatchAcknowledged { .. }));
    let standing = Standing {
        since_last_failover_s: Some(journal::unix_ms().saturating_sub(*at) / 1000),
        acknowledged,
    };
    Ok((standing, records))
}

/// `runbook watch --ack`: a person has looked at the last automatic failover; the watcher may
/// act again once the cooldown has passed.
pub fn ack(store: &dyn Store, inventory: &Path, by: &str) -> Result<String, Error> {
    let inv = Inventory::load(inventory)?;
    let name = deployment(&inv, inventory);
    let rules = rules_of(&inv)?;
    let last = last_automatic(store, &name)?;
    let (st, records) = standing_of(store, &last)?;
    let Some((run, _)) = last else {
        return Err(Error::Usage(format!(
            "no automatic failover of {name} in {}: nothing to acknowledge",
            store.describe()
        )));
    };
    if st.acknowledged {
        return Ok(format!(
            "the automatic failover {run} was already acknowledged; nothing changed"
        ));
    }
    journal::append_event(
        store,
        &run,
        &records,
        Event::WatchAcknowledged { by: by.to_string() },
    )?;
    let left = rules
        .cooldown_s
        .saturating_sub(st.since_last_failover_s.unwrap_or(0));
    Ok(if left > 0 {
        format!("acknowledged the automatic failover {run}; the watcher may act again in {left} s (the cooldown)")
    } else {
        format!("acknowledged the automatic failover {run}; the watcher may act again")
    })
}

fn say(env: &Env, message: String) {
    env.reporter.report(&Progress::Watch {
        decision: "note".into(),
        message,
    });
}

/// The runbook the rule starts must start then: it compiles, passes lint, and accepts the
/// parameters the watcher gives it (`from` each region, `approve_first` in approval mode, the
/// `[watch] vars`) — found when the watcher starts, not when a region fails. Declarations
/// built at run time (not a literal map) are not checked here.
fn runbook_would_start(
    req: &WatchRequest,
    rules: &Rules,
    regions: &crate::script::Regions,
) -> Result<(), Error> {
    let mut vars = rules.vars.clone();
    if rules.approve_within_s > 0 && !req.dry_run {
        vars.insert("approve_first".into(), "true".into());
    }
    would_start(
        &req.runbook,
        "--runbook",
        "the rule fires for",
        vars,
        "from",
        regions,
        "declare what the watcher passes in its params(..), or change the inventory's [watch] vars",
    )
}

/// That `runbook` compiles, passes lint, and accepts `vars` with `var` set to each region.
fn would_start(
    runbook: &Path,
    named_by: &str,
    when: &str,
    mut vars: std::collections::BTreeMap<String, String>,
    var: &str,
    regions: &crate::script::Regions,
    fix: &str,
) -> Result<(), Error> {
    crate::script::check_file(runbook).map_err(|mut problems| problems.remove(0))?;
    let source = std::fs::read_to_string(runbook)?;
    let plain = crate::script::parse_plain(&source).unwrap_or_default();
    let Some(decls) = crate::script::declared_params(&plain) else {
        return Ok(());
    };
    for region in &regions.names {
        vars.insert(var.into(), region.clone());
        if let Err(problems) = crate::script::resolve_params(&decls, &vars, Some(regions)) {
            return Err(Error::Usage(format!(
                "{named_by} {}: it would be refused when {when} {region}:\n  {}\n{fix}",
                runbook.display(),
                problems.join("\n  ")
            )));
        }
    }
    Ok(())
}

/// The fence runbook the watcher runs for a former primary that came back, when it fences:
/// `[watch] fence_runbook` (relative to the working directory), else `fence.rhai` beside the
/// failover runbook. Named and missing, or not starting, is refused; not named and not beside
/// the failover runbook, the watcher alerts instead (and says so when it starts).
fn fence_runbook(
    req: &WatchRequest,
    rules: &Rules,
    regions: &crate::script::Regions,
) -> Result<Option<PathBuf>, Error> {
    if !rules.fence_returned {
        return Ok(None);
    }
    let path = match &rules.fence_runbook {
        Some(p) => {
            let path = PathBuf::from(p);
            if !path.exists() {
                return Err(Error::Usage(format!(
                    "[watch] fence_runbook = {p:?}: no such file (from {}); give the fence runbook's path, or fence_returned = false to be alerted instead",
                    std::env::current_dir().map(|d| d.display().to_string()).unwrap_or_default()
                )));
            }
            path
        }
        None => {
            let beside = req.runbook.with_file_name("fence.rhai");
            if !beside.exists() {
                return Ok(None);
            }
            beside
        }
    };
    would_start(
        &path,
        "[watch] fence_runbook",
        "it fences",
        std::collections::BTreeMap::new(),
        "region",
        regions,
        "it must take --var region=R and nothing else required, or set fence_returned = false",
    )?;
    Ok(Some(path))
}

/// `runbook watch`.
pub fn watch(env: &Env, req: WatchRequest) -> Result<(), Error> {
    let inv = Inventory::load(&req.inventory)?;
    let rules = rules_of(&inv)?;
    let name = deployment(&inv, &req.inventory);
    // Secrets must be there now, not at 3 a.m.
    inv.to_script(&env.redactor, false)?;
    if !req.runbook.exists() {
        let cwd = std::env::current_dir()
            .map(|d| format!(" (from {})", d.display()))
            .unwrap_or_default();
        return Err(Error::Usage(format!(
            "--runbook {}: no such file{cwd}; give the failover runbook's path, e.g. --runbook \
             path/to/runbooks/emergency-failover.rhai",
            req.runbook.display()
        )));
    }
    let mut view: InventoryView =
        serde_json::from_value(inv.value.clone()).map_err(|e| Error::Inventory {
            path: inv.file.clone(),
            message: e.to_string(),
        })?;
    let regions = crate::script::Regions::of(&inv.file, &inv.value);
    runbook_would_start(&req, &rules, &regions)?;
    let fencer = fence_runbook(&req, &rules, &regions)?;
    let fencing_asked = rules.fence_returned;
    let rules = Rules {
        fence_returned: fencer.is_some(),
        ..rules
    };
    // The rules read health, databases and Redis: the Kubernetes and Route53 APIs are not
    // asked every interval (Route53 allows five requests a second per account).
    view.dns = None;
    for r in view.regions.values_mut() {
        r.context = None;
    }
    let holder = LockHolder {
        run_id: "watch".into(),
        runbook: WATCHER.into(),
        operator: env.operator.name.clone(),
        host: env.operator.host.clone(),
        pid: std::process::id(),
        since: journal::timestamp(),
    };
    let lock = format!("watch {name}");
    let mut told = false;
    let guard = loop {
        match journal::take_lock(env.store.as_ref(), &lock, &holder) {
            Ok(g) => break g,
            Err(Error::Locked { holder: who, .. }) if !req.once => {
                if !told {
                    say(
                        env,
                        format!(
                            "another watcher is active ({who}); this one takes over if it stops"
                        ),
                    );
                    told = true;
                }
            }
            Err(e) => return Err(e),
        }
        if sleep(env, req.interval) {
            return Ok(());
        }
    };
    if told {
        say(
            env,
            format!("this watcher is now the active one for {name}"),
        );
    }
    say(
        env,
        format!(
            "watching {name} every {}{}: fail over after {} failed health checks, {} database and {} Redis observations, {} of them agreeing; {}",
            humantime::format_duration(req.interval),
            if req.dry_run { " (dry-run: nothing is started)" } else { "" },
            rules.health_failures,
            rules.database_failures,
            rules.redis_failures,
            rules.agree,
            req.runbook.display()
        ),
    );
    say(
        env,
        match &fencer {
            Some(f) => format!(
                "a former primary that comes back writable is fenced after {} observations: {}",
                rules.database_failures.max(1),
                f.display()
            ),
            None if fencing_asked => format!(
                "a former primary that comes back writable is alerted, not fenced: no fence.rhai beside {} ([watch] fence_runbook names one)",
                req.runbook.display()
            ),
            None => "a former primary that comes back writable is alerted, not fenced ([watch] fence_returned = false)".into(),
        },
    );
    let cx = Cx {
        http: runner::http_client(),
        invocation: Arc::new(crate::action::Invocation::new(
            &req.runbook.display().to_string(),
            req.inventory.to_str(),
            &req.store_flag,
        )),
        redactor: env.redactor.clone(),
        timeout: Duration::from_millis(rules.max_latency_ms.max(1000)),
        cancel: env.cancel.clone(),
        progress: Arc::new(|_| {}),
    };
    let mut state = rules::State::default();
    let mut last_said = String::new();
    // What the team was last alerted of, without the counts that change every observation: a
    // hold or a returned primary that lasts is one alert, not one a second.
    let mut last_alerted = String::new();
    let mut acted_dry = false;
    // The exit code of the last automatic failover that did not finish, and when the team was
    // told: a failover refused each time the rule fires (a lock held by a maintenance) alerts
    // once, and again every REMIND while it goes on.
    let mut alerted_failure: Option<(i32, Instant)> = None;
    // The last automatic failover, found once (a full scan of the store) and again after
    // this watcher starts one.
    let mut last: Option<Option<(String, u64)>> = None;
    loop {
        let started = Instant::now();
        let t = env
            .rt
            .block_on(topology::observe_now(&view, cx.timeout, &cx));
        let seen = seen_of(&t);
        let mut trial = state.clone();
        let mut decision = rules::decide(&mut trial, &seen, &rules, &Standing::default());
        if matches!(decision, Decision::Failover { .. } | Decision::Hold { .. }) {
            if last.is_none() {
                last = Some(last_automatic(env.store.as_ref(), &name)?);
            }
            let (st, _) = standing_of(env.store.as_ref(), last.as_ref().unwrap())?;
            decision = rules::decide(&mut state, &seen, &rules, &st);
        } else {
            state = trial;
        }
        let text = describe(&decision);
        if req.once {
            env.reporter.report(&Progress::Log {
                step: vec![],
                message: t.table.trim_end().to_string(),
            });
        }
        if text != last_said || req.once {
            env.reporter.report(&Progress::Watch {
                decision: decision.kind().into(),
                message: text.clone(),
            });
        }
        match &decision {
            Decision::Hold { region, why, .. } if alert_key(&decision) != last_alerted => {
                alert(
                    env,
                    &cx,
                    &inv,
                    &format!("runbook watch: {region} would be failed over, but {why}"),
                );
            }
            Decision::Returned {
                region, primary, ..
            } if alert_key(&decision) != last_alerted => {
                alert(
                    env,
                    &cx,
                    &inv,
                    &format!(
                        "runbook watch: {region}'s database came back writable beside the primary {primary}: writes it takes never reach {primary}. Fence it or make it a standby: {}",
                        cx.invocation.run("rejoin", &format!(" --var region={region}"))
                    ),
                );
            }
            Decision::Fence {
                region, signals, ..
            } if !(req.dry_run && acted_dry) => {
                let Some(fencer) = &fencer else {
                    unreachable!("fencing is off without a fence runbook")
                };
                let trigger = json!({
                    "by": WATCHER,
                    "deployment": name,
                    "action": "fence",
                    "region": region,
                    "signals": signals,
                    "observation": serde_json::to_value(&seen).unwrap_or(Value::Null),
                    "table": t.table,
                });
                let vars = [("region".to_string(), region.clone())].into();
                let result = start(env, &req, fencer, vars, trigger);
                if let Err(Error::Interrupted { asked: Some(_), .. }) = &result {
                    env.cancel.store(false, Ordering::SeqCst);
                }
                acted_dry = req.dry_run;
                match result {
                    Ok(()) => {
                        alerted_failure = None;
                        say(env, format!("the fence of {region} ended; watching"));
                    }
                    Err(e) => {
                        let text = format!(
                            "the fence of {region}, a former primary that came back writable, did not happen: {}",
                            e.one_line(&req.store_flag)
                        );
                        say(env, text.clone());
                        let told = alerted_failure.is_some_and(|(code, at)| {
                            code == e.exit_code() && at.elapsed() < REMIND
                        });
                        if !told {
                            alert(env, &cx, &inv, &format!("runbook watch: {text}"));
                            alerted_failure = Some((e.exit_code(), Instant::now()));
                        }
                    }
                }
                state = rules::State::default();
            }
            Decision::Failover { region, signals } if !(req.dry_run && acted_dry) => {
                let trigger = json!({
                    "by": WATCHER,
                    "deployment": name,
                    "region": region,
                    "signals": signals,
                    "observation": serde_json::to_value(&seen).unwrap_or(Value::Null),
                    "table": t.table,
                });
                let attempted_at = journal::unix_ms();
                let mut vars = rules.vars.clone();
                vars.insert("from".to_string(), region.to_string());
                if rules.approve_within_s > 0 && !req.dry_run {
                    vars.insert("approve_first".to_string(), "true".to_string());
                }
                let result = start(env, &req, &req.runbook, vars, trigger);
                // Stopped from elsewhere (`runbook stop`), the run shared this watcher's
                // Ctrl-C flag: the run stops, the watcher goes on (held until --ack).
                if let Err(Error::Interrupted { asked: Some(_), .. }) = &result {
                    env.cancel.store(false, Ordering::SeqCst);
                }
                // A run it kept is the last automatic failover now, found again when needed;
                // a lock's refusal kept none (and comes back every round while a maintenance
                // holds it): no scan of the store for it.
                let refused_by_lock =
                    matches!(result, Err(Error::Locked { .. } | Error::Claimed(_)));
                if !refused_by_lock {
                    last = None;
                }
                acted_dry = req.dry_run;
                match result {
                    Ok(()) => {
                        alerted_failure = None;
                        say(env, format!("the failover of {region} ended; watching"))
                    }
                    Err(Error::Paused {
                        next: Next::Approve { run },
                        ..
                    }) if rules.approve_within_s > 0 => {
                        await_approval(env, &cx, &inv, &run, region, &rules, &req.store_flag)?
                    }
                    Err(e) => {
                        // Started: a run was kept (it failed, or stopped mid-way). Not: it was
                        // refused before its first step (a lock, its parameters, a mistake
                        // found when it compiled). The last automatic failover says, found
                        // here once for the next rounds too.
                        if !refused_by_lock {
                            last = last_automatic(env.store.as_ref(), &name).ok();
                        }
                        let started = !refused_by_lock
                            && last
                                .as_ref()
                                .and_then(Option::as_ref)
                                .is_some_and(|(_, at)| *at + 2 >= attempted_at);
                        // With what to do next: resume the run, or, refused, wait for the
                        // holder, stop it, or resume or abandon the run that claims the lock.
                        let mut text = format!(
                            "the failover of {region} {}: {}",
                            if started {
                                "did not finish"
                            } else {
                                "could not start"
                            },
                            e.one_line(&req.store_flag)
                        );
                        if started && e.next().is_none() {
                            text.push_str(&format!("; `runbook runs{}` lists it", req.store_flag));
                        }
                        // The runbook's failure handler may have told the team already, with
                        // where it stopped and how it goes on: once is enough.
                        let told_by_run = started
                            && last
                                .as_ref()
                                .and_then(Option::as_ref)
                                .and_then(|(run, _)| env.store.read(run).ok())
                                .is_some_and(|l| rules::told_in_last_session(&l.records));
                        if told_by_run {
                            say(
                                env,
                                format!("{text} (the run told the team on Slack itself)"),
                            );
                        } else {
                            say(env, text.clone());
                        }
                        // A person has to act: tell the team, once for the same refusal.
                        let told = told_by_run
                            || alerted_failure.is_some_and(|(code, at)| {
                                code == e.exit_code() && at.elapsed() < REMIND
                            });
                        if !told {
                            alert(env, &cx, &inv, &format!("runbook watch: {text}"));
                            alerted_failure = Some((e.exit_code(), Instant::now()));
                        }
                    }
                }
                state = rules::State::default();
            }
            Decision::Quiet => acted_dry = false,
            _ => {}
        }
        last_said = text;
        last_alerted = alert_key(&decision);
        if req.once || env.cancel.load(Ordering::SeqCst) {
            break;
        }
        if sleep(env, req.interval.saturating_sub(started.elapsed())) {
            break;
        }
    }
    guard.release();
    Ok(())
}

/// How often the team is told again of automatic failovers that keep being refused.
const REMIND: Duration = Duration::from_secs(600);

/// Approval mode: the failover run paused for approval. Alert, wait for a person to resume it
/// with --approve; past the deadline abandon it (nothing was changed: it pauses before any
/// change).
fn await_approval(
    env: &Env,
    cx: &Cx,
    inv: &Inventory,
    run: &str,
    region: &str,
    rules: &Rules,
    store_flag: &str,
) -> Result<(), Error> {
    let resume = Next::Approve { run: run.into() }.render(store_flag);
    let ask = format!(
        "runbook watch: the failover of {region} waits for approval — `{resume}` within {} s, or it is abandoned",
        rules.approve_within_s
    );
    say(env, ask.clone());
    alert(env, cx, inv, &ask);
    let deadline = Instant::now() + Duration::from_secs(rules.approve_within_s);
    loop {
        let status = runner::summarize(run, &env.store.read(run)?.records).status;
        if status != journal::RunStatus::Paused {
            say(
                env,
                format!("the failover run {run} was taken up ({status}); watching"),
            );
            return Ok(());
        }
        if Instant::now() >= deadline {
            let why = format!("not approved within {} s", rules.approve_within_s);
            runner::abandon(
                env.store.as_ref(),
                run,
                Some(why.clone()),
                &Operator {
                    name: WATCHER.into(),
                    host: env.operator.host.clone(),
                },
                store_flag,
            )?;
            let text = format!("runbook watch: the failover of {region} was {why}: run {run} abandoned, nothing changed");
            say(env, text.clone());
            alert(env, cx, inv, &text);
            return Ok(());
        }
        if sleep(env, Duration::from_millis(200)) {
            return Ok(());
        }
    }
}

/// Sleeps, waking for Ctrl-C; true when stopped.
fn sleep(env: &Env, d: Duration) -> bool {
    let end = Instant::now() + d;
    while Instant::now() < end {
        if env.cancel.load(Ordering::SeqCst) {
            return true;
        }
        std::thread::sleep(
            Duration::from_millis(50).min(end.saturating_duration_since(Instant::now())),
        );
    }
    env.cancel.load(Ordering::SeqCst)
}

fn describe(d: &Decision) -> String {
    match d {
        Decision::Quiet => "all quiet".into(),
        Decision::Watching { region, signals } => format!(
            "watching {region}: {} — not yet enough to act",
            signals.join(", ")
        ),
        Decision::Hold {
            region,
            signals,
            why,
            ..
        } => format!(
            "HOLD {region}: {}{why}",
            if signals.is_empty() {
                String::new()
            } else {
                format!("{} — but ", signals.join(", "))
            }
        ),
        Decision::Failover { region, signals } => {
            format!("FAILOVER {region}: {}", signals.join(", "))
        }
        Decision::Fence {
            region, signals, ..
        } => format!(
            "FENCE {region}: a former primary that came back — {}",
            signals.join(", ")
        ),
        Decision::Returned {
            region, signals, ..
        } => format!(
            "RETURNED {region}: a former primary that came back — {}; fence_returned = false: a person fences or rejoins it",
            signals.join(", ")
        ),
    }
}

/// What an alert of `d` is about: the same key, the same alert — the region and the guard rail,
/// not the counts in its text (observations in a row, seconds since the last failover). Empty
/// for a decision that alerts nothing.
fn alert_key(d: &Decision) -> String {
    match d {
        Decision::Hold { region, rail, .. } => format!("hold {region}: {rail}"),
        Decision::Returned {
            region, primary, ..
        } => format!("returned {region} beside {primary}"),
        _ => String::new(),
    }
}

/// A line to the team's Slack, when the inventory names one.
fn alert(env: &Env, cx: &Cx, inv: &Inventory, text: &str) {
    let Some(webhook) = inv.value["notify"].get("slack_webhook") else {
        return;
    };
    let registry = crate::action::Registry::standard();
    let Some(action) = registry.get("notify", "slack") else {
        return;
    };
    let Ok(prepared) = action.prepare(json!({ "webhook": webhook, "text": text })) else {
        return;
    };
    let cx = Cx {
        timeout: Duration::from_secs(10),
        ..cx.clone()
    };
    if let Err(e) = env.rt.block_on((prepared.run)(cx)) {
        say(env, format!("the alert did not reach Slack: {}", e.message));
    }
}

/// Starts a runbook (the failover, or the fence) as a run of its own, the watcher its operator.
fn start(
    env: &Env,
    req: &WatchRequest,
    runbook: &Path,
    vars: std::collections::BTreeMap<String, String>,
    trigger: Value,
) -> Result<(), Error> {
    let run_env = Env {
        store: env.store.clone(),
        reporter: env.reporter.clone(),
        redactor: env.redactor.clone(),
        cancel: env.cancel.clone(),
        operator: Operator {
            name: WATCHER.into(),
            host: env.operator.host.clone(),
        },
        rt: env.rt.clone(),
        store_flag: env.store_flag.clone(),
    };
    runner::run(
        &run_env,
        RunRequest {
            script: runbook.to_path_buf(),
            dry_run: req.dry_run,
            offline: false,
            yes: false,
            vars,
            inventory: Some(req.inventory.clone()),
            assume: None,
            trigger: (!req.dry_run).then_some(trigger),
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_alert_is_about_its_reason_not_its_counts() {
        let hold = |signals: &[&str], rail: &'static str, why: &str| Decision::Hold {
            region: "us".into(),
            signals: signals.iter().map(|s| s.to_string()).collect(),
            rail,
            why: why.into(),
        };
        let returned = |n: u32| Decision::Returned {
            region: "us".into(),
            primary: "eu".into(),
            signals: vec![format!("database writable ({n} observations in a row)")],
        };
        let cooldown = |s: u32| {
            hold(
                &["health failing (4 observations in a row)"],
                "cooldown",
                &format!("within the cooldown: the last automatic failover started {s} s ago (cooldown 600 s)"),
            )
        };
        let unacked = hold(
            &["health failing (3 observations in a row)"],
            "unacknowledged",
            "an automatic failover ran and nobody has acknowledged it yet",
        );
        // (a, b, the same alert)
        let cases: Vec<(&str, Decision, Decision, bool)> = vec![
            ("a hold that lasts", cooldown(12), cooldown(13), true),
            (
                "its signals' counts grow",
                hold(
                    &["health failing (3 observations in a row)"],
                    "no_standby",
                    "x",
                ),
                hold(
                    &["health failing (9 observations in a row)"],
                    "no_standby",
                    "x",
                ),
                true,
            ),
            ("another reason", cooldown(12), unacked.clone(), false),
            (
                "a returned primary that lasts",
                returned(1),
                returned(7),
                true,
            ),
            (
                "a hold, then a returned primary",
                unacked,
                returned(1),
                false,
            ),
        ];
        for (what, a, b, same) in cases {
            assert_eq!(alert_key(&a) == alert_key(&b), same, "{what}");
            assert!(!alert_key(&a).is_empty(), "{what}");
        }
        assert_eq!(alert_key(&Decision::Quiet), "");
    }
}
