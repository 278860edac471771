//! A runbook's declared parameters (`params(#{...})`): the keys and types a declaration may
//! have, and `--var name=value` checked and converted against them.

use std::collections::BTreeMap;

use rhai::{Dynamic, Map};

/// The keys a parameter declaration may have.
pub const PARAM_KEYS: [&str; 5] = ["type", "default", "doc", "required", "choices"];
pub const PARAM_TYPES: [&str; 9] = [
    "string", "int", "float", "bool", "list", "duration", "size", "region", "regions",
];

/// What a `region` or `regions` parameter may name: the regions of the run's inventory
/// (`[regions.NAME]`, in the file's order), and the file, for messages.
#[derive(Debug, Clone)]
pub struct Regions {
    pub file: String,
    pub names: Vec<String>,
}

impl Regions {
    /// The regions of an inventory read from `file` (its `regions` table's keys).
    pub fn of(file: &str, inventory: &serde_json::Value) -> Regions {
        Regions {
            file: file.to_string(),
            names: inventory["regions"]
                .as_object()
                .map(|regions| regions.keys().cloned().collect())
                .unwrap_or_default(),
        }
    }
}

/// `params(#{ name: #{type, default, doc, required, choices} })`: checks the `--var` values
/// against the declarations and returns them typed, or every problem found. `regions`: the
/// inventory's, which `region` and `regions` parameters are checked against (None: the run has
/// no inventory).
pub fn resolve_params(
    decls: &Map,
    vars: &BTreeMap<String, String>,
    regions: Option<&Regions>,
) -> Result<Map, Vec<String>> {
    let mut problems = Vec::new();
    let mut out = Map::new();
    for (name, decl) in decls {
        let Some(decl) = decl.read_lock::<Map>().map(|m| m.clone()) else {
            problems.push(format!("parameter '{name}': its declaration must be a map, e.g. #{{ type: \"string\", default: \"..\" }}"));
            continue;
        };
        for key in decl.keys() {
            if !PARAM_KEYS.contains(&key.as_str()) {
                problems.push(format!(
                    "parameter '{name}': unknown key `{key}`; the keys are {}",
                    PARAM_KEYS.join(", ")
                ));
            }
        }
        let ty = decl
            .get("type")
            .map(|t| t.to_string())
            .unwrap_or_else(|| "string".into());
        if !PARAM_TYPES.contains(&ty.as_str()) {
            problems.push(format!(
                "parameter '{name}': unknown type \"{ty}\"; the types are {}",
                PARAM_TYPES.join(", ")
            ));
            continue;
        }
        let doc = decl
            .get("doc")
            .map(|d| format!(" ({d})"))
            .unwrap_or_default();
        let value = match vars.get(name.as_str()) {
            Some(text) => match parse_param(&ty, text) {
                Ok(v) => v,
                Err(e) => {
                    problems.push(format!("--var {name}={text}: {e}"));
                    continue;
                }
            },
            None => match decl.get("default") {
                Some(d) => match default_value(&ty, d) {
                    Ok(v) => v,
                    Err(e) => {
                        problems.push(format!("parameter '{name}': its default {e}"));
                        continue;
                    }
                },
                None if decl.get("required").and_then(|r| r.as_bool().ok()) == Some(false) => {
                    Dynamic::UNIT
                }
                None => {
                    problems.push(format!("missing parameter: --var {name}=<{ty}>{doc}"));
                    continue;
                }
            },
        };
        if let Some(choices) = decl
            .get("choices")
            .and_then(|c| c.read_lock::<rhai::Array>().map(|a| a.clone()))
        {
            if let Err(list) = one_of(&value, &choices) {
                let shown = value.to_string();
                problems.push(match vars.contains_key(name.as_str()) {
                    true => format!("--var {name}={shown}: must be one of {list}"),
                    false => format!(
                        "parameter '{name}': its default {shown} is not one of its choices, {list}"
                    ),
                });
                continue;
            }
        }
        if let Err(problem) = names_regions(&ty, &value, regions) {
            problems.push(match vars.get(name.as_str()) {
                Some(text) => format!("--var {name}={text}: {problem}"),
                None => format!("parameter '{name}': its default {problem}"),
            });
            continue;
        }
        out.insert(name.clone(), value);
    }
    for given in vars.keys() {
        if !decls.contains_key(given.as_str()) {
            let declared: Vec<&str> = decls.keys().map(|k| k.as_str()).collect();
            let hint = if declared.is_empty() {
                "it declares none".to_string()
            } else {
                format!("it declares {}", declared.join(", "))
            };
            let close = crate::suggest::suggest(given, declared.iter().copied());
            problems.push(format!("unknown parameter --var {given}{close}: {hint}"));
        }
    }
    if !problems.is_empty() {
        return Err(problems);
    }
    Ok(out)
}

