//! `runbook check`: what can be known about a runbook without running it — unknown
//! namespaces and actions, wrong arity, unknown fields in literal action maps, duplicate step
//! names in one scope, fixed step names inside loops, unknown `params` keys, an
//! `inventory` a function cannot see or a runbook assigns to, fields read that are not
//! there (of an action's output, or parameters not declared), and calls of functions that are
//! not there or do not take that many arguments.

use std::collections::{HashMap, HashSet};

use rhai::{ASTNode, Expr, Position, Stmt, AST};

use super::params::{default_value, one_of, PARAM_KEYS, PARAM_TYPES};
use crate::action::Registry;
use crate::action::COMMON_FIELDS;
use crate::error::Error;
use crate::suggest::{closest, suggest};

/// Built-in functions, the argument counts they take, and how they are called (for a call
/// with the wrong arguments, here or at run time).
const BUILTINS: &[(&str, &[usize], &str)] = &[
    (
        "step",
        &[2, 3],
        "step(name, || { .. }) or step(name, #{ retries, backoff, timeout, undo }, || { .. })",
    ),
    (
        "params",
        &[1],
        "params(#{ name: #{ type, default, doc, required, choices } })",
    ),
    ("approve", &[1], "approve(\"message\")"),
    ("sleep", &[1], "sleep(\"30m\") or sleep(seconds)"),
    (
        "parallel",
        &[2, 3],
        "parallel(items, |item| { .. }) or parallel(items, #{ limit }, |item| { .. })",
    ),
    ("now", &[0], "now()"),
    ("log", &[1], "log(value)"),
    ("result", &[2], "result(\"name\", value)"),
    ("fail", &[1], "fail(\"message\")"),
    ("secret", &[1], "secret(\"NAME\")"),
    ("lock", &[1], "lock(\"name\")"),
    (
        "on_failure",
        &[1],
        "on_failure(|f| { .. }), f being #{ run, step, error, changed, undoing, resume }",
    ),
    (
        "on_undone",
        &[1],
        "on_undone(|u| { .. }), u being #{ run, undone, left }",
    ),
    ("is_dry_run", &[0], "is_dry_run()"),
    ("join", &[2], "join(items, \", \") or items.join(\", \")"),
    (
        "runbook_command",
        &[1, 2],
        "runbook_command(\"rejoin\") or runbook_command(\"rejoin\", #{ region: r })",
    ),
];

/// How the built-in `name` is called.
pub(super) fn builtin_form(name: &str) -> Option<&'static str> {
    BUILTINS
        .iter()
        .find(|(n, _, _)| *n == name)
        .map(|(_, _, form)| *form)
}

/// A call found in a body: the call, where it is, and whether it runs conditionally / in a loop.
type Found = (rhai::FnCallExpr, Position, (bool, bool));

struct Linter<'a> {
    registry: &'a Registry,
    file: &'a str,
    source: &'a str,
    /// Import alias → the module's functions (name, arity).
    imports: HashMap<String, Vec<(String, usize)>>,
    /// Aliases of imports that failed (no such module, or it does not compile): that is
    /// reported once, at the import, not again at every call through it.
    broken: std::collections::HashSet<String>,
    problems: Vec<(Position, String)>,
    /// Field names and required fields per action, from its schema (built once).
    fields: HashMap<String, (Vec<String>, Vec<String>)>,
    /// What a bare call may name.
    callable: Callable<'a>,
    /// Each built-in's forms, the kinds of its parameters ([`builtin_signatures`]).
    builtins: &'a HashMap<&'static str, Vec<Vec<&'static str>>>,
    /// Where each field of a map written in a call stands (call's position → field → its
    /// position), from the tree as written: the optimiser folds a map of literals into one
    /// value with only the map's position.
    fields_at: HashMap<Position, HashMap<String, Position>>,
}

/// What a bare call (`f(x)`, no namespace) may name: the engine's functions (the same for
/// every runbook, read once) and the runbook's own, each with the argument counts it takes
/// (none listed: any), and the names the runbook binds as variables or parameters, for a
/// closure called as a function.
struct Callable<'a> {
    engine: &'a HashMap<String, Vec<usize>>,
    own: HashMap<String, Vec<usize>>,
    variables: HashSet<String>,
}

impl Callable<'_> {
    /// The argument counts `name` takes, from wherever it is defined (empty: any).
    fn arities(&self, name: &str) -> Option<Vec<usize>> {
        match (self.engine.get(name), self.own.get(name)) {
            (None, None) => None,
            (Some(any), _) if any.is_empty() => Some(Vec::new()),
            (a, b) => {
                let mut all: Vec<usize> = a.into_iter().chain(b).flatten().copied().collect();
                all.sort_unstable();
                all.dedup();
                Some(all)
            }
        }
    }

    /// What is wrong with a method call `x.name(..)`, if anything: no function of that name
    /// at all (whatever `x` is).
    fn method_problem(&self, name: &str) -> Option<String> {
        if self.engine.contains_key(name) || self.own.contains_key(name) {
            return None;
        }
        Some(format!(
            "unknown method `.{name}(..)`{}: no function of that name, in this runbook, the \
             built-ins or Rhai's",
            suggest(name, self.names())
        ))
    }

    /// The names worth suggesting.
    fn names(&self) -> impl Iterator<Item = &str> {
        self.engine
            .keys()
            .chain(self.own.keys())
            .map(String::as_str)
            .filter(|f| !f.starts_with("anon$") && !f.contains('$'))
    }

    /// What is wrong with a bare call of `name` with `args` arguments, if anything: no such
    /// function (a misspelt helper fails only when its branch runs, perhaps mid-incident), or
    /// none taking that many arguments.
    fn problem(&self, name: &str, args: usize) -> Option<String> {
        if !name.chars().all(|c| c.is_alphanumeric() || c == '_') {
            return None;
        }
        match self.arities(name) {
            Some(arities) if arities.is_empty() || arities.contains(&args) => None,
            Some(arities) => Some(format!(
                "{name}(..) takes {}, not {args}",
                arguments(&arities)
            )),
            None if self.variables.contains(name) => Some(format!(
                "no function `{name}`: `{name}` is a variable, and a closure it holds is called as {name}.call(..)"
            )),
            None => Some(format!(
                "unknown function `{name}`{}: neither this runbook's, a built-in nor Rhai's; \
                 actions are called as namespace::name (`runbook actions` lists them)",
                suggest(name, self.names())
            )),
        }
    }
}

