//! The Rhai side: the engine a runbook runs in, its built-in functions, the action
//! namespaces, the stdlib resolver, and how script errors are described.

mod builtins;
pub mod host;
pub mod lint;
pub mod options;
mod params;
pub(crate) mod stdlib;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rhai::{Dynamic, Engine, EvalAltResult, Position, Scope, AST};

pub use builtins::ActionDocs;
pub use host::{Handler, Host, NoHost};
pub use params::{
    declared as declared_params, describe as describe_params, resolve_params, Regions,
};
pub use stdlib::{StdlibResolver, STDLIB};

use crate::error::{Error, ScriptPos};

/// Limits that keep a runaway script from hanging a run forever or eating memory.
pub struct Limits {
    pub max_operations: u64,
}

impl Default for Limits {
    fn default() -> Self {
        // Two hundred million operations is minutes of pure computation; a runbook spends
        // its time in actions, which do not count.
        let max_operations = std::env::var("RUNBOOK_MAX_OPERATIONS")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(200_000_000);
        Limits { max_operations }
    }
}

/// An engine with the runbook surface registered, its built-ins answered by `host`.
pub fn engine(host: Arc<dyn Host>, base_dir: PathBuf, limits: &Limits) -> Engine {
    engine_with_docs(host, base_dir, limits, None)
}

/// An engine whose actions carry their documentation, for editor definitions.
pub fn engine_with_docs(
    host: Arc<dyn Host>,
    base_dir: PathBuf,
    limits: &Limits,
    docs: Option<&ActionDocs>,
) -> Engine {
    let mut engine = Engine::new();
    engine.set_strict_variables(true);
    engine.set_optimization_level(rhai::OptimizationLevel::Simple);
    engine.set_max_operations(limits.max_operations);
    // Runbooks nest closures (steps) and interpolations deeper than Rhai's defaults allow.
    engine.set_max_expr_depths(256, 128);
    engine.set_max_string_size(64 << 20);
    engine.set_max_array_size(1_000_000);
    engine.set_max_map_size(1_000_000);
    engine.set_module_resolver(StdlibResolver::new(base_dir));
    allow_default_keyword(&mut engine);
    builtins::register(&mut engine, host, docs);
    engine
}

/// `default` is reserved by Rhai but unused by its syntax; parameter declarations need it as
/// a map key: params(#{ region: #{ default: "eu-west-1" } }).
fn allow_default_keyword(engine: &mut Engine) {
    #[allow(deprecated)] // "volatile", not deprecated
    engine.on_parse_token(|token, _, _| match token {
        rhai::Token::Reserved(s) if s.as_str() == "default" => rhai::Token::Identifier(s),
        other => other,
    });
}

/// An engine that only parses (modules, for lint).
pub fn parser() -> Engine {
    let mut engine = Engine::new_raw();
    engine.set_max_expr_depths(256, 128);
    allow_default_keyword(&mut engine);
    engine
}

/// The scope a runbook starts with: its `inventory`.
pub fn scope(inventory: Dynamic) -> Scope<'static> {
    let mut scope = Scope::new();
    scope.push_constant("inventory", inventory);
    scope
}

/// Compiles a runbook, turning a parse error into a message with its position.
///
/// `inventory` is declared to the compiler as a variable, not as the constant it runs as
/// (`scope`): Rhai's optimiser propagates a scope constant into every function body too, over
/// a parameter of the same name, so `fn f(inventory) { g(inventory) }` would pass the run's
/// inventory whatever `f` was given. Assigning to it still fails when it runs.
pub fn compile(engine: &Engine, file: &str, source: &str) -> Result<AST, Error> {
    let mut declared = Scope::new();
    declared.push("inventory", Dynamic::UNIT);
    let mut ast = engine.compile_with_scope(&declared, source).map_err(|e| {
        let pos = e.position();
        let message = match e.err_type() {
            rhai::ParseErrorType::ModuleUndefined(name) => {
                let namespaces: Vec<&str> = crate::action::Registry::standard().namespaces();
                format!(
                    "unknown namespace `{name}`{}; the namespaces are {} (and modules you import)",
                    crate::suggest::suggest(name, namespaces.iter().copied()),
                    namespaces.join(", ")
                )
            }
            other => other.to_string(),
        };
        Error::script(
            format!("{file} does not compile: {message}"),
            script_pos(file, pos),
            Some(source),
        )
    })?;
    ast.set_source(file);
    Ok(ast)
}

