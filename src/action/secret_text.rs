//! A secret written into text (`Bearer ${token}` in a script) arrives at an action as the text
//! `Bearer <secret TOKEN>`. A field that takes secrets fills it in at the last moment
//! ([`crate::secret::SecretString`]); any other field would send the marker as written — a
//! password set to "<secret PW>", a header that never authenticates. Such a call is refused,
//! naming the field and the fields that do take secrets.

use schemars::schema::{InstanceType, RootSchema, Schema, SchemaObject, SingleOrVec};
use serde_json::Value;

use crate::secret::has_marker;

/// Whether any text in the value holds a marker: the cheap test before the schema is read.
fn any_marker(value: &Value) -> bool {
    match value {
        Value::String(s) => has_marker(s),
        Value::Array(items) => items.iter().any(any_marker),
        Value::Object(fields) => fields.values().any(any_marker),
        _ => false,
    }
}

fn resolve<'a>(root: &'a RootSchema, schema: &'a Schema) -> Option<&'a SchemaObject> {
    let Schema::Object(o) = schema else {
        return None;
    };
    match o
        .reference
        .as_deref()
        .and_then(|r| r.strip_prefix("#/definitions/"))
    {
        Some(name) => root.definitions.get(name).and_then(|s| resolve(root, s)),
        None => Some(o),
    }
}

fn takes_secrets(o: &SchemaObject) -> bool {
    o.format.as_deref() == Some(crate::secret::SECRET_FORMAT)
}

/// Text for people (a Slack message): a secret's marker is what they should read there.
fn for_people(o: &SchemaObject) -> bool {
    o.format.as_deref() == Some(FOR_PEOPLE)
}

/// The schema format of a field whose text is read by people, not machines.
pub const FOR_PEOPLE: &str = "text for people";

/// The schema of such a field (`#[schemars(schema_with = "...")]`).
pub fn text_for_people(_: &mut schemars::gen::SchemaGenerator) -> Schema {
    SchemaObject {
        instance_type: Some(InstanceType::String.into()),
        format: Some(FOR_PEOPLE.into()),
        ..Default::default()
    }
    .into()
}

/// The schemas a value may be checked against: the object itself, and each `allOf` (a
/// documented field of a named type), `anyOf` or `oneOf` (an optional field) branch.
fn branches<'a>(root: &'a RootSchema, o: &'a SchemaObject) -> Vec<&'a SchemaObject> {
    let mut out = vec![o];
    if let Some(sub) = &o.subschemas {
        for s in [&sub.all_of, &sub.any_of, &sub.one_of]
            .into_iter()
            .flatten()
            .flatten()
        {
            if let Some(o) = resolve(root, s) {
                out.extend(branches(root, o));
            }
        }
    }
    out
}

/// The first field (a path such as `sql` or `headers.x`) whose text holds a secret's marker
/// although its schema takes none.
fn misplaced(root: &RootSchema, o: &SchemaObject, value: &Value, path: &str) -> Option<String> {
    let candidates = branches(root, o);
    match value {
        Value::String(s) => {
            let secret_ok = candidates.iter().any(|c| takes_secrets(c) || for_people(c));
            let is_text = candidates.iter().any(|c| {
                matches!(&c.instance_type, Some(SingleOrVec::Single(t)) if **t == InstanceType::String)
                    || matches!(&c.instance_type, Some(SingleOrVec::Vec(ts)) if ts.contains(&InstanceType::String))
            });
            (is_text && !secret_ok && has_marker(s)).then(|| path.to_string())
        }
        Value::Array(items) => {
            let item = candidates
                .iter()
                .filter_map(|c| c.array.as_ref()?.items.as_ref())
                .find_map(|i| match i {
                    SingleOrVec::Single(s) => resolve(root, s),
                    SingleOrVec::Vec(_) => None,
                })?;
            items
                .iter()
                .enumerate()
                .find_map(|(n, v)| misplaced(root, item, v, &format!("{path}[{n}]")))
        }
        Value::Object(fields) => fields.iter().find_map(|(k, v)| {
            let field = candidates.iter().find_map(|c| {
                let obj = c.object.as_ref()?;
                obj.properties
                    .get(k)
                    .or(obj.additional_properties.as_deref())
                    .and_then(|s| resolve(root, s))
            })?;
            let at = if path.is_empty() {
                k.clone()
            } else {
                format!("{path}.{k}")
            };
            misplaced(root, field, v, &at)
        }),
        _ => None,
    }
}