/// A literal as far as lint can see it: Rhai folds constant maps into a single value.
enum Lit {
    Str(String),
    Map(Vec<(String, Position, Lit)>),
    /// Any other literal: a number, a bool, a list of literals.
    Value(rhai::Dynamic),
    Other,
}

/// A folded constant's fields have no position of their own (`Position::NONE`): it is found
/// in the tree as written (`Linter::field_pos`).
fn lit_of_dynamic(d: &rhai::Dynamic) -> Lit {
    if let Some(s) = d.clone().try_cast::<rhai::ImmutableString>() {
        return Lit::Str(s.to_string());
    }
    if let Some(m) = d.read_lock::<rhai::Map>() {
        return Lit::Map(
            m.iter()
                .map(|(k, v)| (k.to_string(), Position::NONE, lit_of_dynamic(v)))
                .collect(),
        );
    }
    match d.is_fnptr() {
        true => Lit::Other,
        false => Lit::Value(d.clone()),
    }
}

fn lit(e: &Expr) -> Lit {
    match e {
        Expr::StringConstant(s, _) => Lit::Str(s.to_string()),
        Expr::Map(m, _) => Lit::Map(
            m.0.iter()
                .map(|(k, v)| (k.name.to_string(), k.pos, lit(v)))
                .collect(),
        ),
        Expr::DynamicConstant(d, _) => lit_of_dynamic(d),
        other => match literal_json(other) {
            Some(v) => Lit::Value(crate::value::json_to_dynamic(&v)),
            None => Lit::Other,
        },
    }
}

/// Where each field of a map written in a call stands, nested ones as `outer.inner`.
fn field_positions(e: &Expr, prefix: &str, out: &mut HashMap<String, Position>) {
    if let Expr::Map(m, _) = e {
        for (k, v) in m.0.iter() {
            let path = format!("{prefix}{}", k.name);
            field_positions(v, &format!("{path}."), out);
            out.insert(path, k.pos);
        }
    }
}

/// A value written as a literal, as the action would receive it (JSON).
fn literal_json(e: &Expr) -> Option<serde_json::Value> {
    use serde_json::Value;
    Some(match e {
        Expr::StringConstant(s, _) => Value::String(s.to_string()),
        Expr::CharConstant(c, _) => Value::String(c.to_string()),
        Expr::IntegerConstant(i, _) => Value::from(*i),
        Expr::FloatConstant(f, _) => Value::Number(serde_json::Number::from_f64(**f)?),
        Expr::BoolConstant(b, _) => Value::Bool(*b),
        Expr::Unit(_) => Value::Null,
        Expr::Array(items, _) => {
            Value::Array(items.iter().map(literal_json).collect::<Option<_>>()?)
        }
        Expr::Map(m, _) => Value::Object(
            m.0.iter()
                .map(|(k, v)| Some((k.name.to_string(), literal_json(v)?)))
                .collect::<Option<_>>()?,
        ),
        Expr::DynamicConstant(d, _) if !d.is_fnptr() => crate::value::dynamic_to_json(d).ok()?,
        _ => return None,
    })
}

/// The fields of a map written in the call, each with where it is and its value when that
/// is a literal. None when the argument is not a map written there.
fn literal_fields(e: &Expr) -> Option<Vec<(String, Position, Option<serde_json::Value>)>> {
    match e {
        Expr::Map(m, _) => Some(
            m.0.iter()
                .map(|(k, v)| (k.name.to_string(), k.pos, literal_json(v)))
                .collect(),
        ),
        Expr::DynamicConstant(d, _) if d.is_map() => {
            let serde_json::Value::Object(fields) = crate::value::dynamic_to_json(d).ok()? else {
                return None;
            };
            // Folded: the fields' own positions are in the tree as written.
            Some(
                fields
                    .into_iter()
                    .map(|(k, v)| (k, Position::NONE, Some(v)))
                    .collect(),
            )
        }
        _ => None,
    }
}

fn literal_string(e: &Expr) -> Option<String> {
    match e {
        Expr::StringConstant(s, _) => Some(s.to_string()),
        _ => None,
    }
}

/// What a literal argument is ("a string"), when it is a literal and so cannot be a closure.
fn not_a_closure(e: &Expr) -> Option<&'static str> {
    Some(match e {
        Expr::StringConstant(..) | Expr::InterpolatedString(..) => "a string",
        Expr::IntegerConstant(..) | Expr::FloatConstant(..) => "a number",
        Expr::BoolConstant(..) => "a bool",
        Expr::CharConstant(..) => "a character",
        Expr::Unit(..) => "()",
        Expr::Array(..) => "an array",
        Expr::Map(..) => "a map",
        Expr::DynamicConstant(d, _) if !d.is_fnptr() => {
            if d.is_array() {
                "an array"
            } else if d.is_map() {
                "a map"
            } else {
                "a constant"
            }
        }
        _ => return None,
    })
}

/// Whether something between the function body and this node makes it run conditionally
/// or repeatedly.
fn conditional(path: &[ASTNode]) -> (bool, bool) {
    let mut cond = false;
    let mut looped = false;
    for node in path {
        match node {
            ASTNode::Stmt(Stmt::If(..) | Stmt::Switch(..) | Stmt::TryCatch(..)) => cond = true,
            ASTNode::Stmt(Stmt::While(..) | Stmt::Do(..) | Stmt::For(..)) => looped = true,
            ASTNode::Expr(Expr::And(..) | Expr::Or(..) | Expr::Coalesce(..)) => cond = true,
            _ => {}
        }
    }
    (cond, looped)
}

