//! The watcher's decision, pure: from each observation of the deployment and what it saw
//! before, whether to do nothing, alert, hold, fail over the primary's region, or fence a
//! former primary that came back writable.
//!
//! Its conditions are signals, each with hysteresis (it counts only after N
//! observations in a row; one good observation resets it, so a flapping endpoint never
//! counts): the health endpoint failing, answering slower than the latency limit, the database
//! unreachable or read-only, Redis unreachable. Signals of the same endpoint are one source
//! (a failing and a slow health check are the same witness); a failover needs `agree` sources
//! at once — by default two: the health endpoint *and* the database, say.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// The `[watch]` table of the inventory; every key optional.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct Rules {
    /// Consecutive failed health checks (an error or a non-2xx answer).
    pub health_failures: u32,
    /// Consecutive observations with the primary's database unreachable or read-only.
    pub database_failures: u32,
    /// Consecutive observations with the primary's Redis unreachable.
    pub redis_failures: u32,
    /// A health answer slower than this many milliseconds counts as a failed check.
    pub max_latency_ms: u64,
    /// How many independent sources (health endpoint, database, Redis) must agree.
    pub agree: u32,
    /// After an automatic failover, nothing is started again for this many seconds, and not at
    /// all until a person acknowledges it (`runbook watch --ack`).
    pub cooldown_s: u64,
    /// Approval mode: more than 0, the runbook runs with `--var approve_first=true`, so it
    /// pauses for approval once its target is chosen, before any change; the watcher alerts and
    /// waits this many seconds for `runbook resume RUN --approve`, then abandons the run.
    pub approve_within_s: u64,
    /// Parameters for the runbook (`--var NAME=VALUE`), besides `from` (the failing region).
    /// Default: `check_interval = "200ms"` — the runbook checks the health endpoint three
    /// more times itself before acting; the watcher's observations already waited.
    pub vars: BTreeMap<String, String>,
    /// A former primary that comes back writable beside the primary (on an older timeline),
    /// seen for `database_failures` observations in a row, is fenced by `fence_runbook`
    /// (`--var region=R`). False: the team is alerted, and a person fences or rejoins it.
    pub fence_returned: bool,
    /// The runbook that fences it; default `fence.rhai` beside the failover runbook.
    pub fence_runbook: Option<String>,
}

impl Default for Rules {
    fn default() -> Self {
        Rules {
            health_failures: 3,
            database_failures: 3,
            redis_failures: 3,
            max_latency_ms: 10_000,
            agree: 2,
            cooldown_s: 600,
            approve_within_s: 0,
            vars: [("check_interval".to_string(), "200ms".to_string())].into(),
            fence_returned: true,
            fence_runbook: None,
        }
    }
}

/// A region's health endpoint as one probe saw it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Health {
    Ok,
    /// A non-2xx answer or no answer.
    Failing,
    /// 2xx, slower than the limit.
    Slow,
    /// No health endpoint in the inventory.
    Unchecked,
}

/// One region as one probe saw it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RegionSeen {
    pub health: Health,
    pub latency_ms: Option<u64>,
    /// "primary", "standby", "unreachable", "refused" (it answers but refuses the login:
    /// running, not down) or "absent".
    pub database: String,
    pub writable: bool,
    pub timeline: Option<i64>,
    /// A standby's received WAL position, in bytes.
    pub received: Option<u64>,
    /// None: no Redis in the inventory.
    pub redis_up: Option<bool>,
}

/// One observation of the deployment.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Seen {
    /// The region whose database is the primary (the one writable, else the one the standbys
    /// follow).
    pub primary: Option<String>,
    pub writable: Vec<String>,
    /// Among several writable primaries, the one on the newest timeline (the others are
    /// former primaries that came back); None when timelines do not tell them apart.
    pub newest: Option<String>,
    pub regions: BTreeMap<String, RegionSeen>,
}

