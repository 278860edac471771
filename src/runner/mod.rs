//! Runs and resumes runbooks: open the journal, run the script, record how it ended.

mod call;
mod ctx;
mod diff;
mod frames;
mod host;
mod params;
mod replay;
mod stop;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::Instant;

use rhai::{Dynamic, EvalAltResult};
use serde_json::Value;
use sha2::{Digest, Sha256};

pub use ctx::{http_client, CtxInit, Inflight, JournalInit, RunCtx, RunOptions, Stop};
pub use frames::set_source;
pub use stop::{stop, stopped_by_signal};

use crate::action::world::World;
use crate::error::{Error, Next, ScriptPos};
use crate::inventory::Inventory;
use crate::journal::{self, show_path, Event, LockHolder, Record, RunStatus, StepPath, Store};
use crate::report::{Progress, Reporter};
use crate::script::Handler;
use crate::secret::Redactor;

/// Who and where: recorded with every run.
#[derive(Clone)]
pub struct Operator {
    pub name: String,
    pub host: String,
}

impl Operator {
    pub fn current() -> Operator {
        let name = std::env::var("RUNBOOK_OPERATOR")
            .or_else(|_| std::env::var("USER"))
            .or_else(|_| std::env::var("LOGNAME"))
            .unwrap_or_else(|_| {
                user_name().unwrap_or_else(|| format!("uid {}", unsafe { libc::getuid() }))
            });
        let mut buf = [0u8; 256];
        let host = if unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) } == 0 {
            let end = buf.iter().position(|b| *b == 0).unwrap_or(buf.len());
            String::from_utf8_lossy(&buf[..end]).into_owned()
        } else {
            "unknown-host".into()
        };
        Operator { name, host }
    }
}

/// The login name of the current user, from the password database.
fn user_name() -> Option<String> {
    let mut buf = vec![0u8; 4096];
    let mut pwd: libc::passwd = unsafe { std::mem::zeroed() };
    let mut result: *mut libc::passwd = std::ptr::null_mut();
    let rc = unsafe {
        libc::getpwuid_r(
            libc::getuid(),
            &mut pwd,
            buf.as_mut_ptr().cast(),
            buf.len(),
            &mut result,
        )
    };
    if rc != 0 || result.is_null() {
        return None;
    }
    let name = unsafe { std::ffi::CStr::from_ptr(pwd.pw_name) };
    Some(name.to_string_lossy().into_owned())
}

/// What the engine needs from its caller.
pub struct Env {
    pub store: Arc<dyn Store>,
    pub reporter: Arc<dyn Reporter>,
    pub redactor: Redactor,
    pub cancel: Arc<AtomicBool>,
    pub operator: Operator,
    pub rt: tokio::runtime::Handle,
    /// The store options as the operator gave them (" --store ...", " --state-dir ...", or
    /// ""), for the commands a run suggests.
    pub store_flag: String,
}

pub struct RunRequest {
    pub script: PathBuf,
    pub dry_run: bool,
    pub offline: bool,
    pub yes: bool,
    pub vars: BTreeMap<String, String>,
    pub inventory: Option<PathBuf>,
    /// With an offline dry-run: the scenario its reads answer from.
    pub assume: Option<PathBuf>,
    /// What started the run when no person did (`runbook watch`), for its journal.
    pub trigger: Option<serde_json::Value>,
}

pub struct ResumeRequest {
    pub run_id: String,
    pub approve: bool,
    pub inflight: Option<Inflight>,
    pub yes: bool,
    pub undo: bool,
    /// Parameters given again: those whose URL password the journal did not keep.
    pub vars: BTreeMap<String, String>,
    /// This host's copy of the run's inventory (`resume -i`), instead of the path it recorded.
    pub inventory: Option<String>,
}