impl Linter<'_> {
    fn fields_of(
        &mut self,
        ns: &str,
        name: &str,
        action: &std::sync::Arc<dyn crate::action::DynAction>,
    ) -> (Vec<String>, Vec<String>) {
        self.fields
            .entry(format!("{ns}::{name}"))
            .or_insert_with(|| {
                let schema = action.input_schema();
                let obj = schema.schema.object.as_ref();
                (
                    obj.map(|o| o.properties.keys().cloned().collect())
                        .unwrap_or_default(),
                    obj.map(|o| o.required.iter().cloned().collect())
                        .unwrap_or_default(),
                )
            })
            .clone()
    }

    /// The options of a step (`step`) or `parallel` (`prefix`: "step 'x': " or "parallel: "), as the
    /// run reads them when it reaches the call: an option there is not, and a value written as
    /// a literal that it cannot take.
    fn check_options(&mut self, step: bool, prefix: &str, options: &Expr, pos: Position) {
        use super::options::{
            parallel_option, step_option, StepOptions, PARALLEL_OPTIONS, STEP_OPTIONS,
        };
        let Some(fields) = literal_fields(options) else {
            return;
        };
        let known = if step { STEP_OPTIONS } else { PARALLEL_OPTIONS };
        for (key, kpos, value) in fields {
            let value = match (known.contains(&key.as_str()), value) {
                (false, _) => rhai::Dynamic::UNIT,
                (true, Some(v)) => crate::value::json_to_dynamic(&v),
                (true, None) => continue,
            };
            let checked = match step {
                true => step_option(&mut StepOptions::default(), &key, value),
                false => parallel_option(&key, value).map(|_| ()),
            };
            if let Err(e) = checked {
                let at = self.field_pos(pos, &key, kpos);
                self.problem(at, format!("{prefix}{}", e.message(known)));
            }
        }
    }

    /// A built-in called with literals of kinds none of its forms takes (`lock(5)`, which the
    /// run would answer with "Function not found"): the kinds given, as the run words them.
    /// An argument that is not a literal could be anything, so it never makes a mismatch.
    fn builtin_misused(&self, name: &str, args: &[Expr]) -> Option<String> {
        if !BUILTINS.iter().any(|(n, _, _)| *n == name) {
            return None;
        }
        let kinds: Vec<Option<&str>> = args.iter().map(literal_kind).collect();
        let forms = self.builtins.get(name)?;
        let fits = |form: &Vec<&'static str>| {
            form.len() == kinds.len()
                && form
                    .iter()
                    .zip(&kinds)
                    .all(|(want, got)| *want == "any" || got.is_none_or(|g| g == *want))
        };
        if forms.iter().any(fits) {
            return None;
        }
        let shown: Vec<&str> = kinds.iter().map(|k| k.unwrap_or("value")).collect();
        Some(shown.join(", "))
    }

    /// Where field `key` of the map written in the call at `call` stands, as well as known.
    fn field_pos(&self, call: Position, key: &str, found: Position) -> Position {
        if !found.is_none() {
            return found;
        }
        self.fields_at
            .get(&call)
            .and_then(|fields| fields.get(key))
            .copied()
            .unwrap_or(call)
    }

    fn problem(&mut self, pos: Position, message: String) {
        self.problems.push((pos, message));
    }

    /// Checks the calls of one function body (or the main body): one step scope.
    fn check_body(&mut self, found: Vec<Found>) {
        let mut step_names: HashMap<String, Position> = HashMap::new();
        for (call, pos, (cond, looped)) in found {
            let args = call.args.len();
            if !call.namespace.is_empty() {
                self.check_namespaced(&call, pos);
                continue;
            }
            let name = call.name.as_str();
            if let Some((_, arities, _)) = BUILTINS.iter().find(|(n, _, _)| *n == name) {
                if !arities.contains(&args) {
                    self.problem(
                        pos,
                        format!("{name} takes {}, not {args}", arguments(arities)),
                    );
                    continue;
                }
            }
            if matches!(name, "step" | "parallel" | "on_failure" | "on_undone") {
                if let Some(what) = call.args.last().and_then(not_a_closure) {
                    let form = builtin_form(name).unwrap_or_default();
                    self.problem(
                        pos,
                        format!("{name}(..) needs a closure as its last argument, not {what}: it is called as {form}"),
                    );
                    continue;
                }
            }
            if let Some(given) = self.builtin_misused(name, &call.args) {
                let form = builtin_form(name).unwrap_or_default();
                self.problem(
                    pos,
                    format!("{name}(..) was given ({given}); it is called as {form}"),
                );
                continue;
            }
            if call.op_token.is_none() && !BUILTINS.iter().any(|(n, _, _)| *n == name) {
                if let Some(problem) = self.callable.problem(name, args) {
                    self.problem(pos, problem);
                    continue;
                }
            }
            match (name, args) {
                ("step", 3) => {
                    let step = call.args.first().and_then(literal_string);
                    let prefix = step.map_or("step: ".into(), |s| format!("step '{s}': "));
                    self.check_options(true, &prefix, &call.args[1], pos);
                }
                ("parallel", 3) => self.check_options(false, "parallel: ", &call.args[1], pos),
                _ => {}
            }
            match name {
                "sleep" => {
                    match call.args.first().map(lit) {
                        Some(Lit::Str(text)) => {
                            if let Err(e) = crate::action::Dur::parse(&text) {
                                self.problem(pos, format!("sleep: {e}"));
                            }
                        }
                        // A number of seconds: the run's "-5s" is not a duration.
                        Some(Lit::Value(v)) if v.as_int().is_ok_and(|n| n < 0) => {
                            if let Err(e) = crate::action::Dur::parse(&format!("{v}s")) {
                                self.problem(pos, format!("sleep: {e}"));
                            }
                        }
                        _ => {}
                    }
                }
                "step" => {
                    let Some(step) = call.args.first().and_then(literal_string) else {
                        continue;
                    };
                    if looped {
                        self.problem(
                            pos,
                            format!("step '{step}' has a fixed name inside a loop: the second time round it would repeat the name; put the loop item in it, e.g. step(`{step} ${{item}}`, ..)"),
                        );
                    } else if !cond {
                        if let Some(first) = step_names.get(&step) {
                            let line = first.line().unwrap_or(0);
                            self.problem(pos, format!("step '{step}' is already defined in this scope (line {line}); step names must be unique in their scope"));
                        } else {
                            step_names.insert(step, pos);
                        }
                    }
                }
                "params" => {
                    let Some(Lit::Map(decls)) = call.args.first().map(lit) else {
                        continue;
                    };
                    for (param, _, decl) in decls {
                        let Lit::Map(entries) = decl else { continue };
                        // The type, when it is known: written as text, or not written (text).
                        let ty = match entries.iter().find(|(k, _, _)| k == "type") {
                            Some((_, _, Lit::Str(t))) => Some(t.to_string()),
                            Some(_) => None,
                            None => Some("string".to_string()),
                        };
                        let choices = entries.iter().find_map(|(k, _, v)| match v {
                            Lit::Value(c) if k == "choices" => {
                                c.read_lock::<rhai::Array>().map(|a| a.clone())
                            }
                            _ => None,
                        });
                        for (key, kpos, value) in entries {
                            let kpos = self.field_pos(pos, &format!("{param}.{key}"), kpos);
                            if !PARAM_KEYS.contains(&key.as_str()) {
                                self.problem(
                                    kpos,
                                    format!(
                                        "parameter '{param}': unknown key `{key}`{}; the keys are {}",
                                        suggest(&key, PARAM_KEYS),
                                        PARAM_KEYS.join(", ")
                                    ),
                                );
                            }
                            let default = match (key.as_str(), &value, ty.as_deref()) {
                                ("default", Lit::Str(text), Some(ty)) => {
                                    Some(default_value(ty, &text.as_str().into()))
                                }
                                ("default", Lit::Value(d), Some(ty)) => Some(default_value(ty, d)),
                                _ => None,
                            };
                            match (default, &choices) {
                                (Some(Err(e)), _) => self
                                    .problem(kpos, format!("parameter '{param}': its default {e}")),
                                (Some(Ok(d)), Some(choices)) => {
                                    if let Err(list) = one_of(&d, choices) {
                                        self.problem(
                                            kpos,
                                            format!("parameter '{param}': its default {d} is not one of its choices, {list}"),
                                        );
                                    }
                                }
                                _ => {}
                            }
                            if let ("type", Lit::Str(t)) = (key.as_str(), &value) {
                                if !PARAM_TYPES.contains(&t.as_str()) {
                                    self.problem(
                                        kpos,
                                        format!("parameter '{param}': unknown type \"{t}\"; the types are {}", PARAM_TYPES.join(", ")),
                                    );
                                }
                            }
                        }
                    }
                }
                _ => {}
            }
        }
    }

    /// The values a call writes as literals, decoded as the action decodes them when it runs:
    /// a list where it takes text, a misspelt choice (`method: "shutdwon"`), a duration that
    /// is not one — found now, not when the branch holding the call is reached.
    fn check_values(
        &mut self,
        ns: &str,
        name: &str,
        action: &std::sync::Arc<dyn crate::action::DynAction>,
        arg: Option<&Expr>,
        pos: Position,
    ) {
        let Some(arg) = arg else { return };
        let (props, _) = self.fields_of(ns, name, action);
        let mut given = serde_json::Map::new();
        let mut at: HashMap<String, Position> = HashMap::new();
        match literal_fields(arg) {
            Some(fields) => {
                for (k, kpos, v) in fields {
                    let known = props.contains(&k) || COMMON_FIELDS.iter().any(|(c, _, _)| *c == k);
                    if let (true, Some(v)) = (known, v) {
                        at.insert(k.clone(), self.field_pos(pos, &k, kpos));
                        given.insert(k, v);
                    }
                }
            }
            None => {
                // The single-value form: http::get("https://..").
                let (Some(primary), Some(v)) = (action.spec().primary, literal_json(arg)) else {
                    return;
                };
                given.insert(primary.to_string(), v);
            }
        }
        let found = crate::action::take_common(&mut given)
            .err()
            .or_else(|| action.check_given(serde_json::Value::Object(given)));
        if let Some(e) = found {
            let top = e.field.split(['.', '[']).next().unwrap_or_default();
            let at = at.get(top).copied().unwrap_or(pos);
            let field = match e.field.is_empty() {
                true => String::new(),
                false => format!(" field `{}`:", e.field),
            };
            self.problem(at, format!("{ns}::{name}:{field} {}", e.message));
        }
    }

    fn check_namespaced(&mut self, call: &rhai::FnCallExpr, pos: Position) {
        let root = call.namespace.root().to_string();
        let name = call.name.as_str();
        let args = call.args.len();
        if self.registry.namespaces().contains(&root.as_str()) {
            let Some(action) = self.registry.get(&root, name) else {
                let names: Vec<&str> = self
                    .registry
                    .in_namespace(&root)
                    .map(|a| a.spec().name)
                    .collect();
                self.problem(
                    pos,
                    format!(
                        "unknown action {root}::{name}{}; {root}:: has {}",
                        suggest(name, names.iter().copied()),
                        names.join(", ")
                    ),
                );
                return;
            };
            if args > 1 {
                self.problem(pos, format!("{root}::{name} takes one argument, a map of fields: {root}::{name}(#{{ .. }})"));
                return;
            }
            self.check_values(&root, name, action, call.args.first(), pos);
            if let Some(Lit::Map(map)) = call.args.first().map(lit) {
                let (props, required) = self.fields_of(&root, name, action);
                let mut given: HashSet<&str> = map.iter().map(|(k, _, _)| k.as_str()).collect();
                for (k, kpos, _) in &map {
                    let kpos = self.field_pos(pos, k, *kpos);
                    if !props.iter().any(|p| p == k)
                        && !COMMON_FIELDS.iter().any(|(c, _, _)| c == k)
                    {
                        let all = props
                            .iter()
                            .map(String::as_str)
                            .chain(COMMON_FIELDS.iter().map(|(c, _, _)| *c));
                        let meant = closest(k, all);
                        self.problem(
                            kpos,
                            format!(
                                "{root}::{name} has no field `{k}`{}; its fields are {}, and those every action takes: {}",
                                meant
                                    .map(|c| format!(" (did you mean `{c}`?)"))
                                    .unwrap_or_default(),
                                props.join(", "),
                                COMMON_FIELDS.map(|(c, _, _)| c).join(", ")
                            ),
                        );
                        // A misspelt required field is one mistake, not two.
                        given.extend(meant);
                    }
                }
                for r in required {
                    if !given.contains(r.as_str()) {
                        self.problem(pos, format!("{root}::{name} needs the field `{r}`"));
                    }
                }
            }
            return;
        }
        if self.broken.contains(&root) {
            return;
        }
        if let Some(functions) = self.imports.get(&root) {
            if !functions.iter().any(|(n, a)| n == name && *a == args) {
                // A function may be written for several argument counts (overloads).
                let mut names: Vec<&str> = Vec::new();
                for (n, _) in functions {
                    if !names.contains(&n.as_str()) {
                        names.push(n);
                    }
                }
                let mut counts: Vec<usize> = functions
                    .iter()
                    .filter(|(n, _)| n == name)
                    .map(|(_, a)| *a)
                    .collect();
                counts.sort_unstable();
                let message = match counts.is_empty() {
                    false => format!("{root}::{name} takes {}, not {args}", arguments(&counts)),
                    true => format!(
                        "module `{root}` has no function {name}{}; it has {}",
                        suggest(name, names.iter().copied()),
                        names.join(", ")
                    ),
                };
                self.problem(pos, message);
            }
            return;
        }
        let mut known: Vec<&str> = self.registry.namespaces();
        known.extend(self.imports.keys().map(String::as_str));
        self.problem(
            pos,
            format!(
                "unknown namespace `{root}`{} in {root}::{name}; the namespaces are {} (and modules you import)",
                suggest(&root, known.iter().copied()),
                self.registry.namespaces().join(", ")
            ),
        );
    }
}

