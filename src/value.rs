//! Values crossing between Rhai and the engine: conversion to and from JSON, and the
//! inventory's map type, which names the missing key instead of yielding `()`.

use std::sync::Arc;

use rhai::{Dynamic, EvalAltResult, Map, Position};
use serde_json::Value;

use crate::secret::{Secret, SECRET_KEY};

/// A node of the loaded inventory: a table that errors on a missing key with its full path.
#[derive(Clone)]
pub struct Inv {
    pub path: String,
    pub file: Arc<str>,
    pub value: Arc<Value>,
    pub secrets: Arc<Vec<(String, Secret)>>,
}

impl Inv {
    pub fn child_path(&self, key: &str) -> String {
        if self.path.is_empty() {
            key.to_string()
        } else {
            format!("{}.{}", self.path, key)
        }
    }

    pub fn keys(&self) -> Vec<String> {
        match self.value.as_ref() {
            Value::Object(m) => m.keys().cloned().collect(),
            _ => vec![],
        }
    }

    /// The value at `key`, as the script sees it.
    pub fn get(&self, key: &str) -> Option<Dynamic> {
        let Value::Object(m) = self.value.as_ref() else {
            return None;
        };
        let v = m.get(key)?;
        Some(self.wrap(self.child_path(key), v))
    }

    fn wrap(&self, path: String, v: &Value) -> Dynamic {
        match v {
            Value::Object(_) if crate::secret::reference(v).is_some() => {
                match self.secrets.iter().find(|(p, _)| *p == path) {
                    Some((_, s)) => Dynamic::from(s.clone()),
                    None => Dynamic::UNIT,
                }
            }
            Value::Object(_) => Dynamic::from(Inv {
                path,
                file: self.file.clone(),
                value: Arc::new(v.clone()),
                secrets: self.secrets.clone(),
            }),
            Value::Array(items) => {
                let arr: rhai::Array = items
                    .iter()
                    .enumerate()
                    .map(|(i, item)| self.wrap(format!("{path}[{i}]"), item))
                    .collect();
                Dynamic::from_array(arr)
            }
            other => json_to_dynamic(other),
        }
    }

    pub fn missing(&self, key: &str, pos: Position) -> Box<EvalAltResult> {
        let known = self.keys();
        let hint = if known.is_empty() {
            String::new()
        } else {
            format!("; it has: {}", known.join(", "))
        };
        let what = if self.path.is_empty() {
            "the top level".to_string()
        } else {
            format!("'{}'", self.path)
        };
        let meant = crate::suggest::closest(key, known.iter().map(String::as_str))
            .map(|k| format!(" (is `{k}` a misspelling of it?)"))
            .unwrap_or_default();
        Box::new(EvalAltResult::ErrorRuntime(
            format!(
                "inventory {} has no key '{}' under {what}{meant}{hint}",
                self.file,
                self.child_path(key),
            )
            .into(),
            pos,
        ))
    }
}

/// JSON → script value.
pub fn json_to_dynamic(v: &Value) -> Dynamic {
    match v {
        Value::Null => Dynamic::UNIT,
        Value::Bool(b) => (*b).into(),
        Value::Number(n) => {
            if let Some(i) = n.as_i64() {
                i.into()
            } else {
                n.as_f64().unwrap_or(f64::NAN).into()
            }
        }
        Value::String(s) => s.clone().into(),
        Value::Array(a) => Dynamic::from_array(a.iter().map(json_to_dynamic).collect()),
        Value::Object(m) => {
            let mut map = Map::new();
            for (k, v) in m {
                map.insert(k.as_str().into(), json_to_dynamic(v));
            }
            Dynamic::from_map(map)
        }
    }
}

/// Script value → JSON. Secrets become references (`{"$secret": NAME}`), never their value.
pub fn dynamic_to_json(d: &Dynamic) -> Result<Value, String> {
    let flat;
    let d = if d.is_shared() {
        flat = d.flatten_clone();
        &flat
    } else {
        d
    };
    if d.is_unit() {
        return Ok(Value::Null);
    }
    if let Some(b) = d.clone().try_cast::<bool>() {
        return Ok(Value::Bool(b));
    }
    if let Some(i) = d.clone().try_cast::<rhai::INT>() {
        return Ok(Value::from(i));
    }
    if let Some(f) = d.clone().try_cast::<rhai::FLOAT>() {
        return serde_json::Number::from_f64(f)
            .map(Value::Number)
            .ok_or_else(|| format!("the number {f} cannot be represented"));
    }
    if d.is_string() {
        return Ok(Value::String(d.clone().into_string().unwrap_or_default()));
    }
    if d.is_char() {
        return Ok(Value::String(
            d.clone().as_char().unwrap_or_default().to_string(),
        ));
    }
    if d.is_array() {
        let arr = d.read_lock::<rhai::Array>().ok_or("an array is locked")?;
        return arr
            .iter()
            .map(dynamic_to_json)
            .collect::<Result<Vec<_>, _>>()
            .map(Value::Array);
    }
    if d.is_map() {
        let map = d.read_lock::<Map>().ok_or("a map is locked")?;
        let mut out = serde_json::Map::new();
        for (k, v) in map.iter() {
            out.insert(k.to_string(), dynamic_to_json(v)?);
        }
        return Ok(Value::Object(out));
    }
    if let Some(s) = d.read_lock::<Secret>() {
        let mut m = serde_json::Map::new();
        m.insert(SECRET_KEY.into(), Value::String(s.name.clone()));
        return Ok(Value::Object(m));
    }
    if let Some(inv) = d.read_lock::<Inv>() {
        return Ok(inv.value.as_ref().clone());
    }
    if d.is::<rhai::Instant>() {
        return Err("a timestamp cannot be passed to an action; use now() for times".into());
    }
    Err(format!(
        "a value of type {} cannot be passed to an action",
        d.type_name()
    ))
}
