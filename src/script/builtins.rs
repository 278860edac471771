//! The functions every runbook has: step, params, approve, sleep, parallel, now, log, fail,
//! secret, lock; the action namespaces; and the types that cross into scripts.

use std::sync::Arc;

use rhai::{
    Dynamic, Engine, EvalAltResult, FnPtr, FuncRegistration, Map, Module, NativeCallContext,
};

use super::host::{Handler, Host, RhaiResult};
use crate::secret::Secret;
use crate::value::Inv;

fn err(message: impl Into<String>, ncx: &NativeCallContext) -> Box<EvalAltResult> {
    Box::new(EvalAltResult::ErrorRuntime(
        message.into().into(),
        ncx.call_position(),
    ))
}

/// A built-in's registration, with the signature and documentation editor definitions show.
/// `params` ends with the return type.
fn documented(name: &str, params: &[&str], doc: &str) -> FuncRegistration {
    FuncRegistration::new(name)
        .with_params_info(params)
        .with_comments([doc.trim_end()])
}

/// The documentation of an action for editor definitions, by full name (`pg::promote`).
pub type ActionDocs = std::collections::HashMap<String, String>;

pub fn register(engine: &mut Engine, ctx: Arc<dyn Host>, docs: Option<&ActionDocs>) {
    register_types(engine);
    let c = ctx.clone();
    documented(
        "index$get$",
        &["inventory: Inventory", "key: string", "?"],
        "/// `inventory.key`, `inventory[\"key\"]`: the value at `key`; a missing key is an error\n\
         /// naming the key, the file and the keys that exist.",
    )
    .register_into_engine(
        engine,
        move |ncx: NativeCallContext, inv: &mut Inv, key: &str| -> RhaiResult {
            c.enter(ncx.call_source());
            inv.get(key).ok_or_else(|| {
                let missing = inv.missing(key, ncx.call_position());
                let (message, _, _) = crate::script::describe_error(&missing);
                c.invalid(message, ncx.call_position())
            })
        },
    );

    let c = ctx.clone();
    engine.on_progress(move |_| {
        if c.cancelled() {
            Some(Dynamic::UNIT)
        } else {
            None
        }
    });
    let c = ctx.clone();
    engine.on_print(move |s| c.log(s.to_string()));
    let c = ctx.clone();
    engine.on_debug(move |s, _, _| c.log(s.to_string()));

    let c = ctx.clone();
    documented(
        "step",
        &["name: string", "body: Fn", "?"],
        "/// Runs `body` as the step `name`, a checkpoint: a resumed run does not repeat what a\n\
         /// finished step changed. Steps nest; a name is unique in its scope. Returns what\n\
         /// `body` returns.",
    )
    .register_into_engine(
        engine,
        move |ncx: NativeCallContext, name: &str, body: FnPtr| {
            c.enter(ncx.call_source());
            c.step(&ncx, name, None, body)
        },
    );
    let c = ctx.clone();
    documented(
        "step",
        &["name: string", "options: Map", "body: Fn", "?"],
        "/// Runs `body` as the step `name` with options: `retries` (run the body again on\n\
         /// failure), `backoff` (\"5s\", doubled each retry), `timeout` (\"10m\", for everything\n\
         /// inside), `undo` (a closure reversing the step, run by `runbook resume RUN --undo`).",
    )
    .register_into_engine(
        engine,
        move |ncx: NativeCallContext, name: &str, opts: Map, body: FnPtr| {
            c.enter(ncx.call_source());
            c.step(&ncx, name, Some(opts), body)
        },
    );
    let c = ctx.clone();
    documented(
        "parallel",
        &["items: Array", "body: Fn", "Array"],
        "/// Runs `body(item)` for every item at once, each branch its own step scope named\n\
         /// `[item]`; returns the branch results in order. The first failure fails the call\n\
         /// once every branch has ended.",
    )
    .register_into_engine(
        engine,
        move |ncx: NativeCallContext, items: rhai::Array, body: FnPtr| {
            c.enter(ncx.call_source());
            c.parallel(&ncx, items, None, body)
        },
    );
    let c = ctx.clone();
    documented(
        "parallel",
        &["items: Array", "options: Map", "body: Fn", "Array"],
        "/// Like `parallel(items, body)`, with `#{ limit: n }`: at most n branches at once.",
    )
    .register_into_engine(
        engine,
        move |ncx: NativeCallContext, items: rhai::Array, opts: Map, body: FnPtr| {
            c.enter(ncx.call_source());
            let mut limit = None;
            for (k, v) in opts {
                limit = Some(super::options::parallel_option(&k, v).map_err(|e| {
                    let message = e.message(super::options::PARALLEL_OPTIONS);
                    c.invalid(format!("parallel: {message}"), ncx.call_position())
                })?);
            }
            c.parallel(&ncx, items, limit, body)
        },
    );
    let c = ctx.clone();
    documented(
        "approve",
        &["message: string", "()"],
        "/// Asks the operator to approve `message`: on a terminal, y/N; `--yes` approves up\n\
         /// front; otherwise the run pauses (exit 3) until `runbook resume RUN --approve`.\n\
         /// Who approved, and how, is journaled. A dry-run notes it and goes on.",
    )
    .register_into_engine(engine, move |ncx: NativeCallContext, message: &str| {
        c.enter(ncx.call_source());
        c.approve(message, ncx.call_position())
    });
    let c = ctx.clone();
    documented(
        "sleep",
        &["duration: string", "()"],
        "/// A durable timer (\"30s\", \"10m\"): a resumed run waits only for what is left; a\n\
         /// dry-run does not wait.",
    )
    .register_into_engine(engine, move |ncx: NativeCallContext, d: &str| {
        c.enter(ncx.call_source());
        c.sleep(d, ncx.call_position())
    });
    let c = ctx.clone();
    documented(
        "sleep",
        &["seconds: int", "()"],
        "/// A durable timer of `seconds`.",
    )
    .register_into_engine(engine, move |ncx: NativeCallContext, secs: rhai::INT| {
        c.enter(ncx.call_source());
        c.sleep(&format!("{secs}s"), ncx.call_position())
    });
    let c = ctx.clone();
    documented(
        "log",
        &["value: ?", "()"],
        "/// A line in the output and the journal (secrets masked).",
    )
    .register_into_engine(engine, move |value: Dynamic| c.log(display(&value)));
    let c = ctx.clone();
    documented(
        "result",
        &["name: &str", "value: ?", "()"],
        "/// A result of the run under a name (the new primary, the data-loss bound in bytes):\n\
         /// journaled and shown by `runbook report` in the run's summary.",
    )
    .register_into_engine(engine, move |name: &str, value: Dynamic| {
        let json = if value.is::<Secret>() {
            serde_json::Value::String(display(&value))
        } else {
            crate::value::dynamic_to_json(&value)
                .unwrap_or_else(|_| serde_json::Value::String(display(&value)))
        };
        c.result(name, json)
    });
    let c = ctx.clone();
    // Checks that read what a write just changed cannot pass in a dry-run, where the write
    // was only predicted: runbooks skip them with `if !is_dry_run() { .. }`.
    documented(
        "is_dry_run",
        &["bool"],
        "/// True in a dry-run, where writes are only predicted: skip the checks that read what\n\
         /// a write just changed.",
    )
    .register_into_engine(engine, move || c.dry_run());
    documented(
        "join",
        &["items: array", "separator: string", "string"],
        "/// The items as one text, `separator` between them: `regions.join(\", \")` is\n\
         /// `eu-west-1, us-east-1` where `${regions}` would show `[\"eu-west-1\", \"us-east-1\"]`.",
    )
    .register_into_engine(engine, |items: rhai::Array, separator: &str| -> String {
        items
            .iter()
            .map(|item| item.to_string())
            .collect::<Vec<_>>()
            .join(separator)
    });
    let c = ctx.clone();
    documented(
        "runbook_command",
        &["name: string", "vars: Map", "string"],
        "/// The command that runs the runbook `name` beside this one, with the same inventory\n\
         /// and store options and `vars` as its `--var`s, for a message to paste from:\n\
         /// `runbook_command(\"rejoin\", #{ region: old })` is\n\
         /// `runbook run runbooks/rejoin.rhai -i prod.toml --var region=us-east-1`. Spelled as\n\
         /// the run was started, so it reads the same when the run resumes.",
    )
    .register_into_engine(
        engine,
        move |ncx: NativeCallContext, name: &str, vars: Map| -> RhaiResult<String> {
            c.enter(ncx.call_source());
            command_of(&c.started_as(), name, &vars).map_err(|m| c.invalid(m, ncx.call_position()))
        },
    );
    let c = ctx.clone();
    documented(
        "runbook_command",
        &["name: string", "string"],
        "/// The command that runs the runbook `name` beside this one, with the same inventory\n\
         /// and store options: `runbook_command(\"status\")` is\n\
         /// `runbook run runbooks/status.rhai -i prod.toml`.",
    )
    .register_into_engine(
        engine,
        move |ncx: NativeCallContext, name: &str| -> RhaiResult<String> {
            c.enter(ncx.call_source());
            command_of(&c.started_as(), name, &Map::new())
                .map_err(|m| c.invalid(m, ncx.call_position()))
        },
    );
    documented(
        "fail",
        &["message: string", "()"],
        "/// Fails the current step with `message` (exit 1 unless a `try` catches it).",
    )
    .register_into_engine(
        engine,
        |ncx: NativeCallContext, message: &str| -> RhaiResult<()> { Err(err(message, &ncx)) },
    );
    let c = ctx.clone();
    documented(
        "secret",
        &["name: string", "Secret"],
        "/// The secret in the environment variable `name`: passed to actions, never printed,\n\
         /// journaled as a reference, masked wherever its value shows up.",
    )
    .register_into_engine(
        engine,
        move |ncx: NativeCallContext, name: &str| -> RhaiResult<Secret> {
            c.enter(ncx.call_source());
            c.secret(name, ncx.call_position())
        },
    );
    let c = ctx.clone();
    documented(
        "now",
        &["Map"],
        "/// The time as `#{ ms, iso }`, recorded: a resumed run gets the same value.",
    )
    .register_into_engine(engine, move |ncx: NativeCallContext| -> RhaiResult {
        c.enter(ncx.call_source());
        let action = c
            .registry()
            .get("time", "now")
            .expect("time::now is registered")
            .clone();
        c.call_action(&action, Dynamic::from_map(Map::new()), ncx.call_position())
    });
    let c = ctx.clone();
    documented(
        "params",
        &["declarations: Map", "Map"],
        "/// Declares the runbook's `--var` parameters, `#{ name: #{ type, default, doc,\n\
         /// required, choices } }` (types string, int, float, bool, list), and returns their\n\
         /// values, typed. A value that does not fit stops the run before it starts (exit 2).",
    )
    .register_into_engine(engine, move |ncx: NativeCallContext, decls: Map| {
        c.enter(ncx.call_source());
        c.params(decls, ncx.call_position())
    });
    let c = ctx.clone();
    documented(
        "lock",
        &["name: string", "()"],
        "/// Takes the lock `name` too, for the rest of the run, so different runbooks acting on\n\
         /// the same system exclude each other (exit 4 names the holder). A dry-run takes none.",
    )
    .register_into_engine(
        engine,
        move |ncx: NativeCallContext, name: &str| -> RhaiResult<()> {
            c.enter(ncx.call_source());
            c.lock(name, ncx.call_position())
        },
    );

    let c = ctx.clone();
    documented(
        "on_failure",
        &["handler: Fn", "()"],
        "/// Calls `handler` if the run fails (an action or `fail(..)`, or a mistake in the\n\
         /// runbook, or an undo of `resume --undo`), before it stops: to tell the team what a\n\
         /// terminal alone would show. It gets `#{ run, step, error, changed, undoing, resume }`\n\
         /// (`changed`: whether the run made a change, so `runbook resume RUN` rather than a new\n\
         /// run; `undoing`: an undo failed, so `runbook resume RUN --undo`; `resume`: that command\n\
         /// as the team would paste it, with the store options, or () when there is none) and runs as the step `on failure\n\
         /// (session N)`, once per failing session. Not called when the run pauses, is\n\
         /// interrupted or is refused; a failure inside it is logged, never hides the first.",
    )
    .register_into_engine(
        engine,
        move |ncx: NativeCallContext, handler: FnPtr| -> RhaiResult<()> {
            c.enter(ncx.call_source());
            c.handler(&ncx, Handler::Failure, handler)
        },
    );

    let c = ctx.clone();
    documented(
        "on_undone",
        &["handler: Fn", "()"],
        "/// Calls `handler` once `runbook resume RUN --undo` has run every undo of the run, before\n\
         /// it closes as undone: to tell the team that heard of its failure that its changes were\n\
         /// reversed. It gets `#{ run, undone, left }` (`undone`: the steps undone, latest first;\n\
         /// `left`: the steps whose changes no undo covers, left as they are) and runs as the step\n\
         /// `on undone (session N)`. A failure inside it is logged; the run is undone all the same.",
    )
    .register_into_engine(
        engine,
        move |ncx: NativeCallContext, handler: FnPtr| -> RhaiResult<()> {
            c.enter(ncx.call_source());
            c.handler(&ncx, Handler::Undone, handler)
        },
    );

    let registry = ctx.registry();
    for namespace in registry.namespaces() {
        let mut module = Module::new();
        for action in registry.in_namespace(namespace) {
            let name = action.spec().name;
            let (c, a) = (ctx.clone(), action.clone());
            let doc: Vec<&str> = docs
                .and_then(|d| d.get(&action.spec().full_name()))
                .map(String::as_str)
                .into_iter()
                .collect();
            FuncRegistration::new(name)
                .with_volatility(true)
                .with_params_info(["input: ?", "Map"])
                .with_comments(doc.clone())
                .set_into_module(&mut module, move |ncx: NativeCallContext, arg: Dynamic| {
                    c.enter(ncx.call_source());
                    c.call_action(&a, arg, ncx.call_position())
                });
            let (c, a) = (ctx.clone(), action.clone());
            FuncRegistration::new(name)
                .with_volatility(true)
                .with_params_info(["Map"])
                .with_comments(doc.clone())
                .set_into_module(&mut module, move |ncx: NativeCallContext| {
                    c.enter(ncx.call_source());
                    c.call_action(&a, Dynamic::from_map(Map::new()), ncx.call_position())
                });
        }
        engine.register_static_module(namespace, module.into());
    }
}