/// A module's functions and their argument counts, or why it does not compile. Compiled once
/// per text in a process: `runbook check runbooks/*.rhai` imports the same stdlib modules in
/// every runbook.
fn module_functions(text: &str) -> Result<Vec<(String, usize)>, String> {
    use std::sync::{Mutex, OnceLock};
    type Compiled = Result<Vec<(String, usize)>, String>;
    static SEEN: OnceLock<Mutex<HashMap<String, Compiled>>> = OnceLock::new();
    let seen = SEEN.get_or_init(Default::default);
    if let Some(known) = seen.lock().unwrap().get(text) {
        return known.clone();
    }
    let compiled = super::parser()
        .compile(text)
        .map(|m| {
            m.iter_functions()
                .map(|f| (f.name.to_string(), f.params.len()))
                .collect()
        })
        .map_err(|e| e.to_string());
    seen.lock()
        .unwrap()
        .insert(text.to_string(), compiled.clone());
    compiled
}

/// Checks a compiled runbook (`ast`; `plain`: the same source as written, from
/// [`super::parse_plain`]). Each problem is a script error with its position.
pub fn lint(
    engine: &rhai::Engine,
    ast: &AST,
    plain: &AST,
    registry: &Registry,
    resolver: &super::StdlibResolver,
    file: &str,
    source: &str,
) -> Vec<Error> {
    let mut linter = Linter {
        registry,
        file,
        source,
        imports: HashMap::new(),
        broken: Default::default(),
        problems: Vec::new(),
        fields: HashMap::new(),
        callable: Callable {
            engine: engine_functions(engine),
            own: HashMap::new(),
            variables: HashSet::new(),
        },
        fields_at: HashMap::new(),
        builtins: builtin_signatures(engine),
    };
    for f in ast.iter_functions() {
        let arities = linter.callable.own.entry(f.name.to_string()).or_default();
        arities.push(f.params.len());
        linter
            .callable
            .variables
            .extend(f.params.iter().map(|p| p.to_string()));
    }
    // One walk of the tree as written: where fields are written, the variables it binds, and
    // the methods it calls with the names a map could hold a closure under.
    let mut keys = HashSet::new();
    let mut methods = Vec::new();
    plain.walk(&mut |path: &[ASTNode]| {
        match path.last() {
            Some(
                ASTNode::Expr(Expr::FnCall(call, pos)) | ASTNode::Stmt(Stmt::FnCall(call, pos)),
            ) => {
                for arg in &call.args {
                    let fields = linter.fields_at.entry(*pos).or_default();
                    field_positions(arg, "", fields);
                }
            }
            Some(ASTNode::Stmt(Stmt::Var(x, ..))) => {
                linter.callable.variables.insert(x.0.name.to_string());
            }
            Some(ASTNode::Expr(Expr::Map(m, _))) => {
                keys.extend(m.0.iter().map(|(k, _)| k.name.to_string()));
            }
            Some(ASTNode::Expr(Expr::Property(p, _))) => {
                keys.insert(p.2.to_string());
            }
            Some(ASTNode::Expr(Expr::MethodCall(call, pos))) => {
                methods.push((call.name.to_string(), *pos));
            }
            _ => {}
        }
        true
    });
    // Imports anywhere in the script define namespaces.
    let mut imports = Vec::new();
    ast.walk(&mut |path: &[ASTNode]| {
        if let Some(ASTNode::Stmt(Stmt::Import(x, pos))) = path.last() {
            let (expr, alias) = x.as_ref();
            if let Some(module) = literal_string(expr) {
                imports.push((alias.name.to_string(), module, *pos));
            }
        }
        true
    });
    for (alias, module, pos) in imports {
        match resolver.source(&module) {
            None => {
                linter.problem(
                    pos,
                    format!("no module '{module}': {}", super::stdlib::known_modules()),
                );
                linter.broken.insert(alias);
            }
            Some((name, text)) => match module_functions(&text) {
                Ok(functions) => {
                    linter.imports.insert(alias, functions);
                }
                Err(e) => {
                    linter.problem(pos, format!("module {name} does not compile: {e}"));
                    linter.broken.insert(alias);
                }
            },
        }
    }
    // Every call, once, with the function body it is in: the innermost function (a step's
    // closure is one) whose span holds it, else the main body.
    let spans = super::fn_spans(ast);
    let mut scopes: Vec<Vec<Found>> = vec![Vec::new(); spans.len() + 1];
    ast.walk(&mut |path: &[ASTNode]| -> bool {
        if let Some(
            ASTNode::Expr(Expr::FnCall(call, pos)) | ASTNode::Stmt(Stmt::FnCall(call, pos)),
        ) = path.last()
        {
            let scope = super::innermost(&spans, *pos).map_or(0, |i| i + 1);
            scopes[scope].push((
                call.as_ref().clone(),
                *pos,
                conditional(&path[..path.len() - 1]),
            ));
        }
        true
    });
    for found in scopes {
        linter.check_body(found);
    }
    // A method: `items.lenght()`. Which overload answers depends on the value before the dot,
    // known only as it runs, so only a name no function has is refused — and not one a map
    // of the runbook could hold a closure under (`o.greet()` calls `o.greet` when it is one).
    methods.retain(|(name, _)| !keys.contains(name));
    for (name, pos) in methods {
        if let Some(problem) = linter.callable.method_problem(&name) {
            linter.problem(pos, problem);
        }
    }
    for (pos, message) in inventory_misuse(plain) {
        linter.problem(pos, message);
    }
    for (pos, message) in missing_fields(plain, registry) {
        linter.problem(pos, message);
    }
    let mut problems = std::mem::take(&mut linter.problems);
    problems.sort_by_key(|(p, _)| (p.line().unwrap_or(0), p.position().unwrap_or(0)));
    problems.dedup();
    problems
        .into_iter()
        .map(|(pos, message)| {
            Error::script(
                message,
                super::script_pos(linter.file, pos),
                Some(linter.source),
            )
        })
        .collect()
}

