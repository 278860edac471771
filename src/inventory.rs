//! The inventory: a TOML file describing the targets (regions, URLs, DNS, webhooks).
//! A table of the form `{ env = "NAME" }` is a secret read from the environment.

mod edit;

use std::path::Path;
use std::sync::Arc;

use serde_json::Value;

use crate::error::Error;
use crate::secret::{Redactor, Secret, SECRET_KEY};
use crate::value::Inv;

pub use edit::{differences, InventoryEdit};

#[derive(Clone)]
pub struct Inventory {
    /// Where it came from, for messages.
    pub file: String,
    /// The content, with secrets as `{"$secret": NAME}` references. Safe to journal.
    pub value: Value,
}

impl Inventory {
    pub fn empty() -> Inventory {
        Inventory {
            file: "(no inventory)".into(),
            value: Value::Object(Default::default()),
        }
    }

    pub fn load(path: &Path) -> Result<Inventory, Error> {
        let file = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|e| Error::Inventory {
            path: file.clone(),
            message: format!("cannot read it: {e}{}", crate::suggest::nearby_file(path)),
        })?;
        Self::parse(&file, &text)
    }

    pub fn parse(file: &str, text: &str) -> Result<Inventory, Error> {
        let table: toml::Table = text.parse().map_err(|e: toml::de::Error| {
            let mut message = e.message().to_string();
            if let Some(span) = e.span() {
                let line = text[..span.start.min(text.len())].matches('\n').count() + 1;
                message = format!("line {line}: {message}");
            }
            Error::Inventory {
                path: file.to_string(),
                message: format!("not valid TOML: {message}"),
            }
        })?;
        let mut value = toml_to_json(toml::Value::Table(table));
        mark_secrets(&mut value, "", file)?;
        let misspelt = misspelt(&value);
        if !misspelt.is_empty() {
            let keys: Vec<String> = misspelt
                .iter()
                .map(|(at, meant)| format!("`{at}` (did you mean `{meant}`?)"))
                .collect();
            return Err(Error::Inventory {
                path: file.to_string(),
                message: format!(
                    "{} {}: not {} the engine or the shipped runbooks read, and the one meant is missing, so it would \
                     be taken as not set (a region's database unobserved by a failover, a default in its place). Rename {}; nothing was run",
                    if keys.len() == 1 { "the key" } else { "the keys" },
                    keys.join(", "),
                    if keys.len() == 1 { "a key" } else { "keys" },
                    if keys.len() == 1 { "it" } else { "them" },
                ),
            });
        }
        if let Some((key, message)) = bad_interval(&value) {
            return Err(Error::Inventory {
                path: file.to_string(),
                message: format!("{key}: {message}; nothing was run"),
            });
        }
        Ok(Inventory {
            file: file.to_string(),
            value,
        })
    }

    /// The TLS defaults of `[postgres]` (sslmode, sslrootcert, sslcert, sslkey) for every
    /// PostgreSQL URL that does not set its own; relative paths are read from the inventory's
    /// folder.
    pub fn pg_tls_defaults(&self) -> Result<crate::tls::PgSsl, Error> {
        let section = &self.value["postgres"];
        let bad = |key: &str, message: String| Error::Inventory {
            path: self.file.clone(),
            message: format!("postgres.{key}: {message}"),
        };
        let text = |key: &str| -> Result<Option<String>, Error> {
            match &section[key] {
                Value::Null => Ok(None),
                Value::String(s) => Ok(Some(s.clone())),
                _ => Err(bad(key, "must be a string".into())),
            }
        };
        let base = Path::new(&self.file).parent().unwrap_or(Path::new("."));
        let path = |key: &str| -> Result<Option<String>, Error> {
            Ok(text(key)?.map(|p| {
                if p == "system" || Path::new(&p).is_absolute() {
                    p
                } else {
                    base.join(p).display().to_string()
                }
            }))
        };
        let mode = text("sslmode")?
            .map(|m| crate::tls::SslMode::parse(&m).map_err(|e| bad("sslmode", e)))
            .transpose()?;
        Ok(crate::tls::PgSsl {
            mode,
            rootcert: path("sslrootcert")?,
            cert: path("sslcert")?,
            key: path("sslkey")?,
        })
    }

    /// The environment variables this inventory's secrets come from, with their key paths.
    pub fn secret_refs(&self) -> Vec<(String, String)> {
        let mut out = Vec::new();
        collect_refs(&self.value, "", &mut out);
        out
    }

    /// The script's view: an [`Inv`] whose secrets have been read from the environment.
    /// A secret whose variable is unset is an error, unless `allow_missing` (offline dry-run).
    pub fn to_script(&self, redactor: &Redactor, allow_missing: bool) -> Result<Inv, Error> {
        let mut secrets = Vec::new();
        for (path, var) in self.secret_refs() {
            let secret = match Secret::from_env(&var, redactor) {
                Ok(s) => s,
                Err(_) if allow_missing => Secret::placeholder(&var),
                Err(e) => {
                    return Err(Error::Inventory {
                        path: self.file.clone(),
                        message: format!(
                            "the secret '{path}' is read from the environment, and {e}: export {var}=... before running"
                        ),
                    })
                }
            };
            secrets.push((path, secret));
        }
        Ok(Inv {
            path: String::new(),
            file: self.file.as_str().into(),
            value: Arc::new(self.value.clone()),
            secrets: Arc::new(secrets),
        })
    }
}

