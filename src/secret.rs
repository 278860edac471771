//! Secrets: values read from the environment that never print.
//!
//! A secret travels through the script as [`Secret`] (it shows as `<secret NAME>`), through
//! action inputs as [`SecretString`] (journaled as a reference, never as the value), and every
//! line the engine writes — output, journal, error — passes through the [`Redactor`], which
//! replaces any known secret value that slipped into free text (a command's output, say).

use std::fmt;
use std::sync::{Arc, RwLock};

use schemars::JsonSchema;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// The marker key a secret reference carries in JSON: `{"$secret": "PG_PASSWORD"}`.
pub const SECRET_KEY: &str = "$secret";
const MASK: &str = "***";
/// The JSON-schema format of a field that takes secrets (`runbook actions` shows it as its type).
pub const SECRET_FORMAT: &str = "secret";

/// A secret value in the script: the name of the environment variable it came from, and its value.
#[derive(Clone)]
pub struct Secret {
    pub name: String,
}

impl Secret {
    /// Reads the secret from the environment and teaches the redactor its value.
    pub fn from_env(name: &str, redactor: &Redactor) -> Result<Secret, String> {
        match std::env::var(name) {
            Ok(v) if !v.is_empty() => {
                redactor.add(&v);
                Ok(Secret {
                    name: name.to_string(),
                })
            }
            Ok(_) => Err(format!("environment variable {name} is empty")),
            Err(_) => Err(format!("environment variable {name} is not set")),
        }
    }

    /// A placeholder for a secret whose variable is not set (offline dry-runs only).
    pub fn placeholder(name: &str) -> Secret {
        Secret {
            name: name.to_string(),
        }
    }
}

/// How a secret shows in text: `<secret NAME>` (what [`next_marker`] finds again).
fn marker(name: &str) -> String {
    format!("<secret {name}>")
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&marker(&self.name))
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

/// An action field that may hold a secret: either plain text or a reference to an environment
/// variable. Serializes (for the journal and the input hash) without the value.
#[derive(Clone, PartialEq, Eq)]
pub enum SecretString {
    Plain(String),
    Env(String),
}

fn from_env(name: &str) -> Result<String, String> {
    std::env::var(name).map_err(|_| format!("environment variable {name} (a secret) is not set"))
}

/// The first secret marker (`<secret NAME>`, as a secret shows in text) in `text`: where it
/// starts and ends, and the name.
fn next_marker(text: &str) -> Option<(usize, usize, &str)> {
    const OPEN: &str = "<secret ";
    let mut from = 0;
    while let Some(at) = text[from..].find(OPEN).map(|i| from + i) {
        let name_start = at + OPEN.len();
        let after = &text[name_start..];
        let name_len = after
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or(after.len());
        let name = &after[..name_len];
        if !name.is_empty()
            && !name.starts_with(|c: char| c.is_ascii_digit())
            && after[name_len..].starts_with('>')
        {
            return Some((at, name_start + name_len + 1, name));
        }
        from = name_start;
    }
    None
}

/// Whether a text has a secret written into it.
pub fn has_marker(text: &str) -> bool {
    next_marker(text).is_some()
}

/// Text with secrets written into it (`Bearer ${token}` in a script gives
/// `Bearer <secret TOKEN>`), each marker replaced by the secret's value.
fn fill_in(text: &str) -> Result<String, String> {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some((start, end, name)) = next_marker(rest) {
        out.push_str(&rest[..start]);
        out.push_str(&from_env(name)?);
        rest = &rest[end..];
    }
    out.push_str(rest);
    Ok(out)
}

/// The secret a JSON value refers to: `{"$secret": NAME}` (a key of its own, alone) gives NAME.
pub fn reference(value: &serde_json::Value) -> Option<&str> {
    match value {
        serde_json::Value::Object(fields) if fields.len() == 1 => fields.get(SECRET_KEY)?.as_str(),
        _ => None,
    }
}

/// `value` with each secret reference replaced by `by_ref(NAME)` and each text by
/// `text(TEXT)`, everything else as it is.
fn rewrite_json(
    value: &serde_json::Value,
    by_ref: &dyn Fn(&str) -> Result<String, String>,
    text: &dyn Fn(&str) -> Result<String, String>,
) -> Result<serde_json::Value, String> {
    use serde_json::Value;
    if let Some(name) = reference(value) {
        return Ok(Value::String(by_ref(name)?));
    }
    Ok(match value {
        Value::Object(fields) => Value::Object(
            fields
                .iter()
                .map(|(k, v)| Ok((k.clone(), rewrite_json(v, by_ref, text)?)))
                .collect::<Result<_, String>>()?,
        ),
        Value::Array(items) => Value::Array(
            items
                .iter()
                .map(|v| rewrite_json(v, by_ref, text))
                .collect::<Result<_, _>>()?,
        ),
        Value::String(s) => Value::String(text(s)?),
        other => other.clone(),
    })
}