/// A runbook's syntax tree as written: unoptimized (no constant folded away) and without a
/// scope, for reading it rather than running it. None when it does not parse.
pub(crate) fn parse_plain(source: &str) -> Option<AST> {
    let mut engine = parser();
    engine.set_optimization_level(rhai::OptimizationLevel::None);
    engine.compile(source).ok()
}

/// A function of a script (a closure is one too, named `anon$..`, its captured variables
/// among its parameters): its name, parameters and the span of its body, as (line, column).
pub(crate) struct FnSpan {
    pub name: String,
    pub params: Vec<String>,
    pub start: (usize, usize),
    pub end: (usize, usize),
}

/// A position as (line, column), for comparing.
pub(crate) fn line_col(p: Position) -> (usize, usize) {
    (p.line().unwrap_or(0), p.position().unwrap_or(0))
}

/// The functions of a script with the spans of their bodies.
pub(crate) fn fn_spans(ast: &AST) -> Vec<FnSpan> {
    ast.iter_fn_def()
        .map(|f| FnSpan {
            name: f.name.to_string(),
            params: f.params.iter().map(|p| p.to_string()).collect(),
            start: line_col(f.body.start_position()),
            end: line_col(f.body.end_position()),
        })
        .collect()
}

/// The innermost of `spans` whose body holds `pos`; None in the main body. (Rhai records no
/// end for a closure's body without braces: such a closure holds nothing here.)
pub(crate) fn innermost(spans: &[FnSpan], pos: Position) -> Option<usize> {
    let at = line_col(pos);
    spans
        .iter()
        .enumerate()
        .filter(|(_, f)| f.start <= at && at <= f.end)
        .min_by_key(|(_, f)| (f.end.0 - f.start.0, f.end.1.abs_diff(f.start.1)))
        .map(|(i, _)| i)
}

/// How a script uses a variable of the runbook's (its `inventory`), as written.
#[derive(Debug, Default)]
pub(crate) struct Uses {
    /// Reads of the runbook's variable: in its main body or a closure there (function None),
    /// or in a named function that has no variable of that name of its own (a parameter, a
    /// `let`) — a read that fails when it runs, a Rhai function seeing only its own. Reads of
    /// a function's own variable are not listed.
    pub reads: Vec<(Position, Option<String>)>,
    /// Assignments to the runbook's variable outside any named function.
    pub assigned: Vec<Position>,
}

/// Where `plain` (a tree from [`parse_plain`]) reads and assigns the runbook's `name`.
pub(crate) fn uses(plain: &AST, name: &str) -> Uses {
    use rhai::{ASTNode, Expr, Stmt};
    let spans = fn_spans(plain);
    // The named function a position is in (a closure's body belongs to it); None at the top.
    let named =
        |pos: Position| innermost(&spans, pos).filter(|&i| !spans[i].name.starts_with("anon$"));
    let mut reads = Vec::new();
    let mut assigned = Vec::new();
    let mut declared = std::collections::HashSet::new();
    plain.walk(&mut |path: &[ASTNode]| {
        match path.last() {
            Some(ASTNode::Expr(Expr::Variable(v, _, pos))) if v.1 == name && v.2.is_empty() => {
                reads.push((*pos, named(*pos)))
            }
            Some(ASTNode::Stmt(Stmt::Var(x, _, pos))) if x.0.name == name => {
                declared.extend(named(*pos));
            }
            Some(ASTNode::Stmt(Stmt::Assignment(x))) => {
                if let Expr::Variable(v, _, pos) = &x.1.lhs {
                    if v.1 == name && v.2.is_empty() && named(*pos).is_none() {
                        assigned.push(*pos);
                    }
                }
            }
            _ => {}
        }
        true
    });
    let own = |i: usize| declared.contains(&i) || spans[i].params.iter().any(|p| p == name);
    let mut reads: Vec<(Position, Option<String>)> = reads
        .into_iter()
        .filter(|(_, f)| f.is_none_or(|i| !own(i)))
        .map(|(pos, f)| (pos, f.map(|i| spans[i].name.clone())))
        .collect();
    reads.sort_by_key(|(pos, _)| line_col(*pos));
    Uses { reads, assigned }
}

/// Where a runbook first reads its own `name` (its `inventory`) in its main body or a closure
/// there; None when it never does. A function's parameter of that name is the function's own.
pub fn first_read(plain: &AST, name: &str) -> Option<Position> {
    uses(plain, name)
        .reads
        .into_iter()
        .find_map(|(pos, f)| f.is_none().then_some(pos))
}