/// Keys the engine reads besides the topology's: the deployment's `name` (the lock),
/// `[watch]`, the TLS defaults of `[postgres]`.
const ENGINE_KEYS: [(&str, &[&str]); 2] = [
    ("", &["name", "watch"]),
    ("postgres", &["sslmode", "sslrootcert", "sslcert", "sslkey"]),
];

/// The optional keys the shipped runbooks and stdlib read, whose misspelling would otherwise
/// fall back to a default without a word (a region out of rotation after its rejoin, one pod
/// where six ran, no Slack message during the incident).
const RUNBOOK_KEYS: [(&str, &[&str]); 4] = [
    (
        "",
        &[
            "notify",
            "backup",
            "cdn",
            "mesh",
            "prometheus_url",
            "prometheus_window",
            "prometheus_interval",
            "health_interval",
        ],
    ),
    (
        "regions.*",
        &[
            "app_replicas",
            "dns_weight",
            "kustomize",
            "metrics_url",
            "p99_target_ms",
            "health_check_id",
            "lb_ip",
            "mesh_destination",
            "pg_log_file",
        ],
    ),
    ("postgres", &["replicator_password"]),
    ("notify", &["slack_webhook"]),
];

/// The top-level keys the shipped runbooks read as the time between two checks: one that
/// does not parse would otherwise fail at the step that reads it, which may come after a
/// promotion.
const INTERVAL_KEYS: [&str; 2] = ["health_interval", "prometheus_interval"];

/// The first interval key that is not a duration above zero, and why.
fn bad_interval(value: &Value) -> Option<(&'static str, String)> {
    INTERVAL_KEYS.iter().find_map(|&key| {
        let why = match &value[key] {
            Value::Null => return None,
            Value::String(text) => match crate::action::Dur::parse(text) {
                Ok(d) if d.0.is_zero() => format!("'{text}' is no time at all: checks would follow each other without a pause; write e.g. \"1s\""),
                Ok(_) => return None,
                Err(e) => e,
            },
            other => format!("{other} is not a duration; write it as text, e.g. \"1s\""),
        };
        Some((key, why))
    })
}

/// The keys written close to one the engine reads (a region's `databse_url`, `[postgres]`'s
/// `sslmod`) where that one is missing from the same table: read as written, the typed views
/// would see it as not set — a database the topology never observes, TLS settings never
/// applied. Each as (where, the key meant). Keys far from every known one are the runbooks'
/// own and pass.
pub fn misspelt(value: &Value) -> Vec<(String, String)> {
    let mut known: Vec<(&str, Vec<String>)> = crate::action::topology::inventory_keys();
    for &(table, extra) in ENGINE_KEYS.iter().chain(&RUNBOOK_KEYS) {
        let extra = extra.iter().map(|k| k.to_string());
        match known.iter_mut().find(|(t, _)| *t == table) {
            Some((_, keys)) => keys.extend(extra),
            None => known.push((table, extra.collect())),
        }
    }
    let mut tables: Vec<(String, &serde_json::Map<String, Value>, &Vec<String>)> = Vec::new();
    for (table, keys) in &known {
        match *table {
            "" => tables.extend(value.as_object().map(|m| (String::new(), m, keys))),
            "regions.*" => {
                for (name, region) in value["regions"].as_object().into_iter().flatten() {
                    tables.extend(
                        region
                            .as_object()
                            .map(|m| (format!("regions.{name}"), m, keys)),
                    );
                }
            }
            name => tables.extend(value[name].as_object().map(|m| (name.to_string(), m, keys))),
        }
    }
    let mut out = Vec::new();
    for (at, table, keys) in tables {
        for written in table.keys() {
            if keys.contains(written) {
                continue;
            }
            // The nearest known key, one edit away (two for a key longer than five letters),
            // and not there: a near twin of a key that is there (`redis_ports` beside
            // `redis_port`) is the runbook's own, and so is a short word two edits from a
            // short key (`base`, `name`).
            let meant = crate::suggest::closest(written, keys.iter().map(String::as_str))
                .filter(|k| {
                    crate::suggest::edit_distance(written, k) <= if k.len() > 5 { 2 } else { 1 }
                })
                .filter(|k| !table.contains_key(*k));
            if let Some(meant) = meant {
                out.push((join(&at, written), meant.to_string()));
            }
        }
    }
    out
}