/// Misuses of `inventory` that compile but fail when they run, perhaps after a run's first
/// changes: a named function reading it without a parameter or variable of that name (a Rhai
/// function sees only its own), and an assignment to the runbook's inventory (read-only).
/// Read from the tree as written (`plain`: the optimiser may fold reads).
fn inventory_misuse(plain: &AST) -> Vec<(Position, String)> {
    const NAME: &str = "inventory";
    let uses = super::uses(plain, NAME);
    let mut problems: Vec<(Position, String)> = uses
        .assigned
        .iter()
        .map(|pos| {
            (
                *pos,
                format!(
                    "`{NAME}` is read-only (the inventory file as loaded): keep what you \
                     change in a variable of your own"
                ),
            )
        })
        .collect();
    let mut seen = HashSet::new();
    for (pos, f) in uses.reads {
        let Some(f) = f else { continue };
        if seen.insert(f.clone()) {
            problems.push((
                pos,
                format!(
                    "function `{f}` reads `{NAME}`, which a function does not see (only its \
                     parameters and its own variables): declare it as a parameter, \
                     `fn {f}({NAME}, ..)`, and pass it where `{f}` is called"
                ),
            ));
        }
    }
    problems
}

/// Whose fields a value holds, when they are fixed.
#[derive(Clone)]
enum Known {
    /// An action's output (its fields).
    Output(String, Vec<String>),
    /// What `params(#{ .. })` returned (the parameters declared).
    Params(Vec<String>),
}

