//! The work of each subcommand.

use std::collections::BTreeMap;
use std::io::IsTerminal;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;

use serde_json::{json, Value};

use super::arguments::{Arguments, Command, Output};
use crate::action::Registry;
use crate::action::COMMON_FIELDS;
use crate::error::{Error, Next};
use crate::journal::{self, show_path, DirStore, Event, PgStore, Store};
use crate::report::{human_ms, JsonReporter, PlainReporter, Reporter, TtyReporter};
use crate::runner::{self, Env, Inflight, Operator, ResumeRequest, RunRequest};
use crate::secret::Redactor;

/// `store_flag`: the store options this command was given, spelled into every command a next
/// step names (see `store_flag`).
pub fn dispatch(args: Arguments, redactor: &Redactor, store_flag: &str) -> Result<(), Error> {
    let store: Arc<dyn Store> = match &args.store {
        Some(url) => {
            let (store, password) = PgStore::open(url)?;
            if let Some(p) = password {
                redactor.add(&p);
            }
            Arc::new(store)
        }
        None => Arc::new(DirStore::new(args.state_dir.clone())),
    };
    // This run's resume hints also name the `--var`s a resume must be given again.
    let resume_flag = format!("{}{store_flag}", super::given_again(&args));
    match args.command {
        Command::Run {
            file,
            dry_run,
            offline,
            assume,
            vars,
            inventory,
            yes,
            output,
        } => {
            let vars = parse_vars(&vars)?;
            let env = env(store, &resume_flag, store_flag, output, redactor)?;
            let (rt, env) = env;
            let result = runner::run(
                &env,
                RunRequest {
                    script: file,
                    dry_run,
                    offline,
                    yes,
                    vars,
                    inventory,
                    assume,
                    trigger: None,
                },
            );
            drop(rt);
            result
        }
        Command::Resume {
            run_id,
            approve,
            yes,
            retry_inflight,
            skip_inflight,
            undo,
            vars,
            inventory,
            output,
        } => {
            let Some(run_id) = run_id else {
                return Err(which_run(store.as_ref(), "resume", store_flag));
            };
            // Read where it was given: a resume goes on in the folder its run started in.
            let inventory = inventory
                .map(|p| std::path::absolute(&p).unwrap_or(p))
                .map(|p| p.display().to_string());
            let run_id = resolve(store.as_ref(), &run_id)?;
            let vars = parse_vars(&vars)?;
            let inflight = if retry_inflight {
                Some(Inflight::Retry)
            } else if skip_inflight {
                Some(Inflight::Skip)
            } else {
                None
            };
            let (rt, env) = env(store, &resume_flag, store_flag, output, redactor)?;
            let result = runner::resume(
                &env,
                ResumeRequest {
                    run_id,
                    approve,
                    inflight,
                    yes,
                    undo,
                    vars,
                    inventory,
                },
            );
            drop(rt);
            result
        }
        Command::Abandon { run_id, reason } => {
            let Some(run_id) = run_id else {
                return Err(which_run(store.as_ref(), "abandon", store_flag));
            };
            let run_id = resolve(store.as_ref(), &run_id)?;
            let done = runner::abandon(
                store.as_ref(),
                &run_id,
                reason,
                &runner::Operator::current(),
                store_flag,
            )?;
            say!("{done}");
            Ok(())
        }
        Command::Stop {
            run_id,
            reason,
            wait,
        } => {
            let Some(run_id) = run_id else {
                return Err(which_running(store.as_ref(), store_flag));
            };
            let run_id = resolve(store.as_ref(), &run_id)?;
            let done = runner::stop(
                store.as_ref(),
                &run_id,
                reason,
                &runner::Operator::current(),
                wait,
            )?;
            say!("{done}");
            Ok(())
        }
        Command::Watch {
            inventory,
            runbook,
            interval,
            dry_run,
            once,
            ack,
            output,
        } => {
            if ack {
                let done = crate::watch::ack(
                    store.as_ref(),
                    &inventory,
                    &runner::Operator::current().name,
                )?;
                say!("{done}");
                return Ok(());
            }
            let (rt, env) = env(store, store_flag, store_flag, output, redactor)?;
            let result = crate::watch::watch(
                &env,
                crate::watch::WatchRequest {
                    inventory,
                    runbook,
                    interval,
                    dry_run,
                    once,
                    store_flag: store_flag.to_string(),
                },
            );
            drop(rt);
            result
        }
        Command::Check { files, params } => check(&files, params),
        Command::Prune {
            older_than,
            dry_run,
        } => prune(store.as_ref(), &older_than, dry_run, store_flag),
        Command::Runs { json, limit, all } => {
            runs(store.as_ref(), json, (!all).then_some(limit), store_flag)
        }
        Command::Log {
            run_id,
            runbook: true,
            ..
        } => {
            // As recorded, to the byte: it is written back over an edited runbook.
            let run_id = resolve(store.as_ref(), &run_id)?;
            super::write_out(store.script(&run_id)?.as_bytes())
        }
        Command::Log {
            run_id,
            json,
            follow,
            ..
        } => {
            let run_id = resolve(store.as_ref(), &run_id)?;
            log(store.as_ref(), &run_id, json, follow, store_flag)
        }
        Command::Report { run_id, html, json } => {
            let run_id = run_id.map(|id| resolve(store.as_ref(), &id)).transpose()?;
            report(store.as_ref(), run_id, html, json)
        }
        Command::Actions {
            definitions: Some(dir),
            ..
        } => definitions(&dir),
        Command::Actions { json, .. } => actions(json),
        #[cfg(feature = "stack")]
        Command::Stack { action } => super::stack::run(action),
    }
}