fn toml_to_json(v: toml::Value) -> Value {
    match v {
        toml::Value::String(s) => Value::String(s),
        toml::Value::Integer(i) => Value::from(i),
        toml::Value::Float(f) => serde_json::Number::from_f64(f)
            .map(Value::Number)
            .unwrap_or(Value::Null),
        toml::Value::Boolean(b) => Value::Bool(b),
        toml::Value::Datetime(d) => Value::String(d.to_string()),
        toml::Value::Array(a) => Value::Array(a.into_iter().map(toml_to_json).collect()),
        toml::Value::Table(t) => {
            Value::Object(t.into_iter().map(|(k, v)| (k, toml_to_json(v))).collect())
        }
    }
}

fn join(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_string()
    } else {
        format!("{path}.{key}")
    }
}

/// Turns `{ env = "NAME" }` into `{"$secret": "NAME"}`; rejects a table that looks like a
/// secret but is not one, and any key that collides with the marker.
fn mark_secrets(v: &mut Value, path: &str, file: &str) -> Result<(), Error> {
    match v {
        Value::Object(m) => {
            if m.contains_key(SECRET_KEY) {
                return Err(Error::Inventory {
                    path: file.into(),
                    message: format!("'{path}' uses the reserved key '{SECRET_KEY}'"),
                });
            }
            if let Some(env) = m.get("env") {
                if m.len() == 1 {
                    let Value::String(name) = env else {
                        return Err(Error::Inventory {
                            path: file.into(),
                            message: format!(
                                "'{}' must name an environment variable, e.g. env = \"PG_PASSWORD\"",
                                join(path, "env")
                            ),
                        });
                    };
                    let mut marker = serde_json::Map::new();
                    marker.insert(SECRET_KEY.into(), Value::String(name.clone()));
                    *v = Value::Object(marker);
                    return Ok(());
                }
            }
            for (k, child) in m.iter_mut() {
                mark_secrets(child, &join(path, k), file)?;
            }
            Ok(())
        }
        Value::Array(a) => {
            for (i, child) in a.iter_mut().enumerate() {
                mark_secrets(child, &format!("{path}[{i}]"), file)?;
            }
            Ok(())
        }
        _ => Ok(()),
    }
}