/// A JSON value for a machine (a request body, query parameters) with its secrets in place:
/// each `{"$secret": NAME}` becomes the secret's value and each marker written into text is
/// filled in. The journal keeps the value as it was given.
pub fn reveal_json(value: &serde_json::Value) -> Result<serde_json::Value, String> {
    rewrite_json(value, &from_env, &fill_in)
}

/// A JSON value as it may be shown: each secret reference as `<secret NAME>`, the way a
/// secret shows everywhere else.
pub fn shown_json(value: &serde_json::Value) -> serde_json::Value {
    rewrite_json(value, &|name| Ok(marker(name)), &|t| Ok(t.to_string()))
        .unwrap_or_else(|_| value.clone())
}

impl SecretString {
    /// The value, for use inside an action only. Plain text may have secrets written into it
    /// (`Bearer ${token}`): they are filled in here, and nowhere else.
    pub fn reveal(&self) -> Result<String, String> {
        match self {
            SecretString::Plain(s) => fill_in(s),
            SecretString::Env(name) => from_env(name),
        }
    }

    /// What may be shown of it: the text if plain, `<secret NAME>` otherwise.
    pub fn shown(&self) -> String {
        match self {
            SecretString::Plain(s) => mask_url_passwords(s),
            SecretString::Env(name) => marker(name),
        }
    }
}

impl fmt::Debug for SecretString {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.shown())
    }
}

impl Serialize for SecretString {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            SecretString::Plain(v) => s.serialize_str(&mask_url_passwords(v)),
            SecretString::Env(name) => {
                use serde::ser::SerializeMap;
                let mut m = s.serialize_map(Some(1))?;
                m.serialize_entry(SECRET_KEY, name)?;
                m.end()
            }
        }
    }
}

impl<'de> Deserialize<'de> for SecretString {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Repr {
            Plain(String),
            Ref {
                #[serde(rename = "$secret")]
                name: String,
            },
        }
        match Repr::deserialize(d) {
            Ok(Repr::Plain(s)) => Ok(SecretString::Plain(s)),
            Ok(Repr::Ref { name }) => Ok(SecretString::Env(name)),
            Err(_) => Err(serde::de::Error::custom("expected a string or a secret")),
        }
    }
}

impl JsonSchema for SecretString {
    fn schema_name() -> String {
        "secret".into()
    }
    fn json_schema(_: &mut schemars::gen::SchemaGenerator) -> schemars::schema::Schema {
        schemars::schema::SchemaObject {
            instance_type: Some(schemars::schema::InstanceType::String.into()),
            format: Some(SECRET_FORMAT.into()),
            ..Default::default()
        }
        .into()
    }
}

/// Replaces every known secret value in a text with `***`.
#[derive(Clone, Default)]
pub struct Redactor {
    values: Arc<RwLock<Vec<String>>>,
}

impl Redactor {
    pub fn add(&self, value: &str) {
        // Very short values would mask ordinary text everywhere; they are still never printed
        // by the engine itself, only not searched for in free text.
        if value.len() < 4 {
            return;
        }
        // A URL's path and query often hold the secret part (a webhook token): a server that
        // echoes only that part must not reveal it either.
        if let Some((_, rest)) = value.split_once("://") {
            if let Some((_, tail)) = rest.split_once('/') {
                for piece in tail.split(['/', '?', '&', '=', '#']) {
                    if piece.len() >= 12 {
                        self.add(piece);
                    }
                }
            }
        }
        let escaped = serde_json::to_string(value).unwrap_or_default();
        let escaped = escaped.trim_matches('"').to_string();
        let mut values = self.values.write().unwrap();
        for form in [value.to_string(), escaped] {
            if !values.contains(&form) {
                values.push(form);
            }
        }
        {
            // Longest first, so a secret that contains another is masked whole.
            values.sort_by_key(|v| std::cmp::Reverse(v.len()));
        }
    }

    pub fn redact(&self, text: &str) -> String {
        let values = self.values.read().unwrap();
        let mut out = mask_url_passwords(text);
        for v in values.iter() {
            if out.contains(v.as_str()) {
                out = out.replace(v.as_str(), MASK);
            }
        }
        out
    }

    pub fn is_empty(&self) -> bool {
        self.values.read().unwrap().is_empty()
    }
}