fn parse_vars(vars: &[String]) -> Result<BTreeMap<String, String>, Error> {
    let mut out = BTreeMap::new();
    for v in vars {
        let Some((k, val)) = v.split_once('=') else {
            return Err(Error::Usage(format!("--var {v}: write it as NAME=VALUE")));
        };
        let k = k.trim();
        if k.is_empty() {
            return Err(Error::Usage(format!("--var {v}: the name is empty")));
        }
        if out.insert(k.to_string(), val.to_string()).is_some() {
            return Err(Error::Usage(format!("--var {k} is given twice")));
        }
    }
    Ok(out)
}

fn reporter(output: Output, redactor: &Redactor, store_flag: &str) -> Arc<dyn Reporter> {
    match output {
        Output::Json => Arc::new(JsonReporter::new(
            Box::new(std::io::stdout()),
            redactor.clone(),
            store_flag.to_string(),
        )),
        Output::Text if std::io::stdout().is_terminal() && std::io::stdin().is_terminal() => {
            Arc::new(TtyReporter::new(redactor.clone()))
        }
        Output::Text => Arc::new(PlainReporter::new(
            Box::new(std::io::stdout()),
            redactor.clone(),
        )),
    }
}

/// First SIGINT/SIGTERM/SIGHUP: stop after the current action. Second: stop now. A hang-up
/// (the SSH session or terminal went away) stops the run as Ctrl-C would, instead of killing it
/// in the middle of a change: nobody is there to watch it or answer its approvals.
fn install_signals(cancel: Arc<AtomicBool>) {
    use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
    let Ok(mut signals) = signal_hook::iterator::Signals::new([SIGINT, SIGTERM, SIGHUP]) else {
        return;
    };
    let count = AtomicUsize::new(0);
    std::thread::spawn(move || {
        for signal in signals.forever() {
            if count.fetch_add(1, Ordering::SeqCst) == 0 {
                runner::stopped_by_signal(signal);
                cancel.store(true, Ordering::SeqCst);
                if signal == SIGHUP {
                    tell!("\nthe terminal went away (SIGHUP): stopping after the current action; the run stays resumable");
                } else {
                    tell!("\nstopping after the current action (press Ctrl-C again to stop at once; the run stays resumable)");
                }
            } else {
                crate::action::child::kill_running();
                tell!("\nstopped at once; the action in flight is recorded as such — `runbook resume` decides what to do with it");
                std::process::exit(crate::error::exit::INTERRUPTED);
            }
        }
    });
}

/// What a run needs of the command line. `flag`: what the reporter adds to the commands it
/// renders (the store options, and for a run the `--var`s a resume must be given again).
fn env(
    store: Arc<dyn Store>,
    flag: &str,
    store_flag: &str,
    output: Output,
    redactor: &Redactor,
) -> Result<(tokio::runtime::Runtime, Env), Error> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|e| Error::Io(format!("cannot start the async runtime: {e}")))?;
    let cancel = Arc::new(AtomicBool::new(false));
    install_signals(cancel.clone());
    let env = Env {
        store,
        reporter: reporter(output, redactor, flag),
        redactor: redactor.clone(),
        cancel,
        operator: Operator::current(),
        rt: rt.handle().clone(),
        store_flag: store_flag.to_string(),
    };
    Ok((rt, env))
}

fn check(given: &[std::path::PathBuf], params: bool) -> Result<(), Error> {
    let mut failed = 0;
    let mut files = Vec::new();
    let mut empty = Vec::new();
    for path in given {
        if !path.is_dir() {
            files.push(path.clone());
            continue;
        }
        let found = runbooks_below(path)?;
        if found.is_empty() {
            empty.push(format!(
                "the folder {} holds no runbook (.rhai file)",
                path.display()
            ));
        }
        files.extend(found);
    }
    for file in &files {
        match crate::script::check_file(file) {
            Ok(summary) => {
                say!("ok: {} ({summary})", file.display());
                if params {
                    for line in crate::script::parameter_lines(file) {
                        say!("  {line}");
                    }
                }
            }
            Err(problems) => {
                failed += 1;
                for p in &problems {
                    tell!("{}", p.render(""));
                }
            }
        }
    }
    if failed > 0 {
        empty.insert(
            0,
            format!("{failed} of {} runbooks have problems", files.len()),
        );
    }
    match empty.is_empty() {
        true => Ok(()),
        false => Err(Error::Usage(empty.join("; "))),
    }
}