/// The declared parameters as an operator passes them, a line each in aligned columns, the
/// required ones first: `--var target=<string>  required  the region to become primary`.
pub fn describe(decls: &Map) -> Vec<String> {
    let mut rows: Vec<[String; 3]> = decls
        .iter()
        .map(|(name, decl)| {
            let decl = decl
                .read_lock::<Map>()
                .map(|m| m.clone())
                .unwrap_or_default();
            let text = |key: &str| decl.get(key).map(|v| v.to_string());
            let ty = text("type").unwrap_or_else(|| "string".into());
            let need = match decl.get("default") {
                Some(d) => format!("default {}", shown_default(d)),
                None if decl.get("required").and_then(|r| r.as_bool().ok()) == Some(false) => {
                    "optional".into()
                }
                None => "required".into(),
            };
            let mut doc = text("doc").unwrap_or_default();
            if let Some(choices) = decl
                .get("choices")
                .and_then(|c| c.read_lock::<rhai::Array>().map(|a| a.clone()))
            {
                let list: Vec<String> = choices.iter().map(|c| c.to_string()).collect();
                doc = format!("{doc} (one of {})", list.join(", "))
                    .trim()
                    .to_string();
            }
            [format!("--var {name}=<{ty}>"), need, doc]
        })
        .collect();
    // What must be given first.
    rows.sort_by_key(|r| r[1] != "required");
    let width = |i: usize| rows.iter().map(|r| r[i].chars().count()).max().unwrap_or(0);
    let (w0, w1) = (width(0), width(1));
    rows.iter()
        .map(|[a, b, c]| format!("{a:w0$}  {b:w1$}  {c}").trim_end().to_string())
        .collect()
}

/// A default as it would be written after `--var name=`: a list comma-separated, an empty
/// text as "".
fn shown_default(value: &Dynamic) -> String {
    if let Some(items) = value.read_lock::<rhai::Array>() {
        let items: Vec<String> = items.iter().map(|i| i.to_string()).collect();
        return if items.is_empty() {
            "(none)".into()
        } else {
            items.join(",")
        };
    }
    match value.to_string() {
        t if t.is_empty() => "\"\"".into(),
        t => t,
    }
}

/// A runbook's parameter declarations read from its tree as written (`plain`, from
/// [`super::parse_plain`]) without running it: the map literal of its `params(#{ .. })` call.
/// An empty map when it declares none; None when the declarations are not a literal (built at
/// run time).
pub fn declared(plain: &rhai::AST) -> Option<Map> {
    use rhai::{ASTNode, Expr, Stmt};
    let mut found: Option<Option<Map>> = None;
    plain.walk(&mut |path: &[ASTNode]| {
        if let Some(ASTNode::Expr(Expr::FnCall(call, _)) | ASTNode::Stmt(Stmt::FnCall(call, _))) =
            path.last()
        {
            if call.name == "params" && call.namespace.is_empty() && found.is_none() {
                found = Some(match call.args.as_slice() {
                    [arg] => constant(arg).and_then(|d| d.try_cast::<Map>()),
                    _ => None,
                });
            }
        }
        true
    });
    found.unwrap_or_else(|| Some(Map::new()))
}

