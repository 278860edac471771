//! Resolves `import "name" as m;`: a path relative to the runbook (`"./lib/x"`), then a
//! module in `$RUNBOOK_STDLIB` (a local folder overrides the shipped stdlib), then the stdlib
//! embedded in the binary.

use std::path::PathBuf;

use rhai::{Engine, EvalAltResult, Module, ModuleResolver, Position, Scope, Shared};

/// The shipped stdlib: (name, source).
pub const STDLIB: &[(&str, &str)] = &[
    ("backup", include_str!("../../stdlib/backup.rhai")),
    ("cdn", include_str!("../../stdlib/cdn.rhai")),
    ("cluster", include_str!("../../stdlib/cluster.rhai")),
    ("database", include_str!("../../stdlib/database.rhai")),
    ("health", include_str!("../../stdlib/health.rhai")),
    ("incident", include_str!("../../stdlib/incident.rhai")),
    ("mesh", include_str!("../../stdlib/mesh.rhai")),
    ("regions", include_str!("../../stdlib/regions.rhai")),
    ("replication", include_str!("../../stdlib/replication.rhai")),
    ("standby", include_str!("../../stdlib/standby.rhai")),
    ("traffic", include_str!("../../stdlib/traffic.rhai")),
];

/// What can be imported, for messages.
pub fn known_modules() -> String {
    let known: Vec<_> = STDLIB.iter().map(|(n, _)| *n).collect();
    format!(
        "the stdlib has {}; a local file is imported as \"./path\"",
        known.join(", ")
    )
}

pub struct StdlibResolver {
    base_dir: PathBuf,
}

impl StdlibResolver {
    pub fn new(base_dir: PathBuf) -> Self {
        StdlibResolver { base_dir }
    }

    /// The module's file name and text.
    pub fn source(&self, path: &str) -> Option<(String, String)> {
        let file = if path.ends_with(".rhai") {
            path.to_string()
        } else {
            format!("{path}.rhai")
        };
        if path.starts_with("./") || path.starts_with("../") || path.starts_with('/') {
            let p = self.base_dir.join(&file);
            // Named without the "./" of a runbook in the current folder: lib/util.rhai.
            let shown: PathBuf = p
                .components()
                .filter(|c| !matches!(c, std::path::Component::CurDir))
                .collect();
            return std::fs::read_to_string(&p)
                .ok()
                .map(|s| (shown.display().to_string(), s));
        }
        if let Ok(dir) = std::env::var("RUNBOOK_STDLIB") {
            let p = PathBuf::from(dir).join(&file);
            if let Ok(s) = std::fs::read_to_string(&p) {
                return Some((p.display().to_string(), s));
            }
        }
        STDLIB
            .iter()
            .find(|(name, _)| *name == path)
            .map(|(name, src)| (format!("stdlib/{name}.rhai"), src.to_string()))
    }
}

impl ModuleResolver for StdlibResolver {
    fn resolve(
        &self,
        engine: &Engine,
        _: Option<&str>,
        path: &str,
        pos: Position,
    ) -> Result<Shared<Module>, Box<EvalAltResult>> {
        let Some((name, source)) = self.source(path) else {
            return Err(Box::new(EvalAltResult::ErrorRuntime(
                format!("no module '{path}': {}", known_modules()).into(),
                pos,
            )));
        };
        let mut ast = engine.compile(&source).map_err(|e| {
            Box::new(EvalAltResult::ErrorInModule(
                name.clone(),
                Box::new(EvalAltResult::ErrorParsing(
                    e.err_type().clone(),
                    e.position(),
                )),
                pos,
            ))
        })?;
        ast.set_source(name.as_str());
        let mut module = Module::eval_ast_as_new(Scope::new(), &ast, engine)
            .map_err(|e| Box::new(EvalAltResult::ErrorInModule(name.clone(), e, pos)))?;
        module.set_id(name.as_str());
        Ok(module.into())
    }
}