/// The .rhai files below a folder, in name order, hidden folders (`.runbook`, `.git`) left out.
fn runbooks_below(dir: &std::path::Path) -> Result<Vec<std::path::PathBuf>, Error> {
    let unreadable =
        |e: std::io::Error| Error::Usage(format!("cannot read the folder {}: {e}", dir.display()));
    let mut entries: Vec<std::path::PathBuf> = std::fs::read_dir(dir)
        .map_err(unreadable)?
        .map(|e| e.map(|e| e.path()))
        .collect::<Result<_, _>>()
        .map_err(unreadable)?;
    entries.sort();
    let mut found = Vec::new();
    for path in entries {
        let hidden = path
            .file_name()
            .is_some_and(|n| n.to_string_lossy().starts_with('.'));
        if path.is_dir() && !hidden {
            found.extend(runbooks_below(&path)?);
        } else if path.is_file() && path.extension().is_some_and(|e| e == "rhai") {
            found.push(path);
        }
    }
    Ok(found)
}

/// A runbook's file name, as the run listings show it.
fn file_name(runbook: &str) -> String {
    std::path::Path::new(runbook)
        .file_name()
        .map(|f| f.to_string_lossy().into_owned())
        .unwrap_or_default()
}

/// The run an operator names: its whole id, or a part of it that only one run's id begins or
/// ends with (`3c1a` for 20261205-0936-3c1a; at least four characters). Several: refused,
/// listing them — never a guess.
fn resolve(store: &dyn Store, given: &str) -> Result<String, Error> {
    let ids = store.list()?;
    if ids.iter().any(|id| id == given) || given.chars().count() < 4 {
        return Ok(given.to_string());
    }
    let mut matching: Vec<&String> = ids
        .iter()
        .filter(|id| id.starts_with(given) || id.ends_with(given))
        .collect();
    match matching.len() {
        0 => Ok(given.to_string()),
        1 => Ok(matching.remove(0).clone()),
        n => Err(Error::Usage(format!(
            "'{given}' is part of {n} run ids ({}): give more of the one you mean",
            matching
                .iter()
                .map(|s| s.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        ))),
    }
}

/// `runbook resume` or `abandon` without a run: never a guess (at 3 a.m. the newest run is
/// not always the one meant), but the runs still open, each with the command for it. A run
/// that failed (or crashed) before changing anything is not open: a status run that found a
/// problem, a failover that refused to start. Running it again is the way on; they are
/// counted, not listed.
fn which_run(store: &dyn Store, verb: &str, store_flag: &str) -> Error {
    use crate::journal::RunStatus::{Crashed, Failed, Interrupted, Paused};
    let mut open = Vec::new();
    let mut unchanged = 0;
    for (id, loaded) in not_closed(store) {
        let Ok(loaded) = loaded else {
            continue;
        };
        let s = runner::summarize_in(store, &id, &loaded.records);
        // A run still running is neither: its own process is at it.
        let stopped = matches!(s.status, Paused | Interrupted | Failed | Crashed);
        if stopped && journal::claim_of(&loaded.records).is_none() {
            unchanged += 1;
        } else if stopped {
            let runbook = file_name(&s.runbook);
            let mut at = s.standing();
            if s.status == Paused {
                let reason = loaded.records.iter().rev().find_map(|r| match &r.event {
                    Event::RunPaused { reason } => Some(reason.as_str()),
                    _ => None,
                });
                if let Some(reason) = reason {
                    at.push_str(&format!(": {reason}"));
                }
            }
            // The command as the run awaits it: a run paused at an approval is continued with
            // --approve, one paused over a call in flight with the operator's choice.
            let command = if verb == "abandon" {
                format!("runbook abandon {}{store_flag} --reason \"...\"", s.run_id)
            } else {
                Next::resume(&s.run_id, journal::awaiting(&loaded.records)).render(store_flag)
            };
            let line = format!(
                "{}  {runbook}, started {}, {at}\n      {command}",
                s.run_id,
                s.started_minute(),
            );
            open.push((s.started, line));
        }
    }
    // In the order they started, as `runbook runs` lists them.
    open.sort();
    let open: Vec<String> = open.into_iter().map(|(_, line)| line).collect();
    let unlisted = match unchanged {
        0 => String::new(),
        1 => format!(
            "; 1 run that failed before changing anything is not listed (run it again; `runbook runs{store_flag} --all` shows it)"
        ),
        n => format!(
            "; {n} runs that failed before changing anything are not listed (run them again; `runbook runs{store_flag} --all` shows them)"
        ),
    };
    if open.is_empty() {
        let rest = if unlisted.is_empty() {
            format!("; `runbook runs{store_flag} --all` lists them all")
        } else {
            unlisted
        };
        return Error::Usage(format!(
            "which run? `runbook {verb} RUN`, but no run in {} is paused, interrupted, or stopped part-way through its changes{rest}",
            store.describe()
        ));
    }
    Error::Usage(format!(
        "which run? `runbook {verb} RUN`; these are paused, interrupted, or stopped part-way through their changes{unlisted}:\n  {}",
        open.join("\n  ")
    ))
}

/// The runs whose journals do not end closed, read: those that may be running, paused or
/// stopped part-way, whatever the store's size.
fn not_closed(store: &dyn Store) -> Vec<journal::RunRead> {
    store
        .closed()
        .and_then(|all| store.read_runs(&journal::worth_reading(&all, Some(0))))
        .unwrap_or_default()
}

/// Whether a run may still need a person, whatever its age: it runs, or it stopped where a
/// resume or an abandon is wanted (paused, interrupted, stopped part-way through its changes,
/// refused), or its journal cannot be read. Not: a run over, or one that failed before
/// changing anything (a status run that found a problem), which running again replaces.
fn still_open(status: journal::RunStatus, records: &[journal::Record]) -> bool {
    use journal::RunStatus::*;
    match status {
        Finished | FinishedDryRun | Undone | Abandoned => false,
        Failed | Crashed => journal::claim_of(records).is_some(),
        Running | Paused | Interrupted | Refused | Unknown => true,
    }
}

/// `runbook stop` without a run: the runs running now, each with its command.
fn which_running(store: &dyn Store, store_flag: &str) -> Error {
    let mut running = Vec::new();
    for (id, loaded) in not_closed(store) {
        let Ok(loaded) = loaded else {
            continue;
        };
        let s = runner::summarize_in(store, &id, &loaded.records);
        if s.status == journal::RunStatus::Running {
            running.push((
                s.started.clone(),
                format!(
                    "{}  {}, started {} by {}, {}\n      runbook stop {}{store_flag} --reason \"...\"",
                    s.run_id,
                    file_name(&s.runbook),
                    s.started_minute(),
                    s.operator,
                    s.standing(),
                    s.run_id
                ),
            ));
        }
    }
    running.sort();
    if running.is_empty() {
        return Error::Usage(format!(
            "which run? `runbook stop RUN`, but no run in {} is running (`runbook runs{store_flag} --all` lists them all)",
            store.describe()
        ));
    }
    let lines: Vec<String> = running.into_iter().map(|(_, line)| line).collect();
    Error::Usage(format!(
        "which run? `runbook stop RUN`; these are running:\n  {}",
        lines.join("\n  ")
    ))
}

/// `runbook runs`: the `newest` runs (all with None) and every run still open, in the order
/// they started. Only those runs' journals are read.
fn runs(
    store: &dyn Store,
    json: bool,
    newest: Option<usize>,
    store_flag: &str,
) -> Result<(), Error> {
    let all = store.closed()?;
    let recent: std::collections::HashSet<&str> = all
        .iter()
        .skip(newest.map_or(0, |n| all.len().saturating_sub(n)))
        .map(|(id, _)| id.as_str())
        .collect();
    let runs = store.read_runs(&journal::worth_reading(&all, newest))?;
    let claims = store.claims().unwrap_or_default();
    let claimed_by = |id: &str| -> Vec<String> {
        claims
            .iter()
            .filter(|(_, h)| h.run_id == id)
            .map(|(n, _)| n.clone())
            .collect()
    };
    let mut rows = Vec::new();
    for (id, loaded) in runs {
        let (summary, status) = match loaded {
            Ok(loaded) => {
                let s = runner::summarize_in(store, &id, &loaded.records);
                if !recent.contains(id.as_str()) && !still_open(s.status, &loaded.records) {
                    continue;
                }
                let status = s.status.to_string();
                (s, status)
            }
            Err(e) => (
                runner::RunSummary::unreadable(&id),
                format!("unreadable: {e}"),
            ),
        };
        rows.push((summary, status));
    }
    let unlisted = all.len() - rows.len();
    // In the order they started: run ids name the minute, not the second, so two runs of the
    // same minute would otherwise come in the order of their random tails.
    rows.sort_by(|(a, _), (b, _)| (&a.started, &a.run_id).cmp(&(&b.started, &b.run_id)));
    let not_listed = match unlisted {
        0 => None,
        1 => Some(("1 older run is".to_string(), "it")),
        n => Some((format!("{n} older runs are"), "them")),
    }
    .map(|(runs, are)| format!("({runs} not listed: over, or failed before changing anything. `runbook runs{store_flag} --all` lists {are}, `--limit N` the newest N)"));
    if json {
        for (s, status) in rows {
            say!(
                "{}",
                json!({"run_id": s.run_id, "runbook": s.runbook, "status": status, "started": s.started, "last_step": s.last_step, "operator": s.operator, "host": s.host, "pid": s.pid, "ended": s.ended, "claims": claimed_by(&s.run_id)})
            );
        }
        // On stderr: a reader of the lines is not told a run that is not one.
        if let Some(note) = not_listed {
            tell!("{note}");
        }
        return Ok(());
    }
    if all.is_empty() {
        say!("no runs in {}", store.describe());
        return Ok(());
    }
    say!(
        "{:<20} {:<12} {:<20} {:<32} LAST STEP",
        "RUN",
        "STATUS",
        "STARTED",
        "RUNBOOK"
    );
    let here = runner::Operator::current().host;
    for (s, status) in rows {
        let runbook = file_name(&s.runbook);
        let started = s.started.get(..19).unwrap_or(&s.started).replace('T', " ");
        let held = claimed_by(&s.run_id);
        let mut last = if held.is_empty() {
            s.last_step.clone()
        } else {
            format!("{}  [claims {}]", s.last_step, held.join(", "))
        };
        // Where a run runs, or ran when its process was lost, when that is another host.
        let open = matches!(
            s.status,
            journal::RunStatus::Running | journal::RunStatus::Crashed
        );
        if open && !s.host.is_empty() && s.host != here {
            last.push_str(&format!("  (on {}, pid {})", s.host, s.pid));
        }
        say!(
            "{:<20} {:<12} {:<20} {:<32} {}",
            s.run_id,
            status,
            started,
            runbook,
            last
        );
    }
    if let Some(note) = not_listed {
        say!("{note}");
    }
    Ok(())
}

/// `runbook prune`: removes the runs that started longer ago than `older_than` and are over,
/// or failed before changing anything; keeps the rest (see `journal::prune_plan`).
fn prune(
    store: &dyn Store,
    older_than: &str,
    dry_run: bool,
    store_flag: &str,
) -> Result<(), Error> {
    let age = humantime::parse_duration(older_than).map_err(|e| {
        Error::Usage(format!(
            "--older-than {older_than}: {e}; give an age such as 90d, 12w or 1year"
        ))
    })?;
    let cutoff = journal::unix_ms().saturating_sub(age.as_millis() as u64);
    let over: std::collections::HashMap<String, bool> = store.closed()?.into_iter().collect();
    let runs: Vec<journal::RunAge> = store
        .starts()?
        .into_iter()
        .map(|(id, first)| journal::RunAge {
            started_ms: first.as_ref().and_then(|r| journal::unix_ms_of(&r.at)),
            over: over.get(&id).copied().unwrap_or(false),
            watched: first
                .as_ref()
                .and_then(crate::watch::automatic_failover_of)
                .map(str::to_string),
            id,
        })
        .collect();
    let plan = journal::prune_plan(&runs, cutoff);
    let (mut remove, check) = (plan.remove, plan.check);
    let closed = remove.len();
    for (id, loaded) in store.read_runs(&check)? {
        let Ok(loaded) = loaded else {
            continue;
        };
        let status = runner::summarize_in(store, &id, &loaded.records).status;
        if status == journal::RunStatus::Failed && journal::claim_of(&loaded.records).is_none() {
            remove.push(id);
        }
    }
    let unchanged = remove.len() - closed;
    let open = check.len() - unchanged;
    let before = humantime::format_rfc3339_seconds(
        std::time::UNIX_EPOCH + std::time::Duration::from_millis(cutoff),
    );
    let what = format!(
        "{} started before {before} ({closed} over, {unchanged} failed before changing anything)",
        plural(remove.len(), "run")
    );
    if dry_run {
        for id in &remove {
            say!("{id}");
        }
        say!(
            "would remove {what} from {}; nothing was removed",
            store.describe()
        );
    } else {
        store.remove(&remove)?;
        say!("removed {what} from {}", store.describe());
    }
    for (deployment, run) in &plan.watched {
        say!(
            "kept {run}, the last automatic failover of {deployment}: `runbook watch` reads it (its cooldown, its acknowledgement)"
        );
    }
    if open > 0 {
        say!(
            "kept {} that started before then and may still need a person: `runbook runs{store_flag}` lists {}",
            plural(open, "run"),
            if open == 1 { "it" } else { "them" }
        );
    }
    Ok(())
}

fn plural(n: usize, what: &str) -> String {
    if n == 1 {
        format!("1 {what}")
    } else {
        format!("{n} {what}s")
    }
}

/// `runbook report`: the run (or the one started last) as Markdown, HTML or JSON.
fn report(
    store: &dyn Store,
    run_id: Option<String>,
    html: Option<PathBuf>,
    json: bool,
) -> Result<(), Error> {
    let run_id = match run_id {
        Some(id) => id,
        // The run created last; no journal is read to find it.
        None => {
            let latest = store.closed()?.pop();
            latest.map(|(id, _)| id).ok_or_else(|| {
                Error::Usage(format!(
                    "no runs in {}: a dry-run leaves no journal; `runbook run FILE` starts one",
                    store.describe()
                ))
            })?
        }
    };
    let loaded = store.read(&run_id)?;
    let status = runner::summarize_in(store, &run_id, &loaded.records).status;
    let rep = crate::review::build(&run_id, &loaded.records, status);
    if let Some(path) = html {
        std::fs::write(&path, crate::review::html(&rep)).map_err(|e| {
            Error::Usage(format!(
                "cannot write the report to {}: {e}",
                path.display()
            ))
        })?;
        say!(
            "report of run {run_id} ({}, {} steps) written to {}",
            rep.status,
            rep.steps.len(),
            path.display()
        );
    } else if json {
        say!("{}", serde_json::to_string_pretty(&rep).unwrap_or_default());
    } else {
        let text = crate::review::markdown(&rep);
        say!("{}", text.trim_end());
    }
    if let Some(t) = loaded.torn_tail {
        tell!("warning: the journal's last line is torn (a crash mid-write) and was left out: {t}");
    }
    Ok(())
}

/// `runbook log RUN [--follow]`: the journal, and with `follow` what it journals next, until
/// the run is no longer running. A run whose process is gone without recording an end (killed,
/// its host lost: on this host its process id says so, on another the store does) ends the
/// follow too, saying so and how the run goes on.
fn log(
    store: &dyn Store,
    run_id: &str,
    json: bool,
    follow: bool,
    store_flag: &str,
) -> Result<(), Error> {
    let mut loaded = store.read(run_id)?;
    print_records(&loaded.records, json)?;
    let mut grew = false;
    loop {
        // A journal that just grew has a live writer: the store is asked whether a run of
        // another host lost its process only when nothing came.
        let summary = if grew {
            runner::summarize(run_id, &loaded.records)
        } else {
            runner::summarize_in(store, run_id, &loaded.records)
        };
        if !follow || summary.status != journal::RunStatus::Running {
            // While it runs, a torn last line is one being written, read whole next time.
            if let Some(t) = loaded.torn_tail {
                tell!("warning: the last line is torn (a crash mid-write) and was ignored: {t}");
            }
            if follow && summary.status == journal::RunStatus::Crashed {
                let next = Next::ResumeOrAbandon {
                    run: run_id.to_string(),
                    awaiting: journal::awaiting(&loaded.records),
                };
                let at = if summary.last_step.is_empty() {
                    String::new()
                } else {
                    format!(" at step '{}'", summary.last_step)
                };
                tell!(
                    "run {run_id} stopped{at} without recording an end: its process (pid {} on {}) is gone, killed or its host lost; {}",
                    summary.pid,
                    summary.host,
                    next.render(store_flag)
                );
            }
            return Ok(());
        }
        std::thread::sleep(std::time::Duration::from_millis(200));
        // Only what was appended since: a long run's journal is not read again each tick.
        let new = store.read_since(run_id, &loaded)?;
        print_records(&new.records, json)?;
        grew = !new.records.is_empty();
        loaded.records.extend(new.records);
        loaded.torn_tail = new.torn_tail;
        loaded.intact_len = new.intact_len;
    }
}

fn print_records(records: &[journal::Record], json: bool) -> Result<(), Error> {
    if json {
        for r in records {
            say!("{}", serde_json::to_string(r).unwrap_or_default());
        }
    } else {
        // The last failure printed in full: a step or run that fails with it only names it.
        let mut shown: Option<String> = None;
        for r in records {
            let at = r.at.get(11..23).unwrap_or(&r.at);
            let line = match &r.event {
                Event::RunStarted {
                    runbook,
                    operator,
                    host,
                    params,
                    ..
                } => {
                    format!(
                        "run started: {runbook} by {operator} on {host}, params {}",
                        Value::Object(params.clone())
                    )
                }
                Event::RunResumed {
                    operator,
                    host,
                    inflight,
                    ..
                } => format!(
                    "resumed by {operator} on {host}{}",
                    inflight
                        .as_ref()
                        .map(|i| format!(" (in-flight: {i})"))
                        .unwrap_or_default()
                ),
                Event::StepStarted { step } => format!("▶ {}", show_path(step)),
                Event::StepFinished { step, elapsed_ms } => {
                    format!("✓ {} ({})", show_path(step), human_ms(*elapsed_ms))
                }
                Event::StepFailed {
                    step,
                    error,
                    will_retry,
                } => {
                    format!(
                        "✗ {}: {}{}",
                        show_path(step),
                        once(&mut shown, error),
                        if *will_retry { " (retrying)" } else { "" }
                    )
                }
                Event::ActionStarted {
                    step,
                    seq,
                    action,
                    input,
                    ..
                } => format!("  {} #{seq} {action} {input}", show_path(step)),
                Event::ActionFinished {
                    step,
                    seq,
                    elapsed_ms,
                    skipped,
                    ..
                } => format!(
                    "  {} #{seq} done ({}){}",
                    show_path(step),
                    human_ms(*elapsed_ms),
                    if *skipped {
                        " — skipped by the operator"
                    } else {
                        ""
                    }
                ),
                Event::ActionFailed {
                    step, seq, error, ..
                } => format!(
                    "  {} #{seq} failed: {}",
                    show_path(step),
                    once(&mut shown, error)
                ),
                Event::TimerStarted {
                    step,
                    seq,
                    duration_ms,
                    ..
                } => format!(
                    "  {} #{seq} timer {}",
                    show_path(step),
                    human_ms(*duration_ms)
                ),
                Event::TimerFired { step, seq } => {
                    format!("  {} #{seq} timer fired", show_path(step))
                }
                Event::ApprovalRequested { step, seq, message } => {
                    format!("  {} #{seq} approval asked: {message}", show_path(step))
                }
                Event::Approved { step, seq, by, via } => {
                    format!("  {} #{seq} approved by {by} ({via})", show_path(step))
                }
                Event::Log { step, message } => format!("  {}: {message}", show_path(step)),
                Event::Result { step, name, value } => {
                    format!("  {}: result {name} = {value}", show_path(step))
                }
                Event::RunFinished { elapsed_ms } => {
                    format!("finished ({})", human_ms(*elapsed_ms))
                }
                Event::WatchAcknowledged { by } => {
                    format!("the automatic failover acknowledged by {by}")
                }
                Event::RunFailed { error, .. } => format!("failed: {}", once(&mut shown, error)),
                ending => ending.ending().unwrap_or_default(),
            };
            // A message of several lines (a logged table) stays right of the time column.
            let line = line.replace('\n', &format!("\n{:w$}    ", "", w = at.len()));
            say!("{at}  {line}");
        }
    }
    Ok(())
}

/// A failure's text for the log: in full, or by its first line where it ends with the failure
/// printed just before (the step's "X failed: …" after the action's "…"); remembered as printed.
fn once(shown: &mut Option<String>, error: &str) -> String {
    let above = shown
        .as_deref()
        .is_some_and(|s| !s.is_empty() && error.ends_with(s));
    *shown = Some(error.to_string());
    if above {
        crate::error::once_above(error)
    } else {
        error.to_string()
    }
}

/// A field's type, from its JSON schema.
fn type_of(schema: &schemars::schema::Schema, root: &schemars::schema::RootSchema) -> String {
    use schemars::schema::{InstanceType, Schema, SingleOrVec};
    let Schema::Object(o) = schema else {
        return "any".into();
    };
    if let Some(r) = &o.reference {
        let name = r.rsplit('/').next().unwrap_or(r).to_string();
        if let Some(Schema::Object(d)) = root.definitions.get(&name) {
            if let Some(values) = &d.enum_values {
                return values
                    .iter()
                    .map(|v| v.to_string())
                    .collect::<Vec<_>>()
                    .join(" | ");
            }
            if name == "StatusSpec" {
                return "status (int or list)".into();
            }
        }
        return name;
    }
    if let Some(values) = &o.enum_values {
        return values
            .iter()
            .map(|v| v.to_string())
            .collect::<Vec<_>>()
            .join(" | ");
    }
    if let Some(sub) = &o.subschemas {
        let parts: Vec<&Schema> = sub
            .any_of
            .iter()
            .flatten()
            .chain(sub.all_of.iter().flatten())
            .chain(sub.one_of.iter().flatten())
            .collect();
        let names: Vec<String> = parts
            .iter()
            .map(|p| type_of(p, root))
            .filter(|n| n != "null")
            .collect();
        if !names.is_empty() {
            return names.join(" | ");
        }
    }
    let one = |t: &InstanceType| match t {
        InstanceType::Null => "null",
        InstanceType::Boolean => "bool",
        InstanceType::Object => "map",
        InstanceType::Array => "list",
        InstanceType::Number => "number",
        InstanceType::String => "string",
        InstanceType::Integer => "int",
    };
    match &o.instance_type {
        Some(SingleOrVec::Single(t)) => {
            if let (InstanceType::String, Some(f)) = (t.as_ref(), &o.format) {
                // A message's text is a string to the script; the format only tells the
                // secret check that people read it.
                if f != crate::action::secret_text::FOR_PEOPLE {
                    return f.clone();
                }
            }
            one(t).into()
        }
        Some(SingleOrVec::Vec(v)) => v
            .iter()
            .filter(|t| **t != InstanceType::Null)
            .map(one)
            .collect::<Vec<_>>()
            .join(" | "),
        None => "any".into(),
    }
}

fn fields(root: &schemars::schema::RootSchema) -> Vec<Value> {
    let Some(obj) = &root.schema.object else {
        return vec![];
    };
    obj.properties
        .iter()
        .map(|(name, schema)| {
            let doc = match schema {
                schemars::schema::Schema::Object(o) => o.metadata.as_ref().and_then(|m| m.description.clone()).unwrap_or_default(),
                _ => String::new(),
            };
            json!({"name": name, "type": type_of(schema, root), "required": obj.required.contains(name), "doc": doc})
        })
        .collect()
}

pub fn actions_json() -> Vec<Value> {
    let registry = Registry::standard();
    registry
        .iter()
        .map(|a| {
            let spec = a.spec();
            json!({
                "action": spec.full_name(),
                "namespace": spec.namespace,
                "name": spec.name,
                "doc": spec.doc,
                "effect": spec.effect,
                "idempotency": spec.idempotency,
                "default_timeout": humantime::format_duration(spec.default_timeout).to_string(),
                "default_retries": spec.default_retries,
                "fields": fields(&a.input_schema()),
                "output": fields(&a.output_schema()),
            })
        })
        .collect()
}

/// An action's documentation as a doc comment: what it does, its effect, its fields with
/// their types and documentation, what it returns.
fn action_doc(a: &Value) -> String {
    let s = |v: &Value| v.as_str().unwrap_or("").to_string();
    let mut lines = vec![
        s(&a["doc"]),
        String::new(),
        format!(
            "{}, {}; default timeout {}, {} retries.",
            s(&a["effect"]),
            s(&a["idempotency"]).replace('_', " "),
            s(&a["default_timeout"]),
            a["default_retries"]
        ),
        String::new(),
        "Fields (a map; `timeout`, `retries` and `backoff` too):".into(),
    ];
    for f in a["fields"].as_array().into_iter().flatten() {
        lines.push(format!(
            "* `{}` ({}{}): {}",
            s(&f["name"]),
            s(&f["type"]),
            if f["required"].as_bool() == Some(true) {
                ", required"
            } else {
                ""
            },
            s(&f["doc"])
        ));
    }
    let out: Vec<String> = a["output"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|f| s(&f["name"]))
        .collect();
    lines.push(String::new());
    lines.push(format!("Returns `#{{ {} }}`.", out.join(", ")));
    lines
        .iter()
        .map(|l| {
            if l.is_empty() {
                "///".to_string()
            } else {
                format!("/// {}", l.replace('\n', " "))
            }
        })
        .collect::<Vec<_>>()
        .join("\n")
}

fn definitions(dir: &std::path::Path) -> Result<(), Error> {
    let docs: crate::script::ActionDocs = actions_json()
        .iter()
        .map(|a| {
            (
                a["action"].as_str().unwrap_or("").to_string(),
                action_doc(a),
            )
        })
        .collect();
    for path in crate::script::write_definitions(dir, &docs)? {
        say!("wrote {}", path.display());
    }
    Ok(())
}

fn actions(json: bool) -> Result<(), Error> {
    let all = actions_json();
    if json {
        let common: Vec<Value> = COMMON_FIELDS
            .iter()
            .map(|(n, t, d)| json!({"name": n, "type": t, "doc": d}))
            .collect();
        say!(
            "{}",
            serde_json::to_string_pretty(&json!({"actions": all, "common_fields": common}))
                .unwrap_or_default()
        );
        return Ok(());
    }
    for a in &all {
        say!(
            "{}  [{}, {}]\n  {}",
            a["action"].as_str().unwrap_or(""),
            a["effect"].as_str().unwrap_or(""),
            a["idempotency"].as_str().unwrap_or("").replace('_', " "),
            a["doc"].as_str().unwrap_or("")
        );
        for f in a["fields"].as_array().into_iter().flatten() {
            say!(
                "    {:<16} {:<22} {:<9} {}",
                f["name"].as_str().unwrap_or(""),
                f["type"].as_str().unwrap_or(""),
                if f["required"].as_bool() == Some(true) {
                    "required"
                } else {
                    "optional"
                },
                f["doc"].as_str().unwrap_or("")
            );
        }
        let out: Vec<&str> = a["output"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|f| f["name"].as_str())
            .collect();
        say!("    → returns #{{ {} }}\n", out.join(", "));
    }
    say!("Every action also takes:");
    for (n, t, d) in COMMON_FIELDS {
        say!("    {n:<16} {t:<22} optional  {d}");
    }
    Ok(())
}