/// What the watcher does after an observation.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "decision", rename_all = "snake_case")]
pub enum Decision {
    /// Nothing is wrong enough.
    Quiet,
    /// Some signals count, not yet enough to act (sources that agree, observations in a row).
    Watching {
        region: String,
        signals: Vec<String>,
    },
    /// The rule fired, but a guard rail holds the failover back: say so (alert).
    Hold {
        region: String,
        signals: Vec<String>,
        /// Which guard rail: "ambiguous", "unacknowledged", "cooldown" or "no_standby". One
        /// alert per rail while it holds, whatever the counts in `why` and `signals` do.
        rail: &'static str,
        why: String,
    },
    /// Fail over from `region`.
    Failover {
        region: String,
        signals: Vec<String>,
    },
    /// `region` is a former primary that came back writable beside `primary`: fence it.
    Fence {
        region: String,
        primary: String,
        signals: Vec<String>,
    },
    /// As `Fence`, with fencing turned off (`fence_returned = false`): say so (alert).
    Returned {
        region: String,
        primary: String,
        signals: Vec<String>,
    },
}

impl Decision {
    /// "quiet", "watching", "hold", "failover", "fence" or "returned".
    pub fn kind(&self) -> &'static str {
        match self {
            Decision::Quiet => "quiet",
            Decision::Watching { .. } => "watching",
            Decision::Hold { .. } => "hold",
            Decision::Failover { .. } => "failover",
            Decision::Fence { .. } => "fence",
            Decision::Returned { .. } => "returned",
        }
    }
}

/// What the watcher remembers between observations.
#[derive(Debug, Clone, Default)]
pub struct State {
    /// (region, signal) → observations in a row.
    streaks: BTreeMap<(String, &'static str), u32>,
}

/// The guard rails that stand outside one observation: a failover still cooling down, or one
/// not yet acknowledged.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Standing {
    /// Seconds since the last automatic failover started, if any.
    pub since_last_failover_s: Option<u64>,
    /// The last automatic failover was acknowledged by a person.
    pub acknowledged: bool,
}

/// "1 observation in a row", "3 observations in a row".
fn in_a_row(n: u32) -> String {
    format!("{n} observation{} in a row", if n == 1 { "" } else { "s" })
}

/// The signal of a former primary that came back writable.
const RETURNED: &str = "came back writable";

fn bump(state: &mut State, region: &str, signal: &'static str, on: bool) -> u32 {
    let e = state
        .streaks
        .entry((region.to_string(), signal))
        .or_insert(0);
    *e = if on { *e + 1 } else { 0 };
    *e
}