pub fn sha256_hex(text: &str) -> String {
    Sha256::digest(text.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn new_run_id() -> String {
    let now = journal::timestamp(); // 2026-11-21T16:12:02.123Z
    let date: String = now[..10].chars().filter(|c| *c != '-').collect();
    let time: String = now[11..16].chars().filter(|c| *c != ':').collect();
    let mut bytes = [0u8; 2];
    if let Ok(mut f) = std::fs::File::open("/dev/urandom") {
        use std::io::Read;
        let _ = f.read_exact(&mut bytes);
    }
    format!("{date}-{time}-{:02x}{:02x}", bytes[0], bytes[1])
}

/// A run id no run in the store has: ids are the minute and 16 random bits, so runs started
/// in the same minute (a watcher, a cron'd status, a test) can draw one already taken, and
/// its journal could not be created.
fn unused_run_id(taken: impl Fn(&str) -> bool, mut draw: impl FnMut() -> String) -> String {
    let mut id = draw();
    for _ in 0..64 {
        if !taken(&id) {
            break;
        }
        id = draw();
    }
    id
}

/// The default lock: one per runbook and inventory.
fn default_lock_name(runbook: &str, inventory: Option<&str>) -> String {
    let stem = |p: &str| {
        Path::new(p)
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_default()
    };
    match inventory {
        Some(inv) => format!("{}@{}", stem(runbook), stem(inv)),
        None => stem(runbook),
    }
}

/// Takes a lock for a run (see `journal::take_lock`), saying so when it takes over the claim
/// of a run that is over or changed nothing.
pub fn take_lock(
    store: &dyn Store,
    reporter: &dyn Reporter,
    name: &str,
    holder: &LockHolder,
) -> Result<journal::LockGuard, Error> {
    let guard = journal::take_lock(store, name, holder)?;
    if let Some(old) = &guard.took_over {
        if old.run_id != holder.run_id {
            reporter.report(&Progress::Warning {
                message: format!(
                    "took over the lock '{name}' from {}: that process is gone, and its run is over or changed nothing",
                    old.describe()
                ),
            });
        }
    }
    Ok(guard)
}

/// At the end of a run's process: a run that is over, or that changed nothing, releases its
/// claims; one paused, interrupted or stopped mid-change keeps them (resume or abandon it).
fn settle_locks(ctx: &RunCtx) {
    let guards: Vec<journal::LockGuard> = ctx.state.locks.lock().unwrap().drain(..).collect();
    if guards.is_empty() {
        return;
    }
    let still_claimed = match (&ctx.store, &ctx.opts.run_id) {
        (Some(store), Some(id)) => store
            .read(id)
            .ok()
            .and_then(|l| journal::claim_of(&l.records)),
        _ => None,
    };
    if still_claimed.is_none() {
        for g in guards {
            g.release();
        }
    }
}

fn holder(run_id: &str, runbook: &str, op: &Operator) -> LockHolder {
    LockHolder {
        run_id: run_id.into(),
        runbook: runbook.into(),
        operator: op.name.clone(),
        host: op.host.clone(),
        pid: std::process::id(),
        since: journal::timestamp(),
    }
}

/// `runbook run`.
pub fn run(env: &Env, req: RunRequest) -> Result<(), Error> {
    let file = req.script.display().to_string();
    let source = crate::script::read_script(&req.script)?;
    let inventory = match &req.inventory {
        Some(p) => Inventory::load(p)?,
        None => Inventory::empty(),
    };
    crate::tls::set_pg_defaults(inventory.pg_tls_defaults()?);
    let inv = inventory.to_script(&env.redactor, req.dry_run && req.offline)?;
    let world = match (&req.assume, req.dry_run && req.offline) {
        (Some(path), true) => Some(
            World::load(&inventory.value, path).map_err(|message| Error::Scenario { message })?,
        ),
        (Some(path), false) => {
            return Err(Error::Usage(format!(
                "--assume {} describes the world of an offline dry-run: add --dry-run --offline",
                path.display()
            )))
        }
        (None, true) => Some(World::of_inventory(&inventory.value)),
        (None, false) => None,
    };
    let run_id = if req.dry_run {
        None
    } else {
        Some(unused_run_id(|id| env.store.read(id).is_ok(), new_run_id))
    };

    let invocation = Arc::new(
        crate::action::Invocation::new(
            &file,
            req.inventory.as_ref().and_then(|p| p.to_str()),
            &env.store_flag,
        )
        .of_run(run_id.as_deref(), &file),
    );
    // The commands an assumed world's anomalies suggest are spelled as this run was started.
    let world = world.map(|w| {
        Arc::new(World {
            commands: invocation.clone(),
            ..w
        })
    });
    let journal_init = run_id.as_ref().map(|id| JournalInit {
        store: env.store.clone(),
        run_id: id.clone(),
        script: source.clone(),
        first: Event::RunStarted {
            run_id: id.clone(),
            runbook: absolute(&req.script),
            runbook_sha256: sha256_hex(&source),
            params: req
                .vars
                .iter()
                .map(|(k, v)| (k.clone(), v.clone().into()))
                .collect(),
            inventory_file: req.inventory.as_ref().map(|p| absolute(p)),
            inventory: inventory.value.clone(),
            engine_version: env!("CARGO_PKG_VERSION").into(),
            operator: env.operator.name.clone(),
            host: env.operator.host.clone(),
            pid: std::process::id(),
            trigger: req.trigger.clone().map(Box::new),
            invocation: serde_json::to_value(&*invocation).ok().map(Box::new),
        },
    });
    let ctx = Arc::new(RunCtx::new(CtxInit {
        opts: RunOptions {
            run_id: run_id.clone(),
            runbook: file.clone(),
            dry_run: req.dry_run,
            offline: req.offline,
            auto_approve: req.yes,
            resume_approver: None,
            inflight: None,
            undo_mode: false,
            operator: env.operator.name.clone(),
            host: env.operator.host.clone(),
            vars: req.vars.clone(),
            regions: req
                .inventory
                .is_some()
                .then(|| crate::script::Regions::of(&inventory.file, &inventory.value)),
            world,
            started_as: invocation.clone(),
            invocation,
        },
        journal: None,
        journal_init,
        journal_path: run_id
            .as_ref()
            .map(|id| format!("{} run {id}", env.store.describe()))
            .unwrap_or_default(),
        next_record: 1,
        replay: Default::default(),
        reporter: env.reporter.clone(),
        rt: env.rt.clone(),
        redactor: env.redactor.clone(),
        cancel: env.cancel.clone(),
        store: Some(env.store.clone()),
    }));
    // A script with a mistake is refused before the lock is taken: it never claimed anything.
    let prepared = prepare(
        &ctx,
        &file,
        &source,
        crate::script::base_dir(&req.script),
        Dynamic::from(inv),
    )?;
    // A runbook that reads the inventory, run without one, would only find it empty: a
    // status with no region "sees" no primary. Refused before anything runs.
    if req.inventory.is_none() {
        if let Some(pos) = crate::script::first_read(&prepared.plain, "inventory") {
            return Err(Error::script(
                format!(
                    "{file} reads the inventory, and none was given: add -i FILE (the inventory \
                     describing the regions)"
                ),
                crate::script::script_pos(&file, pos),
                Some(&source),
            ));
        }
    }
    // Parameters declared in a literal map are checked before the lock is taken: a mistyped
    // --var is bad input (exit 2), not a wait behind another run's claim. Declarations built
    // at run time (and vars given to a runbook that declares none) are refused when the
    // script runs, as before.
    if let Some(decls) = crate::script::declared_params(&prepared.plain).filter(|d| !d.is_empty()) {
        crate::script::resolve_params(&decls, &req.vars, ctx.opts.regions.as_ref())
            .map_err(|problems| Error::invalid_params(&problems))?;
    }
    if let Some(id) = &run_id {
        let name = default_lock_name(&file, req.inventory.as_ref().and_then(|p| p.to_str()));
        let guard = take_lock(
            env.store.as_ref(),
            env.reporter.as_ref(),
            &name,
            &holder(id, &file, &env.operator),
        )
        // The store's database may be in the region that is down; say how to go on without it.
        .map_err(|e| match e {
            Error::StoreUnreachable(message) => Error::RunFailed {
                message,
                pos: None,
                source_line: None,
                next: Some(crate::error::Next::StoreAway),
                shown: false,
            },
            e => e,
        })?;
        ctx.state.locks.lock().unwrap().push(guard);
    }
    env.reporter.report(&Progress::RunStarted {
        run_id: run_id.clone(),
        runbook: file.clone(),
        dry_run: req.dry_run,
        offline: req.offline,
        resumed: false,
        world: ctx.opts.world.as_ref().map(|w| w.summary()),
    });
    let result = execute(&ctx, prepared, &file, &source, None);
    settle_locks(&ctx);
    result
}

fn absolute(p: &Path) -> String {
    std::fs::canonicalize(p)
        .unwrap_or_else(|_| p.to_path_buf())
        .display()
        .to_string()
}

/// The state a journal shows a run in.
#[derive(Debug, Clone)]
pub struct RunSummary {
    pub run_id: String,
    pub runbook: String,
    pub status: RunStatus,
    pub started: String,
    pub last_step: String,
    pub operator: String,
    pub ended: Option<String>,
    /// The process of its last session, and its host.
    pub pid: u32,
    pub host: String,
}

impl RunSummary {
    /// A run no record could be read of.
    pub fn unreadable(run_id: &str) -> RunSummary {
        RunSummary {
            run_id: run_id.into(),
            runbook: String::new(),
            status: RunStatus::Unknown,
            started: String::new(),
            last_step: String::new(),
            operator: String::new(),
            ended: None,
            pid: 0,
            host: String::new(),
        }
    }

    /// How it stands: "interrupted at step 'hold'".
    pub fn standing(&self) -> String {
        if self.last_step.is_empty() {
            self.status.to_string()
        } else {
            format!("{} at step '{}'", self.status, self.last_step)
        }
    }

    /// When it started, to the minute: "2026-12-05 03:12".
    pub fn started_minute(&self) -> String {
        self.started
            .get(..16)
            .unwrap_or(&self.started)
            .replace('T', " ")
    }
}

pub fn summarize(run_id: &str, records: &[Record]) -> RunSummary {
    let mut s = RunSummary {
        status: RunStatus::of(records),
        ..RunSummary::unreadable(run_id)
    };
    for rec in records {
        match &rec.event {
            Event::RunStarted {
                runbook,
                operator,
                pid: p,
                host: h,
                ..
            } => {
                s.runbook = runbook.clone();
                s.started = rec.at.clone();
                s.operator = operator.clone();
                s.pid = *p;
                s.host = h.clone();
                s.ended = None;
            }
            Event::RunResumed {
                pid: p, host: h, ..
            } => {
                s.pid = *p;
                s.host = h.clone();
                s.ended = None;
            }
            // A handler's step is not where the run stopped.
            Event::StepStarted { step } if !journal::in_handler_step(step) => {
                s.last_step = show_path(step)
            }
            Event::RunFinished { .. }
            | Event::RunUndone { .. }
            | Event::RunFailed { .. }
            | Event::RunPaused { .. }
            | Event::RunInterrupted { .. }
            | Event::RunAbandoned { .. } => s.ended = Some(rec.at.clone()),
            _ => {}
        }
    }
    if s.status == RunStatus::Running {
        let here = Operator::current().host;
        let alive = s.host == here && s.pid != 0 && unsafe { libc::kill(s.pid as i32, 0) } == 0;
        if !alive && s.host == here {
            s.status = RunStatus::Crashed;
        }
    }
    s
}

/// How a run stands (`summarize`), also when its last session ran on another host, whose
/// process this host cannot look at: the store tells instead (see `gone_elsewhere`). What
/// `runs`, `log --follow`, `stop`, `resume` and `abandon` without a run, and `report` show.
pub fn summarize_in(store: &dyn Store, run_id: &str, records: &[Record]) -> RunSummary {
    let mut s = summarize(run_id, records);
    if gone_elsewhere(store, &s, records) {
        s.status = RunStatus::Crashed;
    }
    s
}

/// Whether a run the journal shows running on another host has lost its process (killed, or
/// its host lost). A live process of a run holds the run's lock (one per runbook and
/// inventory, taken before its first record and kept until it exits) and claims it: a lock
/// nobody holds, or one held for another run, says the process is gone. The lock is looked
/// at, not taken, so asking never stands in the way of the run. A store that cannot be asked
/// leaves the journal's word.
fn gone_elsewhere(store: &dyn Store, summary: &RunSummary, records: &[Record]) -> bool {
    if summary.status != RunStatus::Running || summary.host == Operator::current().host {
        return false;
    }
    let Some(Event::RunStarted {
        runbook,
        inventory_file,
        ..
    }) = records.first().map(|r| &r.event)
    else {
        return false;
    };
    let name = default_lock_name(runbook, inventory_file.as_deref());
    match store.held(&name) {
        Ok(false) => true,
        // Held: by this run's process, unless the claim names another run (which took the
        // lock over once this one was gone).
        Ok(true) => store.claims().is_ok_and(|claims| {
            claims
                .iter()
                .any(|(n, holder)| *n == name && holder.run_id != summary.run_id)
        }),
        Err(_) => false,
    }
}

/// `runbook abandon`: the run will not be continued. Recorded in its journal, its claims
/// released. Refused while a process still runs it. Returns what was done, for the operator,
/// with the command that checks the deployment (`store_flag`: the store options as given).
pub fn abandon(
    store: &dyn Store,
    run_id: &str,
    reason: Option<String>,
    op: &Operator,
    store_flag: &str,
) -> Result<String, Error> {
    let loaded = store.read(run_id)?;
    let summary = summarize(run_id, &loaded.records);
    if summary.status.is_over() {
        return Err(Error::Usage(format!(
            "run {run_id} already {} ({}); there is nothing to abandon",
            summary.status,
            summary.ended.unwrap_or_default()
        )));
    }
    // Taking each lock it claims proves no process runs it any more (a live one holds them;
    // one that has just paused is waited for while it exits).
    let me = holder(run_id, &summary.runbook, op);
    let mut guards = Vec::new();
    for (name, holder) in store.claims()? {
        if holder.run_id != run_id {
            continue;
        }
        match journal::hold_lock(store, &name, &me) {
            Ok(g) => guards.push(g),
            Err(_) => {
                return Err(Error::Locked {
                    message: format!("run {run_id} is still running ({})", holder.describe()),
                    holder: holder.process(),
                    next: Next::StopThenAbandon {
                        run: run_id.to_string(),
                        pid: holder.pid,
                        host: holder.host,
                    },
                })
            }
        }
    }
    journal::append_event(
        store,
        run_id,
        &loaded.records,
        Event::RunAbandoned {
            by: op.name.clone(),
            reason: reason.clone(),
        },
    )?;
    let names: Vec<String> = guards.iter().map(|g| g.name.clone()).collect();
    for g in guards {
        g.release();
    }
    // The status runbook beside the one the run ran, with its inventory.
    let inventory = loaded.records.first().and_then(|r| match &r.event {
        Event::RunStarted { inventory_file, .. } => inventory_file.clone(),
        _ => None,
    });
    let status = crate::action::Invocation::new(&summary.runbook, inventory.as_deref(), store_flag)
        .run("status", "");
    Ok(format!(
        "run {run_id} ({}, {} at step '{}') abandoned by {}{}; {}. Nothing was undone: check the deployment with `{status}`",
        summary.runbook,
        summary.status,
        summary.last_step,
        op.name,
        reason.map(|r| format!(" ({r})")).unwrap_or_default(),
        if names.is_empty() {
            "it claimed no lock".to_string()
        } else {
            format!("released {}", names.join(", "))
        }
    ))
}

/// `runbook resume`.
pub fn resume(env: &Env, req: ResumeRequest) -> Result<(), Error> {
    let loaded = env.store.read(&req.run_id)?;
    if let Some(torn) = &loaded.torn_tail {
        env.reporter.report(&Progress::Warning {
            message: format!(
                "the journal's last line was cut short by a crash and is dropped: {torn}; the call it described will be treated as not recorded"
            ),
        });
    }
    let Some(Record {
        event:
            Event::RunStarted {
                runbook,
                runbook_sha256,
                params,
                inventory_file,
                inventory,
                invocation: started_as,
                ..
            },
        ..
    }) = loaded.records.first().cloned()
    else {
        return Err(Error::Journal {
            path: env.store.describe().into(),
            message: format!("run {} has no start record", req.run_id),
        });
    };
    let summary = summarize(&req.run_id, &loaded.records);
    match summary.status {
        status if status.is_over() => {
            return Err(Error::Refused {
                message: format!(
                    "run {} already {} ({}); there is nothing to resume",
                    req.run_id,
                    summary.status,
                    summary.ended.unwrap_or_default()
                ),
                // With the inventory it ran with (this host's copy when given): a shipped
                // runbook needs one.
                next: Next::NewRun {
                    command: match req.inventory.as_deref().or(inventory_file.as_deref()) {
                        Some(inventory) => format!(
                            "runbook run {} -i {}",
                            crate::error::shell_word(&runbook),
                            crate::error::shell_word(inventory)
                        ),
                        None => format!("runbook run {}", crate::error::shell_word(&runbook)),
                    },
                },
            });
        }
        // A run still running (perhaps on another host) is refused by its lock below.
        _ => {}
    }
    // `--approve` answers the approval the run paused at; one it reaches later is asked.
    if req.approve && !journal::unanswered_approval(&loaded.records) {
        env.reporter.report(&Progress::Warning {
            message: format!(
                "run {} is not waiting for an approval (it is {}): --approve answers none, and an approval the run reaches is asked (`--yes` answers every one)",
                req.run_id,
                summary.standing()
            ),
        });
    }

    let vars = params::for_resume(&req.run_id, &params, &req.vars)?;
    let recorded = env.store.script(&req.run_id)?;
    let (source, script_path) = match std::fs::read_to_string(&runbook) {
        Ok(s) => (s, PathBuf::from(&runbook)),
        Err(_) => {
            env.reporter.report(&Progress::Warning {
                message: format!(
                    "{runbook} is gone; resuming with the copy recorded when the run started"
                ),
            });
            (recorded.clone(), PathBuf::from(&runbook))
        }
    };
    let file = script_path.display().to_string();
    let changed = sha256_hex(&source) != runbook_sha256;
    if changed {
        env.reporter.report(&Progress::Warning {
            message: format!(
                "{file} changed since the run started; every finished call is checked against the journal:\n{}",
                diff::unified(&recorded, &source).trim_end()
            ),
        });
    }

    // The inventory as the run had it: at its start, and as each resume that read another.
    let mut versions = vec![inventory];
    versions.extend(loaded.records.iter().filter_map(|r| match &r.event {
        Event::RunResumed {
            inventory: Some(v), ..
        } => Some(v.clone()),
        _ => None,
    }));
    let ResumedInventory {
        inventory: inv,
        edits: inventory_edits,
        record: inventory_read,
    } = resume_inventory(
        env,
        &req.run_id,
        req.inventory.as_deref(),
        inventory_file.as_deref(),
        versions,
    )?;
    crate::tls::set_pg_defaults(inv.pg_tls_defaults()?);
    let regions = inventory_file
        .is_some()
        .then(|| crate::script::Regions::of(&inv.file, &inv.value));
    let inv = inv.to_script(&env.redactor, false)?;
    let name = default_lock_name(&runbook, inventory_file.as_deref());
    let guard = take_lock(
        env.store.as_ref(),
        env.reporter.as_ref(),
        &name,
        &holder(&req.run_id, &runbook, &env.operator),
    )?;
    let writer = match env.store.append_to(&req.run_id) {
        Ok(w) => w,
        Err(e) => {
            // Refused before it began: the run's claim stays as its journal has it.
            if journal::claim_of(&loaded.records).is_none() {
                guard.release();
            }
            return Err(e);
        }
    };

    let next_record = loaded.records.last().map(|r| r.n + 1).unwrap_or(1);
    let mut replay = replay::Replay::from_records(&loaded.records);
    replay.inventory_edits = inventory_edits;
    // This session's commands name the inventory where this host has it.
    let here = req.inventory.as_deref().or(inventory_file.as_deref());
    let invocation = Arc::new(
        crate::action::Invocation::new(&file, here, &env.store_flag)
            .of_run(Some(&req.run_id), &file),
    );
    // A run started before the journal kept it: as this session spells it.
    let started_as = started_as
        .and_then(|v| serde_json::from_value::<crate::action::Invocation>(*v).ok())
        .map_or_else(|| invocation.clone(), Arc::new);
    run_where_it_started(env, started_as.cwd.as_deref());
    let ctx = Arc::new(RunCtx::new(CtxInit {
        opts: RunOptions {
            run_id: Some(req.run_id.clone()),
            runbook: file.clone(),
            dry_run: false,
            offline: false,
            auto_approve: req.yes,
            resume_approver: req.approve.then(|| env.operator.name.clone()),
            inflight: req.inflight,
            undo_mode: req.undo,
            operator: env.operator.name.clone(),
            host: env.operator.host.clone(),
            vars,
            regions,
            world: None,
            started_as,
            invocation,
        },
        journal: Some(writer),
        journal_init: None,
        journal_path: format!("{} run {}", env.store.describe(), req.run_id),
        next_record,
        replay,
        reporter: env.reporter.clone(),
        rt: env.rt.clone(),
        redactor: env.redactor.clone(),
        cancel: env.cancel.clone(),
        store: Some(env.store.clone()),
    }));
    ctx.state.locks.lock().unwrap().push(guard);
    ctx.state.wrote.store(
        loaded.records.iter().any(|r| {
            matches!(
                r.event,
                Event::ActionStarted {
                    write: true,
                    notice: false,
                    ..
                }
            )
        }),
        std::sync::atomic::Ordering::SeqCst,
    );
    let began = prepare(
        &ctx,
        &file,
        &source,
        crate::script::base_dir(&script_path),
        Dynamic::from(inv),
    )
    .and_then(|prepared| {
        ctx.journal(
            Event::RunResumed {
                runbook_sha256: sha256_hex(&source),
                engine_version: env!("CARGO_PKG_VERSION").into(),
                operator: env.operator.name.clone(),
                host: env.operator.host.clone(),
                pid: std::process::id(),
                inflight: req.inflight.map(|i| format!("{i:?}").to_lowercase()),
                inventory: inventory_read,
            },
            true,
        )?;
        Ok(prepared)
    });
    let prepared = match began {
        Ok(p) => p,
        Err(e) => {
            // A script that now has a mistake resumes nothing: the run keeps the claim its
            // journal gives it, and no more.
            settle_locks(&ctx);
            return Err(e);
        }
    };
    env.reporter.report(&Progress::RunStarted {
        run_id: Some(req.run_id.clone()),
        runbook: file.clone(),
        dry_run: false,
        offline: false,
        resumed: true,
        world: None,
    });
    let script_change = changed.then(|| diff::unified(&recorded, &source));
    let result = execute(&ctx, prepared, &file, &source, script_change);
    settle_locks(&ctx);
    result
}

struct Prepared {
    engine: Arc<rhai::Engine>,
    ast: Arc<rhai::AST>,
    scope: rhai::Scope<'static>,
    /// The source as written, parsed once for what is read from it before the run starts
    /// (lint, the first read of `inventory`, the declared parameters).
    plain: rhai::AST,
}

/// Compiles and lints the script: a runbook that cannot run is refused before anything starts.
fn prepare(
    ctx: &Arc<RunCtx>,
    file: &str,
    source: &str,
    base_dir: PathBuf,
    inventory: Dynamic,
) -> Result<Prepared, Error> {
    let resolver = crate::script::StdlibResolver::new(base_dir.clone());
    let engine = crate::script::engine(ctx.clone(), base_dir, &Default::default());
    let scope = crate::script::scope(inventory);
    let ast = crate::script::compile(&engine, file, source)?;
    let plain = crate::script::parse_plain(source).unwrap_or_default();
    let problems = crate::script::lint::lint(
        &engine,
        &ast,
        &plain,
        &ctx.registry,
        &resolver,
        file,
        source,
    );
    if let Some(first) = problems.into_iter().next() {
        return Err(first);
    }
    let engine = Arc::new(engine);
    let ast = Arc::new(ast);
    let _ = ctx.engine.set(engine.clone());
    Ok(Prepared {
        engine,
        ast,
        scope,
        plain,
    })
}

/// Runs the script in `ctx`, then records and reports how it ended.
fn execute(
    ctx: &Arc<RunCtx>,
    prepared: Prepared,
    file: &str,
    source: &str,
    script_change: Option<String>,
) -> Result<(), Error> {
    let started = Instant::now();
    let Prepared {
        engine,
        ast,
        mut scope,
        ..
    } = prepared;
    frames::reset(frames::Frame::new(Vec::new(), None, false));

    let watch = stop::StopWatch::start(ctx);
    let result = engine.run_ast_with_scope(&mut scope, &ast);
    if ctx.opts.undo_mode {
        // The replay has reached where the run stopped (or ended as it ended): undo instead.
        let stop = ctx.take_stop();
        if matches!(stop, Some(Stop::Frontier) | None) {
            ctx.clear_stop();
            // A change the replay did not reach has no undo registered: undoing the rest and
            // calling the run undone would leave that change in place, unsaid.
            let unreached = ctx.unreplayed_writes_in_finished_steps();
            if !unreached.is_empty() {
                return Err(undo_refused(ctx, &unreached, script_change, started));
            }
            return undo(ctx, &engine, started, file, source);
        }
    }
    // The script is over: a request to stop comes too late.
    drop(watch);
    if let Err(e) = &result {
        if !ctx.opts.undo_mode {
            call_failure_handler(ctx, &engine, e, false);
        }
    }
    let elapsed_ms = started.elapsed().as_millis() as u64;
    let run_id = ctx.opts.run_id.clone();
    let outcome = match result {
        Ok(()) => {
            if let Err(e) = ctx.journal(Event::RunFinished { elapsed_ms }, true) {
                return Err(journal_lost(ctx, e, (None, None), elapsed_ms));
            }
            let skipped = ctx.unreplayed_writes();
            if !skipped.is_empty() {
                ctx.report(Progress::Warning {
                    message: format!(
                        "the journal records changes this run no longer makes (they were done earlier): {}",
                        skipped.join("; ")
                    ),
                });
            }
            if ctx.opts.dry_run {
                ctx.report(Progress::Plan {
                    entries: ctx.state.plan.lock().unwrap().clone(),
                    failed: false,
                });
            }
            let status = if ctx.opts.dry_run {
                RunStatus::FinishedDryRun
            } else {
                RunStatus::Finished
            };
            ctx.report(Progress::RunEnded {
                run_id,
                status,
                elapsed_ms,
                message: None,
                next: None,
            });
            Ok(())
        }
        Err(e) => Err(ended_with(
            ctx,
            &e,
            file,
            source,
            elapsed_ms,
            false,
            script_change,
        )),
    };
    ctx.sync_journal();
    let action_ms = ctx.state.action_time.total().as_millis() as u64;
    ctx.report(Progress::Timing {
        wall_ms: elapsed_ms,
        action_ms,
        engine_ms: elapsed_ms.saturating_sub(action_ms),
        pg_opened: crate::action::pg::OPENED.load(std::sync::atomic::Ordering::Relaxed),
        pg_reused: crate::action::pg::REUSED.load(std::sync::atomic::Ordering::Relaxed),
    });
    outcome
}

/// The command that starts this runbook again with the same inventory and `--var`s (no
/// `--yes`: a new run asks its approvals again).
fn run_again(opts: &RunOptions) -> String {
    use crate::error::shell_word;
    let mut command = format!("runbook run {}", shell_word(&opts.runbook));
    if let Some(inventory) = &opts.invocation.inventory {
        command.push_str(&format!(" -i {}", shell_word(inventory)));
    }
    for (name, value) in &opts.vars {
        command.push_str(&format!(
            " --var {}",
            shell_word(&format!("{name}={value}"))
        ));
    }
    command
}

/// What a resume reads its inventory as, and how that differs from what the run had.
struct ResumedInventory {
    inventory: Inventory,
    /// From each inventory a session of the run read (the start's first) to this one: a call
    /// recorded with any of them may differ from its record by that edit alone.
    edits: Vec<crate::inventory::InventoryEdit>,
    /// This inventory (secrets as references), to record with the resume when it differs from
    /// the one the run last had.
    record: Option<Value>,
}

/// The inventory a resume runs with, and how it differs from the run's. The journal keeps a
/// copy (at the start, and at each resume that read another), but with URL passwords masked:
/// the file is read again — this host's copy when `-i` names one, else the path the run
/// recorded — and a warning names what changed since the start. A file that is gone leaves the
/// journal's last copy, unless that copy lacks a password the run needs: then the resume is
/// refused before anything, asking for this host's copy.
fn resume_inventory(
    env: &Env,
    run_id: &str,
    given: Option<&str>,
    recorded: Option<&str>,
    versions: Vec<Value>,
) -> Result<ResumedInventory, Error> {
    let started = versions.first().cloned().unwrap_or(Value::Null);
    let last = versions.last().cloned().unwrap_or(Value::Null);
    let warn = |message: String| env.reporter.report(&Progress::Warning { message });
    let read = |inventory: Inventory, said: String| {
        let masked = serde_json::to_string(&inventory.value)
            .map(|t| crate::secret::mask_url_passwords(&t))
            .unwrap_or_default();
        let now: Value = serde_json::from_str(&masked).unwrap_or(Value::Null);
        let since_start = crate::inventory::InventoryEdit::between(&started, &now);
        if !since_start.is_empty() {
            warn(format!(
                "{said}: {}. What the run read and said with the old values stands as recorded, \
                 the calls still to come use the new ones, and a finished change made with an \
                 old value stops the resume",
                since_start.keys().join(", ")
            ));
        }
        let edits = versions
            .iter()
            .map(|v| crate::inventory::InventoryEdit::between(v, &now))
            .filter(|e| !e.is_empty())
            .collect();
        ResumedInventory {
            inventory,
            edits,
            record: (now != last).then_some(now),
        }
    };
    let as_kept = |inventory: Inventory| ResumedInventory {
        inventory,
        edits: vec![],
        record: None,
    };
    match (given, recorded) {
        (Some(_), None) => Err(Error::Usage(format!(
            "-i: run {run_id} was started without an inventory; a resume continues a run with what it started with"
        ))),
        (Some(path), Some(recorded)) => Ok(read(
            Inventory::load(Path::new(path))?,
            format!("the inventory {path} differs from the one run {run_id} started with ({recorded})"),
        )),
        (None, Some(path)) => match Inventory::load(Path::new(path)) {
            Ok(current) => Ok(read(
                current,
                format!("the inventory {path} changed since the run started"),
            )),
            // One that is there but cannot be used (a broken edit, a misspelt key) is
            // refused as at the start: resuming with the old copy would hide the edit.
            Err(e) if Path::new(path).exists() => Err(e),
            Err(_) => {
                let lacking = masked_passwords(&last, "");
                if !lacking.is_empty() {
                    return Err(Error::Usage(format!(
                        "the inventory {path} that run {run_id} started with is not on this host, and the journal's copy of it does not keep URL passwords ({}): give this host's copy with `runbook resume {run_id} -i FILE`",
                        lacking.join(", ")
                    )));
                }
                warn(format!("the inventory {path} is gone; resuming with the copy in the journal"));
                Ok(as_kept(Inventory {
                    file: path.to_string(),
                    value: last,
                }))
            }
        },
        (None, None) => Ok(as_kept(Inventory {
            file: "(no inventory)".into(),
            value: last,
        })),
    }
}

/// The keys (`regions.us-east-1.database_url`) of the URLs in a journaled inventory whose
/// password the journal masked.
fn masked_passwords(value: &Value, at: &str) -> Vec<String> {
    let path = |key: &str| {
        if at.is_empty() {
            key.to_string()
        } else {
            format!("{at}.{key}")
        }
    };
    match value {
        Value::String(s) if params::masked(s) => vec![at.to_string()],
        Value::Object(map) => map
            .iter()
            .flat_map(|(k, v)| masked_passwords(v, &path(k)))
            .collect(),
        Value::Array(items) => items
            .iter()
            .enumerate()
            .flat_map(|(i, v)| masked_passwords(v, &path(&i.to_string())))
            .collect(),
        _ => Vec::new(),
    }
}

/// A resume runs in the folder its run started in, so that a relative path among its --var
/// values (`backup=app.dump`) names the same file as before: said when that is not the
/// folder this command runs in, and when that folder is not on this host.
fn run_where_it_started(env: &Env, started_in: Option<&str>) {
    let Some(dir) = started_in else { return };
    let here = std::env::current_dir().ok();
    if here.as_deref() == Some(Path::new(dir)) {
        return;
    }
    let message = match std::env::set_current_dir(dir) {
        Ok(()) => format!(
            "the run started in {dir}: it resumes there, so that relative paths in its --var values mean what they meant"
        ),
        Err(e) => format!(
            "the run started in {dir}, which cannot be entered here ({e}): relative paths in its --var values now mean paths in {}",
            here.map(|h| h.display().to_string()).unwrap_or_default()
        ),
    };
    env.reporter.report(&Progress::Warning { message });
}

/// `on_failure(..)`'s closure, when the run failed (not paused, interrupted or refused), or an
/// undo of `resume --undo` did (`undoing`): called with what failed, as the step `on failure
/// (session N)` (each failing session tells once; the handler's calls are never replayed).
/// The run's failure stays as it was: its stop, its failed steps, its message; a failure of
/// the handler itself is a warning.
fn call_failure_handler(
    ctx: &Arc<RunCtx>,
    engine: &rhai::Engine,
    e: &EvalAltResult,
    undoing: bool,
) {
    let stop = ctx.take_stop();
    let (error, step) = match &stop {
        None if !matches!(e, EvalAltResult::ErrorTerminated(..)) => {
            // An undo fails after the replay saw the run's own failure: the undo's is last.
            let failed = ctx.state.failed_steps.lock().unwrap();
            let step = if undoing {
                failed.last()
            } else {
                failed.first()
            }
            .cloned();
            (crate::script::describe_error(e).0, step)
        }
        Some(Stop::Invalid { message, step, .. }) => (message.clone(), Some(step.clone())),
        _ => return,
    };
    let Some((handler, caller)) = ctx.state.handler(Handler::Failure).lock().unwrap().take() else {
        return;
    };
    let failed_steps = ctx.state.failed_steps.lock().unwrap().clone();
    let mut failure = rhai::Map::new();
    failure.insert(
        "run".into(),
        ctx.opts.run_id.clone().map_or(Dynamic::UNIT, Dynamic::from),
    );
    failure.insert(
        "step".into(),
        step.filter(|s| !s.is_empty())
            .map_or(Dynamic::UNIT, |s| Dynamic::from(show_path(&s))),
    );
    failure.insert("error".into(), Dynamic::from(error));
    failure.insert(
        "changed".into(),
        Dynamic::from(ctx.state.wrote.load(std::sync::atomic::Ordering::SeqCst)),
    );
    failure.insert("undoing".into(), Dynamic::from(undoing));
    let changed = ctx.state.wrote.load(std::sync::atomic::Ordering::SeqCst);
    let resume = match &ctx.opts.run_id {
        Some(run) if changed || undoing => Dynamic::from(format!(
            "runbook resume {run}{}{}",
            if undoing { " --undo" } else { "" },
            ctx.opts.invocation.store_flag
        )),
        _ => Dynamic::UNIT,
    };
    failure.insert("resume".into(), resume);

    ctx.clear_stop();
    let path = journal::failure_step(ctx.journal.replay.sessions + 1);
    call_handler(
        ctx,
        engine,
        Handler::Failure,
        (handler, caller),
        path,
        failure,
    );
    if let Some(stop) = stop {
        ctx.set_stop(stop);
    }
    *ctx.state.failed_steps.lock().unwrap() = failed_steps;
}

/// `on_undone(..)`'s closure, once every undo ran: called with the steps undone and those
/// left as they are, as the step `on undone (session N)`.
fn call_undone_handler(
    ctx: &Arc<RunCtx>,
    engine: &rhai::Engine,
    undone: &[StepPath],
    left: &[StepPath],
) {
    let Some(declared) = ctx.state.handler(Handler::Undone).lock().unwrap().take() else {
        return;
    };
    let names = |paths: &[StepPath]| -> Dynamic {
        Dynamic::from_array(paths.iter().map(|p| Dynamic::from(show_path(p))).collect())
    };
    let mut arg = rhai::Map::new();
    arg.insert(
        "run".into(),
        ctx.opts.run_id.clone().map_or(Dynamic::UNIT, Dynamic::from),
    );
    arg.insert("undone".into(), names(undone));
    arg.insert("left".into(), names(left));
    let path = journal::undone_step(ctx.journal.replay.sessions + 1);
    call_handler(ctx, engine, Handler::Undone, declared, path, arg);
}

/// Calls a handler's closure with `arg` as the step `path`; a failure inside it is a warning.
#[allow(deprecated)] // NativeCallContextStore is "volatile", not deprecated
fn call_handler(
    ctx: &Arc<RunCtx>,
    engine: &rhai::Engine,
    which: Handler,
    (handler, caller): (rhai::FnPtr, rhai::NativeCallContextStore),
    path: StepPath,
    arg: rhai::Map,
) {
    let result = ctx.scoped(path.clone(), false, rhai::Position::NONE, |replayed| {
        frames::reset(frames::Frame::new(path.clone(), None, replayed));
        let context = caller.create_context(engine);
        handler.call_within_context::<Dynamic>(&context, (arg,))
    });
    if let Err(e) = result {
        let message = match ctx.take_stop() {
            Some(Stop::Invalid { message, .. }) => message,
            _ => crate::script::describe_error(&e).0,
        };
        ctx.report(Progress::Warning {
            message: format!("the {} handler failed: {message}", which.builtin()),
        });
    }
    ctx.clear_stop();
}

/// A run whose journal could not be written stopped there, before anything went unrecorded
/// (a full disk, a store that stayed away): a failure of the run (exit 1), not of its input,
/// and resumable once the journal can be written again. Nothing more is recorded: it could
/// not be.
fn journal_lost(
    ctx: &RunCtx,
    error: Error,
    (pos, source): (Option<ScriptPos>, Option<&str>),
    elapsed_ms: u64,
) -> Error {
    let next = ctx
        .opts
        .run_id
        .clone()
        .map(|run| Next::JournalWritable { run });
    let message = error.to_string();
    ctx.report(Progress::RunEnded {
        run_id: ctx.opts.run_id.clone(),
        status: RunStatus::Failed,
        elapsed_ms,
        message: Some(message.clone()),
        next: next.clone(),
    });
    Error::run_failed(message, pos, source).with_next(next)
}

/// Records and reports how a run stopped, and returns the error the operator sees, with what
/// to do next. `undoing`: the run was running its undo closures (`resume --undo`).
fn ended_with(
    ctx: &Arc<RunCtx>,
    e: &EvalAltResult,
    file: &str,
    source: &str,
    elapsed_ms: u64,
    undoing: bool,
    script_change: Option<String>,
) -> Error {
    let run_id = ctx.opts.run_id.clone();
    let run = run_id.clone().unwrap_or_default();
    let stop = ctx
        .take_stop()
        .or_else(|| matches!(e, EvalAltResult::ErrorTerminated(..)).then_some(Stop::Interrupted));
    match stop {
        Some(Stop::Paused { reason, next }) => {
            let _ = ctx.journal(
                Event::RunPaused {
                    reason: reason.clone(),
                },
                true,
            );
            ctx.report(Progress::RunEnded {
                run_id,
                status: RunStatus::Paused,
                elapsed_ms,
                message: Some(reason.clone()),
                next: Some(next.clone()),
            });
            Error::Paused { reason, next }
        }
        Some(Stop::Interrupted) => {
            let asked = ctx.state.stopped_by.lock().unwrap().clone();
            let _ = ctx.journal(
                Event::RunInterrupted {
                    reason: asked
                        .as_ref()
                        .map_or_else(stop::signal_reason, |by| format!("stopped {by}")),
                },
                true,
            );
            let message = match &asked {
                Some(by) => format!("stopped after the current action, as asked {by}"),
                None => "stopped after the current action".to_string(),
            };
            let next = Next::Continue { run };
            ctx.report(Progress::RunEnded {
                run_id,
                status: RunStatus::Interrupted,
                elapsed_ms,
                message: Some(message.clone()),
                next: Some(next.clone()),
            });
            Error::Interrupted {
                message,
                next,
                asked,
            }
        }
        Some(Stop::Frontier) => Error::RunFailed {
            message: "the replay stopped where the run had stopped, outside resume --undo".into(),
            pos: None,
            source_line: None,
            next: None,
            shown: false,
        },
        Some(Stop::Mismatch(message)) => replay_refused(
            ctx,
            format!("{message}{}", changed(script_change)),
            "resume stopped before running that call",
            false,
            elapsed_ms,
        ),
        Some(Stop::Edited { message, keys }) => {
            let mut error = replay_refused(
                ctx,
                message,
                "resume stopped there, before running anything",
                false,
                elapsed_ms,
            );
            if let Error::ReplayMismatch { next, .. } = &mut error {
                *next = Next::RestoreInventory {
                    run: ctx.opts.run_id.clone().unwrap_or_default(),
                    keys,
                    approve: ctx.opts.resume_approver.is_some(),
                    undo: false,
                };
            }
            error
        }
        Some(Stop::Invalid {
            message,
            pos,
            step,
            source: module,
        }) => {
            let failed_steps = if step.is_empty() { vec![] } else { vec![step] };
            if ctx.journal_started() {
                let _ = ctx.journal(
                    Event::RunFailed {
                        error: message.clone(),
                        failed_steps,
                    },
                    true,
                );
            }
            ctx.report(Progress::RunEnded {
                run_id: run_id.clone(),
                status: RunStatus::Failed,
                elapsed_ms,
                message: Some(message.clone()),
                next: None,
            });
            let next =
                (run_id.is_some() && ctx.journal_started()).then_some(Next::FixRunbook { run });
            match module.filter(|m| m != file) {
                Some(m) => Error::script(message, crate::script::script_pos(&m, pos), None),
                None => Error::script(message, crate::script::script_pos(file, pos), Some(source)),
            }
            .with_next(next)
        }
        Some(Stop::Refused(error @ Error::Journal { .. })) if ctx.journal_started() => {
            let (_, pos, module) = crate::script::describe_error(e);
            let at = match &module {
                Some(m) if m != file => (crate::script::script_pos(m, pos), None),
                _ => (crate::script::script_pos(file, pos), Some(source)),
            };
            journal_lost(ctx, error, at, elapsed_ms)
        }
        Some(Stop::Refused(error)) => {
            if ctx.journal_started() {
                let _ = ctx.journal(
                    Event::RunFailed {
                        error: error.to_string(),
                        failed_steps: vec![],
                    },
                    true,
                );
            } else if ctx.never_recorded() {
                // The run was announced ("starting run ..") but refused before its first
                // record: say that no such run exists now, so nobody looks for it.
                ctx.report(Progress::RunEnded {
                    run_id,
                    status: RunStatus::Refused,
                    elapsed_ms,
                    message: Some("nothing ran, and the run is not kept".into()),
                    next: None,
                });
            }
            error
        }
        None => {
            let (message, pos, module) = crate::script::describe_error(e);
            let failed_steps = ctx.state.failed_steps.lock().unwrap().clone();
            let _ = ctx.journal(
                Event::RunFailed {
                    error: message.clone(),
                    failed_steps: failed_steps.clone(),
                },
                true,
            );
            // Undoing, the replay saw the run's own failure first: the undo's is the last.
            let where_ = if undoing {
                failed_steps.last()
            } else {
                failed_steps.first()
            }
            .map(|s| format!("in step '{}': ", show_path(s)))
            .unwrap_or_default();
            let shown = ctx.shown_before(&message);
            if ctx.opts.dry_run {
                ctx.report(Progress::Plan {
                    entries: ctx.state.plan.lock().unwrap().clone(),
                    failed: true,
                });
            }
            let next = if ctx.opts.dry_run || run_id.is_none() {
                None
            } else if !ctx.state.wrote.load(std::sync::atomic::Ordering::SeqCst) {
                Some(Next::RunAgain {
                    command: run_again(&ctx.opts),
                })
            } else {
                Some(Next::FixCause {
                    run,
                    undo: undoing,
                    undoable: if ctx.opts.undo_mode {
                        0
                    } else {
                        ctx.state.undo.lock().unwrap().len()
                    },
                })
            };
            ctx.report(Progress::RunEnded {
                run_id,
                status: RunStatus::Failed,
                elapsed_ms,
                message: Some(format!("{where_}{message}")),
                next: next.clone(),
            });
            let (pos, src) = match &module {
                Some(m) if m != file => (crate::script::script_pos(m, pos), None),
                _ => (crate::script::script_pos(file, pos), Some(source)),
            };
            let text = format!("{where_}{message}");
            if is_script_mistake(e) {
                Error::script(text, pos, src)
            } else {
                Error::run_failed(text, pos, src)
            }
            .with_next(next)
            .shown_above(shown)
        }
    }
}

/// Whether an error is Rhai's own (a type mismatch, an unknown function): a mistake in the
/// script, not a failure of the procedure (`fail(..)` or an action).
fn is_script_mistake(e: &EvalAltResult) -> bool {
    let mut current = e;
    while let EvalAltResult::ErrorInFunctionCall(_, _, inner, _)
    | EvalAltResult::ErrorInModule(_, inner, _) = current
    {
        current = inner;
    }
    !matches!(current, EvalAltResult::ErrorRuntime(..))
}

/// `resume --undo` refused before undoing anything: the journal records changes that the
/// script, as it is now, stops before reaching (a step was added or moved since the run started).
fn undo_refused(
    ctx: &Arc<RunCtx>,
    unreached: &[String],
    script_change: Option<String>,
    started: Instant,
) -> Error {
    replay_refused(
        ctx,
        format!(
            "resume --undo stopped before undoing anything: the runbook, as it is now, stops \
             before reaching changes this run made, so it cannot undo them: {}{}",
            unreached.join("; "),
            changed(script_change)
        ),
        "nothing was undone and the run is as it was",
        true,
        started.elapsed().as_millis() as u64,
    )
}

/// "\nthe runbook changed since the run started:" and the diff, when it did.
fn changed(script_change: Option<String>) -> String {
    script_change
        .map(|d| {
            format!(
                "\nthe runbook changed since the run started:\n{}",
                d.trim_end()
            )
        })
        .unwrap_or_default()
}

/// A resume the journal refuses (RB-REPLAY-001): what happened, what did not, and how to go on
/// with the runbook as it was (`undo`: the resume was `--undo`).
fn replay_refused(
    ctx: &Arc<RunCtx>,
    message: String,
    stopped: &str,
    undo: bool,
    elapsed_ms: u64,
) -> Error {
    let run = ctx.opts.run_id.clone().unwrap_or_default();
    keep_status(ctx);
    ctx.report(Progress::RunEnded {
        run_id: ctx.opts.run_id.clone(),
        status: RunStatus::Refused,
        elapsed_ms,
        message: None,
        next: None,
    });
    Error::ReplayMismatch {
        message: format!("{message}\n{stopped}"),
        next: Next::RestoreRunbook {
            run,
            approve: ctx.opts.resume_approver.is_some(),
            undo,
        },
    }
}

/// 'a', 'b › c': steps as messages name them.
fn quoted(paths: &[StepPath]) -> String {
    paths
        .iter()
        .map(|p| format!("'{}'", show_path(p)))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Steps with changes that no undo covers: neither undone themselves nor inside a step that was.
fn kept_changes(ctx: &RunCtx, undone: &[StepPath]) -> Vec<StepPath> {
    ctx.steps_with_changes()
        .into_iter()
        .filter(|p| !undone.iter().any(|u| p.starts_with(u)))
        .collect()
}

/// A refused resume leaves the run as it was: the previous session's end (paused, failed,
/// interrupted) is recorded again after this session's start, instead of the run reading as
/// crashed.
fn keep_status(ctx: &RunCtx) {
    if let Some(end) = ctx.journal.replay.last_end.clone() {
        let _ = ctx.journal(end, true);
    }
}

/// `resume --undo` of a run none of whose finished steps declares an undo: refused, so that
/// the run stays as it was (resumable, or to abandon) instead of closing as "undone".
fn nothing_to_undo(ctx: &Arc<RunCtx>, started: Instant) -> Error {
    let run = ctx.opts.run_id.clone().unwrap_or_default();
    keep_status(ctx);
    let kept = kept_changes(ctx, &[]);
    let changes = if kept.is_empty() {
        "it made no change".to_string()
    } else {
        format!("its changes ({}) stay as they are", quoted(&kept))
    };
    ctx.report(Progress::RunEnded {
        run_id: ctx.opts.run_id.clone(),
        status: RunStatus::Refused,
        elapsed_ms: started.elapsed().as_millis() as u64,
        message: None,
        next: None,
    });
    Error::Refused {
        message: format!(
            "run {run} has nothing to undo: no finished step declares an undo, and {changes}. The run is as it was"
        ),
        next: Next::ResumeOrAbandon {
            run,
            awaiting: ctx.journal.replay.awaiting,
        },
    }
}

/// Runs the undo closures of the finished steps, latest first, each as a step `undo › ..`.
fn undo(
    ctx: &Arc<RunCtx>,
    engine: &rhai::Engine,
    started: Instant,
    file: &str,
    source: &str,
) -> Result<(), Error> {
    let undos: Vec<_> = ctx.state.undo.lock().unwrap().drain(..).rev().collect();
    if undos.is_empty() {
        // Calling the run undone would close it with every change in place.
        return Err(nothing_to_undo(ctx, started));
    }
    let mut undone = Vec::new();
    for (path, closure, caller) in undos {
        let mut undo_path = vec![journal::UNDO.to_string()];
        undo_path.extend(path.iter().cloned());
        let result = ctx.scoped(undo_path.clone(), false, rhai::Position::NONE, |replayed| {
            frames::reset(frames::Frame::new(undo_path.clone(), None, replayed));
            #[allow(deprecated)] // "volatile", not deprecated
            let context = caller.create_context(engine);
            closure.call_within_context::<Dynamic>(&context, ())
        });
        if let Err(e) = result {
            // The team heard the run failed; an undo that fails too is theirs to hear.
            call_failure_handler(ctx, engine, &e, true);
            let elapsed_ms = started.elapsed().as_millis() as u64;
            let err = ended_with(ctx, &e, file, source, elapsed_ms, true, None);
            ctx.sync_journal();
            return Err(err);
        }
        undone.push(path);
    }
    let kept = kept_changes(ctx, &undone);
    // The team heard the run failed; that its changes were reversed is theirs to hear too.
    call_undone_handler(ctx, engine, &undone, &kept);
    let elapsed_ms = started.elapsed().as_millis() as u64;
    ctx.journal(
        Event::RunUndone {
            undone_steps: undone.clone(),
        },
        true,
    )?;
    let mut message = format!("undid {}", quoted(&undone));
    if !kept.is_empty() {
        message.push_str(&format!(
            "; left as they are (no undo declared): {}",
            quoted(&kept)
        ));
    }
    ctx.report(Progress::RunEnded {
        run_id: ctx.opts.run_id.clone(),
        status: RunStatus::Undone,
        elapsed_ms,
        message: Some(message),
        next: None,
    });
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::{masked_passwords, unused_run_id};
    use serde_json::json;

    #[test]
    fn the_urls_whose_password_the_journal_masked_are_named_by_their_keys() {
        let cases = [
            ("no URL", json!({"primary_region": "us-east-1"}), vec![]),
            (
                "a URL without a password",
                json!({"db": "postgres://app@db:5432/orders"}),
                vec![],
            ),
            (
                "nested, and in a list",
                json!({
                    "regions": {"us-east-1": {"database_url": "postgres://app:***@db:5432/o", "lb_ip": "10.0.0.1"}},
                    "redis": ["redis://:***@cache:6379", "redis://cache:6380"],
                }),
                vec!["regions.us-east-1.database_url", "redis.0"],
            ),
            (
                "a password given by reference stays a reference",
                json!({"db": {"env": "ORDERS_URL"}}),
                vec![],
            ),
        ];
        for (name, inventory, want) in cases {
            assert_eq!(masked_passwords(&inventory, ""), want, "{name}");
        }
    }

    #[test]
    fn a_run_id_already_in_the_store_is_drawn_again() {
        let taken = |ids: Vec<&'static str>| move |id: &str| ids.contains(&id);
        let cases: [(&str, Vec<&'static str>, Vec<&str>, &str); 3] = [
            ("free at once", vec![], vec!["a", "b"], "a"),
            (
                "the first two taken",
                vec!["a", "b"],
                vec!["a", "b", "c"],
                "c",
            ),
            (
                "taken ids elsewhere do not matter",
                vec!["x"],
                vec!["a"],
                "a",
            ),
        ];
        for (why, store, draws, want) in cases {
            let mut draws = draws.into_iter().map(str::to_string);
            let id = unused_run_id(taken(store), || draws.next().unwrap());
            assert_eq!(id, want, "{why}");
        }
    }
}
