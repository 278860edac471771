//! How an inventory differs from another — the one a resume reads from the one its run had —
//! and whether that edit is all that makes a recorded call's input differ from the script's
//! call now. Pure: compares JSON values, both with URL passwords masked as the journal keeps
//! them.

use serde_json::Value;

/// One value that differs, by its dotted path (`regions.eu-west-1.health_url`); `None` where
/// one side has no such key.
#[derive(Debug, Clone, PartialEq)]
struct Leaf {
    path: String,
    was: Option<Value>,
    now: Option<Value>,
}

/// The inventory's values that changed, were added or were removed since the run started.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct InventoryEdit {
    leaves: Vec<Leaf>,
}

impl InventoryEdit {
    pub fn between(started: &Value, now: &Value) -> InventoryEdit {
        let mut leaves = vec![];
        differing(Some(started), Some(now), String::new(), &mut leaves);
        InventoryEdit { leaves }
    }

    pub fn is_empty(&self) -> bool {
        self.leaves.is_empty()
    }

    /// The inventory keys whose edit accounts for every difference between a call's recorded
    /// input and its input now: each differing value was that key's value when the run started
    /// and is its value now. `None` when anything else differs (or nothing does).
    pub fn explains(&self, recorded: &Value, now: &Value) -> Option<Vec<String>> {
        let mut diffs = vec![];
        differing(Some(recorded), Some(now), String::new(), &mut diffs);
        if diffs.is_empty() || self.leaves.is_empty() {
            return None;
        }
        let mut keys: Vec<String> = vec![];
        for d in &diffs {
            let edit = self
                .leaves
                .iter()
                .find(|e| e.was == d.was && e.now == d.now)?;
            if !keys.contains(&edit.path) {
                keys.push(edit.path.clone());
            }
        }
        Some(keys)
    }

    /// The keys that changed, were added or were removed.
    pub fn keys(&self) -> Vec<String> {
        self.leaves.iter().map(|l| l.path.clone()).collect()
    }

    /// Each key as `path: was → now`, for a message.
    pub fn describe(&self, keys: &[String]) -> Vec<String> {
        let side = |v: &Option<Value>| match v {
            Some(v) => v.to_string(),
            None => "(absent)".to_string(),
        };
        self.leaves
            .iter()
            .filter(|e| keys.contains(&e.path))
            .map(|e| format!("{}: {} → {}", e.path, side(&e.was), side(&e.now)))
            .collect()
    }
}

/// The values that differ between two inputs, each by its dotted path: `(path, was, now)`.
pub fn differences(was: &Value, now: &Value) -> Vec<(String, Option<Value>, Option<Value>)> {
    let mut out = vec![];
    differing(Some(was), Some(now), String::new(), &mut out);
    out.into_iter().map(|l| (l.path, l.was, l.now)).collect()
}