/// The value of an expression made of literals only (strings, numbers, booleans, arrays and
/// maps of them); None for anything computed.
fn constant(e: &rhai::Expr) -> Option<Dynamic> {
    use rhai::Expr;
    Some(match e {
        Expr::DynamicConstant(d, _) => (**d).clone(),
        Expr::StringConstant(s, _) => Dynamic::from(s.clone()),
        Expr::BoolConstant(b, _) => Dynamic::from(*b),
        Expr::IntegerConstant(i, _) => Dynamic::from(*i),
        Expr::FloatConstant(f, _) => Dynamic::from(**f),
        Expr::Unit(_) => Dynamic::UNIT,
        Expr::Array(items, _) => {
            Dynamic::from_array(items.iter().map(constant).collect::<Option<Vec<_>>>()?)
        }
        Expr::Map(m, _) => {
            let mut map = Map::new();
            for (k, v) in m.0.iter() {
                map.insert(k.name.clone().into(), constant(v)?);
            }
            for (k, v) in m.1.iter() {
                map.entry(k.clone()).or_insert_with(|| v.clone());
            }
            Dynamic::from_map(map)
        }
        _ => return None,
    })
}

fn parse_param(ty: &str, text: &str) -> Result<Dynamic, String> {
    match ty {
        "int" => text
            .trim()
            .parse::<rhai::INT>()
            .map(Dynamic::from)
            .map_err(|_| "expected a whole number".into()),
        "float" => text
            .trim()
            .parse::<rhai::FLOAT>()
            .map(Dynamic::from)
            .map_err(|_| "expected a number".into()),
        "bool" => match text.trim() {
            "true" | "yes" | "1" => Ok(true.into()),
            "false" | "no" | "0" => Ok(false.into()),
            _ => Err("expected true or false".into()),
        },
        "region" => Ok(Dynamic::from(text.trim().to_string())),
        "list" | "regions" => Ok(Dynamic::from_array(
            text.split(',')
                .map(|s| s.trim())
                .filter(|s| !s.is_empty())
                .map(|s| Dynamic::from(s.to_string()))
                .collect(),
        )),
        // Checked now, before any step, and kept as written: actions read "90s" themselves.
        "duration" => {
            crate::action::Dur::parse(text).map(|_| Dynamic::from(text.trim().to_string()))
        }
        // The script gets bytes, to compare with what the servers report.
        "size" => parse_size(text).map(Dynamic::from),
        _ => Ok(Dynamic::from(text.to_string())),
    }
}

/// That a `region` or `regions` parameter's value names regions of the inventory, each once
/// (an empty one names none: the runbook's default applies); what is wrong, when it does not.
fn names_regions(ty: &str, value: &Dynamic, regions: Option<&Regions>) -> Result<(), String> {
    let named: Vec<String> = match ty {
        "region" => vec![value.to_string()],
        "regions" => value
            .read_lock::<rhai::Array>()
            .map(|a| a.iter().map(|r| r.to_string()).collect())
            .unwrap_or_default(),
        _ => return Ok(()),
    };
    let named: Vec<&str> = named
        .iter()
        .map(|r| r.trim())
        .filter(|r| !r.is_empty())
        .collect();
    if named.is_empty() {
        return Ok(());
    }
    let Some(regions) = regions else {
        return Err(
            "names a region, and no inventory was given: add -i FILE (the inventory describing the regions)"
                .into(),
        );
    };
    let known = || regions.names.iter().map(String::as_str);
    for (i, region) in named.iter().enumerate() {
        if !known().any(|k| k == *region) {
            let shown = match ty {
                "region" => "no such region".to_string(),
                _ => format!("no region {region}"),
            };
            return Err(format!(
                "{shown} in the inventory {}, which has {}{}",
                regions.file,
                regions.names.join(", "),
                crate::suggest::suggest(region, known()),
            ));
        }
        if named[..i].contains(region) {
            return Err(format!("{region} is named twice"));
        }
    }
    Ok(())
}

/// Whether a parameter's value is one of its `choices` (a value not given is); the choices,
/// listed, when it is not.
pub fn one_of(value: &Dynamic, choices: &[Dynamic]) -> Result<(), String> {
    let shown = value.to_string();
    if value.is_unit() || choices.iter().any(|c| c.to_string() == shown) {
        return Ok(());
    }
    let list: Vec<String> = choices.iter().map(|c| c.to_string()).collect();
    Err(list.join(", "))
}