/// `runbook_command(name, vars)`: the runbook `name` (with or without `.rhai`) beside the
/// running one, each of `vars` as `--var key=value` (a list comma-separated, as `params` reads
/// it; `()` left out). A path, or a value no `--var` can carry (a map, a secret), is a mistake
/// in the runbook.
fn command_of(
    started_as: &crate::action::Invocation,
    name: &str,
    vars: &Map,
) -> Result<String, String> {
    let runbook = name.strip_suffix(".rhai").unwrap_or(name);
    if runbook.is_empty() || runbook.contains(['/', '\\']) || runbook.trim() != runbook {
        return Err(format!(
            "runbook_command takes the name of a runbook beside this one, such as \"rejoin\", not {name:?}"
        ));
    }
    let mut rest = String::new();
    for (key, value) in vars {
        let text = if value.is_unit() {
            continue;
        } else if value.is::<Secret>() {
            return Err(format!(
                "runbook_command: --var {key} would spell a secret in a command; pass it through the environment instead"
            ));
        } else if let Some(items) = value.read_lock::<rhai::Array>() {
            items
                .iter()
                .map(|v| v.to_string())
                .collect::<Vec<_>>()
                .join(",")
        } else if value.is_map() || value.is::<Inv>() || value.is::<FnPtr>() {
            return Err(format!(
                "runbook_command: --var {key} takes a string, a number, a bool or a list, not {}",
                value.type_name()
            ));
        } else {
            value.to_string()
        };
        rest.push_str(" --var ");
        rest.push_str(&crate::error::shell_word(&format!("{key}={text}")));
    }
    Ok(started_as.run(runbook, &rest))
}