pub fn script_pos(file: &str, pos: Position) -> Option<ScriptPos> {
    pos.line().map(|line| ScriptPos {
        file: file.into(),
        line,
        column: pos.position().unwrap_or(0),
    })
}

/// The innermost message of a script error, where it happened, and in which module.
pub fn describe_error(e: &EvalAltResult) -> (String, Position, Option<String>) {
    let mut source = None;
    let mut current = e;
    loop {
        match current {
            EvalAltResult::ErrorInFunctionCall(_, src, inner, _) => {
                if !src.is_empty() {
                    source = Some(src.clone());
                }
                current = inner;
            }
            EvalAltResult::ErrorInModule(name, inner, _) => {
                source = Some(name.clone());
                current = inner;
            }
            _ => break,
        }
    }
    let pos = current.position();
    let message = match current {
        EvalAltResult::ErrorTooManyOperations(_) => format!(
            "the runbook ran more than {} operations without finishing: a loop that never ends? \
             (a long wait belongs in sleep(..) or an action; RUNBOOK_MAX_OPERATIONS raises the limit)",
            Limits::default().max_operations
        ),
        EvalAltResult::ErrorRuntime(v, _) => {
            if v.is_string() {
                v.clone().into_string().unwrap_or_default()
            } else {
                v.to_string()
            }
        }
        EvalAltResult::ErrorFunctionNotFound(signature, _) => misused_builtin(signature)
            .unwrap_or_else(|| format!("Function not found: {signature}")),
        other => {
            let text = other.to_string();
            match text.rfind(" (line ") {
                Some(at) if text.ends_with(')') => text[..at].to_string(),
                _ => text,
            }
        }
    };
    (message, pos, source)
}

/// "step(..) was given (string, string); it is called as step(name, || { .. }) or ..." for a
/// built-in called with arguments of the wrong kinds. None for any other missing function.
fn misused_builtin(signature: &str) -> Option<String> {
    let (name, args) = signature.split_once(" (")?;
    let form = lint::builtin_form(name)?;
    // Rhai lists each argument's type, a string as "&str | ImmutableString | String".
    let kinds: Vec<&str> = args
        .trim_end_matches(')')
        .split(", ")
        .map(|a| {
            let a = a.trim();
            if a.contains("ImmutableString") {
                "string"
            } else if a == "Fn" || a.ends_with("FnPtr") {
                "closure"
            } else if a.ends_with("Map") {
                "map"
            } else if a.ends_with("Array") {
                "array"
            } else if a == "i64" {
                "int"
            } else if a == "f64" {
                "float"
            } else if a == "bool" {
                "bool"
            } else if a == "()" {
                "()"
            } else {
                a.rsplit("::").next().unwrap_or(a)
            }
        })
        .collect();
    Some(format!(
        "{name}(..) was given ({}); it is called as {form}",
        kinds.join(", ")
    ))
}

/// A runbook's text; one that cannot be read is named, with the file meant when the name is
/// misspelt.
pub fn read_script(path: &Path) -> Result<String, Error> {
    std::fs::read_to_string(path).map_err(|e| {
        Error::Usage(format!(
            "cannot read runbook {}: {e}{}",
            path.display(),
            crate::suggest::nearby_file(path)
        ))
    })
}

/// The folder a runbook's imports and relative paths are resolved from.
pub fn base_dir(script: &Path) -> PathBuf {
    script
        .parent()
        .map(Path::to_path_buf)
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or_else(|| ".".into())
}

/// `runbook check`: compiles and lints one runbook, running nothing.
pub fn check_file(path: &Path) -> Result<String, Vec<Error>> {
    let file = path.display().to_string();
    let source = read_script(path).map_err(|e| vec![e])?;
    let host = Arc::new(NoHost::default());
    let resolver = StdlibResolver::new(base_dir(path));
    let engine = engine(host.clone(), base_dir(path), &Default::default());
    let ast = compile(&engine, &file, &source).map_err(|e| vec![e])?;
    let plain = parse_plain(&source).unwrap_or_default();
    let problems = lint::lint(
        &engine,
        &ast,
        &plain,
        host.registry(),
        &resolver,
        &file,
        &source,
    );
    if !problems.is_empty() {
        return Err(problems);
    }
    let lines = source.lines().count();
    let functions = ast
        .iter_functions()
        .filter(|f| !f.name.starts_with("anon$"))
        .count();
    let plural =
        |n: usize, one: &str, many: &str| format!("{n} {}", if n == 1 { one } else { many });
    Ok(format!(
        "{}, {}",
        plural(lines, "line", "lines"),
        plural(functions, "function", "functions")
    ))
}