/// A declared default checked against the parameter's type (`()`, none, fits any): what the
/// script gets — a size in bytes, a whole number as a float for a float.
pub fn default_value(ty: &str, value: &Dynamic) -> Result<Dynamic, String> {
    let fits = match ty {
        _ if value.is_unit() => true,
        "duration" => return default_duration(value).map(|()| value.clone()),
        "size" => return default_size(value).map(Dynamic::from),
        "float" if value.is_int() => {
            return Ok(Dynamic::from(
                value.as_int().unwrap_or_default() as rhai::FLOAT
            ))
        }
        "string" | "region" => value.is_string() || value.is_char(),
        "int" => value.is_int(),
        "float" => value.is_float(),
        "bool" => value.is_bool(),
        "list" | "regions" => value.is_array(),
        _ => true,
    };
    if fits {
        return Ok(value.clone());
    }
    let what = match ty {
        "string" | "region" => "text: write it in quotes",
        "int" => "a whole number",
        "float" => "a number",
        "bool" => "true or false",
        _ => "a list, e.g. [\"a\", \"b\"]",
    };
    let shown = match value.is_string() {
        true => format!("\"{value}\""),
        false => value.to_string(),
    };
    Err(format!("{shown} is not {what} (its type is {ty})"))
}

/// A duration parameter's declared default: text an action reads as a duration.
pub fn default_duration(value: &Dynamic) -> Result<(), String> {
    match value.clone().into_string() {
        Ok(text) => crate::action::Dur::parse(&text).map(|_| ()),
        Err(_) => Err(format!(
            "{value} is not a duration: write it as text, e.g. \"500ms\", \"5s\", \"2m\""
        )),
    }
}

/// A size parameter's declared default: a whole number of bytes, or text [`parse_size`]
/// reads; in bytes.
pub fn default_size(value: &Dynamic) -> Result<rhai::INT, String> {
    if let Ok(bytes) = value.as_int() {
        return Ok(bytes);
    }
    match value.clone().into_string() {
        Ok(text) => parse_size(&text),
        Err(_) => Err(format!(
            "{value} is not a size: write bytes (16777216) or text with a unit, e.g. \"16MB\""
        )),
    }
}