impl Known {
    fn fields(&self) -> &[String] {
        match self {
            Known::Output(_, fields) | Known::Params(fields) => fields,
        }
    }

    fn missing(&self, field: &str) -> String {
        let fields: Vec<&str> = self.fields().iter().map(String::as_str).collect();
        let meant = suggest(field, fields.iter().copied());
        match self {
            Known::Output(action, _) => format!(
                "{action} returns no field `{field}`{meant}; its fields are {}",
                fields.join(", ")
            ),
            Known::Params(_) => format!(
                "no parameter `{field}` is declared{meant}; params(..) declares {}",
                fields.join(", ")
            ),
        }
    }
}

/// The fields of an action's output, when they are fixed (not a map of anything). Read from
/// its schema once per process: `runbook check runbooks/*.rhai` asks for the same actions in
/// every runbook.
fn output_fields(registry: &Registry, namespace: &str, name: &str) -> Option<Vec<String>> {
    use std::sync::{Mutex, OnceLock};
    static SEEN: OnceLock<Mutex<HashMap<String, Option<Vec<String>>>>> = OnceLock::new();
    let seen = SEEN.get_or_init(Default::default);
    let key = format!("{namespace}::{name}");
    if let Some(fields) = seen.lock().unwrap().get(&key) {
        return fields.clone();
    }
    let fields = (|| {
        let schema = registry.get(namespace, name)?.output_schema();
        let object = schema.schema.object.as_ref()?;
        let open = !matches!(
            object.additional_properties.as_deref(),
            None | Some(schemars::schema::Schema::Bool(false))
        );
        (!object.properties.is_empty() && !open)
            .then(|| object.properties.keys().cloned().collect())
    })();
    seen.lock().unwrap().insert(key, fields.clone());
    fields
}