/// How `log` shows a value.
fn display(value: &Dynamic) -> String {
    if let Some(s) = value.read_lock::<Secret>() {
        return s.to_string();
    }
    if let Some(inv) = value.read_lock::<Inv>() {
        return inv.value.to_string();
    }
    value.to_string()
}

fn register_types(engine: &mut Engine) {
    engine
        .register_type_with_name::<Secret>("Secret")
        .register_fn("to_string", |s: &mut Secret| s.to_string())
        .register_fn("to_debug", |s: &mut Secret| s.to_string())
        .register_get("name", |s: &mut Secret| s.name.clone());

    engine.register_type_with_name::<Inv>("Inventory");
    documented(
        "keys",
        &["inventory: Inventory", "array"],
        "/// The keys of this part of the inventory.",
    )
    .register_into_engine(engine, |inv: &mut Inv| -> rhai::Array {
        inv.keys().into_iter().map(Dynamic::from).collect()
    });
    documented(
        "values",
        &["inventory: Inventory", "array"],
        "/// The values of this part of the inventory, in the order of its keys.",
    )
    .register_into_engine(engine, |inv: &mut Inv| -> rhai::Array {
        inv.keys().iter().filter_map(|k| inv.get(k)).collect()
    });
    documented(
        "len",
        &["inventory: Inventory", "int"],
        "/// How many keys this part of the inventory has.",
    )
    .register_into_engine(engine, |inv: &mut Inv| inv.keys().len() as rhai::INT);
    documented(
        "contains",
        &["inventory: Inventory", "key: string", "bool"],
        "/// Whether this part of the inventory has `key`.",
    )
    .register_into_engine(engine, |inv: &mut Inv, key: &str| {
        inv.keys().iter().any(|k| k == key)
    });
    documented(
        "get",
        &["inventory: Inventory", "key: string", "default: ?", "?"],
        "/// The value at `key`, or `default` when there is none.",
    )
    .register_into_engine(engine, |inv: &mut Inv, key: &str, default: Dynamic| {
        inv.get(key).unwrap_or(default)
    });
    documented(
        "to_map",
        &["inventory: Inventory", "map"],
        "/// This part of the inventory as a plain map (secrets stay secrets).",
    )
    .register_into_engine(engine, |inv: &mut Inv| -> Map {
        inv.keys()
            .iter()
            .filter_map(|k| inv.get(k).map(|v| (k.as_str().into(), v)))
            .collect()
    });
    engine
        .register_fn("to_string", |inv: &mut Inv| {
            format!(
                "inventory {}",
                if inv.path.is_empty() {
                    "(top)"
                } else {
                    &inv.path
                }
            )
        })
        .register_fn("to_debug", |inv: &mut Inv| {
            format!("inventory {}", inv.path)
        });
}

