//! The runner answering a script's built-ins: what `step`, `approve`, `sleep`, an action call
//! and the rest mean in a run (journaled, replayed, predicted in a dry-run).

use std::sync::atomic::Ordering;
use std::sync::Arc;

use rhai::{Dynamic, EvalAltResult, FnPtr, Map, NativeCallContext, Position};

use super::ctx::{RhaiResult, RunCtx, Stop};
use super::frames;
use crate::action::{DynAction, Registry};
use crate::journal::LockHolder;
use crate::script::{Handler, Host};
use crate::secret::Secret;

impl Host for RunCtx {
    fn registry(&self) -> &Registry {
        &self.registry
    }

    fn dry_run(&self) -> bool {
        self.opts.dry_run
    }

    fn cancelled(&self) -> bool {
        self.cancel.load(Ordering::Relaxed)
    }

    fn enter(&self, source: Option<&str>) {
        frames::set_source(source);
    }

    fn invalid(&self, message: String, pos: Position) -> Box<EvalAltResult> {
        RunCtx::invalid(self, message, pos)
    }

    fn call_action(&self, action: &Arc<dyn DynAction>, arg: Dynamic, pos: Position) -> RhaiResult {
        RunCtx::call_action(self, action, arg, pos)
    }

    fn step(
        &self,
        ncx: &NativeCallContext,
        name: &str,
        opts: Option<Map>,
        body: FnPtr,
    ) -> RhaiResult {
        RunCtx::step(self, ncx, name, opts, body)
    }

    fn parallel(
        &self,
        ncx: &NativeCallContext,
        items: rhai::Array,
        limit: Option<usize>,
        body: FnPtr,
    ) -> RhaiResult {
        RunCtx::parallel(self, ncx, items, limit, body)
    }

    fn approve(&self, message: &str, pos: Position) -> RhaiResult<bool> {
        RunCtx::approve(self, message, pos)
    }

    fn sleep(&self, duration: &str, pos: Position) -> RhaiResult<()> {
        RunCtx::sleep(self, duration, pos)
    }

    fn log(&self, message: String) {
        RunCtx::log(self, message)
    }

    fn result(&self, name: &str, value: serde_json::Value) {
        RunCtx::result(self, name, value)
    }

    fn secret(&self, name: &str, pos: Position) -> RhaiResult<Secret> {
        match Secret::from_env(name, &self.redactor) {
            Ok(s) => Ok(s),
            Err(_) if self.opts.dry_run && self.opts.offline => Ok(Secret::placeholder(name)),
            Err(e) => Err(RunCtx::invalid(
                self,
                format!("secret(\"{name}\"): {e}; export it before running"),
                pos,
            )),
        }
    }

    fn lock(&self, name: &str, pos: Position) -> RhaiResult<()> {
        // A dry-run changes nothing, so it excludes nobody: a plan can be made while a real
        // run holds the lock (the run's own default lock is not taken either).
        let Some(store) = self.store.clone().filter(|_| !self.opts.dry_run) else {
            return Ok(());
        };
        let holder = LockHolder {
            run_id: self.opts.run_id.clone().unwrap_or_default(),
            runbook: self.opts.runbook.clone(),
            operator: self.opts.operator.clone(),
            host: self.opts.host.clone(),
            pid: std::process::id(),
            since: crate::journal::timestamp(),
        };
        match super::take_lock(store.as_ref(), self.reporter.as_ref(), name, &holder) {
            Ok(guard) => {
                self.state.locks.lock().unwrap().push(guard);
                Ok(())
            }
            Err(e) => {
                self.set_stop(Stop::Refused(e));
                Err(Box::new(EvalAltResult::ErrorTerminated(Dynamic::UNIT, pos)))
            }
        }
    }

    fn handler(&self, ncx: &NativeCallContext, which: Handler, closure: FnPtr) -> RhaiResult<()> {
        let mut slot = self.state.handler(which).lock().unwrap();
        if slot.is_some() {
            return Err(self.invalid(
                format!(
                    "{}(..) is declared twice; one handler per run",
                    which.builtin()
                ),
                ncx.call_position(),
            ));
        }
        #[allow(deprecated)] // "volatile", not deprecated
        let caller = ncx.store_data();
        *slot = Some((closure, caller));
        Ok(())
    }

    fn params(&self, decls: Map, pos: Position) -> RhaiResult<Map> {
        if self.state.params_declared.swap(true, Ordering::SeqCst) {
            return Err(Box::new(EvalAltResult::ErrorRuntime(
                "params(..) is declared twice; declare every parameter in one call".into(),
                pos,
            )));
        }
        crate::script::resolve_params(&decls, &self.opts.vars, self.opts.regions.as_ref()).map_err(
            |problems| {
                self.set_stop(Stop::Refused(crate::error::Error::invalid_params(
                    &problems,
                )));
                Box::new(EvalAltResult::ErrorTerminated(Dynamic::UNIT, pos))
            },
        )
    }

    fn started_as(&self) -> Arc<crate::action::Invocation> {
        self.opts.started_as.clone()
    }
}
