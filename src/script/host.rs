//! What a runbook's built-ins ask of whatever runs the script. The script layer owns this
//! trait; the runner implements it for a run. Where a script is only compiled and linted
//! (`runbook check`, editor definitions), [`NoHost`] stands in: nothing runs, no runtime is
//! started, no context is faked.

use std::sync::Arc;

use rhai::{Dynamic, EvalAltResult, FnPtr, Map, NativeCallContext, Position};

use crate::action::{DynAction, Invocation, Registry};
use crate::secret::Secret;

pub type RhaiResult<T = Dynamic> = Result<T, Box<EvalAltResult>>;

pub trait Host: Send + Sync + 'static {
    /// The actions the namespaces expose.
    fn registry(&self) -> &Registry;
    /// A dry-run: writes are predicted (`is_dry_run()`).
    fn dry_run(&self) -> bool;
    /// Ctrl-C was pressed: the script stops at its next operation.
    fn cancelled(&self) -> bool;
    /// A built-in is about to run, called from `source` (a module's name, or none for the
    /// runbook): errors point at the right file.
    fn enter(&self, source: Option<&str>);
    /// A mistake in the script found while running (exit 2; not catchable by `try`).
    fn invalid(&self, message: String, pos: Position) -> Box<EvalAltResult>;

    fn call_action(&self, action: &Arc<dyn DynAction>, arg: Dynamic, pos: Position) -> RhaiResult;
    fn step(
        &self,
        ncx: &NativeCallContext,
        name: &str,
        opts: Option<Map>,
        body: FnPtr,
    ) -> RhaiResult;
    fn parallel(
        &self,
        ncx: &NativeCallContext,
        items: rhai::Array,
        limit: Option<usize>,
        body: FnPtr,
    ) -> RhaiResult;
    fn approve(&self, message: &str, pos: Position) -> RhaiResult<bool>;
    fn sleep(&self, duration: &str, pos: Position) -> RhaiResult<()>;
    fn log(&self, message: String);
    /// A named result of the run, for its report.
    fn result(&self, name: &str, value: serde_json::Value);
    fn secret(&self, name: &str, pos: Position) -> RhaiResult<Secret>;
    fn lock(&self, name: &str, pos: Position) -> RhaiResult<()>;
    /// `params(#{..})`: the `--var` values, checked against the declarations.
    fn params(&self, decls: Map, pos: Position) -> RhaiResult<Map>;
    /// `on_failure(|failure| ..)` or `on_undone(|undone| ..)`: the closure to call when the
    /// run ends so.
    fn handler(&self, ncx: &NativeCallContext, which: Handler, closure: FnPtr) -> RhaiResult<()>;
    /// How the run was started, for the commands the runbook spells (`runbook_command`).
    fn started_as(&self) -> Arc<Invocation>;
}

/// The closures a runbook hands the engine for how a run ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Handler {
    /// `on_failure(|f| ..)`: the run failed, or an undo of `resume --undo` did.
    Failure,
    /// `on_undone(|u| ..)`: `resume --undo` undid the run.
    Undone,
}

impl Handler {
    /// The built-in that declares it.
    pub fn builtin(self) -> &'static str {
        match self {
            Handler::Failure => "on_failure",
            Handler::Undone => "on_undone",
        }
    }
}

/// The host of a script that is compiled, never run.
pub struct NoHost {
    registry: Registry,
}

impl Default for NoHost {
    fn default() -> Self {
        NoHost {
            registry: Registry::standard(),
        }
    }
}

fn not_running(pos: Position) -> Box<EvalAltResult> {
    Box::new(EvalAltResult::ErrorRuntime(
        "this script is only being checked, not run".into(),
        pos,
    ))
}

impl Host for NoHost {
    fn registry(&self) -> &Registry {
        &self.registry
    }
    fn dry_run(&self) -> bool {
        true
    }
    fn cancelled(&self) -> bool {
        false
    }
    fn enter(&self, _: Option<&str>) {}
    fn invalid(&self, message: String, pos: Position) -> Box<EvalAltResult> {
        Box::new(EvalAltResult::ErrorRuntime(message.into(), pos))
    }
    fn call_action(&self, _: &Arc<dyn DynAction>, _: Dynamic, pos: Position) -> RhaiResult {
        Err(not_running(pos))
    }
    fn step(&self, ncx: &NativeCallContext, _: &str, _: Option<Map>, _: FnPtr) -> RhaiResult {
        Err(not_running(ncx.call_position()))
    }
    fn parallel(
        &self,
        ncx: &NativeCallContext,
        _: rhai::Array,
        _: Option<usize>,
        _: FnPtr,
    ) -> RhaiResult {
        Err(not_running(ncx.call_position()))
    }
    fn approve(&self, _: &str, pos: Position) -> RhaiResult<bool> {
        Err(not_running(pos))
    }
    fn sleep(&self, _: &str, pos: Position) -> RhaiResult<()> {
        Err(not_running(pos))
    }
    fn log(&self, _: String) {}
    fn result(&self, _: &str, _: serde_json::Value) {}
    fn secret(&self, name: &str, _: Position) -> RhaiResult<Secret> {
        Ok(Secret::placeholder(name))
    }
    fn lock(&self, _: &str, _: Position) -> RhaiResult<()> {
        Ok(())
    }
    fn params(&self, _: Map, pos: Position) -> RhaiResult<Map> {
        Err(not_running(pos))
    }
    fn handler(&self, _: &NativeCallContext, _: Handler, _: FnPtr) -> RhaiResult<()> {
        Ok(())
    }
    fn started_as(&self) -> Arc<Invocation> {
        Arc::default()
    }
}