/// Takes in one observation and decides.
pub fn decide(state: &mut State, seen: &Seen, rules: &Rules, standing: &Standing) -> Decision {
    // Every region's streaks move, so that a region that becomes primary starts from what was
    // really seen of it.
    let mut firing: BTreeMap<String, Vec<(&'static str, &'static str)>> = BTreeMap::new();
    for (name, r) in &seen.regions {
        let slow = r.health == Health::Slow
            || (r.health == Health::Ok && r.latency_ms.is_some_and(|l| l > rules.max_latency_ms));
        let checks: [(&'static str, &'static str, bool, u32); 4] = [
            (
                "health",
                "health failing",
                r.health == Health::Failing,
                rules.health_failures,
            ),
            (
                "health",
                "slower than the limit",
                slow,
                rules.health_failures,
            ),
            (
                "database",
                "database unreachable or read-only",
                r.database == "unreachable" || (r.database == "primary" && !r.writable),
                rules.database_failures,
            ),
            (
                "redis",
                "Redis unreachable",
                r.redis_up == Some(false),
                rules.redis_failures,
            ),
        ];
        for (source, signal, on, need) in checks {
            if bump(state, name, signal, on) >= need.max(1) {
                firing
                    .entry(name.clone())
                    .or_default()
                    .push((source, signal));
            }
        }
    }
    // A former primary that came back: writable beside the primary on a newer timeline. It is
    // dealt with before anything else — fenced, or alerted when fencing is off — and a
    // failover waits until one primary is left.
    let mut returned: Option<(String, u32)> = None;
    for (name, r) in &seen.regions {
        let on = seen.writable.len() > 1
            && r.writable
            && seen.newest.as_ref().is_some_and(|n| n != name);
        let n = bump(state, name, RETURNED, on);
        if on && returned.is_none() {
            returned = Some((name.clone(), n));
        }
    }
    if let (Some((region, n)), Some(newest)) = (returned, &seen.newest) {
        let tl = |r: &str| {
            seen.regions[r]
                .timeline
                .map_or_else(|| "?".to_string(), |t| t.to_string())
        };
        let signals = vec![format!(
            "database writable on timeline {} beside the primary {newest} on timeline {} ({})",
            tl(&region),
            tl(newest),
            in_a_row(n)
        )];
        let primary = newest.clone();
        return if !rules.fence_returned {
            Decision::Returned {
                region,
                primary,
                signals,
            }
        } else if n >= rules.database_failures.max(1) {
            Decision::Fence {
                region,
                primary,
                signals,
            }
        } else {
            Decision::Watching { region, signals }
        };
    }
    let Some(primary) = seen.primary.clone() else {
        if seen.writable.len() > 1 {
            return Decision::Hold {
                region: seen.writable.join(", "),
                signals: vec![],
                rail: "ambiguous",
                why: format!(
                    "{} writable primaries ({}): the topology is ambiguous; nothing is automatic until a person resolves it",
                    seen.writable.len(),
                    seen.writable.join(", ")
                ),
            };
        }
        return Decision::Quiet;
    };
    let Some(fired) = firing.get(&primary) else {
        return Decision::Quiet;
    };
    let mut sources: Vec<&str> = fired.iter().map(|(s, _)| *s).collect();
    sources.dedup();
    let signals: Vec<String> = fired
        .iter()
        .map(|(_, s)| {
            let n = state
                .streaks
                .get(&(primary.clone(), *s))
                .copied()
                .unwrap_or(0);
            format!("{s} ({})", in_a_row(n))
        })
        .collect();
    if (sources.len() as u32) < rules.agree.max(1) {
        return Decision::Watching {
            region: primary,
            signals,
        };
    }
    let hold = |rail: &'static str, why: String| Decision::Hold {
        region: primary.clone(),
        signals: signals.clone(),
        rail,
        why,
    };
    if seen.writable.len() > 1 {
        return hold(
            "ambiguous",
            format!(
                "{} writable primaries ({}): the topology is ambiguous",
                seen.writable.len(),
                seen.writable.join(", ")
            ),
        );
    }
    if let Some(since) = standing.since_last_failover_s {
        if !standing.acknowledged {
            return hold(
                "unacknowledged",
                "an automatic failover ran and nobody has acknowledged it yet (runbook watch --ack)"
                    .into(),
            );
        }
        if since < rules.cooldown_s {
            return hold(
                "cooldown",
                format!(
                    "within the cooldown: the last automatic failover started {since} s ago (cooldown {} s)",
                    rules.cooldown_s
                ),
            );
        }
    }
    // A standby to fail over to: one that answers, on the primary's timeline. (How far behind
    // it may be is the runbook's rule: max_lag_bytes; it refuses before any change.)
    let p = &seen.regions[&primary];
    let candidates = seen
        .regions
        .iter()
        .filter(|(n, r)| {
            *n != &primary
                && r.database == "standby"
                && (p.timeline.is_none() || r.timeline.is_none() || r.timeline == p.timeline)
        })
        .count();
    if candidates == 0 {
        return hold(
            "no_standby",
            format!("no reachable standby on {primary}'s timeline to fail over to"),
        );
    }
    Decision::Failover {
        region: primary,
        signals,
    }
}

