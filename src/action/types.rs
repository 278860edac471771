//! Field types shared by several actions.

use std::fmt;
use std::time::Duration;

use schemars::JsonSchema;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A duration written as text ("500ms", "5s", "2m", "1h 30m") or as a number of seconds.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Dur(pub Duration);

impl Dur {
    /// `N` milliseconds, as a field's default: `#[serde(default = "Dur::ms::<250>")]`.
    pub const fn ms<const N: u64>() -> Dur {
        Dur(Duration::from_millis(N))
    }

    pub fn parse(text: &str) -> Result<Dur, String> {
        humantime::parse_duration(text.trim())
            .map(Dur)
            .map_err(|e| {
                format!("'{text}' is not a duration ({e}); write e.g. \"500ms\", \"5s\", \"2m\"")
            })
    }
}

impl fmt::Debug for Dur {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", humantime::format_duration(self.0))
    }
}

impl fmt::Display for Dur {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", humantime::format_duration(self.0))
    }
}

impl Serialize for Dur {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&humantime::format_duration(self.0).to_string())
    }
}

impl<'de> Deserialize<'de> for Dur {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Repr {
            Text(String),
            Secs(f64),
        }
        match Repr::deserialize(d) {
            Ok(Repr::Text(t)) => Dur::parse(&t).map_err(serde::de::Error::custom),
            Ok(Repr::Secs(s)) if s >= 0.0 && s.is_finite() => Ok(Dur(Duration::from_secs_f64(s))),
            _ => Err(serde::de::Error::custom(
                "expected a duration such as \"5s\" or a number of seconds",
            )),
        }
    }
}

impl JsonSchema for Dur {
    fn schema_name() -> String {
        "duration".into()
    }
    fn json_schema(_: &mut schemars::gen::SchemaGenerator) -> schemars::schema::Schema {
        schemars::schema::SchemaObject {
            instance_type: Some(schemars::schema::InstanceType::String.into()),
            format: Some("duration".into()),
            ..Default::default()
        }
        .into()
    }
}

/// Expected HTTP status: one code, or a list of codes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, JsonSchema)]
#[serde(untagged)]
pub enum StatusSpec {
    One(u16),
    Any(Vec<u16>),
}

impl<'de> Deserialize<'de> for StatusSpec {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Repr {
            One(u16),
            Any(Vec<u16>),
        }
        match Repr::deserialize(d) {
            Ok(Repr::One(code)) => Ok(StatusSpec::One(code)),
            Ok(Repr::Any(codes)) => Ok(StatusSpec::Any(codes)),
            Err(_) => Err(serde::de::Error::custom(
                "expected a status code such as 200, or a list of them such as [200, 204]",
            )),
        }
    }
}

impl StatusSpec {
    pub fn accepts(spec: &Option<StatusSpec>, status: u16) -> bool {
        match spec {
            None => (200..300).contains(&status),
            Some(StatusSpec::One(s)) => *s == status,
            Some(StatusSpec::Any(v)) => v.contains(&status),
        }
    }

    pub fn first(spec: &Option<StatusSpec>) -> u16 {
        match spec {
            Some(StatusSpec::One(s)) => *s,
            Some(StatusSpec::Any(v)) if !v.is_empty() => v[0],
            _ => 200,
        }
    }

    pub fn describe(spec: &Option<StatusSpec>) -> String {
        match spec {
            None => "2xx".into(),
            Some(StatusSpec::One(s)) => s.to_string(),
            Some(StatusSpec::Any(v)) => v
                .iter()
                .map(u16::to_string)
                .collect::<Vec<_>>()
                .join(" or "),
        }
    }
}

/// host and port of a connection URL (postgres://, redis://, http://) or a libpq
/// `host=.. port=..` string, lower-cased, "localhost" read as 127.0.0.1.
pub fn endpoint(url: &str, default_port: u16) -> Option<(String, u16)> {
    let norm = |h: &str| {
        let h = h
            .trim()
            .trim_matches(|c| c == '[' || c == ']')
            .to_ascii_lowercase();
        if h == "localhost" {
            "127.0.0.1".to_string()
        } else {
            h
        }
    };
    if let Some((_, rest)) = url.split_once("://") {
        let authority = rest.split(['/', '?', '#']).next()?;
        let hostport = authority
            .rsplit_once('@')
            .map(|(_, h)| h)
            .unwrap_or(authority);
        let first = hostport.split(',').next()?;
        if first.is_empty() {
            return None;
        }
        // [v6]:port, host:port or host.
        let (host, port) = match first.rsplit_once(':') {
            Some((h, p)) if !h.ends_with(':') && p.chars().all(|c| c.is_ascii_digit()) => {
                (h, p.parse().ok()?)
            }
            _ => (first, default_port),
        };
        return Some((norm(host), port));
    }
    let mut host = None;
    let mut port = default_port;
    for pair in url.split_whitespace() {
        if let Some((k, v)) = pair.split_once('=') {
            let v = v.trim_matches('\'');
            match k {
                "host" | "hostaddr" if host.is_none() => {
                    host = Some(norm(v.split(',').next().unwrap_or(v)))
                }
                "port" => port = v.split(',').next()?.parse().ok()?,
                _ => {}
            }
        }
    }
    host.map(|h| (h, port))
}

/// True, as a field's default: `#[serde(default = "crate::action::types::yes")]`.
pub fn yes() -> bool {
    true
}

#[cfg(test)]
mod tests {
    use super::endpoint;

    #[test]
    fn endpoints_of_every_url_form() {
        let cases = [
            (
                "postgres://u:p@127.0.0.1:5433/db?target_session_attrs=prefer-standby",
                Some(("127.0.0.1", 5433)),
            ),
            ("postgresql://db.internal/app", Some(("db.internal", 5432))),
            ("postgres://u@[::1]:6000/x", Some(("::1", 6000))),
            ("postgres://u@h1:5433,h2:5434/x", Some(("h1", 5433))),
            (
                "host=DB.example.com port=5544 user=x password='a b'",
                Some(("db.example.com", 5544)),
            ),
            ("host=localhost", Some(("127.0.0.1", 5432))),
            ("redis://:pw@127.0.0.1:7001", Some(("127.0.0.1", 7001))),
            ("user=x", None),
        ];
        for (url, want) in cases {
            let got = endpoint(url, if url.starts_with("redis") { 6379 } else { 5432 });
            assert_eq!(got, want.map(|(h, p)| (h.to_string(), p)), "{url}");
        }
    }
}