/// A size as an operator writes it: a whole number of bytes (as an `int` parameter takes it),
/// or a number and a unit as PostgreSQL writes them — B, kB, MB, GB, TB, each 1024 times the
/// one before (KiB, MiB, GiB and TiB mean the same; case does not matter): "16MB", "1.5 GB".
pub fn parse_size(text: &str) -> Result<rhai::INT, String> {
    let bad = || {
        format!("'{}' is not a size; write bytes (16777216) or a number with a unit: \"16MB\", \"512kB\", \"1.5GB\"", text.trim())
    };
    let t = text.trim();
    if let Ok(bytes) = t.parse::<rhai::INT>() {
        return Ok(bytes);
    }
    let at = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .ok_or_else(bad)?;
    let (number, unit) = t.split_at(at);
    let shift = match unit.trim().to_ascii_lowercase().as_str() {
        "b" => 0,
        "kb" | "kib" => 10,
        "mb" | "mib" => 20,
        "gb" | "gib" => 30,
        "tb" | "tib" => 40,
        _ => return Err(bad()),
    };
    let number: f64 = number.parse().map_err(|_| bad())?;
    let bytes = (number * (1_u64 << shift) as f64).round();
    if bytes >= rhai::INT::MAX as f64 {
        return Err(format!("'{}' is more bytes than a size can hold", t));
    }
    Ok(bytes as rhai::INT)
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use rhai::{Dynamic, Map};

    use super::resolve_params;
    use super::Regions;

    fn decl(pairs: &[(&str, Dynamic)]) -> Dynamic {
        let mut m = Map::new();
        for (k, v) in pairs {
            m.insert((*k).into(), v.clone());
        }
        Dynamic::from_map(m)
    }

    fn decls() -> Map {
        let mut d = Map::new();
        d.insert(
            "target".into(),
            decl(&[
                ("type", "string".into()),
                (
                    "choices",
                    Dynamic::from_array(vec!["eu".into(), "ap".into()]),
                ),
            ]),
        );
        d.insert(
            "force".into(),
            decl(&[("type", "bool".into()), ("default", false.into())]),
        );
        d.insert(
            "max".into(),
            decl(&[("type", "int".into()), ("default", 16_i64.into())]),
        );
        d.insert(
            "regions".into(),
            decl(&[("type", "list".into()), ("required", false.into())]),
        );
        d.insert(
            "wait".into(),
            decl(&[("type", "duration".into()), ("default", "2m".into())]),
        );
        d
    }

    fn vars(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn parameters_are_typed_defaulted_and_checked() {
        let ok = resolve_params(
            &decls(),
            &vars(&[("target", "eu"), ("force", "yes"), ("regions", "a, b,")]),
            None,
        )
        .unwrap();
        assert_eq!(ok["target"].to_string(), "eu");
        assert!(ok["force"].as_bool().unwrap());
        assert_eq!(ok["max"].as_int().unwrap(), 16);
        assert_eq!(ok["regions"].to_string(), r#"["a", "b"]"#);
        assert_eq!(ok["wait"].to_string(), "2m");
        let given = resolve_params(
            &decls(),
            &vars(&[("target", "eu"), ("wait", " 1h 30m ")]),
            None,
        );
        assert_eq!(given.unwrap()["wait"].to_string(), "1h 30m");

        type Given<'a> = Vec<(&'a str, &'a str)>;
        let cases: Vec<(Given, Vec<&str>)> = vec![
            (vec![], vec!["missing parameter: --var target=<string>"]),
            (
                vec![("target", "us")],
                vec!["--var target=us: must be one of eu, ap"],
            ),
            (
                vec![("target", "eu"), ("max", "many")],
                vec!["--var max=many: expected a whole number"],
            ),
            (
                vec![("target", "eu"), ("force", "maybe")],
                vec!["--var force=maybe: expected true or false"],
            ),
            (
                vec![("target", "eu"), ("wait", "soon")],
                vec![r#"--var wait=soon: 'soon' is not a duration (expected number at 0); write e.g. "500ms", "5s", "2m""#],
            ),
            (
                vec![("target", "eu"), ("taget", "x")],
                vec!["unknown parameter --var taget (did you mean `target`?): it declares force, max, regions, target, wait"],
            ),
            (
                vec![("target", "eu"), ("colour", "x")],
                vec!["unknown parameter --var colour: it declares force, max, regions, target, wait"],
            ),
        ];
        for (given, want) in cases {
            let problems = resolve_params(&decls(), &vars(&given), None).unwrap_err();
            assert_eq!(problems, want, "{given:?}");
        }
        let mut bad = Map::new();
        bad.insert(
            "x".into(),
            decl(&[("type", "date".into()), ("defualt", 1_i64.into())]),
        );
        let list = |items: &[&str]| {
            Dynamic::from_array(items.iter().map(|i| Dynamic::from(i.to_string())).collect())
        };
        // (type, default, what the run gets — or what is wrong)
        let table: Vec<(&str, Dynamic, Result<&str, &str>)> = vec![
            (
                "duration",
                "soon".into(),
                Err("parameter 'x': its default 'soon' is not a duration"),
            ),
            (
                "duration",
                5_i64.into(),
                Err("parameter 'x': its default 5 is not a duration: write it as text"),
            ),
            ("duration", "90s".into(), Ok("90s")),
            (
                "int",
                "x".into(),
                Err("parameter 'x': its default \"x\" is not a whole number (its type is int)"),
            ),
            (
                "int",
                1.5_f64.into(),
                Err("parameter 'x': its default 1.5 is not a whole number"),
            ),
            ("int", 3_i64.into(), Ok("3")),
            ("float", 3_i64.into(), Ok("3.0")),
            (
                "float",
                "0.5".into(),
                Err("parameter 'x': its default \"0.5\" is not a number (its type is float)"),
            ),
            (
                "bool",
                "false".into(),
                Err("parameter 'x': its default \"false\" is not true or false"),
            ),
            ("bool", false.into(), Ok("false")),
            (
                "string",
                5_i64.into(),
                Err("parameter 'x': its default 5 is not text: write it in quotes"),
            ),
            ("string", "eu".into(), Ok("eu")),
            (
                "list",
                "a,b".into(),
                Err("parameter 'x': its default \"a,b\" is not a list, e.g. [\"a\", \"b\"]"),
            ),
            ("list", list(&["a", "b"]), Ok(r#"["a", "b"]"#)),
            ("size", "16MB".into(), Ok("16777216")),
            ("int", Dynamic::UNIT, Ok("")),
        ];
        for (ty, default, want) in table {
            let mut d = Map::new();
            d.insert(
                "x".into(),
                decl(&[("type", ty.into()), ("default", default.clone())]),
            );
            match (resolve_params(&d, &vars(&[]), None), want) {
                (Ok(got), Ok(value)) => assert_eq!(got["x"].to_string(), value, "{ty} {default}"),
                (Err(problems), Err(want)) => {
                    assert!(
                        problems[0].starts_with(want),
                        "{ty} {default}: {problems:?}"
                    )
                }
                (got, want) => panic!("{ty} {default}: {got:?}, expected {want:?}"),
            }
        }
        let mut d = Map::new();
        d.insert(
            "x".into(),
            decl(&[("default", "c".into()), ("choices", list(&["a", "b"]))]),
        );
        assert_eq!(
            resolve_params(&d, &vars(&[]), None).unwrap_err(),
            ["parameter 'x': its default c is not one of its choices, a, b"]
        );
        assert_eq!(
            resolve_params(&d, &vars(&[("x", "d")]), None).unwrap_err(),
            ["--var x=d: must be one of a, b"]
        );
        assert_eq!(
            resolve_params(&d, &vars(&[("x", "a")]), None).unwrap()["x"].to_string(),
            "a"
        );
        let problems = resolve_params(&bad, &vars(&[]), None).unwrap_err();
        assert!(
            problems.iter().any(|p| p.contains("unknown key `defualt`")),
            "{problems:?}"
        );
        assert!(
            problems.iter().any(|p| p.contains("unknown type \"date\"")),
            "{problems:?}"
        );
    }

    /// A `region` names one region of the inventory, `regions` a list of them, each once; an
    /// empty value names none (the runbook's default applies).
    #[test]
    fn region_parameters_name_regions_of_the_inventory() {
        let inventory = Regions {
            file: "prod.toml".into(),
            names: vec![
                "us-east-1".into(),
                "eu-west-1".into(),
                "ap-southeast-1".into(),
            ],
        };
        let list = |items: &[&str]| {
            Dynamic::from_array(items.iter().map(|i| Dynamic::from(i.to_string())).collect())
        };
        let has = "in the inventory prod.toml, which has us-east-1, eu-west-1, ap-southeast-1";
        // (type, default, --var, with the inventory?, what the run gets — or what is wrong)
        type Case<'a> = (
            &'a str,
            Dynamic,
            Option<&'a str>,
            bool,
            Result<&'a str, String>,
        );
        let table: Vec<Case> = vec![
            ("region", Dynamic::UNIT, Some("eu-west-1"), true, Ok("eu-west-1")),
            ("region", Dynamic::UNIT, Some(" eu-west-1 "), true, Ok("eu-west-1")),
            ("region", "".into(), None, true, Ok("")),
            ("region", "".into(), None, false, Ok("")),
            ("region", "".into(), Some(""), true, Ok("")),
            ("region", "ap-southeast-1".into(), None, true, Ok("ap-southeast-1")),
            (
                "region",
                Dynamic::UNIT,
                Some("eu-wset-1"),
                true,
                Err(format!("--var x=eu-wset-1: no such region {has} (did you mean `eu-west-1`?)")),
            ),
            (
                "region",
                Dynamic::UNIT,
                Some("mars"),
                true,
                Err(format!("--var x=mars: no such region {has}")),
            ),
            (
                "region",
                "mars".into(),
                None,
                true,
                Err(format!("parameter 'x': its default no such region {has}")),
            ),
            (
                "region",
                Dynamic::UNIT,
                Some("eu-west-1"),
                false,
                Err("--var x=eu-west-1: names a region, and no inventory was given: add -i FILE (the inventory describing the regions)".into()),
            ),
            (
                "region",
                5_i64.into(),
                None,
                true,
                Err("parameter 'x': its default 5 is not text: write it in quotes (its type is region)".into()),
            ),
            ("regions", list(&[]), None, true, Ok("[]")),
            ("regions", list(&[]), None, false, Ok("[]")),
            ("regions", list(&[]), Some(""), true, Ok("[]")),
            (
                "regions",
                list(&[]),
                Some("eu-west-1, us-east-1,"),
                true,
                Ok(r#"["eu-west-1", "us-east-1"]"#),
            ),
            (
                "regions",
                list(&[]),
                Some("eu-west-1,eu-wset-1"),
                true,
                Err(format!("--var x=eu-west-1,eu-wset-1: no region eu-wset-1 {has} (did you mean `eu-west-1`?)")),
            ),
            (
                "regions",
                list(&[]),
                Some("eu-west-1,us-east-1,eu-west-1"),
                true,
                Err("--var x=eu-west-1,us-east-1,eu-west-1: eu-west-1 is named twice".into()),
            ),
            (
                "regions",
                list(&["us-east-1", "venus"]),
                None,
                true,
                Err(format!("parameter 'x': its default no region venus {has}")),
            ),
            (
                "regions",
                Dynamic::UNIT,
                Some("us-east-1"),
                false,
                Err("--var x=us-east-1: names a region, and no inventory was given: add -i FILE (the inventory describing the regions)".into()),
            ),
            (
                "regions",
                "us-east-1".into(),
                None,
                true,
                Err(r#"parameter 'x': its default "us-east-1" is not a list, e.g. ["a", "b"] (its type is regions)"#.into()),
            ),
        ];
        for (ty, default, given, with_inventory, want) in table {
            let mut d = Map::new();
            d.insert(
                "x".into(),
                decl(&[("type", ty.into()), ("default", default.clone())]),
            );
            let given_vars = vars(&given.map(|g| vec![("x", g)]).unwrap_or_default());
            let got = resolve_params(&d, &given_vars, with_inventory.then_some(&inventory));
            let case = format!("{ty} default {default} --var {given:?} inventory {with_inventory}");
            match (got, want) {
                (Ok(got), Ok(value)) => assert_eq!(got["x"].to_string(), value, "{case}"),
                (Err(problems), Err(want)) => assert_eq!(problems, vec![want], "{case}"),
                (got, want) => panic!("{case}: {got:?}, expected {want:?}"),
            }
        }
    }

    #[test]
    fn sizes_are_bytes_or_numbers_with_units() {
        let bad = |t: &str| {
            format!("'{t}' is not a size; write bytes (16777216) or a number with a unit: \"16MB\", \"512kB\", \"1.5GB\"")
        };
        let cases: Vec<(&str, Result<i64, String>)> = vec![
            ("16777216", Ok(16_777_216)),
            (" 0 ", Ok(0)),
            ("-1", Ok(-1)),
            ("100B", Ok(100)),
            ("512kB", Ok(512 * 1024)),
            ("16MB", Ok(16 << 20)),
            ("16 MB", Ok(16 << 20)),
            ("16mb", Ok(16 << 20)),
            ("16MiB", Ok(16 << 20)),
            ("1.5GB", Ok(1_610_612_736)),
            ("1TB", Ok(1 << 40)),
            ("", Err(bad(""))),
            ("MB", Err(bad("MB"))),
            ("16 MBs", Err(bad("16 MBs"))),
            ("-16MB", Err(bad("-16MB"))),
            ("1.2.3MB", Err(bad("1.2.3MB"))),
            ("1e3", Err(bad("1e3"))),
            (
                "9000000TB",
                Err("'9000000TB' is more bytes than a size can hold".into()),
            ),
        ];
        for (text, want) in cases {
            assert_eq!(super::parse_size(text), want, "{text:?}");
        }

        let mut d = Map::new();
        d.insert(
            "max".into(),
            decl(&[("type", "size".into()), ("default", "16MB".into())]),
        );
        d.insert(
            "floor".into(),
            decl(&[("type", "size".into()), ("default", 1024_i64.into())]),
        );
        let ok = resolve_params(&d, &vars(&[]), None).unwrap();
        assert_eq!(ok["max"].as_int().unwrap(), 16 << 20);
        assert_eq!(ok["floor"].as_int().unwrap(), 1024);
        let given = resolve_params(&d, &vars(&[("max", "64MB")]), None).unwrap();
        assert_eq!(given["max"].as_int().unwrap(), 64 << 20);
        let problems = resolve_params(&d, &vars(&[("max", "lots")]), None).unwrap_err();
        assert_eq!(problems, vec![format!("--var max=lots: {}", bad("lots"))]);
        d.insert(
            "max".into(),
            decl(&[("type", "size".into()), ("default", "big".into())]),
        );
        let problems = resolve_params(&d, &vars(&[]), None).unwrap_err();
        assert_eq!(
            problems,
            vec![format!("parameter 'max': its default {}", bad("big"))]
        );
        assert_eq!(
            super::describe(&d),
            vec![
                "--var floor=<size>  default 1024",
                "--var max=<size>    default big"
            ]
        );
    }

    #[test]
    fn parameters_are_described_as_an_operator_passes_them() {
        let mut d = decls();
        d.insert(
            "from".into(),
            decl(&[
                ("type", "string".into()),
                ("default", "".into()),
                ("doc", "the primary".into()),
            ]),
        );
        d.insert(
            "weights".into(),
            decl(&[
                ("type", "list".into()),
                (
                    "default",
                    Dynamic::from_array(vec!["70".into(), "30".into()]),
                ),
            ]),
        );
        assert_eq!(
            super::describe(&d),
            vec![
                "--var target=<string>  required       (one of eu, ap)",
                "--var force=<bool>     default false",
                "--var from=<string>    default \"\"     the primary",
                "--var max=<int>        default 16",
                "--var regions=<list>   optional",
                "--var wait=<duration>  default 2m",
                "--var weights=<list>   default 70,30",
            ]
        );
    }

    /// Declarations read from the source, as `runbook watch` checks its runbook: the literal
    /// map of the first `params(..)` call, closures and imports around it left alone.
    #[test]
    fn declarations_are_read_from_a_literal_map() {
        let keys = |m: Option<Map>| m.map(|m| m.keys().map(|k| k.to_string()).collect::<Vec<_>>());
        let cases: [(&str, Option<Vec<&str>>); 7] = [
            (
                r#"import "pg" as pg2; let p = params(#{ from: #{ type: "string" }, n: #{ type: "int", default: 3, choices: [1, 2, 3] } }); step("a", || log(p.from));"#,
                Some(vec!["from", "n"]),
            ),
            (r#"step("a", || log("no parameters"));"#, Some(vec![])),
            (r#"let p = params(#{});"#, Some(vec![])),
            (
                r#"let d = #{ from: #{ type: "string" } }; let p = params(d);"#,
                None,
            ),
            (
                r#"let p = params(#{ from: #{ type: "string", default: `x${1}` } });"#,
                None,
            ),
            (r#"let p = params(#{ a: #{} }, 1);"#, None),
            ("let x = ;", None),
        ];
        for (source, want) in cases {
            let want = want.map(|w| w.iter().map(|s| s.to_string()).collect::<Vec<_>>());
            let plain = super::super::parse_plain(source);
            assert_eq!(
                keys(plain.as_ref().and_then(super::declared)),
                want,
                "{source}"
            );
        }
        let decls = super::declared(
            &super::super::parse_plain(
                r#"let p = params(#{ n: #{ type: "int", default: 3, choices: [1, 2, 3] } });"#,
            )
            .unwrap(),
        )
        .unwrap();
        let given = |v: &str| vars(&[("n", v)]);
        assert!(resolve_params(&decls, &given("2"), None).is_ok());
        assert_eq!(
            resolve_params(&decls, &given("5"), None).unwrap_err(),
            vec!["--var n=5: must be one of 1, 2, 3"]
        );
    }
}