/// What the value of `e` is known to hold: an action's call (when its output's fields are
/// fixed), or `params(#{ .. })` with a literal map.
fn known(e: &Expr, registry: &Registry) -> Option<Known> {
    let Expr::FnCall(call, _) = e else {
        return None;
    };
    if call.namespace.is_empty() {
        let (true, Some(Lit::Map(declared))) =
            (call.name.as_str() == "params", call.args.first().map(lit))
        else {
            return None;
        };
        return Some(Known::Params(
            declared.into_iter().map(|(name, _, _)| name).collect(),
        ));
    }
    let (namespace, name) = (call.namespace.root(), call.name.as_str());
    let fields = output_fields(registry, namespace, name)?;
    let action = format!("{namespace}::{name}");
    Some(Known::Output(action, fields))
}

/// Where a field is read from: a value whose fields are known, or a variable.
enum Source {
    Value(Known),
    Variable(String),
}

/// The first field a chain reads: `b` in `a.b`, `a.b.c`, `a.b[0]`.
fn first_field(e: &Expr) -> Option<(String, Position)> {
    match e {
        Expr::Property(x, pos) => Some((x.2.to_string(), *pos)),
        Expr::Dot(x, ..) | Expr::Index(x, ..) => first_field(&x.lhs),
        _ => None,
    }
}

/// Methods that change a map in place: a variable they are called on may hold more fields
/// than it was given.
const CHANGES_A_MAP: &[&str] = &[
    "mixin",
    "set",
    "remove",
    "clear",
    "fill_with",
    "drain",
    "retain",
];

/// Fields read that are not there — Rhai reads them as `()`, and `() > 0` or `() == "primary"`
/// quietly take the other branch: a field an action's output does not have,
/// `pg::status(..).rol`, or a parameter the runbook did not declare, `p.targte`; read from
/// the call itself or from a variable the runbook binds once, with `let`, to it, and nowhere
/// else — no function parameter, loop variable, assignment or change in place of that name —
/// so that what is read through it is surely that value.
fn missing_fields(plain: &AST, registry: &Registry) -> Vec<(Position, String)> {
    let mut bound: HashMap<String, (usize, Option<Known>)> = HashMap::new();
    // A closure's function lists the variables it captures before its own parameters (and is
    // curried with them, with Rhai's `curry`): only the latter are parameters here.
    let mut captured: HashMap<String, usize> = HashMap::new();
    let mut otherwise: HashSet<String> = HashSet::new();
    let mut reads: Vec<(Source, String, Position)> = Vec::new();
    plain.walk(&mut |path: &[ASTNode]| {
        match path.last() {
            Some(ASTNode::Expr(Expr::FnCall(call, _))) if call.name.as_str() == "curry" => {
                if let Some(Expr::DynamicConstant(f, _)) = call.args.first() {
                    if let Some(f) = f.read_lock::<rhai::FnPtr>() {
                        captured.insert(f.fn_name().to_string(), call.args.len() - 1);
                    }
                }
            }
            Some(ASTNode::Stmt(Stmt::Var(x, ..))) => {
                let (ident, init, _) = x.as_ref();
                let value = known(init, registry);
                let entry = bound.entry(ident.name.to_string()).or_default();
                entry.0 += 1;
                entry.1 = value;
            }
            Some(ASTNode::Stmt(Stmt::For(x, _))) => {
                otherwise.insert(x.0.name.to_string());
                if let Some(counter) = &x.1 {
                    otherwise.insert(counter.name.to_string());
                }
            }
            Some(ASTNode::Stmt(Stmt::Assignment(x))) => {
                let mut target = &x.1.lhs;
                while let Expr::Dot(b, ..) | Expr::Index(b, ..) = target {
                    target = &b.lhs;
                }
                if let Expr::Variable(v, ..) = target {
                    otherwise.insert(v.1.to_string());
                }
            }
            Some(ASTNode::Expr(Expr::Dot(x, ..))) => {
                let source = match &x.lhs {
                    Expr::Variable(v, ..) => Some(Source::Variable(v.1.to_string())),
                    value => known(value, registry).map(Source::Value),
                };
                if let (Expr::Variable(v, ..), Expr::MethodCall(m, _)) = (&x.lhs, &x.rhs) {
                    if CHANGES_A_MAP.contains(&m.name.as_str()) {
                        otherwise.insert(v.1.to_string());
                    }
                }
                if let (Some(source), Some((field, pos))) = (source, first_field(&x.rhs)) {
                    reads.push((source, field, pos));
                }
            }
            _ => {}
        }
        true
    });
    for f in plain.iter_fn_def() {
        let own = captured.get(f.name.as_str()).copied().unwrap_or(0);
        otherwise.extend(f.params.iter().skip(own).map(|p| p.to_string()));
    }
    let mut problems = Vec::new();
    for (source, field, pos) in reads {
        let known = match source {
            Source::Value(known) => known,
            Source::Variable(var) => match bound.get(&var) {
                Some((1, Some(known))) if !otherwise.contains(&var) => known.clone(),
                _ => continue,
            },
        };
        if !known.fields().contains(&field) {
            problems.push((pos, known.missing(&field)));
        }
    }
    problems
}