fn collect_refs(v: &Value, path: &str, out: &mut Vec<(String, String)>) {
    match v {
        Value::Object(m) => {
            if let Some(name) = crate::secret::reference(v) {
                out.push((path.to_string(), name.to_string()));
                return;
            }
            for (k, child) in m {
                collect_refs(child, &join(path, k), out);
            }
        }
        Value::Array(a) => {
            for (i, child) in a.iter().enumerate() {
                collect_refs(child, &format!("{path}[{i}]"), out);
            }
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    /// Each case: an inventory, and the keys it is refused for as (where, the key meant).
    #[test]
    fn keys_close_to_one_the_engine_reads_are_refused() {
        type Refused = &'static [(&'static str, &'static str)];
        let cases: &[(&str, &str, Refused)] = &[
            (
                "a region's database URL misspelt",
                "[regions.eu]\ndatabse_url = \"postgres://db\"\nredis_url = \"redis://r\"\n",
                &[("regions.eu.databse_url", "database_url")],
            ),
            (
                "a secret's key misspelt the same",
                "[regions.eu]\ndatabase-url = { env = \"EU_DB\" }\n",
                &[("regions.eu.database-url", "database_url")],
            ),
            (
                "the regions table itself",
                "[region.eu]\ndatabase_url = \"postgres://db\"\n",
                &[("region", "regions")],
            ),
            (
                "the DNS table, and primary_region",
                "primary_regoin = \"eu\"\n[dsn]\nzone = \"z\"\n[regions.eu]\n",
                &[("primary_regoin", "primary_region"), ("dsn", "dns")],
            ),
            (
                "TLS defaults not applied",
                "[postgres]\nsslmod = \"verify-full\"\n[regions.eu]\n",
                &[("postgres.sslmod", "sslmode")],
            ),
            (
                "the shipped runbooks' optional keys: a region's replicas, Slack's webhook",
                "[regions.eu]\napp_replica = 6\ndns_weigth = 30\n[notify]\nslack_webhok = \"http://s\"\n",
                &[
                    ("regions.eu.app_replica", "app_replicas"),
                    ("regions.eu.dns_weigth", "dns_weight"),
                    ("notify.slack_webhok", "slack_webhook"),
                ],
            ),
            (
                "keys spelt right pass",
                "name = \"prod\"\n[regions.eu]\ndatabase_url = \"postgres://db\"\napp_replicas = 4\nlb_ip = \"1.2.3.4\"\n\
                 metrics_url = \"http://m\"\nhealth_check_id = \"h\"\ndns_weight = 30\npg_log_file = \"/l\"\n\
                 [postgres]\nreplicator_password = \"x\"\nbin_dir = \"/b\"\n[notify]\nslack_webhook = \"http://s\"\n",
                &[],
            ),
            (
                "a short word two edits from a short key is the runbook's own",
                "base = \"x\"\nnmae = \"prod\"\n[regions.eu]\n",
                &[("nmae", "name")],
            ),
            (
                "a near key beside the real one is the runbook's own",
                "[regions.eu]\nredis_port = 6379\nredis_ports = [6379, 6380]\n",
                &[],
            ),
            (
                "a region's own tables are not read as keys",
                "[regions.eu.databse_url]\nx = 1\n[regions.us]\ncontext = \"us\"\n",
                &[("regions.eu.databse_url", "database_url")],
            ),
        ];
        for (what, text, want) in cases {
            let table: toml::Table = text.parse().unwrap();
            let mut value = toml_to_json(toml::Value::Table(table));
            mark_secrets(&mut value, "", "inv.toml").unwrap();
            let got = misspelt(&value);
            let want: Vec<(String, String)> = want
                .iter()
                .map(|(a, b)| (a.to_string(), b.to_string()))
                .collect();
            assert_eq!(got, want, "{what}");
            let parsed = Inventory::parse("inv.toml", text);
            assert_eq!(parsed.is_err(), !want.is_empty(), "{what}");
        }
    }

    /// Each case: an inventory's top-level lines, and the interval key it is refused for.
    #[test]
    fn intervals_are_durations_above_zero() {
        let cases: &[(&str, &str, Option<&str>)] = &[
            ("not set: the runbooks' defaults", "", None),
            (
                "durations",
                "health_interval = \"250ms\"\nprometheus_interval = \"15s\"",
                None,
            ),
            (
                "a word",
                "health_interval = \"soon\"",
                Some("health_interval"),
            ),
            (
                "no time at all",
                "prometheus_interval = \"0s\"",
                Some("prometheus_interval"),
            ),
            (
                "a bare number: seconds or milliseconds?",
                "health_interval = 1",
                Some("health_interval"),
            ),
        ];
        for (what, lines, want) in cases {
            let text = format!("{lines}\n[regions.eu]\n");
            let got = Inventory::parse("inv.toml", &text);
            match (want, got) {
                (None, Ok(_)) => {}
                (Some(key), Err(Error::Inventory { message, .. })) => {
                    assert!(
                        message.starts_with(&format!("{key}: ")),
                        "{what}: {message}"
                    );
                    assert!(message.ends_with("nothing was run"), "{what}: {message}");
                }
                (want, got) => panic!("{what}: want {want:?}, got {:?}", got.map(|i| i.value)),
            }
        }
    }

    /// Each key the shipped runbooks are said to read is read by one of them: the list does
    /// not outlive what it speaks for.
    #[test]
    fn the_runbook_keys_checked_are_the_ones_the_runbooks_read() {
        let root = env!("CARGO_MANIFEST_DIR");
        let mut text = String::new();
        for dir in ["runbooks", "stdlib"] {
            for entry in std::fs::read_dir(format!("{root}/{dir}")).unwrap() {
                let path = entry.unwrap().path();
                if path.extension().is_some_and(|e| e == "rhai") {
                    text.push_str(&std::fs::read_to_string(path).unwrap());
                }
            }
        }
        for (table, keys) in RUNBOOK_KEYS {
            for key in keys {
                assert!(
                    text.contains(&format!(".{key}")) || text.contains(&format!("\"{key}\"")),
                    "{table}: {key} is read by no shipped runbook"
                );
            }
        }
    }

    proptest! {
        /// Any text: an inventory or an error naming the file, never a panic.
        #[test]
        fn arbitrary_text_never_panics(text in "\\PC*") {
            if let Err(e) = Inventory::parse("inv.toml", &text) {
                prop_assert!(e.to_string().contains("inv.toml"));
            }
        }

        /// Tables of strings and secret references round-trip, secrets as references only.
        #[test]
        fn secrets_are_references(name in "[a-z][a-z0-9_]{0,8}", var in "[A-Z][A-Z0-9_]{0,8}", value in "[a-z0-9 ]{0,12}") {
            let text = format!("[regions.r1]\n{name} = {{ env = \"{var}\" }}\nplain = \"{value}\"\n");
            let inv = Inventory::parse("inv.toml", &text).unwrap();
            prop_assert_eq!(inv.secret_refs(), vec![(format!("regions.r1.{name}"), var.clone())]);
            prop_assert_eq!(&inv.value["regions"]["r1"]["plain"], &serde_json::Value::String(value));
        }
    }
}