/// The top-level fields that take secrets (each, or each of its items or values).
fn secret_fields(root: &RootSchema) -> Vec<String> {
    let Some(obj) = root.schema.object.as_ref() else {
        return Vec::new();
    };
    obj.properties
        .iter()
        .filter(|(_, s)| {
            resolve(root, s).is_some_and(|o| {
                branches(root, o).iter().any(|c| {
                    takes_secrets(c)
                        || c.array
                            .as_ref()
                            .and_then(|a| a.items.as_ref())
                            .is_some_and(|i| matches!(i, SingleOrVec::Single(s) if resolve(root, s).is_some_and(takes_secrets)))
                        || c.object
                            .as_ref()
                            .and_then(|o| o.additional_properties.as_deref())
                            .is_some_and(|s| resolve(root, s).is_some_and(takes_secrets))
                })
            })
        })
        .map(|(k, _)| k.clone())
        .collect()
}

/// `Some((field, message))` when a field that takes no secrets has one written into it.
/// The action's schema is only built (`schema`) when the input holds a marker at all.
pub fn check(input: &Value, schema: impl FnOnce() -> RootSchema) -> Option<(String, String)> {
    if !any_marker(input) {
        return None;
    }
    let root = &schema();
    let field = misplaced(root, &root.schema, input, "")?;
    let takers = secret_fields(root);
    let instead = if takers.is_empty() {
        "this action takes no secrets".to_string()
    } else {
        format!("the fields that take secrets are {}", takers.join(", "))
    };
    Some((
        field,
        format!("has a secret written into it, but takes no secrets: the text '<secret …>' would be sent as written. Pass the secret through a field that takes one ({instead})"),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::action::Registry;
    use serde_json::json;

    #[test]
    fn a_secret_in_a_field_that_takes_none_is_found_and_named() {
        let registry = Registry::standard();
        let schema = |full: &str| {
            let (namespace, name) = full.split_once("::").unwrap();
            registry.get(namespace, name).unwrap().input_schema()
        };
        let cases: Vec<(&str, Value, Option<&str>)> = vec![
            // Fields that take secrets: filled in when the action runs.
            (
                "http::get",
                json!({"url": "https://h/<secret T>", "headers": {"authorization": "Bearer <secret T>"}}),
                None,
            ),
            (
                "shell::run",
                json!({"argv": ["curl", "-H", "Bearer <secret T>"], "env": {"A": "<secret T>"}}),
                None,
            ),
            (
                "pg::exec",
                json!({"url": "postgres://u:<secret PW>@h/db", "sql": "SELECT 1"}),
                None,
            ),
            // Fields that take none: refused.
            (
                "pg::exec",
                json!({"url": "postgres://h/db", "sql": "ALTER ROLE r PASSWORD '<secret PW>'"}),
                Some("sql"),
            ),
            (
                "shell::run",
                json!({"cmd": "curl -H 'Bearer <secret T>' x"}),
                Some("cmd"),
            ),
            (
                "k8s::set_env",
                json!({"context": "c", "namespace": "n", "deployment": "d", "env": {"URL": "postgres://u:<secret PW>@h/db"}}),
                None,
            ),
            (
                "http::post",
                json!({"url": "https://h", "headers": {"x-token": "<secret T>"}, "body": "<secret T>"}),
                Some("body"),
            ),
            // Bodies and parameters for machines: their secrets are put in place.
            (
                "http::post",
                json!({"url": "https://h", "json": {"key": "<secret T>", "k": {"$secret": "T"}}}),
                None,
            ),
            (
                "pg::exec",
                json!({"url": "postgres://h/db", "sql": "SELECT $1", "params": ["<secret T>"]}),
                None,
            ),
            // A message for people shows the marker, as every output does.
            (
                "notify::slack",
                json!({"webhook": "https://h", "text": "token <secret T>"}),
                None,
            ),
            // Text that only looks like one.
            (
                "pg::exec",
                json!({"url": "postgres://h/db", "sql": "SELECT '<secret >', '<secret 1'"}),
                None,
            ),
        ];
        for (action, input, want) in cases {
            let got = check(&input, || schema(action)).map(|(field, _)| field);
            assert_eq!(got.as_deref(), want, "{action} {input}");
        }
        let (_, message) = check(
            &json!({"url": "postgres://h/db", "sql": "x <secret PW>"}),
            || schema("pg::exec"),
        )
        .unwrap();
        assert!(
            message.ends_with("(the fields that take secrets are url)"),
            "{message}"
        );
    }
}