/// The functions a bare call may name in any runbook — Rhai's packages and the built-ins, and
/// Rhai's keywords that call like functions (any argument count) — read once per process.
fn engine_functions(engine: &rhai::Engine) -> &'static HashMap<String, Vec<usize>> {
    static FUNCTIONS: std::sync::OnceLock<HashMap<String, Vec<usize>>> = std::sync::OnceLock::new();
    FUNCTIONS.get_or_init(|| {
        let mut functions: HashMap<String, Vec<usize>> = HashMap::new();
        let found = engine.collect_fn_metadata(
            None,
            |f| Some((f.metadata.name.to_string(), f.metadata.num_params)),
            true,
        );
        for (name, arity) in found {
            functions.entry(name).or_default().push(arity);
        }
        for arities in functions.values_mut() {
            arities.sort_unstable();
            arities.dedup();
        }
        // Rhai's keywords that are called like functions.
        for keyword in [
            "print",
            "debug",
            "type_of",
            "eval",
            "Fn",
            "call",
            "curry",
            "is_shared",
            "is_def_var",
            "is_def_fn",
        ] {
            functions.insert(keyword.to_string(), Vec::new());
        }
        functions
    })
}

/// The kind of a literal argument, in the words the run uses for a misused built-in; None
/// for one that is not a literal.
fn literal_kind(e: &Expr) -> Option<&'static str> {
    Some(match e {
        Expr::StringConstant(..) | Expr::InterpolatedString(..) => "string",
        Expr::IntegerConstant(..) => "int",
        Expr::FloatConstant(..) => "float",
        Expr::BoolConstant(..) => "bool",
        Expr::Array(..) => "array",
        Expr::Map(..) => "map",
        Expr::Unit(..) => "()",
        Expr::DynamicConstant(d, _) => kind_of(d.type_id())?,
        _ => return None,
    })
}

/// A Rust type as the run names it ("any" for a Dynamic parameter).
fn kind_of(t: std::any::TypeId) -> Option<&'static str> {
    use std::any::TypeId;
    [
        (TypeId::of::<rhai::ImmutableString>(), "string"),
        (TypeId::of::<String>(), "string"),
        (TypeId::of::<rhai::INT>(), "int"),
        (TypeId::of::<rhai::FLOAT>(), "float"),
        (TypeId::of::<bool>(), "bool"),
        (TypeId::of::<rhai::Array>(), "array"),
        (TypeId::of::<rhai::Map>(), "map"),
        (TypeId::of::<rhai::FnPtr>(), "closure"),
        (TypeId::of::<()>(), "()"),
        (TypeId::of::<rhai::Dynamic>(), "any"),
    ]
    .into_iter()
    .find(|(id, _)| *id == t)
    .map(|(_, kind)| kind)
}

/// Each built-in's forms: the kinds of its parameters, from the engine as registered.
fn builtin_signatures(
    engine: &rhai::Engine,
) -> &'static HashMap<&'static str, Vec<Vec<&'static str>>> {
    static FORMS: std::sync::OnceLock<HashMap<&'static str, Vec<Vec<&'static str>>>> =
        std::sync::OnceLock::new();
    FORMS.get_or_init(|| {
        let found = engine.collect_fn_metadata(
            None,
            |f| {
                let name = BUILTINS.iter().find(|(n, _, _)| *n == f.metadata.name)?.0;
                let kinds = f
                    .metadata
                    .param_types
                    .iter()
                    .map(|t| kind_of(*t).unwrap_or("any"))
                    .collect::<Vec<_>>();
                Some((name, kinds))
            },
            false,
        );
        let mut forms: HashMap<&'static str, Vec<Vec<&'static str>>> = HashMap::new();
        for (name, kinds) in found {
            forms.entry(name).or_default().push(kinds);
        }
        forms
    })
}

/// "1 argument", "2 arguments", "1 or 2 arguments".
fn arguments(counts: &[usize]) -> String {
    let list: Vec<String> = counts.iter().map(|a| a.to_string()).collect();
    let noun = if counts == [1] {
        "argument"
    } else {
        "arguments"
    };
    format!("{} {noun}", list.join(" or "))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bare_call_is_checked_against_the_functions_there_are() {
        let map = |entries: &[(&str, &[usize])]| -> HashMap<String, Vec<usize>> {
            entries
                .iter()
                .map(|(n, a)| (n.to_string(), a.to_vec()))
                .collect()
        };
        let engine = map(&[("parse_int", &[1, 2]), ("curry", &[]), ("pick", &[1])]);
        // The runbook's own: `pick` with two arguments too, beside the engine's one.
        let callable = Callable {
            engine: &engine,
            own: map(&[("helper", &[1]), ("pick", &[2]), ("curry", &[3])]),
            variables: ["f".to_string()].into(),
        };
        // (name, arguments, what is wrong, if anything)
        let table: &[(&str, usize, Option<&str>)] = &[
            ("helper", 1, None),
            ("pick", 2, None),
            ("curry", 5, None),
            ("+", 2, None),
            ("helpr", 1, Some("unknown function `helpr` (did you mean `helper`?): ")),
            ("nothing_like_it", 0, Some("unknown function `nothing_like_it`: neither")),
            ("helper", 2, Some("helper(..) takes 1 argument, not 2")),
            ("parse_int", 4, Some("parse_int(..) takes 1 or 2 arguments, not 4")),
            ("pick", 0, Some("pick(..) takes 1 or 2 arguments, not 0")),
            ("f", 1, Some("no function `f`: `f` is a variable, and a closure it holds is called as f.call(..)")),
        ];
        assert_eq!(callable.method_problem("helper"), None);
        assert_eq!(callable.method_problem("curry"), None);
        assert_eq!(
            callable.method_problem("parse_ints"),
            Some("unknown method `.parse_ints(..)` (did you mean `parse_int`?): no function of that name, in this runbook, the built-ins or Rhai's".to_string())
        );
        for (name, args, wrong) in table {
            let found = callable.problem(name, *args);
            match (wrong, &found) {
                (None, None) => {}
                (Some(expected), Some(found)) => assert!(
                    found.starts_with(expected),
                    "{name} with {args}: {found:?}, expected {expected:?}"
                ),
                _ => panic!("{name} with {args}: {found:?}, expected {wrong:?}"),
            }
        }
    }
}