/// Whether a run's last session told Slack of its failure itself: its failure handler
/// (`on_failure`) sent a `notify::slack` that finished. The watcher then does not say it again.
pub fn told_in_last_session(records: &[crate::journal::Record]) -> bool {
    use crate::journal::{in_failure_step, Event};
    let mut sent = std::collections::HashSet::new();
    let mut told = false;
    for r in records {
        match &r.event {
            Event::RunStarted { .. } | Event::RunResumed { .. } => {
                sent.clear();
                told = false;
            }
            Event::ActionStarted {
                step, seq, action, ..
            } if action == "notify::slack" && in_failure_step(step) => {
                sent.insert((step.clone(), *seq));
            }
            Event::ActionFinished { step, seq, .. } if sent.contains(&(step.clone(), *seq)) => {
                told = true;
            }
            _ => {}
        }
    }
    told
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_run_told_the_team_when_its_handler_s_slack_message_went_out_this_session() {
        use crate::journal::{Event, Record};
        use serde_json::json;
        let rec = |event: Event| Record {
            v: 1,
            n: 0,
            at: String::new(),
            event,
        };
        let start = || {
            rec(Event::RunStarted {
                run_id: "r1".into(),
                runbook: "r.rhai".into(),
                runbook_sha256: String::new(),
                params: Default::default(),
                inventory_file: None,
                inventory: json!({}),
                engine_version: String::new(),
                operator: "o".into(),
                host: "h".into(),
                pid: 1,
                trigger: None,
                invocation: None,
            })
        };
        let resumed = || {
            rec(serde_json::from_value(json!({"event": "run_resumed", "runbook_sha256": "", "engine_version": "", "operator": "o", "host": "h", "pid": 2})).unwrap())
        };
        let call = |step: &str, action: &str| {
            rec(Event::ActionStarted {
                step: vec![step.into()],
                seq: 1,
                action: action.into(),
                input: json!({}),
                input_hash: String::new(),
                write: true,
                idempotent: false,
                notice: true,
            })
        };
        let done = |step: &str| {
            rec(serde_json::from_value(json!({"event": "action_finished", "step": [step], "seq": 1, "output": {}, "elapsed_ms": 1})).unwrap())
        };
        let failed = |step: &str| {
            rec(serde_json::from_value(json!({"event": "action_failed", "step": [step], "seq": 1, "error": "503", "elapsed_ms": 1})).unwrap())
        };
        let h = "on failure (session 1)";
        let cases: Vec<(&str, Vec<Record>, bool)> = vec![
            ("no handler ran", vec![start()], false),
            (
                "sent",
                vec![start(), call(h, "notify::slack"), done(h)],
                true,
            ),
            (
                "Slack refused it",
                vec![start(), call(h, "notify::slack"), failed(h)],
                false,
            ),
            (
                "cut off while sending",
                vec![start(), call(h, "notify::slack")],
                false,
            ),
            (
                "a webhook, not Slack",
                vec![start(), call(h, "notify::webhook"), done(h)],
                false,
            ),
            (
                "Slack, but not from the handler",
                vec![start(), call("alert", "notify::slack"), done("alert")],
                false,
            ),
            (
                "sent in an earlier session only",
                vec![start(), call(h, "notify::slack"), done(h), resumed()],
                false,
            ),
        ];
        for (what, records, want) in cases {
            assert_eq!(told_in_last_session(&records), want, "{what}");
        }
    }

    fn region(health: Health, db: &str, redis: Option<bool>) -> RegionSeen {
        RegionSeen {
            health,
            latency_ms: Some(5),
            database: db.into(),
            writable: db == "primary",
            timeline: Some(1),
            received: Some(100),
            redis_up: redis,
        }
    }

    /// us primary with (health, database, redis), eu a healthy standby.
    fn seen(health: Health, db: &str, redis: Option<bool>) -> Seen {
        let mut regions = BTreeMap::new();
        regions.insert("us".to_string(), region(health, db, redis));
        regions.insert("eu".to_string(), region(Health::Ok, "standby", Some(true)));
        Seen {
            primary: Some("us".into()),
            writable: if db == "primary" {
                vec!["us".into()]
            } else {
                vec![]
            },
            newest: None,
            regions,
        }
    }

    /// Feeds observations in order; the decision after each.
    fn run(obs: &[Seen], rules: &Rules, standing: &Standing) -> Vec<&'static str> {
        let mut state = State::default();
        obs.iter()
            .map(|o| decide(&mut state, o, rules, standing).kind())
            .collect()
    }

    #[test]
    fn hysteresis_and_two_sources() {
        let ok = seen(Health::Ok, "primary", Some(true));
        let sick = seen(Health::Failing, "primary", Some(true));
        let down = seen(Health::Failing, "unreachable", Some(true));
        let db_only = seen(Health::Ok, "unreachable", Some(true));
        let all_down = seen(Health::Failing, "unreachable", Some(false));
        // Its database answers but refuses the login: running, not a database failure.
        let refusing = seen(Health::Failing, "refused", Some(true));
        let fenced = {
            let mut s = seen(Health::Failing, "primary", Some(true));
            s.regions.get_mut("us").unwrap().writable = false;
            s.writable.clear();
            s
        };
        let rules = Rules::default();
        let none = Standing::default();
        let cases: Vec<(&str, Vec<Seen>, Vec<&str>)> = vec![
            ("healthy", vec![ok.clone(); 5], vec!["quiet"; 5]),
            // Flapping every other check: the streak never reaches 3.
            (
                "flapping health",
                vec![
                    sick.clone(),
                    ok.clone(),
                    sick.clone(),
                    ok.clone(),
                    sick.clone(),
                    ok.clone(),
                ],
                vec!["quiet"; 6],
            ),
            // One source alone, however long, is watched, never acted on.
            (
                "health only",
                vec![sick.clone(); 5],
                vec!["quiet", "quiet", "watching", "watching", "watching"],
            ),
            (
                "database only",
                vec![db_only.clone(); 4],
                vec!["quiet", "quiet", "watching", "watching"],
            ),
            // Health and database agree from the third observation.
            (
                "region down",
                vec![down.clone(); 4],
                vec!["quiet", "quiet", "failover", "failover"],
            ),
            (
                "health failing, the database refusing the login",
                vec![refusing.clone(); 4],
                vec!["quiet", "quiet", "watching", "watching"],
            ),
            (
                "fenced and failing",
                vec![fenced.clone(); 3],
                vec!["quiet", "quiet", "failover"],
            ),
            // A good observation in between starts the count again.
            (
                "reset",
                vec![
                    down.clone(),
                    down.clone(),
                    ok.clone(),
                    down.clone(),
                    down.clone(),
                    down.clone(),
                ],
                vec!["quiet", "quiet", "quiet", "quiet", "quiet", "failover"],
            ),
            (
                "all three",
                vec![all_down.clone(); 3],
                vec!["quiet", "quiet", "failover"],
            ),
        ];
        for (name, obs, want) in cases {
            assert_eq!(run(&obs, &rules, &none), want, "{name}");
        }
        // agree = 1: one source is enough; health_failures = 1: at once.
        let eager = Rules {
            agree: 1,
            health_failures: 1,
            ..Rules::default()
        };
        assert_eq!(
            run(std::slice::from_ref(&sick), &eager, &none),
            ["failover"]
        );
    }

    #[test]
    fn guard_rails_hold_a_fired_rule() {
        let down = seen(Health::Failing, "unreachable", Some(true));
        let rules = Rules::default();
        let three = vec![down.clone(); 3];
        let cases: Vec<(&str, Standing, &str)> = vec![
            ("never failed over", Standing::default(), "failover"),
            (
                "not acknowledged",
                Standing {
                    since_last_failover_s: Some(3600),
                    acknowledged: false,
                },
                "hold",
            ),
            (
                "acknowledged, in the cooldown",
                Standing {
                    since_last_failover_s: Some(60),
                    acknowledged: true,
                },
                "hold",
            ),
            (
                "acknowledged, after the cooldown",
                Standing {
                    since_last_failover_s: Some(601),
                    acknowledged: true,
                },
                "failover",
            ),
        ];
        for (name, standing, want) in cases {
            assert_eq!(
                run(&three, &rules, &standing).last().copied(),
                Some(want),
                "{name}"
            );
        }
        // No standby that answers: hold, saying why.
        let mut lonely = down.clone();
        lonely.regions.get_mut("eu").unwrap().database = "unreachable".into();
        let mut state = State::default();
        let mut last = Decision::Quiet;
        for _ in 0..3 {
            last = decide(&mut state, &lonely, &rules, &Standing::default());
        }
        match last {
            Decision::Hold { why, .. } => assert!(why.contains("no reachable standby"), "{why}"),
            other => panic!("{other:?}"),
        }
        // Two writable primaries: hold at once, whatever else.
        let mut two = seen(Health::Ok, "primary", Some(true));
        two.primary = None;
        two.writable = vec!["eu".into(), "us".into()];
        assert_eq!(run(&[two], &rules, &Standing::default()), ["hold"]);
    }

    /// eu the primary on timeline 2 after a failover; us, the former primary, back writable
    /// on timeline 1 (or, `fenced`, read-only).
    fn came_back(fenced: bool) -> Seen {
        let mut regions = BTreeMap::new();
        let mut eu = region(Health::Ok, "primary", Some(true));
        eu.timeline = Some(2);
        let mut us = region(Health::Ok, "primary", Some(true));
        us.writable = !fenced;
        regions.insert("eu".to_string(), eu);
        regions.insert("us".to_string(), us);
        regions.insert("ap".to_string(), region(Health::Ok, "standby", Some(true)));
        Seen {
            primary: fenced.then(|| "eu".into()),
            writable: if fenced {
                vec!["eu".into()]
            } else {
                vec!["eu".into(), "us".into()]
            },
            newest: (!fenced).then(|| "eu".into()),
            regions,
        }
    }

    #[test]
    fn a_former_primary_that_came_back_is_fenced_once_seen_long_enough() {
        let back = came_back(false);
        let fenced = came_back(true);
        let mut failing_primary = back.clone();
        let eu = failing_primary.regions.get_mut("eu").unwrap();
        eu.health = Health::Failing;
        eu.redis_up = Some(false);
        let mut one_timeline = back.clone();
        one_timeline.regions.get_mut("eu").unwrap().timeline = Some(1);
        one_timeline.newest = None;
        let rules = Rules::default();
        let off = Rules {
            fence_returned: false,
            ..Rules::default()
        };
        let cases: Vec<(&str, &Rules, Vec<Seen>, Vec<&str>)> = vec![
            // Counted as a database signal: database_failures observations in a row.
            (
                "came back",
                &rules,
                vec![back.clone(); 4],
                vec!["watching", "watching", "fence", "fence"],
            ),
            // Fenced (by the watcher's run or by a person), one primary is left: quiet.
            (
                "fenced",
                &rules,
                vec![back.clone(), back.clone(), back.clone(), fenced.clone()],
                vec!["watching", "watching", "fence", "quiet"],
            ),
            // One observation without it starts the count again.
            (
                "seen once, then not",
                &rules,
                vec![back.clone(), fenced.clone(), back.clone(), back.clone()],
                vec!["watching", "quiet", "watching", "watching"],
            ),
            // Before any failover of the primary: one primary first.
            (
                "the primary fails meanwhile",
                &rules,
                vec![failing_primary.clone(); 3],
                vec!["watching", "watching", "fence"],
            ),
            // Fencing off: the team is told at once.
            ("fencing off", &off, vec![back.clone()], vec!["returned"]),
            // Timelines do not say which is current: a person decides.
            (
                "one timeline",
                &rules,
                vec![one_timeline.clone(); 3],
                vec!["hold", "hold", "hold"],
            ),
        ];
        for (name, rules, obs, want) in cases {
            assert_eq!(run(&obs, rules, &Standing::default()), want, "{name}");
        }
        let mut state = State::default();
        let mut last = Decision::Quiet;
        for _ in 0..3 {
            last = decide(&mut state, &back, &rules, &Standing::default());
        }
        assert_eq!(
            last,
            Decision::Fence {
                region: "us".into(),
                primary: "eu".into(),
                signals: vec![
                    "database writable on timeline 1 beside the primary eu on timeline 2 (3 observations in a row)".into()
                ],
            }
        );
    }

    #[test]
    fn the_inventory_table_is_checked() {
        let r: Rules = toml::from_str("health_failures = 5\nagree = 1\n").unwrap();
        assert_eq!(r.health_failures, 5);
        assert_eq!(r.database_failures, 3, "the others keep their defaults");
        let e = toml::from_str::<Rules>("health_fails = 5\n").unwrap_err();
        assert!(
            e.to_string().contains("unknown field `health_fails`"),
            "{e}"
        );
    }
}