#[cfg(test)]
mod tests {
    use rhai::{Dynamic, Map};

    use super::command_of;
    use crate::action::Invocation;
    use crate::secret::Secret;

    #[test]
    fn a_runbook_command_is_spelled_to_paste() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("rejoin.rhai"), "").unwrap();
        let here = dir.path().display().to_string();
        let started = Invocation::new(
            &format!("{here}/emergency-failover.rhai"),
            Some("prod.toml"),
            " --state-dir /srv/rb",
        );
        let vars = |pairs: &[(&str, Dynamic)]| -> Map {
            pairs
                .iter()
                .map(|(k, v)| ((*k).into(), v.clone()))
                .collect()
        };
        let list: rhai::Array = vec!["eu-west-1".into(), "us-east-1".into()];
        let cases: Vec<(&str, &str, Map, Result<String, &str>)> = vec![
            (
                "beside the running runbook, inventory and store as started",
                "rejoin",
                vars(&[("region", "us-east-1".into())]),
                Ok(format!(
                    "runbook run {here}/rejoin.rhai -i prod.toml --var region=us-east-1 --state-dir /srv/rb"
                )),
            ),
            (
                "the name may end in .rhai; no vars",
                "rejoin.rhai",
                Map::new(),
                Ok(format!(
                    "runbook run {here}/rejoin.rhai -i prod.toml --state-dir /srv/rb"
                )),
            ),
            (
                "not beside it: where the shipped runbooks are",
                "status",
                Map::new(),
                Ok("runbook run runbooks/status.rhai -i prod.toml --state-dir /srv/rb".into()),
            ),
            (
                "numbers, bools and lists as --var reads them; () left out; keys in order",
                "rejoin",
                vars(&[
                    ("weight", Dynamic::from(0_i64)),
                    ("force", true.into()),
                    ("regions", list.into()),
                    ("unset", Dynamic::UNIT),
                ]),
                Ok(format!("runbook run {here}/rejoin.rhai -i prod.toml --var force=true --var regions=eu-west-1,us-east-1 --var weight=0 --state-dir /srv/rb")),
            ),
            (
                "a value with spaces or quotes is quoted for the shell",
                "rejoin",
                vars(&[("reason", "it's back".into())]),
                Ok(format!(
                    "runbook run {here}/rejoin.rhai -i prod.toml --var 'reason=it'\\''s back' --state-dir /srv/rb"
                )),
            ),
            ("a path is refused", "../rejoin", Map::new(), Err("not \"../rejoin\"")),
            ("an empty name is refused", "", Map::new(), Err("not \"\"")),
            (
                "a map is refused",
                "rejoin",
                vars(&[("region", Dynamic::from_map(Map::new()))]),
                Err("--var region takes a string, a number, a bool or a list, not map"),
            ),
            (
                "a secret is never spelled",
                "rejoin",
                vars(&[(
                    "token",
                    Dynamic::from(Secret::placeholder("TOKEN")),
                )]),
                Err("--var token would spell a secret"),
            ),
        ];
        for (what, name, vars, want) in cases {
            let got = command_of(&started, name, &vars);
            match want {
                Ok(want) => assert_eq!(got, Ok(want), "{what}"),
                Err(part) => {
                    let message = got.expect_err(what);
                    assert!(message.contains(part), "{what}: {message}");
                }
            }
        }
    }
}