/// Masks the password of every URL in a text: `postgres://app:s3cret@db` → `postgres://app:***@db`.
/// A password typed into a connection string is still a password.
pub fn mask_url_passwords(text: &str) -> String {
    if !text.contains("://") {
        return text.to_string();
    }
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = rest.find("://") {
        let (head, tail) = rest.split_at(at + 3);
        out.push_str(head);
        // The authority ends at the first '/', '?', '#', quote or whitespace.
        let end = tail
            .find(|c: char| matches!(c, '/' | '?' | '#' | '"' | '\'' | '\\') || c.is_whitespace())
            .unwrap_or(tail.len());
        let authority = &tail[..end];
        match (authority.rfind('@'), authority.find(':')) {
            (Some(amp), Some(colon)) if colon < amp => {
                out.push_str(&authority[..colon + 1]);
                out.push_str("***");
                out.push_str(&authority[amp..]);
            }
            _ => out.push_str(authority),
        }
        rest = &tail[end..];
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::{fill_in, mask_url_passwords, reveal_json};

    #[test]
    fn a_json_body_gets_its_secrets_in_place() {
        std::env::set_var("RUNBOOK_TEST_JSON_KEY", "k3y");
        let given = serde_json::json!({
            "routing_key": {"$secret": "RUNBOOK_TEST_JSON_KEY"},
            "payload": {"summary": "key <secret RUNBOOK_TEST_JSON_KEY>", "n": 1, "tags": [{"$secret": "RUNBOOK_TEST_JSON_KEY"}, null]},
            "not_a_ref": {"$secret": "RUNBOOK_TEST_JSON_KEY", "other": 1},
        });
        let want = serde_json::json!({
            "routing_key": "k3y",
            "payload": {"summary": "key k3y", "n": 1, "tags": ["k3y", null]},
            "not_a_ref": {"$secret": "RUNBOOK_TEST_JSON_KEY", "other": 1},
        });
        assert_eq!(reveal_json(&given), Ok(want));
        assert_eq!(
            super::shown_json(&given),
            serde_json::json!({
                "routing_key": "<secret RUNBOOK_TEST_JSON_KEY>",
                "payload": {"summary": "key <secret RUNBOOK_TEST_JSON_KEY>", "n": 1, "tags": ["<secret RUNBOOK_TEST_JSON_KEY>", null]},
                "not_a_ref": {"$secret": "RUNBOOK_TEST_JSON_KEY", "other": 1},
            })
        );
        assert_eq!(
            reveal_json(&serde_json::json!([{"$secret": "RUNBOOK_TEST_JSON_UNSET"}])),
            Err("environment variable RUNBOOK_TEST_JSON_UNSET (a secret) is not set".to_string())
        );
    }

    #[test]
    fn secrets_written_into_text_are_filled_in_and_nothing_else() {
        std::env::set_var("RUNBOOK_TEST_FILL_TOKEN", "t0k3n");
        let cases = [
            ("Bearer <secret RUNBOOK_TEST_FILL_TOKEN>", Ok("Bearer t0k3n")),
            (
                "https://hooks.example/<secret RUNBOOK_TEST_FILL_TOKEN>/x?k=<secret RUNBOOK_TEST_FILL_TOKEN>",
                Ok("https://hooks.example/t0k3n/x?k=t0k3n"),
            ),
            ("no marker", Ok("no marker")),
            ("<secret >", Ok("<secret >")),
            ("<secret 9X>", Ok("<secret 9X>")),
            ("<secret NOT CLOSED", Ok("<secret NOT CLOSED")),
            ("a < b", Ok("a < b")),
            (
                "<secret RUNBOOK_TEST_FILL_UNSET>",
                Err("environment variable RUNBOOK_TEST_FILL_UNSET (a secret) is not set"),
            ),
        ];
        for (text, want) in cases {
            assert_eq!(
                fill_in(text),
                want.map(str::to_string).map_err(str::to_string),
                "{text}"
            );
        }
    }

    #[test]
    fn url_passwords_are_masked_and_nothing_else() {
        assert_eq!(
            mask_url_passwords("postgres://app:s3cret@db:5432/x"),
            "postgres://app:***@db:5432/x"
        );
        assert_eq!(
            mask_url_passwords("a http://h:1/p and redis://:pw@r:6379 b"),
            "a http://h:1/p and redis://:***@r:6379 b"
        );
        assert_eq!(
            mask_url_passwords("\"postgres://u@h/db\""),
            "\"postgres://u@h/db\""
        );
        assert_eq!(mask_url_passwords("no url here"), "no url here");
    }
}