/// The values that differ between `a` and `b`, object keys recursed (a key only one side has,
/// with every value below it); anything else (a string, a number, a list) compared whole.
fn differing(a: Option<&Value>, b: Option<&Value>, path: String, out: &mut Vec<Leaf>) {
    let below = |key: &str| {
        if path.is_empty() {
            key.to_string()
        } else {
            format!("{path}.{key}")
        }
    };
    match (a, b) {
        (Some(Value::Object(x)), Some(Value::Object(y))) => {
            for (k, v) in x {
                differing(Some(v), y.get(k), below(k), out);
            }
            for (k, v) in y {
                if !x.contains_key(k) {
                    differing(None, Some(v), below(k), out);
                }
            }
        }
        (Some(Value::Object(x)), None) => {
            for (k, v) in x {
                differing(Some(v), None, below(k), out);
            }
        }
        (None, Some(Value::Object(y))) => {
            for (k, v) in y {
                differing(None, Some(v), below(k), out);
            }
        }
        (a, b) if a != b => out.push(Leaf {
            path,
            was: a.cloned(),
            now: b.cloned(),
        }),
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn inventory(health: &str, extra: Option<&str>) -> Value {
        let mut v = json!({
            "dns": { "zone": "example.com", "endpoint_url": "http://127.0.0.1:9" },
            "regions": {
                "eu-west-1": { "health_url": health, "database_url": "postgres://app:***@db1/app" },
                "us-east-1": { "health_url": "http://us/health" },
            },
        });
        if let Some(dir) = extra {
            v["regions"]["eu-west-1"]["pg_data_dir"] = json!(dir);
        }
        v
    }

    #[test]
    fn an_edit_lists_each_value_that_changed_was_added_or_removed() {
        let was = inventory("http://eu:1/health", None);
        for (now, keys) in [
            (inventory("http://eu:1/health", None), vec![]),
            (
                inventory("http://eu:2/health", None),
                vec![
                    "regions.eu-west-1.health_url: \"http://eu:1/health\" → \"http://eu:2/health\"",
                ],
            ),
            (
                inventory("http://eu:1/health", Some("/data")),
                vec!["regions.eu-west-1.pg_data_dir: (absent) → \"/data\""],
            ),
            (
                json!({ "dns": was["dns"].clone(), "regions": { "us-east-1": was["regions"]["us-east-1"].clone() } }),
                vec![
                    "regions.eu-west-1.database_url: \"postgres://app:***@db1/app\" → (absent)",
                    "regions.eu-west-1.health_url: \"http://eu:1/health\" → (absent)",
                ],
            ),
        ] {
            let edit = InventoryEdit::between(&was, &now);
            let all: Vec<String> = edit.leaves.iter().map(|l| l.path.clone()).collect();
            let mut said = edit.describe(&all);
            said.sort();
            assert_eq!(said, keys, "{now}");
            assert_eq!(edit.is_empty(), keys.is_empty());
        }
    }

    #[test]
    fn a_call_whose_input_differs_only_by_the_edit_is_explained_by_it() {
        let was = inventory("http://eu:1/health", None);
        let now = inventory("http://eu:2/health", Some("/data"));
        let edit = InventoryEdit::between(&was, &now);
        let health = "regions.eu-west-1.health_url".to_string();
        let data_dir = "regions.eu-west-1.pg_data_dir".to_string();
        for (recorded, current, explained) in [
            // The whole inventory as an input (topology::observe): both keys.
            (
                json!({ "inventory": was.clone(), "probe_timeout": "3s" }),
                json!({ "inventory": now.clone(), "probe_timeout": "3s" }),
                Some(vec![health.clone(), data_dir.clone()]),
            ),
            // One value taken from it, under another name.
            (
                json!({ "url": "http://eu:1/health", "expect": 200 }),
                json!({ "url": "http://eu:2/health", "expect": 200 }),
                Some(vec![health.clone()]),
            ),
            // A field the edit does not account for: the runbook changed.
            (
                json!({ "url": "http://eu:1/health", "expect": 200 }),
                json!({ "url": "http://eu:2/health", "expect": 204 }),
                None,
            ),
            // A value the inventory never had.
            (
                json!({ "url": "http://eu:1/health" }),
                json!({ "url": "http://eu:3/health" }),
                None,
            ),
            // The edit backwards is not the edit.
            (
                json!({ "url": "http://eu:2/health" }),
                json!({ "url": "http://eu:1/health" }),
                None,
            ),
            // A value built from the inventory's (not the inventory's own).
            (
                json!({ "url": "http://eu:1/health?x" }),
                json!({ "url": "http://eu:2/health?x" }),
                None,
            ),
            // Nothing differs: nothing to explain.
            (json!({ "url": "u" }), json!({ "url": "u" }), None),
        ] {
            assert_eq!(
                edit.explains(&recorded, &current),
                explained,
                "{recorded} → {current}"
            );
        }
        // Without an edit, nothing is explained.
        let none = InventoryEdit::between(&was, &was);
        assert_eq!(
            none.explains(
                &json!({ "url": "http://eu:1/health" }),
                &json!({ "url": "http://eu:2/health" })
            ),
            None
        );
    }
}