/// `runbook check --params`: the parameters a runbook declares, a line each (see
/// [`describe_params`]), or a line saying why they cannot be listed.
pub fn parameter_lines(path: &Path) -> Vec<String> {
    let decls = read_script(path)
        .ok()
        .and_then(|source| parse_plain(&source))
        .and_then(|plain| declared_params(&plain));
    match decls {
        Some(d) if d.is_empty() => vec!["no parameters".into()],
        Some(d) => describe_params(&d),
        None => vec!["parameters built when it runs: not listed".into()],
    }
}

/// Writes Rhai definition files (`*.d.rhai`) for editors and the Rhai language server: every
/// built-in and action with its documentation, and the `inventory` constant. Returns the
/// files written.
pub fn write_definitions(dir: &Path, docs: &ActionDocs) -> Result<Vec<PathBuf>, Error> {
    let engine = engine_with_docs(
        Arc::new(NoHost::default()),
        PathBuf::from("."),
        &Default::default(),
        Some(docs),
    );
    let scope = scope(Dynamic::from_map(Default::default()));
    let definitions = engine
        .definitions_with_scope(&scope)
        .include_standard_packages(false);
    std::fs::create_dir_all(dir)
        .map_err(|e| Error::Usage(format!("cannot create {}: {e}", dir.display())))?;
    let mut written = Vec::new();
    for (name, text) in definitions.iter_files() {
        let path = dir.join(name);
        std::fs::write(&path, text)
            .map_err(|e| Error::Usage(format!("cannot write {}: {e}", path.display())))?;
        written.push(path);
    }
    Ok(written)
}

#[cfg(test)]
mod tests {
    use super::{first_read, line_col, misused_builtin, parse_plain};

    #[test]
    fn the_first_read_of_the_inventory_is_found_where_the_runbook_makes_it() {
        type Case = (&'static str, &'static str, Option<(usize, usize)>);
        let cases: Vec<Case> = vec![
            (
                "a read at the top",
                "let r = inventory.regions;",
                Some((1, 9)),
            ),
            ("never", "log(1);", None),
            (
                "a key of that name is not a read",
                "let m = #{ inventory: 1 };\nlog(m.inventory);",
                None,
            ),
            (
                "inside a step's closure",
                "log(1);\nstep(\"a\", || log(inventory.regions));",
                Some((2, 18)),
            ),
            (
                "the first of two",
                "step(\"a\", || log(1));\nlet x = inventory.a;\nlet y = inventory.b;",
                Some((2, 9)),
            ),
            (
                "a function's own parameter",
                "fn app(inventory, r) { inventory.regions[r] }\nlog(1);",
                None,
            ),
            (
                "a function's parameter, then the runbook's own read",
                "fn app(inventory, r) { inventory.regions[r] }\nlog(app(inventory, \"a\"));",
                Some((2, 9)),
            ),
            (
                "a closure inside a function, capturing its parameter",
                "fn each(inventory) { step(\"a\", || log(inventory.x)); }\nlog(1);",
                None,
            ),
            ("does not parse", "let = ;", None),
        ];
        for (what, source, want) in cases {
            assert_eq!(
                parse_plain(source)
                    .and_then(|plain| first_read(&plain, "inventory"))
                    .map(line_col),
                want,
                "{what}"
            );
        }
    }

    #[test]
    fn a_built_in_called_with_the_wrong_kinds_of_arguments_says_how_it_is_called() {
        let s = "&str | ImmutableString | String";
        let cases: Vec<(String, Option<&str>)> = vec![
            (
                format!("step ({s}, {s})"),
                Some("step(..) was given (string, string); it is called as step(name, || { .. }) or step(name, #{ retries, backoff, timeout, undo }, || { .. })"),
            ),
            (
                format!("on_failure ({s})"),
                Some("on_failure(..) was given (string); it is called as on_failure(|f| { .. }), f being #{ run, step, error, changed, undoing, resume }"),
            ),
            (
                "sleep (f64)".into(),
                Some("sleep(..) was given (float); it is called as sleep(\"30m\") or sleep(seconds)"),
            ),
            (
                "parallel (Map, Fn)".into(),
                Some("parallel(..) was given (map, closure); it is called as parallel(items, |item| { .. }) or parallel(items, #{ limit }, |item| { .. })"),
            ),
            // Not a built-in: Rhai's own message stands.
            ("my_helper (i64)".into(), None),
            ("step".into(), None),
        ];
        for (signature, want) in cases {
            assert_eq!(misused_builtin(&signature).as_deref(), want, "{signature}");
        }
    }
}
